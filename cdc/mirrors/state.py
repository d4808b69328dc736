"""Read the current state of a mirrored table from each side, in canonical form.

    postgres_rows(conn, table)            the source of truth
    flat_topic_rows(bootstrap, topic, ..) what Pinot's FULL upsert derives from the flat
                                          topic: per key the record with the highest
                                          __seq wins; a winning __deleted hides the key
    pinot_rows(broker, table, ..)         what Pinot answers

Each returns {key tuple: {column: canonical value}}. flat_topic_rows applies exactly
Pinot's upsert rule, so where Pinot itself cannot run it checks everything up to
Pinot's input.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from psycopg import sql

from cdc.mapping import canonical
from cdc.core.models import TableInfo
from cdc.mapping.typemap import TypeMapping, map_table

Rows = dict[tuple, dict[str, Any]]


def mappings(table: TableInfo) -> dict[str, TypeMapping]:
    return {m.column: m for m in map_table(table)}


def key_of(table: TableInfo, key: list[str] | None = None) -> list[str]:
    return list(key or table.primary_key)


def postgres_rows(conn: psycopg.Connection, table: TableInfo, key: list[str] | None = None) -> Rows:
    maps = mappings(table)
    cols = [c.name for c in table.columns]
    keys = key_of(table, key)
    q = sql.SQL("SELECT {} FROM {}.{}").format(sql.SQL(", ").join(map(sql.Identifier, cols)),
                                               sql.Identifier(table.schema_name), sql.Identifier(table.table_name))
    out: Rows = {}
    for rec in conn.execute(q):
        row = {c: canonical.pg_value(v, maps[c]) for c, v in zip(cols, rec)}
        out[tuple(row[k] for k in keys)] = row
    return out


def flat_topic_rows(bootstrap: str, topic: str, table: TableInfo, key: list[str] | None = None,
                    timeout: float = 60.0) -> Rows:
    """Materialise the upsert state of the flat topic up to its current end offsets."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    maps = mappings(table)
    keys = key_of(table, key)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cdc-reader-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        best: dict[tuple, tuple[int, dict[str, Any]]] = {}
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in c.consume(1000, 1.0):
                if msg.error() is not None or msg.value() is None:
                    continue
                rec = json.loads(msg.value())
                row = {col: canonical.flat_value(rec.get(m.name), m) for col, m in maps.items()}
                k = tuple(row[x] for x in keys)
                seq = int(rec["__seq"])
                if k not in best or seq >= best[k][0]:
                    best[k] = (seq, {**row, "__deleted": bool(rec["__deleted"])})
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
        if todo:
            raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
    finally:
        c.close()
    return {k: {c2: v for c2, v in row.items() if c2 != "__deleted"}
            for k, (_, row) in best.items() if not row["__deleted"]}


def pinot_rows(query, table_name: str, table: TableInfo, key: list[str] | None = None, limit: int = 10_000_000) -> Rows:
    """`query(sql) -> (columns, rows)` is a Pinot broker query function."""
    maps = mappings(table)
    keys = key_of(table, key)
    cols = ", ".join(f'"{m.name}"' for m in maps.values())
    by_name = {m.name: m for m in maps.values()}
    names, rows = query(f'SET enableNullHandling=true; SELECT {cols} FROM "{table_name}" LIMIT {limit}')
    out: Rows = {}
    for r in rows:
        row = {by_name[n].column: canonical.flat_value(v, by_name[n]) for n, v in zip(names, r)}
        out[tuple(row[k] for k in keys)] = row
    return out


def diff(expected: Rows, actual: Rows, samples: int = 5) -> dict[str, Any]:
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differing = [k for k in expected if k in actual and expected[k] != actual[k]]
    return {"missing": len(missing), "extra": len(extra), "differing": len(differing),
            "samples": {"missing": missing[:samples], "extra": extra[:samples],
                        "differing": [(k, expected[k], actual[k]) for k in differing[:samples]]}}


def read_mirror(ctx: Any, name: str) -> tuple[Rows, str]:
    """The mirror's current rows (canonical, by key) and what read them. A Pinot server when
    one runs; else the flat topic (Pinot's input) under Pinot's upsert rule."""
    from cdc.core import names
    from cdc.mirrors import service
    from cdc.postgres import catalog
    rec = service.get_mirror(ctx, name)
    spec = rec.spec
    with catalog.connect(service.source_dsn(ctx, service.get_source(ctx, spec.source))) as conn:
        info = catalog.introspect(conn, spec.schema_name, spec.table_name)
    if service.pinot_enabled(ctx)[0]:
        return pinot_rows(ctx.broker.query, name, info, spec.key_columns), "Pinot server"
    return (flat_topic_rows(ctx.settings.kafka_bootstrap, names.flat_topic(name), info, spec.key_columns),
            "flat topic read with Pinot's upsert rule (no Pinot server here)")
