"""Schema changes of a mirrored table: detect them, follow what can be followed in place,
rebuild the rest without a gap, stop on what cdc cannot mirror.

A mirror's Flink job has a fixed column list (the table as it was when the SQL was rendered),
kept in the registry as the mirror's Deployment with the table's storage (relfilenode per
table or partition). The reconciler compares it with the table in the catalog now (decide()
is pure; WHAT_IT_DOES says what each outcome does; `cdc mirror plan` shows it):

* ADD COLUMN of nullable columns without a non-NULL default (or DEFAULT NULL, which Postgres
  does not even store) -> follow(): redeploy the flatten job with the new column list.
  Existing rows read NULL for the new column, exactly as in Postgres.
* a type change the job and Pinot read alike (varchar(n) -> text, numeric precision up) ->
  recorded in place.
* everything else a mirror can hold (DROP / RENAME COLUMN, ADD COLUMN with a default, a type
  Pinot cannot change in place, a new key) and any replaced storage (TRUNCATE, table
  rewrites) -> a rebuild (cdc.mirrors.rebuild): a new generation from a fresh snapshot, switched
  to when complete. Those are changes Debezium never re-emits per row (a default fills every
  existing row without a WAL change, TRUNCATE is skipped by the connector) or that change the
  mirror's key or types, which an in-place redeploy cannot make exact.
* a column of a type cdc cannot map, or a key gone -> state schema_blocked until fixed (the
  mirror keeps its last good rows); a dropped / renamed / re-created table -> state error.

Where the new job starts (the restart point). Events written between the ALTER and the
redeploy already carry the new column in Debezium's `after`, but the old job ignored it, and
its committed offsets / checkpoints are past them. The new job therefore reads the change
topic with a NEW consumer group (no committed offsets, so 'group-offsets' + auto.offset.reset
= earliest starts at the earliest offset) and from no checkpoint: a full replay. It is exact
and idempotent: __seq is the change-topic offset, so every replayed record carries the same
__seq as before and Pinot's FULL upsert (highest __seq per key, ties go to the later arrival)
keeps the newest change per key; deletes are records, never tombstones, so a replayed insert
cannot revive a deleted key (its __seq is lower, and deleted keys stay tracked). The change
topic is compacted, so the replay is bounded by one record per key (plus the uncompacted
head). A later offset would be just as correct only if we knew the first offset written with
the new column; the ALTER is not in the change topic, so the earliest offset is the one
restart point that is safe without guessing.

Order: the old job is cancelled and seen ended BEFORE the new one is submitted. An overlap
would not be harmless here: for events after the ALTER the old job writes records without the
new column under the same __seq as the new job's records, and on a tie the later arrival wins,
so a lagging old job could overwrite the new values. With cancel-first every flat-topic
partition holds all of the old job's records before any of the new job's. Changes committed
in the gap wait in the change topic; the mirror keeps serving its last state meanwhile.

Restore points: the redeployed job must never resume from a checkpoint of the old job (it would
skip the events the old job read without the column). Deployment.deployed_at bounds them
(cdc.mirrors.ops.latest_restore_point), and a restore renders the SQL from the deployment's
table, so a restore alone never changes the column list (that is this module's job).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cdc.core import names
from cdc.core.errors import CdcError, NotFoundError, PreflightError
from cdc.core.models import Column, MirrorSpec, TableInfo
from cdc.mapping import render
from cdc.mapping.typemap import map_column
from cdc.mirrors.context import Context, pinot_enabled
from cdc.mirrors.registry import Deployment, MirrorRecord
from cdc.mirrors.sources import get_source, source_dsn
from cdc.postgres import catalog

EVENT = "schema_change"

#: Columns whose existing rows are filled without a per-row WAL change (or never streamed):
#: a stored default (atthasdef; also generated columns), a fast default (atthasmissing), identity.
_DEFAULTED_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND (a.atthasdef OR a.atthasmissing OR a.attgenerated <> '' OR a.attidentity <> '')
"""


_BY_OID_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s
"""

# What a change asks for (decide()).
FOLLOW = "follow"            # nullable ADD COLUMN: redeploy the job with the new columns
IN_PLACE = "in_place"        # same Flink and Pinot types (varchar(n) -> text, numeric precision up)
REBUILD = "rebuild"          # cdc.mirrors.rebuild: a new generation from a fresh snapshot
UNSUPPORTED = "unsupported"  # a column cdc cannot map: the mirror stops (schema_blocked) until fixed
GONE = "gone"                # the table was dropped or renamed
RECORD = "record_storage"    # a deployment without the table's storage recorded yet
BLOCKED_STATE = "schema_blocked"


@dataclass(frozen=True)
class Current:
    """The table as the catalog describes it now, plus the columns that have a default, its
    storage (relfilenode per oid) and, for a table no longer there, what became of it."""

    table: TableInfo
    defaulted: frozenset[str] = frozenset()
    filenodes: dict[str, int] = field(default_factory=dict)
    gone: str | None = None


@dataclass
class Change:
    """deployed -> current. Empty (falsy) when nothing that the job depends on changed."""

    added: list[Column] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)
    key: tuple[list[str], list[str]] | None = None
    refused_added: list[tuple[str, str]] = field(default_factory=list)   # (column, why it cannot follow)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.renamed or self.retyped or self.key)

    unmappable: list[tuple[str, str]] = field(default_factory=list)   # (column, why) of new/retyped columns
    in_place_types: bool = False    # every type change keeps the column's Flink and Pinot types

    @property
    def followable(self) -> bool:
        """Only nullable-without-default additions: the redeploy makes the mirror exact."""
        return bool(self.added) and not (self.dropped or self.renamed or self.retyped or self.key
                                         or self.refused_added)

    def describe(self) -> str:
        parts = [f"added {c.name} {c.type_name}" for c in self.added]
        parts += [f"dropped {n}" for n in self.dropped]
        parts += [f"renamed {a} -> {b}" for a, b in self.renamed]
        parts += [f"type of {n} {a} -> {b}" for n, a, b in self.retyped]
        if self.key:
            parts.append(f"key {self.key[0]} -> {self.key[1]}")
        parts += [f"{n}: {why}" for n, why in self.refused_added]
        return "; ".join(parts)

    def columns_text(self) -> str:
        return f"before [{', '.join(self.before)}]; after [{', '.join(self.after)}]"


def _cols(t: TableInfo) -> list[Column]:
    return sorted(t.columns, key=lambda c: c.position)


def _ident(c: Column) -> Any:
    """attnum survives RENAME and ALTER TYPE and is never reused; the name is a fallback for
    tables described without positions."""
    return c.position or c.name


def diff(deployed: TableInfo, current: Current, spec: MirrorSpec | None = None) -> Change:
    """What changed between the table the job was deployed with and the table now (pure)."""
    old = {_ident(c): c for c in _cols(deployed)}
    new = {_ident(c): c for c in _cols(current.table)}
    ch = Change(before=[f"{c.name} {c.type_name}" for c in _cols(deployed)],
                after=[f"{c.name} {c.type_name}" for c in _cols(current.table)])
    same_types = True
    for k, c in old.items():
        n = new.get(k)
        if n is None:
            ch.dropped.append(c.name)
        elif n.name != c.name:
            ch.renamed.append((c.name, n.name))
        elif n.type_name != c.type_name:
            ch.retyped.append((c.name, c.type_name, n.type_name))
            same_types = _mapped(n, ch) and _same_mapping(c, n) and same_types
    ch.in_place_types = bool(ch.retyped) and same_types
    for k, c in new.items():
        if k in old:
            continue
        ch.added.append(c)
        if c.name in current.defaulted:
            ch.refused_added.append((c.name, "added with a default (or generated / identity): Postgres fills "
                                             "existing rows without a change event for each"))
            continue
        if not _mapped(c, ch):
            ch.refused_added.append(ch.unmappable[-1])
    if not (spec and spec.key_columns) and list(deployed.primary_key) != list(current.table.primary_key):
        ch.key = (list(deployed.primary_key), list(current.table.primary_key))
    return ch


def _mapped(c: Column, ch: Change) -> bool:
    try:
        map_column(c)
        return True
    except PreflightError as exc:
        ch.unmappable.append((c.name, getattr(exc, "message", None) or str(exc)))
        return False


def _same_mapping(old: Column, new: Column) -> bool:
    """The job and Pinot see no difference: same Flink row/output types, same conversion, same
    Pinot type (varchar(10) -> text, numeric(10,2) -> numeric(12,2)). Pinot changes no column's
    type in place ("a new table has to be created", Pinot's schema-evolution docs): int -> bigint
    (INT -> LONG) is a rebuild."""
    a, b = map_column(old), map_column(new)
    return (a.flink_row_type, a.flink_type, a.pinot_type, a.conversion, a.single_value, a.field_kind) == \
        (b.flink_row_type, b.flink_type, b.pinot_type, b.conversion, b.single_value, b.field_kind)


def decide(dep: Deployment, cur: Current, spec: MirrorSpec | None = None) -> tuple[str | None, Change, str]:
    """What to do about the table now vs what the mirror runs with (pure): (kind or None, the
    column change, why). Storage is compared for the oids both know (partitions come and go
    through cdc.mirrors.partitions)."""
    ch = diff(dep.table, cur, spec)
    if cur.gone:
        return GONE, ch, cur.gone
    if ch.unmappable:
        cols = "; ".join(f"{n}: {why}" for n, why in ch.unmappable)
        return UNSUPPORTED, ch, f"column(s) cdc cannot mirror: {cols}"
    if ch.key and not cur.table.primary_key:
        return UNSUPPORTED, ch, "the table has no primary key any more (add one, or re-add the mirror with --key)"
    if spec and spec.key_columns and any(k in ch.dropped or k in dict(ch.renamed) for k in spec.key_columns):
        return UNSUPPORTED, ch, f"a --key column ({', '.join(spec.key_columns)}) was dropped or renamed"
    if dep.filenodes is None:     # deployed before storage was recorded: no rewrite can be ruled out
        if ch:
            return (FOLLOW if ch.followable else REBUILD), ch, ch.describe()
        return (RECORD if cur.filenodes else None), ch, "table storage not recorded yet"
    rewritten = sorted(o for o, f in cur.filenodes.items() if o in dep.filenodes and dep.filenodes[o] != f)
    if rewritten:
        why = ("the table's storage was replaced (TRUNCATE, or a rewrite: ALTER COLUMN TYPE, a volatile "
               "DEFAULT, VACUUM FULL, CLUSTER)")
        return REBUILD, ch, why + (f"; {ch.describe()}" if ch else "")
    if not ch:      # a partition attached since: its storage becomes part of the baseline
        new = set(cur.filenodes) - set(dep.filenodes)
        return (RECORD if new else None), ch, (f"storage of {len(new)} new partition(s) not recorded" if new else "")
    return _by_columns(ch), ch, ch.describe()


def _by_columns(ch: Change) -> str:
    if ch.followable:
        return FOLLOW
    if not (ch.added or ch.dropped or ch.renamed or ch.key) and ch.in_place_types:
        return IN_PLACE
    return REBUILD


WHAT_IT_DOES = {
    FOLLOW: "redeploy the flatten job with the new column(s) in place; existing rows read NULL, as in Postgres",
    IN_PLACE: "record the new type(s): the job and Pinot read them alike, nothing is redeployed",
    REBUILD: "rebuild into a new generation (fresh snapshot + live stream) while the current one answers, "
             "then switch to it: no gap",
    UNSUPPORTED: "stop following (state schema_blocked): the mirror keeps its last good rows until the column is "
                 "fixed or left out",
    GONE: "mark the mirror error with the fix; nothing is removed",
    RECORD: "record the table's storage (relfilenodes) as the baseline for TRUNCATE detection",
}


def pending(ctx: Context, name: str) -> dict[str, Any] | None:
    """What the reconciler will do about the mirror's table as it is now (None: nothing)."""
    rec, _cur, d = _now(ctx, name)
    if rec is None or d is None or d[0] is None:
        return None
    kind, ch, why = d
    return {"action": kind, "why": why, "what_it_does": WHAT_IT_DOES[kind], "before": ch.before, "after": ch.after}


# -- observe -------------------------------------------------------------------------------

def current_of(conn: Any, rec: MirrorRecord) -> Current:
    """The table now; a table no longer found under the mirror's name is described by what
    became of the oid the mirror was deployed with (gone: dropped / renamed / re-created)."""
    try:
        info = catalog.introspect(conn, rec.spec.schema_name, rec.spec.table_name)
    except NotFoundError:
        return Current(rec.deployment.table if rec.deployment else _empty(rec), gone=_fate(conn, rec))
    if rec.deployment is not None and rec.deployment.table.oid and info.oid != rec.deployment.table.oid:
        return Current(info, gone=(f"table {rec.spec.qualified} was dropped and created again (oid "
                                   f"{rec.deployment.table.oid} -> {info.oid}): the mirror's connector, publication "
                                   f"and rows belong to the old table"))
    defaulted = frozenset(r[0] for r in conn.execute(_DEFAULTED_SQL, (info.oid,)).fetchall())
    return Current(info, defaulted, catalog.filenodes(conn, info.oid))


def _empty(rec: MirrorRecord) -> TableInfo:
    return TableInfo(schema_name=rec.spec.schema_name, table_name=rec.spec.table_name, columns=[], primary_key=[])


def _fate(conn: Any, rec: MirrorRecord) -> str:
    oid = rec.deployment.table.oid if rec.deployment else None
    row = conn.execute(_BY_OID_SQL, (oid,)).fetchone() if oid else None
    if row is None:
        return f"table {rec.spec.qualified} was dropped"
    return f"table {rec.spec.qualified} was renamed to {catalog.qualified_name(row[0], row[1])}"


def observe_tables(ctx: Context, mirrors: list[MirrorRecord]) -> dict[str, Current]:
    """Current table of each mirror, one connection per source; a source or table that does
    not answer is left out (unknown, never "changed")."""
    out: dict[str, Current] = {}
    by_source: dict[str, list[MirrorRecord]] = {}
    for m in mirrors:
        by_source.setdefault(m.spec.source, []).append(m)
    for source, recs in by_source.items():
        try:
            with catalog.connect(source_dsn(ctx, get_source(ctx, source))) as conn:
                for m in recs:
                    try:
                        out[m.name] = current_of(conn, m)
                    except CdcError:
                        pass
        except Exception:  # Postgres down: the next pass looks again
            continue
    return out


# -- deploy --------------------------------------------------------------------------------

def new_group_id(name: str, now: float | None = None) -> str:
    """A consumer group no job has used: it has no committed offsets, so the job starts at
    the change topic's earliest offset."""
    return f"{names.flink_group(name)}-d{int((now or time.time()) * 1000)}"


def flink_sql(ctx: Context, rec: MirrorRecord, dep: Deployment) -> list[str]:
    spec = rec.spec
    return render.render_flink_sql(spec, dep.table, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                   change_topic=names.change_topic(spec.source, spec.schema_name, spec.table_name),
                                   flat_topic=names.flat_topic(spec.name, dep.generation), group_id=dep.group_id,
                                   seq_epoch=dep.seq_epoch, generation=dep.generation)


def _live_jobs(ctx: Context, rec: MirrorRecord) -> list[str]:
    """Every live job of the mirror: the recorded one and any carrying its pipeline name
    (e.g. submitted by a pass that died before recording it)."""
    from cdc.clients.flink import ALIVE_JOB_STATES
    ids = [j.id for j in ctx.jobmanager.jobs()
           if j.state in ALIVE_JOB_STATES and j.name == names.flink_pipeline(rec.name, rec.generation)]
    if rec.flink_job_id and rec.flink_job_id not in ids and \
            ctx.jobmanager.job_state(rec.flink_job_id) in ALIVE_JOB_STATES:
        ids.append(rec.flink_job_id)
    return ids


def redeploy(ctx: Context, rec: MirrorRecord, dep: Deployment) -> tuple[str, list[str], float]:
    """Replace the mirror's job by one deployed as `dep` (stamped now): every live job of the
    mirror cancelled and gone first, then the new one submitted and recorded. Returns the new
    job id, the cancelled ones and the seconds the submit took."""
    cancelled = _live_jobs(ctx, rec)
    for jid in cancelled:
        ctx.jobmanager.cancel(jid)
    for jid in cancelled:
        ctx.jobmanager.wait_ended(jid)
    dep = dep.model_copy(update={"deployed_at": time.time()})
    started = time.monotonic()
    job = ctx.gateway.submit_job(flink_sql(ctx, rec, dep),
                                 {"pipeline.name": names.flink_pipeline(rec.name, dep.generation)})
    ctx.registry.update_mirror(rec.name, flink_job_id=job, deployment=dep)
    return job, cancelled, time.monotonic() - started


def _pinot_add_columns(ctx: Context, rec: MirrorRecord, table: TableInfo) -> str:
    """On a real Pinot: the schema gains the column (a backward-compatible update), then a
    reload gives existing segments its default (NULL). In-process reads render the schema from
    the deployment, so there is nothing to push. A rebuilt mirror's table is <m>_g<N> (its own
    schema), behind the logical table <m> (whose schema follows too)."""
    if not pinot_enabled(ctx)[0]:
        return "Pinot read in-process (schema follows the deployment)"
    from cdc.mirrors.rebuild import pinot_spec
    physical = names.pinot_physical_table(rec.name, rec.generation)
    ctx.controller.add_schema(render.render_pinot_schema(pinot_spec(rec.spec, rec.generation), table), override=True)
    if physical != rec.name:
        ctx.controller.add_schema(render.render_pinot_schema(rec.spec, table), override=True)
    ctx.controller.reload_table(physical)
    return f"Pinot schema {physical} updated and table reloaded"


def _now(ctx: Context, name: str) -> tuple[MirrorRecord | None, Current | None,
                                           tuple[str | None, Change, str] | None]:
    """The mirror, its table now and decide() on it (the plan may be seconds old)."""
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        return rec, None, None
    with catalog.connect(source_dsn(ctx, get_source(ctx, rec.spec.source))) as conn:
        cur = current_of(conn, rec)
    target = rec.deployment.rebuild
    dep = rec.deployment if target is None else rec.deployment.model_copy(
        update={"table": target.table, "filenodes": target.filenodes})
    return rec, cur, decide(dep, cur, rec.spec)


def act(ctx: Context, name: str, kind: str) -> tuple[str, str]:
    """Carry out what decide() asks for, re-checked now; the planned kind only says why we came."""
    rec, cur, d = _now(ctx, name)
    if rec is None or cur is None or d is None:
        return "noop", "mirror gone or without a deployment"
    now, ch, why = d
    if now is None:
        if rec.state == BLOCKED_STATE:       # changed back: what it missed meanwhile is re-read
            return _rebuild(ctx, rec, cur, ch, "the unsupported change was undone")
        return "noop", "nothing changed (any more)"
    if now != kind:
        return "noop", f"changed again since the plan ({kind} -> {now}); the next pass decides"
    if now == FOLLOW and rec.deployment and rec.deployment.rebuild is None and rec.state != BLOCKED_STATE:
        return follow(ctx, name)
    if now == IN_PLACE and rec.deployment and rec.deployment.rebuild is None and rec.state != BLOCKED_STATE:
        return _in_place(ctx, rec, cur, ch)
    if now == RECORD:
        return _record_storage(ctx, rec, cur)
    if now == UNSUPPORTED:
        return _block(ctx, rec, ch, why)
    if now == GONE:
        return _gone(ctx, rec, why)
    return _rebuild(ctx, rec, cur, ch, why)


def _rebuild(ctx: Context, rec: MirrorRecord, cur: Current, ch: Change, why: str) -> tuple[str, str]:
    from cdc.mirrors import rebuild
    try:
        rb = rebuild.start(ctx, rec.name, f"schema change: {why}", cur.table, cur.filenodes)
    except rebuild.RebuildDeferred as exc:
        return "noop", exc.message
    if rec.state == BLOCKED_STATE:      # only once the rebuild that re-reads what it missed is under way
        ctx.registry.update_mirror(rec.name, state="running")
    ctx.registry.record_event(rec.name, EVENT, f"rebuild (generation {rb.generation}): {why}; {ch.columns_text()}")
    return "done", f"rebuild started: generation {rb.generation}"


def _in_place(ctx: Context, rec: MirrorRecord, cur: Current, ch: Change) -> tuple[str, str]:
    """Types changed, but neither the job nor Pinot sees a difference: the deployment records
    the new types (and the storage decide() compared), nothing is redeployed."""
    assert rec.deployment is not None
    table = cur.table.model_copy(update={"partition_oids": rec.deployment.table.partition_oids})
    ctx.registry.update_mirror(rec.name, deployment=rec.deployment.model_copy(
        update={"table": table, "filenodes": cur.filenodes or rec.deployment.filenodes}))
    ctx.registry.record_event(rec.name, EVENT, f"in place: {ch.describe()}; {ch.columns_text()}; the job and "
                                               "Pinot read the same types, nothing redeployed")
    return "done", f"in place: {ch.describe()}"


def _record_storage(ctx: Context, rec: MirrorRecord, cur: Current) -> tuple[str, str]:
    assert rec.deployment is not None
    ctx.registry.update_mirror(rec.name, deployment=rec.deployment.model_copy(update={"filenodes": cur.filenodes}))
    return "done", f"table storage recorded ({len(cur.filenodes)} relfilenode(s))"


def _block(ctx: Context, rec: MirrorRecord, ch: Change, why: str) -> tuple[str, str]:
    """State schema_blocked: nothing is torn down, the mirror keeps answering with its last
    good rows, the reconciler leaves its job alone and looks again every pass; a fix in
    Postgres (or leaving the column out) resumes it through a rebuild."""
    if rec.state == BLOCKED_STATE:
        return "noop", "still blocked"
    msg = (f"NOT followed: {why}; {ch.columns_text()}; the mirror keeps its last good rows and resumes "
           f"(through a rebuild) once the table is back to a shape cdc can mirror: give the column a supported "
           f"type (ALTER TABLE ... ALTER COLUMN ... TYPE ...) or drop it, or restore the key")
    ctx.registry.update_mirror(rec.name, state=BLOCKED_STATE)
    ctx.registry.record_event(rec.name, EVENT, msg)
    return "done", msg


def _gone(ctx: Context, rec: MirrorRecord, why: str) -> tuple[str, str]:
    """The table is no longer there under its name: state error with the fix; nothing is
    removed (the mirror keeps its rows until the user removes it)."""
    if rec.state == "error":
        return "noop", "already marked"
    msg = (f"{why}; the mirror keeps its last rows and no longer follows anything; fix: cdc mirror remove "
           f"{rec.name} (--drop-data to delete its rows too), and cdc mirror add for the table under its new name")
    ctx.registry.update_mirror(rec.name, state="error")
    ctx.registry.record_event(rec.name, "table_gone", msg)
    return "done", msg


def follow(ctx: Context, name: str) -> tuple[str, str]:
    """Redeploy the mirror's job for added columns (re-checked against the catalog now).
    Idempotent: nothing to do once the deployment holds the columns; a pass that died
    half-way is finished by the next one (cancel is a no-op, a stray job is cancelled)."""
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        return "noop", "mirror gone or without a deployment"
    with catalog.connect(source_dsn(ctx, get_source(ctx, rec.spec.source))) as conn:
        cur = current_of(conn, rec)
    ch = diff(rec.deployment.table, cur, rec.spec)
    if not ch:
        return "noop", "the job already has every column"
    if not ch.followable:
        return "noop", "changed again since the plan; the next pass decides"
    pinot = _pinot_add_columns(ctx, rec, cur.table)
    # the partitions stay as last followed (cdc.mirrors.partitions acts on the difference)
    table = cur.table.model_copy(update={"partition_oids": rec.deployment.table.partition_oids})
    dep = rec.deployment.model_copy(update={"table": table, "group_id": new_group_id(name)})
    topic = names.change_topic(rec.spec.source, rec.spec.schema_name, rec.spec.table_name)
    if dep.start_offset:      # a rebuilt generation: replay from where it began, not from the earliest
        from cdc.clients.kafka import KafkaAdmin
        KafkaAdmin(ctx.settings.kafka_bootstrap).commit(dep.group_id, topic, dep.start_offset)
    job, cancelled, took = redeploy(ctx, rec, dep)
    detail = (f"job(s) {', '.join(cancelled) or 'none alive'} cancelled, then job {job} submitted "
              f"({took:.1f}s) reading {topic} "
              f"from offset {dep.start_offset} (where this generation began) with new consumer group {dep.group_id}; "
              f"{pinot}")
    ctx.registry.record_event(name, EVENT, f"followed: {ch.describe()}; {ch.columns_text()}; {detail}")
    return "done", detail


def record_baseline(ctx: Context, name: str) -> tuple[str, str]:
    """A mirror created before deployments were kept: take the table as it is now as what its
    job runs with (the best knowledge there is), keeping the job's original consumer group."""
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is not None:
        return "noop", "deployment already recorded"
    with catalog.connect(source_dsn(ctx, get_source(ctx, rec.spec.source))) as conn:
        cur = current_of(conn, rec)
    dep = Deployment(table=cur.table, group_id=names.flink_group(name), deployed_at=0.0)
    ctx.registry.update_mirror(name, deployment=dep)
    return "done", f"deployed columns recorded as the table is now: {', '.join(dep.columns())}"
