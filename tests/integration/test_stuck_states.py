"""A control process killed in the middle of `mirror add` / `mirror remove` (issue 11, item 9).

`cdc mirror add` runs as its own process and is killed with SIGKILL at a fault point
(CDC_FAULT_KILL_AT, cdc.mirrors.rollback.fault): after the connector got the new table but
before the add finished, or after everything was made while it waited for Debezium. Then the
source's connector is stopped (a fault the reconciler must repair). Expected, with the
reconciler running every 2 s and CDC_STUCK_AFTER_S = 20:

* while the dead add's mirror is "creating", the connector is nevertheless repaired once the
  bound has passed (before the fix a "creating" mirror blocked every repair of its source,
  forever);
* within the bound (plus a pass) the cut-off add is rolled back from its journal -- Flink job
  cancelled, topics deleted, the table taken out of the connector, registry row gone -- or,
  when it had made everything, resumed to "running" and in sync with Postgres;
* a remove killed half-way is finished (with --drop-data as asked);
* the other mirror of the source stays exact (`verify` clean).

Own database (h_stuck), source, registry; the stack is shared with other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.clients.kafka import KafkaAdmin
from cdc.core import names
from cdc.core.settings import Settings
from cdc.mirrors import reconcile, rollback, service
from cdc.mirrors.verify import format_report, verify_mirror
from syncing import private_database_context, wait_for, wait_in_sync

pytestmark = pytest.mark.integration
DB = SOURCE = "h_stuck"
BOUND = 20.0


@pytest.fixture(scope="module")
def sctx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[service.Context]:
    with private_database_context(settings, Path(tmp_path_factory.mktemp("stuck")), DB, SOURCE,
                                  settings.local_dsn, stuck_after_s=BOUND) as ctx:
        yield ctx


def _cdc_killed_at(ctx: service.Context, point: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file), rollback.FAULT_ENV: point,
           "CDC_POSTGRES_DSN": ctx.settings.source_dsn(), "CDC_STUCK_AFTER_S": str(BOUND)}
    p = subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    print(f"`cdc {' '.join(args)}` killed at {point}: rc {p.returncode}\n{p.stderr[-1500:]}")
    return p


class _Reconciler:
    """The reconciler of this test's registry every 2 s, in a thread, with the test's bound."""

    def __init__(self, ctx: service.Context) -> None:
        self.r = reconcile.Reconciler(lambda: service.context(ctx.settings), ctx.settings, interval_s=2.0,
                                      lease_ttl_s=120.0)

    def __enter__(self) -> _Reconciler:
        self.r.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.r.stop(120)


def _events(ctx: service.Context, mirror: str) -> list[tuple[int, str, str | None]]:
    return [(e.id, e.action, e.reason) for e in reversed(ctx.registry.list_events(mirror, limit=200))]


def _live_jobs(ctx: service.Context, mirror: str) -> list[str]:
    return [j.id for j in ctx.jobmanager.jobs() if j.name == names.flink_pipeline(mirror)
            and j.state not in ("CANCELED", "FAILED", "FINISHED")]


def test_killed_add_is_rolled_back_or_resumed_and_connector_repaired(sctx: service.Context) -> None:
    ctx = sctx
    dsn = ctx.settings.local_dsn(DB)
    cname = names.connector_name(SOURCE)
    service.add_source(ctx, SOURCE, dsn)
    with psycopg.connect(dsn, autocommit=True) as pg:
        for t in ("a", "b", "c"):
            pg.execute(f"CREATE TABLE public.{t} (id int PRIMARY KEY, v text, n int)")
            pg.execute(f"INSERT INTO public.{t} SELECT g, 'v' || g, g FROM generate_series(1, 300) g")
    a = service.add_mirror(ctx, "public", "a", source=SOURCE, progress=print).name
    wait_in_sync(ctx, a, timeout=180)
    b, c = names.mirror_name("public", "b", SOURCE), names.mirror_name("public", "c", SOURCE)

    # 1. An add killed after the connector got the table: rolled back from its journal. Debezium's
    #    snapshot path, where the job already runs then (the copy load submits it after the load;
    #    step 2 resumes a copy-loaded add).
    killed = _cdc_killed_at(ctx, "connector_configured", "mirror", "add", "public.b", "--source", SOURCE,
                            "--load", "debezium")
    t_kill = time.monotonic()
    assert killed.returncode == -9, "the add was not killed at the fault point"
    rec_b = ctx.registry.get_mirror(b)
    assert rec_b is not None and rec_b.state == "creating", rec_b
    journal = [r for _, act, r in _events(ctx, b) if act == rollback.EVENT_STEP]
    print("journal:", journal)
    assert any('"connector"' in (r or "") for r in journal), "the connector's undo was not registered before the step"
    assert _live_jobs(ctx, b), "the killed add's job should be running"
    assert "public\\.b" in (ctx.connect.get_config(cname) or {}).get("table.include.list", "")
    ctx.connect.stop(cname)                            # a fault the reconciler must repair
    wait_for("connector STOPPED", lambda: (st := ctx.connect.status(cname)) is not None and st.state == "STOPPED", 60)

    with _Reconciler(ctx):
        running = wait_for("connector repaired", lambda: (st := ctx.connect.status(cname)) is not None and st.running,
                           BOUND + 60, poll=1)
        t_repaired = time.monotonic() - t_kill
        gone = wait_for("the killed add rolled back", lambda: ctx.registry.get_mirror(b) is None, BOUND + 90, poll=1)
        t_rolled = time.monotonic() - t_kill
    print(f"connector RUNNING {t_repaired:.1f}s after the kill ({running}), add rolled back after {t_rolled:.1f}s "
          f"(bound {BOUND:.0f}s)")
    assert gone and t_rolled < BOUND + 30, t_rolled
    evs_a, evs_b = _events(ctx, a), _events(ctx, b)
    resumed = [i for i, act, _ in evs_a if act == "reconcile:resume_connector"]
    rolled = [(i, r) for i, act, r in evs_b if act == "rolled_back"]
    print("events of a:", evs_a[-6:], "\nevents of b:", evs_b[-4:])
    assert resumed and rolled and resumed[0] < rolled[0][0], "the connector was repaired while b was still creating"
    assert not _live_jobs(ctx, b)
    topics = KafkaAdmin(ctx.settings.kafka_bootstrap).topics()
    assert names.flat_topic(b) not in topics and names.change_topic(SOURCE, "public", "b") not in topics
    wait_for("b out of the connector", lambda: "public\\.b" not in
             (ctx.connect.get_config(cname) or {}).get("table.include.list", "x"), 30)
    # nothing half-made stands in the way of adding it again
    service.add_mirror(ctx, "public", "b", source=SOURCE, progress=print)
    wait_in_sync(ctx, b, timeout=180)

    # 2. An add killed after everything was made, while waiting for Debezium: resumed.
    killed = _cdc_killed_at(ctx, "created", "mirror", "add", "public.c", "--source", SOURCE)
    t_kill = time.monotonic()
    assert killed.returncode == -9
    assert ctx.registry.get_mirror(c).state == "creating"
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("UPDATE public.c SET n = -n WHERE id % 3 = 0")
        pg.execute("DELETE FROM public.c WHERE id % 7 = 0")
    with _Reconciler(ctx):
        wait_for("the killed add resumed", lambda: ctx.registry.get_mirror(c).state == "running", BOUND + 60, poll=1)
        print(f"c resumed {time.monotonic() - t_kill:.1f}s after the kill")
        print("events of c:", _events(ctx, c)[-4:])
        assert any(act == "recovered" for _, act, _ in _events(ctx, c))
        wait_in_sync(ctx, c, timeout=180)

        # 3. A remove killed after it cancelled the job: finished, with --drop-data.
        killed = _cdc_killed_at(ctx, "remove_job_cancelled", "mirror", "remove", b, "--drop-data")
        t_kill = time.monotonic()
        assert killed.returncode == -9 and ctx.registry.get_mirror(b).state == "removing"
        wait_for("the killed remove finished", lambda: ctx.registry.get_mirror(b) is None, BOUND + 90, poll=1)
        print(f"remove of b finished {time.monotonic() - t_kill:.1f}s after the kill")
        wait_for("b's topics dropped", lambda: names.flat_topic(b) not in
                 KafkaAdmin(ctx.settings.kafka_bootstrap).topics(), 30)

        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute("UPDATE public.a SET v = 'after the faults' WHERE id % 4 = 0")
            pg.execute("DELETE FROM public.a WHERE id % 9 = 0")
        for m in (a, c):
            wait_in_sync(ctx, m, timeout=120)
    for m in (a, c):
        report = verify_mirror(ctx, m, settle_timeout=60)
        print(format_report(report))
        assert report.clean, format_report(report)
    st = ctx.connect.status(cname)
    assert st is not None and st.running, st


def test_failed_add_undoes_its_steps_in_process(sctx: service.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same journal serves an add that fails inside its process: after the connector got
    the table, the add fails; every registered undo runs and the table leaves the connector."""
    from cdc.core.errors import CdcError
    from cdc.mirrors import lifecycle
    ctx = sctx
    dsn = ctx.settings.local_dsn(DB)
    cname = names.connector_name(SOURCE)
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("CREATE TABLE public.d (id int PRIMARY KEY, v text)")
        pg.execute("INSERT INTO public.d SELECT g, 'v' || g FROM generate_series(1, 50) g")
    if ctx.registry.get_source(SOURCE) is None:          # run on its own: a running source first
        service.add_source(ctx, SOURCE, dsn)
    if not ctx.registry.list_mirrors(source=SOURCE):
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute("CREATE TABLE IF NOT EXISTS public.a (id int PRIMARY KEY, v text, n int)")
        service.add_mirror(ctx, "public", "a", source=SOURCE, progress=print)
    d = names.mirror_name("public", "d", SOURCE)

    def fail(*_a: object, **_k: object) -> None:
        raise CdcError("injected: the task did not restart")
    monkeypatch.setattr(lifecycle, "_wait_task_restarted", fail)
    with pytest.raises(CdcError, match="injected"):
        service.add_mirror(ctx, "public", "d", source=SOURCE, progress=print)
    assert ctx.registry.get_mirror(d) is None
    assert not _live_jobs(ctx, d)
    topics = KafkaAdmin(ctx.settings.kafka_bootstrap).topics()
    assert names.flat_topic(d) not in topics and names.change_topic(SOURCE, "public", "d") not in topics
    assert "public\\.d" not in (ctx.connect.get_config(cname) or {}).get("table.include.list", "")
    wait_for("connector RUNNING", lambda: (st := ctx.connect.status(cname)) is not None and st.running, 120)
