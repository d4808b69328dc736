"""Postgres -> Debezium JSON -> Flink SQL -> Pinot type mapping. Pure; no I/O.

Every value must arrive in Pinot *exactly* as Postgres stored it, or the mirror is wrong
in ways nobody notices. So the Debezium knobs below are chosen for exactness, and where
Pinot has no exact native type we pick an exact representation over a lossy "nice" one.

Debezium settings this module assumes (render.py puts them in the connector config,
see ``DEBEZIUM_VALUE_SETTINGS``):

* ``decimal.handling.mode=string``  numeric/decimal arrive as their decimal text, never a
  double and never Connect's base64 ``Decimal`` bytes (unreadable with schemas disabled).
* ``time.precision.mode=microseconds``  every time/timestamp is an INT64 of microseconds
  whatever the column's declared precision, so one Flink type fits all columns.
* ``binary.handling.mode=hex``  bytea arrives as a hex string (Pinot BYTES ingests hex).
* ``interval.handling.mode=string``  ISO-8601 ``P1Y2M3DT4H5M6.78S`` instead of the
  default *approximate* microsecond count (months would be 30.4375 days).
* ``hstore.handling.mode=json``.

Type table (v = the JSON value Debezium writes with JsonConverter, schemas.enable=false):

=====================  ==========================  ===============  ==========================  ==========================================
Postgres               Debezium JSON               Flink (ROW/out)  Pinot field                 what a Pinot query returns
=====================  ==========================  ===============  ==========================  ==========================================
smallint, smallserial  number                      SMALLINT / INT   INT dimension               the integer
integer, serial, ident number                      INT              INT dimension               the integer
bigint, bigserial, oid number                      BIGINT           LONG dimension              the integer
numeric(p,s), numeric  string "1234.5600"          STRING           BIG_DECIMAL metric          the exact value without trailing zeros
                                                                                                (Pinot strips them: 1.20 reads 1.2); NaN,
                                                                                                +-Infinity become NULL (Pinot has none)
real                   number                      FLOAT            FLOAT metric                the float; NaN reads NULL and -0.0 reads
                                                                                                0.0 (Pinot's ingestion does that)
double precision       number                      DOUBLE           DOUBLE metric               the double; same NaN / -0.0 rule
boolean                true/false                  BOOLEAN          BOOLEAN dimension           true/false
text, varchar(n)       string                      STRING           STRING dimension            the text (maxLengthExceedStrategy
                                                                                                NO_ACTION: never trimmed at 512)
char(n)                string, blank-padded        STRING           STRING dimension            the padded text, as Postgres stores it
uuid                   string (lower-case)         STRING           STRING dimension            canonical text form
enum                   string (label)              STRING           STRING dimension            the label
json, jsonb            string (document text)      STRING           JSON dimension              the document text; jsonb is Postgres'
                                                                                                normalised text; use jsonExtractScalar
bytea                  string, hex                 STRING           BYTES dimension             hex string (Pinot's BYTES rendering)
date                   number, days since epoch    INT / STRING     STRING dateTime             'YYYY-MM-DD' (format SIMPLE_DATE_FORMAT)
time(p)                number, micros of day       BIGINT / STRING  STRING dimension            'HH:MM:SS.ffffff' (fixed width, sortable;
                                                                                                24:00:00 stays 24:00:00.000000)
timestamp(p)           number, micros since epoch  BIGINT           LONG dateTime EPOCH|MICRO   microseconds since 1970-01-01 of the wall
                       of the wall-clock as UTC                                                 clock value (exact; no zone implied)
timestamptz(p)         string "...T..[.ffffff]Z"   STRING / BIGINT  LONG dateTime EPOCH|MICRO   microseconds since the epoch (the instant,
                       (always UTC)                                                             exact); +-infinity = Debezium's timestamp
                                                                                                sentinels 9223372036825200000 / -...400000
int2[] int4[] int8[]   array of numbers            ARRAY<INT..>     INT/LONG multi-value        the elements in order; NULL elements are
                                                                                                dropped, empty and NULL arrays read as
                                                                                                Pinot's MV default (no MV NULLs in Pinot)
text[] varchar[] ...   array of strings            ARRAY<STRING>    STRING multi-value          same rules as above
domain over X          as X                        as X             as X                        as X
=====================  ==========================  ===============  ==========================  ==========================================

Why not Pinot TIMESTAMP: it stores epoch *milliseconds*; Postgres keeps microseconds, so
two different source values could read back equal and updates inside one millisecond would
be invisible. LONG microseconds is exact, totally ordered, and Pinot's datetime functions
accept it (``toDateTime(col / 1000, 'yyyy-MM-dd HH:mm:ss.SSS')``, dateTimeConvert with
``EPOCH|MICROSECONDS``). Dates and times of day have no instant semantics, so they become
readable fixed-width strings whose string order equals chronological order.

Fallbacks (STRING dimension, exact text, with a warning on the TypeMapping):
``timetz`` (ZonedTime, normalised to UTC), ``interval`` (ISO-8601), ``money`` (decimal
text), ``citext``, ``inet``, ``cidr``, ``macaddr``, ``macaddr8``, ``ltree``, ``xml``,
``hstore`` (JSON text), ``int4range``/``int8range``/``numrange``/``tsrange``/
``tstzrange``/``daterange`` - Debezium emits all of them as exact strings, and a string is
all Pinot can do with them anyway.

Everything else raises ``PreflightError`` naming the column and the fix: composite types,
``bit``/``varbit`` (Connect BYTES that JsonConverter base64-encodes: unreadable), geometric
and PostGIS types, pgvector, tsvector, arrays of other element types, unknown types
(Debezium drops them silently unless include.unknown.datatypes is set, which would yield
opaque bytes). Raising beats a silently empty column in the mirror.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Callable, Literal

from cdc.core import names
from cdc.core.errors import PreflightError
from cdc.core.models import Column, TableInfo

log = logging.getLogger(__name__)

#: Connector properties the mapping relies on; render.py merges them into the config.
DEBEZIUM_VALUE_SETTINGS: dict[str, str] = {
    "decimal.handling.mode": "string",
    "time.precision.mode": "microseconds",
    "binary.handling.mode": "hex",
    "interval.handling.mode": "string",
    "hstore.handling.mode": "json",
}

#: Output columns the flattening job adds; a source column must not use these names.
RESERVED_COLUMNS: tuple[str, ...] = ("__seq", "__deleted", "__source_ts_ms", "__op")

#: Debezium's sentinels for +-infinity timestamps (PGStatement.DATE_[POSI|NEGA]TIVE_INFINITY).
TS_POS_INFINITY = 9223372036825200000
TS_NEG_INFINITY = -9223372036832400000

FieldKind = Literal["dimension", "metric", "datetime"]

_ALIASES: dict[str, str] = {
    "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8",
    "smallserial": "int2", "serial": "int4", "bigserial": "int8", "serial2": "int2",
    "serial4": "int4", "serial8": "int8",
    "real": "float4", "double precision": "float8", "boolean": "bool",
    "character varying": "varchar", "character": "bpchar", "char": "bpchar",
    "decimal": "numeric", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "time without time zone": "time",
    "time with time zone": "timetz", "bit varying": "varbit",
}

# base type -> (Flink ROW type, Flink output type, Pinot type, field kind, returns)
_SCALARS: dict[str, tuple[str, str, str, FieldKind, str]] = {
    "int2": ("SMALLINT", "INT", "INT", "dimension", "number"),
    "int4": ("INT", "INT", "INT", "dimension", "number"),
    "int8": ("BIGINT", "BIGINT", "LONG", "dimension", "number"),
    "oid": ("BIGINT", "BIGINT", "LONG", "dimension", "number"),
    "numeric": ("STRING", "STRING", "BIG_DECIMAL", "metric", "decimal string"),
    "float4": ("FLOAT", "FLOAT", "FLOAT", "metric", "number"),
    "float8": ("DOUBLE", "DOUBLE", "DOUBLE", "metric", "number"),
    "bool": ("BOOLEAN", "BOOLEAN", "BOOLEAN", "dimension", "boolean"),
    "text": ("STRING", "STRING", "STRING", "dimension", "string"),
    "varchar": ("STRING", "STRING", "STRING", "dimension", "string"),
    "bpchar": ("STRING", "STRING", "STRING", "dimension", "string, blank-padded"),
    "uuid": ("STRING", "STRING", "STRING", "dimension", "string"),
    "json": ("STRING", "STRING", "JSON", "dimension", "JSON text"),
    "jsonb": ("STRING", "STRING", "JSON", "dimension", "JSON text"),
    "bytea": ("STRING", "STRING", "BYTES", "dimension", "hex string"),
    "date": ("INT", "STRING", "STRING", "datetime", "string"),
    "time": ("BIGINT", "STRING", "STRING", "dimension", "string"),
    "timestamp": ("BIGINT", "BIGINT", "LONG", "datetime", "number"),
    "timestamptz": ("STRING", "BIGINT", "LONG", "datetime", "number"),
}

_STRING_FALLBACKS: frozenset[str] = frozenset({
    "timetz", "interval", "money", "citext", "inet", "cidr", "macaddr", "macaddr8",
    "ltree", "xml", "hstore", "int4range", "int8range", "numrange", "tsrange",
    "tstzrange", "daterange",
})

# array element base type -> (Flink element type, Pinot type)
_ARRAY_ELEMENTS: dict[str, tuple[str, str]] = {
    "int2": ("INT", "INT"), "int4": ("INT", "INT"), "int8": ("BIGINT", "LONG"),
    "float4": ("FLOAT", "FLOAT"), "float8": ("DOUBLE", "DOUBLE"),
    "text": ("STRING", "STRING"), "varchar": ("STRING", "STRING"),
    "bpchar": ("STRING", "STRING"), "uuid": ("STRING", "STRING"), "citext": ("STRING", "STRING"),
}
# int2[] arrives as JSON numbers; reading it as ARRAY<INT> avoids an element-wise cast.



@dataclass(frozen=True)
class TypeMapping:
    """How one column travels. ``expr(ref)`` turns the raw ROW field into the output."""

    column: str
    pg_type: str
    debezium_json: str
    flink_row_type: str          # the type inside the `before`/`after` ROW<...>
    flink_type: str              # type of the output column in the flat topic
    pinot_type: str              # Pinot dataType
    single_value: bool
    field_kind: FieldKind
    returns: str                 # what a Pinot query returns, in words
    conversion: str = "identity"
    datetime_format: str | None = None
    datetime_granularity: str | None = None
    warning: str | None = None
    name: str = ""               # the mirror's column: flat topic field and Pinot column (map_table sets it)

    def expr(self, ref: str) -> str:
        """Flink SQL expression converting raw value ``ref`` (already NULL-safe) to output."""
        return _CONVERSIONS[self.conversion](ref)

    def valid(self, ref: str) -> str | None:
        """Flink SQL predicate: ``expr(ref)`` can convert this raw value (None: every value
        converts). A row with a value that cannot goes to the mirror's dead-letter topic
        instead of failing the job (flink_sql/mirror.sql.j2)."""
        check = _VALIDATORS.get(self.conversion)
        return check(ref) if check else None


def _identity(ref: str) -> str:
    return ref


def _numeric(ref: str) -> str:
    # Pinot BIG_DECIMAL cannot hold NaN/Infinity (Debezium sends "NaN", "POSITIVE_INFINITY",
    # "NEGATIVE_INFINITY"): a NULL is honest, a failed row is not. Anything but a decimal
    # number becomes NULL, so no other spelling can slip through either.
    return (f"CASE WHEN REGEXP({ref}, '^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$') THEN {ref} "
            f"ELSE CAST(NULL AS STRING) END")


def _date(ref: str) -> str:
    return f"CAST(TIMESTAMPADD(DAY, {ref}, DATE '1970-01-01') AS STRING)"


def _time(ref: str) -> str:
    def two(e: str) -> str:
        return f"LPAD(CAST({e} AS STRING), 2, '0')"
    return (f"CASE WHEN {ref} IS NULL THEN CAST(NULL AS STRING) ELSE "
            f"{two(f'{ref} / 3600000000')} || ':' || {two(f'MOD({ref} / 60000000, 60)')} || ':' || "
            f"{two(f'MOD({ref} / 1000000, 60)')} || '.' || LPAD(CAST(MOD({ref}, 1000000) AS STRING), 6, '0') END")


def _timestamptz(ref: str) -> str:
    # Debezium's ZonedTimestamp is ISO-8601 in UTC: 'YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z', the
    # fraction's width depending on snapshot vs streaming. Parse by position: exact, and
    # independent of the session time zone (UNIX_TIMESTAMP/TO_TIMESTAMP_LTZ are not).
    def part(start: int, length: int) -> str:
        return f"CAST(SUBSTRING({ref} FROM {start} FOR {length}) AS BIGINT)"
    days = f"CAST(TIMESTAMPDIFF(DAY, DATE '1970-01-01', CAST(SUBSTRING({ref} FROM 1 FOR 10) AS DATE)) AS BIGINT)"
    secs = f"({days} * 86400 + {part(12, 2)} * 3600 + {part(15, 2)} * 60 + {part(18, 2)})"
    frac = f"CAST(RPAD(COALESCE(REGEXP_EXTRACT({ref}, '\\.([0-9]+)', 1), '0'), 6, '0') AS BIGINT)"
    return (f"CASE WHEN {ref} IS NULL THEN CAST(NULL AS BIGINT) "
            f"WHEN {ref} = 'infinity' THEN CAST({TS_POS_INFINITY} AS BIGINT) "
            f"WHEN {ref} = '-infinity' THEN CAST({TS_NEG_INFINITY} AS BIGINT) "
            f"ELSE {secs} * 1000000 + {frac} END")


def _array(ref: str) -> str:
    # Pinot multi-value columns cannot hold NULL elements.
    return f"ARRAY_REMOVE({ref}, NULL)"


def _smallint(ref: str) -> str:
    return f"CAST({ref} AS INT)"


def _timestamptz_valid(ref: str) -> str:
    # What _timestamptz parses: years 0001-9999 as Debezium writes them. Debezium writes a year
    # after 9999 as '+10000-...' and one before 1 AD as '-0043-...' / '0000-...' (ISO-8601).
    return (f"({ref} IS NULL OR {ref} IN ('infinity', '-infinity') OR "
            f"(REGEXP({ref}, '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}([.][0-9]{{1,9}})?Z$') "
            f"AND SUBSTRING({ref} FROM 1 FOR 4) <> '0000'))")


_VALIDATORS: dict[str, Callable[[str], str]] = {"timestamptz": _timestamptz_valid}

_CONVERSIONS: dict[str, Callable[[str], str]] = {
    "identity": _identity, "numeric": _numeric, "date": _date, "time": _time,
    "timestamptz": _timestamptz, "array": _array, "smallint": _smallint,
}
_CONVERSION_OF = {"numeric": "numeric", "date": "date", "time": "time",
                  "timestamptz": "timestamptz", "int2": "smallint"}
_DEBEZIUM_JSON = {
    "numeric": "string (decimal.handling.mode=string)", "date": "number: days since epoch",
    "time": "number: microseconds of day", "timestamp": "number: microseconds since epoch",
    "timestamptz": "string: ISO-8601 UTC", "bytea": "string: hex", "json": "string: JSON text",
    "jsonb": "string: JSON text", "bool": "boolean", "uuid": "string",
}


def normalize_type(name: str) -> str:
    """Canonical pg_type name for a base type spelled either way ("integer" -> "int4"); type
    modifiers are dropped wherever format_type puts them ("time(3) with time zone" -> "timetz")."""
    n = " ".join(re.sub(r"\([^)]*\)", " ", name.strip().lower()).split())
    return _ALIASES.get(n, n)


def _unsupported(col: Column, why: str) -> PreflightError:
    return PreflightError(
        f"column {col.name!r} has type {col.type_name!r}, which cdc cannot mirror exactly: {why}",
        hint=(f'change the column to a supported type, e.g. ALTER TABLE ... ALTER COLUMN "{col.name}" '
              f'TYPE text USING "{col.name}"::text, or do not mirror this table'),
    )


def map_column(col: Column) -> TypeMapping:
    """Map one column; raises PreflightError if it cannot be mirrored."""
    if col.name in RESERVED_COLUMNS:
        raise PreflightError(
            f"column {col.name!r} collides with a column cdc adds to every mirror ({', '.join(RESERVED_COLUMNS)})",
            hint=f'rename the column (ALTER TABLE ... RENAME COLUMN "{col.name}" TO ...)')
    if col.kind == "composite":
        raise _unsupported(col, "composite (row) types have no Pinot equivalent")
    if col.kind == "array":
        elem = normalize_type(col.element_type or col.base_type.lstrip("_"))
        if elem not in _ARRAY_ELEMENTS:
            raise _unsupported(col, f"arrays of {elem} are not supported "
                                    f"(supported elements: {', '.join(sorted(_ARRAY_ELEMENTS))})")
        flink_elem, pinot = _ARRAY_ELEMENTS[elem]
        return TypeMapping(
            column=col.name, pg_type=col.type_name, debezium_json="JSON array",
            flink_row_type=f"ARRAY<{flink_elem}>", flink_type=f"ARRAY<{flink_elem}>",
            pinot_type=pinot, single_value=False, field_kind="dimension",
            returns="multi-value: elements in order, NULL elements dropped", conversion="array")
    if col.kind == "enum":
        return TypeMapping(
            column=col.name, pg_type=col.type_name, debezium_json="string: enum label",
            flink_row_type="STRING", flink_type="STRING", pinot_type="STRING", single_value=True,
            field_kind="dimension", returns="string: the label")
    base = normalize_type(col.base_type)
    if base in _SCALARS:
        row_t, out_t, pinot, kind, returns = _SCALARS[base]
        fmt = gran = None
        if base == "date":
            fmt, gran = "SIMPLE_DATE_FORMAT|yyyy-MM-dd", "1:DAYS"
        elif base in ("timestamp", "timestamptz"):
            fmt, gran = "EPOCH|MICROSECONDS|1", "1:MICROSECONDS"
        return TypeMapping(
            column=col.name, pg_type=col.type_name,
            debezium_json=_DEBEZIUM_JSON.get(base, "number" if row_t not in ("STRING",) else "string"),
            flink_row_type=row_t, flink_type=out_t, pinot_type=pinot, single_value=True,
            field_kind=kind, returns=returns, conversion=_CONVERSION_OF.get(base, "identity"),
            datetime_format=fmt, datetime_granularity=gran)
    if base in _STRING_FALLBACKS:
        warning = (f"column {col.name!r} ({col.type_name}) is mirrored as its exact text in a "
                   f"Pinot STRING column; Pinot cannot interpret it natively")
        log.warning(warning)
        return TypeMapping(
            column=col.name, pg_type=col.type_name, debezium_json="string",
            flink_row_type="STRING", flink_type="STRING", pinot_type="STRING", single_value=True,
            field_kind="dimension", returns="string: Debezium's text form", warning=warning)
    if base in ("bit", "varbit"):
        raise _unsupported(col, "bit strings arrive as base64 Connect bytes")
    if base == "name":
        # Seen: the snapshot carries the value, but streamed changes (pgoutput) arrive with
        # NULL in its place, so the mirror would lose it on the first UPDATE.
        raise _unsupported(col, "Debezium's streaming (pgoutput) delivers NULL for columns of type name")
    raise _unsupported(col, "no exact Debezium -> Pinot mapping is known for this type")


def map_table(table: TableInfo) -> list[TypeMapping]:
    """Map every column in attnum order; collects all failures into one PreflightError."""
    mappings: list[TypeMapping] = []
    errors: list[PreflightError] = []
    for col in sorted(table.columns, key=lambda c: c.position):
        try:
            mappings.append(map_column(col))
        except PreflightError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PreflightError(
            f"{table.qualified}: {len(errors)} columns cannot be mirrored:\n  "
            + "\n  ".join(e.message for e in errors),
            hint=errors[0].hint)
    mirror_names = names.mirror_columns([m.column for m in mappings], reserved=RESERVED_COLUMNS)
    return [replace(m, name=mirror_names[m.column]) for m in mappings]


def check_supported(table: TableInfo) -> list[str]:
    """Problems (one sentence each) for columns that cannot be mirrored; [] when all map.
    Used by the catalog's preflight so every bad column is reported at once."""
    problems = []
    for col in table.columns:
        try:
            map_column(col)
        except PreflightError as exc:
            problems.append(str(exc.message) + (f" ({exc.hint})" if exc.hint else ""))
    return problems
