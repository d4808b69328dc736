"""Undo journal of `mirror add`, and the signs of life of an add or remove in progress.

Every step of add_mirror that creates something registers its undo BEFORE the step runs --
in memory for an error inside the process, and in the registry (event "rollback_registered",
JSON) for a process that dies: an undo registered after the step returns would be lost if the
process is killed between the two. Each undo is idempotent and harmless when its step never
ran or only half ran (a topic that does not exist is not deleted, no job of the mirror's
pipeline name is nothing to cancel, the connector is rendered again from the registry without
the mirror). Steps whose artifact may already exist before the add (a topic kept by an earlier
`remove` without --drop-data, a connector other mirrors use) are checked first, and only what
the add itself creates gets an undo that deletes it.

A process that dies mid-add leaves the mirror "creating"; mid-remove, "removing". While the
process lives it touches the mirror's row (updated_at) every few seconds (heartbeat()), and the
reconciler keeps its hands off the source's connector, which add and remove rewrite. Once the
row has not been touched for `stuck_after_s` (CDC_STUCK_AFTER_S), the reconciler
* repairs the source's connector again (a stuck mirror no longer holds it), and
* recovers the mirror (cdc.mirrors.recovery): an add that recorded "created" (everything made, waiting for
  Debezium's snapshot) is resumed -- "running" once the snapshot is under way, requested again if
  Debezium never reported it; any earlier add is rolled back from its journal, newest undo first,
  and the registry row removed; a remove is finished (with --drop-data as it was asked,
  event "remove_started").
So a mirror is never stuck for longer than the bound plus one reconcile pass. The undo steps
themselves run in cdc.mirrors.lifecycle.undo (they need its connector functions).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc.mirrors.context import Context

EVENT_ADD, EVENT_STEP, EVENT_CREATED, EVENT_REMOVE = "add_started", "rollback_registered", "created", "remove_started"
RECOVERABLE_STATES = frozenset({"creating", "removing"})
STUCK_AFTER_S = 120.0
HEARTBEAT_S = 5.0
FAULT_ENV = "CDC_FAULT_KILL_AT"     # tests: SIGKILL this process at the named point (fault())


def fault(point: str) -> None:
    """Fault injection for tests: die here, as `kill -9` would, when CDC_FAULT_KILL_AT names
    this point (lifecycle.add_mirror: job_submitted, connector_configured, created;
    lifecycle.remove_mirror: remove_job_cancelled)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


# -- the journal ----------------------------------------------------------------------------

@dataclass
class Step:
    kind: str                       # delete_topic | delete_pinot | cancel_jobs | connector | identity_default
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return {"delete_topic": "delete topic {topic}", "delete_pinot": "delete Pinot table and schema {name}",
                "cancel_jobs": "cancel Flink jobs named {pipeline}",
                "connector": "remove the table from connector {connector} (delete it, its slot and "
                             "publication when no other mirror remains)",
                "identity_default": "restore REPLICA IDENTITY DEFAULT on {schema}.{table_name}"}[self.kind].format(**self.args)


class Journal:
    """The undo steps of one add, newest last; each persisted before its step runs."""

    def __init__(self, ctx: Context, mirror: str) -> None:
        self.ctx, self.mirror, self.steps = ctx, mirror, []
        ctx.registry.record_event(mirror, EVENT_ADD, None)

    def register(self, kind: str, **args: Any) -> None:
        step = Step(kind, args)
        self.ctx.registry.record_event(self.mirror, EVENT_STEP, json.dumps({"kind": kind, **args}))
        self.steps.append(step)


def journal_of(ctx: Context, mirror: str, since: str | None = None) -> tuple[list[Step], bool]:
    """The persisted undo steps of the mirror's last add (oldest first), and whether that add
    recorded "created" (everything made). `since`: the mirror's created_at; events before it
    belong to an earlier mirror of the same name."""
    steps: list[Step] = []
    created = False
    born = datetime.fromisoformat(since).timestamp() if since else None
    for ev in ctx.registry.list_events(mirror, limit=1000):      # newest first
        if ev.action == EVENT_ADD or (born is not None and datetime.fromisoformat(ev.ts).timestamp() < born):
            break
        if ev.action == EVENT_CREATED:
            created = True
        elif ev.action == EVENT_STEP and ev.reason:
            d = json.loads(ev.reason)
            steps.append(Step(d.pop("kind"), d))
    return list(reversed(steps)), created


# -- liveness ---------------------------------------------------------------------------------

@contextmanager
def heartbeat(ctx: Context, mirror: str, every_s: float | None = None) -> Iterator[None]:
    """While the body runs, touch the mirror's row (updated_at) every few seconds: the sign of
    life the reconciler reads before it takes a "creating" / "removing" mirror over."""
    stop = threading.Event()
    interval = every_s or min(HEARTBEAT_S, _bound(ctx) / 4)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if ctx.registry.get_mirror(mirror) is None:
                    return
                ctx.registry.update_mirror(mirror)
            except Exception:  # the registry is busy or the row went away: try again or stop
                continue

    t = threading.Thread(target=beat, name=f"cdc-heartbeat-{mirror}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def _bound(ctx: Context) -> float:
    return float(getattr(ctx.settings, "stuck_after_s", STUCK_AFTER_S))


def age_s(updated_at: str, now: float) -> float:
    return now - datetime.fromisoformat(updated_at).timestamp()


def is_stuck(state: str, updated_at: str, now: float | None, bound: float) -> bool:
    """A mirror an add or remove left behind: its state is theirs and nobody touched it for `bound` s."""
    return now is not None and state in RECOVERABLE_STATES and age_s(updated_at, now) > bound
