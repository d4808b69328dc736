"""ConnectClient against the fake adapter: error mapping, idempotent PUT, 409 retry, waiting."""

from __future__ import annotations

import pytest
import requests

from cdc.clients.connect import ConnectClient, ConnectorStatus
from cdc.clients.http import HttpClient, scrub
from cdc.core.errors import PermanentRemoteError, TransientRemoteError, UnreachableError
from fakes import FakeClock, FakeServer, fake_session, no_sleep

BASE = "http://connect.test:8083"

RUNNING = {"name": "src", "type": "source",
           "connector": {"state": "RUNNING", "worker_id": "w1:8083"},
           "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w1:8083"}]}


def client(server: FakeServer, **kw) -> ConnectClient:
    kw.setdefault("sleep", no_sleep)
    return ConnectClient(BASE, session=server.session(), **kw)


def test_status_typed():
    server = FakeServer().route("GET", "/connectors/src/status", 200, RUNNING)
    st = client(server).status("src")
    assert isinstance(st, ConnectorStatus)
    assert st.state == "RUNNING" and st.worker_id == "w1:8083"
    assert st.tasks[0].id == 0 and st.tasks[0].state == "RUNNING"
    assert st.running and not st.failed


def test_status_404_is_none():
    server = FakeServer().route("GET", "/connectors/nope/status", 404,
                                {"error_code": 404, "message": "No status found for connector nope"})
    assert client(server).status("nope") is None
    assert client(server).get_config("nope") is None


def test_500_is_transient_and_names_system():
    server = FakeServer().route("GET", "/connectors", 500, {"error_code": 500, "message": "boom"})
    with pytest.raises(TransientRemoteError) as ei:
        client(server).list_connectors()
    assert ei.value.status == 500
    assert "Kafka Connect at http://connect.test:8083" in str(ei.value)
    assert "boom" in str(ei.value)


def test_429_is_transient():
    server = FakeServer().route("GET", "/connector-plugins", 429, "slow down")
    with pytest.raises(TransientRemoteError):
        client(server).plugins()


def test_400_is_permanent_with_message():
    server = FakeServer().route("PUT", "/connectors/src/config", 400,
                                {"error_code": 400, "message": "Connector configuration is invalid"})
    with pytest.raises(PermanentRemoteError) as ei:
        client(server).put_config("src", {"connector.class": "x"})
    assert ei.value.status == 400 and "invalid" in str(ei.value)


def test_connection_refused_is_unreachable():
    c = ConnectClient("http://127.0.0.1:1", timeout=2)
    with pytest.raises(UnreachableError) as ei:
        c.list_connectors()
    assert "Kafka Connect at http://127.0.0.1:1" in str(ei.value)
    assert ei.value.transient


def test_read_timeout_is_transient():
    def handler(request):
        raise requests.ReadTimeout("read timed out")
    c = ConnectClient(BASE, session=fake_session(handler))
    with pytest.raises(TransientRemoteError):
        c.list_connectors()


def test_put_config_sends_put_and_is_idempotent():
    server = FakeServer().route("PUT", "/connectors/src/config",
                                lambda call: (200, {"name": "src", "config": call.body, "tasks": []}))
    c = client(server)
    cfg = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "tasks.max": 1,
           "snapshot.new.tables": True}
    c.put_config("src", cfg)
    c.put_config("src", cfg)
    puts = server.find("PUT", "/connectors/src/config")
    assert len(puts) == 2 and not server.find("POST", "/connectors")
    assert puts[0].body == {"connector.class": cfg["connector.class"], "tasks.max": "1",
                            "snapshot.new.tables": "true"}


def test_put_config_retries_409_rebalance():
    conflict = (409, {"error_code": 409, "message": "Cannot complete request momentarily due to stale configuration"})
    server = FakeServer().route("PUT", "/connectors/src/config", [conflict, conflict, (201, {"name": "src"})])
    slept: list[float] = []
    c = client(server, sleep=slept.append)
    assert c.put_config("src", {"a": "b"}) == {"name": "src"}
    assert len(server.calls) == 3 and slept == [0.5, 1.0]


def test_put_config_gives_up_after_attempts():
    server = FakeServer().route("PUT", "/connectors/src/config", 409, {"error_code": 409, "message": "rebalancing"})
    with pytest.raises(PermanentRemoteError):
        client(server, retry_attempts=3).put_config("src", {})
    assert len(server.calls) == 3


def test_password_not_in_error():
    server = FakeServer().route("PUT", "/connectors/src/config", 400,
                                {"error_code": 400, "message": 'bad value "database.password": "hunter2" here'})
    with pytest.raises(PermanentRemoteError) as ei:
        client(server).put_config("src", {"database.password": "hunter2"})
    assert "hunter2" not in str(ei.value)


def test_delete_retries_409_and_404_is_false():
    server = FakeServer().route("DELETE", "/connectors/src", [(409, {"message": "rebalance"}), (204, None)])
    server.route("DELETE", "/connectors/gone", 404, {"message": "not found"})
    c = client(server)
    assert c.delete("src") is True
    assert c.delete("gone") is False


def test_restart_pause_resume_stop_offsets():
    server = (FakeServer()
              .route("POST", "/connectors/src/restart", 202, RUNNING)
              .route("PUT", "/connectors/src/(pause|resume|stop)", 202, None)
              .route("GET", "/connectors/src/offsets", 200,
                     {"offsets": [{"partition": {"server": "db"}, "offset": {"lsn": 42}}]})
              .route("DELETE", "/connectors/src/offsets", 200, {"message": "offsets reset"}))
    c = client(server)
    c.restart("src")
    assert server.calls[-1].params == {"includeTasks": "true", "onlyFailed": "true"}
    c.pause("src"), c.resume("src"), c.stop("src")
    assert [x.path.rsplit("/", 1)[1] for x in server.find("PUT", "/connectors/src/.*")] == ["pause", "resume", "stop"]
    assert c.get_offsets("src")[0]["offset"] == {"lsn": 42}
    assert c.delete_offsets("src") == "offsets reset"


def test_wait_running_polls_with_progress():
    starting = {"name": "src", "connector": {"state": "RUNNING", "worker_id": "w"}, "tasks": []}
    server = FakeServer().route("GET", "/connectors/src/status", [(404, {}), (200, starting), (200, RUNNING)])
    seen: list = []
    st = client(server).wait_running("src", timeout=30, poll=1, progress=seen.append)
    assert st.running and seen[0] is None and len(seen) == 3


def test_wait_running_failed_task_raises_with_trace():
    failed = {"name": "src", "connector": {"state": "RUNNING", "worker_id": "w"},
              "tasks": [{"id": 0, "state": "FAILED", "worker_id": "w",
                         "trace": "org.postgresql.util.PSQLException: replication slot is active\n\tat x"}]}
    server = FakeServer().route("GET", "/connectors/src/status", 200, failed)
    with pytest.raises(PermanentRemoteError) as ei:
        client(server).wait_running("src", timeout=30)
    assert "replication slot is active" in str(ei.value) and "\tat x" not in str(ei.value)


def test_wait_running_times_out():
    clock = FakeClock()
    server = FakeServer().route("GET", "/connectors/src/status", 404, {})
    c = ConnectClient(BASE, session=server.session(), sleep=clock.sleep, clock=clock)
    with pytest.raises(TransientRemoteError, match="not RUNNING after 10s"):
        c.wait_running("src", timeout=10, poll=2)


def test_scrub_and_label_redaction():
    assert "pw" not in HttpClient("X", "http://user:pw@h:1").label
    assert scrub("password=abc&x=1") == "password=***&x=1"
    assert scrub('{"db.password": "s3cr3t"}') == '{"db.password": "***"}'
    assert scrub("jdbc postgresql://u:s3cr3t@h/db") == "jdbc postgresql://***@h/db"
