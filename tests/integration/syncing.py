"""Helpers for mirror tests: compare Postgres with the mirror, list what exists."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from cdc.core import names
from cdc.postgres import catalog
from cdc.mirrors import state as mirror_state
from cdc.mirrors import service
from cdc.core.settings import Settings


def wait_for(what: str, fn: Callable[[], Any], timeout: float, poll: float = 0.5,
             tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll fn until it returns something truthy and return that. Exceptions of the
    `tolerate` types count as "not yet" (a process that is restarting); others propagate."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except tolerate as exc:
            last = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if last:
                return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def mirror_target_rows(c: service.Context, name: str) -> mirror_state.Rows:
    """The mirror as Pinot answers: a Pinot server where one runs, else Pinot's own ingestion
    and upsert code in-process over the flat topic (cdc's Pinot engine)."""
    return service.read_mirror(c, name)[0]


def wait_in_sync(c: service.Context, name: str, timeout: float = 120.0) -> float:
    """Poll until the mirror equals Postgres, compared in full; return seconds waited."""
    rec = service.get_mirror(c, name)
    spec = rec.spec
    t0 = time.monotonic()
    last: dict = {}
    while time.monotonic() - t0 < timeout:
        with catalog.connect(service.source_dsn(c, service.get_source(c, spec.source))) as conn:
            info = catalog.introspect(conn, spec.schema_name, spec.table_name)
            expected = mirror_state.postgres_rows(conn, info, spec.key_columns)
        actual = mirror_target_rows(c, name)
        last = mirror_state.diff(expected, actual)
        if not (last["missing"] or last["extra"] or last["differing"]):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"mirror {name} not equal to Postgres after {timeout}s: {last}")


def stack_objects(c: service.Context) -> dict:
    """Everything a mirror can create, to prove a failed add created nothing."""
    from cdc.clients.kafka import KafkaAdmin
    with catalog.connect(c.settings.source_dsn()) as conn:
        slots = sorted(r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots"))
        pubs = sorted(r[0] for r in conn.execute("SELECT pubname FROM pg_publication"))
    jobs = sorted(j.id for j in c.jobmanager.jobs() if j.state not in ("CANCELED", "FINISHED", "FAILED"))
    topics = sorted(t for t in KafkaAdmin(c.settings.kafka_bootstrap).topics() if t.startswith("cdc.flat."))
    return {"connectors": sorted(c.connect.list_connectors()), "jobs": jobs, "slots": slots,
            "publications": pubs, "flat_topics": topics, "mirrors": [m.name for m in c.registry.list_mirrors()]}


# -- a private database and source per test module -----------------------------------------

def ensure_database(admin_dsn: str, db: str) -> None:
    """CREATE DATABASE unless it exists (tests that keep theirs between runs)."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


def remove_everything(ctx: service.Context, source: str) -> None:
    """Best-effort teardown of a test's registry: every mirror with its data, then what a
    failed remove may have left of the source (its connector, its topics), then the source."""
    from cdc.clients.kafka import KafkaAdmin
    for m in ctx.registry.list_mirrors():
        try:
            service.remove_mirror(ctx, m.name, drop_data=True, progress=print)
        except Exception as exc:  # keep cleaning up
            print(f"cleanup of mirror {m.name} failed: {exc}")
            ctx.registry.remove_mirror(m.name)
    service.delete_connector(ctx, names.connector_name(source))
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    for topic in kafka.topics():
        if topic.startswith((names.topic_prefix(source) + ".", f"cdc.flat.{source}_")) \
                or topic == names.heartbeat_topic(source):
            kafka.delete_topic(topic)
    if ctx.registry.get_source(source) is not None:
        service.remove_source(ctx, source)


@contextmanager
def private_database_context(settings: Settings, registry_dir: Path, db: str, source: str,
                             dsn_of: Callable[[str], str], **updates: Any) -> Iterator[service.Context]:
    """A fresh database `db` on the stack's Postgres and a Context on a registry of its own
    whose default source is that database (so wait_in_sync reads its rows); on exit
    everything of `source` is removed, then its leftover slots and the database."""
    admin_dsn = dsn_of("postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    s = settings.model_copy(update={"registry_path": registry_dir / "registry.db",
                                    "postgres_dsn": SecretStr(dsn_of(db)), **updates})
    ctx = service.context(s)
    try:
        yield ctx
    finally:
        remove_everything(ctx, source)
        ctx.close()
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                      "WHERE database = %s AND NOT active", (db,))
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


# -- a mirror followed through changes ----------------------------------------------------------

class MirrorReader(threading.Thread):
    """Reads the mirror (service.read_mirror: Pinot's own code, in-process here) every half
    second: the row count each read saw, the generation that answered it (None when a switch
    happened during the read) and any read error."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.name = settings, name
        self.stop = threading.Event()
        self.counts: list[int] = []
        self.generations: list[int | None] = []
        self.errors: list[str] = []

    def run(self) -> None:
        c = service.context(self.settings)
        try:
            while not self.stop.is_set():
                try:
                    gen = c.registry.get_mirror(self.name).generation
                    self.counts.append(len(service.read_mirror(c, self.name)[0]))
                    self.generations.append(gen if c.registry.get_mirror(self.name).generation == gen else None)
                except Exception as exc:  # a read during a redeploy or switch must still work; recorded
                    self.errors.append(str(exc).splitlines()[0][:200])
                self.stop.wait(0.5)
        finally:
            c.close()


def converge(c: service.Context, name: str, timeout: float, seen: list[dict] | None = None) -> tuple[float, list[str]]:
    """Reconciler passes until the mirror is running with no rebuild in flight, its job
    RUNNING, and a pass plans nothing; returns (seconds, kinds of the actions taken, rebuild
    steps left out). `seen` gets what `mirror status` said of a rebuild in flight."""
    from cdc.mirrors import reconcile
    rec = reconcile.Reconciler(lambda: service.context(c.settings), c.settings, interval_s=1.0)
    t0, kinds = time.monotonic(), []
    try:
        while time.monotonic() - t0 < timeout:
            acted = rec.run_once()
            kinds += [a.kind for a in acted if a.kind != reconcile.REBUILD_STEP]
            if seen is not None and not seen and (rb := service.mirror_status(c, name).get("rebuild")):
                seen.append(rb)
            m = c.registry.get_mirror(name)
            if m is not None and m.state == "running" and m.deployment and m.deployment.rebuild is None \
                    and not acted and m.flink_job_id and c.jobmanager.job_state(m.flink_job_id) == "RUNNING":
                return time.monotonic() - t0, kinds
            time.sleep(1.0)
    finally:
        rec.stop(timeout=5)
    raise AssertionError(f"reconciler did not converge in {timeout}s (did {kinds})")


class TableWriter(threading.Thread):
    """Inserts (30%), updates (60%) and deletes (10%) at `rate` transactions per second on a
    table shaped (id bigint PRIMARY KEY, v int, note text, ts timestamptz) holding ids 1..rows,
    until stopped; new ids start above rows + 1000 (a test's own inserts go below)."""

    def __init__(self, dsn: str, table: str, rows: int, rate: float, seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.dsn, self.t, self.rows, self.rate, self.seed = dsn, sql.Identifier("public", table), rows, rate, seed
        self.stop, self.done = threading.Event(), 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng, nxt = random.Random(self.seed), self.rows + 1000
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                start = time.monotonic()
                while not self.stop.is_set():
                    op, k = rng.random(), rng.randint(100, self.rows)
                    if op < 0.3:
                        nxt += 1
                        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 1, 'new', now())").format(self.t), (nxt,))
                    elif op < 0.9:
                        conn.execute(sql.SQL("UPDATE {} SET v = v + 1, ts = now() WHERE id = %s").format(self.t), (k,))
                    else:
                        conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(self.t), (k,))
                    self.done += 1
                    time.sleep(max(0.0, start + self.done / self.rate - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def open_t1(dsn: str, table: str, new_id: int) -> psycopg.Connection:
    """T1: one transaction left open that inserts `new_id` (v = -1), updates id 10 and deletes
    id 20 of a TableWriter-shaped table; the caller commits it (or closes it to roll back)."""
    t = sql.Identifier("public", table)
    t1 = psycopg.connect(dsn)                        # not autocommit
    t1.execute(sql.SQL("INSERT INTO {} VALUES (%s, -1, 'from T1', now())").format(t), (new_id,))
    t1.execute(sql.SQL("UPDATE {} SET v = -1, note = 'updated by T1' WHERE id = 10").format(t))
    t1.execute(sql.SQL("DELETE FROM {} WHERE id = 20").format(t))
    return t1


class Background(threading.Thread):
    """fn() in a daemon thread: `result`, or `error` (whatever it raised), once it ended."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
