"""The copy load writes what the flatten job writes, byte for byte where it matters.

Two tables with the same rows: one mirrored through Debezium's snapshot and the Flink job
(`load="debezium"`), the other through the parallel COPY load (`load="copy"`). Per key, the
Kafka key bytes and the partition must be identical (they decide Pinot's upsert partition and
the compaction key) and every value must be the same JSON value (numbers as numbers, the
text fallbacks as the same text). Then the copy-loaded mirror, read through Pinot's own
ingestion and upsert code, must equal the independent Postgres oracle of test_every_type for
every type cdc maps, and `cdc mirror verify` must be clean.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.mirrors import service
from cdc.mirrors.verify import format_report, verify_mirror
from syncing import wait_for
from test_every_type import COLUMNS, ROWS, SCHEMA, compare, mirror, oracle

pytestmark = pytest.mark.integration
VOLATILE = ("__seq", "__source_ts_ms", "__op")


def flat_by_key(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[bytes, tuple[int, dict[str, Any]]]:
    """key bytes -> (partition, value) of the last record per key, the topic read to its end."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out: dict[bytes, tuple[int, dict[str, Any]]] = {}
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                if m.error() is None and m.offset() < ends[m.partition()]:
                    out[m.key()] = (m.partition(), json.loads(m.value()))
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        c.close()


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, str) or isinstance(b, str):          # "NaN" / "Infinity", as Jackson and Postgres write them
            return str(a) == str(b)
        return (a is None and b is None) or (a is not None and b is not None and
                                             (float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def compare_flat(dbz: dict[bytes, tuple[int, dict]], copy: dict[bytes, tuple[int, dict]],
                 loose: frozenset[str] = frozenset()) -> list[str]:
    """Differences between the job's records and the load's, per key bytes. `loose` fields: the
    same JSON document (hstore: Debezium's key order is a Java HashMap's)."""
    problems = [f"key {k!r} only in the job's records" for k in dbz if k not in copy]
    problems += [f"key {k!r} only in the load's records" for k in copy if k not in dbz]
    for k in sorted(set(dbz) & set(copy)):
        (pd, vd), (pc, vc) = dbz[k], copy[k]
        if pd != pc:
            problems.append(f"key {k!r}: partition {pd} (job) vs {pc} (load)")
        if list(vd) != list(vc):
            problems.append(f"key {k!r}: fields {list(vd)} (job) vs {list(vc)} (load)")
        for f in vd:
            if f in VOLATILE:
                continue
            a, b = vd[f], vc.get(f)
            ok = json.loads(a) == json.loads(b) if f in loose and a and b else same_value(a, b)
            if not ok:
                problems.append(f"key {k!r} {f}: job {str(a)[:60]!r}, load {str(b)[:60]!r}")
    return problems


@pytest.fixture
def twin_tables(pg: psycopg.Connection) -> Iterator[tuple[str, str]]:
    for ext in ("hstore", "citext", "ltree"):
        pg.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("DROP TYPE IF EXISTS {}.mood CASCADE").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("CREATE TYPE {}.mood AS ENUM ('sad', 'ok', 'happy')").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("DROP DOMAIN IF EXISTS {}.posint CASCADE").format(sql.Identifier(SCHEMA)))
    pg.execute(sql.SQL("CREATE DOMAIN {}.posint AS integer CHECK (VALUE > 0)").format(sql.Identifier(SCHEMA)))
    cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t if t not in ("mood", "posint") else
                                                                f'"{SCHEMA}".{t}')) for c, t, _, _ in COLUMNS]
    tables = (f"via dbz {uuid.uuid4().hex[:4]}", f"via copy {uuid.uuid4().hex[:4]}")
    ins_cols = sql.SQL(", ").join(sql.Identifier(c) for c, *_ in COLUMNS)
    for t in tables:
        pg.execute(sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, {})").format(
            sql.Identifier(SCHEMA), sql.Identifier(t), sql.SQL(", ").join(cols)))
        with pg.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {}.{} (id, {}) VALUES ({})").format(
                sql.Identifier(SCHEMA), sql.Identifier(t), ins_cols,
                sql.SQL(", ").join(sql.Placeholder() * (len(COLUMNS) + 1))), ROWS)
    yield tables
    for t in tables:
        pg.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(t)))


def test_copy_load_writes_what_the_job_writes_for_every_type(ctx: service.Context, pg: psycopg.Connection,
                                                             twin_tables: tuple[str, str]) -> None:
    via_dbz, via_copy = twin_tables
    boot = ctx.settings.kafka_bootstrap
    dbz = service.add_mirror(ctx, SCHEMA, via_dbz, load="debezium", progress=print)
    try:
        copy = service.add_mirror(ctx, SCHEMA, via_copy, load="copy", progress=print)
        try:
            assert service.mirror_status(ctx, copy.name)["load"]["state"] == "done"
            job = wait_for("the job's snapshot records", lambda: (r := flat_by_key(boot, names.flat_topic(dbz.name)))
                           and len(r) == len(ROWS) and r, timeout=180, poll=2)
            loaded = flat_by_key(boot, names.flat_topic(copy.name))
            problems = compare_flat(job, loaded, loose=frozenset({"c_hstore"}))
            assert not problems, "\n".join(problems[:40])
            expected = oracle(pg, via_copy)
            actual, reader = mirror(ctx, copy.name, pg, via_copy)
            problems = compare(expected, actual)
            assert not problems, f"read by {reader}:\n" + "\n".join(problems[:40])
            report = verify_mirror(ctx, copy.name, settle_timeout=30)
            assert report.clean, format_report(report)
        finally:
            service.remove_mirror(ctx, copy.name, drop_data=True, progress=print)
    finally:
        service.remove_mirror(ctx, dbz.name, drop_data=True, progress=print)


KEY_DDL = ("(k_text text, k_uuid uuid, k_date date, k_ts timestamptz, k_num numeric(20,6), k_bool boolean, "
           "k_big bigint, v text, PRIMARY KEY (k_big, k_text, k_uuid, k_date, k_ts, k_num, k_bool))")
KEY_TEXTS = ["plain", "a\x1fb\x01c", 'q"uote', "back\\slash", "ünïcødé €", "tab\there", "nl\nx", "emoji 😀", "",
             " "]


def test_key_bytes_and_partitions_match_the_job(ctx: service.Context, pg: psycopg.Connection) -> None:
    """Composite keys of every common key type, with strings JSON must escape (control
    characters: Jackson writes \\u001F where Postgres writes \\u001f)."""
    tables = [f"keys dbz {uuid.uuid4().hex[:4]}", f"keys copy {uuid.uuid4().hex[:4]}"]
    rows = [(t, uuid.UUID(int=i * 7919), f"20{i % 30 + 10:02d}-0{i % 9 + 1}-1{i % 9}",
             f"2024-01-01 00:00:{i % 60:02d}.{i:06d}+00", f"{i}.{i % 7:06d}" if i % 3 else "-0.000001", i % 2 == 0,
             i * 1_000_003 - 500, f"v{i}")
            for i, t in enumerate(KEY_TEXTS * 5)]
    for t in tables:
        pg.execute(sql.SQL("CREATE TABLE {}.{} " + KEY_DDL).format(sql.Identifier(SCHEMA), sql.Identifier(t)))
        with pg.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {}.{} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(
                sql.Identifier(SCHEMA), sql.Identifier(t)), rows)
    recs = []
    try:
        recs.append(service.add_mirror(ctx, SCHEMA, tables[0], load="debezium", progress=print))
        recs.append(service.add_mirror(ctx, SCHEMA, tables[1], load="copy", progress=print))
        boot = ctx.settings.kafka_bootstrap
        job = wait_for("the job's records", lambda: (r := flat_by_key(boot, names.flat_topic(recs[0].name)))
                       and len(r) == len(rows) and r, timeout=180, poll=2)
        loaded = flat_by_key(boot, names.flat_topic(recs[1].name))
        assert len(loaded) == len(rows)
        assert {p for p, _ in loaded.values()} == {0, 1}, "both partitions are used"
        problems = compare_flat(job, loaded)
        assert not problems, "\n".join(problems[:40])
    finally:
        for r in recs:
            service.remove_mirror(ctx, r.name, drop_data=True, progress=print)
        for t in tables:
            pg.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(t)))
