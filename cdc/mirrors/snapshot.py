"""A mirrored table's snapshot: request it, confirm it is under way, report its progress.

Why: Debezium accepts a snapshot request silently and drops a table it cannot read (issue 11:
"Unable to parse table identifier ... Skipping it." in Connect's log, while `mirror add` said
running). So `mirror add` returns only once Debezium itself says the table's snapshot is
under way, and an outcome other than that is registry state "error" with the reason.

What Debezium 3.6.1 offers (read in its source): snapshot notifications
(IncrementalSnapshotNotificationService, InitialSnapshotNotificationService) through the
"sink" notification channel, which the connector config enables: they are records of the
topic names.notification_topic(source), written through the same queue as change events,
JSON {id, aggregate_type: "Incremental Snapshot" | "Initial Snapshot", type, additional_data,
timestamp}. The table appears by its unquoted identifier "schema.table" in
data_collections (comma-joined), current_collection_in_progress or scanned_collection;
an incremental snapshot's notifications carry the signal id as their id.

    requested --STARTED/IN_PROGRESS naming it--> queued | running --TABLE_SCAN_COMPLETED--> done
        SUCCEEDED/EMPTY: done, rows = total_rows_scanned; NO_PRIMARY_KEY, SQL_EXCEPTION,
        UNKNOWN_SCHEMA, SKIPPED: failed. Our signal's STARTED without the table: failed
        (Debezium could not parse or find it). ABORTED/COMPLETED before its scan ended: failed.
        Initial snapshot: SKIPPED before it started: failed (the connector had offsets).

Which snapshot reads a table: a new connector's initial one; on a running connector an
incremental one, or a blocking one for names Debezium cannot keep in its offsets
(cdc.mapping.dbz_names.snapshot_type). A blocking snapshot reports as "Initial Snapshot".

`confirm` reads the topic from where it ended before the request: queued, running or done
-> registry "running"; failed, a FAILED connector task, or no sign within the timeout
(stalled) -> registry "error" + event "snapshot_failed", and SnapshotError.
`progress_of` (mirror status, metrics) folds the notifications since the mirror was created.
Rows so far while a table is read are not in the notifications, so it counts the change
topic's records since the first notification naming the table (snapshot reads plus any
changes made meanwhile); done, it is Debezium's exact total_rows_scanned. The estimate is
pg_class.reltuples (count(*) for a table never analysed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cdc.core import names
from cdc.core.errors import CdcError, ConflictError
from cdc.core.models import MirrorSpec, Source
from cdc.mapping import dbz_names
from cdc.mirrors.context import Context
from cdc.mirrors.registry import MirrorRecord
from cdc.mirrors.sources import source_dsn
from cdc.postgres import catalog

KINDS = {"Incremental Snapshot": "incremental", "Initial Snapshot": "initial"}
SCAN_OK = ("SUCCEEDED", "EMPTY")
UNDER_WAY = ("queued", "running", "paused", "done")
CONFIRM_TIMEOUT = 180.0        # seconds without any sign of the snapshot: stalled
IDLE_TIMEOUT = 600.0           # longest wait for another table's incremental snapshot to end
STALL_SECONDS = 300.0          # incremental: one notification per chunk, so silence means stalled
OFFSET_KEY = "incremental_snapshot_collections"   # in the connector's offsets while one runs
NOTIFICATION_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1"}
CLOCK_MARGIN_MS = 60_000       # notifications this much older than the mirror still count (clock skew)


class SnapshotError(CdcError):
    pass


@dataclass
class Progress:
    table: str                          # Debezium's identifier, schema.table
    kind: str | None = None             # "incremental" | "initial" | "blocking"
    state: str = "requested"            # requested | queued | running | paused | done | failed | unknown
    rows: int | None = None             # done: rows Debezium read; running: change events so far
    estimate: int | None = None
    reason: str | None = None
    started_ms: int | None = None       # first notification naming the table
    last_ms: int | None = None          # last notification naming the table

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.state == "done"}


@dataclass(frozen=True)
class Request:
    kind: str                           # which snapshot reads the table: incremental | blocking | initial
    from_offset: int                    # notification topic's end before the request
    signal_id: str | None = None


# -- fold (pure) ----------------------------------------------------------------------------

def _listed(table: str, collections: str | None) -> bool:
    return collections is not None and f",{table}," in f",{collections},"


def step(p: Progress, n: dict[str, Any], *, expect: str | None = None, signal_id: str | None = None) -> None:
    """Apply one notification to p. `expect` (while confirming a request of that kind) also
    lets notifications that name no table count: SKIPPED, and STARTED of an initial or
    blocking snapshot (Debezium reports a blocking one as "Initial Snapshot")."""
    kind = KINDS.get(str(n.get("aggregate_type")))
    if kind is None or (expect is not None and kind != ("initial" if expect == "blocking" else expect)):
        return
    typ, data, ts = n.get("type"), n.get("additional_data") or {}, n.get("timestamp")
    current, scanned = data.get("current_collection_in_progress"), data.get("scanned_collection")
    # An incremental snapshot lists its queue; an initial one lists every table, done or not.
    queued = kind == "incremental" and _listed(p.table, data.get("data_collections"))
    mine = queued or p.table in (current, scanned)
    active = p.state in ("queued", "running", "paused")
    new, reason = None, None
    if typ == "TABLE_SCAN_COMPLETED" and scanned == p.table:
        status = data.get("status")
        new, reason = ("done", None) if status in SCAN_OK else ("failed", f"Debezium ended the scan: {status}")
        p.rows = int(data.get("total_rows_scanned") or 0) if status in SCAN_OK else p.rows
    elif typ == "STARTED" and signal_id is not None and n.get("id") == signal_id and not queued:
        new, reason = "failed", ("Debezium did not take the table into its snapshot (it could not parse or "
                                 "find the name; see `cdc stack logs connect`)")
    elif typ in ("STARTED", "IN_PROGRESS", "RESUMED") and mine:
        new = "running" if current == p.table else "queued"
    elif typ == "STARTED" and expect in ("initial", "blocking") and p.state == "requested":
        new = "queued"                          # the table is named when its turn comes
    elif typ == "PAUSED" and mine and active:
        new = "paused"
    elif typ == "ABORTED" and kind == "initial" and active:
        new, reason = "failed", ("the snapshot was aborted (its task stopped): Debezium re-runs an initial "
                                 "snapshot when the task restarts, not a blocking one (`cdc mirror resync`)")
    elif typ in ("ABORTED", "COMPLETED") and active and (queued or "data_collections" not in data):
        new, reason = "failed", f"the snapshot {typ.lower()} before {p.table} was read"
    elif typ == "SKIPPED" and expect == "initial" and p.state == "requested":
        new, reason = "failed", "Debezium skipped the initial snapshot (the connector already had offsets)"
    if new is None:
        return
    if new in ("queued", "running") and not active:
        p.started_ms = ts                       # a new snapshot of the table begins
    if mine:
        p.kind, p.last_ms = kind, ts
    p.state, p.reason = new, reason


def fold(table: str, notifications: Iterable[dict[str, Any]], *, since_ms: int | None = None) -> Progress:
    p = Progress(table=table)
    for n in notifications:
        if since_ms is None or int(n.get("timestamp") or 0) >= since_ms:
            step(p, n)
    return p


# -- Kafka ------------------------------------------------------------------------------------

def _consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"cdc-snapshot-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "log_level": 0})


def read_notifications(bootstrap: str, topic: str, start: int = 0, timeout: float = 15.0) -> list[tuple[int, dict]]:
    """(offset, notification) from `start` to the topic's current end (one partition)."""
    from confluent_kafka import TopicPartition
    c = _consumer(bootstrap)
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return []
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        pos, out = max(start, low), []
        if pos >= high:
            return []
        c.assign([TopicPartition(topic, 0, pos)])
        deadline = time.monotonic() + timeout
        while pos < high and time.monotonic() < deadline:
            for msg in c.consume(500, 0.5):
                if msg.error() is None:
                    pos = msg.offset() + 1
                    if msg.value():
                        out.append((msg.offset(), json.loads(msg.value())))
            pos = max(pos, c.position([TopicPartition(topic, 0)])[0].offset)
        return out
    finally:
        c.close()


def records_since(bootstrap: str, topic: str, since_ms: int) -> int:
    """Records a topic received since a moment (sum over partitions)."""
    from confluent_kafka import TopicPartition
    c = _consumer(bootstrap)
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        parts = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
        total = 0
        for tp in c.offsets_for_times(parts, timeout=10):
            high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
            total += high - tp.offset if tp.offset >= 0 else 0
        return total
    finally:
        c.close()


def prepare(ctx: Context, src: Source) -> tuple[int, bool]:
    """Create the notification topic if needed; return its end offset, from where a request's
    notifications are read, and whether it was created. One partition (one order); kept forever
    and never compacted (an incremental snapshot's notifications share one id as key): a few
    small records per 1,000 rows snapshotted and one per task start."""
    from cdc.clients.kafka import KafkaAdmin
    kafka, topic = KafkaAdmin(ctx.settings.kafka_bootstrap), names.notification_topic(src.name)
    created = kafka.ensure_topic(topic, 1, NOTIFICATION_TOPIC_CONFIG)
    return sum(kafka.end_offsets(topic).values()), created


# -- request and confirm ----------------------------------------------------------------------

def signal_kind(tables: list[tuple[str, str]]) -> str:
    kinds = {dbz_names.snapshot_type(s, t) for s, t in tables}
    return "incremental" if kinds == {"incremental"} else "blocking"


def send_signal(ctx: Context, src: Source, tables: list[tuple[str, str]],
                filters: dict[tuple[str, str], str] | None = None) -> str:
    """INSERT an execute-snapshot row naming `tables` as Debezium parses them; its type is
    signal_kind(tables). `filters`: a SQL condition per table, so that only the rows it
    selects are read (Debezium's additional-conditions, cdc.mapping.dbz_names.condition_regex)."""
    sig_id, kind = uuid.uuid4().hex, signal_kind(tables)
    entries = {(s, t): dbz_names.signal_data_collection(s, t, kind) for s, t in tables}
    payload: dict[str, Any] = {"data-collections": list(entries.values()), "type": kind}
    if filters:
        payload["additional-conditions"] = [
            {"data-collection": dbz_names.condition_regex(s, t, entries[(s, t)]), "filter": f}
            for (s, t), f in filters.items()]
    data = json.dumps(payload)
    with catalog.connect(source_dsn(ctx, src)) as conn:
        conn.execute(f"INSERT INTO {'.'.join(names.SIGNAL_TABLE)} (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
                     (sig_id, data))
    return sig_id


def snapshot_running(offsets: list[dict[str, Any]]) -> bool:
    """Connect's committed offsets show a snapshot in progress: an incremental one keeps its
    table list there, an initial or blocking one "snapshot": INITIAL | BLOCKING."""
    return any(OFFSET_KEY in off or (off.get("snapshot") in ("INITIAL", "BLOCKING") and not off.get("snapshot_completed"))
               for off in (o.get("offset") or {} for o in offsets))


def wait_idle(ctx: Context, cname: str, say: Callable[[str], None], timeout: float = IDLE_TIMEOUT) -> None:
    """Wait until no snapshot runs on the connector before its task is restarted: a blocking
    snapshot is not resumed, an incremental one of an odd name can keep the task from starting
    (see cdc.mapping.dbz_names), and an initial one would start over."""
    deadline, told = time.monotonic() + timeout, False
    while snapshot_running(ctx.connect.get_offsets(cname)):
        if time.monotonic() > deadline:
            raise ConflictError(f"a snapshot on connector {cname} still runs after {timeout:.0f}s",
                                hint="retry when `cdc mirror status` of the source's other mirrors shows it done")
        if not told:
            say(f"debezium: waiting for the snapshot running on {cname} to end before restarting its task")
            told = True
        time.sleep(1)


def _wait_under_way(ctx: Context, src: Source, spec: MirrorSpec, req: Request, timeout: float) -> Progress:
    topic, cname = names.notification_topic(src.name), names.connector_name(src.name)
    p, pos = Progress(table=dbz_names.identifier(spec.schema_name, spec.table_name), kind=req.kind), req.from_offset
    deadline = time.monotonic() + timeout
    while True:
        for off, n in read_notifications(ctx.settings.kafka_bootstrap, topic, pos):
            step(p, n, expect=req.kind, signal_id=req.signal_id)
            pos = off + 1
        if p.state == "failed":
            raise SnapshotError(f"{req.kind} snapshot of {spec.qualified} failed: {p.reason}")
        if p.state in UNDER_WAY:
            return p
        st = ctx.connect.status(cname)
        if st is not None and st.failed:
            raise SnapshotError(f"connector {cname} failed before the snapshot of {spec.qualified} began: "
                                f"{st.failure_summary()[:300]}")
        if time.monotonic() > deadline:
            raise SnapshotError(f"{req.kind} snapshot of {spec.qualified} stalled: no sign of it from Debezium "
                                f"within {timeout:.0f}s ({p.reason or 'nothing on ' + topic})")
        time.sleep(1)


def confirm(ctx: Context, rec: MirrorRecord, src: Source, req: Request, say: Callable[[str], None],
            timeout: float = CONFIRM_TIMEOUT) -> MirrorRecord:
    """Registry "running" once the snapshot is under way; "error" + event otherwise (raises)."""
    try:
        p = _wait_under_way(ctx, src, rec.spec, req, timeout)
    except BaseException as exc:
        reason = exc.message if isinstance(exc, CdcError) else f"interrupted ({type(exc).__name__})"
        ctx.registry.update_mirror(rec.name, state="error")
        ctx.registry.record_event(rec.name, "snapshot_failed", reason)
        if isinstance(exc, CdcError) and not exc.hint:
            exc.hint = (f"see `cdc stack logs connect`; fix the cause, then `cdc mirror resync {rec.name}` "
                        f"(or `cdc mirror remove {rec.name}`)")
        raise
    say(f"debezium: {req.kind} snapshot of {rec.spec.qualified} confirmed: {p.state}")
    ctx.registry.record_event(rec.name, "snapshot_started", f"{req.kind} snapshot {p.state}"
                              + (f" (signal {req.signal_id})" if req.signal_id else ""))
    return ctx.registry.update_mirror(rec.name, state="running")


# -- progress -----------------------------------------------------------------------------------

def estimate_rows(ctx: Context, src: Source, schema: str, table: str) -> int | None:
    """pg_class.reltuples, or count(*) (at most 5 s) when the table was never analysed."""
    from psycopg import sql
    with catalog.connect(source_dsn(ctx, src), connect_timeout=5) as conn:
        row = conn.execute("SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
        if row is None or row[0] > 0:
            return None if row is None else int(row[0])
        conn.execute("SET statement_timeout = '5s'")
        return int(conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()[0])


def progress_of(ctx: Context, rec: MirrorRecord, src: Source,
                notifications: list[dict[str, Any]] | None = None) -> Progress:
    """The mirror's table's snapshot as Debezium reported it since the mirror was created."""
    spec = rec.spec
    if notifications is None:
        topic = names.notification_topic(src.name)
        notifications = [n for _, n in read_notifications(ctx.settings.kafka_bootstrap, topic)]
    since = int(datetime.fromisoformat(rec.created_at).timestamp() * 1000) - CLOCK_MARGIN_MS
    p = fold(dbz_names.identifier(spec.schema_name, spec.table_name), notifications, since_ms=since)
    started = next((e for e in ctx.registry.list_events(rec.name, limit=20) if e.action == "snapshot_started"), None)
    if p.kind == "initial" and started is not None and (started.reason or "").startswith("blocking"):
        p.kind = "blocking"                     # Debezium reports it as "Initial Snapshot"
    if p.state == "requested" and rec.state != "creating":
        p.state, p.reason = "unknown", ("Debezium reported nothing about this table since the mirror was created "
                                        "(e.g. created before cdc enabled snapshot notifications)")
    if p.state in ("queued", "running", "paused") and p.started_ms:
        p.rows = records_since(ctx.settings.kafka_bootstrap,
                               names.change_topic(src.name, spec.schema_name, spec.table_name), p.started_ms)
        if p.kind == "incremental" and p.state != "paused" and p.last_ms \
                and time.time() * 1000 - p.last_ms > STALL_SECONDS * 1000:
            p.state, p.reason = "failed", f"stalled: no notification for {STALL_SECONDS:.0f}s"
    if p.state != "done":
        try:
            p.estimate = estimate_rows(ctx, src, spec.schema_name, spec.table_name)
        except Exception:  # an estimate is optional; psycopg or CdcError
            p.estimate = None
    return p


def settle(ctx: Context, rec: MirrorRecord, p: Progress) -> MirrorRecord:
    """Carry a snapshot outcome seen after `mirror add` returned into the registry: a failed
    snapshot turns "running" into "error"; a later one under way (e.g. after `cdc mirror
    resync`) turns an "error" it caused back into "running". Each change is an event."""
    if rec.state == "running" and p.state == "failed":
        ctx.registry.record_event(rec.name, "snapshot_failed", p.reason)
        return ctx.registry.update_mirror(rec.name, state="error")
    if rec.state == "error" and p.state in UNDER_WAY and p.last_ms:
        last = next((e for e in ctx.registry.list_events(rec.name, limit=20) if e.action.startswith("snapshot_")), None)
        if last is not None and last.action == "snapshot_failed" \
                and datetime.fromisoformat(last.ts).timestamp() * 1000 < p.last_ms:
            ctx.registry.record_event(rec.name, "snapshot_started", f"{p.kind} snapshot {p.state}")
            return ctx.registry.update_mirror(rec.name, state="running")
    return rec
