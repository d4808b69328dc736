"""Issue 12: a mirror follows its table's life (schema changes, TRUNCATE, DROP TABLE) while
writes continue and queries keep being answered.

One case per change. Each: a table with 400 rows and its mirror; a writer commits ~20
transactions/s, each either an INSERT, an UPDATE, or a DELETE together with two INSERTs, so
the table's row count never goes down; a reader reads the mirror through Pinot's own code
(in-process engine here: `service.read_mirror`) every half second. Mid-run the change is
made; reconciler passes then follow it in place, or rebuild the mirror into a new generation
and switch (cdc.mirrors.rebuild). Afterwards the mirror must equal Postgres in every column
and every row (Postgres is the oracle: `verify`), and every count the reader saw must lie
within [rows before the change, rows after] (TRUNCATE: the old rows until the switch, then
never more than Postgres has). Each case prints a MEASURE line with its times.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from cdc.core.settings import Settings
from cdc.mirrors import reconcile, schema_change, service
from cdc.mirrors.verify import format_report, verify_mirror
from syncing import MirrorReader, converge, wait_in_sync

pytestmark = pytest.mark.integration

RATE = 20.0          # transactions per second
ROWS = 400


class Writer(threading.Thread):
    """INSERT / UPDATE / (DELETE + 2 INSERTs) on columns every case keeps (id, n)."""

    def __init__(self, dsn: str, table: str, next_id: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.next_id = dsn, table, next_id
        self.stop = threading.Event()
        self.txns = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rnd = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                t0 = time.monotonic()
                while not self.stop.is_set():
                    r = rnd.random()
                    with conn.transaction():
                        if r < 0.4:
                            self._insert(conn)
                        elif r < 0.8:
                            conn.execute(f"UPDATE public.{self.table} SET n = n + 1 WHERE id = "
                                         f"(SELECT id FROM public.{self.table} ORDER BY random() LIMIT 1)")
                        else:
                            conn.execute(f"DELETE FROM public.{self.table} WHERE id = "
                                         f"(SELECT id FROM public.{self.table} ORDER BY random() LIMIT 1)")
                            self._insert(conn)
                            self._insert(conn)
                    self.txns += 1
                    lag = t0 + self.txns / RATE - time.monotonic()
                    if lag > 0:
                        time.sleep(lag)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _insert(self, conn: psycopg.Connection) -> None:
        conn.execute(f"INSERT INTO public.{self.table} (id, n) VALUES (%s, 0)", (self.next_id,))
        self.next_id += 1


@dataclass
class Case:
    id: str
    ddl: str              # {t} = the table
    action: str           # the reconciler action that follows it
    load: str = "copy"    # how a rebuild reads the rows (CDC_INITIAL_LOAD)


CASES = [
    Case("add_nullable", "ALTER TABLE {t} ADD COLUMN note text", reconcile.FOLLOW_SCHEMA),
    Case("add_constant_default", "ALTER TABLE {t} ADD COLUMN flag text NOT NULL DEFAULT 'x'", reconcile.REBUILD),
    Case("add_volatile_default", "ALTER TABLE {t} ADD COLUMN r double precision DEFAULT random()",
         reconcile.REBUILD),
    Case("drop_column", "ALTER TABLE {t} DROP COLUMN v", reconcile.REBUILD),
    Case("rename_column", "ALTER TABLE {t} RENAME COLUMN v TO w", reconcile.REBUILD),
    Case("int_to_bigint", "ALTER TABLE {t} ALTER COLUMN c TYPE bigint", reconcile.REBUILD),
    Case("int_to_text", "ALTER TABLE {t} ALTER COLUMN c TYPE text USING 'c=' || c", reconcile.REBUILD),
    Case("varchar_to_text", "ALTER TABLE {t} ALTER COLUMN s TYPE text", reconcile.SCHEMA_IN_PLACE),
    Case("truncate", "TRUNCATE {t}", reconcile.REBUILD),
    Case("truncate_debezium", "TRUNCATE {t}", reconcile.REBUILD, load="debezium"),
    Case("rename_column_debezium", "ALTER TABLE {t} RENAME COLUMN v TO w", reconcile.REBUILD, load="debezium"),
]


PLANNED = {reconcile.FOLLOW_SCHEMA: schema_change.FOLLOW, reconcile.REBUILD: schema_change.REBUILD,
           reconcile.SCHEMA_IN_PLACE: schema_change.IN_PLACE}


def _count(pg: psycopg.Connection, t: str) -> int:
    return int(pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0])


def _table(pg: psycopg.Connection) -> str:
    t = f"life_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, n int NOT NULL, v text, c int, s varchar(20))")
    pg.execute(f"INSERT INTO public.{t} SELECT g, 0, 'v' || g, g, 's' || g FROM generate_series(1, {ROWS}) g")
    return t


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mirror_follows_the_table(ctx: service.Context, pg: psycopg.Connection, settings: Settings,
                                  case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctx.settings, "initial_load", case.load)     # the add and the rebuild
    t = _table(pg)
    name = service.add_mirror(ctx, "public", t, progress=lambda _m: None).name
    writer = reader = None
    try:
        wait_in_sync(ctx, name, timeout=180)
        writer = Writer(settings.local_postgres_dsn, t, 10 * ROWS)
        reader = MirrorReader(ctx.settings, name)
        writer.start()
        reader.start()
        before = ROWS           # the writer never lowers the count: every read is at least this
        time.sleep(3)
        pg.execute(case.ddl.format(t=f"public.{t}"))
        t_ddl = time.monotonic()
        pend = schema_change.pending(ctx, name)            # what `cdc mirror plan` shows now
        assert pend is not None and pend["action"] == PLANNED[case.action], pend
        seen: list[dict] = []
        _took, kinds = converge(ctx, name, timeout=240, seen=seen)
        converged = time.monotonic() - t_ddl
        time.sleep(3)                                   # writes go on against the new generation
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        waited = wait_in_sync(ctx, name, timeout=120)
        total = time.monotonic() - t_ddl
        reader.stop.set()
        reader.join(60)
        after = _count(pg, t)
        report = verify_mirror(ctx, name, settle_timeout=30)
        rec = ctx.registry.get_mirror(name)
        counts = reader.counts
        print(f"\nMEASURE {case.id}: {writer.txns} txns at {RATE:.0f}/s; actions {kinds}; DDL -> converged "
              f"{converged:.1f}s, DDL -> mirror equal in every column {total:.1f}s (final wait {waited:.1f}s); "
              f"generation {rec.generation}; reader {len(counts)} reads in [{min(counts, default=None)}, "
              f"{max(counts, default=None)}], rows before {before}, after {after}; read errors {reader.errors[:3]}")
        assert report.clean, format_report(report)       # the oracle first: Postgres vs the mirror
        assert case.action in kinds, kinds
        assert not reader.errors
        assert counts
        if case.id.startswith("truncate"):
            # the old generation answers (>= before) until the switch; then the new one, never
            # empty (rows are inserted all along) and never more rows than Postgres has
            old = [n for n, g in zip(counts, reader.generations) if g == 0]
            new = [n for n, g in zip(counts, reader.generations) if g is not None and g > 0]
            assert old and new, (counts, reader.generations)
            assert min(old) >= before, (counts, reader.generations)
            assert 0 < min(new) and max(new) <= after and new == sorted(new), (counts, reader.generations, after)
        else:
            assert before <= min(counts) and max(counts) <= after, (counts, before, after)
        if case.action == reconcile.REBUILD:
            assert rec.generation >= 1
            assert seen and seen[0]["generation"] == 1 and seen[0]["serving_generation"] == 0, seen
            events = ctx.registry.list_events(name, limit=50)
            assert "rebuild_switched" in [e.action for e in events], events
            started = next(e for e in events if e.action == "rebuild_started")
            assert ("copy load" if case.load == "copy" else "incremental snapshot") in started.reason, started.reason
        st = service.mirror_status(ctx, name)
        assert st["state"] == "running" and st["schema"]["last_change"] is not None
    finally:
        if writer is not None:
            writer.stop.set()
        if reader is not None:
            reader.stop.set()
        if ctx.registry.get_mirror(name):
            service.remove_mirror(ctx, name, drop_data=True, progress=lambda _m: None)
        pg.execute(f"DROP TABLE IF EXISTS public.{t}")


def test_dropped_and_renamed_tables_are_marked(ctx: service.Context, pg: psycopg.Connection) -> None:
    """DROP TABLE / RENAME TABLE: state error naming what happened and the fix; nothing is
    removed (the mirror keeps its last rows and answers with them)."""
    t1, t2 = _table(pg), _table(pg)
    m1 = service.add_mirror(ctx, "public", t1, progress=lambda _m: None).name
    m2 = service.add_mirror(ctx, "public", t2, progress=lambda _m: None).name
    try:
        wait_in_sync(ctx, m1, timeout=180)
        wait_in_sync(ctx, m2, timeout=180)
        pg.execute(f"DROP TABLE public.{t1}")
        pg.execute(f"ALTER TABLE public.{t2} RENAME TO {t2}_old")
        rec = reconcile.Reconciler(lambda: service.context(ctx.settings), ctx.settings)
        try:
            assert sorted(a.kind for a in rec.run_once() if a.mirror in (m1, m2)) == [reconcile.TABLE_GONE] * 2
            assert not [a for a in rec.run_once() if a.mirror in (m1, m2)]        # marked once, then left alone
        finally:
            rec.stop(timeout=5)
        for m, what in ((m1, "was dropped"), (m2, f"was renamed to public.{t2}_old")):
            r = ctx.registry.get_mirror(m)
            assert r is not None and r.state == "error"
            ev = next(e for e in ctx.registry.list_events(m, limit=10) if e.action == "table_gone")
            assert what in (ev.reason or "") and f"cdc mirror remove {m}" in (ev.reason or ""), ev
            assert len(service.read_mirror(ctx, m)[0]) == ROWS        # still answers with its last rows
    finally:
        for m in (m1, m2):
            if ctx.registry.get_mirror(m):
                service.remove_mirror(ctx, m, drop_data=True, progress=lambda _m: None)
        pg.execute(f"DROP TABLE IF EXISTS public.{t1}, public.{t2}, public.{t2}_old")


def test_truncate_while_the_connector_lags(ctx: service.Context, pg: psycopg.Connection) -> None:
    """Rows inserted while Debezium is behind, then TRUNCATEd: their insert events reach Kafka
    after the rebuild could have begun. The rebuild waits (deferred) until the connector has
    streamed the WAL written before it; otherwise those inserts land above the new
    generation's start and nothing ever removes them (verify: extra rows)."""
    t = _table(pg)
    name = service.add_mirror(ctx, "public", t, progress=lambda _m: None).name
    cname = service.connector_name("default")
    try:
        wait_in_sync(ctx, name, timeout=180)
        ctx.connect.pause(cname)
        ctx.connect.wait_state(cname, "PAUSED", timeout=60)
        pg.execute(f"INSERT INTO public.{t} (id, n) SELECT g, 1 FROM generate_series(10001, 10200) g")
        pg.execute(f"TRUNCATE public.{t}")
        pg.execute(f"INSERT INTO public.{t} (id, n) SELECT g, 2 FROM generate_series(20001, 20005) g")
        # reconciler passes: they resume the connector and rebuild for the TRUNCATE, in one pass
        took, kinds = converge(ctx, name, timeout=240)
        assert reconcile.REBUILD in kinds and reconcile.RESUME_CONNECTOR in kinds, kinds
        in_sync = wait_in_sync(ctx, name, timeout=120)
        report = verify_mirror(ctx, name, settle_timeout=30)
        print(f"\nMEASURE truncate_while_lagging: paused -> converged {took:.1f}s "
              f"(+{in_sync:.1f}s in sync); generation {ctx.registry.get_mirror(name).generation}")
        assert report.clean and report.source_rows == 5, format_report(report)
    finally:
        ctx.connect.resume(cname)
        if ctx.registry.get_mirror(name):
            service.remove_mirror(ctx, name, drop_data=True, progress=lambda _m: None)
        pg.execute(f"DROP TABLE IF EXISTS public.{t}")
