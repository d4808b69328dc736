"""Registry: migrations, typed CRUD, events, and the cross-process reconciler lease."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from cdc.core.errors import ConflictError, NotFoundError
from cdc.core.models import MirrorSpec, Source
from cdc.mirrors.registry import MIGRATIONS, MirrorRecord, Registry, redact_dsn

SRC = Source(name="default", dsn="postgresql://postgres@127.0.0.1:5433/postgres", has_password=True)
SPEC = MirrorSpec(name="public_orders", schema_name="public", table_name="orders")


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path / "registry.db")
    yield r
    r.close()


def test_migrations_idempotent_on_reopen(tmp_path):
    path = tmp_path / "r.db"
    with Registry(path) as r:
        assert r.schema_version() == len(MIGRATIONS)
        r.add_source(SRC)
    with Registry(path) as r:
        assert r.schema_version() == len(MIGRATIONS)
        assert r.migrate() == len(MIGRATIONS)
        assert r.get_source("default") == SRC
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_migrations").fetchall()
    assert rows == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


def test_wal_mode(tmp_path):
    with Registry(tmp_path / "r.db"):
        pass
    assert sqlite3.connect(tmp_path / "r.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sources(reg):
    reg.add_source(SRC)
    assert reg.add_source(SRC) == SRC                      # idempotent
    with pytest.raises(ConflictError):
        reg.add_source(SRC.model_copy(update={"port": 5999}))
    assert [s.name for s in reg.list_sources()] == ["default"]
    assert reg.remove_source("nope") is False


def test_source_password_never_stored(tmp_path):
    path = tmp_path / "r.db"
    with Registry(path) as r:
        r.add_source(Source(name="s", dsn="postgresql://u:hunter2@h:5432/db"))
        assert r.get_source("s").dsn == "postgresql://u@h:5432/db"
    assert b"hunter2" not in path.read_bytes()
    assert redact_dsn("host=h password=x user=u") == "host=h user=u"


def test_mirrors_crud(reg):
    with pytest.raises(NotFoundError):
        reg.add_mirror(SPEC)                                # source must exist (FK)
    reg.add_source(SRC)
    rec = reg.add_mirror(SPEC, connector_name="cdc_default")
    assert isinstance(rec, MirrorRecord) and rec.state == "pending" and rec.spec == SPEC
    assert reg.add_mirror(SPEC).name == SPEC.name           # idempotent for the same spec
    with pytest.raises(ConflictError):
        reg.add_mirror(SPEC.model_copy(update={"key_columns": ["id"]}))
    with pytest.raises(ConflictError):
        reg.add_mirror(SPEC.model_copy(update={"name": "dup"}))  # same table, other name

    upd = reg.update_mirror(SPEC.name, state="running", flink_job_id="abc")
    assert upd.state == "running" and upd.flink_job_id == "abc" and upd.updated_at >= rec.updated_at
    assert reg.get_mirror(SPEC.name).flink_job_id == "abc"
    assert [m.name for m in reg.list_mirrors(state="running")] == [SPEC.name]
    assert reg.list_mirrors(source="other") == []
    with pytest.raises(ValueError):
        reg.update_mirror(SPEC.name, name="x")
    with pytest.raises(NotFoundError):
        reg.update_mirror("missing", state="x")

    with pytest.raises(ConflictError):
        reg.remove_source("default")                        # still used
    assert reg.remove_mirror(SPEC.name) is True
    assert reg.remove_mirror(SPEC.name) is False
    assert reg.get_mirror(SPEC.name) is None
    assert reg.remove_source("default") is True


def test_events_newest_first_and_filtered(reg):
    ids = [reg.record_event("m1", "create", "user asked"), reg.record_event("m2", "create"),
           reg.record_event("m1", "restart", "task FAILED"), reg.record_event(None, "reconcile")]
    assert ids == sorted(ids)
    assert [e.action for e in reg.list_events()] == ["reconcile", "restart", "create", "create"]
    m1 = reg.list_events(mirror="m1")
    assert [(e.action, e.reason) for e in m1] == [("restart", "task FAILED"), ("create", "user asked")]
    assert len(reg.list_events(limit=2)) == 2


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lease_exclusive_between_two_registries(tmp_path):
    clock = Clock()
    a = Registry(tmp_path / "r.db", clock=clock)
    b = Registry(tmp_path / "r.db", clock=clock)
    try:
        assert a.acquire_lease("A", ttl_s=30)
        assert not b.acquire_lease("B", ttl_s=30)
        assert a.acquire_lease("A", ttl_s=30)               # re-entrant for the holder
        assert b.lease_holder() == ("A", 1030.0)
        assert not b.renew_lease("B", 30)
        clock.t += 20
        assert a.renew_lease("A", 30)
        clock.t += 25                                       # still within A's renewed ttl
        assert not b.acquire_lease("B", ttl_s=30)
        clock.t += 10                                       # A's lease expired
        assert b.acquire_lease("B", ttl_s=30)
        assert not a.renew_lease("A", 30)                   # A lost it
        assert not a.release_lease("A")
        assert b.release_lease("B")
        assert a.lease_holder() is None
        assert a.acquire_lease("A", ttl_s=30)
    finally:
        a.close()
        b.close()


def _contend(path: str, holder: str, start, out) -> None:
    r = Registry(path)
    start.wait()
    out.put((holder, r.acquire_lease(holder, ttl_s=60)))
    r.close()


def test_lease_exclusive_across_processes(tmp_path):
    path = str(tmp_path / "r.db")      # fresh file: the processes also race on the migrations
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(path, f"p{i}", start, out)) for i in range(3)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(ok for _, ok in results) == 1


def test_thread_safety_shared_connection(reg):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                reg.record_event(f"m{n}", "tick", str(i))
                reg.list_events(mirror=f"m{n}", limit=5)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(reg.list_events(limit=1000)) == 150
