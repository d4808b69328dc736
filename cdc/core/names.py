"""Every name cdc generates, built here and nowhere else.

    source "shop"                         mirror "public_orders" of public.orders
    ------------------------------------  --------------------------------------------
    connector        cdc-shop             flat topic        cdc.flat.public_orders
    slot/publication cdc_shop             Flink pipeline    cdc-mirror-public_orders
    topic prefix     cdc.shop             Flink group       cdc-flink-public_orders
    change topic     cdc.shop.public.orders   Pinot table   public_orders
                                          rebuilt: generation N  cdc.flat.public_orders.gN,
                                          cdc-mirror-public_orders-gN, Pinot public_orders_gN
                                          behind logical table public_orders
    heartbeat topic  __debezium-heartbeat.cdc.shop
    notifications    cdc.shop._cdc.notifications

Mirror names are also Pinot table names, so they follow Pinot's rules by construction:
lowercase letters, digits and single underscores (Pinot refuses "__" in a table name, and
dots separate database from table), starting with a letter. Column names of the mirror
(flat topic fields and Pinot columns) keep the Postgres names except where Pinot refuses
them: see ``mirror_columns``.
"""

from __future__ import annotations

import re

from cdc.core.errors import ConfigError

DEFAULT_SOURCE = "default"
#: The tables cdc keeps in every source database (schema, table).
SIGNAL_TABLE = ("_cdc", "debezium_signal")
HEARTBEAT_TABLE = ("_cdc", "heartbeat")
FRESHNESS_TABLE = ("_cdc", "freshness")   # the daemon's commit -> visible probes

_TOPIC_BAD = re.compile(r"[^a-zA-Z0-9._-]")
_PREFIX_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_PG_NAME_BAD = re.compile(r"[^a-z0-9_]+")
_MIRROR_BAD = re.compile(r"[^a-z0-9]+")
MIRROR_NAME_RULE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")   # no "__", no leading/trailing "_"
MIRROR_NAME_MAX = 100
SOURCE_NAME_RULE = re.compile(r"[a-z][a-z0-9_]{0,40}")


# ---------------------------------------------------------------- per source

def connector_name(source: str) -> str:
    return f"cdc-{source}"


def pg_name(prefix: str, source: str) -> str:
    """Slot/publication name: lowercase [a-z0-9_], at most 63 bytes (NAMEDATALEN - 1)."""
    return _PG_NAME_BAD.sub("_", f"{prefix}_{source}".lower()).strip("_")[:63]


def slot_name(source: str) -> str:
    return pg_name("cdc", source)


def publication_name(source: str) -> str:
    return pg_name("cdc", source)


def topic_prefix(source: str) -> str:
    """Debezium's topic.prefix of the source's connector."""
    return "cdc." + _PREFIX_BAD.sub("_", source)


def change_topic(source: str, schema: str, table: str) -> str:
    """Debezium's topic for a table: <topic.prefix>.<schema>.<table>, every invalid char -> _,
    counted in UTF-16 units as Java's charAt sees them (a character outside the BMP, e.g. an
    emoji, becomes "__")."""
    return _TOPIC_BAD.sub(lambda m: "_" * (len(m.group().encode("utf-16-le")) // 2),
                          f"{topic_prefix(source)}.{schema}.{table}")


def heartbeat_topic(source: str) -> str:
    return f"__debezium-heartbeat.{topic_prefix(source)}"


def internal_topic_prefix(source: str) -> str:
    """Change topics of the source's own _cdc.* tables (signals, heartbeats, freshness)."""
    return change_topic(source, SIGNAL_TABLE[0], "")


def notification_topic(source: str) -> str:
    """Debezium's snapshot notifications (channel "sink"); under internal_topic_prefix, so it
    goes with the source's other internal topics."""
    return internal_topic_prefix(source) + "notifications"


# ---------------------------------------------------------------- per mirror

def mirror_name(schema: str, table: str, source: str = DEFAULT_SOURCE) -> str:
    """Documented derivation: lowercase ``schema_table``, every run of characters outside
    [a-z0-9] (underscores included) -> one ``_``; sources other than ``default`` prefix
    ``source_``. Legal for Pinot by construction (no "__"); a leading digit gets ``t_``."""
    parts = ([source] if source != DEFAULT_SOURCE else []) + [schema, table]
    base = "_".join(p for p in (_MIRROR_BAD.sub("_", x.lower()).strip("_") for x in parts) if p)
    base = base or "t"
    return ("t_" + base if not base[0].isalpha() else base)[:MIRROR_NAME_MAX].rstrip("_")


def check_mirror_name(name: str) -> str:
    """A --name given by the user: refused unless Pinot would accept it as a table name."""
    if not MIRROR_NAME_RULE.fullmatch(name) or len(name) > MIRROR_NAME_MAX:
        raise ConfigError(f"invalid mirror name {name!r}",
                          hint="use lowercase letters, digits and single underscores between them, starting "
                               "with a letter, at most 100 characters (it becomes the Pinot table name, and Pinot refuses '__')")
    return name


def check_source_name(name: str) -> str:
    if not SOURCE_NAME_RULE.fullmatch(name):
        raise ConfigError(f"invalid source name {name!r}", hint="use lowercase letters, digits and _ (max 41)")
    return name


def split_table(qualified: str) -> tuple[str, str]:
    """SCHEMA.TABLE as users write it (CLI, REST, apply files): "double quotes" around a part
    that holds dots; no schema means public."""
    parts, cur, quoted = [], "", False
    for ch in qualified:
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) == 1:
        return "public", parts[0]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"cannot read {qualified!r} as SCHEMA.TABLE", hint='quote names with dots: \'"my.schema".t\'')
    return parts[0], parts[1]


def flat_topic(mirror: str, generation: int = 0) -> str:
    """The mirror's flat topic. A rebuild (cdc.mirrors.rebuild) fills generation N+1 beside
    generation N, then switches: generation 0 keeps the original name, later ones get ".g<N>"
    (a mirror name holds no dots, so no two mirrors' topics can meet)."""
    return f"cdc.flat.{mirror}" + (f".g{generation}" if generation else "")


def dead_letter_topic(mirror: str) -> str:
    """Rows of the mirror the flatten job could not convert: key, reason, offset (JSON)."""
    return f"cdc.dlq.{mirror}"


def flink_pipeline(mirror: str, generation: int = 0) -> str:
    """The Flink job's name; a rebuild's job (generation N > 0) gets "-g<N>" (a mirror name
    holds no "-")."""
    return f"cdc-mirror-{mirror}" + (f"-g{generation}" if generation else "")


def is_pipeline_of(job_name: str, mirror: str) -> bool:
    """Whether a Flink job name is one of the mirror's jobs, of any generation."""
    base = flink_pipeline(mirror)
    return job_name == base or bool(re.fullmatch(re.escape(base) + r"-g[0-9]+", job_name))


def flink_group(mirror: str) -> str:
    return f"cdc-flink-{mirror}"


def pinot_table(mirror: str) -> str:
    """The name users query: the mirror's name (a Pinot logical table once it was rebuilt)."""
    return mirror


def pinot_physical_table(mirror: str, generation: int = 0) -> str:
    """The REALTIME table that holds a generation's rows. Generation 0 is the table created by
    `mirror add`, queried directly; a rebuild creates "<mirror>_g<N>" and routes the logical
    table <mirror> to it (cdc.mirrors.rebuild)."""
    return mirror + (f"_g{generation}" if generation else "")


# ---------------------------------------------------------------- columns

def mirror_columns(pg_columns: list[str], reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """Postgres column name -> mirror column name (flat topic field, Pinot column).

    Pinot refuses column names with blank space (SchemaUtils: "should not contain blank
    space"), so every whitespace character becomes ``_``. A mapped name that collides with
    another column's name (or a reserved one) gets ``_2``, ``_3``... Columns whose names
    Pinot accepts keep them, always; mapped ones are numbered in the order given (attnum),
    so the mapping is stable for as long as the table's columns are."""
    taken = set(reserved) | {c for c in pg_columns if not re.search(r"\s", c)}
    out: dict[str, str] = {}
    for c in pg_columns:
        if not re.search(r"\s", c):
            out[c] = c
            continue
        base = re.sub(r"\s", "_", c)
        cand, n = base, 1
        while cand in taken:
            n += 1
            cand = f"{base}_{n}"
        taken.add(cand)
        out[c] = cand
    return out
