"""Tables named the way real ones are -- capitals, blanks, dots, quotes, reserved words,
non-ASCII -- added one after another to a source that already streams a table (issue 11,
item 1). Each table has rows before `mirror add` and a TOASTable column, so it needs
REPLICA IDENTITY FULL and an incremental snapshot. After each add the mirror must equal
Postgres (read through Pinot's own upsert code), FULL must be set, and the snapshot must
show as done in `mirror status`.

Own database (h_names), own source, own registry: the stack is shared with other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdc.core.settings import Settings
from cdc.mirrors import service
from cdc.postgres import catalog
from syncing import private_database_context, wait_in_sync

pytestmark = pytest.mark.integration
DB = "h_names"
SOURCE = "h_names"
ROWS = 300
ODD_TABLES = [("Sales", "Order Lines"), ("weird.schema", 'Tab"le'), ("public", "select"), ("Ünïcødé", "Grüße")]
# Long enough to span several of Connect's offset commits: Debezium 3.6.1 parses an incremental
# snapshot's table list back from its offsets after each commit, and a blank killed the task.
BIG = ("Big Schema", "Many Rows", 60_000)


def _dsn(settings: Settings, db: str) -> str:
    return f"postgresql://postgres@{settings.host}:{settings.ports.postgres}/{db}"


def _create(conn: psycopg.Connection, schema: str, table: str, rows: int = ROWS) -> None:
    """id primary key, a TOASTable text column (values stored out of line in the small
    tables: 3,200 characters, no compression), and an int."""
    t = sql.Identifier(schema, table)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL('CREATE TABLE {} (id int PRIMARY KEY, "Note Text" text, n int NOT NULL)').format(t))
    conn.execute(sql.SQL('ALTER TABLE {} ALTER COLUMN "Note Text" SET STORAGE EXTERNAL').format(t))
    width = 100 if rows <= ROWS else 1
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, repeat(md5(g::text), %s), g FROM generate_series(1, %s) g")
                 .format(t), (width, rows))


def _cli(ctx: service.Context, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file),
           "CDC_POSTGRES_DSN": ctx.settings.source_dsn()}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _change(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Updates that leave the TOASTed column untouched (only FULL brings its value along),
    a delete and an insert."""
    t = sql.Identifier(schema, table)
    conn.execute(sql.SQL("UPDATE {} SET n = n + 1000 WHERE id % 3 = 0").format(t))
    conn.execute(sql.SQL("DELETE FROM {} WHERE id BETWEEN 10 AND 19").format(t))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (100000, 'late', 1)").format(t))


@pytest.fixture(scope="module")
def names_ctx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[service.Context]:
    with private_database_context(settings, Path(tmp_path_factory.mktemp("names")), DB, SOURCE,
                                  lambda db: _dsn(settings, db)) as ctx:
        yield ctx


def test_odd_names_added_to_a_running_source(names_ctx: service.Context) -> None:
    ctx = names_ctx
    dsn = _dsn(ctx.settings, DB)
    service.add_source(ctx, SOURCE, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.base (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.base SELECT g, 'v' || g FROM generate_series(1, 50) g")
        base = service.add_mirror(ctx, "public", "base", source=SOURCE, progress=print)
        wait_in_sync(ctx, base.name, timeout=180)
        problems: list[str] = []
        for schema, table, rows in [(s, t, ROWS) for s, t in ODD_TABLES] + [BIG]:
            name = catalog.qualified_name(schema, table)
            _create(conn, schema, table, rows)
            t0 = time.monotonic()
            # Debezium's snapshot of odd names is what this test is about (the copy load quotes names
            # itself: tests/integration/test_load_formats.py)
            rec = service.add_mirror(ctx, schema, table, source=SOURCE, progress=print, load="debezium")
            print(f"{name}: mirror add returned after {time.monotonic() - t0:.1f}s")
            task = ctx.connect.status(service.connector_name(SOURCE))
            if task is None or not task.running:
                problems.append(f"{name}: connector not RUNNING after the add: {task}")
            actions = [e.action for e in ctx.registry.list_events(rec.name)]
            if rec.state != "running" or "snapshot_started" not in actions:
                problems.append(f"{name}: add returned state {rec.state}, events {actions}: snapshot not confirmed")
            ident = catalog.introspect(conn, schema, table).replica_identity
            if ident != "full":
                problems.append(f"{name}: REPLICA IDENTITY is {ident}, not full")
            for phase in ("rows before the add", "changes after the add"):
                if phase.startswith("changes"):
                    _change(conn, schema, table)
                try:
                    print(f"{name}: {phase} in sync after {wait_in_sync(ctx, rec.name, timeout=180):.1f}s")
                except AssertionError as exc:
                    problems.append(f"{name}: {phase}: {str(exc)[:300]}")
                    break
            snap = service.mirror_status(ctx, rec.name).get("snapshot") or {}
            print(f"{name}: status snapshot {snap}")
            if snap.get("state") != "done" or snap.get("rows") != rows:
                problems.append(f"{name}: mirror status shows snapshot {snap}, not done with {rows} rows")
            if (schema, table) == ODD_TABLES[0]:           # the CLI's words for it
                cli = _cli(ctx, "mirror", "status", rec.name)
                print(cli.stdout)
                if f" done: {ROWS} rows" not in cli.stdout:
                    problems.append(f"{name}: `cdc mirror status` printed {cli.stdout!r} {cli.stderr[-300:]!r}")
        wait_in_sync(ctx, base.name, timeout=60)          # the first table kept streaming
        task = ctx.connect.status(service.connector_name(SOURCE))
        assert task is not None and task.running, task
    assert not problems, "\n".join(problems)
