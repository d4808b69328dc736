"""Mirror operations beyond add/remove: pause, resume, resync and restore of the Flink job.

Why these live apart from service.py: they act on one already-created mirror and are what
the reconciler calls to repair it, so they must be idempotent (calling restore_job on a
mirror whose job already runs changes nothing) and must never lose the job's position.

Where a job resumes from. A mirror's Flink job keeps only Kafka offsets in its state, so
"restore" means: resubmit the same SQL with SET 'execution.state-recovery.path' (the
Flink 2.x key; `execution.savepoint.path` is its deprecated alias, both checked in
StateRecoveryOptions of flink-dist-2.2.1.jar) pointing at the newest retained
checkpoint or savepoint. Checkpoints are retained on cancellation and failure
(RETAIN_ON_CANCELLATION) under <state_dir>/flink/checkpoints/<job id>/chk-N/_metadata.
Submitting without a restore path is a last resort: the Kafka source then starts from the
consumer group's committed offsets (committed on checkpoints), which is close to the
checkpoint but not the same, so it is recorded loudly in the event reason.

What is resubmitted: the SQL rendered from the mirror's Deployment (registry: the table
its job was deployed with and its consumer group), so a restore never changes the column
list; restore points older than the deployment are not used (cdc.mirrors.schema_change).

Registry: the savepoint of a pause is carried by the "paused"
event ("savepoint <uri>; job <id>"), and the job-id history of a mirror is recovered from
its events plus the JobManager's job list, filtered to the mirror's current incarnation
(created_at), so a re-created mirror never restores a predecessor's offsets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cdc.clients import flink
from cdc.core import names
from cdc.postgres import catalog, slots
from cdc.mapping import render
from cdc.mirrors import service
from cdc.core.errors import CdcError, ConflictError, RemoteError
from cdc.mirrors.registry import Deployment, MirrorRecord

RESTORE_KEY = "execution.state-recovery.path"
ALIVE_JOB_STATES = flink.ALIVE_JOB_STATES
_JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")
_SAVEPOINT_IN_REASON = re.compile(r"\bsavepoint (\S+?)(?:;|$|\s)")


@dataclass(frozen=True)
class RestorePoint:
    """A retained checkpoint or savepoint a job can be resubmitted from."""

    path: str            # file:// URI of the chk-N / savepoint-* directory
    kind: str            # "checkpoint" | "savepoint"
    job_id: str | None   # the job that wrote it, when known
    taken_at: float      # epoch seconds (mtime of _metadata, or the JobManager's ack time)


def pipeline_name(mirror: str, generation: int = 0) -> str:
    return names.flink_pipeline(mirror, generation)


def checkpoint_root(ctx: service.Context) -> Path:
    return ctx.settings.state_dir / "flink" / "checkpoints"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _local_path(uri: str) -> Path | None:
    """file:/x, file:///x or /x -> Path; other schemes (s3://...) -> None (not checkable here)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path))
    return None


def flink_statements(ctx: service.Context, rec: MirrorRecord, restore_from: str | None = None,
                     dep: Deployment | None = None) -> list[str]:
    """The mirror's Flink SQL rendered from the registry spec and the table its job was
    deployed with (schema_change: a restore never changes the column list silently; the
    table as it is now for a mirror without a recorded deployment), with the restore path
    SET just before the INSERT when given. dep: render that deployment instead (a rebuild's
    next generation, cdc.mirrors.rebuild)."""
    spec = rec.spec
    epoch, generation = 0, 0
    dep = dep or rec.deployment
    if dep is not None:   # the column list, group, topic epoch and generation the job was deployed with
        info, group, epoch, generation = dep.table, dep.group_id, dep.seq_epoch, dep.generation
    else:
        src = service.get_source(ctx, spec.source)
        with catalog.connect(service.source_dsn(ctx, src)) as conn:
            info = catalog.introspect(conn, spec.schema_name, spec.table_name)
        group = names.flink_group(spec.name)
    stmts = render.render_flink_sql(spec, info, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                    change_topic=names.change_topic(spec.source, spec.schema_name, spec.table_name),
                                    flat_topic=names.flat_topic(spec.name, generation), group_id=group,
                                    seq_epoch=epoch, generation=generation)
    if restore_from:
        stmts = stmts[:-1] + [f"SET {render.flink_str(RESTORE_KEY)} = {render.flink_str(restore_from)}"] + stmts[-1:]
    return stmts


def _submit(ctx: service.Context, rec: MirrorRecord, restore_from: str | None) -> str:
    return ctx.gateway.submit_job(flink_statements(ctx, rec, restore_from), {"pipeline.name": pipeline_name(rec.name, rec.generation)})


# -- finding restore points --------------------------------------------------------------

def known_job_ids(ctx: service.Context, rec: MirrorRecord) -> list[str]:
    """Every Flink job id this incarnation of the mirror has had: the current one, the ids
    named in its events, and JobManager jobs carrying its pipeline name (started after the
    mirror was created)."""
    born = _epoch(rec.created_at)
    ids: list[str] = [rec.flink_job_id] if rec.flink_job_id else []
    for ev in ctx.registry.list_events(rec.name, limit=500):
        if _epoch(ev.ts) >= born - 1:
            ids += _JOB_ID.findall(f"{ev.reason or ''}")
    try:
        for job in ctx.jobmanager.jobs():
            if job.name == pipeline_name(rec.name, rec.generation) and (job.start_time or 0) / 1000 >= born - 1:
                ids.append(job.id)
    except RemoteError:
        pass  # the JobManager may be down: the filesystem still has the checkpoints
    return list(dict.fromkeys(ids))


def _checkpoints_on_disk(root: Path, job_id: str) -> list[RestorePoint]:
    out = []
    for chk in (root / job_id).glob("chk-*"):
        meta = chk / "_metadata"
        if chk.name[4:].isdigit() and meta.is_file():
            out.append(RestorePoint(chk.as_uri(), "checkpoint", job_id, meta.stat().st_mtime))
    return out


def _pause_savepoints(ctx: service.Context, rec: MirrorRecord) -> list[RestorePoint]:
    born = _epoch(rec.created_at)
    out = []
    for ev in ctx.registry.list_events(rec.name, limit=500):
        m = _SAVEPOINT_IN_REASON.search(ev.reason or "") if ev.action in ("paused", "savepoint") else None
        if m and _epoch(ev.ts) >= born - 1:
            out.append(RestorePoint(m.group(1), "savepoint", None, _epoch(ev.ts)))
    return out


def _exists(point: RestorePoint) -> bool:
    local = _local_path(point.path)
    return local is None or (local / "_metadata").is_file()


def latest_restore_point(ctx: service.Context, rec: MirrorRecord) -> RestorePoint | None:
    """Newest retained checkpoint or savepoint of this mirror, or None."""
    candidates: list[RestorePoint] = []
    root = checkpoint_root(ctx)
    for jid in known_job_ids(ctx, rec):
        candidates += _checkpoints_on_disk(root, jid)
        try:
            latest = ctx.jobmanager.checkpoints(jid)
        except RemoteError:
            latest = None
        if latest is not None and latest.external_path:
            candidates.append(RestorePoint(latest.external_path, "savepoint" if latest.is_savepoint else "checkpoint",
                                           jid, (latest.timestamp or 0) / 1000))
    candidates += _pause_savepoints(ctx, rec)
    # Points of an earlier deployment (before a schema-change redeploy) would skip changes
    # that job read without the new columns (cdc.mirrors.schema_change).
    since = rec.deployment.deployed_at if rec.deployment is not None else 0.0
    alive = [c for c in candidates if _exists(c) and c.taken_at >= since]
    return max(alive, key=lambda c: c.taken_at) if alive else None


# -- operations --------------------------------------------------------------------------

def _job_state(ctx: service.Context, job_id: str | None) -> str | None:
    return ctx.jobmanager.job_state(job_id) if job_id else None


def _wait_job_ended(ctx: service.Context, job_id: str, timeout: float = 60.0) -> str | None:
    """The savepoint is COMPLETED a moment before the job reaches FINISHED; wait for it, so
    a resume can never run next to the old job."""
    return ctx.jobmanager.wait_ended(job_id, timeout)


def pause_mirror(ctx: service.Context, name: str) -> str:
    """Stop the mirror's Flink job with a savepoint; return the savepoint URI.

    The state goes to "pausing" first so the reconciler, which only repairs "running"
    mirrors, does not restore the job that is being stopped on purpose. The connector keeps
    running (it serves every mirror of the source); changes wait in the change topic."""
    rec = service.get_mirror(ctx, name)
    if rec.state == "paused":   # idempotent: report the savepoint of the pause
        points = _pause_savepoints(ctx, rec)
        return points[0].path if points else ""
    if rec.state != "running":
        raise ConflictError(f"mirror {name} is {rec.state}; only a running mirror can be paused")
    ctx.registry.update_mirror(name, state="pausing")
    try:
        state = _job_state(ctx, rec.flink_job_id)
        if state == "RUNNING":
            path = ctx.jobmanager.stop_with_savepoint(str(rec.flink_job_id))
            kind = "savepoint"
            _wait_job_ended(ctx, str(rec.flink_job_id))
        else:   # nothing to stop: resume later from what the job left behind
            point = latest_restore_point(ctx, rec)
            if point is None:
                raise CdcError(f"mirror {name}: job {rec.flink_job_id} is {state} and left no checkpoint",
                               hint=f"restore it first: cdc mirror restore {name}")
            path, kind = point.path, point.kind
    except BaseException:
        ctx.registry.update_mirror(name, state="running")
        raise
    ctx.registry.update_mirror(name, state="paused")
    # "savepoint <uri>" is what _pause_savepoints parses back; keep the format.
    ctx.registry.record_event(name, "paused", f"savepoint {path}; job {rec.flink_job_id} ({kind})")
    return path


def resume_mirror(ctx: service.Context, name: str) -> str:
    """Resubmit a paused mirror's job from its pause savepoint (or the newest retained
    point); return the new job id."""
    rec = service.get_mirror(ctx, name)
    if rec.state == "running" and _job_state(ctx, rec.flink_job_id) in ALIVE_JOB_STATES:
        return str(rec.flink_job_id)
    if rec.state != "paused":
        raise ConflictError(f"mirror {name} is {rec.state}; only a paused mirror can be resumed")
    point = latest_restore_point(ctx, rec)
    job_id = _submit(ctx, rec, point.path if point else None)
    ctx.registry.update_mirror(name, state="running", flink_job_id=job_id)
    what = f"from {point.kind} {point.path}" if point else "from scratch: no savepoint or checkpoint found"
    ctx.registry.record_event(name, "resumed", f"{what}; job {rec.flink_job_id} -> {job_id}")
    return job_id


RESYNC_TIMEOUT_S = 3600.0


def resync_mirror(ctx: service.Context, name: str, *, wait_load: bool = False,
                  progress: Callable[[str], None] = lambda _m: None, on_load: Any = None) -> str:
    """Rebuild the mirror from a fresh read of the table without a gap (cdc.mirrors.rebuild:
    the next generation is filled by the copy load (cdc.mirrors.rebuild_load; Debezium's
    incremental snapshot with CDC_INITIAL_LOAD=debezium or for a table the copy load cannot
    serve) plus the live stream while the current one answers, then switched to). Keys
    Postgres no longer has simply never reach the new generation. Returns once the rebuild has
    begun (with `wait_load`, once the copy load has read the table, its progress shown); the
    reconciler (`cdc serve`) or resync_and_wait() finishes it.

    When the source's replication slot is lost, streaming cannot resume from it: the whole
    source is repaired instead (cdc.mirrors.slot_repair: new slot, fresh snapshot of its
    tables, keys Postgres no longer has removed), and this returns when that is done."""
    rec = service.get_mirror(ctx, name)
    src = service.get_source(ctx, rec.spec.source)
    if slots.wal_status(service.source_dsn(ctx, src), src.name) == "lost":
        from cdc.mirrors import slot_repair
        return "slot repaired: " + slot_repair.repair(ctx, src.name)
    if rec.state not in ("running", "error"):
        raise ConflictError(f"mirror {name} is {rec.state}: only a running mirror (or one in error) is resynced",
                            hint=f"`cdc mirror status {name}` says why; resume it first if it is paused")
    from cdc.mirrors import rebuild, rebuild_gate, schema_change
    with catalog.connect(service.source_dsn(ctx, src)) as conn:
        cur = schema_change.current_of(conn, rec)
    if cur.gone:
        raise ConflictError(f"mirror {name} cannot be resynced: {cur.gone}",
                            hint=f"cdc mirror remove {name}, then add the table under its current name")
    rb = rebuild.start(ctx, name, "resync requested", cur.table, cur.filenodes, progress,   # supersedes dead letters
                       background=not wait_load, on_load=on_load)
    if rec.state == "error":                # a fresh generation is on its way: the reconciler drives it again
        ctx.registry.update_mirror(name, state="running")
        ctx.registry.record_event(name, "resync", "out of state error: the mirror is rebuilt from a fresh read")
    if not wait_load and rb.load != "copy":   # the reconciler steps it (a copy load lets go when it ends)
        rebuild_gate.release(ctx, name)
    how = "copy load" if rb.load == "copy" else f"incremental snapshot (signal {rb.signal_id})"
    ctx.registry.record_event(name, "resync", f"rebuild into generation {rb.generation}: {how} of {rec.spec.qualified}")
    return f"rebuilding into generation {rb.generation} ({how})"


def resync_and_wait(ctx: service.Context, name: str, progress: Callable[[str], None] = lambda _m: None,
                    timeout: float = RESYNC_TIMEOUT_S, on_load: Any = None) -> str:
    """resync_mirror() with the copy load run here (its progress shown), then drive the
    rebuild until the new generation answers."""
    from cdc.mirrors import rebuild, rebuild_gate
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                started = resync_mirror(ctx, name, wait_load=True, progress=progress, on_load=on_load)
                break
            except rebuild.RebuildDeferred as exc:       # another snapshot runs, the connector lags, or
                if time.monotonic() > deadline:          # another process drives a rebuild of it
                    raise
                progress(f"mirror {name}: {exc.message}")
                time.sleep(5.0)
        if started.startswith("slot repaired"):
            return started
        progress(f"mirror {name}: {started}")
        last = ""
        while time.monotonic() < deadline:
            outcome, detail = rebuild.step(ctx, name, progress)
            rec = service.get_mirror(ctx, name)
            if rec.deployment is None or rec.deployment.rebuild is None:
                return detail
            if detail != last:
                progress(f"mirror {name}: {detail}")
                last = detail
            time.sleep(2.0)
    finally:
        rebuild_gate.release(ctx, name)     # `cdc serve` carries on from here if this stops early
    raise CdcError(f"mirror {name}: the rebuild did not finish in {timeout:.0f}s ({last})",
                   hint="`cdc mirror status NAME` shows where it is; `cdc serve` carries it on")


def restore_job(ctx: service.Context, name: str) -> str:
    """Resubmit a FAILED / CANCELED / FINISHED / missing job from its newest retained
    checkpoint or savepoint; return the running job id.

    Idempotent: a job that is alive is returned as is, and a live job with the mirror's
    pipeline name (e.g. submitted by a pass that crashed before recording it) is adopted
    rather than duplicated. From scratch only when no restore point exists, and then the
    event reason says so."""
    rec = service.get_mirror(ctx, name)
    old, state = rec.flink_job_id, _job_state(ctx, rec.flink_job_id)
    if state in ALIVE_JOB_STATES:
        return str(old)
    born = _epoch(rec.created_at)
    for job in ctx.jobmanager.jobs():
        if (job.name == pipeline_name(name, rec.generation) and job.state in ALIVE_JOB_STATES and job.id != old
                and (job.start_time or 0) / 1000 >= born - 1):
            ctx.registry.update_mirror(name, flink_job_id=job.id)
            ctx.registry.record_event(name, "adopted", f"live job {job.id} replaces {old} ({state or 'missing'})")
            return job.id
    point = latest_restore_point(ctx, rec)
    started = time.monotonic()
    job_id = _submit(ctx, rec, point.path if point else None)
    ctx.registry.update_mirror(name, flink_job_id=job_id)
    if point:
        what = f"restored from {point.kind} {point.path}"
    else:
        what = "restored FROM SCRATCH (no retained checkpoint or savepoint; Kafka group offsets apply)"
    ctx.registry.record_event(name, "restored", f"{what}; job {old} ({state or 'missing'}) -> {job_id}; "
                                                f"submit took {time.monotonic() - started:.1f}s")
    return job_id
