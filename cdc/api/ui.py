"""The status page (/ui) and the one JSON document it polls (/ui/data).

Why the page itself is open and its data is not: index.html, app.js and style.css are
package files with no data in them, so a browser can load them without a header; the page
then takes the token once (a `#token=...` fragment, never sent to the server, or a form),
keeps it in the tab's sessionStorage and sends it as `Authorization: Bearer` on every
/ui/data request, which BearerAuth (cdc.api.app) guards like any other endpoint. The
loopback Host check of a token-less server covers these paths too.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from cdc.api.models import ErrorBody
from cdc.mirrors import service
from cdc.mirrors.registry import Event
from cdc.observe.history import History

EVENTS = 20
# path -> (file under cdc/api/static, media type)
ASSETS = {"/ui": ("index.html", "text/html; charset=utf-8"), "/ui/": ("index.html", "text/html; charset=utf-8"),
          "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/ui/style.css": ("style.css", "text/css; charset=utf-8")}
OPEN_PATHS = frozenset(ASSETS)
# Nothing from elsewhere, no inline script: a reason text in an event can never run as code.
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                      "connect-src 'self'; img-src 'self'; form-action 'none'; "
                                      "frame-ancestors 'none'; base-uri 'none'",
           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


class Freshness(BaseModel):
    p50: float | None = Field(description="seconds, over the window")
    p99: float | None
    last: float | None
    via: str | None = Field(description="how far the probe was followed: change_topic or pinot")
    samples: int


class Throughput(BaseModel):
    last: float | None = Field(description="records/s written to the flat topic since the previous sample")
    avg: float | None = Field(description="records/s over the window")
    records: int | None = Field(description="records written to the flat topic over the window")


class Job(BaseModel):
    offset: int | None = Field(description="the Flink job's committed offset on the change topic")
    end: int = Field(description="the change topic's end offset")
    lag: int | None


class Series(BaseModel):
    t: list[float]
    freshness_s: list[float | None]
    records_per_s: list[float | None]


class MirrorView(BaseModel):
    name: str
    source: str
    table: str
    state: str = Field(description="the registry's state now")
    sampled_at: float | None
    samples: int
    freshness: Freshness
    throughput: Throughput
    job: Job | None
    snapshot: dict[str, Any] | None
    wal_retained_bytes: int | None
    series: Series


class UiData(BaseModel):
    now: float
    sampling: bool = Field(description="false when `cdc serve` runs without the sampler")
    interval_s: float | None
    window_s: float | None
    sampled_at: float | None
    wal_warn_bytes: int
    errors: dict[str, str] = Field(description="readings that failed in the last sampling pass")
    mirrors: list[MirrorView]
    events: list[Event]


_NO_HISTORY = History(1.0)       # `cdc serve --sample-interval 0`: every figure None
router = APIRouter()
_bearer_doc = HTTPBearer(auto_error=False, description="the CDC_API_TOKEN setting")


def _asset(request: Request) -> Response:
    name, media = ASSETS[request.url.path]
    body = (resources.files("cdc.api") / "static" / name).read_bytes()
    return Response(body, media_type=media, headers=HEADERS)


for _path in ASSETS:
    router.add_api_route(_path, _asset, methods=["GET"], include_in_schema=False)


@router.get("/ui/data", response_model=UiData, tags=["ui"], dependencies=[Depends(_bearer_doc)],
            responses={401: {"model": ErrorBody}},
            summary="Every mirror with its last hour, and the latest events (what /ui shows)")
def ui_data(request: Request) -> UiData:
    sampler = getattr(request.app.state, "sampler", None)
    history = getattr(sampler, "history", None)
    now = time.time()
    ctx = service.context(request.app.state.settings)
    try:
        mirrors, events = ctx.registry.list_mirrors(), ctx.registry.list_events(limit=EVENTS)
    finally:
        ctx.close()
    views = []
    for m in mirrors:
        v = (history or _NO_HISTORY).view(m.name, now)
        views.append(MirrorView(name=m.name, source=m.source, table=m.spec.qualified, state=m.state, **v))
    return UiData(now=now, sampling=history is not None, interval_s=history.interval_s if history else None,
                  window_s=history.window_s if history else None,
                  sampled_at=history.sampled_at if history else None,
                  wal_warn_bytes=request.app.state.settings.wal_retained_warn_bytes,
                  errors=history.errors if history else {}, mirrors=views, events=events)
