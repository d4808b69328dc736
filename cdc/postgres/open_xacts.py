"""Wait until every transaction open at a moment has ended (committed or rolled back).

Why (cdc.mirrors.initial_load): pgoutput decodes each change with the catalog as of the
change's WAL position, so what a transaction wrote to a table before the table joined the
publication is never published, even when it commits later. Once the table is in the
publication, every transaction that could hold such writes is in the snapshot's xip list of
pg_current_snapshot() taken then (a transaction without an xid has written nothing yet;
whatever it writes later is at a WAL position after the table joined). When each of those
has ended, a new snapshot sees all of their writes.

pg_snapshot_xip lists top-level xids (subtransactions end with their parent), prepared
transactions included; pg_xact_status answers 'in progress' until a transaction ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from cdc.core.errors import CdcError

SAY_EVERY_S = 5.0


class StillOpenError(CdcError):
    pass


def open_now(conn: psycopg.Connection[Any]) -> list[int]:
    """The top-level transactions in progress now (their full xids), ours excluded."""
    row = conn.execute("SELECT array_agg(x::text::numeric) FROM pg_snapshot_xip(pg_current_snapshot()) AS x").fetchone()
    return sorted(int(x) for x in (row[0] if row and row[0] else []))


def still_open(conn: psycopg.Connection[Any], xids: list[int]) -> list[int]:
    if not xids:
        return []
    rows = conn.execute("SELECT x::text::numeric FROM unnest(%s::text[]) AS t(s), LATERAL (SELECT s::xid8 AS x) AS v "
                        "WHERE pg_xact_status(x) = 'in progress'", ([str(x) for x in xids],)).fetchall()
    return sorted(int(r[0]) for r in rows)


def holders(conn: psycopg.Connection[Any], xids: list[int]) -> list[str]:
    """'pid 123 (idle in transaction since 12:00:01)' for the sessions holding these xids,
    as far as this role may see them (pg_stat_activity)."""
    rows = conn.execute("SELECT pid, state, to_char(xact_start, 'HH24:MI:SS') FROM pg_stat_activity "
                        "WHERE backend_xid::text = ANY(%s) ORDER BY xact_start",
                        ([str(x % (1 << 32)) for x in xids],)).fetchall()
    return [f"pid {pid} ({state or '?'} since {start or '?'})" for pid, state, start in rows]


def wait_ended(conn: psycopg.Connection[Any], xids: list[int], what: str, say: Callable[[int, list[str]], None],
               timeout: float, poll: float = 0.25) -> float:
    """Block until none of `xids` is in progress; returns the seconds waited. `say(n, holders)`
    is called at once when some are open and then every SAY_EVERY_S. StillOpenError after
    `timeout` seconds, naming the sessions."""
    t0 = time.monotonic()
    last_said = -SAY_EVERY_S
    left = still_open(conn, xids)
    while left:
        now = time.monotonic() - t0
        if now >= timeout:
            raise StillOpenError(
                f"{len(left)} transaction(s) open since {what} are still running after {timeout:.0f}s: "
                f"{', '.join(holders(conn, left)) or 'not visible to this role'}",
                hint="end them (COMMIT/ROLLBACK, or pg_terminate_backend(pid)), raise CDC_LOAD_WAIT_TIMEOUT_S, "
                     "or use --load debezium")
        if now - last_said >= SAY_EVERY_S:
            say(len(left), holders(conn, left))
            last_said = now
        time.sleep(poll)
        left = still_open(conn, left)
    return time.monotonic() - t0
