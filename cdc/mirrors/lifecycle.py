"""Mirrors: plan, add and remove, in an order that leaves nothing half-made.

add_mirror orders the steps so that a failure leaves nothing half-made:
  1. preflight + render all artifacts (pure; nothing created yet)
  2. check that Connect, Flink and Pinot answer
  3. flat topic -> Pinot schema/table -> Flink job -> REPLICA IDENTITY FULL (cdc sets it:
     Debezium's autoset cannot spell most names) -> connector config -> snapshot signal
Every step that creates something registers its undo BEFORE it runs, in memory and in the
registry (cdc.mirrors.rollback: a process killed mid-step leaves its journal); any error runs
the undos in reverse (undo()) and removes the registry row, then re-raises. While add and
remove run they heartbeat their mirror's row; one left "creating"/"removing" by a dead
process is resumed or rolled back by the reconciler (cdc.mirrors.recovery).
  4. wait until Debezium says the table's snapshot is under way (cdc/mirrors/snapshot.py):
     only then state "running"; a snapshot that is skipped, fails or stalls leaves the
     mirror in state "error" with an event saying why (nothing is undone: resync or remove).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.core import names
from cdc.core.errors import (first_line, CdcError, ConfigError, ConflictError, NotFoundError, PreflightError, RemoteError,
                             TransientRemoteError, UnreachableError)
from cdc.core.models import MirrorRules, MirrorSpec, Source, TableInfo
from cdc.mapping import render
from cdc.mirrors import initial_load, rollback, rules_check, snapshot, state
from cdc.mirrors.context import Context, pinot_enabled
from cdc.mirrors.registry import Deployment, MirrorRecord
from cdc.mirrors.sources import get_source, password_ref, publication_of, source_dsn
from cdc.postgres import catalog, slots

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- plan --------------------------------------------------------------------------------

@dataclass
class MirrorPlan:
    spec: MirrorSpec
    table: TableInfo
    source: Source
    connector: dict[str, Any]
    flink_sql: list[str]
    pinot_schema: dict[str, Any]
    pinot_table: dict[str, Any]
    change_topic: str
    flat_topic: str
    notes: list[str] = field(default_factory=list)
    filenodes: dict[str, int] | None = None      # the table's storage at plan time (TRUNCATE changes it)


def tables_of_source(ctx: Context, src: Source, extra: MirrorSpec | None = None,
                      exclude: str | None = None) -> tuple[list[TableInfo], dict[str, list[str]]]:
    """TableInfo for every mirrored table of the source (the connector's include list),
    plus the --key overrides by schema.table. A mirror's table that was dropped or renamed
    (its mirror is in error, cdc.mirrors.schema_change) is left out: there is nothing to follow,
    and its mirror must stay removable."""
    specs = [m.spec for m in ctx.registry.list_mirrors(source=src.name) if m.name != exclude]
    if extra is not None and all(sp.qualified != extra.qualified for sp in specs):
        specs.append(extra)
    tables = []
    with catalog.connect(source_dsn(ctx, src)) as conn:
        for sp in specs:
            try:
                tables.append(catalog.introspect(conn, sp.schema_name, sp.table_name))
            except NotFoundError:
                if sp is extra:
                    raise
    overrides = {sp.qualified: list(sp.key_columns) for sp in specs if sp.key_columns}
    return tables, overrides


def render_connector_config(ctx: Context, src: Source, tables: list[TableInfo], overrides: dict[str, list[str]],
                            extra: MirrorSpec | None = None) -> dict:
    """`extra`: a mirror being planned, whose column rules are not in the registry yet."""
    table_rules, salt = rules_check.connector_rules(ctx, src, extra)
    return render.render_connector(src, tables, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                   password_ref=password_ref(ctx, src), key_overrides=overrides,
                                   table_rules=table_rules, mask_salt=salt,
                                   producer_batch_bytes=ctx.settings.connect_producer_batch_bytes)


def plan_mirror(ctx: Context, schema: str, table: str, *, source: str = names.DEFAULT_SOURCE, name: str | None = None,
                key: list[str] | None = None, replica_identity_full: bool = False,
                rules: MirrorRules | None = None) -> MirrorPlan:
    """Preflight and render the three artifacts. Creates nothing. replica_identity_full: the
    user accepts REPLICA IDENTITY FULL for a --key table (add_mirror sets it after preflight).
    rules: the mirror's column rules, checked here by Flink's planner and Pinot's validation
    (cdc.mirrors.rules_check) so that a bad one is refused before anything exists."""
    if name is not None:
        names.check_mirror_name(name)
    src = get_source(ctx, source)
    spec = MirrorSpec(name=name or names.mirror_name(schema, table, source), source=source, schema_name=schema,
                      table_name=table, key_columns=key, rules=rules or MirrorRules())
    with catalog.connect(source_dsn(ctx, src)) as conn:
        info = catalog.preflight(conn, schema, table, key, slot_name=names.slot_name(src.name),
                                 publication=src.publication,
                                 accept_replica_identity_full=replica_identity_full and bool(key))
        nodes = catalog.filenodes(conn, info.oid)
    _refuse_topic_collision(ctx, spec)
    ctopic, ftopic = names.change_topic(source, schema, table), names.flat_topic(spec.name)
    s = ctx.settings
    flink_args = {"kafka_bootstrap": s.kafka_bootstrap, "change_topic": ctopic, "flat_topic": ftopic,
                  "group_id": names.flink_group(spec.name)}

    def artifacts(sp: MirrorSpec) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        return (render.render_flink_sql(sp, info, **flink_args), render.render_pinot_schema(sp, info),
                render.render_pinot_table(sp, info, kafka_bootstrap=s.kafka_bootstrap, flat_topic=ftopic))
    spec = rules_check.check_rules(ctx, spec, info, flink_args, artifacts)   # types computed columns
    flink_sql, pinot_schema, pinot_table = artifacts(spec)
    tables, overrides = tables_of_source(ctx, src, extra=spec)
    return MirrorPlan(
        spec=spec, table=info, source=src,
        connector=render_connector_config(ctx, src, tables, overrides, extra=spec),
        flink_sql=flink_sql, pinot_schema=pinot_schema, pinot_table=pinot_table,
        change_topic=ctopic, flat_topic=ftopic, filenodes=nodes)


def _refuse_topic_collision(ctx: Context, spec: MirrorSpec) -> None:
    """Debezium names a change topic after schema and table with every character outside
    [A-Za-z0-9._-] replaced by "_", so public."a b" and public.a_b would share one topic and
    each mirror would ingest the other's rows. Refuse the second one, before anything exists."""
    topic = names.change_topic(spec.source, spec.schema_name, spec.table_name)
    for other in ctx.registry.list_mirrors(source=spec.source):
        o = other.spec
        if (o.schema_name, o.table_name) != (spec.schema_name, spec.table_name) and \
                names.change_topic(o.source, o.schema_name, o.table_name) == topic:
            raise ConflictError(
                f"{catalog.qualified_name(spec.schema_name, spec.table_name)} would share Debezium's change topic "
                f"{topic} with {catalog.qualified_name(o.schema_name, o.table_name)} (mirror {other.name}): "
                "Debezium replaces characters outside [A-Za-z0-9._-] in topic names with '_'",
                hint="rename one of the tables, or mirror it through another source (cdc source add ...)")


# -- add -------------------------------------------------------------------------------

def _check_reachable(ctx: Context, with_pinot: bool) -> None:
    """Fail before creating anything when a system the mirror needs does not answer."""
    ctx.connect.list_connectors()
    ctx.gateway.info()
    overview = ctx.jobmanager.overview() or {}
    if overview.get("slots-available", 1) < 1:
        raise ConfigError(f"Flink has no free task slot ({overview.get('slots-total', 0)} slots, all used): "
                          "the mirror's job could never run",
                          hint="raise CDC_FLINK_TASKMANAGER_SLOTS (and CDC_FLINK_TASKMANAGER_MEMORY), then "
                               "restart the TaskManager, or remove unused mirrors")
    if with_pinot and not ctx.controller.health():
        raise UnreachableError(f"Pinot controller at {ctx.settings.controller_url}", "health check failed",
                               hint="is Pinot running? `cdc stack status`")


def _source_clock(ctx: Context, src: Source) -> Any:
    with catalog.connect(source_dsn(ctx, src)) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _wait_task_restarted(ctx: Context, src: Source, cname: str, spec: MirrorSpec, timeout: float = 120,
                         since: Any = None) -> None:
    """Wait until the connector's task runs with the new table list. Debezium rewrites its
    filtered publication (ALTER PUBLICATION ... SET TABLE) when a task starts, so the new
    table showing up in the publication proves the old task is gone: a snapshot signal
    sent now is read by a task that captures the table. A DBA-managed publication already
    holds the table, so there the proof is the slot's WAL sender: one started after `since`
    (the source's clock before the config change) belongs to a task with the new config."""
    pub = publication_of(src)
    deadline = time.monotonic() + timeout
    with catalog.connect(source_dsn(ctx, src)) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
                               "AND tablename = %s", (pub, spec.schema_name, spec.table_name)).fetchone()
            if row and src.publication is not None and since is not None:
                row = conn.execute("SELECT 1 FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = "
                                   "s.active_pid WHERE s.slot_name = %s AND a.backend_start > %s",
                                   (names.slot_name(src.name), since)).fetchone()
            st = ctx.connect.status(cname)
            if row and st is not None and st.running:
                return
            if st is not None and st.failed:
                raise CdcError(f"connector {cname} failed while adding {spec.qualified}: {st.failure_summary()}",
                               hint="see `cdc stack logs connect`")
            time.sleep(0.5)
    raise CdcError(f"connector {cname} did not restart with {spec.qualified} within {timeout:.0f}s",
                   hint=f"check `cdc stack logs connect` and GET /connectors/{cname}/status")


def create_connector(ctx: Context, cname: str, config: dict[str, Any]) -> None:
    """Create a connector with no history: Connect keeps source offsets by connector name
    even after a delete, and a new connector must not resume from an LSN of a slot that no
    longer exists. So: create STOPPED, reset offsets, then resume."""
    ctx.connect.create_stopped(cname, config)
    ctx.connect.wait_state(cname, "STOPPED")
    ctx.connect.delete_offsets(cname)
    ctx.connect.resume(cname)


def delete_connector(ctx: Context, cname: str) -> None:
    """Stop, forget offsets, delete: nothing of the connector survives it."""
    if ctx.connect.status(cname) is None:
        return
    ctx.connect.stop(cname)
    ctx.connect.wait_state(cname, "STOPPED")
    ctx.connect.delete_offsets(cname)
    ctx.connect.delete(cname)


def send_snapshot_signal(ctx: Context, src: Source, tables: list[tuple[str, str]]) -> str:
    """Ask Debezium for an incremental snapshot of these (schema, table)s only (others keep
    streaming), each named as Debezium's signal parser reads it; returns the signal id."""
    return snapshot.send_signal(ctx, src, tables)


def _ensure_full_identity(ctx: Context, src: Source, table: TableInfo, progress: Progress) -> None:
    """REPLICA IDENTITY FULL before the table joins the connector, set by cdc itself: Debezium's
    autoset spells the name unquoted (cdc.mapping.dbz_names). Not the owner: fatal only for a
    keyless table, else Debezium's reselect post-processor re-reads unchanged TOAST values."""
    if not render.needs_full_identity(table) or table.replica_identity == "full":
        return
    name = catalog.qualified_name(table.schema_name, table.table_name)
    with catalog.connect(source_dsn(ctx, src)) as conn:
        if catalog.introspect(conn, table.schema_name, table.table_name).replica_identity == "full":
            return                              # set since the plan (--replica-identity-full)
        progress(f"postgres: ALTER TABLE {name} REPLICA IDENTITY FULL")
        try:
            catalog.set_replica_identity_full(conn, table.schema_name, table.table_name)
        except PreflightError as exc:
            if not table.primary_key:
                raise
            progress(f"postgres: {exc.message}; unchanged TOAST values will be re-read (reselect)")


def add_mirror(ctx: Context, schema: str, table: str, *, source: str = names.DEFAULT_SOURCE, name: str | None = None,
               key: list[str] | None = None, replica_identity_full: bool = False,
               rules: MirrorRules | None = None, progress: Progress = _say, load: str | None = None,
               on_load: initial_load.OnLoad | None = None) -> MirrorRecord:
    """Create the mirror. replica_identity_full: the user accepts ALTER TABLE ... REPLICA
    IDENTITY FULL on a --key table (done only when preflight says it is what is missing).
    load: how the existing rows are read, "copy" or "debezium" (default CDC_INITIAL_LOAD;
    cdc.mirrors.initial_load); on_load: the copy load's progress, about once a second."""
    plan = plan_mirror(ctx, schema, table, source=source, name=name, key=key,
                       replica_identity_full=replica_identity_full, rules=rules)
    spec, src = plan.spec, plan.source
    existing = ctx.registry.get_mirror(spec.name)
    if existing is not None:
        if existing.spec == spec:
            progress(f"mirror {spec.name} already exists with the same spec: nothing to do")
            return existing
        raise ConflictError(f"mirror {spec.name} exists with a different spec",
                            hint=f"remove it first (cdc mirror remove {spec.name}) or choose --name")
    use_pinot, why = pinot_enabled(ctx)
    _check_reachable(ctx, use_pinot)
    from cdc.clients.kafka import KafkaAdmin
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    _refuse_kept_clear_values(plan, kafka)
    cname = names.connector_name(src.name)
    if ctx.connect.get_config(cname) is not None:   # its task restarts: not in the middle of a snapshot
        snapshot.wait_idle(ctx, cname, progress)
    # a flat topic kept by an earlier `mirror remove` (without --drop-data) still holds rows
    # that Postgres may have deleted since: they are pruned once the snapshot is read
    kept = plan.flat_topic in kafka.topics() and sum(kafka.end_offsets(plan.flat_topic).values()) > 0
    choice = initial_load.choose(load, ctx.settings.initial_load, spec, plan.table, kafka,
                                 plan.change_topic, plan.flat_topic)
    if choice.why:
        progress(f"load: Debezium's snapshot instead of the copy load: {choice.why}")
    ctx.registry.add_mirror(spec, state="creating", connector_name=cname)
    with rollback.heartbeat(ctx, spec.name):          # the reconciler's sign that this add is alive
        journal = rollback.Journal(ctx, spec.name)    # each undo registered BEFORE its step runs
        try:
            record, request = _create(ctx, plan, journal, kafka, use_pinot, why, replica_identity_full and bool(key),
                                      progress, choice, on_load)
        except BaseException as exc:
            progress(f"mirror {spec.name}: failed ({first_line(exc, 200)}); undoing what was created")
            undo(ctx, spec.name, journal.steps, progress)
            ctx.registry.remove_mirror(spec.name)
            raise
        rollback.fault("created")
        # Outside the undo: a snapshot that fails now leaves the mirror in state "error" (+ event).
        record = snapshot.confirm(ctx, record, src, request, progress) if request is not None else \
            ctx.registry.update_mirror(spec.name, state="running")
    if kept and record.state == "running":
        _prune_kept(ctx, src, record, progress)
    return record


def _prune_kept(ctx: Context, src: Source, record: MirrorRecord, progress: Progress) -> None:
    """The mirror was added over a kept flat topic: once the snapshot has re-read every row,
    remove the keys Postgres deleted while no mirror followed the table (cdc.mirrors.prune:
    deletes through the change topic while the connector is stopped). Queries never see a
    half-empty table: nothing is cleared, only rows Postgres no longer has are deleted."""
    from cdc.mirrors import prune
    progress(f"mirror {record.name}: flat topic {names.flat_topic(record.name, record.generation)} was kept from an earlier mirror: "
             "removing the keys Postgres no longer has once the snapshot is read")
    removed = prune.prune(ctx, src, [ctx.registry.get_mirror(record.name) or record], progress)
    ctx.registry.record_event(record.name, "pruned", f"{removed.get(record.name, 0)} key(s) Postgres no longer has "
                                                     "removed from the kept flat topic")


def _refuse_kept_clear_values(plan: MirrorPlan, kafka: Any) -> None:
    """A mirror that masks or leaves out columns must not start over topics that an earlier
    mirror of the table left (`cdc mirror remove` without --drop-data keeps them): the new job
    replays the compacted change topic from its start and the flat topic stays as it is, so the
    clear values they hold would reach the new mirror. Refused before anything is created."""
    from cdc.mapping.rules import hidden_columns
    spec = plan.spec
    hidden = hidden_columns(spec.rules, plan.table, render.key_columns(spec, plan.table))
    if not hidden:
        return
    present = kafka.topics()
    kept = [t for t in (plan.change_topic, plan.flat_topic) if t in present and sum(kafka.end_offsets(t).values()) > 0]
    if kept:
        raise ConflictError(
            f"mirror {spec.name} masks or leaves out {', '.join(sorted(hidden))}, but Kafka topic(s) {', '.join(kept)} "
            f"already hold records of {spec.qualified}, kept by an earlier `cdc mirror remove` without --drop-data, "
            "where those columns may be in clear: the new mirror would replay them. Nothing was created",
            hint=f"delete the topic(s) first (kafka-topics.sh --bootstrap-server {kafka.bootstrap} --delete --topic "
                 "NAME), or add the earlier mirror back as it was and remove it with `cdc mirror remove NAME "
                 "--drop-data`; then add this mirror")


def _submit_job(ctx: Context, spec: MirrorSpec, flink_sql: list[str], journal: rollback.Journal,
                progress: Progress) -> tuple[str, float]:
    progress(f"flink: submitting the flatten job for {spec.qualified}")
    deployed_at = time.time()
    journal.register("cancel_jobs", pipeline=names.flink_pipeline(spec.name))
    job_id = ctx.gateway.submit_job(flink_sql, {"pipeline.name": names.flink_pipeline(spec.name)})
    rollback.fault("job_submitted")
    return job_id, deployed_at


def _create(ctx: Context, plan: MirrorPlan, journal: rollback.Journal, kafka: Any, use_pinot: bool, why: str,
            set_full: bool, progress: Progress, choice: initial_load.Choice,
            on_load: initial_load.OnLoad | None) -> tuple[MirrorRecord, snapshot.Request | None]:
    """The steps of add_mirror that create something, each after registering its undo."""
    spec, src = plan.spec, plan.source
    schema, table, cname = spec.schema_name, spec.table_name, names.connector_name(src.name)
    if set_full and plan.table.replica_identity != "full":
        # every check passed: only now change the table (and say so; undone on failure)
        if plan.table.replica_identity == "default":
            journal.register("identity_default", source=src.name, schema=schema, table_name=table)
        with catalog.connect(source_dsn(ctx, src)) as conn:
            progress(f"postgres: ALTER TABLE {catalog.qualified_name(schema, table)} REPLICA IDENTITY FULL")
            catalog.set_replica_identity_full(conn, schema, table)
    if src.publication is None:   # with a DBA-managed publication the DBA created them (preflight checked)
        with catalog.connect(source_dsn(ctx, src)) as conn:
            for stmt in render.bootstrap_sql(src.name):
                conn.execute(stmt)
    # The change topic must exist before the Flink job subscribes to it; one partition,
    # because __seq (the ordering column) is this topic's offset. A topic that exists already
    # (kept by a remove without --drop-data) is not ours to delete.
    existing = kafka.topics()
    for topic, partitions in ((plan.change_topic, 1), (plan.flat_topic, ctx.settings.flat_topic_partitions)):
        if topic not in existing:
            journal.register("delete_topic", topic=topic)
        kafka.ensure_topic(topic, partitions, render.TOPIC_CONFIG)
    # The ordering column's epoch: 0 for a new flat topic; above every record of a kept one
    # (a remove without --drop-data, then add), whatever the change topic's offsets are now.
    epoch = 0 if plan.flat_topic not in existing else state.epoch_above(ctx.settings.kafka_bootstrap,
                                                                              plan.flat_topic)
    if epoch and plan.change_topic in existing:
        epoch -= 1      # the same change topic (offsets continue above the kept rows): same epoch
    flink_sql = plan.flink_sql if epoch == 0 else render.render_flink_sql(
        spec, plan.table, kafka_bootstrap=ctx.settings.kafka_bootstrap, change_topic=plan.change_topic,
        flat_topic=plan.flat_topic, group_id=names.flink_group(spec.name), seq_epoch=epoch)
    if epoch:
        progress(f"kafka: {plan.flat_topic} exists with records: this mirror writes in epoch {epoch} above them")
    topic_id = (kafka.describe([plan.change_topic]).get(plan.change_topic) or (None, 0))[0]
    dead = names.dead_letter_topic(spec.name)       # rows the job cannot convert (kept: no compaction)
    if dead not in existing:
        journal.register("delete_topic", topic=dead)
    kafka.ensure_topic(dead, 1, render.DEAD_LETTER_TOPIC_CONFIG)
    if use_pinot and ctx.controller.get_table(spec.name) is not None:
        # kept by a `mirror remove` without --drop-data: it goes on reading the kept flat topic
        # (its rows are pruned and re-read like the topic's); never ours to delete on a rollback
        progress(f"pinot: REALTIME table {spec.name} kept from an earlier mirror: schema updated, table reused")
        ctx.controller.add_schema(plan.pinot_schema, override=True)
    elif use_pinot:
        progress(f"pinot: schema and REALTIME upsert table {spec.name}")
        journal.register("delete_pinot", name=spec.name)
        ctx.controller.add_schema(plan.pinot_schema, override=True)
        ctx.controller.add_table(plan.pinot_table)
    else:
        progress(f"pinot: skipped ({why}); the mirror ends at Kafka topic {plan.flat_topic}")
    # the copy load: a marker in the change topic, the job's group set to start right after it;
    # the job itself starts once the rows are loaded (cdc.mirrors.initial_load)
    start = initial_load.begin(kafka, spec, plan.change_topic, epoch, progress) if choice.copy else None
    if start is None:
        job_id, deployed_at = _submit_job(ctx, spec, flink_sql, journal, progress)
    _ensure_full_identity(ctx, src, plan.table, progress)
    if names.notification_topic(src.name) not in kafka.topics():
        journal.register("delete_topic", topic=names.notification_topic(src.name))
    notes_from, _ = snapshot.prepare(ctx, src)
    if src.publication is None and plan.connector.get("publish.via.partition.root") == "true" \
            and slots.ensure_publish_via_root(source_dsn(ctx, src), src.name):
        progress(f"postgres: publication {names.publication_name(src.name)} now publishes partitions through "
                 "their root (publish_via_partition_root)")
    previous = ctx.connect.get_config(cname)
    progress(f"connect: {'updating' if previous else 'creating'} connector {cname}")
    journal.register("connector", source=src.name, connector=cname)
    request: snapshot.Request | None = None
    since = _source_clock(ctx, src)
    pid_before = slots.active_pid(source_dsn(ctx, src), src.name) if start is not None else None
    if previous:
        ctx.connect.put_config(cname, plan.connector)
        rollback.fault("connector_configured")
        _wait_task_restarted(ctx, src, cname, spec, since=since)
        if start is None:
            tables = [(spec.schema_name, spec.table_name)]
            request = snapshot.Request(snapshot.signal_kind(tables), notes_from, send_snapshot_signal(ctx, src, tables))
            progress(f"debezium: {request.kind} snapshot of {spec.qualified} requested (signal {request.signal_id})")
    else:   # with the copy load, Debezium reads no rows itself (no_data); later renders say initial again
        create_connector(ctx, cname, plan.connector if start is None else {**plan.connector, **initial_load.NO_DATA})
        rollback.fault("connector_configured")
        if start is None:    # (copy: wait_streaming waits, and says why: a new slot waits for open transactions)
            ctx.connect.wait_running(cname, timeout=120)
            request = snapshot.Request("initial", notes_from)
            progress(f"debezium: connector {cname} running; waiting for its initial snapshot of {spec.qualified}")
    if start is not None:
        initial_load.wait_streaming(ctx, src, spec, since, progress, pid_before=pid_before)
        initial_load.load(ctx, src, spec, plan.table, start, progress, on_load)
        job_id, deployed_at = _submit_job(ctx, spec, flink_sql, journal, progress)
    # what the job runs with: the reconciler compares it with the table (schema_change)
    deployment = Deployment(table=plan.table, group_id=names.flink_group(spec.name), deployed_at=deployed_at,
                            seq_epoch=epoch, change_topic_id=topic_id, filenodes=plan.filenodes)
    record = ctx.registry.update_mirror(spec.name, flink_job_id=job_id,   # "running" once confirmed
                                        deployment=deployment)
    ctx.registry.record_event(spec.name, rollback.EVENT_CREATED, f"flink job {job_id}; connector {cname}")
    return record, request


# -- undo ------------------------------------------------------------------------------

_ENDED_JOB_STATES = frozenset({"CANCELED", "FAILED", "FINISHED"})
UNDO_ATTEMPTS = 5


def undo(ctx: Context, mirror: str, steps: list[rollback.Step], progress: Progress) -> list[str]:
    """Run an add's undo steps (cdc.mirrors.rollback) newest first, each on its own (one that
    fails does not stop the rest); returns what could not be undone."""
    failed: list[str] = []
    for step in reversed(steps):
        try:
            for attempt in range(1, UNDO_ATTEMPTS + 1):
                try:
                    _undo_step(ctx, mirror, step)
                    break
                except (TransientRemoteError, UnreachableError):   # e.g. Connect rebalancing after the add's PUT
                    if attempt == UNDO_ATTEMPTS:
                        raise
                    time.sleep(2.0 * attempt)
            progress(f"  undone: {step.describe()}")
        except Exception as exc:  # keep undoing the rest
            failed.append(f"{step.describe()}: {first_line(exc, 200)}")
            progress(f"  could not {step.describe()}: {exc}")
    return failed


def _undo_step(ctx: Context, mirror: str, step: rollback.Step) -> None:
    """Idempotent, and harmless when the step never ran or only half ran."""
    from cdc.clients.kafka import KafkaAdmin
    a = step.args
    if step.kind == "delete_topic":
        KafkaAdmin(ctx.settings.kafka_bootstrap).delete_topic(a["topic"])
    elif step.kind == "delete_pinot":
        if pinot_enabled(ctx)[0]:
            ctx.controller.delete_table(a["name"])
            ctx.controller.delete_schema(a["name"])
    elif step.kind == "cancel_jobs":            # the job id is only known once the submit returned
        cancelled = [job.id for job in ctx.jobmanager.jobs()
                     if job.name == a["pipeline"] and job.state not in _ENDED_JOB_STATES]
        for jid in cancelled:
            ctx.jobmanager.cancel(jid)
        for jid in cancelled:                  # undone means gone: no job left CANCELLING behind
            ctx.jobmanager.wait_ended(jid)
    elif step.kind == "connector":              # rendered from the registry: other adds since stay
        src, cname = get_source(ctx, a["source"]), a["connector"]
        if any(m.name != mirror for m in ctx.registry.list_mirrors(source=src.name)):
            if ctx.connect.get_config(cname) is not None:
                snapshot.wait_idle(ctx, cname, lambda _m: None)
            tables, overrides = tables_of_source(ctx, src, exclude=mirror)
            ctx.connect.put_config(cname, render_connector_config(ctx, src, tables, overrides))
        else:
            delete_connector(ctx, cname)
            slots.drop_slot_and_publication(source_dsn(ctx, src), src.name, drop_publication=src.publication is None)
    elif step.kind == "identity_default":
        _identity_default(ctx, get_source(ctx, a["source"]), a["schema"], a["table_name"])
    else:
        raise ValueError(f"unknown undo step {step.kind!r}")


# -- remove ------------------------------------------------------------------------------

def _identity_default(ctx: Context, src: Source, schema: str, table: str) -> None:
    from psycopg import sql
    with catalog.connect(source_dsn(ctx, src)) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY DEFAULT").format(sql.Identifier(schema),
                                                                                sql.Identifier(table)))


def get_mirror(ctx: Context, name: str) -> MirrorRecord:
    rec = ctx.registry.get_mirror(name)
    if rec is None:
        known = ", ".join(m.name for m in ctx.registry.list_mirrors()) or "none"
        raise NotFoundError(f"unknown mirror {name!r} (known: {known})", hint="list them: cdc mirror list")
    return rec


def remove_mirror(ctx: Context, name: str, *, drop_data: bool = False, progress: Progress = _say) -> None:
    from cdc.clients.kafka import KafkaAdmin
    rec = get_mirror(ctx, name)
    spec = rec.spec
    src = get_source(ctx, spec.source)
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    # Tell the reconciler this mirror is going away, or it would restore the cancelled job; and
    # how, should this process die half-way (cdc.mirrors.rollback finishes the remove then).
    ctx.registry.record_event(name, rollback.EVENT_REMOVE, json.dumps({"drop_data": drop_data}))
    ctx.registry.update_mirror(name, state="removing")
    with rollback.heartbeat(ctx, name):
        _remove(ctx, rec, src, kafka, drop_data, progress)
    ctx.registry.remove_mirror(name)
    ctx.registry.record_event(name, "removed", "drop-data" if drop_data else None)
    progress(f"mirror {name} removed")


def _remove(ctx: Context, rec: MirrorRecord, src: Source, kafka: Any, drop_data: bool, progress: Progress) -> None:
    name, spec, cname = rec.name, rec.spec, names.connector_name(src.name)
    if rec.flink_job_id:
        progress(f"flink: cancelling job {rec.flink_job_id}")
        try:
            ctx.jobmanager.cancel(rec.flink_job_id)
        except RemoteError as exc:
            progress(f"flink: job {rec.flink_job_id} could not be cancelled ({exc}); continuing")
    try:   # a job whose add was cut off before it recorded the job's id
        for job in ctx.jobmanager.jobs():
            if names.is_pipeline_of(job.name, name) and job.state not in _ENDED_JOB_STATES \
                    and job.id != rec.flink_job_id:
                ctx.jobmanager.cancel(job.id)
    except RemoteError as exc:
        progress(f"flink: could not list the mirror's jobs ({exc}); continuing")
    rollback.fault("remove_job_cancelled")
    others = [m for m in ctx.registry.list_mirrors(source=src.name) if m.name != name]
    if others:
        tables, overrides = tables_of_source(ctx, src, exclude=name)
        progress(f"connect: removing {spec.qualified} from connector {cname} and its publication")
        snapshot.wait_idle(ctx, cname, progress)          # its task restarts: not mid-snapshot
        ctx.connect.put_config(cname, render_connector_config(ctx, src, tables, overrides))
    else:
        progress(f"connect: last mirror of source {src.name}: deleting connector {cname}, its slot and publication")
        delete_connector(ctx, cname)
        slots.drop_slot_and_publication(source_dsn(ctx, src), src.name, drop_publication=src.publication is None)
        prefix = names.internal_topic_prefix(src.name)
        for topic in kafka.topics():   # the source's own _cdc.* change topics and heartbeats
            if topic.startswith(prefix) or topic == names.heartbeat_topic(src.name):
                kafka.delete_topic(topic)
    if drop_data:
        use_pinot, _ = pinot_enabled(ctx)
        gens = sorted({rec.generation} | ({rec.deployment.rebuild.generation}
                                          if rec.deployment and rec.deployment.rebuild else set()))
        if use_pinot:
            progress(f"pinot: dropping table and schema {name}")
            if rec.generation:
                ctx.controller.delete_logical_table(names.pinot_table(name))
            for g in gens:
                ctx.controller.delete_table(names.pinot_physical_table(name, g))
                ctx.controller.delete_schema(names.pinot_physical_table(name, g))
        for g in gens:
            kafka.delete_topic(names.flat_topic(name, g))
        kafka.delete_topic(names.dead_letter_topic(name))
        kafka.delete_topic(names.change_topic(src.name, spec.schema_name, spec.table_name))
