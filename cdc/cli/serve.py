"""`cdc serve` (the REST API + the reconciler in one process) and `cdc events`.

Why one process: the reconciler and the API share the registry and the settings, and a
single unit is simpler to supervise. Shutdown order matters: uvicorn handles SIGTERM/SIGINT
by draining requests, then runs the app's lifespan exit, which stops the reconciler (its
current step finishes, the lease is released); then `serve` returns 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
from types import FrameType
from typing import Any

from cdc.mirrors import service
from cdc.core.settings import Settings, get_settings

log = logging.getLogger("cdc.serve")


def make_reconciler(settings: Settings) -> Any | None:
    """cdc.mirrors.reconcile.Reconciler(ctx_factory, settings) when that module exists, else None."""
    try:
        mod = importlib.import_module("cdc.mirrors.reconcile")
    except ModuleNotFoundError as exc:
        if exc.name != "cdc.mirrors.reconcile":
            raise
        return None
    cls = getattr(mod, "Reconciler", None)
    if cls is None:
        return None
    return cls(lambda: service.context(settings), settings)


def make_sampler(settings: Settings, interval_s: float) -> Any | None:
    """The status page's history (cdc.observe.history); None when interval_s is 0. Each pass
    also commits one freshness probe row per source with a running mirror."""
    if interval_s <= 0:
        return None
    from cdc.observe.history import Sampler
    return Sampler(lambda: service.context(settings), interval_s, probe_timeout_s=min(10.0, max(2.0, interval_s)))


def serve_settings(host: str | None, port: int | None) -> Settings:
    s = get_settings()
    update: dict[str, Any] = {}
    if host:
        update["api_host"] = host
    if port:
        update["api_port"] = port
    return s.model_copy(update=update) if update else s


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    """SIGTERM means "stop", not "fail". uvicorn captures SIGTERM while serving, shuts down
    gracefully, then re-raises it to the previous handler: this one, so the exit code is 0."""
    raise SystemExit(0)


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from cdc.api.app import create_app
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = serve_settings(a.host, a.port)
    reconciler = None if a.no_reconciler else make_reconciler(s)
    sampler = make_sampler(s, a.sample_interval)
    app = create_app(s, reconciler=reconciler, sampler=sampler)   # refuses a non-loopback bind without a token
    log.info("serving on http://%s:%d (reconciler: %s; status page: /ui, sampled every %s)", s.api_host, s.api_port,
             "on" if reconciler is not None else "off", f"{a.sample_interval:g} s" if sampler else "- (off)")
    # The access log prints "client - METHOD path status": never headers, so never the token.
    signal.signal(signal.SIGTERM, _exit_zero)
    uvicorn.run(app, host=s.api_host, port=s.api_port, log_level="info", access_log=True,
                timeout_graceful_shutdown=int(s.stop_timeout_s))
    return 0


def cmd_events(a: argparse.Namespace) -> int:
    ctx = service.context()
    try:
        events = ctx.registry.list_events(mirror=a.mirror, limit=a.limit)
    finally:
        ctx.close()
    if a.json:
        print(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
        return 0
    for e in events:
        print(f"{e.id}\t{e.ts}\t{e.mirror or '-'}\t{e.action}\t{e.reason or ''}")
    return 0


def _positive(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError("must be between 1 and 100000")
    return n


def _interval(text: str) -> float:
    v = float(text)
    if v != 0 and not 1 <= v <= 3600:
        raise argparse.ArgumentTypeError("must be 0 (off) or between 1 and 3600 seconds")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the REST API (and the reconciler) until SIGTERM")
    p.add_argument("--host", help="bind address (default: CDC_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: CDC_API_PORT, 8765)")
    p.add_argument("--no-reconciler", action="store_true", help="serve the API only")
    p.add_argument("--sample-interval", type=_interval, default=10.0, metavar="SECONDS",
                   help="how often the status page's history is sampled (default 10; 0: off)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("events", help="the event log, newest first")
    p.add_argument("--mirror", help="only this mirror's events")
    p.add_argument("--limit", type=_positive, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events)
