"""Schema changes of a mirrored table: detect them, follow ADD COLUMN in place, refuse the rest loudly.

A mirror's Flink job has a fixed column list (the table as it was when the SQL was rendered),
kept in the registry as the mirror's Deployment. The reconciler compares it with the table in
the catalog now (diff() is pure) and:

* ADD COLUMN of nullable columns without a non-NULL default (or DEFAULT NULL, which Postgres
  does not even store) -> follow(): redeploy the flatten job with the new column list.
  Existing rows read NULL for the new column, exactly as in Postgres.
* anything else (DROP / RENAME COLUMN, a type change, a changed primary key, ADD COLUMN with
  a default, generated or identity column, or of a type cdc cannot map) -> mark_unsupported():
  state "error", and an event naming the change and the fix. Those change rows Debezium never
  re-emits (a default fills every existing row without a WAL change per row), or change the
  mirror's key or types, which an in-place redeploy cannot make exact.

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
from cdc.core.errors import CdcError, PreflightError
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


@dataclass(frozen=True)
class Current:
    """The table as the catalog describes it now, plus the columns that have a default."""

    table: TableInfo
    defaulted: frozenset[str] = frozenset()


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
    for k, c in old.items():
        n = new.get(k)
        if n is None:
            ch.dropped.append(c.name)
        elif n.name != c.name:
            ch.renamed.append((c.name, n.name))
        elif n.type_name != c.type_name:
            ch.retyped.append((c.name, c.type_name, n.type_name))
    for k, c in new.items():
        if k in old:
            continue
        ch.added.append(c)
        if c.name in current.defaulted:
            ch.refused_added.append((c.name, "added with a default (or generated / identity): Postgres fills "
                                             "existing rows without a change event for each"))
            continue
        try:
            map_column(c)
        except PreflightError as exc:
            ch.refused_added.append((c.name, exc.message if hasattr(exc, "message") else str(exc)))
    if not (spec and spec.key_columns) and list(deployed.primary_key) != list(current.table.primary_key):
        ch.key = (list(deployed.primary_key), list(current.table.primary_key))
    return ch


def fix_hint(rec: MirrorRecord) -> str:
    key = f" --key {','.join(rec.spec.key_columns)}" if rec.spec.key_columns else ""
    return (f"cdc mirror remove {rec.name} --drop-data, then cdc mirror add {rec.spec.schema_name} "
            f"{rec.spec.table_name} --source {rec.spec.source} --name {rec.name}{key}")


# -- observe -------------------------------------------------------------------------------

def current_of(conn: Any, rec: MirrorRecord) -> Current:
    info = catalog.introspect(conn, rec.spec.schema_name, rec.spec.table_name)
    defaulted = frozenset(r[0] for r in conn.execute(_DEFAULTED_SQL, (info.oid,)).fetchall())
    return Current(info, defaulted)


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
                                   flat_topic=names.flat_topic(spec.name), group_id=dep.group_id,
                                   seq_epoch=dep.seq_epoch)


def _live_jobs(ctx: Context, rec: MirrorRecord) -> list[str]:
    """Every live job of the mirror: the recorded one and any carrying its pipeline name
    (e.g. submitted by a pass that died before recording it)."""
    from cdc.mirrors.ops import ALIVE_JOB_STATES
    ids = [j.id for j in ctx.jobmanager.jobs()
           if j.state in ALIVE_JOB_STATES and j.name == names.flink_pipeline(rec.name)]
    if rec.flink_job_id and rec.flink_job_id not in ids and \
            ctx.jobmanager.job_state(rec.flink_job_id) in ALIVE_JOB_STATES:
        ids.append(rec.flink_job_id)
    return ids


def redeploy(ctx: Context, rec: MirrorRecord, dep: Deployment) -> tuple[str, list[str], float]:
    """Replace the mirror's job by one deployed as `dep` (stamped now): every live job of the
    mirror cancelled and gone first, then the new one submitted and recorded. Returns the new
    job id, the cancelled ones and the seconds the submit took."""
    from cdc.mirrors.ops import _wait_job_ended
    cancelled = _live_jobs(ctx, rec)
    for jid in cancelled:
        ctx.jobmanager.cancel(jid)
    for jid in cancelled:
        _wait_job_ended(ctx, jid)
    dep = dep.model_copy(update={"deployed_at": time.time()})
    started = time.monotonic()
    job = ctx.gateway.submit_job(flink_sql(ctx, rec, dep), {"pipeline.name": names.flink_pipeline(rec.name)})
    ctx.registry.update_mirror(rec.name, flink_job_id=job, deployment=dep)
    return job, cancelled, time.monotonic() - started


def _pinot_add_columns(ctx: Context, rec: MirrorRecord, table: TableInfo) -> str:
    """On a real Pinot: the schema gains the column (a backward-compatible update), then a
    reload gives existing segments its default (NULL). In-process reads render the schema from
    the catalog, so there is nothing to push."""
    if not pinot_enabled(ctx)[0]:
        return "Pinot read in-process (schema follows the catalog)"
    ctx.controller.add_schema(render.render_pinot_schema(rec.spec, table), override=True)
    ctx.controller.reload_table(rec.name)
    return f"Pinot schema {rec.name} updated and table reloaded"


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
        return mark_unsupported(ctx, rec, ch)
    pinot = _pinot_add_columns(ctx, rec, cur.table)
    # the partitions stay as last followed (cdc.mirrors.partitions acts on the difference)
    table = cur.table.model_copy(update={"partition_oids": rec.deployment.table.partition_oids})
    dep = rec.deployment.model_copy(update={"table": table, "group_id": new_group_id(name)})
    job, cancelled, took = redeploy(ctx, rec, dep)
    topic = names.change_topic(rec.spec.source, rec.spec.schema_name, rec.spec.table_name)
    detail = (f"job(s) {', '.join(cancelled) or 'none alive'} cancelled, then job {job} submitted "
              f"({took:.1f}s) reading {topic} "
              f"from its earliest offset with new consumer group {dep.group_id}; {pinot}")
    ctx.registry.record_event(name, EVENT, f"followed: {ch.describe()}; {ch.columns_text()}; {detail}")
    return "done", detail


def mark_unsupported(ctx: Context, rec: MirrorRecord, ch: Change) -> tuple[str, str]:
    """State "error" (the reconciler stops repairing it) with an event naming change and fix."""
    msg = (f"NOT followed: {ch.describe()}; {ch.columns_text()}; the mirror keeps its old columns and is no "
           f"longer exact; fix: {fix_hint(rec)}")
    ctx.registry.update_mirror(rec.name, state="error")
    ctx.registry.record_event(rec.name, EVENT, msg)
    return "done", msg


def refuse(ctx: Context, name: str) -> tuple[str, str]:
    """Re-check an unsupported change against the catalog now, then mark the mirror "error"."""
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        return "noop", "mirror gone or without a deployment"
    with catalog.connect(source_dsn(ctx, get_source(ctx, rec.spec.source))) as conn:
        ch = diff(rec.deployment.table, current_of(conn, rec), rec.spec)
    if not ch or ch.followable:
        return "noop", "changed again since the plan; the next pass decides"
    return mark_unsupported(ctx, rec, ch)


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
