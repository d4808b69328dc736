"""The one HTTP layer every remote client shares.

Why a wrapper at all: every client needs the same four things (a base URL, a timeout, JSON
in/out, and translation of `requests` failures into the cdc.core.errors tree) and the error
translation must live in exactly ONE place so that callers only ever see
UnreachableError / TransientRemoteError / PermanentRemoteError, each naming the system
("Kafka Connect at http://127.0.0.1:8083").

Mapping (see `HttpClient.request`):
    connection refused / DNS / connect timeout  -> UnreachableError
    read timeout (server took the connection)   -> TransientRemoteError
    5xx and 429                                 -> TransientRemoteError
    404 with allow_404=True                     -> None (an expected answer: "absent")
    any other 4xx                               -> PermanentRemoteError

Tests inject a `requests.Session` with a fake adapter mounted (tests/unit/fakes.py), so no
server is needed. Secrets: request bodies never go into errors or logs, userinfo is stripped
from URLs, and response text is scrubbed of password/secret/token values before it is kept.
"""

from __future__ import annotations

import json as _json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from cdc.core.errors import PermanentRemoteError, RemoteError, TransientRemoteError, UnreachableError

log = logging.getLogger(__name__)

T = TypeVar("T")

# key=value / "key": "value" pairs whose key looks secret; the value is replaced by ***.
_SECRET_KV = re.compile(
    r"""(?ix)
    (["']?[\w.\-]*(?:password|passwd|secret|token|api[_.\-]?key|credentials?)[\w.\-]*["']?)   # key
    (\s*[:=]\s*)                                                                              # sep
    ("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}\]]+)                                                  # value
    """
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+(?::[^/\s@]*)?@")


def scrub(text: str) -> str:
    """Remove secret values and URL credentials from text that may end up in an error/log."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    text = re.sub(r"(with\.salt\.)[^\s\"',:}]+", r"\1***", text)     # Debezium's hash salt (a property name)

    def _mask(m: re.Match[str]) -> str:
        value = m.group(3)
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{m.group(1)}{m.group(2)}{quote}***{quote}"

    return _SECRET_KV.sub(_mask, text)


def redact_url(url: str) -> str:
    """http://user:pw@host:1/x -> http://host:1/x (credentials never appear in messages)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def error_text(resp: requests.Response) -> str:
    """The human part of an error body, whatever the system's error envelope is.

    Kafka Connect: {"error_code": 409, "message": "..."}; Flink: {"errors": ["...", ...]};
    Pinot controller: {"code": 404, "error": "..."}; otherwise the raw text.
    """
    try:
        body = resp.json()
    except ValueError:
        return scrub(resp.text.strip())
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return scrub(body[key])
        errs = body.get("errors")
        if isinstance(errs, list) and errs:
            return scrub("\n".join(str(e) for e in errs))
    return scrub(_json.dumps(body)[:2000])


class HttpClient:
    """A requests.Session bound to one base URL, with the error mapping applied.

    `system` is the human name ("Kafka Connect"); `label` adds the redacted base URL and is
    what every error carries. `sleep`/`clock` are injectable so retry and polling loops run
    instantly in tests.
    """

    def __init__(self, system: str, base_url: str, *, timeout: float = 10.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/") + "/"
        self.label = f"{system} at {redact_url(base_url.rstrip('/'))}"
        self.timeout = timeout
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock

    def url(self, path: str) -> str:
        """Join a path ("/connectors/x" or an absolute URL the server handed back) to the base."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, data: str | bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                allow_404: bool = False) -> requests.Response | None:
        """Send one request; return the response on 2xx/3xx, None on an allowed 404, else raise."""
        url = self.url(path)
        what = f"{method} {redact_url(url).split('?', 1)[0]}"
        log.debug("%s: %s", self.system, what)
        try:
            resp = self.session.request(method, url, params=params, json=json, data=data,
                                        headers=headers, timeout=timeout or self.timeout)
        except requests.ConnectTimeout as e:
            raise UnreachableError(self.label, f"{what}: connect timed out",
                                   hint=f"Is {self.system} running? Try `cdc stack status`.") from e
        except requests.Timeout as e:
            raise TransientRemoteError(self.label, f"{what}: no answer within {timeout or self.timeout:g}s",
                                       hint="The service is up but slow; retry later.") from e
        except requests.ConnectionError as e:
            raise UnreachableError(self.label, f"{what}: cannot connect ({_short_reason(e)})",
                                   hint=f"Is {self.system} running? Try `cdc stack status`.") from e
        except requests.RequestException as e:
            raise UnreachableError(self.label, f"{what}: {type(e).__name__}: {scrub(str(e))[:200]}") from e
        status = resp.status_code
        if status < 400:
            return resp
        if status == 404 and allow_404:
            return None
        text = error_text(resp)
        if status >= 500 or status == 429:
            raise TransientRemoteError(self.label, f"{what} failed", status=status, body=text)
        hint = None
        if status in (401, 403):
            hint = (f"{self.system} refused the credentials (or none were sent): for the local stack they are "
                    "generated under STATE_DIR/secrets by `cdc stack up`; for an external one set its "
                    "CDC_*_PASSWORD setting")
        raise PermanentRemoteError(self.label, f"{what} rejected", status=status, body=text, hint=hint)

    # -- JSON conveniences -------------------------------------------------------------------

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """request() and decode JSON; returns None for an allowed 404 or an empty body."""
        resp = self.request(method, path, **kw)
        if resp is None or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)

    # -- retry ---------------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T], *, retry_if: Callable[[RemoteError], bool],
              attempts: int = 5, backoff: float = 0.5, max_backoff: float = 8.0) -> T:
        """Run fn, retrying with exponential backoff while retry_if(error) says the error is
        momentary (e.g. Connect's 409 during a rebalance). The last error propagates."""
        delay = backoff
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except RemoteError as e:
                if attempt == attempts or not retry_if(e):
                    raise
                log.info("%s: %s; retry %d/%d in %.1fs", self.system, e.message.splitlines()[0],
                         attempt, attempts - 1, delay)
                self.sleep(delay)
                delay = min(delay * 2, max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.session.close()


def _short_reason(e: Exception) -> str:
    """'Connection refused' instead of urllib3's multi-line repr of the pool state."""
    text = str(e)
    for needle in ("Connection refused", "Name or service not known", "No route to host",
                   "Network is unreachable", "Connection reset", "Remote end closed"):
        if needle in text:
            return needle
    return scrub(text)[:200]
