"""The SQLite registry: what sources and mirrors exist, what state each mirror is in, an
event log, and the lease that keeps a single reconciler active.

Every SQL statement on the registry lives in this module. Why SQLite: one file next to the
stack's state, transactional, safe across the CLI and the service process at once (WAL
mode + busy_timeout + BEGIN IMMEDIATE for every write).

Schema changes are numbered migrations (MIGRATIONS[i] is version i + 1) recorded in
`schema_migrations`; opening a registry applies only the missing ones, inside one
IMMEDIATE transaction that re-reads the version, so two processes opening a new file at
the same time cannot both apply a migration.

Passwords never reach this file: sources store a DSN with the password stripped.
"""

from __future__ import annotations

import re
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cdc.core.errors import ConflictError, NotFoundError
from cdc.core.models import MirrorSpec, Source, TableInfo

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE sources (
        name          TEXT PRIMARY KEY,
        dsn_redacted  TEXT NOT NULL,
        spec_json     TEXT NOT NULL,
        created_at    TEXT NOT NULL
    );
    CREATE TABLE mirrors (
        name            TEXT PRIMARY KEY,
        source          TEXT NOT NULL REFERENCES sources(name) ON DELETE RESTRICT,
        schema_name     TEXT NOT NULL,
        table_name      TEXT NOT NULL,
        spec_json       TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',
        flink_job_id    TEXT,
        connector_name  TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    CREATE UNIQUE INDEX mirrors_source_table ON mirrors (source, schema_name, table_name);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        ts      TEXT NOT NULL,
        mirror  TEXT,
        action  TEXT NOT NULL,
        reason  TEXT
    );
    CREATE INDEX events_mirror ON events (mirror, id);
    CREATE TABLE leases (
        name         TEXT PRIMARY KEY,
        holder       TEXT NOT NULL,
        acquired_at  REAL NOT NULL,
        expires_at   REAL NOT NULL
    );
    """,
    # 2: what the mirror's running Flink job was deployed with (cdc.mirrors.schema_change):
    # the table as its SQL was rendered (columns: names + types) and its consumer group.
    """
    ALTER TABLE mirrors ADD COLUMN deployment_json TEXT;
    """,
]

RECONCILER_LEASE = "reconciler"
MIRROR_UPDATABLE = frozenset({"state", "flink_job_id", "connector_name", "spec", "deployment"})

_DSN_URL_PW = re.compile(r"^([a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@", re.I)
_DSN_KV_PW = re.compile(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)
_DSN_QUERY_PW = re.compile(r"([?&])password=[^&]*&?", re.I)


def redact_dsn(dsn: str) -> str:
    """Strip a password from URL-style or key=value DSNs (defence in depth: Source.dsn is
    supposed to be password-free already)."""
    out = _DSN_URL_PW.sub(r"\1@", dsn)
    out = _DSN_QUERY_PW.sub(lambda m: m.group(1), out).rstrip("?&")
    return _DSN_KV_PW.sub("", out).strip()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Rebuild(BaseModel):
    """A rebuild in flight (cdc.mirrors.rebuild): generation `generation` is being filled by job
    `job_id` (consumer group `group_id`, from change-topic offset `start_offset`) plus the table's
    rows, read by the copy load (`load` "copy", cdc.mirrors.rebuild_load: marker at
    start_offset - 1) or by Debezium's incremental snapshot `signal_id` ("debezium"), while the
    deployed generation keeps answering."""

    generation: int
    table: TableInfo
    group_id: str
    start_offset: int            # J (-1 until taken); a copy load's marker is at J - 1
    filenodes: dict[str, int] | None = None
    job_id: str | None = None
    signal_id: str | None = None
    started_at: float = 0.0
    reason: str = ""
    # once the snapshot is read: the offset of the change topic's last data record then; the
    # switch waits until generation N+1 has written its change (or committed past it)
    target_offset: int | None = None
    notes_from: int = 0          # the notification topic's end when the snapshot was requested
    resubmits: int = 0           # times its job was found ended and submitted again
    load: str = "debezium"       # how the rows are read: "copy" | "debezium"
    loaded_at: float | None = None   # copy: when the load ended (the job is submitted then)
    attempts: int = 0            # rebuilds of this change begun before this one after failed
                                 # loads (`resubmits` counts this generation's job restarts)


class Deployment(BaseModel):
    """What a mirror's Flink job runs with: the table its SQL was rendered from (so a
    restore renders the same column list) and the consumer group of its Kafka source.
    deployed_at (epoch s) bounds the restore points that belong to this deployment
    (0 = unknown: recorded for a mirror created before deployments were kept)."""

    table: TableInfo
    group_id: str
    deployed_at: float = 0.0
    # The change topic's incarnation: __seq = seq_epoch << 40 | offset. change_topic_id is the
    # Kafka topic id the job reads; another id means the topic was recreated (cdc.mirrors.topic_epoch).
    seq_epoch: int = 0
    change_topic_id: str | None = None
    # Which flat topic / job / Pinot physical table holds the mirror (cdc.core.names, 0 = the
    # ones `mirror add` made), the table's storage (relfilenode per leaf: TRUNCATE and table
    # rewrites change it; None = not recorded yet), and a rebuild in flight.
    generation: int = 0
    filenodes: dict[str, int] | None = None
    rebuild: Rebuild | None = None
    # the highest generation number a rebuild ever began (an abandoned one's number, whose
    # topic a late writer could still hold, is never used again)
    last_generation: int = 0
    # the change-topic offset the generation's job began at (a rebuild's J; 0 = the earliest):
    # a later replay (ADD COLUMN follow) starts there, never below, or it would bring back rows
    # the generation never had (a TRUNCATE's, or keys a resync left out)
    start_offset: int = 0

    def columns(self) -> list[str]:
        return [f"{c.name} {c.type_name}" for c in sorted(self.table.columns, key=lambda c: c.position)]


class MirrorRecord(BaseModel):
    """A stored mirror: the user's spec plus what the reconciler has made of it."""

    name: str
    source: str
    schema_name: str
    table_name: str
    spec: MirrorSpec
    state: str = "pending"
    flink_job_id: str | None = None
    connector_name: str | None = None
    created_at: str
    updated_at: str
    deployment: Deployment | None = None

    @property
    def generation(self) -> int:
        """The generation that answers queries (cdc.core.names: flat topic, job, Pinot table)."""
        return self.deployment.generation if self.deployment else 0


class Event(BaseModel):
    id: int
    ts: str
    mirror: str | None
    action: str
    reason: str | None = None


class Registry:
    """One SQLite connection per object, shared by threads under a lock (FastAPI runs sync
    handlers in a thread pool). Autocommit mode; writes use explicit BEGIN IMMEDIATE."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                     timeout=busy_timeout_ms / 1000)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if str(path) != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if str(path) != ":memory:":   # private like the rest of the state folder (0600)
            for f in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                try:
                    os.chmod(f, 0o600)
                except OSError:
                    pass
        self.migrate()

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so read-then-write
        sequences (lease, conflict checks) are atomic across processes."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def migrate(self) -> int:
        """Apply missing migrations; return the schema version. Idempotent."""
        with self._tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            current = c.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            for version, script in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for stmt in _split_sql(script):
                    c.execute(stmt)
                c.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                          (version, _now_iso()))
            return max(current, len(MIGRATIONS))

    def schema_version(self) -> int:
        return self._query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sources -------------------------------------------------------------------------

    def add_source(self, source: Source) -> Source:
        """Insert; re-adding an identical source is a no-op, a different one is a ConflictError."""
        stored = source.model_copy(update={"dsn": redact_dsn(source.dsn)})
        with self._tx() as c:
            row = c.execute("SELECT spec_json FROM sources WHERE name = ?", (source.name,)).fetchone()
            if row is not None:
                existing = Source.model_validate_json(row["spec_json"])
                if existing != stored:
                    raise ConflictError(f"source {source.name!r} already exists with a different definition",
                                        hint="Remove it first or pick another name.")
                return existing
            c.execute("INSERT INTO sources (name, dsn_redacted, spec_json, created_at) VALUES (?, ?, ?, ?)",
                      (stored.name, stored.dsn, stored.model_dump_json(), _now_iso()))
        return stored

    def put_source(self, source: Source) -> Source:
        """Insert or replace (the default source follows CDC_POSTGRES_DSN as it changes)."""
        stored = source.model_copy(update={"dsn": redact_dsn(source.dsn)})
        with self._tx() as c:
            c.execute("INSERT INTO sources (name, dsn_redacted, spec_json, created_at) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET dsn_redacted = excluded.dsn_redacted, "
                      "spec_json = excluded.spec_json", (stored.name, stored.dsn, stored.model_dump_json(), _now_iso()))
        return stored

    def get_source(self, name: str) -> Source | None:
        rows = self._query("SELECT spec_json FROM sources WHERE name = ?", (name,))
        return Source.model_validate_json(rows[0]["spec_json"]) if rows else None

    def list_sources(self) -> list[Source]:
        return [Source.model_validate_json(r["spec_json"])
                for r in self._query("SELECT spec_json FROM sources ORDER BY name")]

    def remove_source(self, name: str) -> bool:
        """False if absent; ConflictError while mirrors still use it."""
        with self._tx() as c:
            used = [r["name"] for r in c.execute("SELECT name FROM mirrors WHERE source = ? ORDER BY name", (name,))]
            if used:
                raise ConflictError(f"source {name!r} is used by mirrors: {', '.join(used)}",
                                    hint="Remove those mirrors first.")
            return c.execute("DELETE FROM sources WHERE name = ?", (name,)).rowcount > 0

    # -- mirrors -------------------------------------------------------------------------

    def add_mirror(self, spec: MirrorSpec, *, state: str = "pending", connector_name: str | None = None,
                   flink_job_id: str | None = None) -> MirrorRecord:
        """Insert; an identical spec returns the existing record (idempotent), a different
        spec under the same name or another mirror of the same table is a ConflictError."""
        now = _now_iso()
        with self._tx() as c:
            if c.execute("SELECT 1 FROM sources WHERE name = ?", (spec.source,)).fetchone() is None:
                raise NotFoundError(f"unknown source {spec.source!r}", hint="Add the source first.")
            row = c.execute("SELECT * FROM mirrors WHERE name = ?", (spec.name,)).fetchone()
            if row is not None:
                rec = _mirror(row)
                if rec.spec != spec:
                    raise ConflictError(f"mirror {spec.name!r} already exists with a different spec",
                                        hint="Remove it first or pick another name.")
                return rec
            other = c.execute("SELECT name FROM mirrors WHERE source = ? AND schema_name = ? AND table_name = ?",
                              (spec.source, spec.schema_name, spec.table_name)).fetchone()
            if other is not None:
                raise ConflictError(f"{spec.qualified} of source {spec.source!r} is already mirrored as "
                                    f"{other['name']!r}")
            c.execute("INSERT INTO mirrors (name, source, schema_name, table_name, spec_json, state, flink_job_id,"
                      " connector_name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (spec.name, spec.source, spec.schema_name, spec.table_name, spec.model_dump_json(), state,
                       flink_job_id, connector_name, now, now))
            return _mirror(c.execute("SELECT * FROM mirrors WHERE name = ?", (spec.name,)).fetchone())

    def get_mirror(self, name: str) -> MirrorRecord | None:
        rows = self._query("SELECT * FROM mirrors WHERE name = ?", (name,))
        return _mirror(rows[0]) if rows else None

    def list_mirrors(self, source: str | None = None, state: str | None = None) -> list[MirrorRecord]:
        rows = self._query("SELECT * FROM mirrors WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR state = ?2)"
                           " ORDER BY name", (source, state))
        return [_mirror(r) for r in rows]

    def update_mirror(self, name: str, /, **fields: Any) -> MirrorRecord:
        """Update state / flink_job_id / connector_name / spec; bumps updated_at."""
        unknown = set(fields) - MIRROR_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update mirror fields: {', '.join(sorted(unknown))}")
        cols: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("spec", "deployment")}
        if "deployment" in fields:
            dep: Deployment | None = fields["deployment"]
            cols["deployment_json"] = None if dep is None else dep.model_dump_json()
        if "spec" in fields:
            spec: MirrorSpec = fields["spec"]
            if spec.name != name:
                raise ValueError("a mirror's spec cannot change its name")
            cols.update(spec_json=spec.model_dump_json(), source=spec.source, schema_name=spec.schema_name,
                        table_name=spec.table_name)
        cols["updated_at"] = _now_iso()
        # Column names come from the fixed whitelist above, never from user input.
        assignments = ", ".join(f"{k} = ?" for k in cols)
        with self._tx() as c:
            n = c.execute(f"UPDATE mirrors SET {assignments} WHERE name = ?", (*cols.values(), name)).rowcount
            if n == 0:
                raise NotFoundError(f"unknown mirror {name!r}")
            return _mirror(c.execute("SELECT * FROM mirrors WHERE name = ?", (name,)).fetchone())

    def remove_mirror(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM mirrors WHERE name = ?", (name,)).rowcount > 0

    # -- events --------------------------------------------------------------------------

    def record_event(self, mirror: str | None, action: str, reason: str | None = None) -> int:
        """Append to the event log (kept after a mirror is removed: it is history)."""
        with self._tx() as c:
            return int(c.execute("INSERT INTO events (ts, mirror, action, reason) VALUES (?, ?, ?, ?)",
                                 (_now_iso(), mirror, action, reason)).lastrowid)

    def list_events(self, mirror: str | None = None, limit: int = 100) -> list[Event]:
        """The most recent `limit` events, newest first (ids are strictly increasing)."""
        rows = self._query("SELECT * FROM events WHERE (?1 IS NULL OR mirror = ?1) ORDER BY id DESC LIMIT ?2",
                           (mirror, int(limit)))
        return [Event(**dict(r)) for r in rows]

    # -- lease (single active reconciler) ------------------------------------------------

    def acquire_lease(self, holder: str, ttl_s: float, name: str = RECONCILER_LEASE) -> bool:
        """Take the lease if it is free, expired, or already ours (then it is extended)."""
        now = self._clock()
        with self._tx() as c:
            row = c.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row["holder"] != holder and row["expires_at"] > now:
                return False
            c.execute("INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                      " ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,"
                      " acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at"
                      "                    ELSE excluded.acquired_at END,"
                      " expires_at = excluded.expires_at",
                      (name, holder, now, now + ttl_s))
            return True

    def renew_lease(self, holder: str, ttl_s: float, name: str = RECONCILER_LEASE) -> bool:
        """Extend our lease. False if someone else holds it now (we lost it: stop working)."""
        now = self._clock()
        with self._tx() as c:
            return c.execute("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                             (now + ttl_s, name, holder)).rowcount > 0

    def release_lease(self, holder: str, name: str = RECONCILER_LEASE) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)).rowcount > 0

    def lease_holder(self, name: str = RECONCILER_LEASE) -> tuple[str, float] | None:
        """(holder, expires_at epoch seconds) of a live lease, else None."""
        rows = self._query("SELECT holder, expires_at FROM leases WHERE name = ? AND expires_at > ?",
                           (name, self._clock()))
        return (rows[0]["holder"], rows[0]["expires_at"]) if rows else None


def _mirror(row: sqlite3.Row) -> MirrorRecord:
    d = dict(row)
    spec = MirrorSpec.model_validate_json(d.pop("spec_json"))
    dep = d.pop("deployment_json", None)
    return MirrorRecord(spec=spec, deployment=Deployment.model_validate_json(dep) if dep else None, **d)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into complete statements (sqlite3 executes one at a time)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
