"""What the reconciler does with a mirror whose add or remove was cut off (cdc.mirrors.rollback).

A mirror left "creating" or "removing" whose row nobody has touched for `stuck_after_s`
belongs to a process that died. recover():
* remove cut off: finish it (remove_mirror with --drop-data as it was asked; it is idempotent);
* add cut off after it recorded "created" (everything made; it was waiting for Debezium to
  confirm the snapshot): resume -- "running" when the snapshot is under way or done, "error"
  when it failed, and when Debezium never reported it, the snapshot is requested again;
* add cut off earlier: roll back its journal (every undo was registered before its step ran),
  newest first, and remove the registry row.
The mirror is re-checked first (its process may have touched it since the plan), and touched
before the rollback starts, so a second reconciler does not take it over as well.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from cdc.mapping import dbz_names
from cdc.mirrors import lifecycle, load_progress, rollback, snapshot
from cdc.mirrors.context import Context
from cdc.mirrors.sources import get_source

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def recover(ctx: Context, name: str, bound: float, now: float, progress: Progress = log.info) -> tuple[str, str]:
    rec = ctx.registry.get_mirror(name)
    if rec is None or not rollback.is_stuck(rec.state, rec.updated_at, now, bound):
        return "noop", "no longer stuck"
    age = rollback.age_s(rec.updated_at, now)
    if rec.state == "removing":
        drop = next((bool(json.loads(ev.reason or "{}").get("drop_data")) for ev in
                     ctx.registry.list_events(name, limit=200) if ev.action == rollback.EVENT_REMOVE), False)
        ctx.registry.record_event(name, "recovered", f"remove cut off {age:.0f}s ago: finishing it (drop_data={drop})")
        lifecycle.remove_mirror(ctx, name, drop_data=drop, progress=progress)
        return "done", f"remove finished (drop_data={drop}) after {age:.0f}s without a sign of life"
    steps, created = rollback.journal_of(ctx, name, since=rec.created_at)
    if created:
        return "done", _resume(ctx, name, age)
    ctx.registry.update_mirror(name)            # taken over: fresh for any other reconciler
    failed = lifecycle.undo(ctx, name, steps, progress)
    ctx.registry.remove_mirror(name)
    detail = (f"add cut off {age:.0f}s ago before everything was made: rolled back {len(steps) - len(failed)} of "
              f"{len(steps)} step(s) ({'; '.join(s.describe() for s in reversed(steps)) or 'nothing made'})"
              + (f"; could not: {'; '.join(failed)}" if failed else ""))
    ctx.registry.record_event(name, "rolled_back", detail)
    return "done", detail


def _resume(ctx: Context, name: str, age: float) -> str:
    rec = lifecycle.get_mirror(ctx, name)
    load = load_progress.read(ctx.settings.registry_file, name, rec.created_at)
    if load is not None and load.state == "done":      # "created" comes after the copy load and the job
        ctx.registry.update_mirror(name, state="running")
        detail = f"add cut off {age:.0f}s ago after everything was made (rows read by the copy load): resumed"
        ctx.registry.record_event(name, "recovered", detail)
        return detail
    src = get_source(ctx, rec.spec.source)
    p = snapshot.progress_of(ctx, rec, src)
    if p.state == "failed":
        ctx.registry.update_mirror(name, state="error")
        ctx.registry.record_event(name, "snapshot_failed", p.reason)
        return f"add cut off {age:.0f}s ago after everything was made; its snapshot failed: {p.reason}"
    if p.state in snapshot.UNDER_WAY:
        what = f"its snapshot is {p.state}"
    else:
        table = (rec.spec.schema_name, rec.spec.table_name)
        what = (f"no sign of its snapshot from Debezium: {dbz_names.snapshot_type(*table)} snapshot requested "
                f"(signal {snapshot.send_signal(ctx, src, [table])})")
    ctx.registry.update_mirror(name, state="running")
    detail = f"add cut off {age:.0f}s ago after everything was made: resumed, {what}"
    ctx.registry.record_event(name, "recovered", detail)
    ctx.registry.record_event(name, "snapshot_started", f"{p.kind or 'incremental'} snapshot {p.state} (recovered)")
    return detail
