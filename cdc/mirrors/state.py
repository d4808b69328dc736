"""Read the current state of a mirrored table from each side.

    postgres_rows(conn, table)           the source of truth, canonical
    pinot_rows(query, name, table)       what a Pinot server answers, canonical
    engine_rows(bootstrap, spec, table)  what Pinot's own ingestion + FULL-upsert code makes of
                                         the mirror's flat topic, run in-process (cdc's Pinot
                                         engine: no server), from the schema and table config
                                         cdc renders for the mirror, unchanged; canonical

cdc.mirrors.status.read_mirror(ctx, name) picks one for a registered mirror and says which.

Canonical rows are {key tuple: {Postgres column: canonical value}} (cdc.mapping.canonical).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from cdc.core import names
from cdc.core.models import MirrorSpec, TableInfo
from cdc.mapping import canonical, render
from cdc.mapping.typemap import TS_NEG_INFINITY, TS_POS_INFINITY, TypeMapping, map_table

Rows = dict[tuple, dict[str, Any]]
SERVER = "Pinot server"


def mappings(table: TableInfo) -> dict[str, TypeMapping]:
    return {m.column: m for m in map_table(table)}


def key_of(table: TableInfo, key: list[str] | None = None) -> list[str]:
    return list(key or table.primary_key)


def postgres_rows(conn: psycopg.Connection, table: TableInfo, key: list[str] | None = None) -> Rows:
    maps = mappings(table)
    cols = [c.name for c in table.columns]
    keys = key_of(table, key)
    sel = [sql.SQL(canonical.pg_select(maps[c], sql.Identifier(c).as_string())) for c in cols]
    q = sql.SQL("SELECT {} FROM {}.{}").format(sql.SQL(", ").join(sel),
                                               sql.Identifier(table.schema_name), sql.Identifier(table.table_name))
    out: Rows = {}
    with conn.cursor() as cur:
        from cdc.postgres.catalog import exact_loaders
        exact_loaders(cur, TS_POS_INFINITY, TS_NEG_INFINITY)
        cur.execute("SET TimeZone = 'UTC'")        # canonical.pg_select: ranges print in UTC
        recs = cur.execute(q).fetchall()
    for rec in recs:
        row = {c: canonical.pg_value(v, maps[c]) for c, v in zip(cols, rec)}
        out[tuple(row[k] for k in keys)] = row
    return out


def flat_records(bootstrap: str, topic: str, timeout: float = 120.0, *, raw: bool = False
                 ) -> Iterator[tuple[int, int, Any]]:
    """(partition, offset, record) of the flat topic up to the end offsets seen at the start,
    in offset order per partition: the input a Pinot server consumes. raw: the record as the
    message's text (unparsed). `timeout` bounds a stall (no message), not the whole read."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cdc-reader-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in c.consume(1000, 1.0):
                deadline = time.monotonic() + timeout
                p = msg.partition()
                if msg.error() is not None or p not in todo or msg.offset() >= ends[p]:
                    continue
                if msg.offset() + 1 >= ends[p]:
                    todo.discard(p)
                if msg.value() is not None:
                    yield p, msg.offset(), msg.value().decode() if raw else json.loads(msg.value())
        if todo:
            raise TimeoutError(f"reading {topic} to its end stalled for {timeout:.0f}s")
    finally:
        c.close()


def flat_record_count(bootstrap: str, topic: str) -> int:
    """Messages in the topic now (end - start offsets, over its partitions)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdc-reader-count", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in (md.topics[topic].partitions if topic in md.topics else {}):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += max(0, hi - lo)
        return total
    finally:
        c.close()


def epoch_above(bootstrap: str, flat_topic: str) -> int:
    """The first change-topic epoch above every record already in a flat topic (0 when it has
    none; __seq = epoch << render.SEQ_EPOCH_SHIFT | offset): a mirror added over a kept flat
    topic writes in it, so its rows outrank the old ones (cdc.mirrors.topic_epoch)."""
    top = max((int(v["__seq"]) for _p, _o, v in flat_records(bootstrap, flat_topic)
               if v and v.get("__seq") is not None), default=-1)
    return 0 if top < 0 else (top >> render.SEQ_EPOCH_SHIFT) + 1


def engine_raw_rows(bootstrap: str, spec: MirrorSpec, table: TableInfo, generation: int = 0
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (Pinot column names, values as a Pinot query returns them) and the engine's
    summary, from Pinot's own code consuming the flat topic of the mirror's generation (the
    in-process counterpart of querying its logical table: the registry names the generation)."""
    summary: dict[str, Any] = {}
    rows = list(engine_row_iter(bootstrap, spec, table, summary, generation))
    return rows, summary


def engine_row_iter(bootstrap: str, spec: MirrorSpec, table: TableInfo, summary: dict[str, Any],
                    generation: int = 0) -> Iterator[dict[str, Any]]:
    """engine_raw_rows one row at a time, for a mirror of any size: the topic's messages go to
    the engine unparsed, its heap is sized for the topic; `summary` is filled at the end."""
    topic = names.flat_topic(spec.name, generation)
    schema = render.render_pinot_schema(spec, table)
    table_config = render.render_pinot_table(spec, table, kafka_bootstrap=bootstrap, flat_topic=topic)
    engine, records = engine_input(bootstrap, topic)
    return engine.upsert_iter(schema, table_config, records, summary)


def engine_input(bootstrap: str, topic: str) -> tuple[Any, Iterator[tuple[int, int, Any]]]:
    """A Pinot engine with a heap sized for the topic, and the topic's messages (unparsed)."""
    from cdc.clients import pinot_engine
    engine = pinot_engine.default_engine()
    heap = pinot_engine.heap_for(flat_record_count(bootstrap, topic))
    if pinot_engine.heap_mib(heap) != pinot_engine.heap_mib(engine.heap):
        engine = pinot_engine.PinotEngine(heap=heap)
    return engine, flat_records(bootstrap, topic, raw=True)


def canonical_rows(raw: list[dict[str, Any]], table: TableInfo, key: list[str] | None) -> Rows:
    by_name = {m.name: m for m in mappings(table).values()}
    keys = key_of(table, key)
    out: Rows = {}
    for r in raw:
        row = {by_name[n].column: canonical.flat_value(v, by_name[n]) for n, v in r.items() if n in by_name}
        out[tuple(row[k] for k in keys)] = row
    return out


def engine_rows(bootstrap: str, spec: MirrorSpec, table: TableInfo) -> Rows:
    raw, _ = engine_raw_rows(bootstrap, spec, table)
    return canonical_rows(raw, table, spec.key_columns)


def engine_label(summary: dict[str, Any] | None = None) -> str:
    """What read the mirror when no server runs, e.g. "Apache Pinot 1.5.1 in-process (...), no server"."""
    from cdc.stack import versions
    return str((summary or {}).get("engine") or f"Apache Pinot {versions.PINOT} engine in-process, no server")


def pinot_rows(query: Any, table_name: str, table: TableInfo, key: list[str] | None = None,
               limit: int = 10_000_000) -> Rows:
    """`query(sql) -> (columns, rows)` is a Pinot broker query function."""
    maps = mappings(table)
    cols = ", ".join(f'"{m.name}"' for m in maps.values())
    col_names, rows = query(f'SET enableNullHandling=true; SELECT {cols} FROM "{table_name}" LIMIT {limit}')
    return canonical_rows([dict(zip(col_names, r)) for r in rows], table, key)


def diff(expected: Rows, actual: Rows, samples: int = 5) -> dict[str, Any]:
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differing = [k for k in expected if k in actual and expected[k] != actual[k]]
    return {"missing": len(missing), "extra": len(extra), "differing": len(differing),
            "samples": {"missing": missing[:samples], "extra": extra[:samples],
                        "differing": [(k, expected[k], actual[k]) for k in differing[:samples]]}}
