"""SqlGatewayClient and JobManagerClient against the fake adapter."""

from __future__ import annotations

import pytest

from cdc.clients.flink import JobManagerClient, SqlGatewayClient, root_cause
from cdc.core.errors import PermanentRemoteError, TransientRemoteError, UnreachableError
from fakes import FakeClock, FakeServer, no_sleep

GW = "http://gateway.test:8082"
JM = "http://jm.test:8081"
S = "/v3/sessions/s-1"
JOB = "a5e0edd8e66b53f1b89c2041f91b8fd2"

GATEWAY_ERROR = {"errors": [
    "Internal server error.",
    "<Exception on server side:\norg.apache.flink.table.gateway.api.utils.SqlGatewayException: "
    "Failed to fetchResults.\n\tat org.apache.flink.Foo.bar(Foo.java:1)\n"
    "Caused by: org.apache.flink.table.gateway.service.utils.SqlExecutionException: Failed to execute the operation\n"
    "Caused by: org.apache.flink.table.api.ValidationException: Could not find any factory for identifier "
    "'upsert-kafka' that implements 'org.apache.flink.table.factories.DynamicTableFactory'\n\tat x.y(Z.java:2)\n"
    "End of exception on server side>"]}


def gateway(server: FakeServer) -> SqlGatewayClient:
    return SqlGatewayClient(GW, session=server.session(), sleep=no_sleep)


def insert_result(call):
    return 200, {"resultType": "PAYLOAD", "isQueryResult": False, "jobID": JOB, "resultKind": "SUCCESS_WITH_CONTENT",
                 "results": {"columns": [{"name": "job id", "logicalType": {"type": "VARCHAR"}, "comment": None}],
                             "rowFormat": "JSON", "data": [{"kind": "INSERT", "fields": [JOB]}]},
                 "nextResultUri": f"{S}/operations/op-ins/result/1?rowFormat=JSON"}


def happy_gateway() -> FakeServer:
    ops = iter(["op-ddl1", "op-ddl2", "op-ins"])
    return (FakeServer()
            .route("POST", "/v3/sessions", 200, {"sessionHandle": "s-1"})
            .route("POST", f"{S}/statements", lambda call: (200, {"operationHandle": next(ops)}))
            .route("GET", f"{S}/operations/op-ins/status", [(200, {"status": "RUNNING"}), (200, {"status": "FINISHED"})])
            .route("GET", f"{S}/operations/op-[a-z0-9]+/status", 200, {"status": "FINISHED"})
            .route("GET", f"{S}/operations/op-ins/result/0", insert_result)
            .route("DELETE", S, 200, {"status": "CLOSED"}))


def test_submit_job_returns_job_id_and_closes_session():
    server = happy_gateway()
    job = gateway(server).submit_job(["CREATE TABLE a (...)", "CREATE TABLE b (...)", "INSERT INTO b SELECT * FROM a"],
                                     {"pipeline.name": "mirror_x", "execution.checkpointing.interval": 10000})
    assert job == JOB
    opened = server.find("POST", "/v3/sessions")[0]
    assert opened.body == {"properties": {"pipeline.name": "mirror_x", "execution.checkpointing.interval": "10000"}}
    stmts = [c.body["statement"] for c in server.find("POST", f"{S}/statements")]
    assert stmts[-1].startswith("INSERT") and len(stmts) == 3
    assert server.find("GET", f"{S}/operations/op-ins/result/0")[0].params == {"rowFormat": "JSON"}
    assert server.find("DELETE", S), "session must be closed"


def test_submit_job_surfaces_gateway_error_text_and_closes_session():
    server = (FakeServer()
              .route("POST", "/v3/sessions", 200, {"sessionHandle": "s-1"})
              .route("POST", f"{S}/statements", 200, {"operationHandle": "op-1"})
              .route("GET", f"{S}/operations/op-1/status", 200, {"status": "ERROR"})
              .route("GET", f"{S}/operations/op-1/result/0", 500, GATEWAY_ERROR)
              .route("DELETE", S, 200, {"status": "CLOSED"}))
    with pytest.raises(PermanentRemoteError) as ei:
        gateway(server).submit_job(["CREATE TABLE t (...) WITH ('connector' = 'upsert-kafka')", "INSERT ..."])
    msg = str(ei.value)
    assert "Could not find any factory for identifier 'upsert-kafka'" in msg
    assert "Flink SQL Gateway at http://gateway.test:8082" in msg
    assert server.find("DELETE", S)
    assert len(server.find("POST", f"{S}/statements")) == 1, "stops at the first failing statement"


def test_submit_job_failing_insert_surfaces_error():
    server = (FakeServer()
              .route("POST", "/v3/sessions", 200, {"sessionHandle": "s-1"})
              .route("POST", f"{S}/statements", 200, {"operationHandle": "op-1"})
              .route("GET", f"{S}/operations/op-1/status", 200, {"status": "ERROR"})
              .route("GET", f"{S}/operations/op-1/result/0", [(200, {"resultType": "NOT_READY"}), (500, GATEWAY_ERROR)])
              .route("DELETE", S, 200, {"status": "CLOSED"}))
    with pytest.raises(PermanentRemoteError, match="upsert-kafka"):
        gateway(server).submit_job(["INSERT INTO t SELECT 1"])
    assert server.find("DELETE", S)


def test_fetch_results_follows_next_uri_until_eos():
    pages = {
        "0": {"resultType": "NOT_READY", "nextResultUri": f"{S}/operations/op/result/0?rowFormat=JSON"},
        "0b": {"resultType": "PAYLOAD", "isQueryResult": True, "resultKind": "SUCCESS_WITH_CONTENT",
               "results": {"columns": [{"name": "a"}, {"name": "b"}], "rowFormat": "JSON",
                           "data": [{"kind": "INSERT", "fields": [1, "x"]}]},
               "nextResultUri": f"{S}/operations/op/result/1?rowFormat=JSON"},
        "1": {"resultType": "EOS", "isQueryResult": True, "resultKind": "SUCCESS_WITH_CONTENT",
              "results": {"columns": [{"name": "a"}, {"name": "b"}], "rowFormat": "JSON",
                          "data": [{"kind": "INSERT", "fields": [2, "y"]}]}},
    }
    server = (FakeServer()
              .route("GET", f"{S}/operations/op/result/0", [(200, pages["0"]), (200, pages["0b"])])
              .route("GET", f"{S}/operations/op/result/1", 200, pages["1"]))
    res = gateway(server).fetch_results("s-1", "op")
    assert res.columns == ["a", "b"] and res.rows == [[1, "x"], [2, "y"]] and res.job_id is None


def test_wait_operation_timeout_is_transient():
    clock = FakeClock()
    server = FakeServer().route("GET", f"{S}/operations/op/status", 200, {"status": "RUNNING"})
    c = SqlGatewayClient(GW, session=server.session(), sleep=clock.sleep, clock=clock)
    with pytest.raises(TransientRemoteError):
        c.wait_operation("s-1", "op", timeout=5, poll=1)


def test_gateway_unreachable_names_system():
    with pytest.raises(UnreachableError, match="Flink SQL Gateway at http://127.0.0.1:1"):
        SqlGatewayClient("http://127.0.0.1:1", timeout=2).open_session({})


def test_root_cause_picks_last_caused_by():
    text = GATEWAY_ERROR["errors"][1]
    assert root_cause(text).startswith("org.apache.flink.table.api.ValidationException: Could not find")
    assert root_cause("plain message") == "plain message"


# -- JobManager -----------------------------------------------------------------------------

def jm(server: FakeServer, **kw) -> JobManagerClient:
    kw.setdefault("sleep", no_sleep)
    return JobManagerClient(JM, session=server.session(), **kw)


def test_jobs_overview_typed():
    server = FakeServer().route("GET", "/jobs/overview", 200, {"jobs": [
        {"jid": JOB, "name": "insert-into_default_catalog.default_database.sink", "state": "RUNNING",
         "start-time": 1700000000000, "end-time": -1, "duration": 5, "last-modification": 1, "tasks": {"running": 2}}]})
    jobs = jm(server).jobs()
    assert jobs[0].id == JOB and jobs[0].state == "RUNNING" and jobs[0].start_time == 1700000000000


def test_job_404_is_none_and_cancel_uses_patch():
    server = (FakeServer()
              .route("GET", f"/jobs/{JOB}", 404, {"errors": ["Job not found"]})
              .route("PATCH", f"/jobs/{JOB}", 202, {}))
    c = jm(server)
    assert c.job(JOB) is None
    assert c.cancel(JOB) is True
    assert server.calls[-1].params == {"mode": "cancel"}


def test_stop_with_savepoint_polls_trigger():
    server = (FakeServer()
              .route("POST", f"/jobs/{JOB}/stop", 202, {"request-id": "trig-1"})
              .route("GET", f"/jobs/{JOB}/savepoints/trig-1", [
                  (200, {"status": {"id": "IN_PROGRESS"}}),
                  (200, {"status": {"id": "COMPLETED"}, "operation": {"location": "file:/sp/savepoint-a5e0ed-1"}})]))
    assert jm(server).stop_with_savepoint(JOB, "file:/sp", drain=False) == "file:/sp/savepoint-a5e0ed-1"
    assert server.find("POST", f"/jobs/{JOB}/stop")[0].body == {"drain": False, "targetDirectory": "file:/sp"}


def test_stop_with_savepoint_failure_is_permanent():
    server = (FakeServer()
              .route("POST", f"/jobs/{JOB}/stop", 202, {"request-id": "t"})
              .route("GET", f"/jobs/{JOB}/savepoints/t", 200, {"status": {"id": "COMPLETED"}, "operation": {
                  "failure-cause": {"class": "java.util.concurrent.CompletionException",
                                    "stack-trace": "java.util.concurrent.CompletionException: x\n"
                                                   "Caused by: org.apache.flink.runtime.checkpoint."
                                                   "CheckpointException: Task not running"}}}))
    with pytest.raises(PermanentRemoteError, match="Task not running"):
        jm(server).stop_with_savepoint(JOB, "file:/sp")


def test_stop_with_savepoint_asks_again_while_tasks_are_being_deployed():
    """A job that just started refuses the savepoint ("Not all required tasks are currently
    running", seen right after a resubmission): asked again, it stops."""
    refused = {"status": {"id": "COMPLETED"}, "operation": {"failure-cause": {
        "class": "java.util.concurrent.CompletionException",
        "stack-trace": "org.apache.flink.runtime.checkpoint.CheckpointException: Checkpoint triggering task Source "
                       "(1/1) of job x is not being executed at the moment. Aborting checkpoint. Failure reason: Not "
                       "all required tasks are currently running."}}}
    server = (FakeServer()
              .route("POST", f"/jobs/{JOB}/stop", [(202, {"request-id": "t1"}), (202, {"request-id": "t2"})])
              .route("GET", f"/jobs/{JOB}/savepoints/t1", 200, refused)
              .route("GET", f"/jobs/{JOB}/savepoints/t2", 200, {"status": {"id": "COMPLETED"},
                                                                "operation": {"location": "file:/sp/savepoint-2"}}))
    assert jm(server).stop_with_savepoint(JOB, "file:/sp", poll=0.01) == "file:/sp/savepoint-2"
    assert len(server.find("POST", f"/jobs/{JOB}/stop")) == 2


def test_checkpoints_latest_completed():
    server = (FakeServer()
              .route("GET", f"/jobs/{JOB}/checkpoints", 200, {
                  "counts": {"completed": 3}, "latest": {
                      "completed": {"id": 3, "status": "COMPLETED", "is_savepoint": False,
                                    "latest_ack_timestamp": 1700000001234, "external_path": "file:/ck/chk-3"},
                      "savepoint": None, "failed": None, "restored": None}})
              .route("GET", "/jobs/other/checkpoints", 200, {"counts": {"completed": 0}, "latest": {"completed": None}}))
    ck = jm(server).checkpoints(JOB)
    assert ck and ck.external_path == "file:/ck/chk-3" and ck.timestamp == 1700000001234 and ck.id == 3
    assert jm(server).checkpoints("other") is None


def test_jobmanager_500_transient():
    server = FakeServer().route("GET", "/overview", 503, {"errors": ["Service temporarily unavailable"]})
    with pytest.raises(TransientRemoteError, match="Flink JobManager at http://jm.test:8081"):
        jm(server).overview()
