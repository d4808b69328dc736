"""Fault injection against the REAL local stack: kill -9 each process of the path (and the
control daemon, and a fast Postgres restart) while ~500 changes/s flow, bring it back the way
an operator would (`manager.up`), and require the mirror to be exact afterwards.

Per fault we measure (matrix printed by test_zz_matrix, written to bench/results/faults.json):
  * lost / extra / stale: verify_mirror after catch-up (missing, extra, differing keys);
  * duplicates: change-topic events re-emitted by Connect (same key + source.lsn + op at a new
    offset) and flat-topic records re-written by Flink (same __seq twice) -- informational,
    the upsert on (key, __seq) absorbs both;
  * recovery: seconds from the fault until freshness is back under 5 s and stays there,
    measured with LoadGen.probe() (a probe row committed every second, its arrival in the flat
    topic timed with a consumer; same host clock on both ends);
  * restart: seconds from the fault until the restarted process is healthy again.

What is ours (the stack is shared by the whole test session): database h_faults, source
h_faults (connector cdc-h_faults, slot/publication cdc_h_faults), a table and mirror with a
per-run name, a private registry file, and an in-process Reconciler for the module (it repairs
failed connector tasks and lost Flink jobs as `cdc serve` would). Stack processes are killed
only through the pids `manager.status(settings)` reports for the default settings.

Pinot is not part of this stack here (its server jars are not obtainable on this machine), so
the "Pinot server JVM" fault is recorded as not applicable instead of being faked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from cdc.core import names
from cdc.mirrors import reconcile
from cdc.mirrors import service
from cdc.clients.kafka import KafkaAdmin
from cdc.core.settings import Settings
from cdc.core.errors import CdcError, RemoteError
from bench.loadgen import PROBE_KEY, LoadGen, RunStats
from cdc.stack import manager
from cdc.mirrors.verify import VerifyReport, verify_mirror
from syncing import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DB = SOURCE = "h_faults"
ROWS = 20_000
RATE = 500.0                  # changes per second
BATCH = 5                     # changes per transaction (100 tx/s: what this 2-core box sustains)
FRESH_S = 5.0                 # "fresh" = a probe is visible in the flat topic within 5 s of commit
SUSTAIN = 5                   # fresh probes in a row (after the stack is healthy) = recovered
PRE_S, POST_S = 5.0, 3.0      # load before the fault, and after recovery
RECOVER_TIMEOUT = 240.0
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "faults.json"
PINOT_ROW = {"fault": "pinot-server", "component": "Pinot server JVM",
             "result": "not applicable here: Pinot cannot run on this machine"}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_TRANSIENT = (RemoteError, CdcError, psycopg.Error, requests.RequestException)


def _wait(what: str, fn: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    return wait_for(what, fn, timeout, poll, tolerate=_TRANSIENT)


def _micros(ts: dt.datetime) -> int:
    return (ts - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


# -- the module's mirror -----------------------------------------------------------------------

@dataclass
class Fx:
    settings: Settings            # our registry
    stack_settings: Settings      # the default settings: manager.status / up
    ctx: service.Context
    dsn: str
    table: str
    name: str
    reconciler: reconcile.Reconciler
    seed: int = 100
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cname(self) -> str:
        return names.connector_name(SOURCE)

    @property
    def change_topic(self) -> str:
        return names.change_topic(SOURCE, "public", self.table)

    @property
    def flat_topic(self) -> str:
        return names.flat_topic(self.name)

    def job_state(self) -> str | None:
        rec = self.ctx.registry.get_mirror(self.name)
        return self.ctx.jobmanager.job_state(rec.flink_job_id) if rec and rec.flink_job_id else None

    def healthy(self) -> bool:
        """Connector and its task RUNNING, the mirror's current job RUNNING with every task
        RUNNING (a job is RUNNING while its tasks still wait for a TaskManager slot)."""
        try:
            st = self.ctx.connect.status(self.cname)
            if st is None or not st.running:
                return False
            rec = self.ctx.registry.get_mirror(self.name)
            job = self.ctx.jobmanager.job(rec.flink_job_id) if rec and rec.flink_job_id else None
            return bool(job and job.get("state") == "RUNNING" and job.get("vertices")
                        and all(v.get("status") == "RUNNING" for v in job["vertices"]))
        except (RemoteError, CdcError):
            return False

    def loadgen(self) -> LoadGen:
        """A fresh generator on the table as it is now (its op model starts from the keys in
        the table), with a new seed so successive runs do not repeat themselves."""
        self.seed += 1
        return LoadGen(self.dsn, "public", self.table, seed=self.seed)


def _pid(settings: Settings, name: str) -> int | None:
    procs = {p["name"]: p for p in manager.status(settings)["processes"]}
    return procs[name]["pid"]


def _drop_leftovers(ctx: service.Context, dsn: str) -> None:
    """A run that crashed may have left our connector, slot or jobs behind (the registry is
    per run): remove them, so this run starts with an initial snapshot on a clean slot."""
    cname = names.connector_name(SOURCE)
    if ctx.connect.status(cname) is not None:
        _say(f"leftover connector {cname}: deleting it")
        service.delete_connector(ctx, cname)
    for job in ctx.jobmanager.jobs():
        if job.name.startswith("cdc-mirror-faults_") and job.state in ("RUNNING", "CREATED", "RESTARTING",
                                                                        "INITIALIZING"):
            ctx.jobmanager.cancel(job.id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while (row := conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                   (f"cdc_{SOURCE}",)).fetchone()) is not None:
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (f"cdc_{SOURCE}",))
                break
            assert time.monotonic() < deadline, "leftover slot cdc_h_faults stays active"
            time.sleep(1)
        conn.execute(f"DROP PUBLICATION IF EXISTS cdc_{SOURCE}")


def _topic_records(settings: Settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"cdc-faults-{uuid.uuid4().hex}",
                  "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions)
    finally:
        c.close()


@pytest.fixture(scope="module")
def fx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fx]:
    s = settings.model_copy(update={"registry_path": tmp_path_factory.mktemp("faults") / "registry.db"})
    admin = f"postgresql://postgres@{s.host}:{s.ports.postgres}/postgres"
    dsn = f"postgresql://postgres@{s.host}:{s.ports.postgres}/{DB}"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DB}")
    ctx = service.context(s)
    _drop_leftovers(ctx, dsn)
    table = f"faults_{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    with LoadGen(dsn, "public", table, seed=7) as lg:
        lg.create_table(ROWS)
    service.add_source(ctx, SOURCE, dsn)
    rec = reconcile.Reconciler(lambda: service.context(s), s, interval_s=2.0, holder=f"test-faults-{uuid.uuid4().hex[:6]}")
    f = Fx(s, settings, ctx, dsn, table, table, rec)
    service.add_mirror(ctx, "public", table, source=SOURCE, name=f.name, progress=_say)
    try:
        _wait("mirror job RUNNING", lambda: f.job_state() == "RUNNING", 120)
        _wait(f"{ROWS} snapshot rows in the flat topic", lambda: _topic_records(s, f.flat_topic) >= ROWS, 300, poll=2)
        report = verify_mirror(ctx, f.name, settle_timeout=60)
        assert report.clean, report
        _say(f"FIGURES: {ROWS}-row mirror created, snapshotted and verified in {time.monotonic() - t0:.1f}s")
        rec.start()
        yield f
    finally:
        rec.stop(60)
        _write_results(f.results)
        _teardown(f)


def _teardown(f: Fx) -> None:
    ctx = f.ctx
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if ctx.registry.get_mirror(f.name) is not None:
                    service.remove_mirror(ctx, f.name, drop_data=True, progress=_say)
                break
            except (RemoteError, CdcError) as exc:
                if time.monotonic() > deadline:
                    raise
                _say(f"remove_mirror: {exc}; retrying")
                time.sleep(5)
        service.remove_source(ctx, SOURCE)
    finally:
        with psycopg.connect(f.dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS public.{f.table}")
        kafka = KafkaAdmin(f.settings.kafka_bootstrap)
        for topic in kafka.topics():     # the source's own topics that remove_mirror leaves behind
            if topic.startswith(f"cdc.{SOURCE}._cdc.") or topic == f"__debezium-heartbeat.cdc.{SOURCE}":
                kafka.delete_topic(topic)
        ctx.close()


def _write_results(rows: list[dict[str, Any]]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "setup": {"rows": ROWS, "target_rate_per_s": RATE, "batch_per_tx": BATCH, "fresh_threshold_s": FRESH_S,
                     "target": "flat topic upsert state (Pinot's exact input); Pinot cannot run on this machine"},
           "faults": rows + [PINOT_ROW]}
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")


# -- load, probes ---------------------------------------------------------------------------------

class Load:
    """LoadGen.run in a thread, in 2 s slices so an outage (Postgres restart) costs at most
    one slice of statistics; after an error the op model is rebuilt from the table (a commit
    that failed ambiguously would otherwise desynchronise it)."""

    def __init__(self, f: Fx) -> None:
        self.f = f
        self.done = threading.Event()
        self.slice_stop = threading.Event()
        self.stats: list[RunStats] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="faults-load", daemon=True)

    def start(self) -> Load:
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        lg = self.f.loadgen()
        while not self.done.is_set():
            try:
                self.stats.append(lg.run(RATE, 2.0, batch_per_tx=BATCH, stop=self.slice_stop))
            except Exception as exc:  # psycopg errors, or CdcError from catalog.connect while Postgres is down
                self.errors.append(f"{time.monotonic() - self.t0:.1f}s {type(exc).__name__}: {str(exc)[:120]}")
                lg.close()
                time.sleep(0.5)
                try:
                    lg = self.f.loadgen()
                    lg.stream()
                except Exception:  # still down: the next run() fails fast and we come back here
                    pass
        lg.close()

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.slice_stop.set()
        self.thread.join(30)
        elapsed = time.monotonic() - self.t0
        changes = sum(s.changes for s in self.stats)
        return {"changes": changes, "load_s": round(elapsed, 1), "achieved_rate": round(changes / elapsed, 1),
                "max_lag_behind_schedule_s": round(max((s.max_lag_behind_schedule_s for s in self.stats), default=0), 2),
                "load_errors": len(self.errors)}


@dataclass
class ProbeRec:
    committed: float              # epoch seconds (Postgres clock_timestamp(), same host)
    micros: int


class Probes:
    """Commit a probe every second (own thread) and time its arrival in the flat topic
    (a consumer thread that starts at the topic's current end)."""

    def __init__(self, f: Fx) -> None:
        self.f = f
        self.lg = LoadGen(f.dsn, "public", f.table)
        self.sent: list[ProbeRec] = []
        self.seen: dict[int, float] = {}
        self.errors = 0
        self._stop = threading.Event()
        self.c = Consumer({"bootstrap.servers": f.settings.kafka_bootstrap, "group.id": f"cdc-faults-{uuid.uuid4().hex}",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
        topic = f.flat_topic
        md = self.c.list_topics(topic, timeout=10).topics[topic]
        self.c.assign([TopicPartition(topic, p, self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                       for p in md.partitions])
        self.threads = [threading.Thread(target=self._consume, daemon=True),
                        threading.Thread(target=self._probe, daemon=True)]

    def start(self) -> Probes:
        for t in self.threads:
            t.start()
        return self

    def _consume(self) -> None:
        while not self._stop.is_set():
            for msg in self.c.consume(500, 0.2):
                if msg.error() is None and msg.value():
                    rec = json.loads(msg.value())
                    if rec.get("id") == PROBE_KEY and rec.get("updated_at") is not None:
                        self.seen.setdefault(int(rec["updated_at"]), time.time())

    def _probe(self) -> None:
        while not self._stop.is_set():
            try:
                _, ts = self.lg.probe()
                self.sent.append(ProbeRec(ts.timestamp(), _micros(ts)))
            except Exception:  # Postgres down (UnreachableError from catalog.connect) or restarting
                self.errors += 1
            self._stop.wait(1.0)

    def one(self, timeout: float = 120) -> float:
        """Commit one probe now (load stopped) and wait until it is visible; its latency."""
        _, ts = self.lg.probe()
        _wait("the final probe in the flat topic", lambda: _micros(ts) in self.seen, timeout, poll=0.1)
        return self.seen[_micros(ts)] - ts.timestamp()

    def latencies(self, since: float) -> list[tuple[float, float | None]]:
        """(commit time, latency or None if not seen yet) of probes committed after `since`."""
        return [(p.committed, (self.seen[p.micros] - p.committed) if p.micros in self.seen else None)
                for p in list(self.sent) if p.committed >= since]

    def recovered_at(self, t_fault: float, t_healthy: float) -> float | None:
        """Arrival time of the first probe after the fault from which on every probe that can
        be judged (committed > FRESH_S ago or already seen) was fresh, provided that stretch
        includes SUSTAIN fresh probes committed after the stack was healthy again."""
        now = time.time()
        judged = [(c, lat) for c, lat in self.latencies(t_fault) if lat is not None or c < now - FRESH_S]
        start = None
        for i, (_, lat) in enumerate(judged):
            if lat is None or lat >= FRESH_S:
                start = None
            elif start is None:
                start = i
        if start is None or sum(1 for c, _ in judged[start:] if c >= t_healthy) < SUSTAIN:
            return None
        c, lat = judged[start]
        return c + float(lat or 0)

    def close(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(10)
        self.c.close()
        self.lg.close()


# -- duplicates -------------------------------------------------------------------------------------

def _ends(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"cdc-faults-{uuid.uuid4().hex}",
                  "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()


def _read(settings: Settings, topic: str, start: dict[int, int], timeout: float = 120) -> Iterator[Any]:
    """Every record of `topic` from `start` offsets to the end offsets seen now."""
    ends = _ends(settings, topic)
    todo = {p for p, e in ends.items() if e > start.get(p, 0)}
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"cdc-faults-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    try:
        c.assign([TopicPartition(topic, p, start.get(p, 0)) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in c.consume(2000, 1.0):
                p = msg.partition()
                if msg.error() is not None or p not in todo or msg.offset() >= ends[p]:
                    continue
                if msg.offset() + 1 >= ends[p]:
                    todo.discard(p)
                yield msg
        assert not todo, f"could not read {topic} to its end"
    finally:
        c.close()


def _duplicates(f: Fx, change_start: int, flat_start: dict[int, int]) -> dict[str, int]:
    """Count, for the changes made since change_start (change-topic offset):
    connect_dups: change events emitted more than once (same key, source.lsn and op);
    flink_dups: flat records written more than once (same __seq);
    duplicated: flat records beyond one per distinct change (both kinds together);
    flat_missing: change-topic offsets with no flat record (must be 0)."""
    s = f.settings
    first: dict[tuple[bytes, Any, Any], int] = {}
    offsets: list[int] = []
    for msg in _read(s, f.change_topic, {0: change_start}):
        if not msg.value():
            continue
        v = json.loads(msg.value())
        first.setdefault((msg.key() or b"", (v.get("source") or {}).get("lsn"), v.get("op")), msg.offset())
        offsets.append(msg.offset())
    seqs: dict[int, int] = {}
    for msg in _read(s, f.flat_topic, flat_start):
        if msg.value():
            seq = int(json.loads(msg.value())["__seq"])
            if seq >= change_start:
                seqs[seq] = seqs.get(seq, 0) + 1
    flat_records = sum(seqs.values())
    return {"change_events": len(offsets), "distinct_changes": len(first),
            "connect_dups": len(offsets) - len(first), "flat_records": flat_records,
            "flink_dups": flat_records - len(seqs), "duplicated": flat_records - len(first),
            "flat_missing": sum(1 for o in offsets if o not in seqs)}


# -- one fault ---------------------------------------------------------------------------------------

@dataclass
class Fault:
    name: str
    component: str
    inject: Callable[[Fx], None]
    restart: Callable[[Fx], None]
    notes: list[str] = field(default_factory=list)


def _kill9(process: str) -> Callable[[Fx], None]:
    def inject(f: Fx) -> None:
        pid = _pid(f.stack_settings, process)
        assert pid, f"{process} is not running"
        os.kill(pid, signal.SIGKILL)
        _say(f"kill -9 {process} (pid {pid})")
        # The signal is delivered at once, but the JVM takes a moment to exit; an `up` before
        # that would find the process still alive and leave it alone.
        _wait(f"{process} gone", lambda: _pid(f.stack_settings, process) is None, 30, poll=0.1)
    return inject


def _stack_up(f: Fx) -> None:
    manager.up(f.stack_settings, progress=_say)


def _pg_fast_shutdown(f: Fx) -> None:
    pid = _pid(f.stack_settings, "postgres")
    assert pid
    os.kill(pid, signal.SIGINT)          # "fast" shutdown: what pg_ctl -m fast sends
    _say(f"SIGINT postgres (pid {pid}): fast shutdown")


def _pg_restart(f: Fx) -> None:
    _wait("postgres stopped", lambda: _pid(f.stack_settings, "postgres") is None, 60, poll=0.2)
    manager.up(f.stack_settings, progress=_say)


def _events_since(f: Fx, since_iso: str) -> list[str]:
    return [f"{e.action}: {(e.reason or '')[:200]}" for e in reversed(f.ctx.registry.list_events(f.name, limit=50))
            if e.ts >= since_iso and e.action != "created"]


def run_fault(f: Fx, fault: Fault) -> dict[str, Any]:
    _wait("stack and mirror healthy before the fault",
          lambda: manager.status(f.stack_settings)["healthy"] and f.healthy(), 300, poll=2)
    since = dt.datetime.now(dt.timezone.utc).isoformat()
    flat_start = _ends(f.settings, f.flat_topic)
    change_start = _ends(f.settings, f.change_topic)[0]
    probes = Probes(f).start()
    load = Load(f).start()
    row: dict[str, Any] = {"fault": fault.name, "component": fault.component}
    try:
        time.sleep(PRE_S)
        t_fault = time.time()
        fault.inject(f)
        fault.restart(f)
        row["restart_s"] = round(time.time() - t_fault, 1)
        _wait("stack and mirror healthy after the fault", lambda: f.healthy(), RECOVER_TIMEOUT, poll=0.5)
        t_healthy = time.time()
        row["healthy_s"] = round(t_healthy - t_fault, 1)
        back = _wait("freshness back under 5 s", lambda: probes.recovered_at(t_fault, t_healthy), RECOVER_TIMEOUT)
        row["fresh_again_s"] = round(back - t_fault, 1)
        time.sleep(POST_S)
    finally:
        row.update(load.stop())
    try:
        lats = [lat for _, lat in probes.latencies(t_fault)]
        row["max_probe_latency_s"] = round(max((x for x in lats if x is not None), default=0.0), 1)
        row["probes"] = len(lats)
        row["probe_errors"] = probes.errors
        row["final_probe_latency_s"] = round(probes.one(), 2)
    finally:
        probes.close()
    report: VerifyReport = verify_mirror(f.ctx, f.name, settle_timeout=60)
    row.update(_duplicates(f, change_start, flat_start))
    row.update({"lost": report.missing, "extra": report.extra, "stale": report.differing,
                "verify_clean": report.clean, "source_rows": report.source_rows,
                "repairs": _events_since(f, since), "load_error_samples": load.errors[:3]})
    row["notes"] = fault.notes
    _say(f"FAULT {fault.name}: {json.dumps(row, default=str)}")
    f.results.append(row)
    _write_results(f.results)
    assert report.missing == 0 and report.extra == 0 and report.differing == 0, report
    assert row["flat_missing"] == 0, row
    return row


# -- the faults --------------------------------------------------------------------------------------

def test_kill_connect_worker(fx: Fx) -> None:
    run_fault(fx, Fault("connect", "Kafka Connect worker (Debezium)", _kill9("connect"), _stack_up))


def test_kill_kafka_broker(fx: Fx) -> None:
    run_fault(fx, Fault("kafka", "Kafka broker (KRaft, single node)", _kill9("kafka"), _stack_up))


def test_kill_flink_taskmanager(fx: Fx) -> None:
    run_fault(fx, Fault("flink-taskmanager", "Flink TaskManager", _kill9("flink-taskmanager"), _stack_up))


def test_kill_flink_jobmanager(fx: Fx) -> None:
    """A session cluster without HA forgets its jobs when the JobManager dies: the
    reconciler must resubmit the job from the newest retained checkpoint."""
    row = run_fault(fx, Fault("flink-jobmanager", "Flink JobManager (session, no HA)",
                              _kill9("flink-jobmanager"), _stack_up))
    restored = [r for r in row["repairs"] if r.startswith("restored:")]
    assert restored, row["repairs"]
    assert "restored from checkpoint" in restored[-1] and "FROM SCRATCH" not in restored[-1], restored


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


class Daemon:
    """`cdc serve` on our registry and a free port (reconciler on), as a subprocess."""

    def __init__(self, f: Fx, log_dir: Path) -> None:
        self.f, self.log_dir = f, log_dir
        self.port = _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CDC_REGISTRY_PATH": str(self.f.settings.registry_file)}
        log = open(self.log_dir / f"serve-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "cdc.cli", "serve", "--port", str(self.port)], env=env,
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.procs.append(p)
        _wait("cdc serve /healthz", lambda: p.poll() is None and
              requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).ok, 60, poll=0.2)
        return p

    def holder_pid(self) -> int | None:
        held = self.f.ctx.registry.lease_holder()
        return int(held[0].split(":")[1]) if held and held[0].count(":") == 2 else None

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)


def test_kill_control_daemon(fx: Fx, tmp_path: Path) -> None:
    """kill -9 `cdc serve` (API + reconciler) and start a new one. The in-process reconciler
    steps aside for this test so the daemon holds the reconciler lease; the new daemon can only
    act once the dead one's lease expires (TTL)."""
    fx.reconciler.stop(60)
    d = Daemon(fx, tmp_path)
    notes: list[str] = []
    try:
        first = d.start()
        _wait("the first daemon holds the reconciler lease", lambda: d.holder_pid() == first.pid, 60)
        state: dict[str, Any] = {}

        def kill(f: Fx) -> None:
            first.kill()                        # SIGKILL
            first.wait(10)
            state["t"] = time.monotonic()
            _say(f"kill -9 cdc serve (pid {first.pid})")

        def restart(f: Fx) -> None:
            state["second"] = d.start()
            notes.append(f"new daemon answered /healthz {time.monotonic() - state['t']:.1f}s after the kill")

        run_fault(fx, Fault("control-daemon", "cdc serve (API + reconciler)", kill, restart, notes))
        second = state["second"]
        _wait("the new daemon takes the reconciler lease", lambda: d.holder_pid() == second.pid, 120)
        took = time.monotonic() - state["t"]
        notes.append(f"new daemon took the reconciler lease {took:.1f}s after the kill (dead holder's lease TTL)")
        fx.results[-1]["lease_takeover_s"] = round(took, 1)
        _write_results(fx.results)
    finally:
        d.stop()
        fx.reconciler.start()


def test_restart_postgres_fast(fx: Fx) -> None:
    run_fault(fx, Fault("postgres", "PostgreSQL (fast shutdown + start)", _pg_fast_shutdown, _pg_restart))


def test_zz_matrix(fx: Fx) -> None:
    """Print the matrix of the faults above (also written to bench/results/faults.json)."""
    cols = ["fault", "restart_s", "healthy_s", "fresh_again_s", "max_probe_latency_s", "achieved_rate", "changes",
            "connect_dups", "flink_dups", "duplicated", "lost", "extra", "stale"]
    lines = [" | ".join(cols)]
    for r in fx.results:
        lines.append(" | ".join(str(r.get(c, "")) for c in cols))
    lines.append(f"{PINOT_ROW['fault']} | {PINOT_ROW['result']}")
    _say("FAULT MATRIX\n" + "\n".join(lines))
    _write_results(fx.results)
    assert fx.results, "no fault ran"
