"""When a rebuild (cdc.mirrors.rebuild) may begin, and who drives it.

* wait_streamed_up_to_now(): the connector must have confirmed the WAL written before the
  rebuild began, else RebuildDeferred (the reconciler retries): no change committed before
  the start can then sit above the new generation's start offset J (the exactness arguments
  of cdc.mirrors.rebuild and cdc.mirrors.rebuild_load rest on it).
* lease() / release(): one process drives a mirror's rebuild at a time (the daemon, or
  `cdc mirror resync`), a registry lease named rebuild:<mirror>.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.mapping import render
from cdc.mirrors.context import Context

#: how long one start() attempt waits for the connector to stream the WAL written before it began
CATCH_UP_S = 10.0
#: one process drives a mirror's rebuild (the daemon, or `cdc mirror resync`): its lease is
#: extended by every step and by its load; one whose holder died is free after this long
LEASE_TTL_S = 120.0


class RebuildDeferred(CdcError):
    """The rebuild cannot begin yet (another snapshot runs on the source's connector, or the
    connector has not streamed what was committed before the rebuild began)."""


#: mirror -> the WAL position its rebuild waits for the connector to confirm (kept across the
#: deferred attempts, so each is a short check, not a new and later target)
_CATCH_UP: dict[str, tuple[str, str]] = {}     # mirror -> (what the rebuild fills, target)


def wait_streamed_up_to_now(ctx: Context, src: Any, name: str, timeout: float = CATCH_UP_S,
                             fills: str = "") -> None:
    """Until the connector has confirmed the WAL written before the rebuild began: Debezium
    confirms a position once its events are in Kafka (Connect commits offsets after the
    producer's acks), so every change committed before then (the rows a TRUNCATE removed
    among them) sits below J, where the new generation never reads. Two writes to cdc's
    heartbeat table move the position at once (a Debezium event carries the position of the
    commit before it), rather than waiting for the connector's heartbeat. A connector that does
    not get there in `timeout` (paused, down, behind, a worker flushing offsets rarely) defers
    the rebuild; the reconciler tries again and the target position stays the first one."""
    from cdc.mirrors.sources import source_dsn
    from cdc.postgres import catalog
    slot, cname = names.slot_name(src.name), names.connector_name(src.name)
    st = ctx.connect.status(cname)
    if st is None or not st.running:           # it cannot catch up now: do not hold the pass
        timeout = 0.0
    with catalog.connect(source_dsn(ctx, src), autocommit=True) as conn:
        kept = _CATCH_UP.get(name)          # a target taken before the table changed again is too early
        target = kept[1] if kept and kept[0] == fills else str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])
        _CATCH_UP[name] = (fills, target)
        if timeout:
            _nudge(conn)
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn, confirmed_flush_lsn::text "
                               "FROM pg_replication_slots WHERE slot_name = %s", (target, slot)).fetchone()
            if row is None or row[0]:       # no slot: nothing streamed that could be in flight
                _CATCH_UP.pop(name, None)
                return
            if time.monotonic() > deadline:
                raise RebuildDeferred(f"connector {cname} has not streamed the WAL up to {target} yet (slot {slot} "
                                      f"at {row[1]}): the rebuild of {name} starts once it has (changes still in "
                                      "flight could otherwise reach the new generation)",
                                      hint="`cdc mirror status` and `cdc stack logs connect` show the connector; the "
                                           "reconciler (`cdc serve`) starts the rebuild then")
            time.sleep(0.5)


def _nudge(conn: Any) -> None:
    """Two commits to cdc's heartbeat table (what the connector's heartbeat writes): the
    second one's event carries the first one's position, past the target. Best effort."""
    try:
        conn.execute(render.HEARTBEAT_QUERY)
        conn.execute(render.HEARTBEAT_QUERY)
    except Exception:  # noqa: BLE001 - no heartbeat table or no right to write it: the connector's own heartbeat will do
        pass


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_LOCK = threading.Lock()


def local_lock(name: str) -> threading.RLock:
    """The lease is per process; within one (`cdc serve`: REST requests and the reconciler)
    this lock keeps one thread at a time in a mirror's rebuild start / step / abort."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(name, threading.RLock())


def _lease_name(mirror: str) -> str:
    return f"rebuild:{mirror}"


def held_elsewhere(ctx: Context, name: str) -> str | None:
    """Who else holds the mirror's rebuild lease (None: nobody, or this process); reads only."""
    got = ctx.registry.lease_holder(_lease_name(name))
    return got[0] if got and got[0] != holder() else None


def driven_elsewhere(name: str, other: str) -> RebuildDeferred:
    return RebuildDeferred(f"the rebuild of {name} is driven by {other}",
                           hint=f"it goes on there; `cdc mirror status {name}` shows it (a holder that died lets go "
                                f"after {LEASE_TTL_S:.0f}s)")


def holder() -> str:
    import os
    import socket
    return f"{socket.gethostname()}:{os.getpid()}"


def lease(ctx: Context, name: str) -> str | None:
    """Take or extend this process' lease on the mirror's rebuild: None when it is ours, else
    who holds it (the rebuild's steps and load run in one process at a time)."""
    if ctx.registry.acquire_lease(holder(), LEASE_TTL_S, name=_lease_name(name)):
        return None
    got = ctx.registry.lease_holder(_lease_name(name))
    return got[0] if got else "another process"


def release(ctx: Context, name: str) -> None:
    """Let go of the mirror's rebuild lease if this process holds it (`resync` ends)."""
    ctx.registry.release_lease(holder(), name=_lease_name(name))
