"""Render the three artifacts of a mirror from the user-readable templates. Pure functions.

Templates live in top-level folders so users can read (and review) exactly what gets
deployed: connectors/debezium-postgres.json.j2, flink_sql/mirror.sql.j2,
pinot_tables/schema.json.j2 and pinot_tables/realtime_table.json.j2. They are found in
$CDC_TEMPLATES_DIR if set, else next to the cdc package (a source checkout), else inside
the package at cdc/templates (an installed wheel, when packaged there).

TOAST (large values stored out of line). Under REPLICA IDENTITY DEFAULT an UPDATE that
leaves a TOASTed column untouched does not put its value in the WAL, and Debezium emits
``__debezium_unavailable_value`` in ``after``; mirrored naively, Pinot would overwrite the
real value with that placeholder. Choices, in order of preference:

1. REPLICA IDENTITY FULL. Postgres then logs the whole old row with TOAST values inlined, and
   Debezium 3.x fills unchanged-TOAST columns of the new tuple from it (pgoutput included,
   PostgresChangeRecordEmitter, DBZ-1258), so the placeholder never appears. cdc sets FULL
   itself before a table joins the connector (lifecycle.add_mirror, for needs_full_identity:
   a toastable column, or a key-override table, which needs FULL for UPDATE/DELETE to carry
   the key). ``replica.identity.autoset.values`` repeats it at every connector start, but only
   for names Debezium's unquoted ALTER TABLE spells right (cdc.mapping.dbz_names).
2. Safety net: ``ReselectColumnsPostProcessor`` for those toastable columns re-reads a column
   that still carries the placeholder (not NULLs, which are real). It reads the *current*
   row, which is at least as new as the event, and any later change emits a later event, so
   the last event per key (what Pinot keeps) converges to the right value. A row deleted in
   the meantime keeps the placeholder in that intermediate event, whose delete follows.
We do not filter placeholders in Flink: dropping the event would lose the other columns'
changes, and Flink has no prior state to fill from.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from cdc.core import names
from cdc.core.errors import ConfigError
from cdc.core.names import FRESHNESS_TABLE, HEARTBEAT_TABLE, SIGNAL_TABLE
from cdc.core.models import MirrorRules, MirrorSpec, Source, TableInfo
from cdc.mapping import dbz_names, rules
from cdc.mapping.typemap import DEBEZIUM_VALUE_SETTINGS, TypeMapping, map_table

HEARTBEAT_INTERVAL_MS = 10_000
#: the connector's heartbeat.action.query (cdc.mirrors.rebuild writes it too, to move the slot on)
HEARTBEAT_QUERY = (f"INSERT INTO {'.'.join(HEARTBEAT_TABLE)} (id, ts) VALUES (1, now()) "
                   "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts")
CHECKPOINT_INTERVAL = "10 s"
FLUSH_ROWS = 100_000          # small box: ~100k rows per consuming segment
FLUSH_TIME = "2h"
STATEMENT_SEPARATOR = "-- @statement"
#: Every topic of a mirror (change and flat). Compaction keeps the last record of every key
#: forever and never ages a key out: replaying a compacted change topic from the start gives
#: every table row's latest change, and a compacted flat topic gives Pinot every key's
#: highest __seq (Flink writes one key's records in __seq order, and a replay after a restart
#: rewrites an in-order suffix, so the last record of a key is its newest). Offsets survive
#: compaction, so __seq stays comparable. Deletes are records with a value (no tombstones:
#: tombstones.on.delete=false), so compaction keeps them and a late replay cannot revive a
#: deleted key. retention.ms=-1 keeps that true if someone switches the policy to delete.
TOPIC_CONFIG = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
# Dead letters are incidents, not state: every record kept (no key to compact on), never aged out.
DEAD_LETTER_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
_PASSWORD_REF = re.compile(r"^\$\{[A-Za-z0-9_.-]+:[^}]*\}$")


# ---------------------------------------------------------------- template lookup

def templates_dir() -> Path:
    """Folder that holds connectors/, flink_sql/ and pinot_tables/."""
    env = os.environ.get("CDC_TEMPLATES_DIR")
    if env:
        return Path(env)
    pkg = Path(__file__).resolve().parent
    for candidate in (pkg.parent.parent, pkg / "templates"):
        if (candidate / "flink_sql" / "mirror.sql.j2").is_file():
            return candidate
    raise ConfigError(f"cannot find the cdc templates next to {pkg}",
                      hint="set CDC_TEMPLATES_DIR to the folder holding connectors/, flink_sql/, pinot_tables/")


@lru_cache(maxsize=4)
def _env(root: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(root), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def _render(template: str, /, **ctx: Any) -> str:
    return _env(str(templates_dir())).get_template(template).render(**ctx)


# ---------------------------------------------------------------- quoting helpers

def flink_ident(name: str) -> str:
    """Backtick-quote a Flink SQL identifier; a backtick inside is doubled."""
    return "`" + name.replace("`", "``") + "`"


def flink_str(value: str) -> str:
    """Single-quoted Flink SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_regex(schema: str, table: str) -> str:
    return dbz_names.table_regex(schema, table)


def needs_full_identity(table: TableInfo) -> bool:
    """REPLICA IDENTITY FULL is needed: a TOASTable column (module doc) or no primary key
    (a --key table: UPDATE/DELETE must carry the whole old row)."""
    return any(c.toastable for c in table.columns) or not table.primary_key


def key_columns(spec: MirrorSpec | None, table: TableInfo) -> list[str]:
    """The mirror's key: the --key override, else the primary key (in key order)."""
    keys = list(spec.key_columns) if spec and spec.key_columns else list(table.primary_key)
    if not keys:
        raise ConfigError(f"{table.qualified} has no primary key",
                          hint="add a primary key to the table, or pass --key col1,col2")
    names = {c.name for c in table.columns}
    missing = [k for k in keys if k not in names]
    if missing:
        raise ConfigError(f"{table.qualified}: key column(s) {missing} do not exist",
                          hint=f"choose key columns among {sorted(names)}")
    return keys


# ---------------------------------------------------------------- Debezium

def bootstrap_sql(source: str) -> list[str]:
    """Idempotent DDL for the signal and heartbeat tables the connector needs.

    ``source`` is accepted so that per-source objects can be added later; the tables are
    shared by the one connector a database has."""
    del source
    return [
        "CREATE SCHEMA IF NOT EXISTS _cdc",
        "CREATE TABLE IF NOT EXISTS _cdc.debezium_signal "
        "(id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))",
        "CREATE TABLE IF NOT EXISTS _cdc.heartbeat "
        "(id integer PRIMARY KEY, ts timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE IF NOT EXISTS _cdc.freshness (id integer PRIMARY KEY, committed_at timestamptz NOT NULL)",
    ]


def connector_tls_settings(source: Source) -> dict[str, str]:
    """The source DSN's libpq TLS settings as Debezium 3.6.1 PostgreSQL connector properties
    (PostgresConnectorConfig: database.sslmode with the libpq values disable..verify-full,
    database.sslrootcert, database.sslcert, database.sslkey, database.sslfactory), which
    pgjdbc applies like libpq does. Paths only: Connect opens the files itself. Two libpq
    behaviours pgjdbc lacks are spelled out: ``sslmode=require`` with an explicit sslrootcert
    verifies the CA in libpq, so the connector gets verify-ca; ``sslrootcert=system`` (libpq 16+)
    means the platform's trusted roots, which pgjdbc gets from its DefaultJavaSSLFactory (the
    JVM's trust store, with verify-full as libpq implies). Empty without TLS settings,
    so configs of sources without them are unchanged."""
    out: dict[str, str] = {}
    mode = source.sslmode
    if source.sslrootcert == "system":
        mode = "verify-full"             # libpq's default with system roots, and the only mode it allows
    elif mode == "require" and source.sslrootcert:
        mode = "verify-ca"
    if mode:
        out["database.sslmode"] = mode
    if source.sslrootcert == "system":
        out["database.sslfactory"] = "org.postgresql.ssl.DefaultJavaSSLFactory"
    elif source.sslrootcert:
        out["database.sslrootcert"] = source.sslrootcert
    if source.sslcert:
        out["database.sslcert"] = source.sslcert
    if source.sslkey:
        out["database.sslkey"] = source.sslkey
    return out


def render_connector(source: Source, tables: list[TableInfo], *, kafka_bootstrap: str,
                     password_ref: str | None, key_overrides: dict[str, list[str]] | None = None,
                     topic_partitions: int = 1, replication_factor: int = 1,
                     table_rules: dict[str, MirrorRules] | None = None, mask_salt: str | None = None,
                     producer_batch_bytes: int = 0) -> dict[str, str]:
    """Debezium PostgreSQL connector config for one source.

    ``key_overrides`` maps ``schema.table`` to the --key columns of tables mirrored without a
    primary key; ``table_rules`` maps it to the mirror's column rules (cdc.mapping.rules: the
    columns Debezium leaves out or masks; ``mask_salt`` is the source's hash salt).
    ``producer_batch_bytes``: the task's producer batch.size (a client override; 0: the
    worker's own).
    ``kafka_bootstrap`` is not a connector property (the worker owns the Kafka
    connection); it is accepted so callers render every artifact with the same arguments."""
    del kafka_bootstrap
    if password_ref is not None and not _PASSWORD_REF.match(password_ref):
        raise ConfigError("database.password must be a config-provider reference like ${file:/path:key}, "
                          "never a clear password", hint="register the source with `cdc source add NAME --dsn DSN --password-prompt`: the password is then stored and passed by reference")
    if source.has_password and password_ref is None:
        raise ConfigError(f"source {source.name!r} needs a password but no reference was given",
                          hint="store the password in the Connect worker's secrets file and pass its reference")
    overrides = key_overrides or {}
    ruled = [(t, (table_rules or {}).get(t.qualified, MirrorRules()), overrides.get(t.qualified) or t.primary_key)
             for t in tables]
    include = [_table_regex(t.schema_name, t.table_name) for t in tables]
    include += [_table_regex(*SIGNAL_TABLE), _table_regex(*HEARTBEAT_TABLE), _table_regex(*FRESHNESS_TABLE)]
    autoset: list[str] = []
    reselect: list[str] = []
    msg_keys: list[str] = []
    for t, t_rules, t_keys in ruled:
        # Names as Debezium 3.6.1 matches them: see cdc.mapping.dbz_names.
        hidden = rules.hidden_columns(t_rules, t, t_keys)
        toastable = [c.name for c in t.columns if c.toastable and c.name not in hidden]   # never re-read clear
        keyless = not t.primary_key
        rx = _table_regex(t.schema_name, t.table_name)
        if needs_full_identity(t) and t.replica_identity != "full" and dbz_names.autoset_safe(t.schema_name,
                                                                                               t.table_name):
            autoset.append(f"{rx}:FULL")         # other names: cdc sets FULL itself (lifecycle.add_mirror)
        if toastable and not keyless:
            reselect += [f"{rx}:{dbz_names.column_regex(c)}" for c in toastable]
        if t.qualified in overrides:
            msg_keys.append(f"{rx}:" + ",".join(dbz_names.column_regex(k) for k in overrides[t.qualified]))
        elif keyless:
            raise ConfigError(f"{t.qualified} has no primary key and no key override",
                              hint="add a primary key, or pass --key col1,col2")
    text = _render(
        "connectors/debezium-postgres.json.j2",
        name=names.connector_name(source.name), host=source.host, port=str(source.port), user=source.user,
        dbname=source.database, password_ref=password_ref, tls_settings=connector_tls_settings(source),
        topic_prefix=names.topic_prefix(source.name),
        slot_name=names.slot_name(source.name),
        publication_name=source.publication or names.publication_name(source.name),
        publication_autocreate_mode="disabled" if source.publication else "filtered",
        publish_via_partition_root=any(t.partition_oids is not None for t in tables),
        table_include_list=",".join(include), heartbeat_interval_ms=str(HEARTBEAT_INTERVAL_MS),
        heartbeat_action_query=HEARTBEAT_QUERY, signal_data_collection=".".join(SIGNAL_TABLE),
        value_settings=DEBEZIUM_VALUE_SETTINGS, replica_identity_autoset=",".join(autoset),
        reselect_columns=",".join(reselect), reselect_use_event_key="false",
        message_key_columns=";".join(msg_keys), topic_partitions=str(topic_partitions),
        replication_factor=str(replication_factor), topic_config=TOPIC_CONFIG,
        notification_topic=names.notification_topic(source.name),
        column_settings=rules.connector_settings(ruled, mask_salt), producer_batch_bytes=producer_batch_bytes)
    return json.loads(text)


# ---------------------------------------------------------------- Flink

SEQ_EPOCH_SHIFT = 40     # __seq = epoch << 40 | change-topic offset (flink_sql/mirror.sql.j2)
MAX_SEQ_EPOCH = (1 << 23) - 1


def seq_base(epoch: int) -> int:
    if not 0 <= epoch <= MAX_SEQ_EPOCH:
        raise ConfigError(f"change-topic epoch {epoch} is out of range 0..{MAX_SEQ_EPOCH}",
                          hint="remove the mirror with --drop-data and add it again")
    return epoch << SEQ_EPOCH_SHIFT


def render_flink_sql(spec: MirrorSpec, table: TableInfo, *, kafka_bootstrap: str, change_topic: str,
                     flat_topic: str, group_id: str, seq_epoch: int = 0, probe: bool = False,
                     generation: int = 0) -> list[str]:
    """Statements (SET, DROP/CREATE TEMPORARY TABLE x2, INSERT) for the SQL Gateway, in order.
    seq_epoch: the change topic's incarnation (cdc.mirrors.topic_epoch). probe: instead of the
    flat table and the INSERT, a view of the row filter and computed expressions and its
    DESCRIBE, which is how cdc.mirrors.rules_check asks the planner for their types."""
    keys = key_columns(spec, table)
    rules.check(spec, table, keys)
    kept = set(rules.kept_columns(spec.rules, table, keys))
    mappings = [m for m in map_table(table) if m.column in kept]
    bad = [m.name for m in mappings if m.column in keys and ";" in m.name]
    if bad:
        raise ConfigError(f"key column(s) {bad} contain ';', which Flink's key.fields cannot express",
                          hint="rename the column or choose other key columns")
    scoped = rules.scoped(spec)
    if probe and not scoped:
        raise ValueError("a probe needs a row filter or computed columns")
    visible = set(rules.visible_columns(spec.rules, table, keys))
    row_fields = ", ".join(f"{flink_ident(m.column)} {m.flink_row_type}" for m in mappings)
    out_columns, view_columns = [], []
    for i, m in enumerate(mappings):
        src = flink_ident(m.column)
        alias = flink_ident(f"{rules.PRIVATE_PREFIX}c{i}") if scoped else src
        expr = m.expr(f"`k`.{alias}" if scoped else f"`raw`.{src}")
        if scoped and m.column not in keys:       # a row that leaves the filter: its key only
            expr = f"CASE WHEN `k`.`__cdc_keep` THEN {expr} END"
        elif m.column not in keys:                # a row that cannot be converted: its key only
            expr = f"CASE WHEN `raw`.`__bad` = '' THEN {expr} END"
        out_columns.append({"name": flink_ident(m.name), "src": src, "alias": alias, "type": m.flink_type,
                            "expr": expr})
        if scoped and m.column in visible:
            view_columns.append({"name": src, "expr": rules.view_expr(m, table.column(m.column), f"`raw`.{alias}")})
    computed = [] if probe else [
        {"name": flink_ident(cm.name), "type": cm.flink_type, "expr": "CASE WHEN `k`.`__cdc_keep` THEN "
         f"CAST(({spec.rules.computed_columns[cm.column]}) AS {cm.flink_type}) END"}
        for cm in rules.computed_mappings(spec)]
    mirror_keys = [m.name for k in keys for m in mappings if m.column == k]
    # dead letters: a row whose value the conversion cannot take (typemap.TypeMapping.valid)
    picked = {c["alias"]: f"CASE WHEN `op` = 'd' THEN `before`.{c['src']} ELSE `after`.{c['src']} END"
              for c in out_columns}
    def bad(cols: list) -> str:
        checks = [f"CASE WHEN NOT {v} THEN {flink_str(m.column)} END" for m, c in cols
                  if (v := m.valid(picked[c["alias"]]))]
        return f"CONCAT_WS(', ', {', '.join(checks)})" if checks else "CAST('' AS STRING)"
    bad_expr = bad(list(zip(mappings, out_columns)))
    bad_key_expr = bad([(m, c) for m, c in zip(mappings, out_columns) if m.column in keys])
    key_alias = {m.column: c["alias"] for m, c in zip(mappings, out_columns)}
    dead_key = "JSON_OBJECT(" + ", ".join(f"KEY {flink_str(k)} VALUE `raw`.{key_alias[k]}" for k in keys) + ")"
    text = _render(
        "flink_sql/mirror.sql.j2",
        pipeline_name=flink_str(names.flink_pipeline(spec.name, generation)), checkpoint_interval=flink_str(CHECKPOINT_INTERVAL),
        change_table=flink_ident(f"cdc_change__{spec.name}"), flat_table=flink_ident(f"cdc_flat__{spec.name}"),
        row_fields=row_fields, out_columns=out_columns, change_topic=flink_str(change_topic),
        flat_topic=flink_str(flat_topic), kafka_bootstrap=flink_str(kafka_bootstrap),
        group_id=flink_str(group_id), key_fields=flink_str(";".join(mirror_keys)),
        source_schema=flink_str(table.schema_name), source_table=flink_str(table.table_name),
        seq_base=seq_base(seq_epoch), scoped=scoped, view_columns=view_columns, computed=computed,
        row_filter=spec.rules.row_filter, probe=probe, probe_view=flink_ident(f"cdc_probe__{spec.name}"),
        probe_columns=[{"name": flink_ident(n), "expr": e} for n, e in spec.rules.computed_columns.items()],
        bad_expr=bad_expr, bad_key_expr=bad_key_expr, dead_key=dead_key, dead_table=flink_ident(f"cdc_dlq__{spec.name}"),
        dead_topic=flink_str(names.dead_letter_topic(spec.name)))
    return [s.strip() for s in text.split(STATEMENT_SEPARATOR) if s.strip()]


# ---------------------------------------------------------------- Pinot

def _field_spec(m: TypeMapping, nullable: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": m.name, "dataType": m.pinot_type}
    if not m.single_value:
        spec["singleValueField"] = False
    if m.pinot_type == "STRING":
        # Pinot trims STRING values to maxLength (512) by default: silent corruption.
        spec["maxLengthExceedStrategy"] = "NO_ACTION"
    if not nullable:
        spec["notNull"] = True
    if m.field_kind == "datetime":
        spec["format"] = m.datetime_format
        spec["granularity"] = m.datetime_granularity
    return spec


def render_pinot_schema(spec: MirrorSpec, table: TableInfo) -> dict[str, Any]:
    """Pinot schema: one field per mirrored Postgres column, one per computed column (typed by
    the Flink planner, cdc.mapping.rules), plus __deleted, __seq, __source_ts_ms, __op."""
    keys = key_columns(spec, table)
    kept = set(rules.kept_columns(spec.rules, table, keys))
    mappings = [m for m in map_table(table) if m.column in kept]
    dims: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for m in mappings:
        col = table.column(m.column)
        fs = _field_spec(m, nullable=col.nullable and m.column not in keys)
        kind = "dimension" if m.column in keys and m.field_kind == "metric" else m.field_kind
        {"dimension": dims, "metric": metrics, "datetime": dts}[kind].append(fs)
    for cm in rules.computed_mappings(spec):
        {"dimension": dims, "metric": metrics}[cm.field_kind].append(_field_spec(cm, nullable=True))
    dims += [{"name": "__deleted", "dataType": "BOOLEAN", "notNull": True},
             {"name": "__seq", "dataType": "LONG", "notNull": True},
             {"name": "__op", "dataType": "STRING", "notNull": True}]
    dts.append({"name": "__source_ts_ms", "dataType": "LONG", "notNull": True,
                "format": "EPOCH|MILLISECONDS|1", "granularity": "1:MILLISECONDS"})
    text = _render("pinot_tables/schema.json.j2", schema_name=spec.name,
                   primary_key=[m.name for k in keys for m in mappings if m.column == k],
                   dimensions=dims, metrics=metrics, datetimes=dts)
    return json.loads(text)


def render_pinot_table(spec: MirrorSpec, table: TableInfo, *, kafka_bootstrap: str, flat_topic: str,
                       replication: int = 1) -> dict[str, Any]:
    """Pinot REALTIME FULL-upsert table config consuming the flat topic, with the indexes of
    rules.pinot_indexes."""
    key_columns(spec, table)  # same validation as the schema: no key, no upsert table
    mirror_name = {m.column: m.name for m in map_table(table)}
    index_lists, field_configs = rules.pinot_indexes(spec.rules, mirror_name)
    text = _render("pinot_tables/realtime_table.json.j2", table_name=spec.name, source=spec.source,
                   replication=str(replication), flat_topic=flat_topic, kafka_bootstrap=kafka_bootstrap,
                   flush_rows=str(FLUSH_ROWS), flush_time=FLUSH_TIME,
                   table_index_config={"loadMode": "MMAP", **index_lists}, field_config_list=field_configs)
    return json.loads(text)


def render_pinot_logical_table(mirror: str, physical_table: str) -> dict[str, Any]:
    """Pinot logical table config named after the mirror, routed to one REALTIME table (the raw
    name of the current generation's table, names.pinot_physical_table)."""
    # TableNameBuilder.REALTIME.tableNameWithType: the suffix is added once
    with_type = physical_table if physical_table.endswith("_REALTIME") else f"{physical_table}_REALTIME"
    text = _render("pinot_tables/logical_table.json.j2", table_name=mirror, physical_table_with_type=with_type)
    return json.loads(text)
