"""Issue 12, first case: ALTER TABLE ... ADD COLUMN (no default) on a mirrored table follows
in place, while writes continue, with no change lost.

A writer thread keeps ~50 changes/s (inserts, updates, deletes) going; mid-run the table
gets `ADD COLUMN note text` and the writer starts filling it. Reconciler passes then detect
the change and redeploy the flatten job; afterwards the mirror equals Postgres in every
column. A reader polls the mirror throughout: its row count must stay within what the
writes can explain (rows before - deletes, rows before + inserts).

Uses the `ctx` / `pg` fixtures (they follow CDC_* env, so this runs on a shifted-port stack).
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest

from cdc.core.settings import Settings
from cdc.mirrors import reconcile, service
from syncing import MirrorReader, converge, wait_in_sync

pytestmark = pytest.mark.integration

RATE = 50.0          # changes per second
WINDOW = 20          # rows the test itself updates only between the ALTER and the redeploy


class Writer(threading.Thread):
    def __init__(self, dsn: str, table: str, next_id: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.next_id = dsn, table, next_id
        self.live: list[int] = list(range(WINDOW + 1, next_id))    # 1..WINDOW: the test's own rows
        self.with_note = threading.Event()
        self.stop = threading.Event()
        self.inserts = self.updates = self.deletes = self.notes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rnd = random.Random(12)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                t0, n = time.monotonic(), 0
                while not self.stop.is_set():
                    r = rnd.random()
                    note = self.with_note.is_set()
                    if r < 0.55 or not self.live:
                        i = self.next_id
                        self.next_id += 1
                        if note:
                            conn.execute(f"INSERT INTO public.{self.table} (id, v, n, note) VALUES (%s, %s, %s, %s)",
                                         (i, f"v{i}", 0, f"note {i}"))
                            self.notes += 1
                        else:
                            conn.execute(f"INSERT INTO public.{self.table} (id, v, n) VALUES (%s, %s, %s)",
                                         (i, f"v{i}", 0))
                        self.live.append(i)
                        self.inserts += 1
                    elif r < 0.9:
                        k = rnd.choice(self.live)
                        if note:
                            conn.execute(f"UPDATE public.{self.table} SET n = n + 1, note = %s WHERE id = %s",
                                         (f"upd {k} {n}", k))
                            self.notes += 1
                        else:
                            conn.execute(f"UPDATE public.{self.table} SET n = n + 1 WHERE id = %s", (k,))
                        self.updates += 1
                    else:
                        k = self.live.pop(rnd.randrange(len(self.live)))
                        conn.execute(f"DELETE FROM public.{self.table} WHERE id = %s", (k,))
                        self.deletes += 1
                    n += 1
                    lag = t0 + n / RATE - time.monotonic()
                    if lag > 0:
                        time.sleep(lag)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_add_column_follows_in_place_under_writes(ctx: service.Context, pg: psycopg.Connection,
                                                  settings: Settings) -> None:
    t = f"addcol_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL)")
    pg.execute(f"INSERT INTO public.{t} SELECT g, 'v' || g, 0 FROM generate_series(1, 300) g")
    name = service.add_mirror(ctx, "public", t, progress=lambda _m: None).name
    writer = reader = None
    try:
        wait_in_sync(ctx, name, timeout=180)
        before = pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0]
        writer = Writer(settings.local_postgres_dsn, t, before + 1)
        reader = MirrorReader(ctx.settings, name)
        writer.start()
        reader.start()
        time.sleep(8)                                   # the old job mirrors writes for a while
        pg.execute(f"ALTER TABLE public.{t} ADD COLUMN note text")
        t_alter = time.monotonic()
        writer.with_note.set()
        # Changes only the old job sees: it ignores `note`, and its offsets move past them.
        pg.execute(f"UPDATE public.{t} SET note = 'window ' || id WHERE id <= {WINDOW}")
        time.sleep(5)                                   # events with `note` reach the old job
        took, kinds = converge(ctx, name, timeout=180)
        time.sleep(5)                                   # writes go on against the new job
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        waited = wait_in_sync(ctx, name, timeout=180)
        total = time.monotonic() - t_alter
        reader.stop.set()
        reader.join(60)
        after = pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0]
        lo, hi = before - writer.deletes, before + writer.inserts
        print(f"\nMEASURE add column under {RATE:.0f} changes/s: {writer.inserts} inserts, {writer.updates} updates, "
              f"{writer.deletes} deletes ({writer.notes} writing note); reconciler converged {took:.1f}s after "
              f"its first pass ({kinds}); ALTER -> mirror equal in every column {total:.1f}s "
              f"(final sync wait {waited:.1f}s); reader {len(reader.counts)} reads, counts "
              f"[{min(reader.counts, default=None)}, {max(reader.counts, default=None)}] within [{lo}, {hi}]; "
              f"rows before {before}, after {after}; read errors {reader.errors[:3]}")
        assert writer.notes > 0
        assert reader.counts and lo <= min(reader.counts) and max(reader.counts) <= hi, (reader.counts, lo, hi)
        assert not reader.errors
        rec = ctx.registry.get_mirror(name)
        assert rec is not None and rec.state == "running"
        assert "note" in [c.name for c in rec.deployment.table.columns]
        st = service.mirror_status(ctx, name)
        change = st["schema"]["last_change"]
        assert change is not None and "note" in change["reason"] and "added" in change["reason"]
        # exact: every column, and the new one is really filled (not just NULL on both sides)
        rows = service.read_mirror(ctx, name)[0]
        assert all(rows[(i,)]["note"] == f"window {i}" for i in range(1, WINDOW + 1)), \
            [rows[(i,)] for i in range(1, 4)]
        filled = pg.execute(f"SELECT count(*) FROM public.{t} WHERE note IS NOT NULL").fetchone()[0]
        assert filled > 0
    finally:
        if writer is not None:
            writer.stop.set()
        if reader is not None:
            reader.stop.set()
        if ctx.registry.get_mirror(name):
            service.remove_mirror(ctx, name, drop_data=True, progress=lambda _m: None)
        pg.execute(f"DROP TABLE IF EXISTS public.{t}")


def test_unsupported_type_blocks_the_mirror_until_fixed(ctx: service.Context, pg: psycopg.Connection) -> None:
    """A column changed to a type cdc cannot mirror: the mirror stops (schema_blocked) naming
    the column and the way out, keeps answering with its last good rows, and resumes through a
    rebuild once the column is changed back; then it equals Postgres again."""
    from cdc.mirrors.verify import format_report, verify_mirror
    t = f"schblk_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, v text, n int)")
    pg.execute(f"INSERT INTO public.{t} SELECT g, 'v' || g, g FROM generate_series(1, 50) g")
    name = service.add_mirror(ctx, "public", t, progress=lambda _m: None).name
    rec = reconcile.Reconciler(lambda: service.context(ctx.settings), ctx.settings)
    try:
        wait_in_sync(ctx, name, timeout=120)
        pg.execute(f"ALTER TABLE public.{t} ALTER COLUMN v TYPE name")     # `name`: no mapping to Pinot
        pg.execute(f"UPDATE public.{t} SET n = n + 100 WHERE id <= 10")
        assert [a.kind for a in rec.run_once() if a.mirror == name] == [reconcile.SCHEMA_UNSUPPORTED]
        assert [a.kind for a in rec.run_once() if a.mirror == name] == []   # blocked: looks, does nothing
        m = ctx.registry.get_mirror(name)
        assert m is not None and m.state == "schema_blocked"
        change = service.mirror_status(ctx, name)["schema"]["last_change"]
        assert change["followed"] is False and "v:" in change["reason"] and "ALTER COLUMN" in change["reason"]
        assert len(service.read_mirror(ctx, name)[0]) == 50                 # its last good rows answer
        pg.execute(f"ALTER TABLE public.{t} ALTER COLUMN v TYPE text")      # the fix
        assert [a.kind for a in rec.run_once() if a.mirror == name] == [reconcile.REBUILD]
        converge(ctx, name, timeout=180)
        assert ctx.registry.get_mirror(name).state == "running"
        report = verify_mirror(ctx, name, settle_timeout=30)
        assert report.clean, format_report(report)
    finally:
        rec.stop(timeout=5)
        if ctx.registry.get_mirror(name):
            service.remove_mirror(ctx, name, drop_data=True, progress=lambda _m: None)
        pg.execute(f"DROP TABLE IF EXISTS public.{t}")
