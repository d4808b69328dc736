"""Fixtures for mirror tests: a service Context on its own registry, Postgres access, and
`wait_in_sync`, which compares Postgres with the mirror (Pinot when it runs, else the flat
topic's upsert state, which is exactly Pinot's input)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.mirrors import service
from cdc.core.settings import Settings


@pytest.fixture(scope="session")
def ctx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[service.Context]:
    s = settings.model_copy(update={"registry_path": tmp_path_factory.mktemp("registry") / "registry.db"})
    c = service.context(s)
    yield c
    for m in c.registry.list_mirrors():   # never leak connectors, jobs or slots
        try:
            service.remove_mirror(c, m.name, drop_data=True, progress=lambda _m: None)
        except Exception as exc:  # pragma: no cover - best effort cleanup
            print(f"cleanup of {m.name} failed: {exc}")
    c.close()


@pytest.fixture
def pg(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.local_postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def replica_pg(settings: Settings) -> Iterator[str]:
    """A throwaway Postgres cluster with wal_level=replica (for the preflight test)."""
    from cdc.stack.components import postgres_bin_dir
    from cdc.stack.process import port_in_use
    bindir = postgres_bin_dir(settings)
    port = 5499
    assert not port_in_use("127.0.0.1", port), "port 5499 is taken"
    root = Path(tempfile.mkdtemp(prefix="cdc-replica-pg-", dir="/var/tmp" if os.geteuid() == 0 else None))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log"), "-o",
                    f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
                    "-c wal_level=replica", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
