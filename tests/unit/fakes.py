"""Test doubles for the HTTP clients: a requests transport adapter that calls a handler.

Like httpx's MockTransport: mount FakeAdapter on a requests.Session and pass that session
to any client; every request goes to `handler(request) -> response` instead of the network.

    server = FakeServer()
    server.route("GET", "/connectors/x/status", 404, {"error_code": 404, "message": "nope"})
    client = ConnectClient("http://connect.test", session=server.session())
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

def make_response(request: requests.PreparedRequest, status: int, body: Any = None,
                  headers: dict[str, str] | None = None) -> requests.Response:
    """A real requests.Response; dict/list bodies become JSON, str/bytes stay raw."""
    resp = requests.Response()
    resp.status_code = status
    resp.request = request
    resp.url = request.url or ""
    resp.headers = CaseInsensitiveDict(headers or {})
    if body is None:
        resp._content = b""
    elif isinstance(body, bytes):
        resp._content = body
    elif isinstance(body, str):
        resp._content = body.encode()
        resp.headers.setdefault("Content-Type", "text/plain")
    else:
        resp._content = json.dumps(body).encode()
        resp.headers.setdefault("Content-Type", "application/json")
    resp.encoding = "utf-8"
    return resp


class FakeAdapter(BaseAdapter):
    """Transport adapter that answers with handler(request). The handler may return a
    Response, (status, body), or a bare status; it may raise requests exceptions to
    simulate connection failures or timeouts."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], Any]) -> None:
        super().__init__()
        self.handler = handler

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        out = self.handler(request)
        if isinstance(out, requests.Response):
            return out
        if isinstance(out, int):
            return make_response(request, out)
        status, body = out
        return make_response(request, status, body)

    def close(self) -> None:
        pass


def fake_session(handler: Callable[[requests.PreparedRequest], Any]) -> requests.Session:
    s = requests.Session()
    adapter = FakeAdapter(handler)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any

    @property
    def params(self) -> dict[str, str]:
        return {k: v[-1] for k, v in self.query.items()}


@dataclass
class FakeServer:
    """Routes (method, path regex) to canned replies, records every call.

    A reply is (status, body), a callable(call) -> (status, body), or a list of those that
    is consumed in order (the last one repeats) to script sequences like 409, 409, 200.
    """

    routes: list[tuple[str, re.Pattern[str], Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def route(self, method: str, path: str, *reply: Any) -> FakeServer:
        """route("GET", "/x", 200, {...}) or route("GET", "/x", [(409, {}), (200, {})])."""
        value = reply[0] if len(reply) == 1 else tuple(reply)
        self.routes.append((method.upper(), re.compile(path + r"\Z"), value))
        return self

    def __call__(self, request: requests.PreparedRequest) -> Any:
        parts = urlsplit(request.url or "")
        body: Any = request.body
        if isinstance(body, bytes):
            body = body.decode()
        if isinstance(body, str) and body:
            try:
                body = json.loads(body)
            except ValueError:
                pass
        call = Call(request.method or "", parts.path, parse_qs(parts.query), body)
        self.calls.append(call)
        for i, (method, pattern, reply) in enumerate(self.routes):
            if method == call.method and pattern.match(call.path):
                if isinstance(reply, list):
                    current = reply[0]
                    if len(reply) > 1:
                        self.routes[i] = (method, pattern, reply[1:])
                    reply = current
                if callable(reply):
                    reply = reply(call)
                return reply
        return 404, {"error": f"no fake route for {call.method} {call.path}"}

    def session(self) -> requests.Session:
        return fake_session(self)

    def find(self, method: str, path_re: str) -> list[Call]:
        pat = re.compile(path_re + r"\Z")
        return [c for c in self.calls if c.method == method.upper() and pat.match(c.path)]


def no_sleep(_: float) -> None:
    """Injected instead of time.sleep so polling/backoff loops run instantly."""


class FakeClock:
    """Monotonic clock that advances only when the injected sleep is called."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
