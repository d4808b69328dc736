"""An existing Postgres with password authentication (scram-sha-256), a role that is not a
superuser, and a password with every character that broke DSN strings before (quotes,
backslashes, blanks, '=' and non-ASCII): `cdc source add` with the password from an
environment variable, a file or a prompt, then a mirror through Debezium that is exact.
CDC_POSTGRES_DSN with a password renders a connector that references the stored password."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdc.core.errors import PreflightError
from cdc.core.settings import Settings
from cdc.mirrors import service, sources
from cdc.postgres import catalog
from syncing import wait_in_sync

pytestmark = pytest.mark.integration
PORT = 5520
ROLE = "cdc app"                                  # a blank in the role name too
PASSWORD = "pa'ss\\wörd \"x\" y=1 €"
DSN = f"postgresql://cdc%20app@127.0.0.1:{PORT}/app"


@pytest.fixture(scope="module")
def scram_pg(settings: Settings) -> Iterator[Path]:
    """A second cluster: wal_level=logical, TCP only with scram-sha-256; returns its socket dir."""
    from cdc.stack.components import postgres_bin_dir
    from cdc.stack.process import port_in_use
    assert not port_in_use("127.0.0.1", PORT), f"port {PORT} is taken"
    bindir = postgres_bin_dir(settings)
    root = Path(tempfile.mkdtemp(prefix="cdc-scram-pg-", dir="/var/tmp" if os.geteuid() == 0 else None))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256"], check=True, capture_output=True)
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-c port={PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
                    "-c wal_level=logical -c password_encryption=scram-sha-256", "start"],
                   check=True, capture_output=True)
    try:
        with psycopg.connect(host=str(root), port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)))
            c.execute(sql.SQL("CREATE DATABASE app OWNER {}").format(sql.Identifier(ROLE)))
            c.execute("CREATE ROLE nobody_special LOGIN PASSWORD 'x'")
        with psycopg.connect(host=str(root), port=PORT, user="postgres", dbname="app", autocommit=True) as c:
            c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(ROLE)))
            c.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2))")
            c.execute("INSERT INTO public.items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 300) g")
        yield root
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _cli(ctx: service.Context, *args: str, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=full,
                          input=stdin, timeout=120)


def test_wrong_password_is_refused_cleanly(ctx: service.Context, scram_pg: Path) -> None:
    out = _cli(ctx, "source", "add", "pw_wrong", "--dsn", DSN, "--password-env", "PW", env={"PW": "nope"})
    assert out.returncode == 1 and "password authentication failed" in out.stderr, out.stderr
    assert "nope" not in out.stderr and ctx.registry.get_source("pw_wrong") is None


@pytest.mark.parametrize("how", ["env", "file", "prompt"])
def test_password_from_env_file_or_prompt(ctx: service.Context, scram_pg: Path, tmp_path: Path, how: str) -> None:
    name = f"pw_{how}"
    if how == "env":
        out = _cli(ctx, "source", "add", name, "--dsn", DSN, "--password-env", "PW", env={"PW": PASSWORD})
    elif how == "file":
        f = tmp_path / "pw"
        f.write_text(PASSWORD + "\n", encoding="utf-8")
        out = _cli(ctx, "source", "add", name, "--dsn", DSN, "--password-file", str(f))
    else:
        out = _cli(ctx, "source", "add", name, "--dsn", DSN, "--password-prompt", stdin=PASSWORD + "\n")
    try:
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stdout + out.stderr
        src = ctx.registry.get_source(name)
        assert src is not None and PASSWORD not in src.dsn and src.has_password
        secret = sources.secret_file(ctx.settings, name)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and PASSWORD not in secret.read_text()
        with catalog.connect(service.source_dsn(ctx, src)) as conn:    # the stored password works
            assert conn.execute("SELECT current_user").fetchone()[0] == ROLE
    finally:
        service.remove_source(ctx, name)


def test_mirror_through_debezium_with_that_password(ctx: service.Context, scram_pg: Path) -> None:
    """Connect resolves the stored password (Java Properties escapes) and Debezium logs in
    with scram-sha-256 as the non-superuser owner of the table: the mirror is exact."""
    out = _cli(ctx, "source", "add", "pw_mirror", "--dsn", DSN, "--password-env", "PW", env={"PW": PASSWORD})
    assert out.returncode == 0, out.stderr
    rec = None
    try:
        rec = service.add_mirror(ctx, "public", "items", source="pw_mirror", progress=print)
        cfg = ctx.connect.get_config(service.connector_name("pw_mirror")) or {}
        assert cfg["database.password"].startswith("${file:") and PASSWORD not in str(cfg)
        print(f"snapshot in sync after {wait_in_sync(ctx, rec.name, timeout=180):.1f}s")
        with catalog.connect(sources.with_password(DSN, PASSWORD)) as conn:
            conn.execute("UPDATE public.items SET price = price * 2 WHERE id <= 50")
            conn.execute("DELETE FROM public.items WHERE id > 290")
            conn.execute("INSERT INTO public.items VALUES (1000, 'new', 1.00)")
        print(f"changes in sync after {wait_in_sync(ctx, rec.name, timeout=120):.1f}s")
    finally:
        if rec is not None:
            service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
        service.remove_source(ctx, "pw_mirror")


def test_preflight_names_what_a_plain_role_lacks(scram_pg: Path) -> None:
    with psycopg.connect(host=str(scram_pg), port=PORT, user="postgres", dbname="app", autocommit=True) as c:
        c.execute("GRANT CONNECT ON DATABASE app TO nobody_special")
    with catalog.connect(f"postgresql://nobody_special:x@127.0.0.1:{PORT}/app") as conn:
        with pytest.raises(PreflightError) as ei:
            catalog.preflight(conn, "public", "items", None)
    msg = ei.value.message
    assert "may not replicate" in msg and "does not own" in msg and "may not SELECT" in msg, msg
    assert "ALTER ROLE nobody_special REPLICATION" in (ei.value.hint or "")


def test_postgres_dsn_with_password_renders_a_reference(settings: Settings, scram_pg: Path, tmp_path: Path) -> None:
    """CDC_POSTGRES_DSN with a password: the default source's connector gets a ${file:...}
    reference to the stored password (before, render refused: "needs a password")."""
    from psycopg.conninfo import make_conninfo
    s = settings.model_copy(update={"state_dir": tmp_path, "registry_path": tmp_path / "r.db",
                                    "postgres_dsn": __import__("pydantic").SecretStr(make_conninfo(DSN, password=PASSWORD))})
    c = service.context(s)
    try:
        plan = service.plan_mirror(c, "public", "items")
        ref = plan.connector["database.password"]
        assert ref == f"${{file:{sources.secret_file(s, 'default')}:password}}"
        assert sources.read_password(s, "default") == PASSWORD and PASSWORD not in str(plan.connector)
        assert plan.connector["database.user"] == ROLE
    finally:
        c.close()
