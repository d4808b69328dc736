"""Mirror column rules (cdc.mapping.rules) as rendered into the three artifacts, and as the CLI,
the REST API and verify read them. Pure: no servers."""

from __future__ import annotations

import argparse
import json

import pytest
from psycopg import sql

from cdc.core.errors import ConfigError, ConflictError
from cdc.core.models import Column, MirrorRules, MirrorSpec, Source, TableInfo
from cdc.mapping import render, rules

BOOT = "127.0.0.1:9092"
SALT = "0123456789abcdef0123456789abcdef"


def col(name: str, type_name: str, base: str, pos: int, **kw: object) -> Column:
    return Column(name=name, type_name=type_name, base_type=base, position=pos, **kw)


def people() -> TableInfo:
    return TableInfo(schema_name="app", table_name="People List", primary_key=["id"], columns=[
        col("id", "integer", "int4", 1, nullable=False),
        col("email", "text", "text", 2, toastable=True),
        col("phone", "character varying(32)", "varchar", 3, precision=32),
        col("ssn", "text", "text", 4, toastable=True),
        col("Amount", "numeric(10,2)", "numeric", 5, precision=10, scale=2),
        col("born", "date", "date", 6),
        col("seen", "timestamp with time zone", "timestamptz", 7),
        col("code", "character(4)", "bpchar", 8, precision=4),
        col("doc", "jsonb", "jsonb", 9),
    ])


def spec(r: MirrorRules | None = None, types: dict[str, str] | None = None) -> MirrorSpec:
    return MirrorSpec(name="app_people", schema_name="app", table_name="People List", rules=r or MirrorRules(),
                      computed_types=types or {})


FULL = MirrorRules(exclude_columns=["ssn"], mask_columns={"email": "hash", "phone": "redact"},
                   row_filter="`Amount` >= 10 AND born < DATE '2000-01-01'",
                   computed_columns={"amount_x2": "`Amount` * 2", "tag": "UPPER(doc)"},
                   pinot_indexes={"doc": ["json"], "amount_x2": ["range"], "born": ["inverted", "range"],
                                  "phone": ["text"], "seen": ["no_dictionary"]})
TYPES = {"amount_x2": "DECIMAL(21, 2)", "tag": "STRING"}


def flink(s: MirrorSpec, probe: bool = False) -> list[str]:
    return render.render_flink_sql(s, people(), kafka_bootstrap=BOOT, change_topic="cdc.x.app.people",
                                   flat_topic="cdc.flat.app_people", group_id="g", probe=probe)


# ---------------------------------------------------------------- columns and checks

def test_kept_columns_include_exclude_and_the_key_always() -> None:
    t = people()
    assert rules.kept_columns(MirrorRules(), t, ["id"]) == [c.name for c in t.columns]
    assert rules.kept_columns(MirrorRules(include_columns=["email"]), t, ["id"]) == ["id", "email"]
    assert "ssn" not in rules.kept_columns(MirrorRules(exclude_columns=["ssn"]), t, ["id"])
    assert rules.visible_columns(FULL, t, ["id"]) == ["id", "Amount", "born", "seen", "code", "doc"]


@pytest.mark.parametrize("r, words", [
    (MirrorRules(include_columns=["nope"]), "rules.include_columns (--include): unknown column(s) 'nope'"),
    (MirrorRules(exclude_columns=["id"]), "'id' are key columns"),
    (MirrorRules(include_columns=["email"], exclude_columns=["email"]), "both included and excluded"),
    (MirrorRules(mask_columns={"id": "hash"}), "is a key column"),
    (MirrorRules(mask_columns={"Amount": "redact"}), "Debezium masks only text"),
    (MirrorRules(mask_columns={"code": "hash"}), "too short"),
    (MirrorRules(mask_columns={"ssn": "hash"}, exclude_columns=["ssn"]), "is excluded"),
    (MirrorRules(computed_columns={"email": "1"}), "already a column"),
    (MirrorRules(computed_columns={"__x": "1"}), "not a usable column name"),
    (MirrorRules(computed_columns={"x": "1; DROP TABLE t"}), "';' is not allowed"),
    (MirrorRules(row_filter="id > 1 -- comment"), "'--' is not allowed"),
    (MirrorRules(row_filter="TRUE) OR (TRUE"), "unbalanced parentheses"),
    (MirrorRules(row_filter="x = 'it''s"), "unbalanced quote"),
    (MirrorRules(row_filter="x = '\n-- @statement\n'"), "@statement"),
    (MirrorRules(row_filter="  "), "rules.row_filter (--filter) is empty"),
    (MirrorRules(pinot_indexes={"ssn": ["inverted"]}, exclude_columns=["ssn"]), "is not mirrored"),
    (MirrorRules(pinot_indexes={"nope": ["inverted"]}), "neither a column nor a computed column"),
    (MirrorRules(pinot_indexes={"email": ["range", "range"]}), "each index kind once"),
    # the job's own columns are not the row's (review: __op <> 'r' dropped snapshot rows)
    (MirrorRules(row_filter="__op <> 'r'"), "rules.row_filter (--filter): '__op' starts with '__'"),
    (MirrorRules(row_filter="`__cdc_c1` = 'x'"), "rules.row_filter (--filter): '__cdc_c1' starts with '__'"),
    (MirrorRules(row_filter="NOT __deleted"), "'__deleted' starts with '__'"),
    (MirrorRules(computed_columns={"k": "__cdc_keep"}), "rules.computed_columns['k'] (--compute): '__cdc_keep'"),
    (MirrorRules(computed_columns={"b": "__bad || __bad_key"}), "'__bad' starts with '__'"),
    (MirrorRules(row_filter="__seq > 0 OR __source_ts_ms > 0"), "'__seq' starts with '__'"),
    # unquoted capitals: Flink keeps them, Postgres (verify) folds them
    (MirrorRules(row_filter="Amount > 10"), "rules.row_filter (--filter): Amount is unquoted"),
    (MirrorRules(computed_columns={"a2": "Amount * 2"}), "rules.computed_columns['a2'] (--compute): Amount"),
])
def test_check_refuses_naming_the_field(r: MirrorRules, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        rules.check(spec(r), people(), ["id"])
    assert words in err.value.message


# What Flink and Postgres would read differently from cdc's checker: Postgres' E'' escapes and
# nested /* */, Flink's // comments; verify ran the filter in Postgres with the simple protocol.
INJECTION = ("name <> E'\\'' /* /* */ // */ ) FROM (SELECT 1) AS z), false)) AS s; COMMIT; SET "
             "default_transaction_read_only = off; DROP TABLE victim; SELECT 1 FROM (SELECT * FROM \"public\".\"t\" "
             "AS \"__cdc_t\" WHERE COALESCE((SELECT (TRUE --'\nAND TRUE")


@pytest.mark.parametrize("text, words", [
    (INJECTION, "is not allowed"),
    ("doc <> E'\\''", "is not allowed"),                 # Postgres: escape string; Flink: E then a literal
    ("doc <> e'x'", "right after a word"),
    ("doc <> U&'\\0041'", "is not allowed"),
    ("doc <> N'x' OR doc <> X'00'", "right after a word"),
    ("doc = $$x$$", "'$' is not allowed"),
    ("doc = $1", "'$' is not allowed"),
    ("doc = 'a\\' OR TRUE", "'\\\\' is not allowed"),        # a backslash, even inside a literal
    ("id > 1 // comment", "'//' is not allowed"),
    ("id > 1 /* comment */", "'/*' is not allowed"),
    ("id > 1 --", "'--' is not allowed"),
    ("id > 1; SELECT 1", "';' is not allowed"),
    ("\"Amount\" > 1", "quote identifiers with backticks"),
    ("`a;b` > 1", "backtick"),
    ("`a``b` > 1", "backtick"),
    ("`a */ b` > 1", "backtick"),
    ("doc::text = 'x'", "':' is not allowed"),
    ("doc ~ 'x'", "'~' is not allowed"),
    ("`__cdc_t`.ssn = 'x'", "qualified"),
    ("v.id > 1", "qualified"),
    ("id != 1", "'!' is not allowed"),
    ("id > 0x1F", "number"),
    ("id > 1_000", "number"),
    ("id > 1 \x00", "is not allowed"),
])
def test_expression_checker_refuses_what_two_parsers_could_read_differently(text: str, words: str) -> None:
    for r in (MirrorRules(row_filter=text), MirrorRules(computed_columns={"x": text})):
        with pytest.raises(ConfigError) as err:
            rules.check(spec(r), people(), ["id"])
        assert words in err.value.message, err.value.message


def test_pg_expression_refuses_what_the_checker_refuses() -> None:
    """A rule stored before the strict checker existed never reaches Postgres (verify)."""
    from cdc.mirrors.verify import _Table
    with pytest.raises(ConfigError):
        rules.pg_expression(INJECTION)
    stored = MirrorSpec(name="app_people", schema_name="app", table_name="People List",
                        rules=MirrorRules(row_filter=INJECTION))
    with pytest.raises(ConfigError):
        _Table(people(), ["id"], stored)


def test_check_accepts_quotes_and_parentheses_inside_literals() -> None:
    rules.check(spec(MirrorRules(row_filter="doc = ')(;--' AND `Amount` > (1 + 2)")), people(), ["id"])
    rules.check(spec(FULL, TYPES), people(), ["id"])


def test_computed_name_cannot_repeat_the_mapped_name_of_a_column() -> None:
    """"a b" becomes a_b_2 in the mirror when a_b exists, even with a_b excluded: the check
    must see the names the artifacts are rendered with."""
    t = TableInfo(schema_name="app", table_name="t", primary_key=["id"], columns=[
        col("id", "integer", "int4", 1, nullable=False), col("a b", "text", "text", 2), col("a_b", "text", "text", 3)])
    r = MirrorRules(exclude_columns=["a_b"], computed_columns={"a_b_2": "1"})
    with pytest.raises(ConfigError, match="'a_b_2' is already a column"):
        rules.check(MirrorSpec(name="app_t", schema_name="app", table_name="t", rules=r), t, ["id"])


def test_private_prefix_refused_only_with_filter_or_computed() -> None:
    t = people()
    t.columns.append(col("__cdc_c0", "integer", "int4", 10))
    rules.check(spec(MirrorRules(exclude_columns=["ssn"])), t, ["id"])
    with pytest.raises(ConfigError, match="__cdc_"):
        rules.check(spec(MirrorRules(row_filter="id > 0")), t, ["id"])


# ---------------------------------------------------------------- Debezium

def connector(r: MirrorRules | None, salt: str | None = SALT) -> dict[str, str]:
    t = people()
    return render.render_connector(Source(name="default", dsn="x"), [t], kafka_bootstrap=BOOT, password_ref=None,
                                   table_rules={t.qualified: r} if r else None, mask_salt=salt)


def test_connector_excludes_and_masks_per_column_case_sensitively() -> None:
    cfg = connector(FULL)
    assert cfg["column.exclude.list"] == r"(?-i)app\.People\x20List\.ssn"
    assert cfg[f"column.mask.hash.v2.SHA-256.with.salt.{SALT}"] == r"(?-i)app\.People\x20List\.email"
    assert cfg["column.mask.with.8.chars"] == r"(?-i)app\.People\x20List\.phone"
    # the reselect post-processor would put the clear value back: never for masked or excluded columns
    assert "post.processors.reselector.reselect.columns.include.list" not in cfg


def test_include_list_becomes_exclusions_and_no_rules_change_nothing() -> None:
    cfg = connector(MirrorRules(include_columns=["email", "Amount"]))
    excluded = cfg["column.exclude.list"].split(",")
    assert [e.rsplit(".", 1)[-1] for e in excluded] == ["phone", "ssn", "born", "seen", "code", "doc"]
    plain = connector(None, salt=None)
    assert connector(MirrorRules(), salt=None) == plain
    assert not any(k.startswith("column.") for k in plain)
    assert "post.processors.reselector.reselect.columns.include.list" in plain


def test_hash_needs_the_salt_and_the_salt_is_shown_redacted() -> None:
    with pytest.raises(ConfigError, match="mask salt"):
        connector(MirrorRules(mask_columns={"email": "hash"}), salt=None)
    shown = rules.redact_salt(connector(FULL))
    assert SALT not in json.dumps(shown)
    assert shown["column.mask.hash.v2.SHA-256.with.salt.<salt>"] == r"(?-i)app\.People\x20List\.email"


# ---------------------------------------------------------------- Flink

def test_flatten_job_with_filter_and_computed_columns() -> None:
    stmts = flink(spec(FULL, TYPES))
    change, flat, insert = stmts[3], stmts[5], stmts[-1]
    assert "`ssn`" not in change and "`email` STRING" in change          # excluded: not even read
    assert "`amount_x2` STRING" in flat and "`tag` STRING" in flat and "`ssn`" not in flat
    assert "COALESCE((`Amount` >= 10 AND born < DATE '2000-01-01'), FALSE) AS `__cdc_keep`" in insert
    assert "NOT `k`.`__cdc_keep` AS `__deleted`" in insert
    assert "`k`.`__cdc_c0` AS `id`" in insert                            # the key: always, also for deletes
    assert "CASE WHEN `k`.`__cdc_keep` THEN `k`.`__cdc_c1` END AS `email`" in insert
    assert "CASE WHEN `k`.`__cdc_keep` THEN CAST((`Amount` * 2) AS STRING) END AS `amount_x2`" in insert
    # the view the expressions read: typed, Postgres names, masked columns left out
    assert "AS DECIMAL(10, 2)) AS `Amount`" in insert
    assert "TIMESTAMPADD(DAY, `raw`.`__cdc_c4`, DATE '1970-01-01') AS `born`" in insert
    assert " AS `email`,\n      `raw`.*" not in insert and "AS `phone`,\n" not in insert.split("FROM (", 1)[1]


def test_probe_asks_the_planner_for_types() -> None:
    stmts = flink(spec(FULL), probe=True)
    assert stmts[-1] == "DESCRIBE `cdc_probe__app_people`"
    view = stmts[-2]
    assert view.startswith("CREATE TEMPORARY VIEW `cdc_probe__app_people` AS")
    assert "(`Amount` >= 10 AND born < DATE '2000-01-01') AS `__cdc_filter`" in view
    assert "(`Amount` * 2) AS `amount_x2`" in view and "AS `__cdc_keep`" in view
    assert not any("INSERT INTO" in s or "cdc_flat__" in s for s in stmts)
    with pytest.raises(ValueError):
        flink(spec(MirrorRules(exclude_columns=["ssn"])), probe=True)


def test_columns_only_rules_keep_the_plain_job_shape() -> None:
    plain = flink(spec())
    ruled = flink(spec(MirrorRules(exclude_columns=["ssn"], mask_columns={"email": "hash"})))
    def without_ssn(stmt: str) -> str:
        return "\n".join(ln for ln in stmt.replace(", `ssn` STRING", "").split("\n") if "`ssn`" not in ln)
    assert [without_ssn(s) for s in plain] == ruled
    assert "`__cdc_keep`" not in ruled[-1]


def test_computed_columns_need_planned_types() -> None:
    with pytest.raises(ConfigError, match="no planned type"):
        flink(spec(FULL))


@pytest.mark.parametrize("flink_type, pinot, flat", [
    ("INT", "INT", "INT"), ("SMALLINT NOT NULL", "INT", "INT"), ("BIGINT", "LONG", "BIGINT"),
    ("DOUBLE", "DOUBLE", "DOUBLE"), ("DECIMAL(21, 2)", "BIG_DECIMAL", "STRING"), ("BOOLEAN", "BOOLEAN", "BOOLEAN"),
    ("CHAR(3) NOT NULL", "STRING", "STRING"), ("STRING", "STRING", "STRING"), ("DATE", "STRING", "STRING"),
])
def test_computed_types(flink_type: str, pinot: str, flat: str) -> None:
    m = rules.computed_mapping("x", flink_type)
    assert (m.pinot_type, m.flink_type, m.name) == (pinot, flat, "x")


@pytest.mark.parametrize("flink_type", ["TIMESTAMP(6)", "TIMESTAMP_LTZ(3)", "ARRAY<INT>", "MAP<STRING, INT>"])
def test_computed_types_refused(flink_type: str) -> None:
    with pytest.raises(ConfigError, match="CAST it"):
        rules.computed_mapping("x", flink_type)


# ---------------------------------------------------------------- Pinot

def test_pinot_schema_and_indexes() -> None:
    s = spec(FULL, TYPES)
    schema = render.render_pinot_schema(s, people())
    fields = {f["name"]: f for k in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
              for f in schema[k]}
    assert "ssn" not in fields
    assert fields["amount_x2"]["dataType"] == "BIG_DECIMAL" and fields["tag"]["dataType"] == "STRING"
    assert fields["tag"]["maxLengthExceedStrategy"] == "NO_ACTION" and "notNull" not in fields["tag"]
    table = render.render_pinot_table(s, people(), kafka_bootstrap=BOOT, flat_topic="cdc.flat.app_people")
    assert table["tableIndexConfig"] == {"loadMode": "MMAP", "jsonIndexColumns": ["doc"],
                                         "rangeIndexColumns": ["amount_x2", "born"], "invertedIndexColumns": ["born"],
                                         "noDictionaryColumns": ["seen"]}
    assert table["fieldConfigList"] == [{"name": "phone", "encodingType": "RAW", "indexTypes": ["TEXT"]}]
    plain = render.render_pinot_table(spec(), people(), kafka_bootstrap=BOOT, flat_topic="f")
    assert plain["tableIndexConfig"] == {"loadMode": "MMAP"} and "fieldConfigList" not in plain


def test_index_names_are_mirror_column_names() -> None:
    t = people()
    t.columns.append(col("zip code", "text", "text", 10))
    cfg = render.render_pinot_table(spec(MirrorRules(pinot_indexes={"zip code": ["inverted"]})), t,
                                    kafka_bootstrap=BOOT, flat_topic="f")
    assert cfg["tableIndexConfig"]["invertedIndexColumns"] == ["zip_code"]


# ---------------------------------------------------------------- Postgres (verify's oracle)

def test_pg_expression_translates_backticks_only_outside_strings() -> None:
    assert rules.pg_expression("`Amount` > 1 AND s = '`x`' AND `a b-c` LIKE 'x%'") == \
        '"Amount" > 1 AND s = \'`x`\' AND "a b-c" LIKE \'x%%\''


def test_pg_masks_as_debezium_does() -> None:
    t = people()
    assert rules.pg_masked("redact", t.column("phone"), '"phone"') == "'********'"
    text = rules.pg_masked("hash", t.column("email"), '"email"')
    assert text == "encode(sha256(convert_to(%s, 'UTF8') || convert_to(\"email\"::text, 'UTF8')), 'hex')"
    assert rules.pg_masked("hash", t.column("phone"), '"phone"').startswith("left(encode(")
    assert ", 32)" in rules.pg_masked("hash", t.column("phone"), '"phone"')
    assert "rpad(\"code\"::text, 4)" in rules.pg_masked("hash", t.column("code"), '"code"')


def test_pg_view_gives_timestamps_as_epoch_microseconds() -> None:
    view = rules.pg_view(FULL, people(), ["id"], '"t"')
    assert view[0] == '"t"."id" AS "id"'
    assert any(v.startswith("CASE WHEN \"t\".\"seen\" = 'infinity'") and v.endswith(' AS "seen"') for v in view)
    assert not any('"email"' in v or '"ssn"' in v for v in view)


def test_pg_view_reads_values_as_flink_compares_them() -> None:
    """char(n) with its padding, text in code-point order (COLLATE "C"), numeric NaN/Infinity as
    NULL (the job's conversion): a filter means in Postgres what it means in Flink."""
    t = people()
    t.columns += [col("big", "numeric", "numeric", 10), col("tag", "citext", "citext", 11),
                  col("any_len", "bpchar", "bpchar", 12)]
    view = {v.rsplit(" AS ", 1)[1]: v.rsplit(" AS ", 1)[0] for v in rules.pg_view(MirrorRules(), t, ["id"], '"t"')}
    assert view['"code"'] == 'rpad("t"."code"::text, 4) COLLATE "C"'
    assert view['"email"'] == '"t"."email"::text COLLATE "C"' and view['"phone"'] == '"t"."phone"::text COLLATE "C"'
    assert view['"tag"'] == '"t"."tag"::text COLLATE "C"'                  # citext: case-sensitive, as in Flink
    assert "concat(" in view['"any_len"'] and 'COLLATE "C"' in view['"any_len"']   # no length: stored padding
    assert view['"Amount"'] == ("CASE WHEN \"t\".\"Amount\"::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL "
                                "ELSE \"t\".\"Amount\" END")
    assert view['"big"'].endswith('ELSE "t"."big"::text END')             # Flink sees its text (VIEW_TYPES)
    assert view['"id"'] == '"t"."id"' and view['"doc"'] == '"t"."doc"'


def test_verify_table_applies_the_rules_in_postgres() -> None:
    from cdc.mirrors.verify import _Table
    s = spec(FULL, TYPES)
    t = _Table(people(), ["id"], s, SALT, {"amount_x2": "\"Amount\" * 2"})
    assert t.cols == ["id", "email", "phone", "Amount", "born", "seen", "code", "doc", "amount_x2"]
    assert t.params == [SALT]
    sel = t.sel_cols.as_string(None)
    assert "sha256(convert_to(%s" in sel and "'********'" in sel and '("Amount" * 2)' in sel
    rel = t.rel.as_string(None)
    assert rel.startswith('(SELECT * FROM "app"."People List" AS "__cdc_t" WHERE COALESCE((SELECT ("Amount" >= 10')
    assert isinstance(t.rel, sql.Composable)


class _Conn:
    """A psycopg connection double that records how each query would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, bool | None]] = []

    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, query: object, params: object = None, *, prepare: bool | None = None) -> _Conn:
        text = query if isinstance(query, str) else query.as_string(None)   # type: ignore[attr-defined]
        self.sent.append((text, list(params or []), prepare))
        return self

    def fetchall(self) -> list:
        return []

    def fetchone(self) -> tuple:
        return ("0/0", 0)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([])


def test_verify_runs_user_expressions_as_one_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg sends a query without parameters with the simple protocol, which runs every
    ';'-separated statement in it: verify's queries carry the user's row filter and --computed
    SQL, so each must go as one prepared statement (extended protocol: exactly one statement)."""
    from cdc.mirrors import verify
    from cdc.postgres import catalog
    conn = _Conn()
    monkeypatch.setattr(catalog, "connect", lambda *a, **k: conn)
    monkeypatch.setattr(catalog, "exact_loaders", lambda c, *a: c)
    t = verify._Table(people(), ["id"], spec(MirrorRules(row_filter="id > 1")), None, {})
    list(verify._pg_chunks(conn, t, 10))                        # type: ignore[arg-type]
    verify._pg_current("dsn", t, [(1,)])
    user = [(q, p) for q, p, prepare in conn.sent if "__cdc_t" in q and not prepare]
    assert not user, f"sent with the simple protocol: {user}"
    verify._pg_count(conn, t)                                   # type: ignore[arg-type]
    assert all(prepare for q, _, prepare in conn.sent if "__cdc_t" in q)
    assert sum("__cdc_t" in q for q, _, _ in conn.sent) == 3


# ---------------------------------------------------------------- CLI and REST

def _args(**kw: object) -> argparse.Namespace:
    base = {"include": None, "exclude": None, "mask": None, "filter": None, "compute": None, "index": None}
    return argparse.Namespace(**{**base, **kw})


def test_cli_flags_make_rules() -> None:
    from cdc.cli.mirror import _rules
    assert _rules(_args()) is None
    r = _rules(_args(include=["a,b", "c"], exclude=["x"], mask=["e-mail=hash", "p=redact"], filter="a > 1",
                     compute=["t=a = b", "u=x"], index=["a=inverted,range", "z=json"]))
    assert r == MirrorRules(include_columns=["a", "b", "c"], exclude_columns=["x"],
                            mask_columns={"e-mail": "hash", "p": "redact"}, row_filter="a > 1",
                            computed_columns={"t": "a = b", "u": "x"},
                            pinot_indexes={"a": ["inverted", "range"], "z": ["json"]})


@pytest.mark.parametrize("kw, words", [
    ({"mask": ["email=sha"]}, "--mask"), ({"index": ["a=bloom"]}, "--index"), ({"compute": ["noexpr"]}, "--compute"),
])
def test_cli_bad_flags_name_the_flag(kw: dict, words: str) -> None:
    from cdc.cli.mirror import _rules
    with pytest.raises(ConfigError) as err:
        _rules(_args(**kw))
    assert err.value.message.startswith(words)


def test_rest_body_takes_rules() -> None:
    from pydantic import ValidationError

    from cdc.api.models import MirrorIn
    body = MirrorIn.model_validate({"table": "public.t", "rules": {"mask_columns": {"email": "hash"},
                                                                   "row_filter": "a > 1"}})
    assert body.rules == MirrorRules(mask_columns={"email": "hash"}, row_filter="a > 1")
    with pytest.raises(ValidationError):
        MirrorIn.model_validate({"table": "public.t", "rules": {"mask_columns": {"email": "md5"}}})
    with pytest.raises(ValidationError):
        MirrorIn.model_validate({"table": "public.t", "rules": {"filter": "a > 1"}})


def test_mask_salt_is_made_once_0600_and_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import stat
    from types import SimpleNamespace

    from cdc.mirrors import sources
    s = SimpleNamespace(state_dir=tmp_path)
    assert sources.mask_salt(s, "src") is None                      # type: ignore[arg-type]
    salt = sources.mask_salt(s, "src", create=True)                 # type: ignore[arg-type]
    assert salt is not None and len(salt) == 32 and int(salt, 16) >= 0
    f = sources.mask_salt_file(s, "src")                            # type: ignore[arg-type]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert sources.mask_salt(s, "src", create=True) == salt         # type: ignore[arg-type]
    assert [p.name for p in f.parent.iterdir()] == ["src.mask-salt"]   # no temporary file left


def test_salt_gone_while_mirrors_hash_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new salt would mix old and new hashes of the same values in the mirror."""
    from types import SimpleNamespace

    from cdc.core.errors import CdcError
    from cdc.mirrors import rules_check, sources
    s = SimpleNamespace(state_dir=tmp_path)
    hashed = spec(MirrorRules(mask_columns={"email": "hash"}))
    redacted = MirrorSpec(name="app_x", schema_name="app", table_name="x",
                          rules=MirrorRules(mask_columns={"phone": "redact"}))

    def ctx(*registered: MirrorSpec, state: str = "running") -> SimpleNamespace:
        recs = [SimpleNamespace(name=sp.name, spec=sp, state=state) for sp in registered]
        return SimpleNamespace(settings=s, read_only=False,
                               registry=SimpleNamespace(list_mirrors=lambda source=None: recs))
    src = Source(name="src", dsn="x")
    for registered, extra in (((hashed,), None), ((hashed,), redacted), ((hashed, redacted), None)):
        with pytest.raises(CdcError) as err:
            rules_check.connector_rules(ctx(*registered), src, extra)   # type: ignore[arg-type]
        assert "salt" in err.value.message and "app_people" in err.value.message
        assert sources.mask_salt(s, "src") is None                      # type: ignore[arg-type]
    # the last mirror that hashes can still be removed (its table leaves the connector config)
    rules_check.connector_rules(ctx(hashed, state="removing"), src)    # type: ignore[arg-type]
    assert sources.mask_salt(s, "src") is None                          # type: ignore[arg-type]
    # no mirror hashes yet: the first one that does makes the salt, then it is kept
    _, salt = rules_check.connector_rules(ctx(redacted), src, hashed)   # type: ignore[arg-type]
    assert salt and sources.mask_salt(s, "src") == salt                 # type: ignore[arg-type]
    assert rules_check.connector_rules(ctx(hashed), src)[1] == salt     # type: ignore[arg-type]


def test_rest_plan_passes_rules_and_never_shows_the_salt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from cdc.api.app import create_app
    from cdc.core.settings import Settings
    from cdc.mirrors import service
    settings = Settings(registry_path=tmp_path / "r.db", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                        api_token="tok", pinot_mode="none")
    seen: dict = {}

    def plan(ctx, schema, table, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        return service.MirrorPlan(spec=spec(FULL, TYPES), table=people(), source=Source(name="default", dsn="x"),
                                  connector=connector(FULL), flink_sql=["INSERT INTO x SELECT 1"], pinot_schema={},
                                  pinot_table={}, change_topic="c", flat_topic="f")
    mp = pytest.MonkeyPatch()
    mp.setattr(service, "plan_mirror", plan)
    try:
        r = TestClient(create_app(settings)).post("/mirrors/plan", headers={"Authorization": "Bearer tok"},
                                                  json={"table": "app.people", "rules": {"exclude_columns": ["ssn"]}})
    finally:
        mp.undo()
    assert r.status_code == 200, r.text
    assert seen["rules"] == MirrorRules(exclude_columns=["ssn"])
    assert SALT not in r.text and "with.salt.<salt>" in r.text


# ---------------------------------------------------------------- add over kept topics

class _Kafka:
    """KafkaAdmin double: topic -> number of records."""

    records: dict[str, int] = {}

    def __init__(self, bootstrap: str) -> None:
        pass

    def topics(self) -> dict[str, int]:
        return dict.fromkeys(self.records, 1)

    bootstrap = BOOT

    def end_offsets(self, name: str) -> dict[int, int]:
        return {0: self.records[name]}


def _add_over(monkeypatch: pytest.MonkeyPatch, r: MirrorRules, records: dict[str, int]):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from cdc.clients import kafka
    from cdc.mirrors import lifecycle
    plan = lifecycle.MirrorPlan(spec=spec(r), table=people(), source=Source(name="default", dsn="x"), connector={},
                                flink_sql=[], pinot_schema={}, pinot_table={}, change_topic="cdc.default.app.people",
                                flat_topic="cdc.flat.app_people")
    created: list[str] = []

    class Created(Exception):
        pass

    def add(spec: MirrorSpec, **kw: object) -> None:
        created.append(spec.name)
        raise Created
    monkeypatch.setattr(lifecycle, "plan_mirror", lambda *a, **k: plan)
    monkeypatch.setattr(lifecycle, "pinot_enabled", lambda ctx: (False, "off"))
    monkeypatch.setattr(lifecycle, "_check_reachable", lambda ctx, with_pinot: None)
    monkeypatch.setattr(kafka, "KafkaAdmin", type("K", (_Kafka,), {"records": records}))
    ctx = SimpleNamespace(settings=SimpleNamespace(kafka_bootstrap=BOOT, initial_load="copy"),
                          registry=SimpleNamespace(get_mirror=lambda name: None, add_mirror=add),
                          connect=SimpleNamespace(get_config=lambda name: None))
    try:
        lifecycle.add_mirror(ctx, "app", "People List", rules=r, progress=lambda _m: None)  # type: ignore[arg-type]
    except Created:
        pass
    return created


@pytest.mark.parametrize("topic", ["cdc.default.app.people", "cdc.flat.app_people"])
def test_add_with_masking_refused_over_kept_topics_with_records(monkeypatch: pytest.MonkeyPatch, topic: str) -> None:
    """`mirror remove` without --drop-data keeps the compacted change topic and the flat topic:
    a mirror added again with masking would replay the clear values they hold."""
    for r in (MirrorRules(mask_columns={"email": "hash"}), MirrorRules(exclude_columns=["ssn"]),
              MirrorRules(include_columns=["email"])):
        with pytest.raises(ConflictError) as err:
            _add_over(monkeypatch, r, {topic: 3, "other": 1})
        assert topic in err.value.message and "--drop-data" in (err.value.hint or "")
    # nothing to hide, or nothing kept: the add goes on
    assert _add_over(monkeypatch, MirrorRules(row_filter="id > 1"), {topic: 3}) == ["app_people"]
    assert _add_over(monkeypatch, MirrorRules(mask_columns={"email": "hash"}), {topic: 0}) == ["app_people"]
