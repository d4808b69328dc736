"""The reconciler against the REAL local stack (cdc stack up).

Stack-sharing rules: everything here is our own -- database h_rec, source h_rec (connector
cdc-h_rec), a table and mirror with a per-run name (so topics, consumer group and Flink
pipeline name are unique), and a private registry file. No stack process is started,
stopped or killed, except by the destructive test, which is skipped unless
(runs last, with the other slow tests that kill stack processes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from cdc.core import names
from cdc.postgres import catalog
from cdc.mirrors import state as mirror_state
from cdc.mirrors import reconcile
from cdc.mirrors import service
from cdc.core.settings import Settings
from cdc.core.errors import RemoteError
from syncing import wait_for

pytestmark = pytest.mark.integration

ADMIN_DSN = Settings().local_dsn("postgres")
DB = "h_rec"
DSN = Settings().local_dsn(DB)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _wait(what: str, fn: Any, timeout: float, poll: float = 0.5) -> Any:
    return wait_for(what, fn, timeout, poll)


class Live:
    """The mirror under test and handles to everything around it."""

    def __init__(self, settings: Settings, table: str, name: str) -> None:
        self.settings, self.table, self.name = settings, table, name
        self.ctx = service.context(settings)
        self.pg = psycopg.connect(DSN, autocommit=True)
        self.next_id = 1
        self.holder = f"test-{uuid.uuid4().hex[:6]}"    # one holder: the registry lease is per holder

    def job_id(self) -> str:
        rec = self.ctx.registry.get_mirror(self.name)
        assert rec is not None and rec.flink_job_id
        return rec.flink_job_id

    def job_state(self, job_id: str | None = None) -> str | None:
        return self.ctx.jobmanager.job_state(job_id or self.job_id())

    def insert(self, n: int) -> None:
        with self.pg.transaction():
            for _ in range(n):
                self.pg.execute(f"INSERT INTO public.{self.table} (id, v, n) VALUES (%s, %s, %s)",
                                (self.next_id, f"v{self.next_id}", 0))
                self.next_id += 1

    def churn_once(self) -> None:
        """One random change: update, insert or delete."""
        r = random.random()
        k = random.randint(1, max(1, self.next_id - 1))
        if r < 0.6:
            self.pg.execute(f"UPDATE public.{self.table} SET n = n + 1, v = md5(random()::text) WHERE id = %s", (k,))
        elif r < 0.85:
            self.insert(1)
        else:
            self.pg.execute(f"DELETE FROM public.{self.table} WHERE id = %s", (k,))

    def converged(self) -> bool:
        info = catalog.introspect(self.pg, "public", self.table)
        expected = mirror_state.postgres_rows(self.pg, info)
        try:
            actual = service.read_mirror(self.ctx, self.name)[0]
        except Exception as exc:  # the shared Kafka may be restarting (leader moves): just poll again
            _say(f"flat topic not readable yet: {exc}")
            return False
        return expected == actual

    def reconciler(self) -> reconcile.Reconciler:
        return reconcile.Reconciler(lambda: service.context(self.settings), self.settings, interval_s=2.0,
                                    holder=self.holder)


@pytest.fixture(scope="module")
def live(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    settings = Settings(registry_path=tmp_path_factory.mktemp("rec") / "r.db")
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone() is None:
            admin.execute(f"CREATE DATABASE {DB}")
    table = f"items_{uuid.uuid4().hex[:6]}"
    lv = Live(settings, table, f"rec_{table}")
    lv.pg.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, v text, n int NOT NULL)")
    lv.insert(200)
    service.add_source(lv.ctx, DB, DSN)
    service.add_mirror(lv.ctx, "public", table, source=DB, name=lv.name, progress=_say)
    try:
        _wait("the first job RUNNING", lambda: lv.job_state() == "RUNNING", 60)
        yield lv
    finally:
        try:
            _remove_with_retry(lv)
        finally:
            lv.pg.execute(f"DROP TABLE IF EXISTS public.{table}")
            lv.pg.execute("DROP TABLE IF EXISTS _cdc.freshness")
            from cdc.clients.kafka import KafkaAdmin
            kafka = KafkaAdmin(settings.kafka_bootstrap)
            for topic in kafka.topics():    # the source's own topics that remove_mirror leaves behind
                if topic.startswith(f"cdc.{DB}._cdc.") or topic == f"__debezium-heartbeat.cdc.{DB}":
                    kafka.delete_topic(topic)
            lv.pg.close()
            lv.ctx.close()


def _remove_with_retry(lv: Live, timeout: float = 180) -> None:
    """Remove our mirror even if a shared component is restarting right now."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            service.remove_mirror(lv.ctx, lv.name, drop_data=True, progress=_say)
            return
        except RemoteError as exc:
            if time.monotonic() > deadline:
                raise
            _say(f"remove_mirror: {exc.message}; retrying")
            time.sleep(5)


def test_paused_connector_is_resumed(live: Live) -> None:
    cname = names.connector_name(DB)
    requests.put(f"{live.settings.connect_url}/connectors/{cname}/pause", timeout=10,
                 auth=live.settings.connect_auth()).raise_for_status()
    _wait("connector PAUSED", lambda: (st := live.ctx.connect.status(cname)) is not None
          and st.state == "PAUSED" and all(t.state == "PAUSED" for t in st.tasks), 30)
    live.insert(5)                                  # must arrive once resumed
    actions = live.reconciler().run_once()
    assert [(a.kind, a.mirror) for a in actions] == [("resume_connector", live.name)], actions
    ev = live.ctx.registry.list_events(live.name)[0]
    assert ev.action == "reconcile:resume_connector" and "PAUSED" in ev.reason and "-> done" in ev.reason, ev
    _wait("connector RUNNING", lambda: (st := live.ctx.connect.status(cname)) is not None and st.running, 60)
    assert live.reconciler().run_once() == []       # healthy again: nothing to do
    _wait("flat topic == postgres", live.converged, 90, poll=2)


def test_canceled_job_is_restored_from_checkpoint(live: Live) -> None:
    old = live.job_id()
    _wait("a completed checkpoint", lambda: live.ctx.jobmanager.checkpoints(old), 60)
    stop = threading.Event()
    changes = [0]

    def churn() -> None:
        while not stop.is_set():
            live.churn_once()
            changes[0] += 1
            time.sleep(0.02)

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    try:
        time.sleep(3)
        t_cancel = time.monotonic()
        requests.patch(f"{live.settings.flink_url}/jobs/{old}", params={"mode": "cancel"}, timeout=10).raise_for_status()
        _wait("job CANCELED", lambda: live.job_state(old) == "CANCELED", 30, poll=0.2)
        t_canceled = time.monotonic()
        actions = live.reconciler().run_once()
        assert [(a.kind, a.mirror) for a in actions] == [("restore_job", live.name)], actions
        new = live.job_id()
        assert new != old
        _wait("restored job RUNNING", lambda: live.job_state(new) == "RUNNING", 60, poll=0.2)
        t_running = time.monotonic()
        time.sleep(3)                               # changes keep flowing into the restored job
    finally:
        stop.set()
        writer.join(10)
    restored = [e for e in live.ctx.registry.list_events(live.name) if e.action == "restored"]
    assert restored, live.ctx.registry.list_events(live.name)
    reason = restored[0].reason or ""
    assert "restored from checkpoint file:" in reason and f"/{old}/chk-" in reason and "FROM SCRATCH" not in reason
    assert any(e.action == "reconcile:restore_job" for e in live.ctx.registry.list_events(live.name))
    path = reason.split("restored from checkpoint ", 1)[1].split(";", 1)[0]
    # Flink itself says where the state came from ("file:/x" and "file:///x" name the same file)
    assert _file_path(_restored_from(live, new)) == _file_path(path)
    _say(f"FIGURES: cancel->CANCELED {t_canceled - t_cancel:.1f}s, cancel->RUNNING {t_running - t_cancel:.1f}s "
         f"(reconcile pass + submit {t_running - t_canceled:.1f}s), {changes[0]} changes during the test; {reason}")
    _wait("flat topic == postgres", live.converged, 120, poll=2)
    assert live.reconciler().run_once() == []


def _file_path(uri: str) -> str:
    return "/" + uri.split(":", 1)[1].lstrip("/") if uri.startswith("file:") else uri


def _restored_from(live: Live, job_id: str) -> str:
    """external_path of the checkpoint/savepoint Flink restored job_id from (JobManager REST)."""
    def get() -> str | None:
        body = requests.get(f"{live.settings.flink_url}/jobs/{job_id}/checkpoints", timeout=10).json()
        return ((body.get("latest") or {}).get("restored") or {}).get("external_path")
    return str(_wait(f"restore info of {job_id}", get, 30))


def test_pause_resume_resync(live: Live) -> None:
    from cdc.mirrors import ops
    old = live.job_id()
    savepoint = ops.pause_mirror(live.ctx, live.name)
    assert savepoint.startswith("file:") and live.ctx.registry.get_mirror(live.name).state == "paused"
    assert live.job_state(old) == "FINISHED"
    ev = live.ctx.registry.list_events(live.name)[0]
    assert ev.action == "paused" and savepoint in (ev.reason or "")
    assert ops.pause_mirror(live.ctx, live.name) == savepoint                  # idempotent
    live.insert(20)                                                             # waits in the change topic
    assert live.reconciler().run_once() == []                                   # paused: hands off
    new = ops.resume_mirror(live.ctx, live.name)
    assert new != old and live.ctx.registry.get_mirror(live.name).state == "running"
    _wait("resumed job RUNNING", lambda: live.job_state(new) == "RUNNING", 60)
    assert _file_path(_restored_from(live, new)) == _file_path(savepoint)
    ev = live.ctx.registry.list_events(live.name)[0]
    assert ev.action == "resumed" and f"from savepoint {savepoint}" in (ev.reason or "")
    _wait("flat topic == postgres before the resync", live.converged, 120, poll=2)
    # Make the mirror wrong in a way only a resync repairs: a corrupt version of one row,
    # with a __seq above every change so far (but below any event the resync will emit).
    _corrupt_one_row(live)
    assert not live.converged(), "the corrupt record should make the mirror differ from Postgres"
    done = ops.resync_and_wait(live.ctx, live.name, progress=_say, timeout=300)
    events = [e.action for e in live.ctx.registry.list_events(live.name, limit=20)]
    assert "resync" in events and "rebuild_switched" in events and "switched" in done, (events, done)
    assert live.ctx.registry.get_mirror(live.name).generation == 1      # a fresh generation answers
    _wait("flat topic == postgres after the resync", live.converged, 120, poll=2)


def _corrupt_one_row(live: Live) -> None:
    from confluent_kafka import Producer

    from cdc.clients.kafka import KafkaAdmin
    change = names.change_topic(DB, "public", live.table)
    seq = KafkaAdmin(live.settings.kafka_bootstrap).end_offsets(change)[0]
    key = live.pg.execute(f"SELECT id, n FROM public.{live.table} ORDER BY id LIMIT 1").fetchone()
    assert key is not None
    value = {"id": key[0], "v": "CORRUPT", "n": key[1] + 1000, "__deleted": False, "__seq": seq,
             "__source_ts_ms": 0, "__op": "u"}
    # the key bytes exactly as Flink writes them, and the Java client's partitioner (murmur2;
    # librdkafka's default is CRC32), so the record lands in that key's partition
    p = Producer({"bootstrap.servers": live.settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    p.produce(names.flat_topic(live.name), key=json.dumps({"id": key[0]}, separators=(",", ":")),
              value=json.dumps(value))
    assert p.flush(10) == 0


def test_freshness_probe(live: Live) -> None:
    """measure_freshness: the connector captures _cdc.freshness (render puts it in the include list)."""
    from cdc.observe import metrics
    cname = names.connector_name(DB)
    live.pg.execute("CREATE TABLE IF NOT EXISTS _cdc.freshness (id int PRIMARY KEY, committed_at timestamptz NOT NULL)")
    cfg = live.ctx.connect.get_config(cname)
    assert cfg is not None and any(p.endswith(r"_cdc\.freshness") for p in cfg["table.include.list"].split(",")), cfg
    _wait("connector RUNNING with _cdc.freshness", lambda: any(
        "freshness" in str(t.get("config", {}).get("table.include.list", ""))
        for t in live.ctx.connect.http.get(f"/connectors/{cname}/tasks") or [])
        and (st := live.ctx.connect.status(cname)) is not None and st.running, 90)
    samples = []
    for _ in range(5):
        try:
            samples.append(metrics.measure_freshness(live.ctx, DB, timeout=30))
        except Exception as exc:   # first probe may race the publication change; keep trying
            _say(f"freshness probe: {exc}")
    assert samples and all(s.via == "change_topic" and 0 < s.seconds < 30 for s in samples), samples
    text = metrics.render_metrics(live.ctx)
    assert f'cdc_freshness_seconds{{source="{DB}",via="change_topic"}}' in text
    assert f'cdc_slot_wal_retained_bytes{{source="{DB}",slot="cdc_{DB}"}}' in text
    assert f'cdc_flink_job_state{{mirror="{live.name}",source="{DB}",job_id="{live.job_id()}",state="RUNNING"}} 1' \
        in text
    _say("FIGURES: freshness (commit -> change topic) " + ", ".join(f"{s.seconds:.2f}s" for s in samples))
    _say("METRICS:\n" + "\n".join(ln for ln in text.splitlines() if DB in ln and " 0" not in ln[-2:]))


def _stack_pid(name: str) -> int:
    out = subprocess.run([sys.executable, "-m", "cdc.cli", "stack", "status", "--json"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    procs = {p["name"]: p for p in json.loads(out)["processes"]}
    return int(procs[name]["pid"])


@pytest.mark.slow
def test_taskmanager_killed_job_recovers(live: Live) -> None:
    """kill -9 the TaskManager while rows change; after `stack up` restarts it, Flink's
    restart strategy (or, if the job went terminal, the reconciler) brings the mirror back
    from a checkpoint, and the flat topic converges. Never run on a shared stack."""
    from cdc.stack import manager
    old = live.job_id()
    _wait("a completed checkpoint", lambda: live.ctx.jobmanager.checkpoints(old), 60)
    rec = live.reconciler()
    rec.start()
    try:
        for _ in range(50):
            live.churn_once()
        from cdc.stack.process import is_alive
        tm = _stack_pid("flink-taskmanager")
        os.kill(tm, signal.SIGKILL)
        t_kill = time.monotonic()
        for _ in range(50):
            live.churn_once()
        # a SIGKILLed JVM takes a moment to die: `up` run before that sees it alive and leaves it
        _wait("the killed TaskManager gone", lambda: not is_alive(tm), 30, poll=0.2)
        manager.up(live.settings)
        _wait("mirror job RUNNING", lambda: live.job_state() == "RUNNING", 300, poll=1)
        _say(f"FIGURES: TaskManager kill -> job RUNNING {time.monotonic() - t_kill:.1f}s "
             f"(job {old} -> {live.job_id()})")
    finally:
        assert rec.stop(60)
    events = [e.action for e in live.ctx.registry.list_events(live.name)]
    assert "restored" in events or live.job_id() == old, events   # Flink restarted it itself, or we restored
    if "restored" in events:
        reason = next(e.reason for e in live.ctx.registry.list_events(live.name) if e.action == "restored") or ""
        assert "FROM SCRATCH" not in reason, reason
    _wait("flat topic == postgres", live.converged, 180, poll=2)
