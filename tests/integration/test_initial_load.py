"""The copy load is exact while the table keeps changing (cdc/mirrors/initial_load.py).

Real stack; the mirror is read through Pinot's own ingestion and upsert code (no server here).
A transaction opened before `mirror add` inserts, updates and deletes rows of the table; the
add starts in a thread; the transaction commits while the add waits for it ("waiting for 1
transaction(s) open since ... joined the publication"); writes go on at a steady rate during
the load and after it. pgoutput never publishes what that transaction wrote before the table
joined the publication, so only the load can carry it: `cdc mirror verify` must be clean.

The second test runs the same scenario without the wait (open transactions patched away) and
commits the transaction after the load has read the table: its three changes are lost, and
verify must say so. It shows that the first test can fail. It runs without the other writes:
with them, pgoutput's relation cache (filled "published" by a transaction that committed after
the table joined) happens to publish T1's early changes too, and the broken variant passes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from cdc.mirrors import service
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.postgres import open_xacts
from syncing import Background, TableWriter, open_t1, wait_for

pytestmark = pytest.mark.integration
ROWS = 300_000
RATE = 100                      # writer transactions per second during and after the load


@pytest.fixture
def table(pg: psycopg.Connection) -> Iterator[str]:
    name = f"load_{uuid.uuid4().hex[:6]}"
    t = sql.Identifier("public", name)
    pg.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v int NOT NULL, note text, ts timestamptz)").format(t))
    # set before the open transaction: ALTER TABLE ... REPLICA IDENTITY would wait for its lock
    pg.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(t))
    pg.execute(sql.SQL("INSERT INTO {} SELECT g, g %% 1000, 'row ' || g, now() FROM generate_series(1, %s) g")
               .format(t), (ROWS,))
    pg.execute(sql.SQL("ANALYZE {}").format(t))
    yield name
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))


def _scenario(ctx: service.Context, pg_dsn: str, name: str, *, commit_when: str,
              writes: bool = True) -> tuple[service.MirrorRecord, list[str]]:
    """Open T1 (insert + update + delete), add the mirror in a thread, commit T1 once a message
    containing `commit_when` appears, keep writing (`writes`); returns the mirror and the add's
    messages."""
    said: list[str] = []
    t1 = open_t1(pg_dsn, name, ROWS + 1)
    writer = TableWriter(pg_dsn, name, ROWS, RATE)
    adder = Background(lambda: service.add_mirror(ctx, "public", name, load="copy", progress=said.append))
    if writes:
        writer.start()
    adder.start()
    try:
        try:
            wait_for(f"the add to say {commit_when!r}",
                     lambda: any(commit_when in m for m in said) or adder.error is not None, timeout=180, poll=0.05)
        except AssertionError:
            print("\n".join(said))
            raise
        t1.commit()
        said.append("test: T1 committed")
        adder.join(300)
        assert adder.error is None, adder.error
        time.sleep(3)                                 # writes go on after the load too
    finally:
        writer.stop.set()
        if writes:
            writer.join(10)
        t1.close()
    assert writer.error is None, writer.error
    assert writer.done > RATE or not writes, f"only {writer.done} writer transactions"
    print("\n".join(said))
    return adder.result, said


@pytest.fixture
def connector(request: pytest.FixtureRequest, ctx: service.Context, pg: psycopg.Connection) -> Iterator[str]:
    """"existing": another mirror of the source runs, so the table joins a running connector
    (ALTER PUBLICATION, task restart); "new": the add creates the connector and its slot."""
    assert not ctx.registry.list_mirrors(), "the test needs a source without mirrors"
    if request.param == "new":
        yield "new"
        return
    name = f"anchor_{uuid.uuid4().hex[:6]}"
    pg.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier("public", name)))
    rec = service.add_mirror(ctx, "public", name, progress=print)
    yield "existing"
    service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
    pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("public", name)))


@pytest.mark.parametrize(("connector", "writes"), [("existing", True), ("existing", False), ("new", True)],
                         indirect=["connector"])
def test_copy_load_is_exact_under_writes_and_an_open_transaction(ctx: service.Context, table: str,
                                                                 connector: str, writes: bool) -> None:
    dsn = ctx.settings.local_postgres_dsn
    rec, said = _scenario(ctx, dsn, table, commit_when="transaction(s) open since", writes=writes)
    try:
        assert said.index("test: T1 committed") < next(i for i, m in enumerate(said) if m.startswith("load: public."))
        assert any(m.startswith("postgres: waiting for") for m in said)
        status = service.mirror_status(ctx, rec.name)
        assert status["load"]["state"] == "done" and status["load"]["rows"] >= ROWS, status["load"]
        assert status["snapshot"]["state"] == "not_used"
        report = verify_mirror(ctx, rec.name, settle_timeout=90)
        print(format_report(report))
        assert report.clean, format_report(report)
        assert report.source_rows > ROWS - 1000
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)


@pytest.mark.parametrize("connector", ["existing"], indirect=True)
def test_without_the_wait_the_open_transaction_is_lost(ctx: service.Context, table: str, connector: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken variant: no wait for transactions open when the table joined the publication.
    Without other writes: once any transaction that commits after the ALTER PUBLICATION has
    touched the table, pgoutput's relation cache says "published" and T1's earlier changes are
    sent after all (seen in this test with the writer on); the wait makes both cases exact."""
    monkeypatch.setattr(open_xacts, "open_now", lambda conn: [])
    rec, said = _scenario(ctx, ctx.settings.local_postgres_dsn, table, commit_when=f"load public_{table}: done",
                          writes=False)
    try:
        report = verify_mirror(ctx, rec.name, settle_timeout=15)
        print(format_report(report))
        assert not report.clean
        assert (report.missing, report.extra, report.differing) == (1, 1, 1), format_report(report)
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
