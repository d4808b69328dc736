"""Table-driven tests of the Postgres -> Debezium -> Flink -> Pinot type mapping."""

from __future__ import annotations

import pytest

from cdc.core.errors import PreflightError
from cdc.core.models import Column, TableInfo
from cdc.mapping.typemap import DEBEZIUM_VALUE_SETTINGS, map_column, map_table, normalize_type


def col(name: str, type_name: str, base: str, **kw: object) -> Column:
    return Column(name=name, type_name=type_name, base_type=base, **kw)


# (column, Flink ROW type, Flink output type, Pinot type, single value, field kind)
SUPPORTED = [
    (col("a", "smallint", "int2"), "SMALLINT", "INT", "INT", True, "dimension"),
    (col("a", "integer", "int4"), "INT", "INT", "INT", True, "dimension"),
    (col("a", "integer", "int4", identity=True), "INT", "INT", "INT", True, "dimension"),
    (col("a", "bigint", "int8"), "BIGINT", "BIGINT", "LONG", True, "dimension"),
    (col("a", "bigint", "bigserial", identity=True), "BIGINT", "BIGINT", "LONG", True, "dimension"),
    (col("a", "numeric(12,2)", "numeric", precision=12, scale=2), "STRING", "STRING", "BIG_DECIMAL", True, "metric"),
    (col("a", "numeric", "numeric"), "STRING", "STRING", "BIG_DECIMAL", True, "metric"),
    (col("a", "real", "float4"), "FLOAT", "FLOAT", "FLOAT", True, "metric"),
    (col("a", "double precision", "float8"), "DOUBLE", "DOUBLE", "DOUBLE", True, "metric"),
    (col("a", "boolean", "bool"), "BOOLEAN", "BOOLEAN", "BOOLEAN", True, "dimension"),
    (col("a", "text", "text"), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "character varying(20)", "varchar", precision=20), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "character(5)", "bpchar", precision=5), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "uuid", "uuid"), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "json", "json"), "STRING", "STRING", "JSON", True, "dimension"),
    (col("a", "jsonb", "jsonb"), "STRING", "STRING", "JSON", True, "dimension"),
    (col("a", "date", "date"), "INT", "STRING", "STRING", True, "datetime"),
    (col("a", "time without time zone", "time"), "BIGINT", "STRING", "STRING", True, "dimension"),
    (col("a", "timestamp(3) without time zone", "timestamp", precision=3), "BIGINT", "BIGINT", "LONG", True, "datetime"),
    (col("a", "timestamp with time zone", "timestamptz"), "STRING", "BIGINT", "LONG", True, "datetime"),
    (col("a", "bytea", "bytea"), "STRING", "STRING", "BYTES", True, "dimension"),
    (col("a", "mood", "mood", kind="enum"), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "integer[]", "_int4", kind="array", element_type="int4"), "ARRAY<INT>", "ARRAY<INT>", "INT", False, "dimension"),
    (col("a", "bigint[]", "_int8", kind="array", element_type="int8"), "ARRAY<BIGINT>", "ARRAY<BIGINT>", "LONG", False, "dimension"),
    (col("a", "smallint[]", "_int2", kind="array", element_type="int2"), "ARRAY<INT>", "ARRAY<INT>", "INT", False, "dimension"),
    (col("a", "text[]", "_text", kind="array", element_type="text"), "ARRAY<STRING>", "ARRAY<STRING>", "STRING", False, "dimension"),
    (col("a", "character varying(10)[]", "_varchar", kind="array", element_type="varchar"), "ARRAY<STRING>", "ARRAY<STRING>", "STRING", False, "dimension"),
    # domains arrive with base_type already resolved through the domain
    (col("a", "posint", "int4", kind="domain"), "INT", "INT", "INT", True, "dimension"),
    (col("a", "email", "text", kind="domain"), "STRING", "STRING", "STRING", True, "dimension"),
    (col("a", "money_amount", "numeric", kind="domain", precision=10, scale=2), "STRING", "STRING", "BIG_DECIMAL", True, "metric"),
]


@pytest.mark.parametrize("column,row_t,out_t,pinot,sv,kind", SUPPORTED, ids=[c[0].type_name for c in SUPPORTED])
def test_supported_types_map(column: Column, row_t: str, out_t: str, pinot: str, sv: bool, kind: str) -> None:
    m = map_column(column)
    assert (m.flink_row_type, m.flink_type, m.pinot_type, m.single_value, m.field_kind) == (row_t, out_t, pinot, sv, kind)
    assert m.warning is None


def test_exact_numeric_stays_string_end_to_end() -> None:
    assert DEBEZIUM_VALUE_SETTINGS["decimal.handling.mode"] == "string"
    m = map_column(col("price", "numeric(38,10)", "numeric", precision=38, scale=10))
    assert m.flink_row_type == "STRING" and m.flink_type == "STRING" and m.pinot_type == "BIG_DECIMAL"
    # no CAST to DOUBLE/DECIMAL anywhere: only what is not a decimal number (NaN, +-Infinity) becomes NULL
    expr = m.expr("`v`")
    assert "DOUBLE" not in expr and "DECIMAL" not in expr and "THEN `v` ELSE CAST(NULL AS STRING) END" in expr


def test_temporal_settings_are_exact() -> None:
    assert DEBEZIUM_VALUE_SETTINGS["time.precision.mode"] == "microseconds"
    ts = map_column(col("t", "timestamp without time zone", "timestamp"))
    tz = map_column(col("t", "timestamp with time zone", "timestamptz"))
    for m in (ts, tz):
        assert (m.pinot_type, m.datetime_format, m.datetime_granularity) == ("LONG", "EPOCH|MICROSECONDS|1", "1:MICROSECONDS")
    assert ts.expr("`v`") == "`v`"
    assert "infinity" in tz.expr("`v`") and "RPAD" in tz.expr("`v`")
    assert map_column(col("d", "date", "date")).datetime_format == "SIMPLE_DATE_FORMAT|yyyy-MM-dd"


def test_arrays_drop_null_elements() -> None:
    m = map_column(col("tags", "text[]", "_text", kind="array", element_type="text"))
    assert m.expr("`v`") == "ARRAY_REMOVE(`v`, NULL)"


@pytest.mark.parametrize("type_name,base", [
    ("interval", "interval"), ("time with time zone", "timetz"), ("inet", "inet"), ("money", "money"),
    ("citext", "citext"), ("tstzrange", "tstzrange"), ("xml", "xml"), ("hstore", "hstore"),
])
def test_string_fallbacks_warn(type_name: str, base: str) -> None:
    m = map_column(col("x", type_name, base))
    assert (m.flink_row_type, m.pinot_type) == ("STRING", "STRING")
    assert m.warning is not None and "'x'" in m.warning


@pytest.mark.parametrize("column", [
    col("geo_pt", "point", "point"),
    col("flags", "bit(8)", "bit"),
    col("emb", "vector(3)", "vector"),
    col("addr", "address", "address", kind="composite"),
    col("days", "date[]", "_date", kind="array", element_type="date"),
    col("blob", "tsvector", "tsvector"),
], ids=lambda c: c.type_name)
def test_unsupported_type_error_names_column_and_type(column: Column) -> None:
    with pytest.raises(PreflightError) as exc:
        map_column(column)
    assert repr(column.name) in exc.value.message
    assert column.type_name in exc.value.message
    assert exc.value.hint and column.name in exc.value.hint


def test_reserved_column_name_rejected() -> None:
    with pytest.raises(PreflightError, match="__seq"):
        map_column(col("__seq", "bigint", "int8"))


def test_map_table_reports_every_bad_column_and_keeps_attnum_order() -> None:
    good = TableInfo(schema_name="s", table_name="t", primary_key=["b"], columns=[
        col("b", "bigint", "int8", position=2), col("a", "text", "text", position=1)])
    assert [m.column for m in map_table(good)] == ["a", "b"]
    bad = TableInfo(schema_name="s", table_name="t", columns=[
        col("p", "point", "point", position=1), col("q", "bit(2)", "bit", position=2)])
    with pytest.raises(PreflightError) as exc:
        map_table(bad)
    assert "'p'" in exc.value.message and "'q'" in exc.value.message


@pytest.mark.parametrize("spelled,canonical", [
    ("integer", "int4"), ("character varying", "varchar"), ("timestamp with time zone", "timestamptz"),
    ("numeric(10,2)", "numeric"), ("INT8", "int8"), ("double precision", "float8"),
])
def test_normalize_type(spelled: str, canonical: str) -> None:
    assert normalize_type(spelled) == canonical


def test_normalize_type_drops_modifiers_anywhere() -> None:
    from cdc.mapping.typemap import normalize_type
    assert normalize_type("time(3) with time zone") == "timetz"          # was "time": verify read it wrong
    assert normalize_type("timestamp(0) with time zone") == "timestamptz"
    assert normalize_type("numeric(12,4)") == "numeric" and normalize_type("character varying(20)") == "varchar"
    assert normalize_type("integer") == "int4" and normalize_type("text[]") == "text[]"
