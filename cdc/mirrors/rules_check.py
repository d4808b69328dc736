"""A mirror's column rules checked by the systems that will run them, before anything exists.

cdc.mapping.rules.check already refused what can be told without a server (unknown columns, a
key column excluded or masked, a type Debezium cannot mask, a malformed expression). What is
left needs the real planners:

* Flink types the row filter and each computed expression: a probe view over the job's own row
  view and its DESCRIBE, in a throwaway SQL Gateway session (nothing is submitted). The types
  become MirrorSpec.computed_types, from which the flat topic and the Pinot schema are rendered.
  A failing probe is re-run per expression, so the error names the field at fault.
* Then the whole job is compiled down to generated code: EXPLAIN JSON_EXECUTION_PLAN of its
  INSERT. A plain EXPLAIN stops before code generation and lets through calls that fail only when
  the job starts (seen: TIMESTAMPADD(MICROSECOND, ...) plans, then fails in codegen).
* Pinot's own validation (the in-process engine's check mode, what a controller runs on POST
  /schemas and /tables) judges the schema and table config: indexes that do not fit a column's
  type, a computed column's field.

Rows the planner cannot see (a division by zero, a CAST of a bad value) still fail the running
job; TRY_CAST and NULLIF keep expressions total.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdc.core import names
from cdc.core.errors import ConfigError, PermanentRemoteError
from cdc.core.models import MirrorRules, MirrorSpec, Source, TableInfo
from cdc.mapping import render, rules
from cdc.mirrors.context import Context
from cdc.mirrors.sources import mask_salt

FILTER_COLUMN = "__cdc_filter"
_HINT_VIEW = ("expressions are Flink SQL over the row's columns (names in `backticks` unless lowercase): "
              "numeric(p,s) reads as DECIMAL(p,s), date as DATE, timestamps as epoch microseconds (BIGINT); "
              "masked and excluded columns are not visible")


def connector_rules(ctx: Context, src: Source,
                    extra: MirrorSpec | None = None) -> tuple[dict[str, MirrorRules], str | None]:
    """The rules of every mirror of the source by schema.table (plus `extra`, being planned),
    and the source's mask salt, made when a rule first hashes a column: only then. A salt gone
    while registered mirrors hash with it is an error, never a new salt (their mirrors would
    hold old and new hashes of equal values side by side)."""
    registered = ctx.registry.list_mirrors(source=src.name)
    specs = {m.spec.qualified: m.spec for m in registered}
    if extra is not None:
        specs[extra.qualified] = extra
    by_table = {q: sp.rules for q, sp in specs.items() if not sp.rules.is_empty()}
    hashes = any("hash" in r.mask_columns.values() for r in by_table.values())
    hashers = [m for m in registered if "hash" in m.spec.rules.mask_columns.values()]
    hashed_by = sorted(m.name for m in hashers if m.state != "removing")   # one being removed may go without it
    salt = mask_salt(ctx.settings, src.name, create=hashes and not hashers and not ctx.read_only)
    if hashed_by and salt is None:
        raise ConfigError(f"the mask salt of source {src.name} (STATE_DIR/secrets/{src.name}.mask-salt) is gone, "
                          f"but mirror(s) {', '.join(hashed_by)} hash columns with it: a new salt would hash equal "
                          "values differently in the mirror",
                          hint="restore the file (one line, mode 0600) from a backup, or from the name of the "
                               "property column.mask.hash.v2.SHA-256.with.salt.<salt> in GET /connectors/"
                               f"{names.connector_name(src.name)}/config of Kafka Connect")
    if hashes and salt is None:        # a read-only plan (the salt is made when the mirror is added), a remove
        salt = "<salt>"
    return by_table, salt


def _flink_error(exc: PermanentRemoteError) -> str:
    return exc.message.split("statement failed: ", 1)[-1].split("\n  hint:")[0]


def _probe(ctx: Context, spec: MirrorSpec, table: TableInfo, render_args: dict[str, Any]) -> dict[str, str]:
    statements = render.render_flink_sql(spec, table, probe=True, **render_args)
    result = ctx.gateway.run_statements(statements)
    return {str(row[0]): str(row[1]) for row in result.rows}


def plan_types(ctx: Context, spec: MirrorSpec, table: TableInfo, render_args: dict[str, Any]) -> MirrorSpec:
    """The spec with computed_types from the Flink planner (ConfigError naming the field)."""
    r = spec.rules
    spec = spec.model_copy(update={"computed_types": {}})
    if not rules.scoped(spec):
        return spec
    try:
        types = _probe(ctx, spec, table, render_args)
    except PermanentRemoteError as exc:
        raise _culprit(ctx, spec, table, render_args) or ConfigError(
            f"Flink's planner refuses the mirror's rules: {_flink_error(exc)}", hint=_HINT_VIEW) from None
    if r.row_filter is not None and types.get(FILTER_COLUMN, "").upper().removesuffix(" NOT NULL") != "BOOLEAN":
        raise ConfigError(f"rules.row_filter (--filter) is of type {types.get(FILTER_COLUMN)}, not a predicate",
                          hint="give a condition such as status = 'open' AND amount > 10")
    typed = spec.model_copy(update={"computed_types": {n: types[n] for n in r.computed_columns}})
    rules.computed_mappings(typed)             # refuses types cdc cannot store in Pinot
    return typed


def _culprit(ctx: Context, spec: MirrorSpec, table: TableInfo, render_args: dict[str, Any]) -> ConfigError | None:
    """Probe each expression alone; the first the planner refuses, as an error naming its field."""
    r = spec.rules.model_copy(update={"pinot_indexes": {}})     # may name computed columns left out below
    alone: list[tuple[str, MirrorRules]] = []
    if r.row_filter is not None:
        alone.append(("rules.row_filter (--filter)", r.model_copy(update={"computed_columns": {}})))
    for name, expr in r.computed_columns.items():
        alone.append((f"rules.computed_columns[{name!r}] (--compute)",
                      r.model_copy(update={"row_filter": None, "computed_columns": {name: expr}})))
    for field, single in alone:
        try:
            _probe(ctx, spec.model_copy(update={"rules": single}), table, render_args)
        except PermanentRemoteError as exc:
            return ConfigError(f"{field}: Flink's planner refuses it: {_flink_error(exc)}", hint=_HINT_VIEW)
    return None


def check_job(ctx: Context, flink_sql: list[str]) -> None:
    """Compile the job to generated code without running it (module docstring)."""
    try:
        job = flink_sql[-1]    # EXPLAIN takes "STATEMENT SET BEGIN ... END", not its EXECUTE form
        job = job[len("EXECUTE "):] if job.startswith("EXECUTE STATEMENT SET") else job
        ctx.gateway.run_statements([*flink_sql[:-1], "EXPLAIN JSON_EXECUTION_PLAN " + job])
    except PermanentRemoteError as exc:
        raise ConfigError(f"Flink cannot compile the mirror's job with these rules: {_flink_error(exc)}",
                          hint=_HINT_VIEW) from None


def check_pinot(schema: dict[str, Any], table: dict[str, Any], *, engine: Any = None) -> None:
    """Pinot's own validation of the schema and table config (cdc's in-process engine)."""
    from cdc.clients import pinot_engine
    (result,) = (engine or pinot_engine.default_engine()).check([(str(table.get("tableName")), schema, table)])
    problems = list(result.errors) + [f"key Pinot would drop: {k}" for k in result.dropped_keys]
    if problems:
        raise ConfigError("Pinot refuses the mirror's schema or table config: " + "; ".join(problems)[:1500],
                          hint="check rules.pinot_indexes (--index) against the column types: json needs a JSON "
                               "or STRING column, text a STRING column, inverted/range a dictionary-encoded one "
                               "(not no_dictionary); a computed column can be indexed like any other")


def check_rules(ctx: Context, spec: MirrorSpec, table: TableInfo, render_args: dict[str, Any],
                artifacts: Callable[[MirrorSpec], tuple[list[str], dict[str, Any], dict[str, Any]]],
                progress: Callable[[str], None] | None = None) -> MirrorSpec:
    """Type the computed columns, then check the job and the Pinot artifacts rendered from the
    typed spec by ``artifacts`` (-> flink_sql, pinot_schema, pinot_table). Returns the typed spec."""
    if spec.rules.is_empty():
        return spec
    say = progress or (lambda _m: None)
    typed = plan_types(ctx, spec, table, render_args)
    flink_sql, schema, table_config = artifacts(typed)
    if rules.scoped(typed):
        say("flink: compiling the job with the row filter / computed columns (nothing submitted)")
        check_job(ctx, flink_sql)
    say("pinot: checking the schema and table config with Pinot's own validation")
    check_pinot(schema, table_config)
    return typed
