"""A rebuild's rows by the copy load: generation N+1 filled by parallel COPY readers.

`cdc mirror resync` and the rebuilds of schema changes (cdc.mirrors.rebuild) read the table's
existing rows the way `mirror add` does (CDC_INITIAL_LOAD=copy, the default;
cdc.mirrors.initial_load), not through Debezium's incremental snapshot, when the table allows
it (initial_load.choose_for_table) -- ~6x faster here (bench/README.md "Initial load").

Order (rebuild.start, then rebuild.step on every reconciler pass):
  1. start: the connector has confirmed the WAL written before the rebuild began
     (rebuild_gate.wait_streamed_up_to_now; else the rebuild is deferred);
  2. start: a marker appended to the change topic at offset M; generation N+1's fresh
     consumer group committed at J = M + 1;
  3. the load: every row, rendered by Postgres as the flat record the job would write, with
     __seq = seq_base + M, into cdc.flat.<m>.g<N+1>; inline (`cdc mirror resync`, which shows
     its progress) or in a thread of the daemon (a schema change), so other mirrors' passes
     go on; its progress is the mirror's load progress file (cdc.mirrors.load_progress);
  4. step: once the load is done, the job, from J; the change topic's last data record then
     is the target;
  5. step: the switch, once the job has written the target (rebuild.switch).

Why generation N+1 is exact, per key k. The table was in the publication all along, so every
write to it is published, and the change topic holds its events in commit order.
* Every change committed before the rebuild began is below M (1: the connector confirms a
  position once Kafka acknowledged its events, and M is appended after). The DDL that caused
  the rebuild is among them, and ALTER TABLE's ACCESS EXCLUSIVE lock lets no write of the old
  shape commit after it: every event above M has the columns the job is rendered with.
* Let w be k's last write. If its event is above M, the job writes it with __seq =
  seq_base + offset > seq_base + M, and nothing later for k exists: Pinot's upsert keeps it
  (a delete included). If w's event is below M, w committed before the marker was appended,
  so before every reader took its snapshot (after 2): the load read k's final state, the row
  or its absence, and no event of k sits above M. A key absent from Postgres is never written:
  the topic starts empty, which is what TRUNCATE needs (its rows' inserts are below M, and the
  TRUNCATE, which Debezium skips, needs no event).
* Each reader takes its own snapshot per range: a key moved by an update during the load may
  be read twice or not at all, but it changed after a reader's snapshot, so after M: its
  streamed change, the whole row, wins.
* Kafka compaction keeps a key's last record: the job starts once Kafka acknowledged every
  loaded record (4), so a key's loaded record precedes its streamed ones.
Operation. One process drives a rebuild (rebuild_gate.lease: a registry lease per mirror, which
the load extends while it runs). A load stops (its readers end, unsent records are dropped)
when this process gives the rebuild up (stop(), before abort() drops the topic) or when the
registry no longer has its rebuild in flight (Watch: superseded or abandoned elsewhere, the
mirror removed). A load that fails, or whose process died (its progress file not updated for
LOAD_STALE_S), restarts the rebuild under a new generation number up to
rebuild.MAX_RESUBMITS times, then the mirror goes to state error naming the load's failure;
`cdc mirror resync` undoes its rebuild and says why.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cdc.core import names
from cdc.core.errors import first_line
from cdc.mirrors import initial_load, load_progress, rebuild_gate
from cdc.mirrors.context import Context, context
from cdc.mirrors.load_progress import LoadProgress
from cdc.mirrors.registry import MirrorRecord, Rebuild
from cdc.mirrors.sources import get_source

COPY, DEBEZIUM = initial_load.COPY, initial_load.DEBEZIUM
#: a load whose progress file has not moved this long is taken for dead (its process ended)
LOAD_STALE_S = 90.0
#: mirror -> (its load's thread, the event that cancels it), loads running in this process
_RUNNING: dict[str, tuple[threading.Thread, threading.Event]] = {}
_LOCK = threading.Lock()


def mark(ctx: Context, rec: MirrorRecord, change_topic: str) -> initial_load.Start:
    """Step 2's marker (offset M) in the change topic, with the serving deployment's __seq epoch."""
    assert rec.deployment is not None
    return initial_load.mark(ctx.settings.kafka_bootstrap, rec.spec, change_topic, rec.deployment.seq_epoch)


def _start_of(rb: Rebuild, epoch: int) -> initial_load.Start:
    from cdc.mapping import render
    base = render.seq_base(epoch)
    return initial_load.Start(marker_offset=rb.start_offset - 1, seq=base + rb.start_offset - 1, seq_base=base)


class Watch:
    """A load's stop signal (its is_set() is asked once a second): set here (this process gave
    the rebuild up), or, looked up every CHECK_S, the registry no longer has this rebuild in
    flight (another process superseded or abandoned it) or another process holds its lease.
    Each look also extends the lease, so a long load keeps the rebuild its own."""

    CHECK_S = 5.0

    def __init__(self, ctx: Context, name: str, rb: Rebuild, event: threading.Event | None = None) -> None:
        self.ctx, self.name, self.rb = ctx, name, rb
        self.event = event or threading.Event()
        self.checked = time.monotonic()

    def is_set(self) -> bool:
        if self.event.is_set():
            return True
        if time.monotonic() - self.checked < self.CHECK_S:
            return False
        self.checked = time.monotonic()
        rec = self.ctx.registry.get_mirror(self.name)
        cur = rec.deployment.rebuild if rec is not None and rec.deployment is not None else None
        if cur is None or (cur.generation, cur.start_offset) != (self.rb.generation, self.rb.start_offset) \
                or rebuild_gate.lease(self.ctx, self.name) is not None:   # superseded, abandoned, or driven elsewhere
            self.event.set()
            return True
        return False


def run(ctx: Context, name: str, rb: Rebuild, say: Any, on_load: Any = None,
        watch: Watch | None = None) -> LoadProgress:
    """Step 3, here and now: the table's rows into generation rb.generation's flat topic."""
    rec = ctx.registry.get_mirror(name)
    assert rec is not None and rec.deployment is not None
    src = get_source(ctx, rec.spec.source)
    return initial_load.load(ctx, src, rec.spec, rb.table, _start_of(rb, rec.deployment.seq_epoch), say, on_load,
                             flat_topic=names.flat_topic(name, rb.generation), wait_open=False,
                             cancel=watch or Watch(ctx, name, rb))


def launch(ctx: Context, name: str, rb: Rebuild, say: Any) -> None:
    """Step 3 in a thread of this process (with its own registry connection); rebuild.step
    picks the outcome up from the progress file, in whichever process steps it next (the
    thread lets go of the rebuild's lease when it ends: a REST request's process does not
    step). A failure before the load began writes a failed progress naming it."""
    cancel = threading.Event()

    def body() -> None:
        own: Context | None = None
        try:
            own = context(ctx.settings)
            run(own, name, rb, say, watch=Watch(own, name, rb, cancel))
        except Exception as exc:  # noqa: BLE001 - recorded for step(), which restarts or gives up
            say(f"rebuild {name}: generation {rb.generation}: load failed: {first_line(exc, 300)}")
            p = load_progress.read(ctx.settings.registry_file, name)
            if p is None or p.start_offset != rb.start_offset or p.state != "failed":
                load_progress.write(ctx.settings.registry_file, LoadProgress(
                    mirror=name, state="failed", start_offset=rb.start_offset, reason=first_line(exc, 300),
                    finished_at=time.time()))
        finally:
            if own is not None:
                if not cancel.is_set():     # a cancelled load's rebuild is another's to drive now
                    rebuild_gate.release(own, name)
                own.close()
            with _LOCK:
                if _RUNNING.get(name, (None,))[0] is threading.current_thread():
                    del _RUNNING[name]
    t = threading.Thread(target=body, name=f"cdc-rebuild-load-{name}", daemon=True)
    stop(name)
    with _LOCK:
        _RUNNING[name] = (t, cancel)
    t.start()


def stop(name: str, wait_s: float = 30.0) -> None:
    """Cancel this process' load of `name`, if any (its rebuild was abandoned or superseded),
    and wait for it to end: nothing more reaches its topic once its generation is dropped."""
    with _LOCK:
        got = _RUNNING.get(name)
    if got is not None:
        got[1].set()
        got[0].join(wait_s)


def phase(ctx: Context, rec: MirrorRecord, rb: Rebuild) -> tuple[str, LoadProgress | None]:
    """Where the rebuild's load is: "loading" (waiting or reading), "done", "failed" (reason in
    the progress) or "lost" (its process ended without a word)."""
    p = load_progress.read(ctx.settings.registry_file, rec.name)
    # this rebuild's load (its marker; started after the rebuild, 1 s of clock rounding allowed)
    ours = p is not None and p.start_offset == rb.start_offset and p.started_at >= rb.started_at - 1
    here = _RUNNING.get(rec.name)
    alive = here is not None and here[0].is_alive()
    if not ours:
        if alive or time.time() - rb.started_at < LOAD_STALE_S:
            return "loading", None          # not begun writing its progress yet
        return "lost", None
    assert p is not None
    if p.state in ("done", "failed"):
        return p.state, p
    if alive or time.time() - p.updated_at < LOAD_STALE_S:
        return "loading", p
    return "lost", p
