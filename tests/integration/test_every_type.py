"""One column of every type cdc maps, through the real stack, compared in full with an
independent oracle: SQL run in Postgres that renders each value the way the mirror must
answer it (the contract in cdc/mapping/typemap.py, written here again from Postgres' side,
never computed by cdc's own code). The mirror is read through Pinot's own ingestion and
upsert code (a Pinot server where one runs), and `cdc mirror verify` must be clean on it.

Rows reach the mirror both ways Debezium emits them: by the initial snapshot (rows 1-4) and
by streaming (the same values inserted again as rows 11-14, an UPDATE and a DELETE)."""

from __future__ import annotations

import json
import math
import struct
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.mapping import render
from cdc.mirrors import service
from cdc.mirrors import state as mirror_state
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.postgres import catalog
from syncing import wait_for

pytestmark = pytest.mark.integration
SCHEMA = "every types"
TS_POS, TS_NEG = "9223372036825200000", "-9223372036832400000"   # Debezium's +-infinity


def _epoch_us(c: str) -> str:
    return (f"CASE WHEN {c} = 'infinity' THEN '{TS_POS}' WHEN {c} = '-infinity' THEN '{TS_NEG}' "
            f"ELSE ((extract(epoch from {c}) * 1000000)::numeric(30,0))::text END")


def _arr(c: str) -> str:
    return f"array_to_json(array_remove({c}, NULL))::text"


def _time_iso_utc(c: str) -> str:
    # Debezium's ZonedTime: the time in UTC, seconds always, fraction without trailing zeros, 'Z'
    t = f"({c} AT TIME ZONE 'UTC')::time"
    return f"regexp_replace(to_char({t}, 'HH24:MI:SS.US'), '\\.?0+$', '') || 'Z'"


def _interval_iso(c: str) -> str:
    # Debezium's interval.handling.mode=string: P<y>Y<m>M<d>DT<h>H<m>M<s>S, fields as Postgres keeps them
    return (f"CASE WHEN {c} IS NOT NULL THEN format('P%sY%sM%sDT%sH%sM%sS', extract(year from {c}), "
            f"extract(month from {c}), extract(day from {c}), extract(hour from {c}), extract(minute from {c}), "
            f"trim_scale(extract(second from {c}))) END")


def _float(c: str) -> str:
    # Pinot's ingestion (SpecialValueTransformer) turns NaN into NULL and -0.0 into 0.0
    return f"CASE WHEN {c} = 'NaN' THEN NULL WHEN {c} = 0 THEN '0' ELSE {c}::text END"


# column, type, oracle SQL rendering the value as the mirror answers it ({c} = the column), compare mode
COLUMNS: list[tuple[str, str, str, str]] = [
    ("c_int2", "smallint", "{c}::text", "int"),
    ("c_int4", "integer", "{c}::text", "int"),
    ("c_int8", "bigint", "{c}::text", "int"),
    ("c_oid", "oid", "{c}::text", "int"),
    ("c serial", "serial", "{c}::text", "int"),                 # a blank: Pinot column "c_serial"
    ("c_dom", "posint", "{c}::text", "int"),
    ("c_num", "numeric(12,4)", "CASE WHEN {c} = 'NaN' THEN NULL ELSE trim_scale({c})::text END", "text"),
    ("c_num_free", "numeric",
     "CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE trim_scale({c})::text END", "text"),
    ("c_real", "real", _float("{c}"), "float4"),
    ("c_double", "double precision", _float("{c}"), "float8"),
    ("c_bool", "boolean", "CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END", "bool"),
    ("c_text", "text", "{c}", "text"),
    ("c_varchar", "varchar(20)", "{c}", "text"),
    ("c_char", "char(5)", "rpad({c}::text, 5)", "text"),
    ("c_uuid", "uuid", "{c}::text", "text"),
    ("c_enum", "mood", "{c}::text", "text"),
    ("c_json", "json", "{c}::text", "json"),
    ("c_jsonb", "jsonb", "{c}::text", "json"),
    ("c_bytea", "bytea", "encode({c}, 'hex')", "hex"),
    ("c_date", "date", "to_char({c}, 'YYYY-MM-DD')", "text"),
    ("c_time", "time", "to_char({c}, 'HH24:MI:SS.US')", "text"),
    ("c_time3", "time(3)", "to_char({c}, 'HH24:MI:SS.US')", "text"),
    ("c_ts", "timestamp", _epoch_us("{c}"), "int"),
    ("c_ts0", "timestamp(0)", _epoch_us("{c}"), "int"),
    ("c_tstz", "timestamptz", _epoch_us("{c}"), "int"),
    ("c_int4_arr", "int4[]", _arr("{c}"), "array:int"),
    ("c_int8_arr", "int8[]", _arr("{c}"), "array:int"),
    ("c_int2_arr", "int2[]", _arr("{c}"), "array:int"),
    ("c_text_arr", "text[]", _arr("{c}"), "array:text"),
    ("c_varchar_arr", "varchar[]", _arr("{c}"), "array:text"),
    ("c_float8_arr", "float8[]", "(SELECT json_agg(CASE WHEN x = 0 THEN '0' ELSE x::text END) FROM unnest({c}) x "
     "WHERE x IS NOT NULL AND x <> 'NaN')::text", "array:float8"),
    ("c_uuid_arr", "uuid[]", _arr("{c}"), "array:text"),
    ("c_timetz", "timetz", _time_iso_utc("{c}"), "text"),
    ("c_interval", "interval", _interval_iso("{c}"), "text"),
    ("c_money", "money", "{c}::numeric::text", "text"),
    ("c_citext", "citext", "{c}::text", "text"),
    ("c_inet", "inet", "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END", "text"),  # ::text adds /128
    ("c_cidr", "cidr", "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END", "text"),
    ("c_macaddr", "macaddr", "{c}::text", "text"),
    ("c_macaddr8", "macaddr8", "{c}::text", "text"),
    ("c_ltree", "ltree", "{c}::text", "text"),
    ("c_xml", "xml", "{c}::text", "text"),
    ("c_hstore", "hstore", "hstore_to_json({c})::text", "json"),
    ("c_int4range", "int4range", "{c}::text", "text"),
    ("c_int8range", "int8range", "{c}::text", "text"),
    ("c_numrange", "numrange", "{c}::text", "text"),
    ("c_tsrange", "tsrange", "{c}::text", "text"),
    ("c_tstzrange", "tstzrange", "{c}::text", "text"),
    ("c_daterange", "daterange", "{c}::text", "text"),
]

ROWS = [
    (1, 1, 2, 3, 4, 1, 5, "1.2000", "1.20", "1.5", "2.25", True, "text", "varchar", "ab",
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "happy", '{"b": 1,  "a": [1, 2]}', '{"b": 1, "a": [1, 2]}',
     "\\xdeadbeef", "2024-02-29", "13:14:15.123456", "01:02:03.456", "2024-01-02 03:04:05.678901",
     "2024-01-02 03:04:05", "2024-01-02 03:04:05.678901+02", "{1,NULL,3}", "{9007199254740993}", "{-1,2}",
     '{"a",NULL,"b c"}', "{x}", "{1.5,NULL}", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "13:14:15.5+02",
     "1 year 2 mons 3 days 04:05:06.78", "12.34", "CaseText", "192.168.1.5/24", "10.0.0.0/8",
     "08:00:2b:01:02:03", "08:00:2b:01:02:03:04:05", "top.mid.leaf", "<a>x</a>", 'k=>v, "x y"=>NULL',
     "[1,5)", "[10,20]", "(1.5,2.5]", "[2024-01-01 00:00,2024-01-02 00:00)", "[2024-01-01 00:00+00,infinity)",
     "[2024-01-01,2024-02-01)"),
    (2, -32768, -2147483648, -9223372036854775808, 0, 2, 1, "NaN", "Infinity", "NaN", "-Infinity", False, "", "",
     "", "00000000-0000-0000-0000-000000000000", "sad", "null", "[]", "\\x", "0001-01-01", "24:00:00",
     "00:00:00", "infinity", "-infinity", "infinity", "{}", None, "{NULL}", "{}", "{NULL,NULL}", "{NaN,Infinity}",
     "{}", "00:00:00+00", "-1 days -00:00:01.5", "-0.01", "", "::1", "::/0", "00:00:00:00:00:00",
     "00:00:00:00:00:00:00:00", "", "<r/>", "", "empty", "(,)", "(,)", "[,]", "empty", "(,)"),
    (3, *([None] * 4), 3, *([None] * 44)),
    (4, 32767, 2147483647, 9223372036854775807, 4294967295, 4, 2147483647, "-99999999.9999",
     "123456789012345678901234567890.123456789", "3.4028235e38", "1.7976931348623157e308", True, "x" * 20000,
     "ünïcødé €", "é", "ffffffff-ffff-ffff-ffff-ffffffffffff", "ok", '{"deep": {"x": [true, null, 1.5e10]}}',
     '{"ü": "é"}', "\\x" + "ff" * 5000, "9999-12-31", "23:59:59.999999", "23:59:59.999",
     "1900-01-01 00:00:00.000001", "1970-01-01 00:00:00", "1969-12-31 23:59:59.999999+00",
     "{2147483647,-2147483648}", "{-9223372036854775808}", "{32767}", '{"ü","",NULL," "}', '{"a,b","c\\"d"}',
     "{1e308,-0}", "{ffffffff-ffff-ffff-ffff-ffffffffffff,NULL}", "23:59:59.999999-14:59", "-178000000 years",
     "92233720368547758.07", "ÄÖÜ", "255.255.255.255", "2001:db8::/32", "ff:ff:ff:ff:ff:ff",
     "ff:ff:ff:ff:ff:ff:ff:ff", "a", '<x a="1">&amp;</x>', '"a"=>"1"', "[-2147483648,2147483647)", "[,0)",
     "(-1e-10,1e10)", "(,2024-01-01)", '("2024-01-01 00:00+05",)', "[-infinity,infinity]"),
]


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _same(mode: str, expected: str | None, actual: Any) -> bool:
    """expected: the oracle's text (or NULL); actual: the value as Pinot answered it."""
    if mode.startswith("array:"):
        want = json.loads(expected) if expected is not None else None
        if want in (None, []) and actual in (None, []):
            return True          # Pinot has no empty multi-value: NULL and [] both answer NULL
        if want is None or actual is None or len(want) != len(actual):
            return False
        return all(_same(mode[6:], None if w is None else str(w), a) for w, a in zip(want, actual))
    if expected is None or actual is None:
        return expected is None and actual is None
    if mode == "int":
        return int(expected) == int(actual)
    if mode in ("float4", "float8"):
        conv = _f32 if mode == "float4" else float
        e, a = conv(float(expected)), conv(float(actual))
        return (math.isnan(e) and math.isnan(a)) or (e == a and math.copysign(1, e) == math.copysign(1, a))
    if mode == "bool":
        return str(actual).lower() == expected
    if mode == "hex":
        return str(actual).lower() == expected
    if mode == "json":
        return json.loads(actual) == json.loads(expected)
    return str(actual) == expected


@pytest.fixture
def every_type_table(ctx: service.Context, pg: psycopg.Connection) -> Any:
    table = f"Every Type {uuid.uuid4().hex[:4]}"
    for ext in ("hstore", "citext", "ltree"):
        pg.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("DROP TYPE IF EXISTS {}.mood CASCADE").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("CREATE TYPE {}.mood AS ENUM ('sad', 'ok', 'happy')").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("DROP DOMAIN IF EXISTS {}.posint CASCADE").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("CREATE DOMAIN {}.posint AS integer CHECK (VALUE > 0)").format(sql.Identifier(SCHEMA)))
    cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t if t not in ("mood", "posint") else
                                                                f'"{SCHEMA}".{t}')) for c, t, _, _ in COLUMNS]
    pg.execute(sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, {})").format(
        sql.Identifier(SCHEMA), sql.Identifier(table), sql.SQL(", ").join(cols)))
    yield table
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table)))


def _insert(pg: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    ins = sql.SQL("INSERT INTO {}.{} (id, {}) VALUES ({})").format(
        sql.Identifier(SCHEMA), sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c, *_ in COLUMNS),
        sql.SQL(", ").join(sql.Placeholder() * (len(COLUMNS) + 1)))
    with pg.cursor() as cur:
        cur.executemany(ins, rows)


def oracle(pg: psycopg.Connection, table: str) -> dict[int, dict[str, str | None]]:
    """Postgres renders every value as the mirror must answer it."""
    exprs = [sql.SQL(e.format(c=sql.Identifier(c).as_string(pg))) for c, _, e, _ in COLUMNS]
    pg.execute("SET TimeZone = 'UTC'")
    q = sql.SQL("SELECT id, {} FROM {}.{} ORDER BY id").format(sql.SQL(", ").join(exprs), sql.Identifier(SCHEMA),
                                                              sql.Identifier(table))
    return {r[0]: dict(zip([c for c, *_ in COLUMNS], r[1:])) for r in pg.execute(q)}


def mirror(ctx: service.Context, name: str, pg: psycopg.Connection, table: str) -> tuple[dict[int, dict], str]:
    """The mirror as Pinot answers, by Pinot column name; and what read it."""
    rec = service.get_mirror(ctx, name)
    info = catalog.introspect(pg, SCHEMA, table)
    if service.pinot_enabled(ctx)[0]:
        cols = ", ".join(f'"{f["name"]}"' for k in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
                         for f in render.render_pinot_schema(rec.spec, info)[k])
        names_, rows = ctx.broker.query(f'SET enableNullHandling=true; SELECT {cols} FROM "{name}" LIMIT 1000')
        raw, reader = [dict(zip(names_, r)) for r in rows], mirror_state.SERVER
    else:
        raw, summary = mirror_state.engine_raw_rows(ctx.settings.kafka_bootstrap, rec.spec, info)
        reader = mirror_state.engine_label(summary)
    return {int(r["id"]): r for r in raw}, reader


def compare(expected: dict[int, dict], actual: dict[int, dict]) -> list[str]:
    pinot_name = names.mirror_columns([c for c, *_ in COLUMNS])
    problems = [f"row {k} missing" for k in expected if k not in actual]
    problems += [f"row {k} extra" for k in actual if k not in expected]
    for k in sorted(set(expected) & set(actual)):
        for c, _, _, mode in COLUMNS:
            e, a = expected[k][c], actual[k].get(pinot_name[c])
            if not _same(mode, e, a):
                problems.append(f"row {k} {c}: Postgres says {str(e)[:80]!r}, the mirror {str(a)[:80]!r}")
    return problems


def test_every_type_exact_through_the_stack(ctx: service.Context, pg: psycopg.Connection,
                                            every_type_table: str) -> None:
    table = every_type_table
    _insert(pg, table, ROWS)                                    # snapshot rows
    rec = service.add_mirror(ctx, SCHEMA, table, progress=print)
    try:
        _insert(pg, table, [(r[0] + 10, *r[1:]) for r in ROWS])  # the same values, streamed
        pg.execute(sql.SQL("UPDATE {}.{} SET c_text = 'changed', c_num = 7.5 WHERE id = 1").format(
            sql.Identifier(SCHEMA), sql.Identifier(table)))
        pg.execute(sql.SQL("DELETE FROM {}.{} WHERE id = 13").format(sql.Identifier(SCHEMA), sql.Identifier(table)))
        expected = oracle(pg, table)
        reader = ""

        def equal() -> bool:
            nonlocal reader
            actual, reader = mirror(ctx, rec.name, pg, table)
            problems = compare(expected, actual)
            if problems:
                print(f"{len(problems)} differences:\n  " + "\n  ".join(problems[:40]))
            return not problems
        wait_for("the mirror to equal the Postgres oracle", equal, timeout=180, poll=2)
        print(f"mirror read by: {reader}")
        report = verify_mirror(ctx, rec.name, settle_timeout=30)
        assert report.clean, format_report(report)
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)


def test_the_comparison_can_fail() -> None:
    """The oracle comparison sees a scale difference, a trimmed string and a lost NULL."""
    assert not _same("text", "1.2", "1.20")
    assert not _same("text", "x" * 20000, "x" * 512)
    assert not _same("int", None, "0")
    assert not _same("array:int", "[1,3]", [1, None, 3])
    assert not _same("float4", "1.5", 1.25)
