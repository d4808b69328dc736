"""The error tree. Every error the CLI or REST layer shows is one of these.

    CdcError                      root; .hint says what the user should do
    ├── ConfigError               bad settings or arguments (user must act)
    ├── PreflightError            the source database is not ready (user must act)
    ├── NotFoundError             unknown source / mirror / table
    ├── ConflictError             exists with a different spec
    ├── StackError                a local stack component failed (names component + log)
    └── RemoteError               an external system answered badly
        ├── UnreachableError      could not connect at all (transient)
        ├── TransientRemoteError  5xx / timeouts: retry with backoff
        └── PermanentRemoteError  4xx: retrying will not help

Third-party exceptions are translated where they are caught (the client modules),
never further up, so callers only ever see this tree.
"""

from __future__ import annotations


class CdcError(Exception):
    """Root of all errors. `hint` is one sentence telling the user what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(CdcError):
    pass


class PreflightError(CdcError):
    pass


class NotFoundError(CdcError):
    pass


class ConflictError(CdcError):
    pass


class StackError(CdcError):
    """A local stack component could not be provisioned, started or stopped."""

    def __init__(self, component: str, reason: str, log: str | None = None, hint: str | None = None) -> None:
        msg = f"{component}: {reason}"
        if log:
            msg += f" (log: {log})"
        super().__init__(msg, hint)
        self.component = component
        self.reason = reason
        self.log = log


class RemoteError(CdcError):
    """An external system (Connect, Flink, Pinot, Postgres) failed a request."""

    transient = False

    def __init__(self, system: str, message: str, status: int | None = None, body: str | None = None,
                 hint: str | None = None) -> None:
        text = f"{system}: {message}" + (f" (HTTP {status})" if status else "")
        if body:
            text += f": {body[:500]}"
        super().__init__(text, hint)
        self.system = system
        self.status = status
        self.body = body


class UnreachableError(RemoteError):
    transient = True


class TransientRemoteError(RemoteError):
    transient = True


class PermanentRemoteError(RemoteError):
    pass


def first_line(exc: BaseException, limit: int = 500) -> str:
    """The first line of an exception's text, or its type's name when it has none (a bare
    TimeoutError()): for events, logs and status fields."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
