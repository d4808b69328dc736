"""The source's replication slot and publication: how much WAL the slot holds, and dropping
both when the last mirror of a source goes."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.postgres import catalog


def wal_retained(dsn: str, source: str) -> int | None:
    """Bytes of WAL Postgres keeps for the source's slot; None when the slot does not exist."""
    with catalog.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                           "FROM pg_replication_slots WHERE slot_name = %s", (names.slot_name(source),)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def wal_status(dsn: str, source: str) -> str | None:
    """pg_replication_slots.wal_status of the source's slot (reserved, extended, unreserved,
    lost); None when there is no slot. 'lost' means Postgres invalidated the slot
    (max_slot_wal_keep_size): its restart_lsn is gone, WAL the connector had not read was
    removed, and the mirror has missed changes it can never stream."""
    with catalog.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                           (names.slot_name(source),)).fetchone()
    return None if row is None else row[0]


def active_pid(dsn: str, source: str) -> int | None:
    """The pid of the walsender holding the source's slot now (None: no slot, or not held)."""
    with catalog.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (names.slot_name(source),)).fetchone()
    return None if row is None else row[0]


LOST_HINT = ("Postgres invalidated the replication slot (max_slot_wal_keep_size): changes were lost. The "
             "reconciler (cdc serve) repairs it: new slot, fresh snapshot of every table of the source, keys "
             "Postgres no longer has removed (cdc/mirrors/slot_repair.py); without a daemon run `cdc mirror resync "
             "NAME` on one of the source's mirrors. Raise max_slot_wal_keep_size or keep the connector running "
             "to avoid it")


def ensure_publish_via_root(dsn: str, source: str) -> bool:
    """cdc's own publication publishes partitions' changes through their root. Debezium 3.6.1
    sets publish_via_partition_root only when it creates the publication
    (PostgresReplicationConnection.buildWithClause; its ALTER PUBLICATION ... SET TABLE keeps
    the option as it was), so a publication created before a partitioned table joined is
    altered here. True when it was altered."""
    pub = names.publication_name(source)
    with catalog.connect(dsn) as conn:
        if conn.info.server_version < 130000:
            return False
        row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (pub,)).fetchone()
        if row is None or row[0]:
            return False
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(sql.Identifier(pub)))
    return True


def drop_slot_when_idle(conn: psycopg.Connection[Any], slot: str, timeout: float = 60.0) -> bool:
    """Drop a replication slot once no walsender uses it (a just-deleted connector may still
    hold it for a moment). True when the slot is gone, False if still active at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is None:
            return True
        if not row[0]:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def drop_slot_and_publication(dsn: str, source: str, timeout: float = 60, *, drop_publication: bool = True) -> None:
    """`drop_publication=False` for a DBA-managed publication (source added with --publication):
    it is the DBA's, and the least-privileged role could not drop it anyway."""
    slot, pub = names.slot_name(source), names.publication_name(source)
    with catalog.connect(dsn) as conn:
        if not drop_slot_when_idle(conn, slot, timeout):
            raise CdcError(f"replication slot {slot} is still in use after the connector was deleted",
                           hint=f"drop it when idle: SELECT pg_drop_replication_slot('{slot}')")
        if drop_publication:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
