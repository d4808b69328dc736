"""The REST API against the real local stack: uvicorn on a free 127.0.0.1 port, in process.

Everything here is this test's own: the database h_api (source h_api, so connector
cdc-h_api and slot cdc_h_api), a tmp registry, and the mirror, which is removed at the end.
The mirror is checked in full against Postgres: through Pinot when it runs, else through the
flat topic's upsert state (exactly Pinot's input; see cdc.mirrors.state).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import uvicorn
from pydantic import SecretStr

from cdc.core import names
from cdc.postgres import catalog
from cdc.mirrors import state as mirror_state
from cdc.mirrors import service
from cdc.api.app import create_app
from cdc.core.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_DSN = f"postgresql://postgres@127.0.0.1:{Settings().ports.postgres}/postgres"   # password: PGPASSFILE (conftest)
DB, SOURCE = "h_api", "h_api"
DSN = f"postgresql://postgres@127.0.0.1:{Settings().ports.postgres}/{DB}"
TABLE = "api_items"
MIRROR = names.mirror_name("public", TABLE, SOURCE)


def _password() -> str:
    """The stack Postgres' real password (scram-sha-256): a DSN carrying it connects, and it
    must never come back in an answer or a log."""
    from cdc.core.stack_secrets import postgres_password
    pw = postgres_password(Settings().state_dir)
    assert pw, "the stack's Postgres has no generated password"
    return pw


class _Collect(logging.Handler):
    """Every log record of the server's lifetime (caplog only shows one test phase)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def database(stack: dict) -> Iterator[str]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DB}")
    yield DSN


def _remove_leftovers(ctx: service.Context) -> None:
    """A crashed earlier run may have left this test's connector, slot or jobs behind (its
    registry was a tmp file). Only objects named after source h_api are touched."""
    if ctx.connect.get_config(names.connector_name(SOURCE)):
        ctx.connect.delete(names.connector_name(SOURCE))
    for job in ctx.jobmanager.jobs():
        info = ctx.jobmanager.job(job.id) or {}
        if str(info.get("name", "")).startswith(names.flink_pipeline(MIRROR)) and job.state == "RUNNING":
            ctx.jobmanager.cancel(job.id)
    with psycopg.connect(DSN, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while (row := conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_h_api'")
               .fetchone()) is not None and time.monotonic() < deadline:
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot('cdc_h_api')")
            time.sleep(0.5)


@pytest.fixture
def server(database: str, settings: Settings, tmp_path: Any) -> Iterator[tuple[str, dict[str, str], Settings]]:
    token = secrets.token_urlsafe(24)
    s = settings.model_copy(update={"registry_path": tmp_path / "registry.db", "api_token": SecretStr(token)})
    ctx = service.context(s)
    _remove_leftovers(ctx)
    port = _free_port()
    logs, root = _Collect(), logging.getLogger()
    root.addHandler(logs)                # log_config=None: uvicorn's records propagate to root
    old_level = root.level
    root.setLevel(logging.DEBUG)
    srv = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=port, log_config=None,
                                        access_log=True, log_level="info"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}, s
    finally:
        for m in ctx.registry.list_mirrors():            # never leak connectors, jobs or slots
            try:
                service.remove_mirror(ctx, m.name, drop_data=True, progress=lambda _m: None)
            except Exception as exc:  # pragma: no cover - best effort cleanup
                print(f"cleanup of {m.name} failed: {exc}")
        ctx.close()
        srv.should_exit = True
        thread.join(30)
        root.removeHandler(logs)
        root.setLevel(old_level)
        text = "\n".join(r.getMessage() for r in logs.records)
        assert token not in text, "the token reached a log"
        assert _password() not in text, "a DSN password reached a log"
        assert any(r.name == "uvicorn.access" for r in logs.records), "no access log captured"


def _mirror_rows(s: Settings, info: Any) -> mirror_state.Rows:
    ctx = service.context(s)
    try:
        return service.read_mirror(ctx, MIRROR)[0]
    finally:
        ctx.close()


def _wait_in_sync(s: Settings, timeout: float = 150.0) -> None:
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with catalog.connect(DSN) as conn:
            info = catalog.introspect(conn, "public", TABLE)
            expected = mirror_state.postgres_rows(conn, info)
        last = mirror_state.diff(expected, _mirror_rows(s, info))
        if not (last["missing"] or last["extra"] or last["differing"]):
            return
        time.sleep(1)
    raise AssertionError(f"mirror not equal to Postgres after {timeout}s: {last}")


def test_mirror_lifecycle_through_rest(server: tuple[str, dict[str, str], Settings]) -> None:
    url, auth, s = server
    with psycopg.connect(DSN, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS public.{TABLE}")
        pg.execute(f"CREATE TABLE public.{TABLE} (id int primary key, name text not null, qty int, "
                   "price numeric(10,2), seen timestamptz)")
        pg.execute(f"INSERT INTO public.{TABLE} SELECT g, 'item ' || g, g % 7, g / 3.0, now() "
                   "FROM generate_series(1, 200) g")

        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{url}/mirrors", timeout=10).status_code == 401
        ready = requests.get(f"{url}/readyz", headers=auth, timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["pinot_controller"]["status"] in ("up", "disabled")

        r = requests.post(f"{url}/sources", json={"name": SOURCE, "dsn": DSN}, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        # a DSN with the real password connects; the password must never come back
        PASSWORD = _password()
        pw_dsn = DSN.replace("postgres@", f"postgres:{PASSWORD}@")
        r = requests.post(f"{url}/sources", json={"name": f"{SOURCE}_pw", "dsn": pw_dsn}, headers=auth, timeout=30)
        assert r.status_code == 201 and r.json()["has_password"] and PASSWORD not in r.text, r.text
        assert PASSWORD not in requests.get(f"{url}/sources", headers=auth, timeout=30).text
        assert requests.delete(f"{url}/sources/{SOURCE}_pw", headers=auth, timeout=30).status_code == 200
        plan = requests.post(f"{url}/mirrors/plan", json={"table": f"public.{TABLE}", "source": SOURCE},
                             headers=auth, timeout=60)
        assert plan.status_code == 200, plan.text
        assert plan.json()["name"] == MIRROR and plan.json()["flink_sql"]

        r = requests.post(f"{url}/mirrors", json={"table": f"public.{TABLE}", "source": SOURCE},
                          headers=auth, timeout=300)
        assert r.status_code == 201, r.text
        rec = r.json()
        assert rec["name"] == MIRROR and rec["state"] == "running" and rec["flink_job_id"]
        again = requests.post(f"{url}/mirrors", json={"schema": "public", "table": TABLE, "source": SOURCE},
                              headers=auth, timeout=300)
        assert again.status_code == 200, again.text
        other = requests.post(f"{url}/mirrors", json={"table": f"public.{TABLE}", "source": SOURCE, "key": ["id"]},
                              headers=auth, timeout=300)
        assert other.status_code == 409, other.text

        _wait_in_sync(s)
        pg.execute(f"INSERT INTO public.{TABLE} VALUES (1000, 'late', 1, 9.99, now())")
        pg.execute(f"UPDATE public.{TABLE} SET qty = qty + 100, name = 'changed' WHERE id <= 20")
        pg.execute(f"DELETE FROM public.{TABLE} WHERE id BETWEEN 50 AND 59")
        _wait_in_sync(s)

        r = requests.post(f"{url}/mirrors/{MIRROR}/pause", headers=auth, timeout=300)
        assert r.status_code == 200 and r.json()["action"] == "pause", r.text
        assert requests.get(f"{url}/mirrors/{MIRROR}", headers=auth, timeout=30).json()["state"] == "paused"
        pg.execute(f"UPDATE public.{TABLE} SET price = price * 2 WHERE id > 100")     # while paused
        r = requests.post(f"{url}/mirrors/{MIRROR}/resume", headers=auth, timeout=300)
        assert r.status_code == 200 and r.json()["result"], r.text
        r = requests.post(f"{url}/mirrors/{MIRROR}/resync", headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        _wait_in_sync(s)
        r = requests.get(f"{url}/mirrors/{MIRROR}/verify", headers=auth, timeout=300)
        assert r.status_code == 200 and r.json()["result"]["clean"] is True, r.text

        st = requests.get(f"{url}/mirrors/{MIRROR}/status", headers=auth, timeout=30).json()
        assert st["connector"]["state"] == "RUNNING" and st["flink_job"]["state"] == "RUNNING", st
        job_id_now = st["flink_job"]["id"]
        events = requests.get(f"{url}/events", params={"mirror": MIRROR}, headers=auth, timeout=30).json()
        actions = [e["action"] for e in events][::-1]              # oldest first
        assert actions[0] == "add_started" and "created" in actions, actions
        metrics = requests.get(f"{url}/metrics", headers=auth, timeout=30)
        assert metrics.status_code == 200, metrics.text
        job_line = (f'cdc_flink_job_state{{mirror="{MIRROR}",source="{SOURCE}",job_id="{job_id_now}",'
                    f'state="RUNNING"}} 1')
        assert job_line in metrics.text and \
            f'cdc_mirror_state{{mirror="{MIRROR}",source="{SOURCE}",state="running"}} 1' in metrics.text, metrics.text

        job_id = requests.get(f"{url}/mirrors/{MIRROR}", headers=auth, timeout=30).json()["flink_job_id"]
        r = requests.delete(f"{url}/mirrors/{MIRROR}", params={"drop_data": "true"}, headers=auth, timeout=300)
        assert r.status_code == 200, r.text
        assert requests.get(f"{url}/mirrors/{MIRROR}", headers=auth, timeout=30).status_code == 404
        ctx = service.context(s)
        try:
            assert names.connector_name(SOURCE) not in ctx.connect.list_connectors()
            deadline = time.monotonic() + 60
            while (state := ctx.jobmanager.job_state(job_id)) not in ("CANCELED", None):
                assert time.monotonic() < deadline, f"flink job still {state}"
                time.sleep(1)
            from cdc.clients.kafka import KafkaAdmin
            assert names.flat_topic(MIRROR) not in KafkaAdmin(s.kafka_bootstrap).topics()
        finally:
            ctx.close()
        assert pg.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_h_api'").fetchone() is None
        assert requests.delete(f"{url}/sources/{SOURCE}", headers=auth, timeout=30).status_code == 200
        pg.execute(f"DROP TABLE public.{TABLE}")
