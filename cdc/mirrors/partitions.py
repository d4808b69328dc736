"""Partitioned tables: the mirror follows partitions created, attached, detached or dropped later.

A partitioned table (declarative RANGE, LIST or HASH partitioning, Postgres 13+) is mirrored
through its root: the publication publishes every partition's changes as the root's
(publish_via_partition_root: Debezium's `publish.via.partition.root` when it creates the
publication, cdc.postgres.slots.ensure_publish_via_root for one that exists), Debezium captures
the root (its include list names the root only), its snapshots read `SELECT * FROM root`, and
a partition is refused by preflight (its changes are the root's). The key is the root's primary
key, which Postgres makes include the partition key, so a row that moves to another partition
(an UPDATE of the partition key: a DELETE in one partition, an INSERT in the other) is a delete
of one key and an insert of another, as in Postgres.

What the WAL does not say. CREATE TABLE ... PARTITION OF creates an empty partition whose rows
then arrive as the root's changes. But ATTACH PARTITION brings the rows a table already had into
`SELECT * FROM root` without a change event for any of them, and DETACH PARTITION (or DROP of a
partition) takes rows out of it without a DELETE. Postgres is the oracle, so the mirror shows
an attached table's existing rows and drops a detached one's:

* The deployment records the leaf partitions (oids) the mirror holds (TableInfo.partition_oids,
  set when the mirror was added). The reconciler compares them with the catalog every pass
  (SYNC_PARTITIONS) and sync() acts on the difference.
* New leaves: REPLICA IDENTITY FULL when the table needs it (each partition logs its own old
  rows), then an incremental snapshot of the root limited to the rows in those leaves
  (Debezium's additional-conditions: `tableoid IN (...)`). The attached rows are read; rows
  written since are streamed, and the incremental snapshot's watermarks keep the newest version
  of a row changed while it is read. A partition created empty costs a scan of itself.
* Leaves gone: cdc.mirrors.prune removes the keys the mirror holds that the root no longer
  has (exact, see there).
* Then the deployment records the new set, and an event "partitions" says what was done. A pass
  that dies before recording repeats both (re-read rows carry the same values; the second prune
  finds nothing).
Limits: a partition detached and attached again between two passes keeps its oid and is not
noticed (changes made to it while detached are missing); a blocking-snapshot name
(cdc.mapping.dbz_names) is re-read in full.
"""

from __future__ import annotations

import logging

from cdc.core.models import Source
from cdc.mapping import dbz_names, render
from cdc.mirrors import prune, snapshot
from cdc.mirrors.context import Context
from cdc.mirrors.registry import MirrorRecord
from cdc.mirrors.sources import get_source, source_dsn
from cdc.postgres import catalog

log = logging.getLogger(__name__)
EVENT = "partitions"


def changed(rec: MirrorRecord, current_oids: list[int] | None) -> bool:
    """The leaf partitions now differ from those the mirror's deployment holds (pure)."""
    if current_oids is None or rec.deployment is None:
        return False
    known = rec.deployment.table.partition_oids
    return known is None or set(known) != set(current_oids)


def sync(ctx: Context, name: str) -> tuple[str, str]:
    """Follow the partitions of mirror `name` (module doc); ("done" | "noop", what was done)."""
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        return "noop", "mirror gone or without a deployment"
    src = get_source(ctx, rec.spec.source)
    spec, dep = rec.spec, rec.deployment
    with catalog.connect(source_dsn(ctx, src)) as conn:
        info = catalog.introspect(conn, spec.schema_name, spec.table_name)
        leaves = {oid: catalog.qualified_name(s_, t_) for oid, s_, t_, _ in
                  (catalog.partitions(conn, info.oid) if info.oid and info.partition_oids is not None else [])}
        if info.partition_oids is None:
            return "noop", f"{spec.qualified} is not partitioned"
        known = dep.table.partition_oids
        done: list[str] = []
        if known is None:
            done.append(f"leaf partitions recorded: {', '.join(leaves.values()) or 'none'}")
        else:
            added = [o for o in info.partition_oids if o not in set(known)]
            gone = [o for o in known if o not in set(info.partition_oids)]
            if added:
                new = ", ".join(leaves[o] for o in added)
                if render.needs_full_identity(info) and info.replica_identity != "full":
                    catalog.set_replica_identity_full(conn, spec.schema_name, spec.table_name)
                    done.append("REPLICA IDENTITY FULL set on the new partitions")
                sig = _snapshot_rows_of(ctx, src, rec, added)
                done.append(f"new partition(s) {new}: Debezium reads their rows (signal {sig})")
            if gone:
                found = dict(conn.execute("SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                                          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)",
                                          (gone,)).fetchall())
                left = ", ".join(found.get(o, f"oid {o} (dropped)") for o in gone)
                n = prune.prune(ctx, src, [rec], progress=log.info)[name]
                done.append(f"partition(s) {left} left {spec.qualified}: {n} key(s) no longer in it removed "
                            "from the mirror")
    ctx.registry.update_mirror(name, deployment=dep.model_copy(
        update={"table": dep.table.model_copy(update={"partition_oids": info.partition_oids})}))
    detail = "; ".join(done) or "nothing to do"
    ctx.registry.record_event(name, EVENT, detail)
    return "done", detail


def _snapshot_rows_of(ctx: Context, src: Source, rec: MirrorRecord, oids: list[int]) -> str:
    """An incremental snapshot of the root's rows that live in these leaf partitions."""
    table = (rec.spec.schema_name, rec.spec.table_name)
    if dbz_names.snapshot_type(*table) != "incremental":      # a blocking snapshot reads it all
        return snapshot.send_signal(ctx, src, [table])
    return snapshot.send_signal(ctx, src, [table],
                                filters={table: f"tableoid IN ({', '.join(str(int(o)) for o in oids)})"})
