"""A lost replication slot is detected, reported and repaired (issue 11, item 10).

A private Postgres cluster (port 5531: max_slot_wal_keep_size cannot be lowered on the shared
stack without risking everyone's slots) with 1 MB WAL segments and max_slot_wal_keep_size =
2MB. Two tables are mirrored; the connector is stopped through Connect's REST API; rows are
deleted, updated and inserted; then WAL is generated and checkpoints run until Postgres
invalidates the slot (wal_status = 'lost'): those changes can never be streamed.

Expected: mirror status and metrics report the lost slot; the reconciler records "slot_lost",
repairs the source (new slot, fresh snapshot, keys Postgres no longer has removed) and the
mirrors end equal to Postgres -- including the rows deleted while the slot was lost, for
which no DELETE event exists anywhere -- and `cdc mirror verify` exits 0. Postgres is the
oracle (pg_cluster.wait_in_sync_with reads the tables). Then the slot is lost once more and
repaired without a daemon, by `cdc mirror resync`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cdc.core import names
from cdc.core.settings import Settings
from cdc.mirrors import reconcile, service
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.observe import metrics
from pg_cluster import cli, plain_cluster, wait_in_sync_with
from syncing import remove_everything, wait_for

pytestmark = pytest.mark.integration
PORT = 5531
SOURCE, DB = "h_lost", "lostdb"
TABLES = {"items": 2000, "events": 500}


@dataclass
class Env:
    ctx: service.Context
    dsn: str
    admin_dsn: str


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'source="{SOURCE}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def _wal_status(dsn: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                        (names.slot_name(SOURCE),)).fetchone()
    return None if row is None else row[0]


@pytest.fixture(scope="module")
def env(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    opts = "-c max_slot_wal_keep_size=2MB -c min_wal_size=4MB -c max_wal_size=64MB -c checkpoint_timeout=1h"
    with plain_cluster(settings, PORT, opts, ("--wal-segsize=1",)) as cluster:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DB}")
        dsn = f"postgresql://postgres@127.0.0.1:{PORT}/{DB}"
        s = settings.model_copy(update={"registry_path": Path(tmp_path_factory.mktemp("lost")) / "registry.db"})
        ctx = service.context(s)
        try:
            yield Env(ctx, dsn, f"host={cluster.socket_dir} port={PORT} user=postgres dbname={DB}")
        finally:
            remove_everything(ctx, SOURCE)
            ctx.close()


def test_lost_slot_is_reported_and_repaired(env: Env) -> None:
    ctx, dsn = env.ctx, env.dsn
    with psycopg.connect(dsn, autocommit=True) as pg:
        for t, n in TABLES.items():
            pg.execute(f"CREATE TABLE public.{t} (id int PRIMARY KEY, v text, n int NOT NULL)")
            pg.execute(f"INSERT INTO public.{t} SELECT g, md5(g::text), g FROM generate_series(1, {n}) g")
        pg.execute("CREATE TABLE public.filler (id bigserial PRIMARY KEY, pad text)")     # not mirrored
    service.add_source(ctx, SOURCE, dsn)
    mirrors = {t: service.add_mirror(ctx, "public", t, source=SOURCE, progress=print).name for t in TABLES}
    for t, name in mirrors.items():
        print(f"{name}: in sync after {wait_in_sync_with(ctx, name, dsn):.1f}s")
    cname = names.connector_name(SOURCE)

    # The connector stops reading; changes go on; Postgres invalidates the slot.
    _lose_slot(ctx, dsn, cname, [
        "DELETE FROM public.items WHERE id <= 150",
        "UPDATE public.items SET v = 'changed while lost', n = n + 100000 WHERE id BETWEEN 151 AND 300",
        "INSERT INTO public.items SELECT g, 'inserted while lost', g FROM generate_series(2001, 2100) g",
        "DELETE FROM public.events WHERE id % 5 = 0",
        "UPDATE public.events SET v = 'changed while lost' WHERE id % 5 = 1"])

    # Reported: mirror status (exit 1 in the CLI), metrics.
    st = service.mirror_status(ctx, mirrors["items"])
    print("status slot:", st["slot"])
    assert st["slot"].get("lost") is True and "resync" in st["slot"]["hint"], st["slot"]
    text = metrics.render_metrics(ctx)
    assert _metric(text, "cdc_slot_lost") == 1, text
    status_cli = cli(ctx.settings.registry_file, "mirror", "status", mirrors["items"])
    print(status_cli.stdout)
    assert status_cli.returncode == 1

    # Repaired by the reconciler, as `cdc serve` runs it.
    rec = reconcile.Reconciler(lambda: service.context(ctx.settings), ctx.settings, interval_s=2.0, lease_ttl_s=120.0)
    t_repair = time.monotonic()
    seen_resyncing = False
    while True:
        actions = rec.run_once()
        states = {n: ctx.registry.get_mirror(n).state for n in mirrors.values()}
        seen_resyncing |= "resyncing" in states.values()
        print(f"{time.monotonic() - t_repair:5.1f}s: {[(a.kind, a.mirror) for a in actions]} -> {states}")
        done = all(any(e.action == "slot_repaired" for e in ctx.registry.list_events(n, limit=50))
                   for n in mirrors.values())
        if done and set(states.values()) == {"running"}:
            break
        assert time.monotonic() - t_repair < 420, "the lost slot was not repaired within 420s"
        if seen_resyncing:
            text = metrics.render_metrics(ctx)
            assert _metric(text, "cdc_slot_repair_in_progress") in (0, 1)
        time.sleep(2)
    took = time.monotonic() - t_repair
    print(f"repaired in {took:.1f}s")
    assert seen_resyncing
    for name in mirrors.values():
        events = [(e.action, e.reason) for e in reversed(ctx.registry.list_events(name, limit=50))]
        for ev in events:
            print(name, ev)
        order = [a for a, _ in events if a in ("slot_lost", "resync_started", "slot_repaired")]
        assert order[-3:] == ["slot_lost", "resync_started", "slot_repaired"], order
    repaired = next(e.reason for e in ctx.registry.list_events(mirrors["items"], limit=50)
                    if e.action == "slot_repaired")
    assert "150 key(s) Postgres no longer has removed" in (repaired or ""), repaired
    assert _wal_status(dsn) in ("reserved", "extended")
    text = metrics.render_metrics(ctx)
    assert _metric(text, "cdc_slot_lost") == 0 and _metric(text, "cdc_slot_repair_in_progress") == 0, text

    # Exact: Postgres is the oracle, then changes stream again, then verify.
    for name in mirrors.values():
        print(f"{name}: in sync {wait_in_sync_with(ctx, name, dsn, timeout=120):.1f}s after the repair")
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("DELETE FROM public.items WHERE id BETWEEN 151 AND 160")
        pg.execute("INSERT INTO public.items VALUES (1, 'back after the repair', 1)")
        pg.execute("UPDATE public.events SET n = -n WHERE id % 7 = 0")
    for name in mirrors.values():
        wait_in_sync_with(ctx, name, dsn, timeout=120)
        report = verify_mirror(ctx, name, settle_timeout=60)
        print(format_report(report))
        assert report.clean, format_report(report)
        out = cli(ctx.settings.registry_file, "mirror", "verify", name)
        print(out.stdout[-800:], out.stderr[-300:])
        assert out.returncode == 0, out.stdout + out.stderr
    assert cli(ctx.settings.registry_file, "mirror", "status", mirrors["items"]).returncode == 0

    # Without a daemon: lost again, repaired by `cdc mirror resync`.
    _lose_slot(ctx, dsn, cname, ["DELETE FROM public.events WHERE id % 3 = 0",
                                 "INSERT INTO public.items VALUES (5000, 'inserted while lost again', 5)"])
    t0 = time.monotonic()
    out = cli(ctx.settings.registry_file, "mirror", "resync", mirrors["events"])
    print(f"`cdc mirror resync` took {time.monotonic() - t0:.1f}s:", out.stdout[-600:], out.stderr[-1500:])
    assert out.returncode == 0 and "slot repaired" in out.stdout + out.stderr, out.stdout + out.stderr
    for name in mirrors.values():
        assert ctx.registry.get_mirror(name).state == "running"
        report = verify_mirror(ctx, name, settle_timeout=60)
        assert report.clean, format_report(report)


def _lose_slot(ctx: service.Context, dsn: str, cname: str, changes: list[str]) -> None:
    ctx.connect.stop(cname)
    wait_for("connector STOPPED", lambda: (st := ctx.connect.status(cname)) is not None and st.state == "STOPPED", 60)
    with psycopg.connect(dsn, autocommit=True) as pg:
        for stmt in changes:
            pg.execute(stmt)
        t0 = time.monotonic()
        while (wal := _wal_status(dsn)) != "lost":
            assert time.monotonic() - t0 < 180, f"the slot was not invalidated (wal_status {wal})"
            pg.execute("INSERT INTO public.filler (pad) SELECT repeat('x', 500) FROM generate_series(1, 5000)")
            pg.execute("SELECT pg_switch_wal()")
            pg.execute("CHECKPOINT")
    print(f"slot lost after {time.monotonic() - t0:.1f}s of WAL generation")
