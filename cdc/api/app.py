"""The REST API: a thin FastAPI layer over cdc.mirrors.service (the same functions the CLI calls).

Why it is shaped this way:
  * errors are mapped to HTTP in ONE place (`_STATUS` + the exception handlers), so every
    endpoint answers the cdc.core.errors tree the same way and nothing leaks a traceback;
  * inputs are validated strictly by the request models (cdc.api.models) before anything
    reaches Postgres, Kafka or Flink: a 5xx must mean a remote system failed, never bad input;
  * authentication is an ASGI middleware, not a dependency, so it runs before routing and
    body parsing: an unauthenticated caller learns nothing (no 404/422 probing);
  * handlers are plain `def`: service calls block (psycopg, requests) and FastAPI runs them
    in its thread pool; each request gets its own service.Context (own SQLite connection).
"""

from __future__ import annotations

import hmac
import importlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdc.core import names
from cdc.observe import probes as api_probes
from cdc.mirrors import service
from cdc.api import ui
from cdc.api.models import (MIRROR_NAME, SOURCE_NAME, ErrorBody, FieldError, Health, MirrorIn, MirrorStatus, OpResult,
                            Plan, Ready, Removed, SourceIn, scrub_text, to_jsonable)
from cdc.core.settings import Settings, get_settings
from cdc.core.errors import (CdcError, ConfigError, ConflictError, NotFoundError, PermanentRemoteError, PreflightError,
                        RemoteError, TransientRemoteError, UnreachableError)
from cdc.core.models import Source
from cdc.mapping.rules import redact_salt
from cdc.declarative import apply as applying
from cdc.declarative import file as apply_file
from cdc.declarative.plan import Plan as ApplyPlan
from cdc.mirrors.registry import Event, MirrorRecord, redact_dsn

log = logging.getLogger("cdc.api")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
OPEN_PATHS = frozenset({"/healthz"}) | ui.OPEN_PATHS    # the status page's files hold no data
# Most specific first: the first isinstance match wins.
_STATUS: list[tuple[type[CdcError], int]] = [
    (ConfigError, 422), (PreflightError, 422), (NotFoundError, 404), (ConflictError, 409),
    (UnreachableError, 503), (TransientRemoteError, 503), (PermanentRemoteError, 502), (CdcError, 400)]
# Any service call can raise anything in the tree, so every authenticated route documents
# every code the mapping produces (plus 501 for the optional ops/verify modules).
_ERR: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422, 502, 503)}
_ERR_JSON = {code: {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorBody"}}}} for code in _ERR}


class Reconciler(Protocol):
    def start(self) -> Any: ...
    def stop(self, timeout: float) -> Any: ...


Background = Reconciler   # the history sampler has the same start/stop shape


# -- errors ---------------------------------------------------------------------------------

def status_for(exc: CdcError) -> int:
    return next(code for cls, code in _STATUS if isinstance(exc, cls))


def _error_json(status: int, error: str, message: str, hint: str | None = None, system: str | None = None,
                headers: dict[str, str] | None = None, detail: list[FieldError] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=scrub_text(message), hint=scrub_text(hint) if hint else None,
                     system=scrub_text(system) if system else None, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _on_cdc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CdcError)
    code = status_for(exc)
    system = exc.system if isinstance(exc, RemoteError) else None
    (log.warning if code >= 500 else log.info)("%s %s -> %d %s", request.method, request.url.path, code,
                                              scrub_text(exc.message.splitlines()[0] if exc.message else ""))
    return _error_json(code, type(exc).__name__, exc.message, exc.hint, system,
                       {"Retry-After": "5"} if code == 503 else None)


def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Like FastAPI's default 422 `detail`, minus `input`/`ctx`: they echo the request (a DSN
    password, say), so only where, what and why are returned."""
    assert isinstance(exc, RequestValidationError)
    detail = [FieldError(loc=[x if isinstance(x, int) else str(x) for x in e.get("loc", ())],
                         msg=scrub_text(str(e.get("msg", ""))), type=str(e.get("type", ""))) for e in exc.errors()]
    where = "; ".join(f"{'.'.join(map(str, d.loc))}: {d.msg}" for d in detail[:5])
    return _error_json(422, "ValidationError", f"invalid request: {where}"[:2000], detail=detail)


def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 400 (unparsable body), 404 (no route), 405: same ErrorBody shape."""
    assert isinstance(exc, StarletteHTTPException)
    return _error_json(exc.status_code, "HTTPError", str(exc.detail), headers=getattr(exc, "headers", None))


def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return _error_json(500, "InternalError", "internal error; see the service log")


# -- authentication -----------------------------------------------------------------------

class BearerAuth:
    """Pure ASGI middleware: every path except OPEN_PATHS needs `Authorization: Bearer <token>`.
    hmac.compare_digest keeps the comparison constant-time; the token is never logged."""

    def __init__(self, app: Any, token: bytes | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.token is None and not _loopback_host(scope):
            # No token: only loopback names may reach us. A web page that rebinds its own
            # DNS name to 127.0.0.1 still sends that name as Host, so it is refused here.
            resp = _error_json(403, "Forbidden", "this API (no CDC_API_TOKEN set) answers only requests to a "
                               "loopback host name", "use http://127.0.0.1:PORT, or set CDC_API_TOKEN", None)
            return await resp(scope, receive, send)
        if scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, cred = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self.token):
            return await self.app(scope, receive, send)
        resp = _error_json(401, "Unauthorized", "missing or wrong bearer token",
                           "send the header `Authorization: Bearer <CDC_API_TOKEN>`", None,
                           {"WWW-Authenticate": "Bearer"})
        await resp(scope, receive, send)


def _loopback_host(scope: dict[str, Any]) -> bool:
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
    if host.startswith("["):                       # [::1]:8765
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# Declares the scheme in the OpenAPI schema; BearerAuth above does the enforcing.
_bearer_doc = HTTPBearer(auto_error=False, description="the CDC_API_TOKEN setting")


# -- per-request context --------------------------------------------------------------------

def _context(request: Request) -> Iterator[service.Context]:
    ctx = service.context(request.app.state.settings)
    try:
        yield ctx
    finally:
        ctx.close()


Ctx = Annotated[service.Context, Depends(_context)]
MirrorName = Annotated[str, Path(pattern=MIRROR_NAME, max_length=240, description="mirror name")]
SourceName = Annotated[str, Path(pattern=SOURCE_NAME, max_length=41, description="source name")]


def _progress(msg: str) -> None:
    log.info("%s", scrub_text(msg))


def _lazy(module: str, func: str) -> Callable[..., Any]:
    """Functions other modules provide (ops, verify, metrics) are optional: 501 if absent."""
    try:
        return getattr(importlib.import_module(f"cdc.{module}"), func)
    except (ImportError, AttributeError) as exc:
        raise _NotImplemented(f"cdc.{module}.{func} is not available in this build ({type(exc).__name__})") from None


class _NotImplemented(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _source_out(src: Source) -> Source:
    return src.model_copy(update={"dsn": redact_dsn(src.dsn)})


# -- health, readiness, metrics ----------------------------------------------------------------

health = APIRouter(tags=["health"])
api = APIRouter(dependencies=[Depends(_bearer_doc)], responses=_ERR)


@health.get("/healthz", response_model=Health, summary="Liveness (no authentication)")
def healthz() -> Health:
    """The process answers HTTP; says nothing about the systems behind it (see /readyz)."""
    return Health()


@api.get("/readyz", response_model=Ready, tags=["health"], responses={503: {"model": Ready}},
         summary="Readiness: every system a mirror needs answers")
def readyz(ctx: Ctx, response: Response) -> Ready:
    """Probes run concurrently with short timeouts; 503 lists the systems that are down.
    Pinot counts as `disabled`, not down, when this machine cannot run it."""
    ready = api_probes.readiness(ctx)
    if not ready.ready:
        response.status_code = 503
    return ready


@api.get("/metrics", response_class=PlainTextResponse, tags=["health"], summary="Prometheus metrics",
         responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **_ERR_JSON})
def metrics(ctx: Ctx) -> PlainTextResponse:
    try:
        render = _lazy("observe.metrics", "render_metrics")
    except _NotImplemented:
        text = api_probes.fallback_metrics(ctx)
    else:
        text = render(ctx)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- sources ------------------------------------------------------------------------------------

@api.get("/sources", response_model=list[Source], tags=["sources"], summary="List sources (DSNs redacted)")
def list_sources(ctx: Ctx) -> list[Source]:
    service.ensure_default_source(ctx)
    return [_source_out(s) for s in ctx.registry.list_sources()]


@api.post("/sources", response_model=Source, status_code=201, tags=["sources"],
          responses={200: {"model": Source, "description": "already registered identically"}},
          summary="Register a Postgres database")
def create_source(body: SourceIn, ctx: Ctx, response: Response) -> Source:
    """Connects once to check the DSN; the password goes to a 0600 secrets file and is never
    echoed: the answer (and any error) shows the redacted DSN only."""
    existed = ctx.registry.get_source(body.name) is not None
    password = body.password()
    try:
        try:
            service.source_from_dsn(body.name, body.dsn)
        except (ValueError, TypeError) as exc:  # e.g. a non-numeric port
            raise ConfigError(f"source {body.name}: the DSN is invalid ({type(exc).__name__})",
                              hint="use postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME") from None
        src = service.add_source(ctx, body.name, body.dsn, publication=body.publication)
    except CdcError as exc:
        if password:
            exc.message = exc.message.replace(password, "***")
            exc.hint = exc.hint.replace(password, "***") if exc.hint else exc.hint
        raise
    if existed:
        response.status_code = 200
    return _source_out(src)


@api.get("/sources/{name}", response_model=Source, tags=["sources"])
def get_source(name: SourceName, ctx: Ctx) -> Source:
    return _source_out(service.get_source(ctx, name))


@api.delete("/sources/{name}", response_model=Removed, tags=["sources"], summary="Unregister a source without mirrors")
def delete_source(name: SourceName, ctx: Ctx) -> Removed:
    if not ctx.registry.remove_source(name):       # ConflictError while mirrors use it
        raise NotFoundError(f"unknown source {name!r}")
    (ctx.settings.state_dir / "secrets" / f"{name}.properties").unlink(missing_ok=True)
    (ctx.settings.state_dir / "secrets" / f"{name}.mask-salt").unlink(missing_ok=True)
    return Removed(name=name)


# -- mirrors ------------------------------------------------------------------------------------

@api.get("/mirrors", response_model=list[MirrorRecord], tags=["mirrors"])
def list_mirrors(ctx: Ctx, source: Annotated[str | None, Query(pattern=SOURCE_NAME, max_length=41)] = None,
                 state: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None) -> list[MirrorRecord]:
    return ctx.registry.list_mirrors(source=source, state=state)


@api.post("/mirrors/plan", response_model=Plan, tags=["mirrors"], summary="Dry run: render the artifacts")
def plan_mirror(body: MirrorIn, ctx: Ctx) -> Plan:
    """Runs the preflight checks and renders connector config, Flink SQL and Pinot configs;
    creates nothing."""
    p = service.plan_mirror(ctx, body.schema_name, body.table, source=body.source, name=body.mirror_name(),
                            key=body.key, rules=body.rules)
    return Plan(name=p.spec.name, source=p.source.name, table=p.spec.qualified,
                connector_name=names.connector_name(p.source.name), connector=redact_salt(p.connector),
                flink_sql=p.flink_sql, pinot_schema=p.pinot_schema, pinot_table=p.pinot_table,
                change_topic=p.change_topic, flat_topic=p.flat_topic, table_info=p.table, notes=p.notes)


@api.post("/mirrors", response_model=MirrorRecord, status_code=201, tags=["mirrors"],
          responses={200: {"model": MirrorRecord, "description": "exists with the same spec: nothing done"}},
          summary="Create a mirror")
def create_mirror(body: MirrorIn, ctx: Ctx, response: Response) -> MirrorRecord:
    """Blocks until the connector runs (snapshot started), or with the copy load until the rows
    are loaded (GET /mirrors/{name}/status shows its progress meanwhile); on any failure
    everything created so far is undone by the service. Same spec again: 200, no-op;
    different spec: 409."""
    name = body.mirror_name()
    existed = ctx.registry.get_mirror(name) is not None
    rec = service.add_mirror(ctx, body.schema_name, body.table, source=body.source, name=name, key=body.key,
                             replica_identity_full=body.replica_identity_full, rules=body.rules, progress=_progress,
                             load=body.load)
    if existed:
        response.status_code = 200
    return rec


@api.get("/mirrors/{name}", response_model=MirrorRecord, tags=["mirrors"])
def get_mirror(name: MirrorName, ctx: Ctx) -> MirrorRecord:
    return service.get_mirror(ctx, name)


@api.delete("/mirrors/{name}", response_model=Removed, tags=["mirrors"], summary="Remove a mirror")
def delete_mirror(name: MirrorName, ctx: Ctx, drop_data: bool = False) -> Removed:
    """Cancels the Flink job and takes the table out of the connector; drop_data also drops the
    Pinot table and the Kafka topics."""
    service.remove_mirror(ctx, name, drop_data=drop_data, progress=_progress)
    return Removed(name=name, drop_data=drop_data)


@api.get("/mirrors/{name}/status", response_model=MirrorStatus, tags=["mirrors"])
def mirror_status(name: MirrorName, ctx: Ctx) -> MirrorStatus:
    return MirrorStatus.model_validate(service.mirror_status(ctx, name))


_OP_ERRS: dict[int | str, dict[str, Any]] = {501: {"model": ErrorBody, "description": "not in this build"}}


def _op(action: str, module: str, func: str, name: str, ctx: service.Context) -> OpResult:
    return OpResult(name=name, action=action, result=to_jsonable(_lazy(module, func)(ctx, name)))


@api.post("/mirrors/{name}/pause", response_model=OpResult, tags=["operations"], responses=_OP_ERRS)
def pause(name: MirrorName, ctx: Ctx) -> OpResult:
    return _op("pause", "mirrors.ops", "pause_mirror", name, ctx)


@api.post("/mirrors/{name}/resume", response_model=OpResult, tags=["operations"], responses=_OP_ERRS)
def resume(name: MirrorName, ctx: Ctx) -> OpResult:
    return _op("resume", "mirrors.ops", "resume_mirror", name, ctx)


@api.post("/mirrors/{name}/resync", response_model=OpResult, tags=["operations"], responses=_OP_ERRS)
def resync(name: MirrorName, ctx: Ctx) -> OpResult:
    return _op("resync", "mirrors.ops", "resync_mirror", name, ctx)


@api.get("/mirrors/{name}/verify", response_model=OpResult, tags=["operations"], responses=_OP_ERRS)
def verify(name: MirrorName, ctx: Ctx) -> OpResult:
    """Compares the source table with the mirror (cdc.mirrors.verify)."""
    return _op("verify", "mirrors.verify", "verify_mirror", name, ctx)


APPLY_MAX_BYTES = 1 << 20
_APPLY_BODY = {"required": True, "description": "an apply file (format: cdc/declarative/schema.json), YAML or JSON",
               "content": {"application/yaml": {"schema": {"type": "string"}},
                           "application/json": {"schema": {"type": "object"}}}}


@api.post("/apply", response_model=ApplyPlan, tags=["apply"], openapi_extra={"requestBody": _APPLY_BODY},
          responses={413: {"model": ErrorBody, "description": "the body is larger than 1 MiB"}},
          summary="Bring sources and mirrors to a file's (or, with plan=true, say what that would change)")
async def apply(request: Request, ctx: Ctx, plan: bool = False, prune: bool = False,
                drop_data: bool = False) -> ApplyPlan:
    """`cdc apply -f FILE` over HTTP: the body is the file. plan=true changes nothing and answers
    the plan (`changed`: whether applying would change anything; `problems`: why it could not);
    otherwise the plan's actions are carried out (a changed mirror is rebuilt) and the answer has
    `applied: true`. The server never reads its own environment or files for the caller: a new
    or changed source with password_env / password_file is refused (a `problem`); register it
    with POST /sources or `cdc apply` on the server, after which the file may name it as is.
    Async only to read the raw body (YAML is not JSON): the work runs in the thread pool."""
    body = await _read_body(request, APPLY_MAX_BYTES)
    return await run_in_threadpool(_apply, ctx, body, plan, prune, drop_data)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit`: a declared
    Content-Length before reading anything, a streamed (chunked) body at the chunk that
    passes it. Reading first and checking after would let one request fill the memory."""
    too_large = StarletteHTTPException(413, f"the file is larger than {limit >> 20} MiB; split it, or trim it")
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _apply(ctx: service.Context, body: bytes, plan_only: bool, prune: bool, drop_data: bool) -> ApplyPlan:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the body is not UTF-8 text", hint="send the YAML or JSON file as UTF-8") from None
    f = apply_file.loads(text, "body")
    if plan_only:
        p = applying.plan_file(ctx, f, prune=prune, local=False)
    else:
        p = applying.apply_file(ctx, f, prune=prune, drop_data=drop_data, local=False, progress=_progress)
    p.problems = [scrub_text(why) for why in p.problems]     # a check's error may quote a DSN
    return p


@api.get("/events", response_model=list[Event], tags=["events"], summary="The event log, newest first")
def events(ctx: Ctx, mirror: Annotated[str | None, Query(pattern=MIRROR_NAME, max_length=240)] = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Event]:
    return ctx.registry.list_events(mirror=mirror, limit=limit)


# -- factory ------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, *, reconciler: Reconciler | None = None,
               sampler: Background | None = None) -> FastAPI:
    """Build the app. Without CDC_API_TOKEN it only runs bound to loopback (then it accepts
    requests without a token, and says so once); a reconciler, if given, runs for the app's
    lifetime and is stopped (its current step finishes) on shutdown, e.g. SIGTERM. So does
    a sampler (cdc.observe.history.Sampler), whose history the status page (/ui) shows."""
    s = settings or get_settings()
    token = s.api_token.get_secret_value().encode() if s.api_token and s.api_token.get_secret_value() else None
    if token is None:
        if s.api_host not in LOOPBACK:
            raise ConfigError(f"refusing to serve on {s.api_host} without an API token",
                              hint="set CDC_API_TOKEN, or bind to 127.0.0.1")
        log.warning("CDC_API_TOKEN is not set: the API accepts unauthenticated requests on %s", s.api_host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if reconciler is not None:
            reconciler.start()
        if sampler is not None:
            sampler.start()
        try:
            yield
        finally:
            if sampler is not None:
                sampler.stop(s.stop_timeout_s)
            if reconciler is not None:
                log.info("stopping the reconciler (its current step finishes)")
                reconciler.stop(s.stop_timeout_s)

    app = FastAPI(title="cdc", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Live Apache Pinot mirrors of PostgreSQL tables. Every endpoint except /healthz "
                              "and the status page's files (/ui) needs `Authorization: Bearer <CDC_API_TOKEN>`.")
    app.state.settings = s
    app.state.sampler = sampler
    app.include_router(health)
    app.include_router(api)
    app.include_router(ui.router)
    app.add_exception_handler(CdcError, _on_cdc_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(_NotImplemented, lambda r, e: _error_json(501, "NotImplemented", str(e)))
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(BearerAuth, token=token)
    return app
