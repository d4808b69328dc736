"""A lost replication slot, repaired: a new slot, a fresh snapshot, keys Postgres no longer has removed.

Postgres invalidates a slot whose restart_lsn falls more than max_slot_wal_keep_size behind
(pg_replication_slots.wal_status = 'lost'): WAL the connector had not read is gone, so every
mirror of the source misses changes, and the connector can never stream from that slot again.
Seen: `cdc mirror status` (slot.lost, exit 1), the metric cdc_slot_lost, and the event
"slot_lost" on each mirror of the source when the reconciler (or `cdc mirror resync`) acts.

The repair, in two steps so that no reconciler pass blocks for a whole snapshot:
start()   events "slot_lost"; the source's running mirrors go to state "resyncing"; the connector
          is deleted (stopped, its offsets reset); the lost slot is dropped; the connector is
          created again without offsets, so Debezium creates a new slot and runs an initial
          snapshot of every table of the source -- read in the slot's exported snapshot, then
          streaming from exactly that point; event "resync_started" naming the notification
          topic's offset from which the snapshot's notifications are read.
finish()  once Debezium reports every resyncing table's scan completed (snapshot notifications):
          cdc.mirrors.prune removes the keys each mirror shows that Postgres no longer has --
          the rows deleted while the slot was lost, which no snapshot can bring back -- and the
          mirrors are "running" again (event "slot_repaired" with the counts). A scan that fails
          puts them in "error" with the reason.
The reconciler runs start() (REPAIR_LOST_SLOT) and then finish() on later passes (FINISH_RESYNC);
`cdc mirror resync NAME` on a source with a lost slot runs both and waits (repair()).

Why the mirrors end exact: the snapshot gives every row that exists at its point a record with
a higher __seq than anything before it, every later change is streamed after it, and the prune
deletes exactly the keys that are gone (its doc argues it). The Flink jobs keep running the whole
time, on the same change topics; the mirrors keep serving their old rows meanwhile. Mirrors of
the source that are paused (or in error) are not resynced: they get the event, and need
`cdc mirror resync` once running again.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.mapping import dbz_names
from cdc.mirrors import prune, snapshot
from cdc.mirrors.context import Context
from cdc.mirrors.lifecycle import create_connector, delete_connector, render_connector_config, tables_of_source
from cdc.mirrors.registry import MirrorRecord
from cdc.mirrors.sources import get_source, source_dsn
from cdc.postgres import catalog, slots

Progress = Callable[[str], None]
STATE = "resyncing"
EVENT_LOST, EVENT_STARTED, EVENT_DONE = "slot_lost", "resync_started", "slot_repaired"
_FROM = re.compile(r"notifications from offset (\d+)")
REPAIR_TIMEOUT = 1800.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start(ctx: Context, source: str, progress: Progress = _say) -> str:
    """Step 1 (module doc). Returns what was done."""
    src = get_source(ctx, source)
    dsn, slot, cname = source_dsn(ctx, src), names.slot_name(src.name), names.connector_name(src.name)
    mirrors = ctx.registry.list_mirrors(source=source)
    recs = [m for m in mirrors if m.state in ("running", STATE)]
    wal = slots.wal_status(dsn, src.name)
    for m in mirrors:
        left = "" if m in recs else f"; this mirror is {m.state}: not resynced, run `cdc mirror resync {m.name}` " \
                                    "once it runs"
        ctx.registry.record_event(m.name, EVENT_LOST, f"replication slot {slot} wal_status={wal}: Postgres removed "
                                  "WAL the connector had not read, changes are missing; repair: new slot, fresh "
                                  f"snapshot of the source's tables, keys Postgres no longer has removed{left}")
    for m in recs:
        ctx.registry.update_mirror(m.name, state=STATE)
    progress(f"connect: deleting {cname}; dropping the lost slot {slot}")
    delete_connector(ctx, cname)
    with catalog.connect(dsn) as conn:
        if not slots.drop_slot_when_idle(conn, slot, 60):
            raise CdcError(f"replication slot {slot} is still in use after {cname} was deleted",
                           hint=f"drop it when idle: SELECT pg_drop_replication_slot('{slot}')")
    notes_from, _ = snapshot.prepare(ctx, src)
    tables, overrides = tables_of_source(ctx, src)
    config = render_connector_config(ctx, src, tables, overrides)
    if src.publication is None and config.get("publish.via.partition.root") == "true":
        slots.ensure_publish_via_root(dsn, src.name)
    progress(f"connect: creating {cname} again: new slot, initial snapshot of {len(tables)} table(s)")
    create_connector(ctx, cname, config)
    detail = (f"connector {cname} created again with a new slot {slot}; initial snapshot of {len(tables)} "
              f"table(s); notifications from offset {notes_from}")
    for m in recs:
        ctx.registry.record_event(m.name, EVENT_STARTED, detail)
    return detail


def _started_at(ctx: Context, rec: MirrorRecord) -> int | None:
    """Notification offset of the repair under way (None: none started since the slot was lost)."""
    for ev in ctx.registry.list_events(rec.name, limit=200):
        if ev.action == EVENT_LOST:
            return None
        if ev.action == EVENT_STARTED and (m := _FROM.search(ev.reason or "")):
            return int(m.group(1))
    return None


def finish(ctx: Context, source: str, progress: Progress = _say) -> tuple[str, str]:
    """Step 2 (module doc): ("done", ...) when repaired, ("noop", why not yet) otherwise."""
    recs = [m for m in ctx.registry.list_mirrors(source=source) if m.state == STATE]
    if not recs:
        return "noop", f"no mirror of source {source} is resyncing"
    offsets = {m.name: _started_at(ctx, m) for m in recs}
    if any(o is None for o in offsets.values()):      # a pass died between "resyncing" and the connector
        return "done", "repair started again: " + start(ctx, source, progress)
    src = get_source(ctx, source)
    topic = names.notification_topic(src.name)
    notes = snapshot.read_notifications(ctx.settings.kafka_bootstrap, topic, min(o or 0 for o in offsets.values()))
    progress_by: dict[str, snapshot.Progress] = {}
    for m in recs:
        p = snapshot.fold(dbz_names.identifier(m.spec.schema_name, m.spec.table_name),
                          [n for off, n in notes if off >= (offsets[m.name] or 0)])
        progress_by[m.name] = p
    failed = {n: p for n, p in progress_by.items() if p.state == "failed"}
    for n, p in failed.items():
        ctx.registry.update_mirror(n, state="error")
        ctx.registry.record_event(n, "snapshot_failed", f"resync after the lost slot: {p.reason}")
    waiting = {n: p.state for n, p in progress_by.items() if p.state != "done" and n not in failed}
    if waiting:
        return "noop", "snapshot under way: " + ", ".join(f"{n} {s}" for n, s in sorted(waiting.items()))
    done = [m for m in recs if m.name not in failed]
    if not done:
        return "done", "every resynced table's snapshot failed: mirrors in state error"
    pruned = prune.prune(ctx, src, done, progress)
    for m in done:
        ctx.registry.update_mirror(m.name, state="running")
        ctx.registry.record_event(m.name, EVENT_DONE, f"fresh snapshot read {progress_by[m.name].rows} rows; "
                                  f"{pruned[m.name]} key(s) Postgres no longer has removed from the mirror")
    return "done", "; ".join(f"{m.name}: {progress_by[m.name].rows} rows re-read, {pruned[m.name]} removed"
                             for m in done)


def repair(ctx: Context, source: str, progress: Progress = _say, timeout: float = REPAIR_TIMEOUT) -> str:
    """start() then finish() until it is done (`cdc mirror resync` without a daemon)."""
    detail = start(ctx, source, progress)
    deadline = time.monotonic() + timeout
    while True:
        status, detail = finish(ctx, source, progress)
        if status == "done" and not detail.startswith("repair started again"):
            return detail
        if time.monotonic() > deadline:
            raise CdcError(f"the repair of source {source}'s lost slot did not end within {timeout:.0f}s: {detail}",
                           hint="the reconciler (cdc serve) finishes it; see `cdc mirror status NAME`")
        progress(detail)
        time.sleep(2.0)
