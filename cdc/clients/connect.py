"""Kafka Connect REST client (the Debezium Postgres connector runs inside Connect).

Method names follow the remote operations (GET /connector-plugins -> plugins(), ...).
Why the 409 retry: a Connect worker answers 409 Conflict while its group rebalances
("Cannot complete request momentarily due to stale configuration" / "rebalance is
expected"); that is momentary, so put_config and delete retry it with backoff instead of
failing the whole mirror operation.

Connector configs carry the database password; they are only ever sent as request bodies,
never logged or put in errors (cdc.clients.http guarantees that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests
from pydantic import BaseModel, Field

from cdc.clients.http import HttpClient
from cdc.core.errors import PermanentRemoteError, RemoteError, TransientRemoteError

SYSTEM = "Kafka Connect"


class TaskStatus(BaseModel):
    id: int
    state: str                          # UNASSIGNED | RUNNING | PAUSED | STOPPED | FAILED | RESTARTING
    worker_id: str | None = None
    trace: str | None = None            # Java stack trace when FAILED


class ConnectorStatus(BaseModel):
    """GET /connectors/{name}/status, typed."""

    name: str
    state: str                          # of the connector itself
    worker_id: str | None = None
    trace: str | None = None
    tasks: list[TaskStatus] = Field(default_factory=list)
    type: str | None = None             # "source" | "sink"

    @property
    def running(self) -> bool:
        """Connector and every task RUNNING, and at least one task assigned."""
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)

    def failure_summary(self) -> str:
        """First line of each trace: enough to tell the user why, without a 200-line dump."""
        parts = []
        if self.state == "FAILED":
            parts.append(f"connector: {_first_line(self.trace)}")
        parts += [f"task {t.id}: {_first_line(t.trace)}" for t in self.tasks if t.state == "FAILED"]
        return "; ".join(parts) or "not failed"

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> ConnectorStatus:
        conn = body.get("connector") or {}
        return cls(name=body.get("name", ""), state=conn.get("state", "UNKNOWN"),
                   worker_id=conn.get("worker_id"), trace=conn.get("trace"), type=body.get("type"),
                   tasks=[TaskStatus(**t) for t in body.get("tasks") or []])


def _first_line(trace: str | None) -> str:
    text = (trace or "").strip()
    return text.splitlines()[0][:300] if text else "no trace"


def _is_rebalance_conflict(e: RemoteError) -> bool:
    return e.status == 409


class ConnectClient:
    """Kafka Connect REST at base_url (default local stack: http://127.0.0.1:8083)."""

    def __init__(self, base_url: str, *, timeout: float = 15.0, session: requests.Session | None = None,
                 retry_attempts: int = 5, auth: tuple[str, str] | None = None, **http_kw: Any) -> None:
        self.http = HttpClient(SYSTEM, base_url, timeout=timeout, session=session, **http_kw)
        if auth is not None:    # HTTP basic auth (the local stack's Connect requires it)
            self.http.session.auth = auth
        self.retry_attempts = retry_attempts

    @staticmethod
    def _c(name: str) -> str:
        return f"/connectors/{quote(name, safe='')}"

    # -- reads ----------------------------------------------------------------------------

    def plugins(self) -> list[dict[str, Any]]:
        """Installed connector plugins: [{"class": ..., "type": ..., "version": ...}]."""
        return self.http.get("/connector-plugins") or []

    def has_plugin(self, class_name: str) -> bool:
        return any(p.get("class") == class_name for p in self.plugins())

    def list_connectors(self) -> list[str]:
        return list(self.http.get("/connectors") or [])

    def get_config(self, name: str) -> dict[str, str] | None:
        """The stored config, or None when no such connector."""
        return self.http.get(f"{self._c(name)}/config", allow_404=True)

    def status(self, name: str) -> ConnectorStatus | None:
        """Typed status, or None when no such connector."""
        body = self.http.get(f"{self._c(name)}/status", allow_404=True)
        return None if body is None else ConnectorStatus.from_api(body)

    def get_offsets(self, name: str) -> list[dict[str, Any]]:
        """GET /connectors/{n}/offsets -> [{"partition": {...}, "offset": {...}}] (Connect 3.5+)."""
        body = self.http.get(f"{self._c(name)}/offsets") or {}
        return list(body.get("offsets") or [])

    # -- writes ---------------------------------------------------------------------------

    def put_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """PUT /connectors/{n}/config: creates or updates; idempotent, so safe to repeat.

        Values are sent as strings because Connect configs are string maps. Retries 409
        (rebalance in progress) with backoff.
        """
        body = {k: (v if isinstance(v, str) else _to_config_str(v)) for k, v in config.items()}
        return self.http.retry(lambda: self.http.put(f"{self._c(name)}/config", json=body) or {},
                               retry_if=_is_rebalance_conflict, attempts=self.retry_attempts)

    def delete(self, name: str) -> bool:
        """DELETE /connectors/{n}. Returns False when it did not exist (already gone)."""
        def _do() -> bool:
            return self.http.request("DELETE", self._c(name), allow_404=True) is not None
        return self.http.retry(_do, retry_if=_is_rebalance_conflict, attempts=self.retry_attempts)

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = True) -> None:
        """POST /connectors/{n}/restart?includeTasks=&onlyFailed= (Connect 3.0+)."""
        params = {"includeTasks": str(include_tasks).lower(), "onlyFailed": str(only_failed).lower()}
        self.http.retry(lambda: self.http.post(f"{self._c(name)}/restart", params=params),
                        retry_if=_is_rebalance_conflict, attempts=self.retry_attempts)

    def pause(self, name: str) -> None:
        self.http.put(f"{self._c(name)}/pause")

    def resume(self, name: str) -> None:
        self.http.put(f"{self._c(name)}/resume")

    def stop(self, name: str) -> None:
        """PUT /connectors/{n}/stop (Connect 3.5+): tasks shut down, config and offsets kept.
        A connector must be STOPPED before its offsets can be altered or reset."""
        self.http.put(f"{self._c(name)}/stop")

    def create_stopped(self, name: str, config: dict[str, Any]) -> None:
        """POST /connectors with initial_state STOPPED (Connect 3.5+): lets the caller reset
        offsets left behind by an earlier connector of the same name before it first runs."""
        body = {"name": name, "config": {k: str(v) for k, v in config.items()}, "initial_state": "STOPPED"}
        self.http.retry(lambda: self.http.post("/connectors", json=body),
                        retry_if=lambda e: getattr(e, "status", None) == 409)

    def wait_state(self, name: str, state: str, timeout: float = 60.0, poll: float = 0.5) -> None:
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(name)
            if st is not None and st.state == state:
                return
            time.sleep(poll)
        raise TransientRemoteError(self.http.label, f"connector {name} did not reach {state} in {timeout:.0f}s")

    def delete_offsets(self, name: str) -> str:
        """DELETE /connectors/{n}/offsets: reset (connector must be STOPPED). Returns Connect's message."""
        body = self.http.delete(f"{self._c(name)}/offsets") or {}
        return str(body.get("message", "")) if isinstance(body, dict) else str(body)

    # -- waiting --------------------------------------------------------------------------

    def wait_running(self, name: str, timeout: float = 120.0, poll: float = 2.0,
                     progress: Callable[[ConnectorStatus | None], None] | None = None) -> ConnectorStatus:
        """Poll status until the connector and all its tasks are RUNNING.

        Raises PermanentRemoteError as soon as anything is FAILED (with the first trace
        line), TransientRemoteError when the timeout passes first. `progress` receives
        every observed status (None while the connector is not yet registered).
        """
        deadline = self.http.clock() + timeout
        last: ConnectorStatus | None = None
        while True:
            try:
                last = self.status(name)
            except TransientRemoteError:
                last = None          # worker busy (e.g. rebalancing); keep polling
            if progress:
                progress(last)
            if last is not None:
                if last.running:
                    return last
                if last.failed:
                    raise PermanentRemoteError(self.http.label, f"connector {name} FAILED",
                                               body=last.failure_summary(),
                                               hint=f"Inspect with `cdc stack logs connect`; fix, then restart the connector {name}.")
            if self.http.clock() >= deadline:
                state = "not registered" if last is None else \
                    f"{last.state}, tasks {[t.state for t in last.tasks] or 'none yet'}"
                raise TransientRemoteError(self.http.label,
                                           f"connector {name} not RUNNING after {timeout:g}s ({state})")
            self.http.sleep(poll)


def _to_config_str(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)
