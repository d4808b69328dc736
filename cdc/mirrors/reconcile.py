"""Reconciler: compare what the registry says should exist with what Connect, Flink and
Pinot report, and repair the difference.

Why it is split into observe / plan / apply: plan() is a pure function of (desired,
observed), so every rule is tested table-driven without any server; observe() and apply()
are the only parts that talk to systems. Safety rules baked into the split:

* A system that does not answer is "unknown", never "missing": Observed.connectors / jobs /
  pinot_tables are None then, and plan() makes no decision for that system. (Otherwise a
  Connect restart would make us PUT every connector again.)
* Only mirrors in state "running" are repaired (and "resyncing", the reconciler's own repair
  of a lost slot). "creating" (add_mirror in progress), "pausing", "paused", "removing", ...
  belong to whoever set them; a connector is left alone while any mirror of its source is in
  a transitional state, since add/remove rewrite its config -- unless that mirror is stuck:
  "creating"/"removing" untouched for stuck_after_s (CDC_STUCK_AFTER_S) means its process died
  (cdc.mirrors.rollback heartbeats). Then the connector is repaired again and RECOVER_STUCK
  resumes or rolls back the add, or finishes the remove (cdc.mirrors.recovery).
* A lost replication slot (wal_status lost) -> REPAIR_LOST_SLOT instead of restarting a
  connector that can never stream from it, then FINISH_RESYNC on later passes
  (cdc.mirrors.slot_repair: new slot, fresh snapshot, keys Postgres no longer has removed).
* Partitioned tables: the leaf partitions in the catalog differ from the mirror's deployment
  -> SYNC_PARTITIONS (cdc.mirrors.partitions: rows of attached partitions read, rows of
  detached ones removed).
* apply() re-checks each action against fresh state before acting (the plan may be
  seconds old), and failures back off exponentially per (mirror, action kind), so a
  broken mirror is retried at 2 s, 4 s, ... 5 min instead of hammering the systems.
* Schema changes (cdc/mirrors/schema_change.py): the columns and storage (relfilenodes) a
  mirror's job was deployed with (registry) are compared with the table in the catalog
  (schema_change.decide). Added nullable columns without a default -> FOLLOW_SCHEMA
  (redeploy from the change topic's earliest offset, which also replaces a RESTORE_JOB of
  that mirror); types the job and Pinot read alike -> SCHEMA_IN_PLACE; every other change,
  TRUNCATE and table rewrites -> REBUILD (cdc.mirrors.rebuild: a new generation filled beside
  the serving one, then REBUILD_STEP every pass until it switches); a column cdc cannot map
  -> SCHEMA_UNSUPPORTED (state schema_blocked until fixed); a dropped or renamed table ->
  TABLE_GONE (state error + the fix). Mirrors without a recorded deployment get one.
* One reconciler acts at a time across processes: a registry lease taken every pass and
  renewed between actions; losing it stops the pass.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.core import names
from cdc.postgres import catalog, slots
from cdc.mirrors import ops, partitions, recovery, rollback, slot_repair, topic_epoch
from cdc.mirrors import schema_change
from cdc.mapping import render
from cdc.mirrors import service
from cdc.clients.connect import ConnectorStatus
from cdc.core.settings import Settings
from cdc.core.errors import PermanentRemoteError, RemoteError, first_line
from cdc.mirrors.registry import MirrorRecord

log = logging.getLogger(__name__)

RECREATE_CONNECTOR = "recreate_connector"
RESTART_CONNECTOR = "restart_connector"
RESUME_CONNECTOR = "resume_connector"
RESTORE_JOB = "restore_job"
RECREATE_PINOT = "recreate_pinot_table"
FOLLOW_SCHEMA = "follow_schema_change"
SCHEMA_UNSUPPORTED = "schema_change_unsupported"
SCHEMA_IN_PLACE = "schema_change_in_place"
REBUILD = "rebuild_mirror"                      # cdc.mirrors.rebuild
REBUILD_STEP = "rebuild_step"
TABLE_GONE = "table_gone"
RECORD_STORAGE = "record_table_storage"
_SCHEMA_KINDS = {schema_change.FOLLOW: FOLLOW_SCHEMA, schema_change.IN_PLACE: SCHEMA_IN_PLACE,
                 schema_change.REBUILD: REBUILD, schema_change.UNSUPPORTED: SCHEMA_UNSUPPORTED,
                 schema_change.GONE: TABLE_GONE, schema_change.RECORD: RECORD_STORAGE}
_SCHEMA_ACTIONS = frozenset(_SCHEMA_KINDS.values())
RECORD_DEPLOYMENT = "record_deployment"
REPAIR_SLOT = "repair_lost_slot"
FINISH_RESYNC = "finish_resync"
SYNC_PARTITIONS = "sync_partitions"
RECOVER_STUCK = "recover_stuck"
REBASE_EPOCH = "rebase_change_topic_epoch"       # cdc.mirrors.topic_epoch
RECORD_TOPIC = "record_change_topic"
TOPIC_PARTITIONS = "change_topic_partitions"

ACTIVE_STATE = "running"
# Mirrors the reconciler keeps repaired: running ones, and those it resyncs after a lost slot.
ACTIVE_STATES = frozenset({ACTIVE_STATE, slot_repair.STATE})
# States whose owner is some other operation in progress: hands off the whole source.
TRANSITIONAL_STATES = frozenset({"creating", "pending", "pausing", "resuming", "removing"})
RESTORABLE_JOB_STATES = frozenset({"FAILED", "CANCELED", "FINISHED", "SUSPENDED"})


@dataclass(frozen=True)
class Action:
    """One repair: kind, the mirror it is for (for a connector: the first running mirror of
    its source), why, and what it targets (connector name or job id)."""

    kind: str
    mirror: str
    reason: str
    source: str | None = None
    target: str | None = None


@dataclass
class Observed:
    """What the systems report. None for a whole field = that system did not answer.

    connectors: name -> status for connectors that exist (status None = exists, status not
    yet known); absent key = connector missing. jobs: Flink job id -> state.
    pinot_tables: raw table names (None also when Pinot is disabled).
    tables: mirror name -> its table in the catalog now (absent key = unknown).
    lost_slots: sources whose replication slot Postgres invalidated (a source that did not
    answer is left out). now: epoch seconds of the observation (None: stuck mirrors unknown)."""

    connectors: dict[str, ConnectorStatus | None] | None = None
    jobs: dict[str, str] | None = None
    pinot_tables: set[str] | None = None
    tables: dict[str, schema_change.Current] | None = None
    lost_slots: set[str] | None = None
    now: float | None = None
    change_topics: dict[str, tuple[str, int] | None] | None = None   # mirror -> (topic id, partitions)


# -- plan (pure) ---------------------------------------------------------------------------

def _blocks(m: MirrorRecord, now: float | None, stuck_after_s: float) -> bool:
    """The mirror's state belongs to an operation in progress whose process is alive (or
    might be: not stuck yet), so the source's connector is left to it."""
    return m.state in TRANSITIONAL_STATES and not rollback.is_stuck(m.state, m.updated_at, now, stuck_after_s)


def _connector_actions(source: str, mirrors: list[MirrorRecord], observed: Observed,
                       stuck_after_s: float = rollback.STUCK_AFTER_S) -> list[Action]:
    if observed.connectors is None or any(_blocks(m, observed.now, stuck_after_s) for m in mirrors):
        return []
    running = sorted(m.name for m in mirrors if m.state in ACTIVE_STATES)
    if not running:
        return []
    cname = next((m.connector_name for m in mirrors if m.connector_name), None) or names.connector_name(source)
    who = running[0]
    mk = lambda kind, why: Action(kind, who, f"connector {cname} (source {source}) {why}", source, cname)  # noqa: E731
    if observed.lost_slots is not None and source in observed.lost_slots:
        return [mk(REPAIR_SLOT, f"streams from replication slot {names.slot_name(source)}, which Postgres "
                                "invalidated (wal_status lost): changes were lost")]
    if cname not in observed.connectors:
        return [mk(RECREATE_CONNECTOR, "is missing")]
    st = observed.connectors[cname]
    if st is None:
        return []
    failed = [t.id for t in st.tasks if t.state == "FAILED"]
    if st.state == "FAILED" or failed:
        what = "is FAILED" if st.state == "FAILED" else f"task(s) {failed} FAILED"
        return [mk(RESTART_CONNECTOR, f"{what}: {st.failure_summary()[:300]}")]
    if st.state in ("PAUSED", "STOPPED"):
        return [mk(RESUME_CONNECTOR, f"is {st.state} while mirror(s) {', '.join(running)} are running")]
    return []


def _schema_actions(m: MirrorRecord, observed: Observed) -> list[Action]:
    cur = None if observed.tables is None else observed.tables.get(m.name)
    if cur is None:
        return []
    if m.deployment is None:
        return [Action(RECORD_DEPLOYMENT, m.name, "no deployed column list recorded", m.source, m.flink_job_id)]
    dep, rb = m.deployment, m.deployment.rebuild
    if rb is not None:     # compared with what the rebuild is filling
        dep = dep.model_copy(update={"table": rb.table, "filenodes": rb.filenodes})
    kind, _ch, why = schema_change.decide(dep, cur, m.spec)
    if kind is None:
        return [Action(REBUILD, m.name, f"{m.spec.qualified} is back to a shape cdc can mirror", m.source)] \
            if m.state == schema_change.BLOCKED_STATE else []
    if m.state == schema_change.BLOCKED_STATE and kind == schema_change.UNSUPPORTED:
        return []          # still blocked: nothing to do until the table changes
    if rb is not None and kind in (schema_change.FOLLOW, schema_change.IN_PLACE):
        kind = schema_change.REBUILD        # the rebuild in flight has the wrong columns: start over
    return [Action(_SCHEMA_KINDS[kind], m.name, f"table {m.spec.qualified}: {why}", m.source, kind)]


def _partition_actions(m: MirrorRecord, observed: Observed) -> list[Action]:
    cur = None if observed.tables is None else observed.tables.get(m.name)
    if cur is None or not partitions.changed(m, cur.table.partition_oids):
        return []
    return [Action(SYNC_PARTITIONS, m.name, f"the partitions of {m.spec.qualified} changed", m.source, m.name)]


def _topic_actions(m: MirrorRecord, observed: Observed) -> list[Action]:
    """The change topic recreated (new id: next epoch), never recorded, or re-partitioned."""
    if m.state != ACTIVE_STATE or observed.change_topics is None:
        return []
    now = observed.change_topics.get(m.name)
    verdict = topic_epoch.check(m.deployment, now)
    topic = topic_epoch.change_topic(m)
    if verdict == topic_epoch.REBASE and now is not None and m.deployment is not None:
        return [Action(REBASE_EPOCH, m.name, f"change topic {topic} was recreated (topic id "
                       f"{m.deployment.change_topic_id} -> {now[0]}): its offsets restarted", m.source, topic)]
    if verdict == topic_epoch.RECORD:
        return [Action(RECORD_TOPIC, m.name, f"no topic id recorded for {topic}", m.source, topic)]
    if verdict == topic_epoch.PARTITIONS and now is not None:
        return [Action(TOPIC_PARTITIONS, m.name, f"change topic {topic} has {now[1]} partitions", m.source, topic)]
    return []


def _mirror_actions(m: MirrorRecord, observed: Observed) -> list[Action]:
    if m.state == schema_change.BLOCKED_STATE:
        return _schema_actions(m, observed)
    if m.deployment is not None and m.deployment.rebuild is not None and m.state == ACTIVE_STATE:
        # generation N answers as it is (its job is not restored: it may be unable to read the
        # new events) while N+1 fills; a change since the rebuild began starts it over
        schema = _schema_actions(m, observed)
        return schema or [Action(REBUILD_STEP, m.name, f"rebuild to generation {m.deployment.rebuild.generation} "
                                                       "in flight", m.source)]
    topic = _topic_actions(m, observed)
    if any(a.kind in (REBASE_EPOCH, TOPIC_PARTITIONS) for a in topic):
        return topic       # a redeploy on the new topic (or the error state) replaces every other repair
    out: list[Action] = topic
    schema = _schema_actions(m, observed) if m.state == ACTIVE_STATE else []
    physical = names.pinot_physical_table(m.name, m.generation)
    missing = observed.pinot_tables is not None and physical not in observed.pinot_tables
    if any(a.kind in _SCHEMA_ACTIONS - {RECORD_STORAGE} for a in schema):
        # a redeploy or rebuild submits a new job anyway; an unsupported change blocks the mirror
        return ([Action(RECREATE_PINOT, m.name, f"Pinot table {physical} is missing", m.source, m.name)]
                if missing else []) + schema
    if missing:
        out.append(Action(RECREATE_PINOT, m.name, f"Pinot table {physical} is missing", m.source, m.name))
    if observed.jobs is not None:
        state = observed.jobs.get(m.flink_job_id) if m.flink_job_id else None
        if state is None:
            why = f"Flink job {m.flink_job_id} is missing" if m.flink_job_id else "mirror has no Flink job"
            out.append(Action(RESTORE_JOB, m.name, why, m.source, m.flink_job_id))
        elif state in RESTORABLE_JOB_STATES:
            out.append(Action(RESTORE_JOB, m.name, f"Flink job {m.flink_job_id} is {state}", m.source,
                              m.flink_job_id))
    return out + schema + (_partition_actions(m, observed) if m.state == ACTIVE_STATE and not schema else [])


def _source_actions(source: str, mirrors: list[MirrorRecord], observed: Observed,
                    stuck_after_s: float) -> list[Action]:
    """After the per-mirror repairs: finish a lost slot's resync, recover stuck mirrors."""
    out: list[Action] = []
    resyncing = sorted(m.name for m in mirrors if m.state == slot_repair.STATE)
    if resyncing and not (observed.lost_slots and source in observed.lost_slots):
        out.append(Action(FINISH_RESYNC, resyncing[0], f"source {source} is resyncing after a lost slot "
                                                       f"({', '.join(resyncing)})", source))
    for m in sorted(mirrors, key=lambda r: r.name):
        if rollback.is_stuck(m.state, m.updated_at, observed.now, stuck_after_s):
            age = rollback.age_s(m.updated_at, observed.now or 0.0)
            out.append(Action(RECOVER_STUCK, m.name, f"mirror {m.name} has been {m.state} for {age:.0f}s without a "
                                                     f"sign of life from its process (bound {stuck_after_s:.0f}s)",
                              source))
    return out


def plan(desired: list[MirrorRecord], observed: Observed, stuck_after_s: float = rollback.STUCK_AFTER_S
         ) -> list[Action]:
    """Repairs that bring `observed` to `desired`, connectors first (jobs read their
    topics), then Pinot tables, then Flink jobs, then resyncs to finish and stuck mirrors to
    recover. [] when everything is healthy."""
    by_source: dict[str, list[MirrorRecord]] = defaultdict(list)
    for m in desired:
        by_source[m.source].append(m)
    actions: list[Action] = []
    for source in sorted(by_source):
        actions += _connector_actions(source, by_source[source], observed, stuck_after_s)
    per_mirror = [a for m in sorted(desired, key=lambda r: r.name)
                  if m.state in ACTIVE_STATES or m.state == schema_change.BLOCKED_STATE
                  for a in _mirror_actions(m, observed)]
    last = [a for source in sorted(by_source) for a in _source_actions(source, by_source[source], observed,
                                                                        stuck_after_s)]
    return actions + sorted(per_mirror, key=lambda a: a.kind != RECREATE_PINOT) + last


# -- observe -------------------------------------------------------------------------------

def _strip_type(table: str) -> str:
    for suffix in ("_REALTIME", "_OFFLINE"):
        if table.endswith(suffix):
            return table[: -len(suffix)]
    return table


def observe(ctx: service.Context, desired: list[MirrorRecord]) -> Observed:
    """Ask each system once; a system that fails to answer is left None (unknown)."""
    obs = Observed()
    try:
        existing = set(ctx.connect.list_connectors())
        wanted = {m.connector_name or names.connector_name(m.source) for m in desired}
        obs.connectors = {}
        for name in sorted(wanted & existing):
            try:
                obs.connectors[name] = ctx.connect.status(name)
            except RemoteError:
                obs.connectors[name] = None
    except RemoteError as exc:
        log.warning("reconcile: Kafka Connect unknown: %s", exc)
        obs.connectors = None
    try:
        obs.jobs = {j.id: j.state for j in ctx.jobmanager.jobs()}
    except RemoteError as exc:
        log.warning("reconcile: Flink unknown: %s", exc)
    obs.tables = schema_change.observe_tables(ctx, [m for m in desired
                                                    if m.state in (ACTIVE_STATE, schema_change.BLOCKED_STATE)])
    obs.change_topics = topic_epoch.observe(ctx, [m for m in desired if m.state == ACTIVE_STATE])
    obs.lost_slots = set()
    for source in sorted({m.source for m in desired if m.state in ACTIVE_STATES}):
        try:
            if slots.wal_status(service.source_dsn(ctx, service.get_source(ctx, source)), source) == "lost":
                obs.lost_slots.add(source)
        except Exception as exc:  # Postgres down: unknown, never "lost"
            log.warning("reconcile: slot of source %s unknown: %s", source, exc)
    obs.now = time.time()
    if service.pinot_enabled(ctx)[0]:
        try:
            obs.pinot_tables = {_strip_type(t) for t in ctx.controller.list_tables()}
        except RemoteError as exc:
            log.warning("reconcile: Pinot unknown: %s", exc)
    return obs


# -- backoff -------------------------------------------------------------------------------

class Backoff:
    """Per-key exponential backoff, in memory: after n consecutive failures the key waits
    min(base * 2**(n-1), cap) seconds. A success forgets the key."""

    def __init__(self, base_s: float = 2.0, cap_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_s, self.cap_s, self.clock = base_s, cap_s, clock
        self._failures: dict[tuple[str, str], int] = {}
        self._until: dict[tuple[str, str], float] = {}

    def ready(self, key: tuple[str, str]) -> bool:
        return self.clock() >= self._until.get(key, float("-inf"))

    def failed(self, key: tuple[str, str]) -> float:
        """Record a failure; return the delay before the next attempt."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        delay = min(self.base_s * 2 ** (n - 1), self.cap_s)
        self._until[key] = self.clock() + delay
        return delay

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)
        self._until.pop(key, None)

    def failures(self, key: tuple[str, str]) -> int:
        return self._failures.get(key, 0)


# -- apply ---------------------------------------------------------------------------------

@dataclass
class Result:
    action: Action
    status: str          # "done" | "noop" | "skipped" | "backoff" | "failed"
    detail: str = ""


def _still_running(ctx: service.Context, a: Action) -> bool:
    rec = ctx.registry.get_mirror(a.mirror)
    wanted = {slot_repair.STATE} if a.kind == FINISH_RESYNC else \
        ACTIVE_STATES if a.kind in (RECREATE_CONNECTOR, RESTART_CONNECTOR, RESUME_CONNECTOR, REPAIR_SLOT, RESTORE_JOB,
                                    RECREATE_PINOT) else \
        {ACTIVE_STATE, schema_change.BLOCKED_STATE} if a.kind in _SCHEMA_ACTIONS else {ACTIVE_STATE}
    return rec is not None and rec.state in wanted


def _source_quiet(ctx: service.Context, source: str, stuck_after_s: float) -> bool:
    now = time.time()
    return not any(_blocks(m, now, stuck_after_s) for m in ctx.registry.list_mirrors(source=source))


def _do_connector(ctx: service.Context, a: Action, stuck_after_s: float) -> tuple[str, str]:
    cname, source = str(a.target), str(a.source)
    if not _source_quiet(ctx, source, stuck_after_s):
        return "skipped", "a mirror of the source is being changed"
    if a.kind == REPAIR_SLOT:
        src = service.get_source(ctx, source)
        if slots.wal_status(service.source_dsn(ctx, src), source) != "lost":
            return "noop", "the slot is no longer lost"
        return "done", slot_repair.start(ctx, source, progress=log.info)
    if a.kind == RECREATE_CONNECTOR:
        if ctx.connect.get_config(cname) is not None:
            return "noop", "connector exists again"
        src = service.get_source(ctx, source)
        tables, overrides = service.tables_of_source(ctx, src)
        config = service.render_connector_config(ctx, src, tables, overrides)
        if src.publication is None and config.get("publish.via.partition.root") == "true":
            slots.ensure_publish_via_root(service.source_dsn(ctx, src), src.name)
        ctx.connect.put_config(cname, config)
        return "done", f"PUT /connectors/{cname}/config with {len(tables)} table(s) from the registry"
    st = ctx.connect.status(cname)
    if st is None:
        return "noop", "connector is gone (next pass recreates it)"
    if a.kind == RESTART_CONNECTOR:
        if not st.failed:
            return "noop", f"connector is {st.state} again"
        ctx.connect.restart(cname, include_tasks=True, only_failed=True)
        return "done", "restart requested (failed connector and tasks)"
    if st.state not in ("PAUSED", "STOPPED"):
        return "noop", f"connector is {st.state}"
    ctx.connect.resume(cname)
    return "done", f"resume requested (was {st.state})"


def _do_pinot(ctx: service.Context, a: Action) -> tuple[str, str]:
    rec = service.get_mirror(ctx, a.mirror)
    spec = rec.spec
    src = service.get_source(ctx, spec.source)
    with catalog.connect(service.source_dsn(ctx, src)) as conn:
        info = catalog.introspect(conn, spec.schema_name, spec.table_name)
    ctx.controller.add_schema(render.render_pinot_schema(spec, info), override=True)
    from cdc.mirrors.rebuild import pinot_spec
    physical, topic = names.pinot_physical_table(spec.name, rec.generation), names.flat_topic(spec.name, rec.generation)
    spec = pinot_spec(spec, rec.generation)
    if rec.generation:
        ctx.controller.add_schema(render.render_pinot_schema(spec, info), override=True)
    if ctx.controller.get_table(physical) is not None:
        return "noop", "schema ensured; table exists again"
    try:
        ctx.controller.add_table(render.render_pinot_table(spec, info, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                                           flat_topic=topic))
    except PermanentRemoteError as exc:
        if exc.status != 409:
            raise
        return "noop", "table created concurrently"
    return "done", f"schema and REALTIME table {physical} created; Pinot re-reads {topic}"


def _execute(ctx: service.Context, a: Action, stuck_after_s: float = rollback.STUCK_AFTER_S) -> tuple[str, str]:
    if a.kind == RECOVER_STUCK:                 # re-checks that the mirror is still stuck
        return recovery.recover(ctx, a.mirror, stuck_after_s, time.time())
    if not _still_running(ctx, a):
        return "skipped", "mirror is no longer running"
    if a.kind in (RECREATE_CONNECTOR, RESTART_CONNECTOR, RESUME_CONNECTOR, REPAIR_SLOT):
        return _do_connector(ctx, a, stuck_after_s)
    if a.kind == FINISH_RESYNC:
        return slot_repair.finish(ctx, str(a.source), progress=log.info)
    if a.kind == SYNC_PARTITIONS:
        return partitions.sync(ctx, a.mirror)
    if a.kind == RESTORE_JOB:
        before = ctx.registry.get_mirror(a.mirror)
        job = ops.restore_job(ctx, a.mirror)
        changed = before is None or before.flink_job_id != job
        return ("done" if changed else "noop"), f"job {job}"
    if a.kind == RECREATE_PINOT:
        return _do_pinot(ctx, a)
    if a.kind in _SCHEMA_ACTIONS:
        planned = a.target if a.target in _SCHEMA_KINDS else \
            next(k for k, v in _SCHEMA_KINDS.items() if v == a.kind)
        return schema_change.act(ctx, a.mirror, planned)
    if a.kind == REBUILD_STEP:
        from cdc.mirrors import rebuild
        return rebuild.step(ctx, a.mirror, progress=log.info)
    if a.kind == RECORD_DEPLOYMENT:
        return schema_change.record_baseline(ctx, a.mirror)
    if a.kind == REBASE_EPOCH:
        return topic_epoch.rebase(ctx, a.mirror)
    if a.kind == RECORD_TOPIC:
        return topic_epoch.record(ctx, a.mirror)
    if a.kind == TOPIC_PARTITIONS:
        return topic_epoch.rebase(ctx, a.mirror)     # re-checks, then sets the error state
    raise ValueError(f"unknown action kind {a.kind!r}")


def apply(ctx: service.Context, actions: list[Action], backoff: Backoff | None = None,
          keep_going: Callable[[], bool] = lambda: True, stuck_after_s: float = rollback.STUCK_AFTER_S
          ) -> list[Result]:
    """Execute actions in order, each idempotently, recording each one as an event
    ("reconcile:<kind>", reason -> outcome). Failures are events too and back the
    (mirror, kind) off; keys still backing off are not attempted. keep_going() is asked
    before each action (lease renewal); False ends the pass."""
    results: list[Result] = []
    for a in actions:
        if not keep_going():
            break
        key = (a.mirror, a.kind)
        if backoff is not None and not backoff.ready(key):
            results.append(Result(a, "backoff"))
            continue
        try:
            status, detail = _execute(ctx, a, stuck_after_s)
        except Exception as exc:  # one broken mirror must not stop the others
            delay = backoff.failed(key) if backoff is not None else 0.0
            detail = first_line(exc)
            n = backoff.failures(key) if backoff is not None else 1
            ctx.registry.record_event(a.mirror, f"reconcile:{a.kind}:failed",
                                      f"{a.reason}: {detail}; attempt {n}, next in {delay:.0f}s")
            log.warning("reconcile %s %s failed: %s", a.kind, a.mirror, detail)
            results.append(Result(a, "failed", detail))
            continue
        if backoff is not None:
            backoff.succeeded(key)
        if status != "skipped":
            ctx.registry.record_event(a.mirror, f"reconcile:{a.kind}", f"{a.reason} -> {status}: {detail}")
        results.append(Result(a, status, detail))
    return results


# -- the loop ------------------------------------------------------------------------------

@dataclass
class _Stats:
    passes: int = 0
    last_error: str | None = None
    last_results: list[Result] = field(default_factory=list)


class Reconciler:
    """Runs observe -> plan -> apply every interval_s in a daemon thread, holding the
    registry lease while it acts. A fresh Context per pass keeps a pass's failure (or a
    replaced registry file) from poisoning the next one."""

    def __init__(self, ctx_factory: Callable[[], service.Context], settings: Settings, interval_s: float = 5.0,
                 *, holder: str | None = None, lease_ttl_s: float | None = None,
                 backoff: Backoff | None = None) -> None:
        self.ctx_factory = ctx_factory
        self.settings = settings
        self.interval_s = interval_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Long enough to cover one slow action (a job submit takes ~5-20 s) between renewals.
        self.lease_ttl_s = lease_ttl_s or float(getattr(settings, "reconcile_lease_ttl_s", max(60.0, 3 * interval_s)))
        self.backoff = backoff or Backoff()
        self.stats = _Stats()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[Action]:
        """One pass; returns the actions attempted ([] when healthy or another process
        holds the lease)."""
        with self._pass_lock:
            ctx = self.ctx_factory()
            try:
                if not ctx.registry.acquire_lease(self.holder, self.lease_ttl_s):
                    log.info("reconcile: lease held by %s; not acting", ctx.registry.lease_holder())
                    return []
                desired = ctx.registry.list_mirrors()
                bound = float(getattr(self.settings, "stuck_after_s", rollback.STUCK_AFTER_S))
                actions = plan(desired, observe(ctx, desired), stuck_after_s=bound)
                results = apply(ctx, actions, self.backoff,
                                keep_going=lambda: ctx.registry.renew_lease(self.holder, self.lease_ttl_s),
                                stuck_after_s=bound)
                self.stats.passes += 1
                self.stats.last_results = results
                return [r.action for r in results if r.status != "backoff"]
            finally:
                ctx.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.stats.last_error = None
            except Exception as exc:  # keep reconciling; the next pass may succeed
                self.stats.last_error = ((str(exc).splitlines() or [""])[0] or type(exc).__name__)[:500]
                log.exception("reconcile pass failed")
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cdc-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Ask the loop to end (the current action finishes), wait, release the lease.
        Returns False when the thread was still busy after `timeout`."""
        self._stop.set()
        done = True
        if self._thread is not None:
            self._thread.join(timeout)
            done = not self._thread.is_alive()
        if done:
            ctx = self.ctx_factory()
            try:
                ctx.registry.release_lease(self.holder)
            finally:
                ctx.close()
        return done

    def status(self) -> dict[str, Any]:
        return {"holder": self.holder, "running": bool(self._thread and self._thread.is_alive()),
                "passes": self.stats.passes, "last_error": self.stats.last_error}
