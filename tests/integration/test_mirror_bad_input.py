"""Bad input: a clear message, exit code != 0, and nothing created anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from cdc.mirrors import service
from cdc.core.errors import NotFoundError, PreflightError, UnreachableError
from syncing import stack_objects

pytestmark = pytest.mark.integration


def _cli(ctx: service.Context, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=120)


@pytest.fixture
def table(pg: psycopg.Connection):
    name = f"bad_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{name} (id int, v text)")   # no primary key
    yield name
    pg.execute(f"DROP TABLE IF EXISTS public.{name}")


def test_no_primary_key(ctx: service.Context, table: str) -> None:
    before = stack_objects(ctx)
    r = _cli(ctx, "mirror", "add", f"public.{table}")
    assert r.returncode == 1
    assert "no primary key" in r.stderr and "--key" in r.stderr
    assert stack_objects(ctx) == before


def test_unknown_table(ctx: service.Context) -> None:
    before = stack_objects(ctx)
    r = _cli(ctx, "mirror", "add", "public.no_such_table_xyz")
    assert r.returncode == 1 and "no_such_table_xyz" in r.stderr
    with pytest.raises(NotFoundError):
        service.add_mirror(ctx, "public", "no_such_table_xyz")
    assert stack_objects(ctx) == before


def test_wal_level_replica(ctx: service.Context, replica_pg: str) -> None:
    with psycopg.connect(replica_pg, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int primary key)")
    before = stack_objects(ctx)
    with pytest.raises(PreflightError) as ei:
        service.add_source(ctx, "replica_src", replica_pg)
        service.add_mirror(ctx, "public", "t", source="replica_src")
    assert "wal_level" in str(ei.value) and "logical" in str(ei.value)
    assert stack_objects(ctx) == before
    assert ctx.registry.list_mirrors(source="replica_src") == []


def test_role_without_replication(ctx: service.Context, pg: psycopg.Connection, table: str) -> None:
    role = f"noreplic_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 's3cret-{role}'")
    pg.execute(f"CREATE TABLE public.{table}_pk (id int primary key)")
    pg.execute(f"ALTER TABLE public.{table}_pk OWNER TO {role}")
    src = f"src_{role}"
    dsn = f"postgresql://{role}:s3cret-{role}@127.0.0.1:{ctx.settings.ports.postgres}/postgres"
    try:
        before = stack_objects(ctx)
        service.add_source(ctx, src, dsn)
        r = _cli(ctx, "mirror", "add", f"public.{table}_pk", "--source", src)
        assert r.returncode == 1
        assert "REPLICATION" in r.stderr
        assert f"s3cret-{role}" not in r.stderr + r.stdout        # the password never shows
        assert stack_objects(ctx) == before
    finally:
        pg.execute(f"DROP TABLE IF EXISTS public.{table}_pk")
        pg.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("system,env", [
    ("Kafka Connect", {"CDC_PORT_CONNECT": "1"}),
    ("Flink", {"CDC_PORT_SQL_GATEWAY": "1"}),
    ("Pinot", {"CDC_PINOT_MODE": "external", "CDC_PINOT_CONTROLLER_URL": "http://127.0.0.1:1"}),
])
def test_unreachable_system(ctx: service.Context, pg: psycopg.Connection, system: str, env: dict) -> None:
    t = f"unr_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{t} (id int primary key)")
    try:
        before = stack_objects(ctx)
        r = _cli(ctx, "mirror", "add", f"public.{t}", env=env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert system.split()[0] in r.stderr and ("cannot connect" in r.stderr or "unreach" in r.stderr.lower()
                                                  or "health" in r.stderr), r.stderr
        assert "Traceback" not in r.stderr
        assert stack_objects(ctx) == before
        assert not ctx.registry.get_mirror(f"public_{t}")
    finally:
        pg.execute(f"DROP TABLE public.{t}")


def test_unreachable_in_process_raises_typed_error(ctx: service.Context, pg: psycopg.Connection) -> None:
    t = f"unr_{uuid.uuid4().hex[:6]}"
    pg.execute(f"CREATE TABLE public.{t} (id int primary key)")
    bad = service.context(ctx.settings.model_copy(update={"ports": ctx.settings.ports.model_copy(
        update={"connect": 1})}))
    try:
        with pytest.raises(UnreachableError):
            service.add_mirror(bad, "public", t)
    finally:
        bad.close()
        pg.execute(f"DROP TABLE public.{t}")
