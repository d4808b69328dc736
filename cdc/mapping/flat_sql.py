"""Postgres SQL that renders a table's rows as the flatten job's flat records. Pure; no I/O.

The parallel initial load (cdc.mirrors.initial_load) reads a table with
``COPY (SELECT <key JSON>, <value JSON>, <dead letter> FROM t WHERE ctid range) TO STDOUT``:
Postgres renders the JSON text itself and the loader only splits lines and produces bytes.
The text must be what flink_sql/mirror.sql.j2 writes for the same row, so each column is
converted here the way cdc.mapping.typemap converts its Debezium value in Flink:

* integers (oid as bigint: to_json would quote it), floats (NaN, +-Infinity quoted, as
  Jackson writes them), booleans: JSON numbers / booleans;
* numeric: the decimal text (Debezium's decimal.handling.mode=string writes the plain text
  Postgres prints), NaN and +-Infinity NULL (the job's regex);
* char(n): blank-padded (to_json of bpchar keeps the padding); text, varchar, uuid, enum,
  json/jsonb (the document's text as a string), bytea (lowercase hex);
* date 'YYYY-MM-DD', time 'HH24:MI:SS.US' (24:00:00 kept), timestamp / timestamptz epoch
  microseconds with Debezium's +-infinity sentinels; arrays without NULL elements;
* the text fallbacks as Debezium's text (timetz in UTC without trailing zeros, interval as
  ISO-8601 with Postgres' fields, money as its numeric, inet without /32 for a host, ranges
  in the session time zone, which the loader sets to UTC); hstore as hstore_to_json's text
  (the same document; Debezium's key order is a Java HashMap's, so the text may differ).

The key is the mirror's key fields in key order, compact ({"id":1,"k":"x"}), as Flink's 'json'
key format writes it: those bytes decide the Kafka partition (murmur2, as the Java producer's
default partitioner) and the compaction key, so they must equal the job's byte for byte.
Postgres escapes control characters as \\u00xx and Jackson as \\u00XX: the loader re-cases
those (jackson_key). Float keys are refused (Java prints 1.0 where Postgres prints 1).

A row whose value the job cannot convert (typemap's validators: a timestamptz outside years
1-9999) is what the job makes of it: a delete of its key (every other column NULL) plus a
dead letter; a row whose key cannot be converted has only the dead letter.
"""

from __future__ import annotations

import json

from cdc.core.models import Column, MirrorSpec, TableInfo
from cdc.mapping import render, rules
from cdc.mapping.typemap import (RESERVED_COLUMNS, TS_NEG_INFINITY, TS_POS_INFINITY, TypeMapping, map_table,
                                 normalize_type)

ALIAS = '"__cdc_r"'       # the table's row in the SELECT
TIMEZONE = "UTC"          # ranges of timestamptz print in the session time zone; Debezium's are UTC

# Postgres' own rendering of the text Debezium sends for the string fallbacks ({c}: the column)
_TEXT: dict[str, str] = {
    "timetz": "regexp_replace(to_char(({c} AT TIME ZONE 'UTC')::time, 'HH24:MI:SS.US'), '\\.?0+$', '') || 'Z'",
    "interval": "format('P%sY%sM%sDT%sH%sM%sS', extract(year FROM {c}), extract(month FROM {c}), "
                "extract(day FROM {c}), extract(hour FROM {c}), extract(minute FROM {c}), "
                "trim_scale(extract(second FROM {c})))",
    "money": "{c}::numeric::text",
    "hstore": "hstore_to_json({c})::text",
    "inet": "format('%s', {c})",           # a host without /32 (inet::text adds it)
    "cidr": "format('%s', {c})",
}
# typemap's validators (conversion -> Postgres predicate of a value the job can convert)
VALIDATORS: dict[str, str] = {
    "timestamptz": "({c} IS NULL OR NOT isfinite({c}) OR ({c} >= '0001-01-01 00:00:00+00' "
                   "AND {c} < '10000-01-01 00:00:00+00'))",
}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _epoch_us(c: str) -> str:
    return (f"CASE WHEN {c} = 'infinity' THEN {TS_POS_INFINITY}::int8 WHEN {c} = '-infinity' THEN "
            f"{TS_NEG_INFINITY}::int8 ELSE (extract(epoch FROM {c}) * 1000000)::int8 END")


def value_expr(m: TypeMapping, col: Column, c: str) -> str:
    """Postgres expression whose to_json is the flat record's value of column `c`."""
    if not m.single_value:
        return f"array_remove({c}, NULL)"
    if m.warning is not None:                           # a string fallback: Debezium's text
        text = _TEXT.get(normalize_type(col.base_type), "{c}::text").format(c=c)
        return f"CASE WHEN {c} IS NOT NULL THEN {text} END"
    base = "enum" if col.kind == "enum" else normalize_type(col.base_type)
    if base in ("int2", "int4"):
        return f"{c}::int4"
    if base in ("int8", "oid"):
        return f"{c}::int8"
    if base == "numeric":
        return f"CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {c}::text END"
    if base in ("float4", "float8", "bool"):
        return f"{c}::{base}"
    if base == "bpchar":
        return f"{c}::bpchar"                          # to_json keeps the padding; ::text would drop it
    if base == "bytea":
        return f"encode({c}, 'hex')"
    if base == "date":
        return f"to_char({c}, 'YYYY-MM-DD')"
    if base == "time":
        return f"to_char({c}, 'HH24:MI:SS.US')"
    if base in ("timestamp", "timestamptz"):
        return _epoch_us(c)
    return f"{c}::text"                                # text, varchar, uuid, enum, json, jsonb


def refusal(spec: MirrorSpec, table: TableInfo) -> str | None:
    """Why the copy load cannot load this mirror exactly (None: it can); the mirror then gets
    Debezium's snapshot."""
    r = spec.rules
    if r.row_filter or r.computed_columns:
        return "its row filter / computed columns are Flink SQL the load does not evaluate"
    if r.mask_columns:
        return "masked columns are masked by Debezium"
    if table.partition_oids is not None:
        return "it is a partitioned table (the load splits one relation's pages)"
    keys = render.key_columns(spec, table)
    for m in map_table(table):
        if m.column in keys and (m.pinot_type in ("FLOAT", "DOUBLE") or not m.single_value):
            return f"key column {m.column!r} is {m.pg_type}: Java and Postgres print floats differently"
        if m.valid("v") is not None and m.conversion not in VALIDATORS:
            return f"the load cannot check {m.pg_type} values as the job does"
    return None


def select(spec: MirrorSpec, table: TableInfo, *, seq: int, source_ts_ms: int) -> str:
    """SELECT of (key JSON, value JSON, bad) per row of the table, to be limited to a page
    range by ranged(). bad: NULL, or the columns (comma-separated Postgres names) whose values
    the job cannot convert; the loader then writes what the job writes (as_dead_row)."""
    keys = render.key_columns(spec, table)
    kept = set(rules.kept_columns(spec.rules, table, keys))
    maps = [m for m in map_table(table) if m.column in kept]
    ref = {m.column: f"{ALIAS}.{quote(m.column)}" for m in maps}
    cols = [f"{value_expr(m, table.column(m.column), ref[m.column])} AS {quote(m.name)}" for m in maps]
    cols += ['false AS "__deleted"', f'{int(seq)}::int8 AS "__seq"', f'{int(source_ts_ms)}::int8 AS "__source_ts_ms"',
             "'r' AS \"__op\""]
    names = {m.column: m.name for m in maps}
    key_json = "'{' || " + " || ',' || ".join(
        f"{literal(json.dumps(names[k], ensure_ascii=False) + ':')} || "
        f"COALESCE(to_json(\"__cdc_v\".{quote(names[k])})::text, 'null')" for k in keys) + " || '}'"
    bad = [f"CASE WHEN NOT {VALIDATORS[m.conversion].format(c=ref[m.column])} THEN {literal(m.column)} END"
           for m in maps if m.conversion in VALIDATORS]
    bad_sql = f"NULLIF(concat_ws(', ', {', '.join(bad)}), '')" if bad else "NULL::text"
    rel = f"{quote(table.schema_name)}.{quote(table.table_name)}"
    return (f"SELECT {key_json}, row_to_json(\"__cdc_v\")::text, {bad_sql} FROM {rel} AS {ALIAS} "
            f"CROSS JOIN LATERAL (SELECT {', '.join(cols)}) AS \"__cdc_v\"")


def ranged(query: str, lo: int, hi: int | None) -> str:
    """The query limited to the heap pages [lo, hi) (hi None: to the end): a TID range scan."""
    where = f" WHERE {ALIAS}.ctid >= '({int(lo)},0)'::tid"
    return query + where + (f" AND {ALIAS}.ctid < '({int(hi)},0)'::tid" if hi is not None else "")


def as_dead_row(value: bytes, bad: str, key_fields: list[str], key_columns: list[str], seq_base: int
                ) -> tuple[bytes | None, bytes]:
    """What the job writes for a row with values it cannot convert (flink_sql/mirror.sql.j2):
    the flat record becomes a delete of its key with every other column NULL (None when a key
    column is the bad one: no flat record), plus a dead letter (key, reason, offset)."""
    row = json.loads(value)
    bad_cols = [c.strip() for c in bad.split(",")]
    key = {f: row.get(f) for f in key_fields}
    dead = {"mirror_key": json.dumps(key, ensure_ascii=False, separators=(",", ":")),
            "reason": "cannot convert column(s) " + bad, "change_offset": row["__seq"] - seq_base,
            "__seq": row["__seq"], "__op": row["__op"], "__source_ts_ms": row["__source_ts_ms"]}
    dead_bytes = json.dumps(dead, ensure_ascii=False, separators=(",", ":")).encode()
    if any(c in key_columns for c in bad_cols):
        return None, dead_bytes
    flat = {f: (v if f in key or f in RESERVED_COLUMNS else None) for f, v in row.items()}
    flat["__deleted"] = True
    return json.dumps(flat, ensure_ascii=False, separators=(",", ":")).encode(), dead_bytes


def jackson_key(key: bytes) -> bytes:
    """The key as Jackson (Flink's 'json' key format) escapes it, where Postgres differs: a
    control character is \\u001F there (Postgres: \\u001f), a character outside the Basic
    Multilingual Plane its UTF-16 surrogates \\uD83D\\uDE00 (Postgres: the raw UTF-8 bytes).
    The key bytes decide the partition and the compaction key, so they must be the job's.
    Plain keys are returned as they are."""
    if key.isascii() and b"\\u" not in key:
        return key
    text, out, i = key.decode(), [], 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out.append("\\\\")
            i += 2
        elif text.startswith("\\u", i):
            out.append("\\u" + text[i + 2:i + 6].upper())
            i += 6
        else:
            cp = ord(text[i])
            if cp >= 0x10000:
                cp -= 0x10000
                out.append(f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}")
            else:
                out.append(text[i])
            i += 1
    return "".join(out).encode()
