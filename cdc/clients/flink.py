"""Flink clients: the SQL Gateway REST API (submitting the mirror's SQL) and the JobManager
REST API (watching, stopping and checkpointing the resulting job).

REST shapes follow Flink's own snapshots (sql_gateway_rest_api_v3.snapshot and
flink-runtime-web rest_api_v1.snapshot):
  POST /v3/sessions {"properties"}                         -> {"sessionHandle"}
  POST /v3/sessions/{s}/statements {"statement", "executionConfig"} -> {"operationHandle"}
  GET  /v3/sessions/{s}/operations/{o}/status              -> {"status"}
  GET  /v3/sessions/{s}/operations/{o}/result/{token}?rowFormat=JSON
       -> {"resultType": NOT_READY|PAYLOAD|EOS, "isQueryResult", "jobID", "resultKind",
           "results": {"columns": [{"name"}], "rowFormat", "data": [{"kind", "fields"}]},
           "nextResultUri"}
Why errors come from the result call: an operation that failed only reports status ERROR;
the exception text is the body of the 500 the result endpoint returns ({"errors": [...]}).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, Field

from cdc.clients.http import HttpClient
from cdc.core.errors import PermanentRemoteError, RemoteError, TransientRemoteError

GATEWAY = "Flink SQL Gateway"
JOBMANAGER = "Flink JobManager"

#: Flink refuses a checkpoint or savepoint while some of the job's tasks are not RUNNING yet
NOT_RUNNING_YET = "Not all required tasks are currently running"
TERMINAL_OPERATION_STATES = frozenset({"FINISHED", "ERROR", "CANCELED", "CLOSED", "TIMEOUT"})


class FetchResult(BaseModel):
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    job_id: str | None = None
    result_kind: str | None = None      # SUCCESS | SUCCESS_WITH_CONTENT


def root_cause(text: str) -> str:
    """Turn a Java stack-trace dump into 'Exception: message' lines worth showing.

    The gateway's error text is "<Exception on server side:\\n...stack...\\nCaused by: ..."; the
    last "Caused by:" is usually what the user must fix (e.g. a missing connector factory).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln[len("Caused by:"):].strip() for ln in lines if ln.startswith("Caused by:")]
    heads = [ln for ln in lines if re.match(r"^[\w.$]+(Exception|Error)\b", ln)]
    picked = causes[-1] if causes else (heads[0] if heads else (lines[0] if lines else text))
    return picked[:1000]


class SqlGatewayClient:
    """Flink SQL Gateway REST (local stack: http://127.0.0.1:8082), API version v3 by default."""

    def __init__(self, base_url: str, *, api_version: str = "v3", timeout: float = 30.0,
                 session: requests.Session | None = None, **http_kw: Any) -> None:
        self.http = HttpClient(GATEWAY, base_url, timeout=timeout, session=session, **http_kw)
        self.v = api_version

    def _s(self, session: str) -> str:
        return f"/{self.v}/sessions/{quote(session, safe='')}"

    def _o(self, session: str, op: str) -> str:
        return f"{self._s(session)}/operations/{quote(op, safe='')}"

    def info(self) -> dict[str, Any]:
        """GET /v3/info -> {"productName", "version"}; a cheap liveness probe."""
        return self.http.get(f"/{self.v}/info") or {}

    def open_session(self, properties: dict[str, str] | None = None, name: str | None = None) -> str:
        body: dict[str, Any] = {"properties": {k: str(v) for k, v in (properties or {}).items()}}
        if name:
            body["sessionName"] = name
        return str(self.http.post(f"/{self.v}/sessions", json=body)["sessionHandle"])

    def heartbeat(self, session: str) -> None:
        self.http.post(f"{self._s(session)}/heartbeat")

    def close_session(self, session: str) -> None:
        """Idempotent: a session that is already gone (404) is fine."""
        self.http.request("DELETE", self._s(session), allow_404=True)

    def execute(self, session: str, statement: str, execution_config: dict[str, str] | None = None) -> str:
        body: dict[str, Any] = {"statement": statement}
        if execution_config:
            body["executionConfig"] = {k: str(v) for k, v in execution_config.items()}
        return str(self.http.post(f"{self._s(session)}/statements", json=body)["operationHandle"])

    def operation_status(self, session: str, op: str) -> str:
        return str(self.http.get(f"{self._o(session, op)}/status")["status"])

    def operation_error(self, session: str, op: str) -> str:
        """The server's error text for an ERROR operation (it is in the result call's body)."""
        try:
            self.http.get(f"{self._o(session, op)}/result/0", params={"rowFormat": "JSON"})
        except RemoteError as e:
            return e.body or e.message
        return "operation failed (the gateway returned no error text)"

    def wait_operation(self, session: str, op: str, timeout: float = 120.0, poll: float = 0.5) -> str:
        """Poll until the operation is terminal; return the final status.

        ERROR -> PermanentRemoteError with the root cause from the server's error text;
        still running at the deadline -> TransientRemoteError.
        """
        deadline = self.http.clock() + timeout
        while True:
            status = self.operation_status(session, op)
            if status == "ERROR":
                text = self.operation_error(session, op)
                raise PermanentRemoteError(self.http.label, f"statement failed: {root_cause(text)}",
                                           hint="Check the generated Flink SQL and the connector jars.")
            if status in TERMINAL_OPERATION_STATES:
                return status
            if self.http.clock() >= deadline:
                raise TransientRemoteError(self.http.label, f"operation {op} still {status} after {timeout:g}s")
            self.http.sleep(poll)

    def fetch_results(self, session: str, op: str, *, stop_at_job_id: bool = False,
                      timeout: float = 120.0, poll: float = 0.5, max_rows: int = 10_000) -> FetchResult:
        """Follow nextResultUri from token 0 until EOS (or, with stop_at_job_id, until a
        page carries a jobID: INSERT statements return it at once, their EOS may come late)."""
        out = FetchResult()
        uri: str | None = f"{self._o(session, op)}/result/0?rowFormat=JSON"
        deadline = self.http.clock() + timeout
        while uri:
            page = self.http.get(uri) or {}
            kind = page.get("resultType")
            if kind == "NOT_READY":
                if self.http.clock() >= deadline:
                    raise TransientRemoteError(self.http.label, f"results of {op} not ready after {timeout:g}s")
                self.http.sleep(poll)
                uri = page.get("nextResultUri") or uri
                continue
            results = page.get("results") or {}
            if not out.columns and results.get("columns"):
                out.columns = [c.get("name", "") for c in results["columns"]]
            out.rows.extend(list(r.get("fields", [])) for r in results.get("data") or [])
            out.job_id = page.get("jobID") or out.job_id
            out.result_kind = page.get("resultKind") or out.result_kind
            if kind == "EOS" or (stop_at_job_id and out.job_id) or len(out.rows) >= max_rows:
                break
            uri = page.get("nextResultUri")
            if uri and self.http.clock() >= deadline:
                break
        return out

    def submit_job(self, statements: list[str], properties: dict[str, str] | None = None,
                   timeout: float = 120.0) -> str:
        """Run DDL statements then the final INSERT in one fresh session; return the job id.

        The session is always closed: a Flink streaming job keeps running without it.
        """
        if not statements:
            raise ValueError("submit_job needs at least one statement (the INSERT)")
        session = self.open_session(properties)
        try:
            for stmt in statements[:-1]:
                self.wait_operation(session, self.execute(session, stmt), timeout=timeout)
            # The INSERT's operation may stay RUNNING (e.g. table.dml-sync=true), so poll its
            # results for the jobID instead of waiting for a terminal status.
            op = self.execute(session, statements[-1])
            try:
                result = self.fetch_results(session, op, stop_at_job_id=True, timeout=timeout)
            except TransientRemoteError as e:
                if e.status == 500 and self.operation_status(session, op) == "ERROR":
                    raise PermanentRemoteError(self.http.label,
                                               f"statement failed: {root_cause(e.body or e.message)}",
                                               hint="Check the generated Flink SQL and the connector jars.") from e
                raise
            job_id = result.job_id or _job_id_from_rows(result)
            if not job_id:
                raise PermanentRemoteError(self.http.label, "the final statement started no Flink job",
                                           hint="The last statement must be an INSERT INTO ... SELECT.")
            return job_id
        finally:
            try:
                self.close_session(session)
            except RemoteError:
                pass  # best effort: the gateway expires idle sessions anyway


    def run_statements(self, statements: list[str], properties: dict[str, str] | None = None,
                       timeout: float = 60.0) -> FetchResult:
        """Run statements in order in one fresh session and return the last one's result (a
        DESCRIBE, an EXPLAIN): for checks that must not start a job. The session is closed."""
        if not statements:
            raise ValueError("run_statements needs at least one statement")
        session = self.open_session(properties)
        try:
            for stmt in statements[:-1]:
                self.wait_operation(session, self.execute(session, stmt), timeout=timeout)
            op = self.execute(session, statements[-1])
            self.wait_operation(session, op, timeout=timeout)
            return self.fetch_results(session, op, timeout=timeout)
        finally:
            try:
                self.close_session(session)
            except RemoteError:
                pass


def _job_id_from_rows(result: FetchResult) -> str | None:
    """Older gateways put the id only in the single 'job id' result row."""
    for i, col in enumerate(result.columns):
        if col.lower().replace("_", " ") == "job id" and result.rows:
            return str(result.rows[0][i])
    return None


class JobInfo(BaseModel):
    """One entry of GET /jobs/overview."""

    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="jid")
    name: str = ""
    state: str = "UNKNOWN"
    start_time: int | None = Field(default=None, alias="start-time")   # epoch ms
    end_time: int | None = Field(default=None, alias="end-time")        # -1 while running


class CheckpointInfo(BaseModel):
    id: int
    external_path: str | None = None
    timestamp: int | None = None        # latest_ack_timestamp, epoch ms
    is_savepoint: bool = False


# Job states in which the job exists and will (or may) process again without our help.
ALIVE_JOB_STATES = frozenset({"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "RECONCILING",
                              "FAILING", "CANCELLING"})


class JobManagerClient:
    """Flink JobManager REST (local stack: http://127.0.0.1:8081)."""

    def __init__(self, base_url: str, *, timeout: float = 15.0, session: requests.Session | None = None,
                 **http_kw: Any) -> None:
        self.http = HttpClient(JOBMANAGER, base_url, timeout=timeout, session=session, **http_kw)

    @staticmethod
    def _j(job_id: str) -> str:
        return f"/jobs/{quote(job_id, safe='')}"

    def overview(self) -> dict[str, Any]:
        """Cluster overview: taskmanagers, slots-total, slots-available, jobs-running, ..."""
        return self.http.get("/overview") or {}

    def jobs(self) -> list[JobInfo]:
        body = self.http.get("/jobs/overview") or {}
        return [JobInfo.model_validate(j) for j in body.get("jobs") or []]

    def job(self, job_id: str) -> dict[str, Any] | None:
        """GET /jobs/{id} (full details), or None for an unknown job id."""
        return self.http.get(self._j(job_id), allow_404=True)

    def job_state(self, job_id: str) -> str | None:
        body = self.job(job_id)
        return None if body is None else str(body.get("state"))

    def wait_ended(self, job_id: str, timeout: float = 60.0) -> str | None:
        """Poll until the job is no longer alive (an end state, or unknown to the JobManager);
        return its last state. A job still alive after `timeout` is a TransientRemoteError."""
        deadline = time.monotonic() + timeout
        while (state := self.job_state(job_id)) in ALIVE_JOB_STATES:
            if time.monotonic() > deadline:
                raise TransientRemoteError(self.http.label, f"job {job_id} still {state} after {timeout:.0f}s",
                                           hint=f"check the JobManager: GET /jobs/{job_id}")
            time.sleep(0.2)
        return state

    def cancel(self, job_id: str) -> bool:
        """PATCH /jobs/{id}?mode=cancel. False when the job is unknown (nothing to cancel)."""
        return self.http.request("PATCH", self._j(job_id), params={"mode": "cancel"}, allow_404=True) is not None

    def stop_with_savepoint(self, job_id: str, target_dir: str | None = None, drain: bool = False,
                            timeout: float = 300.0, poll: float = 1.0) -> str:
        """POST /jobs/{id}/stop, then poll /jobs/{id}/savepoints/{request-id}; return the
        savepoint location. The job ends FINISHED once the savepoint completes."""
        body: dict[str, Any] = {"drain": drain}
        if target_dir:
            body["targetDirectory"] = target_dir
        trigger = self.http.post(f"{self._j(job_id)}/stop", json=body)["request-id"]
        deadline = self.http.clock() + timeout
        asked_again_until = self.http.clock() + 30.0      # tasks still deploying: a job stuck restarting fails
        while True:
            res = self.http.get(f"{self._j(job_id)}/savepoints/{quote(str(trigger), safe='')}") or {}
            if (res.get("status") or {}).get("id") == "COMPLETED":
                op = res.get("operation") or {}
                if op.get("location"):
                    return str(op["location"])
                cause = op.get("failure-cause") or {}
                text = str(cause.get("stack-trace") or cause.get("class") or "no failure cause given")
                if NOT_RUNNING_YET in text and self.http.clock() + 2 * poll < min(deadline, asked_again_until):
                    # a job just (re)started: its tasks are still being deployed; ask again
                    self.http.sleep(2 * poll)
                    trigger = self.http.post(f"{self._j(job_id)}/stop", json=body)["request-id"]
                    continue
                raise PermanentRemoteError(self.http.label, f"stop-with-savepoint of {job_id} failed",
                                           body=root_cause(text))
            if self.http.clock() >= deadline:
                raise TransientRemoteError(self.http.label, f"savepoint of {job_id} not done after {timeout:g}s")
            self.http.sleep(poll)

    def checkpoints(self, job_id: str) -> CheckpointInfo | None:
        """Latest completed checkpoint (path + ack time), or None if none completed yet or
        the job is unknown."""
        body = self.http.get(f"{self._j(job_id)}/checkpoints", allow_404=True)
        latest = ((body or {}).get("latest") or {}).get("completed")
        if not latest:
            return None
        return CheckpointInfo(id=latest["id"], external_path=latest.get("external_path"),
                              timestamp=latest.get("latest_ack_timestamp"),
                              is_savepoint=bool(latest.get("is_savepoint")))
