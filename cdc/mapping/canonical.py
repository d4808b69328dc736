"""Canonical values: one comparable form for a column's value as Postgres holds it, as the
flat topic carries it, and as Pinot returns it. Used by verify and by the tests.

The canonical form follows the flat topic (see typemap): numerics as Decimal, timestamps
as integer microseconds, dates 'YYYY-MM-DD', times 'HH:MM:SS.ffffff', bytea as lowercase
hex, json as parsed documents, arrays as lists without NULL elements, reals rounded to
float32.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import uuid
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from cdc.mapping.typemap import TypeMapping, normalize_type

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_TZ = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", float(x)))[0]


_EXACT = Context(prec=2000)     # normalize() must never round (Postgres numerics have up to 147k digits)


def _dec(x: Any) -> Decimal | None:
    try:
        d = Decimal(str(x))
    except InvalidOperation:
        return None
    return None if not d.is_finite() else d.normalize(_EXACT) if d != 0 else Decimal(0)


def _json(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray)):
        x = x.decode()
    if isinstance(x, str):
        try:
            return json.loads(x)
        except ValueError:
            return x
    return x


# Postgres -> the text Debezium sends, for the types mirrored as their text form ({c} is the
# quoted column). Everything else is read as psycopg loads it and converted in pg_scalar.
_PG_AS_TEXT: dict[str, str] = {
    "timetz": "CASE WHEN {c} IS NOT NULL THEN regexp_replace(to_char(({c} AT TIME ZONE 'UTC')::time, "
              "'HH24:MI:SS.US'), '\\.?0+$', '') || 'Z' END",
    "interval": "'P' || extract(year from {c}) || 'Y' || extract(month from {c}) || 'M' || extract(day from {c}) "
                "|| 'DT' || extract(hour from {c}) || 'H' || extract(minute from {c}) || 'M' "
                "|| trim_scale(extract(second from {c})) || 'S'",
    "money": "{c}::numeric::text",
    "hstore": "hstore_to_json({c})::text",
    # the output form: a host address without its /32 or /128 (inet::text always adds it)
    "inet": "CASE WHEN masklen({c}) = CASE family({c}) WHEN 4 THEN 32 ELSE 128 END THEN host({c}) "
            "ELSE {c}::text END",
}


def pg_select(m: TypeMapping, quoted_column: str) -> str:
    """SQL reading a column in a form pg_value turns into the canonical value. Needs the
    session time zone UTC (ranges of timestamptz print in it, as Debezium's do)."""
    base = normalize_type(m.pg_type)
    if m.warning is not None:          # a text fallback: the exact text Debezium sends
        return _PG_AS_TEXT.get(base, "{c}::text").format(c=quoted_column)
    return quoted_column


def pg_value(v: Any, m: TypeMapping) -> Any:
    """A value as psycopg returns it from Postgres -> canonical."""
    if v is None:
        return [] if not m.single_value else None
    if not m.single_value:
        return [c for x in v if x is not None and (c := canon_scalar(pg_scalar(x, m), m)) is not None]
    return canon_scalar(pg_scalar(v, m), m)


def pg_scalar(v: Any, m: TypeMapping) -> Any:
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            return (v - _EPOCH_TZ) // _US
        return (v - _EPOCH) // _US
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def canon_scalar(v: Any, m: TypeMapping) -> Any:
    """Any representation (flat JSON value, Pinot result cell, pg_scalar) -> canonical."""
    if v is None:
        return None
    t = m.pinot_type
    if t == "BIG_DECIMAL":
        return _dec(v)
    if t in ("INT", "LONG"):
        return int(v)
    if t in ("FLOAT", "DOUBLE"):
        # Pinot's ingestion turns NaN into NULL and -0.0 into 0.0 (SpecialValueTransformer)
        f = _f32(v) if t == "FLOAT" else float(v)
        return None if f != f else 0.0 if f == 0 else f
    if t == "BOOLEAN":
        return v if isinstance(v, bool) else str(v).lower() in ("true", "1")
    if t == "BYTES":
        return str(v).lower()
    if t == "JSON" or normalize_type(m.pg_type) == "hstore":      # hstore: JSON text, key order and spacing free
        return _json(v)
    return str(v)


def flat_value(v: Any, m: TypeMapping) -> Any:
    """A value from the flat topic's JSON (or a Pinot result cell) -> canonical."""
    if not m.single_value:
        return [c for x in (v or []) if x is not None and (c := canon_scalar(x, m)) is not None]
    return canon_scalar(v, m)


def row_digest(values: list[Any]) -> str:
    """Stable hash of a canonical row (key order fixed by the caller)."""
    def enc(x: Any) -> Any:
        return str(x) if isinstance(x, Decimal) else x
    blob = json.dumps([enc(v) for v in values], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
