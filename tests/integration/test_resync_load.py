"""`cdc mirror resync` reads the table with the copy load, exactly, while it keeps changing
(cdc/mirrors/rebuild_load.py).

Real stack; the mirror is read through Pinot's own ingestion and upsert code (Apache Pinot
1.5.1's engine in-process, no server here). Postgres is the oracle (`cdc mirror verify`).

A 200k-row mirror is corrupted in its flat topic (a row with a wrong value and a higher
__seq, and a key Postgres does not have), so only a fresh read of the table can make it right.
Then a transaction T1 opened before the resync inserts, updates and deletes; the resync runs in
a thread with the load split into many ranges; T1 commits once the load has read the table;
writes go on at RATE transactions/s all along. The new generation must equal Postgres.

The second test shows the check can fail: the loaded rows get a __seq above the streamed
changes (the bug the marker prevents), and T1's update and delete, committed after the load
read, lose against the stale loaded rows: verify reports them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.mirrors import initial_load, ops, rebuild_load, service
from cdc.mirrors.verify import format_report, verify_mirror
from syncing import Background, TableWriter, open_t1, wait_for, wait_in_sync

pytestmark = pytest.mark.integration
ROWS = 200_000
RATE = 100


@pytest.fixture
def mirror(ctx: service.Context, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(ctx.settings, "load_chunk_pages", 128)      # many ranges, both readers busy
    t = f"resync_{uuid.uuid4().hex[:6]}"
    ident = sql.Identifier("public", t)
    pg.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v int NOT NULL, note text, ts timestamptz)")
               .format(ident))
    pg.execute(sql.SQL("INSERT INTO {} SELECT g, g %% 1000, 'row ' || g, now() FROM generate_series(1, %s) g")
               .format(ident), (ROWS,))
    pg.execute(sql.SQL("ANALYZE {}").format(ident))
    name = service.add_mirror(ctx, "public", t, load="copy", progress=lambda _m: None).name
    try:
        wait_in_sync(ctx, name, timeout=240)
        yield name
    finally:
        if ctx.registry.get_mirror(name):
            service.remove_mirror(ctx, name, drop_data=True, progress=lambda _m: None)
        pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))


def _corrupt(ctx: service.Context, name: str, pg: psycopg.Connection) -> None:
    """A wrong value for key 5 with a high __seq, and key 10**12 that Postgres never had."""
    from confluent_kafka import Producer
    table = ctx.registry.get_mirror(name).spec.table_name
    v, note = pg.execute(sql.SQL("SELECT v, note FROM {} WHERE id = 5").format(sql.Identifier("public", table))).fetchone()
    bad = {"id": 5, "v": v, "note": "CORRUPTED", "ts": None, "__deleted": False, "__seq": 10**15, "__source_ts_ms": 0, "__op": "u"}
    ghost = {**bad, "id": 10**12, "note": "ghost"}
    p = Producer({"bootstrap.servers": ctx.settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    for rec in (bad, ghost):
        p.produce(names.flat_topic(name), key=json.dumps({"id": rec["id"]}, separators=(",", ":")).encode(),
                  value=json.dumps(rec).encode())
    assert p.flush(30) == 0


def _resync_with_t1(ctx: service.Context, name: str, *, writes: bool) -> list[str]:
    """T1 opened before the resync (insert, update, delete), committed once the load is done
    reading; the resync (load inline, then steps to the switch) in a thread."""
    rec = ctx.registry.get_mirror(name)
    dsn = ctx.settings.local_postgres_dsn
    said: list[str] = []
    t1 = open_t1(dsn, rec.spec.table_name, ROWS + 1)
    writer = TableWriter(dsn, rec.spec.table_name, ROWS, RATE, seed=11)
    th = Background(lambda: ops.resync_and_wait(service.context(ctx.settings), name, progress=said.append,
                                                timeout=600))
    if writes:
        writer.start()
    th.start()
    try:
        try:
            wait_for("the load to be done reading", lambda: any(m.startswith(f"load {name}: done") for m in said)
                     or th.error is not None, timeout=300, poll=0.05)
        except AssertionError:
            print("\n".join(said))
            raise
        t1.commit()
        said.append("test: T1 committed")
        th.join(600)
        assert not th.is_alive(), "\n".join(said)
    finally:
        writer.stop.set()
        if writes:
            writer.join(10)
        t1.close()
    print("\n".join(said))
    assert th.error is None, th.error
    assert writer.error is None, writer.error
    assert writer.done > RATE or not writes, f"only {writer.done} writer transactions"
    return said


def test_resync_by_copy_load_is_exact_under_writes(ctx: service.Context, pg: psycopg.Connection,
                                                    mirror: str) -> None:
    _corrupt(ctx, mirror, pg)
    before = verify_mirror(ctx, mirror, settle_timeout=5)
    assert (before.differing, before.extra) == (1, 1), format_report(before)   # the corruption is seen
    t0 = time.monotonic()
    said = _resync_with_t1(ctx, mirror, writes=True)
    took = time.monotonic() - t0
    rec = ctx.registry.get_mirror(mirror)
    assert rec.generation == 1 and rec.deployment.rebuild is None
    events = ctx.registry.list_events(mirror, limit=60)
    started = next(e for e in events if e.action == "rebuild_started")
    assert "copy load" in started.reason, started.reason
    done = next(e for e in events if e.action == initial_load.EVENT_DONE)
    assert any(m.startswith(f"load: public.{rec.spec.table_name} -> {names.flat_topic(mirror, 1)}") for m in said), said
    status = service.mirror_status(ctx, mirror)
    assert status["load"]["state"] == "done" and status["load"]["chunks_total"] > 4, status["load"]
    report = verify_mirror(ctx, mirror, settle_timeout=90)
    print(format_report(report))
    print(f"\nMEASURE resync by copy load: {ROWS:,} rows, {took:.1f}s resync -> switched; {done.reason}")
    assert report.clean, format_report(report)
    assert report.source_rows > ROWS - 1000


def test_loaded_rows_above_the_stream_lose_changes(ctx: service.Context, pg: psycopg.Connection, mirror: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken on purpose: the loaded rows' __seq above every streamed change. T1's update and
    delete, committed after the load read the table, lose against the stale loaded rows."""
    real = rebuild_load._start_of

    def above(rb: Any, epoch: int) -> initial_load.Start:
        s = real(rb, epoch)
        return initial_load.Start(marker_offset=s.marker_offset, seq=s.seq + 10**9, seq_base=s.seq_base)
    monkeypatch.setattr(rebuild_load, "_start_of", above)
    _resync_with_t1(ctx, mirror, writes=False)
    report = verify_mirror(ctx, mirror, settle_timeout=15)
    print(format_report(report))
    assert (report.missing, report.extra, report.differing) == (0, 1, 1), format_report(report)
