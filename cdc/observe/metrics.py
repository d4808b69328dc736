"""Prometheus text exposition (format 0.0.4) of every mirror's health, plus the freshness probe.

Why one scrape asks every system live instead of caching: the numbers are only useful if
they are current, and each system answers in milliseconds. A system that does not answer
yields cdc_up{system="..."} 0 and no series of its own, never a made-up 0 (a missing
series alerts as "absent", a fake 0 would look healthy).

State gauges follow the enum pattern: one series per possible state with value 1 for the
current state and 0 for the others, so `cdc_flink_job_state{state="RUNNING"} == 0` alerts.

Snapshot progress: cdc_mirror_snapshot_state (enum), _rows and _rows_estimate per mirror, from
Debezium's snapshot notifications (cdc/mirrors/snapshot.py; each source's topic read once).
A mirror whose rows the copy load read has cdc_mirror_load_state (enum), _rows,
_rows_estimate, _rows_per_second, _eta_seconds and _waiting_transactions instead
(cdc/mirrors/load_progress.py).

Freshness (commit -> visible). measure_freshness() upserts one row into
_cdc.freshness(id int primary key, committed_at timestamptz) in the source database and
times, with this host's clock (no clock skew between hosts involved), how long until the
change is visible:
  * Pinot enabled and a mirror of _cdc.freshness exists: until the broker returns the new
    value -- the full end-to-end path;
  * otherwise: until the event is in the Debezium change topic
    cdc.<source>._cdc.freshness -- Postgres -> Debezium -> Kafka only. It does NOT cover the
    Flink leg or Pinot ingestion; the `via` label says which was measured.
It only works once the connector captures _cdc.freshness (include list + publication);
until then it raises a CdcError saying so. Samples are kept in memory (last per source)
and exported as cdc_freshness_seconds with their age, so scraping never blocks on a probe.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdc.postgres import catalog, slots
from cdc.core import names
from cdc.mirrors import load_progress
from cdc.mirrors import dead_letters, service
from cdc.core.errors import CdcError, RemoteError
from cdc.core.models import Source

CONNECTOR_STATES = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "RESTARTING", "UNASSIGNED", "MISSING")
TASK_STATES = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "RESTARTING", "UNASSIGNED")
JOB_STATES = ("INITIALIZING", "CREATED", "RUNNING", "FAILING", "FAILED", "CANCELLING", "CANCELED", "FINISHED",
              "RESTARTING", "SUSPENDED", "RECONCILING", "MISSING")
FRESHNESS_TABLE = names.FRESHNESS_TABLE
DEFAULT_WAL_WARN_BYTES = 1 << 30

WalReader = Callable[[service.Context, Source], "int | None"]


# -- text format ---------------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class MetricText:
    """Collects samples grouped by metric family, renders HELP/TYPE once per family."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, help_text: str, value: float, labels: dict[str, Any] | None = None,
            kind: str = "gauge") -> None:
        fam = self._families.setdefault(name, (help_text, kind, []))
        lab = ",".join(f'{k}="{_escape(str(v))}"' for k, v in (labels or {}).items())
        fam[2].append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    def enum(self, name: str, help_text: str, current: str, states: tuple[str, ...], labels: dict[str, Any]) -> None:
        for s in states if current in states else (*states, current):
            self.add(name, help_text, 1 if s == current else 0, {**labels, "state": s})

    def render(self) -> str:
        out: list[str] = []
        for name, (help_text, kind, lines) in self._families.items():
            out.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            out.append(f"# TYPE {name} {kind}")
            out += lines
        return "\n".join(out) + "\n"


# -- freshness -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FreshnessSample:
    source: str
    seconds: float            # commit returned -> visible, this host's clock
    via: str                  # "change_topic" | "pinot"
    measured_at: float        # epoch seconds


_samples: dict[str, FreshnessSample] = {}
_samples_lock = threading.Lock()


def last_freshness() -> dict[str, FreshnessSample]:
    with _samples_lock:
        return dict(_samples)


def _freshness_mirror(ctx: service.Context, source: str) -> str | None:
    for m in ctx.registry.list_mirrors(source=source):
        if (m.schema_name, m.table_name) == FRESHNESS_TABLE and m.state == "running":
            return m.name
    return None


def _write_heartbeat(ctx: service.Context, src: Source) -> datetime:
    """Upsert the probe row (autocommit: the row is committed when this returns)."""
    with catalog.connect(service.source_dsn(ctx, src), connect_timeout=5) as conn:
        # IF NOT EXISTS still needs CREATE privileges: a least-privileged role (README "Managed
        # Postgres") uses the table its DBA created, so only create it when it is missing.
        if conn.execute("SELECT to_regclass('_cdc.freshness')").fetchone()[0] is None:
            conn.execute("CREATE SCHEMA IF NOT EXISTS _cdc")
            conn.execute("CREATE TABLE IF NOT EXISTS _cdc.freshness (id int PRIMARY KEY, committed_at timestamptz NOT NULL)")
        row = conn.execute("INSERT INTO _cdc.freshness (id, committed_at) VALUES (1, clock_timestamp()) "
                           "ON CONFLICT (id) DO UPDATE SET committed_at = EXCLUDED.committed_at "
                           "RETURNING committed_at").fetchone()
    return row[0]


def _same_instant(value: Any, expected: datetime) -> bool:
    """Debezium writes timestamptz as an ISO-8601 string (ZonedTimestamp)."""
    try:
        got = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return got == expected


def _via_change_topic(ctx: service.Context, src: Source, timeout: float) -> float:
    from confluent_kafka import Consumer, TopicPartition
    topic = names.change_topic(src.name, *FRESHNESS_TABLE)
    c = Consumer({"bootstrap.servers": ctx.settings.kafka_bootstrap, "group.id": f"cdc-freshness-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "latest", "log_level": 0})
    try:
        # Connect creates a change topic only with its first event, but we must know the
        # end offsets before writing: create it like add_mirror does (one partition).
        from cdc.clients.kafka import KafkaAdmin
        KafkaAdmin(ctx.settings.kafka_bootstrap).create_topic(topic, 1)
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise CdcError(f"change topic {topic} is not available yet", hint="retry in a few seconds")
        # Start at the current ends, so only events written after our commit are read.
        c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                  for p in meta.partitions])
        committed = _write_heartbeat(ctx, src)
        t0 = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.05)             # returns as soon as one event arrives
            if msg is None or msg.error() is not None or not msg.value():
                continue
            after = (json.loads(msg.value()) or {}).get("after") or {}
            if after.get("id") == 1 and _same_instant(after.get("committed_at"), committed):
                return time.time() - t0
        raise CdcError(f"the freshness probe did not reach {topic} within {timeout:g}s",
                       hint="is the connector RUNNING, with _cdc.freshness in its table.include.list?")
    finally:
        c.close()


def _via_pinot(ctx: service.Context, src: Source, table: str, timeout: float) -> float:
    query = f'SELECT committed_at FROM "{table}" WHERE id = 1'
    _, before = ctx.broker.query(query)
    _write_heartbeat(ctx, src)
    t0 = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, rows = ctx.broker.query(query)
        if rows and rows != before:       # representation-agnostic: any new value is ours or newer
            return time.time() - t0
        time.sleep(0.2)
    raise CdcError(f"the freshness probe did not reach Pinot table {table} within {timeout:g}s")


def measure_freshness(ctx: service.Context, source: str, timeout: float = 60.0) -> FreshnessSample:
    """Commit a probe row in `source` and time until it is visible (see module doc)."""
    src = service.get_source(ctx, source)
    pinot_table = _freshness_mirror(ctx, source) if service.pinot_enabled(ctx)[0] else None
    if pinot_table:
        seconds, via = _via_pinot(ctx, src, pinot_table, timeout), "pinot"
    else:
        seconds, via = _via_change_topic(ctx, src, timeout), "change_topic"
    sample = FreshnessSample(source, seconds, via, time.time())
    with _samples_lock:
        _samples[source] = sample
    return sample


# -- WAL retained by the slot --------------------------------------------------------------

def slot_wal_retained(ctx: service.Context, src: Source) -> int | None:
    """Bytes of WAL Postgres keeps for the source's slot; None when the slot does not exist."""
    return slots.wal_retained(service.source_dsn(ctx, src), src.name)


# -- render ----------------------------------------------------------------------------------

# -- snapshot progress ------------------------------------------------------------------------

SNAPSHOT_STATES = ("requested", "queued", "running", "paused", "done", "failed", "unknown")
SnapshotReader = Callable[[service.Context, list[Any]], "dict[str, Any]"]


def mirror_snapshots(ctx: service.Context, mirrors: list[Any]) -> dict[str, Any]:
    """mirror name -> snapshot.Progress, each source's notification topic read once; a mirror
    whose source does not answer is left out (no made-up numbers)."""
    from cdc.mirrors import snapshot
    notes: dict[str, list[dict[str, Any]]] = {}
    out: dict[str, Any] = {}
    for rec in mirrors:
        try:
            src = service.get_source(ctx, rec.source)
            if src.name not in notes:
                topic = names.notification_topic(src.name)
                notes[src.name] = [n for _, n in snapshot.read_notifications(ctx.settings.kafka_bootstrap, topic)]
            out[rec.name] = snapshot.progress_of(ctx, rec, src, notes[src.name])
        except Exception:  # Kafka, Postgres or a registry gap: no series for this mirror
            continue
    return out


def _load_metrics(m: MetricText, p: Any, base: dict[str, str]) -> None:
    """The copy load of the mirror's rows (cdc.mirrors.load_progress)."""
    from cdc.mirrors.load_progress import STATES
    m.enum("cdc_mirror_load_state", "The mirror's initial copy load (1 = current).", p.state, STATES, base)
    m.add("cdc_mirror_load_rows", "Rows the initial copy load has read into the flat topic.", p.rows, base)
    if p.estimate is not None:
        m.add("cdc_mirror_load_rows_estimate", "Rows the table held when the load began (estimate).", p.estimate, base)
    m.add("cdc_mirror_load_rows_per_second", "Rows per second of the load (its average so far).", round(p.rate), base)
    if p.eta_s is not None:
        m.add("cdc_mirror_load_eta_seconds", "Seconds the load still needs at its rate (estimate).", p.eta_s, base)
    m.add("cdc_mirror_load_waiting_transactions", "Transactions open when the table joined the publication that "
          "the load still waits for.", p.waiting_for, base)


def slot_lost(ctx: service.Context, src: Source) -> bool | None:
    """True when the source's slot was invalidated; None when it has no slot."""
    status = slots.wal_status(service.source_dsn(ctx, src), src.name)
    return None if status is None else status == "lost"


def render_metrics(ctx: service.Context, *, wal_reader: WalReader = slot_wal_retained,
                   lost_reader: Callable[[service.Context, Source], "bool | None"] = slot_lost,
                   now: Callable[[], float] = time.time, snapshot_reader: SnapshotReader = mirror_snapshots) -> str:
    """Every metric, as Prometheus text. Never raises for a system that is down."""
    m = MetricText()
    up: dict[str, bool] = {}
    mirrors = ctx.registry.list_mirrors()
    try:
        snaps = snapshot_reader(ctx, mirrors)
    except Exception:  # never let one reader break the scrape
        snaps = {}
    statuses: dict[str, Any] = {}
    try:
        existing = set(ctx.connect.list_connectors())
        up["connect"] = True
    except RemoteError:
        existing, up["connect"] = None, False
    try:
        jobs = {j.id: j.state for j in ctx.jobmanager.jobs()}
        up["flink"] = True
    except RemoteError:
        jobs, up["flink"] = None, False
    use_pinot = service.pinot_enabled(ctx)[0]
    for rec in mirrors:
        base = {"mirror": rec.name, "source": rec.source}
        m.add("cdc_mirror_state", "Registry state of the mirror (1 = current).", 1, {**base, "state": rec.state})
        try:
            load = load_progress.read(ctx.settings.registry_file, rec.name, rec.created_at)
        except Exception:  # never let one reader break the scrape
            load = None
        if load is not None:
            _load_metrics(m, load, base)
            if snaps.get(rec.name) is not None and snaps[rec.name].state in ("requested", "unknown"):
                snaps.pop(rec.name)             # Debezium read nothing: the copy load did
        if (snap := snaps.get(rec.name)) is not None:
            m.enum("cdc_mirror_snapshot_state", "The table's snapshot as Debezium reports it (1 = current).",
                   snap.state, SNAPSHOT_STATES, base)
            if snap.rows is not None:
                m.add("cdc_mirror_snapshot_rows", "Rows the snapshot read (done: Debezium's count; running: "
                      "change events since it began).", snap.rows, base)
            if snap.estimate is not None:
                m.add("cdc_mirror_snapshot_rows_estimate", "Rows the table holds (estimate) while not done.",
                      snap.estimate, base)
        cname = rec.connector_name or names.connector_name(rec.source)
        if existing is not None:
            if cname not in statuses:
                try:
                    statuses[cname] = ctx.connect.status(cname) if cname in existing else None
                except RemoteError:
                    statuses[cname] = "error"
            st = statuses[cname]
            if st != "error":
                labels = {**base, "connector": cname}
                m.enum("cdc_connector_state", "Kafka Connect connector state (1 = current).",
                       "MISSING" if st is None else st.state, CONNECTOR_STATES, labels)
                for t in ([] if st is None else st.tasks):
                    m.enum("cdc_connector_task_state", "Kafka Connect task state (1 = current).", t.state,
                           TASK_STATES, {**labels, "task": t.id})
        if jobs is not None:
            state = jobs.get(rec.flink_job_id or "", "MISSING")
            m.enum("cdc_flink_job_state", "Flink job state (1 = current).", state, JOB_STATES,
                   {**base, "job_id": rec.flink_job_id or ""})
            if rec.flink_job_id and state != "MISSING":
                try:
                    chk = ctx.jobmanager.checkpoints(rec.flink_job_id)
                except RemoteError:
                    chk = None
                if chk is not None and chk.timestamp:
                    m.add("cdc_flink_last_checkpoint_age_seconds",
                          "Seconds since the last completed checkpoint of the mirror's job.",
                          max(0.0, now() - chk.timestamp / 1000), base)
        try:
            dead = dead_letters.summary(ctx.settings.kafka_bootstrap, rec.name, timeout=5)["count"]
            m.add("cdc_dead_letters", "Change events the flatten job could not convert (in the mirror's "
                  "dead-letter topic); the mirror is degraded while > 0.", dead, base)
            acked = dead_letters.acknowledged(ctx.registry.list_events(rec.name, limit=500))
            m.add("cdc_mirror_degraded", "1 when the mirror has dead letters since its last resync: some rows "
                  "are not as in Postgres.", 1 if dead > acked else 0, base)
        except Exception:  # noqa: BLE001 - Kafka unreachable: no reading rather than a wrong one
            pass
        m.add("cdc_mirror_generation", "The mirror's generation that answers queries (each rebuild adds one: "
              "schema changes, TRUNCATE, resync).", rec.generation, base)
        rb = rec.deployment.rebuild if rec.deployment else None
        m.add("cdc_mirror_rebuilding", "1 while a rebuild fills the next generation beside the serving one.",
              1 if rb else 0, base)
        if rb is not None:
            m.add("cdc_mirror_rebuild_seconds", "Seconds since the rebuild in flight began.",
                  round(time.time() - rb.started_at, 1), base)
        if use_pinot and rec.state == "running":
            try:
                m.add("cdc_pinot_rows", "Rows (latest version per key) in the mirror's Pinot table.",
                      ctx.broker.count(rec.name), base)
                up["pinot"] = up.get("pinot", True)
            except (RemoteError, ValueError):
                up["pinot"] = False
    threshold = int(getattr(ctx.settings, "wal_retained_warn_bytes", DEFAULT_WAL_WARN_BYTES))
    m.add("cdc_slot_wal_retained_warn_bytes", "Warning threshold for WAL retained by a replication slot.", threshold)
    for src in ctx.registry.list_sources():
        if not any(r.source == src.name for r in mirrors):
            continue
        try:
            retained = wal_reader(ctx, src)
            up[f"postgres:{src.name}"] = True
        except Exception:  # psycopg or CdcError: report the source as down, keep scraping
            up[f"postgres:{src.name}"] = False
            continue
        labels = {"source": src.name, "slot": names.slot_name(src.name)}
        try:
            lost = lost_reader(ctx, src)
        except Exception:  # noqa: BLE001 - a scrape never fails on one reading
            lost = None
        if lost is not None:
            m.add("cdc_slot_lost", "1 when Postgres invalidated the slot (wal_status lost): changes were lost.",
                  1 if lost else 0, labels)
        m.add("cdc_slot_repair_in_progress", "1 while the source's mirrors are resynced after a lost slot "
              "(new slot, fresh snapshot, removed keys pruned).",
              1 if any(r.source == src.name and r.state == "resyncing" for r in mirrors) else 0, labels)
        if retained is None:
            continue
        m.add("cdc_slot_wal_retained_bytes", "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) of the slot.",
              retained, labels)
        m.add("cdc_slot_wal_retained_over_threshold", "1 when the slot retains more WAL than the threshold.",
              1 if retained > threshold else 0, labels)
    for source, s in sorted(last_freshness().items()):
        m.add("cdc_freshness_seconds", "Last measured commit -> visible delay (via = how far it was followed).",
              s.seconds, {"source": source, "via": s.via})
        m.add("cdc_freshness_sample_age_seconds", "Age of the last freshness sample.",
              max(0.0, now() - s.measured_at), {"source": source})
    for system, ok in sorted(up.items()):
        m.add("cdc_up", "1 when the system answered this scrape.", 1 if ok else 0, {"system": system})
    return m.render()
