"""Canonical values: Postgres (psycopg), flat-topic JSON and Pinot cells meet in one form,
and row digests are stable and sensitive. Verify rests on both."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from cdc.mapping import canonical
from cdc.core.models import Column
from cdc.mapping.typemap import TypeMapping, map_column


def m(type_name: str, base: str | None = None, **kw: object) -> TypeMapping:
    return map_column(Column(name="c", type_name=type_name, base_type=base or type_name, **kw))  # type: ignore[arg-type]


UTC = dt.timezone.utc


@pytest.mark.parametrize("mapping, pg, flat, expected", [
    (m("integer", "int4"), 42, 42, 42),
    (m("smallint", "int2"), -3, -3, -3),
    (m("bigint", "int8"), 2**62, 2**62, 2**62),
    (m("numeric(12,2)", "numeric", precision=12, scale=2), Decimal("10.50"), "10.50", Decimal("10.5")),
    (m("numeric", "numeric"), Decimal("0.000"), "0", Decimal(0)),
    (m("numeric", "numeric"), Decimal("1E+3"), "1000", Decimal("1E+3")),
    (m("real", "float4"), 0.1, 0.1, canonical._f32(0.1)),
    (m("double precision", "float8"), 0.1, 0.1, 0.1),
    (m("boolean", "bool"), True, True, True),
    (m("text"), "é ☃", "é ☃", "é ☃"),
    (m("character(4)", "bpchar"), "ab  ", "ab  ", "ab  "),
    (m("uuid"), uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"),
    (m("jsonb"), {"b": [1, 2], "a": "x"}, '{"a": "x", "b": [1, 2]}', {"a": "x", "b": [1, 2]}),
    (m("json"), {"a": 1}, '{"a":1}', {"a": 1}),
    (m("bytea"), b"\x00\xff", "00FF", "00ff"),
    (m("date"), dt.date(2024, 2, 29), "2024-02-29", "2024-02-29"),
    (m("time", "time"), dt.time(13, 5, 7, 12), "13:05:07.000012", "13:05:07.000012"),
    (m("timestamp", "timestamp"), dt.datetime(1970, 1, 1, 0, 0, 1, 5), 1_000_005, 1_000_005),
    (m("timestamptz", "timestamptz"), dt.datetime(1970, 1, 2, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
     86_400_000_000, 86_400_000_000),
    (m("integer[]", "_int4", kind="array", element_type="int4"), [1, None, 3], [1, 3], [1, 3]),
    (m("text[]", "_text", kind="array", element_type="text"), None, None, []),
    (m("text"), None, None, None),
])
def test_postgres_and_flat_meet_in_one_canonical_value(mapping: TypeMapping, pg: object, flat: object,
                                                       expected: object) -> None:
    assert canonical.pg_value(pg, mapping) == expected
    assert canonical.flat_value(flat, mapping) == expected


def test_pinot_cells_read_as_the_same_canonical_values() -> None:
    # Pinot returns BIG_DECIMAL as text, LONG timestamps as numbers, JSON as text.
    assert canonical.flat_value("10.50", m("numeric", "numeric")) == Decimal("10.5")
    assert canonical.flat_value('{"a":1}', m("jsonb")) == {"a": 1}
    assert canonical.flat_value("true", m("boolean", "bool")) is True
    assert canonical.flat_value(1_000_005, m("timestamp", "timestamp")) == 1_000_005


def test_nan_numeric_is_null_as_in_pinot() -> None:
    assert canonical.pg_value(Decimal("NaN"), m("numeric", "numeric")) is None


def test_row_digest_is_stable_and_ignores_json_key_order() -> None:
    a = [1, "x", Decimal("1.5"), {"a": 1, "b": 2}, None]
    b = [1, "x", Decimal("1.5"), {"b": 2, "a": 1}, None]
    assert canonical.row_digest(a) == canonical.row_digest(b)
    assert canonical.row_digest(a) == canonical.row_digest(list(a))
    assert len(canonical.row_digest(a)) == 64


@pytest.mark.parametrize("other", [
    [2, "x", Decimal("1.5"), {"a": 1, "b": 2}, None],
    [1, "x ", Decimal("1.5"), {"a": 1, "b": 2}, None],
    [1, "x", Decimal("1.51"), {"a": 1, "b": 2}, None],
    [1, "x", Decimal("1.5"), {"a": 1, "b": 3}, None],
    [1, "x", Decimal("1.5"), {"a": 1, "b": 2}, ""],
    [1, None, Decimal("1.5"), {"a": 1, "b": 2}, "x"],
])
def test_row_digest_changes_with_any_value(other: list[object]) -> None:
    base = [1, "x", Decimal("1.5"), {"a": 1, "b": 2}, None]
    assert canonical.row_digest(base) != canonical.row_digest(other)


def test_postgres_and_flat_rows_digest_equal() -> None:
    cols = [m("bigint", "int8"), m("numeric(12,2)", "numeric"), m("timestamptz", "timestamptz"), m("jsonb")]
    pg = [7, Decimal("3.10"), dt.datetime(2024, 1, 1, tzinfo=UTC), {"k": [1, "a"]}]
    flat = [7, "3.10", 1_704_067_200_000_000, '{"k":[1,"a"]}']
    assert canonical.row_digest([canonical.pg_value(v, c) for v, c in zip(pg, cols)]) == \
        canonical.row_digest([canonical.flat_value(v, c) for v, c in zip(flat, cols)])
