"""Rebuild a mirror without a gap: fill a new generation beside the one that answers, switch.

Used for every change an in-place redeploy cannot make exact (cdc.mirrors.schema_change:
DROP / RENAME COLUMN, ADD COLUMN with a default, a type Pinot cannot change in place, a new
key, TRUNCATE and other rewrites of the table's storage) and by `cdc mirror resync`.

Generation N+1 (cdc.core.names: flat topic cdc.flat.<m>.g<N+1>, Flink job cdc-mirror-<m>-g<N+1>,
Pinot REALTIME table <m>_g<N+1>) is made while generation N keeps answering:

1. start(): once the connector has streamed the WAL written before the rebuild began (else
   it is deferred), the rebuild is recorded (so a crash leaves something the reconciler finishes
   or undoes), then the new flat topic and Pinot table, then J, committed as the start of a
   fresh consumer group. With the copy load (the default where the table allows it;
   cdc.mirrors.rebuild_load, which argues its exactness) J follows a marker appended to the
   change topic and the load reads the rows; the job comes in step(). With Debezium's snapshot
   J = the change topic's end offset, then the job (the table's columns as the catalog has them
   now, from offset J), then Debezium's incremental snapshot of the table (argued below).
2. step() (every reconciler pass): keeps the job alive (submits it once a copy load is done);
   once the rows are read and the job has committed past the change topic's end offset as it
   was then, switch().
3. switch(): the logical table <m> is routed to <m>_g<N+1> (one controller call), the registry
   names generation N+1 (in-process readers follow the registry: one write), then generation
   N's job, Pinot table and flat topic are removed.

Why generation N+1 is exact (Debezium's snapshot; the copy load: cdc.mirrors.rebuild_load). Every row that exists when the snapshot reads its chunk is read
(Debezium's incremental snapshot: DBLog watermarks, a chunk row that changed inside the
window is dropped in favour of the streamed change), and the signal is written after J was
taken, so every chunk read and every streamed change it competes with sits at an offset >= J.
Changes committed before the chunk read are in the read row; those after it are streamed
after J. A key deleted before its chunk is read never reaches the new topic (the topic starts
empty: nothing stale can survive, which is what TRUNCATE needs); one deleted later gets its
delete event. Events between J and the snapshot written before the ALTER (Debezium lagging)
carry the old shape, but the chunk read of their key comes later with a higher __seq. So per
key the highest __seq in the new topic is the row as Postgres has it, in the new shape. And
no change committed before the rebuild began is above J (start() waits until the connector
has confirmed that WAL): without that wait, inserts of a table Debezium was still behind on
when it was TRUNCATEd would land above J, and no snapshot row or event would ever remove them.

Why queries never see a half-filled table: generation N answers (frozen if its old job cannot
read the new events, e.g. after int -> text) until generation N+1 holds every row, and the
switch is one call. On a real Pinot server that holds from the second rebuild of a mirror on:
generation 0 is the physical table <m> itself, so the first switch must delete it before the
logical table <m> can take its name (seconds without the table; the README says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cdc.core import names
from cdc.core.errors import CdcError, ConflictError, first_line
from cdc.core.models import MirrorSpec, TableInfo
from cdc.mapping import dbz_names, render
from cdc.mirrors import initial_load, rebuild_gate, rebuild_load, snapshot, topic_tail
from cdc.mirrors.context import Context, pinot_enabled
from cdc.mirrors.rebuild_gate import RebuildDeferred
from cdc.mirrors.registry import Deployment, MirrorRecord, Rebuild
from cdc.mirrors.sources import get_source

EVENT_STARTED = "rebuild_started"
EVENT_SWITCHED = "rebuild_switched"
EVENT_ABORTED = "rebuild_aborted"
EVENT_PROGRESS = "rebuild_progress"
#: a rebuild whose job or snapshot is not under way this long after its start is restarted
RESTART_AFTER_S = 600.0
MAX_RESUBMITS = 5

Progress = Callable[[str], None]


def _kafka(ctx: Context) -> Any:
    from cdc.clients.kafka import KafkaAdmin
    return KafkaAdmin(ctx.settings.kafka_bootstrap)


def _change_topic(rec: MirrorRecord) -> str:
    return names.change_topic(rec.spec.source, rec.spec.schema_name, rec.spec.table_name)


def _next_generation(ctx: Context, rec: MirrorRecord) -> int:
    """Above every generation the mirror has had or begun (an abandoned one's number is never
    used again); skips one whose Pinot table name is another mirror's name (a mirror may be
    called "<m>_g2")."""
    dep = rec.deployment
    gen = max(rec.generation, dep.last_generation if dep else 0, dep.rebuild.generation if dep and dep.rebuild else 0) + 1
    while ctx.registry.get_mirror(names.pinot_physical_table(rec.name, gen)) is not None:
        gen += 1
    return gen


def pinot_spec(spec: MirrorSpec, generation: int) -> MirrorSpec:
    """The spec the Pinot schema and table config of a generation are rendered from: named
    like its physical table (names.pinot_physical_table)."""
    return spec.model_copy(update={"name": names.pinot_physical_table(spec.name, generation)})


def start(ctx: Context, name: str, reason: str, table: TableInfo, filenodes: dict[str, int] | None,
          progress: Progress = lambda _m: None, *, load: str | None = None, background: bool = True,
          on_load: Any = None, attempts: int = 0) -> Rebuild:
    """Begin filling the next generation with `table` (its columns as the catalog has them now,
    cdc.mirrors.schema_change.current_of), a rebuild already in flight abandoned first. The rows
    come from the copy load (cdc.mirrors.rebuild_load; `load` or CDC_INITIAL_LOAD, where the
    table allows it), run in a thread when `background`, else here (a failure then undoes the
    rebuild and raises), or from Debezium's incremental snapshot. Deferred (RebuildDeferred)
    while another process drives the mirror's rebuild."""
    with rebuild_gate.local_lock(name):
        return _start(ctx, name, reason, table, filenodes, progress, load, background, on_load, attempts)


def _start(ctx: Context, name: str, reason: str, table: TableInfo, filenodes: dict[str, int] | None,
           progress: Progress, load: str | None, background: bool, on_load: Any, attempts: int) -> Rebuild:
    if (other := rebuild_gate.held_elsewhere(ctx, name)) is not None:
        raise rebuild_gate.driven_elsewhere(name, other)
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        raise ConflictError(f"mirror {name} has no recorded deployment to rebuild",
                            hint="let the reconciler record it: run `cdc serve` for a few seconds")
    render.render_flink_sql(rec.spec, table, kafka_bootstrap="x:1", change_topic="x", flat_topic="x",
                            group_id="x")          # the new shape renders (a ConfigError otherwise)
    choice = initial_load.choose_for_table(load, ctx.settings.initial_load, rec.spec, table)
    mode, why_not_copy = choice.mode, choice.why
    src = get_source(ctx, rec.spec.source)
    cname = names.connector_name(src.name)
    rebuild_gate.wait_streamed_up_to_now(ctx, src, name, fills=table.model_dump_json() + repr(sorted((filenodes or {}).items())))
    if mode == rebuild_load.DEBEZIUM and snapshot.snapshot_running(ctx.connect.get_offsets(cname)):
        # Debezium would queue ours behind it, and that scan's completion could pass for ours
        raise RebuildDeferred(f"a snapshot is running on connector {cname}: the rebuild of {name} starts once it ends",
                              hint="`cdc mirror status` shows it; the reconciler (`cdc serve`) starts the rebuild then")
    if (other := rebuild_gate.lease(ctx, name)) is not None:       # taken last: no deferral holds it
        raise rebuild_gate.driven_elsewhere(name, other)
    gen = _next_generation(ctx, rec)     # above the one in flight: a torn-down number is never reused
    if rec.deployment.rebuild is not None:
        abort(ctx, name, f"superseded: {reason}", progress, release_lease=False)
        rec = ctx.registry.get_mirror(name) or rec
    dep = rec.deployment
    assert dep is not None
    group = f"{names.flink_group(name)}-g{gen}-{int(time.time() * 1000)}"    # no offsets committed yet
    rb = Rebuild(generation=gen, table=table, filenodes=filenodes, group_id=group, start_offset=-1,
                 started_at=time.time(), reason=reason, load=mode, attempts=attempts)
    dep = dep.model_copy(update={"last_generation": gen})
    ctx.registry.update_mirror(name, deployment=dep.model_copy(update={"rebuild": rb}))
    try:
        return _fill(ctx, rec, dep, rb, src, mode, why_not_copy, progress, background, on_load)
    except BaseException as exc:            # nothing half-made: the generation goes, the serving one stays
        try:                                # (only this one: a rebuild that superseded it is not touched)
            abort(ctx, name, f"its start failed: {first_line(exc, 200)}", progress, generation=gen)
        except Exception as undo:  # noqa: BLE001 - the first error is the one to report
            progress(f"rebuild {name}: generation {gen} not fully removed: {first_line(undo, 200)}")
        raise


def _fill(ctx: Context, rec: MirrorRecord, dep: Deployment, rb: Rebuild, src: Any, mode: str, why_not_copy: str,
          progress: Progress, background: bool, on_load: Any) -> Rebuild:
    """start()'s second half: the generation's topic and Pinot table, J, then the rows."""
    name, gen, table = rec.name, rb.generation, rb.table
    rec = rec.model_copy(update={"deployment": dep})
    topic = names.flat_topic(name, gen)
    progress(f"rebuild {name}: generation {gen} ({rb.reason}); flat topic {topic}; rows by "
             + ("the copy load" if mode == rebuild_load.COPY else f"Debezium's incremental snapshot{why_not_copy and f' ({why_not_copy})'}"))
    kafka, ctopic = _kafka(ctx), _change_topic(rec)
    kafka.ensure_topic(topic, ctx.settings.flat_topic_partitions, render.TOPIC_CONFIG)
    if held := sum(kafka.end_offsets(topic).values()):
        raise CdcError(f"flat topic {topic} of the new generation already holds {held} records (a writer of an "
                       "abandoned rebuild?): the rebuild starts over", hint=f"`cdc mirror status {name}`")
    if pinot_enabled(ctx)[0]:
        spec = pinot_spec(rec.spec, gen)
        ctx.controller.add_schema(render.render_pinot_schema(spec, table), override=True)
        ctx.controller.add_table(render.render_pinot_table(spec, table, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                                           flat_topic=topic))
    if mode == rebuild_load.COPY:
        j = rebuild_load.mark(ctx, rec, ctopic).job_offset     # after every change committed before the start
    else:
        j = kafka.end_offsets(ctopic).get(0, 0)
        rb = rb.model_copy(update={"notes_from": snapshot.prepare(ctx, src)[0]})
    rb = rb.model_copy(update={"start_offset": j})
    ctx.registry.update_mirror(name, deployment=dep.model_copy(update={"rebuild": rb}))
    kafka.commit(rb.group_id, ctopic, rb.start_offset)     # the job starts exactly at J
    _supersede_dead_letters(ctx, name, rb)
    if mode == rebuild_load.COPY:
        _record_started(ctx, name, rb, ctopic, topic, f"copy load, rows at __seq of offset {j - 1}")
        if background:
            rebuild_load.launch(ctx, name, rb, progress)
        else:
            rebuild_load.run(ctx, name, rb, progress, on_load)
        return rb
    rb = _submit(ctx, rec, rb)
    rb = rb.model_copy(update={"signal_id": snapshot.send_signal(ctx, src, [(rec.spec.schema_name,
                                                                             rec.spec.table_name)])})
    ctx.registry.update_mirror(name, deployment=dep.model_copy(update={"rebuild": rb}))
    _record_started(ctx, name, rb, ctopic, topic, f"incremental snapshot (signal {rb.signal_id})"
                    + (f": {why_not_copy}" if why_not_copy else ""))
    return rb


def _record_started(ctx: Context, name: str, rb: Rebuild, ctopic: str, topic: str, rows: str) -> None:
    ctx.registry.record_event(name, EVENT_STARTED,
                              f"generation {rb.generation}: {rb.reason}; job {rb.job_id or '(after the load)'} reads "
                              f"{ctopic} from offset {rb.start_offset} into {topic}; {rows}; "
                              f"columns [{', '.join(_columns(table=rb.table))}]")


def _columns(table: TableInfo) -> list[str]:
    return [f"{c.name} {c.type_name}" for c in sorted(table.columns, key=lambda c: c.position)]


def _supersede_dead_letters(ctx: Context, name: str, rb: Rebuild) -> None:
    """The new generation re-reads every row: dead letters so far no longer describe the mirror
    (rows still bad become new ones)."""
    from cdc.mirrors import dead_letters
    try:
        seen = dead_letters.summary(ctx.settings.kafka_bootstrap, name)["count"]
    except Exception:  # noqa: BLE001 - Kafka unreachable: acknowledge nothing
        return
    if seen:
        ctx.registry.record_event(name, dead_letters.ACK_EVENT, f"{seen} dead letter(s) superseded by the rebuild "
                                                                f"into generation {rb.generation}")


def deployment_of(dep: Deployment, rb: Rebuild, deployed_at: float | None = None) -> Deployment:
    """What the mirror runs with once generation rb.generation answers. deployed_at (the
    switch) bounds its restore points: none of the old generation's job counts."""
    return dep.model_copy(update={"table": rb.table, "group_id": rb.group_id, "generation": rb.generation,
                                  "deployed_at": deployed_at or rb.started_at, "filenodes": rb.filenodes,
                                  "rebuild": None, "start_offset": rb.start_offset})


def _submit(ctx: Context, rec: MirrorRecord, rb: Rebuild) -> Rebuild:
    assert rec.deployment is not None
    dep, spec = deployment_of(rec.deployment, rb), rec.spec
    stmts = render.render_flink_sql(spec, dep.table, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                    change_topic=_change_topic(rec), flat_topic=names.flat_topic(rec.name, rb.generation),
                                    group_id=dep.group_id, seq_epoch=dep.seq_epoch, generation=rb.generation)
    job = ctx.gateway.submit_job(stmts,
                                 {"pipeline.name": names.flink_pipeline(rec.name, rb.generation)})
    rb = rb.model_copy(update={"job_id": job})
    ctx.registry.update_mirror(rec.name, deployment=rec.deployment.model_copy(update={"rebuild": rb}))
    return rb


# -- progress ---------------------------------------------------------------------------------------

def snapshot_progress(ctx: Context, rec: MirrorRecord, rb: Rebuild) -> snapshot.Progress:
    src = get_source(ctx, rec.spec.source)
    topic = names.notification_topic(src.name)
    notes = [n for _, n in snapshot.read_notifications(ctx.settings.kafka_bootstrap, topic, start=rb.notes_from)]
    return snapshot.fold(dbz_names.identifier(rec.spec.schema_name, rec.spec.table_name), notes)


_LOAD_KEYS = ("rows", "estimate", "rows_per_s", "eta_s", "elapsed_s", "chunks_done", "chunks_total", "dead_letters",
              "reason")


def status(ctx: Context, rec: MirrorRecord) -> dict[str, Any] | None:
    """The rebuild in flight, for `mirror status` / REST / metrics (None: none)."""
    dep = rec.deployment
    if dep is None or dep.rebuild is None:
        return None
    rb = dep.rebuild
    out: dict[str, Any] = {"generation": rb.generation, "serving_generation": dep.generation, "reason": rb.reason,
                           "started_at": rb.started_at, "elapsed_s": round(time.time() - rb.started_at, 1),
                           "job": rb.job_id, "start_offset": rb.start_offset, "load": rb.load}
    try:
        if rb.load == rebuild_load.COPY:
            st, lp = rebuild_load.phase(ctx, rec, rb)
            out["copy"] = {"state": st, **({k: v for k, v in lp.as_dict().items() if k in _LOAD_KEYS} if lp else {})}
        else:
            p = snapshot_progress(ctx, rec, rb)
            out["snapshot"] = {"state": p.state, "rows": p.rows}
        out["copied"] = _kafka(ctx).committed(rb.group_id, _change_topic(rec)) if rb.job_id else None
        out["change_topic_end"] = _kafka(ctx).end_offsets(_change_topic(rec)).get(0, 0)
    except Exception as exc:  # noqa: BLE001 - progress is best effort; the rebuild itself is not affected
        out["progress_error"] = first_line(exc, 200)
    return out


# -- step / switch / abort -----------------------------------------------------------------------

def step(ctx: Context, name: str, progress: Progress = lambda _m: None) -> tuple[str, str]:
    """One reconciler pass over a rebuild in flight: keep it going, switch when complete."""
    with rebuild_gate.local_lock(name):
        return _step(ctx, name, progress)


def _step(ctx: Context, name: str, progress: Progress) -> tuple[str, str]:
    from cdc.clients.flink import ALIVE_JOB_STATES
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None or rec.deployment.rebuild is None:
        return "noop", "no rebuild in flight"
    rb = rec.deployment.rebuild
    if (other := rebuild_gate.lease(ctx, name)) is not None:
        return "noop", f"generation {rb.generation}: driven by {other}"
    if rb.load == rebuild_load.COPY and rb.job_id is None:
        got = _after_load(ctx, rec, rb, progress)
        if isinstance(got, tuple):
            return got
        rec, rb = ctx.registry.get_mirror(name) or rec, got
    elif rb.load != rebuild_load.COPY and (rb.job_id is None or rb.signal_id is None):   # a start cut off: again
        if time.time() - rb.started_at < 60:
            return "noop", "rebuild starting"
        return _restart(ctx, name, f"restarted (the previous start was cut off): {rb.reason}", rb, progress)
    assert rec.deployment is not None and rb.job_id is not None
    state = ctx.jobmanager.job_state(rb.job_id)
    if state not in ALIVE_JOB_STATES and rb.resubmits >= MAX_RESUBMITS:
        abort(ctx, name, f"its job ended {rb.resubmits + 1} times ({state or 'missing'}; `cdc stack logs flink` says "
                         "why)", progress)
        ctx.registry.update_mirror(name, state="error")
        return "done", f"rebuild abandoned: its job keeps failing ({state or 'missing'})"
    if state not in ALIVE_JOB_STATES:
        rb = _submit(ctx, rec, rb.model_copy(update={"resubmits": rb.resubmits + 1}))    # from the group's committed offsets: replays are idempotent
        ctx.registry.record_event(name, EVENT_PROGRESS, f"generation {rb.generation}: job was {state or 'missing'}, "
                                                        f"resubmitted as {rb.job_id}")
        return "done", f"rebuild job resubmitted ({state or 'missing'})"
    if rb.load != rebuild_load.COPY:
        p = snapshot_progress(ctx, rec, rb)
        if p.state == "failed":
            return _restart(ctx, name, f"restarted: the snapshot failed ({p.reason}); {rb.reason}", rb, progress)
        if p.state != "done":
            if p.state == "requested" and time.time() - rb.started_at > RESTART_AFTER_S and _connector_running(ctx, rec):
                return _restart(ctx, name, f"restarted: no sign of the snapshot after {RESTART_AFTER_S:.0f}s; "
                                           f"{rb.reason}", rb, progress)
            return "noop", f"generation {rb.generation}: snapshot {p.state}"
    kafka, ctopic = _kafka(ctx), _change_topic(rec)
    if rb.target_offset is None:      # every snapshot read and change so far is at or below it
        rb = rb.model_copy(update={"target_offset": topic_tail.last_data_offset(ctx.settings.kafka_bootstrap, ctopic)})
        ctx.registry.update_mirror(name, deployment=rec.deployment.model_copy(update={"rebuild": rb}))
    target = rb.target_offset or 0
    done = max((kafka.committed(rb.group_id, ctopic) or 0) - 1,
               topic_tail.written_offset(ctx.settings.kafka_bootstrap, names.flat_topic(name, rb.generation),
                              render.seq_base(rec.deployment.seq_epoch)))
    if done < target:
        return "noop", f"generation {rb.generation}: rows read, job at change offset {done} of {target}"
    return switch(ctx, name, progress)


def _after_load(ctx: Context, rec: MirrorRecord, rb: Rebuild, progress: Progress) -> Rebuild | tuple[str, str]:
    """A copy-loaded rebuild without its job yet: the job once the load is done (the result:
    the rebuild with it), else what step() returns (loading; or the rebuild restarted after a
    failed or lost load, abandoned with the mirror in error after MAX_RESUBMITS of them)."""
    from cdc.mirrors import load_progress
    st, p = rebuild_load.phase(ctx, rec, rb)
    if st == "loading":
        return "noop", f"generation {rb.generation}: " + (load_progress.line(p) if p else "load starting")
    if st in ("failed", "lost"):
        why = (p.reason if p and p.reason else "failed") if st == "failed" else \
            f"its process ended (no progress for {rebuild_load.LOAD_STALE_S:.0f}s)"
        if rb.attempts + 1 >= MAX_RESUBMITS:
            abort(ctx, rec.name, f"its load failed {rb.attempts + 1} times, last: {why}; fix the cause, then "
                                 f"`cdc mirror resync {rec.name}` (the mirror answers with its last rows meanwhile)",
                  progress)
            ctx.registry.update_mirror(rec.name, state="error")
            return "done", f"rebuild abandoned: its load keeps failing ({why})"
        return _restart(ctx, rec.name, f"restarted (the load {st}: {why}): {rb.reason}", rb, progress,
                        load=rebuild_load.COPY, attempts=rb.attempts + 1)
    assert rec.deployment is not None
    rb = _submit(ctx, rec, rb.model_copy(update={"loaded_at": time.time()}))
    return rb


def _restart(ctx: Context, name: str, reason: str, rb: Rebuild, progress: Progress, *, load: str | None = None,
             attempts: int = 0) -> tuple[str, str]:
    try:
        new = start(ctx, name, reason, rb.table, rb.filenodes, progress, load=load, attempts=attempts)
    except RebuildDeferred as exc:
        return "noop", exc.message
    return "done", f"rebuild restarted as generation {new.generation}"


def _connector_running(ctx: Context, rec: MirrorRecord) -> bool:
    st = ctx.connect.status(names.connector_name(rec.spec.source))
    return st is not None and st.state == "RUNNING" and all(t.state == "RUNNING" for t in st.tasks)


def switch(ctx: Context, name: str, progress: Progress = lambda _m: None) -> tuple[str, str]:
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None or rec.deployment.rebuild is None:
        return "noop", "no rebuild in flight"
    dep, rb = rec.deployment, rec.deployment.rebuild
    old = dep.generation
    logical = render.render_pinot_logical_table(names.pinot_table(name), names.pinot_physical_table(name, rb.generation))
    checked = "" if pinot_enabled(ctx)[0] else check_logical(ctx, rec, rb, logical)
    if pinot_enabled(ctx)[0]:
        if old == 0:    # generation 0 is the physical table <m>: it must go before <m> can be logical
            ctx.controller.delete_table(names.pinot_physical_table(name, 0))
        # the logical table's schema carries its name: the columns of the generation it routes to
        ctx.controller.add_schema(render.render_pinot_schema(rec.spec, rb.table), override=True, force=True)
        ctx.controller.put_logical_table(logical)
    ctx.registry.update_mirror(name, deployment=deployment_of(dep, rb, time.time()), flink_job_id=rb.job_id)
    took = time.time() - rb.started_at
    ctx.registry.record_event(name, EVENT_SWITCHED, f"generation {old} -> {rb.generation} after {took:.1f}s "
                                                    f"({rb.reason}){checked}")
    progress(f"rebuild {name}: generation {rb.generation} answers ({took:.1f}s)")
    _drop_generation(ctx, rec, old)
    rebuild_gate.release(ctx, name)
    return "done", f"switched to generation {rb.generation} after {took:.1f}s"


def check_logical(ctx: Context, rec: MirrorRecord, rb: Rebuild, logical: dict[str, Any]) -> str:
    """No Pinot server: the switch is the registry write, but the logical table config a
    server would get is still judged by Pinot's own validation (cdc's in-process engine),
    against the new generation's table config and the schemas it needs. Refused -> CdcError
    (the switch does not happen; the reconciler retries with backoff)."""
    from cdc.clients import pinot_engine
    spec = pinot_spec(rec.spec, rb.generation)
    table = render.render_pinot_table(spec, rb.table, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                      flat_topic=names.flat_topic(rec.name, rb.generation))
    schemas = [render.render_pinot_schema(rec.spec, rb.table), render.render_pinot_schema(spec, rb.table)]
    verdict = pinot_engine.default_engine().check_logical(logical, [table], schemas, update=rec.generation > 0)
    if not verdict.ok:
        raise CdcError(f"mirror {rec.name}: Pinot refuses the logical table config of generation {rb.generation}: "
                       f"{'; '.join(verdict.errors + verdict.dropped_keys)}",
                       hint="this is a bug in cdc: report it with the output of `cdc mirror plan`")
    return "; logical table config accepted by Pinot's own validation (in-process, no server)"


def abort(ctx: Context, name: str, why: str, progress: Progress = lambda _m: None, *,
          generation: int | None = None, release_lease: bool = True) -> None:
    """Abandon the rebuild in flight (or generation `generation`, whether or not it is still
    the one in flight): its job, Pinot table and flat topic go; the serving generation and a
    rebuild that superseded it are untouched."""
    with rebuild_gate.local_lock(name):
        rec = ctx.registry.get_mirror(name)
        if rec is None or rec.deployment is None:
            return
        cur = rec.deployment.rebuild
        gen = generation if generation is not None else (cur.generation if cur else None)
        if gen is None:
            return
        if cur is not None and cur.generation == gen:
            rebuild_load.stop(name)         # this process' load of it ends before its topic goes
        _drop_generation(ctx, rec, gen)
        rec = ctx.registry.get_mirror(name) or rec
        if rec.deployment is None or rec.deployment.rebuild is None or rec.deployment.rebuild.generation != gen:
            progress(f"rebuild {name}: generation {gen} removed ({why})")
            return                          # another rebuild is in flight now: it stays
        ctx.registry.update_mirror(name, deployment=rec.deployment.model_copy(update={"rebuild": None}))
        if release_lease:
            rebuild_gate.release(ctx, name)
        ctx.registry.record_event(name, EVENT_ABORTED, f"generation {gen}: {why}")
        progress(f"rebuild {name}: generation {gen} abandoned ({why})")


def _drop_generation(ctx: Context, rec: MirrorRecord, gen: int) -> None:
    """Cancel the generation's jobs, delete its Pinot table and flat topic (each best effort:
    what is left is named in an event)."""
    from cdc.clients.flink import ALIVE_JOB_STATES
    left: list[str] = []
    try:
        for job in ctx.jobmanager.jobs():
            if job.name == names.flink_pipeline(rec.name, gen) and job.state in ALIVE_JOB_STATES:
                ctx.jobmanager.cancel(job.id)
                ctx.jobmanager.wait_ended(job.id)
    except CdcError as exc:
        left.append(f"job: {first_line(exc, 120)}")
    if pinot_enabled(ctx)[0] and gen:
        try:
            ctx.controller.delete_table(names.pinot_physical_table(rec.name, gen))
            ctx.controller.delete_schema(names.pinot_physical_table(rec.name, gen))
        except CdcError as exc:
            left.append(f"pinot: {first_line(exc, 120)}")
    try:
        _kafka(ctx).delete_topic(names.flat_topic(rec.name, gen))
    except CdcError as exc:
        left.append(f"topic: {first_line(exc, 120)}")
    if left:
        ctx.registry.record_event(rec.name, EVENT_PROGRESS, f"generation {gen} not fully removed: {'; '.join(left)}")
