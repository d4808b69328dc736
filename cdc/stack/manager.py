"""`cdc stack up | down | status`: all components, in dependency order.

`up` is idempotent: a service whose pid is alive is left alone, only what is down is
started, and if starting fails every service that *this* call started is stopped again,
so a failed `up` leaves nothing behind it. Data folders survive `down` unless --clean.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdc.core import stack_secrets
from cdc.core.settings import Settings
from cdc.core.errors import StackError
from cdc.stack import components, provision
from cdc.stack.process import Progress, Service, Unavailable, port_in_use, rss_bytes



def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _flink_services(settings: Settings, progress: Progress) -> list[Service]:
    from cdc.stack import flink
    return flink.services(settings, progress)


def _pinot_services(settings: Settings, progress: Progress) -> tuple[list[Service], Unavailable | None]:
    from cdc.stack import pinot
    return pinot.services(settings, progress)


def plan_services(settings: Settings, progress: Progress = _say, provision_missing: bool = True
                  ) -> tuple[list[Service], list[Unavailable]]:
    """Every service of the configured stack, provisioning cache entries as needed."""
    components.which_java_ok()
    provision.clean_partials(settings.cache_dir)
    services: list[Service] = []
    unavailable: list[Unavailable] = []
    if settings.postgres_dsn is None:
        services.append(components.postgres_service(settings))
    kafka_home = provision.kafka_entry(settings.cache_dir, progress)
    dbz_home = provision.debezium_entry(settings.cache_dir, progress)
    services.append(components.kafka_service(settings, kafka_home))
    services.append(components.connect_service(settings, kafka_home, dbz_home))
    services.extend(_flink_services(settings, progress))
    pinot_services, pinot_missing = _pinot_services(settings, progress)
    services.extend(pinot_services)
    if pinot_missing:
        unavailable.append(pinot_missing)
    return services, unavailable


def up(settings: Settings, progress: Progress = _say) -> dict:
    # Everything `up` and the services create under the state folder is private (0700/0600):
    # it holds every mirrored row and the stack's credentials.
    old_umask = os.umask(0o077)
    try:
        return _up(settings, progress)
    finally:
        os.umask(old_umask)
        stack_secrets.secure_state_dir(settings.state_dir)


def _up(settings: Settings, progress: Progress) -> dict:
    t0 = time.monotonic()
    services, unavailable = plan_services(settings, progress)
    for u in unavailable:
        if u.required:
            raise StackError(u.name, u.reason)
        progress(f"WARNING {u.name} is not part of this stack: {u.reason}")
    if any(u.name == "pinot" for u in unavailable):
        # No Pinot server here: mirrors are read through Pinot's own code in-process instead.
        from cdc.stack import pinot_engine
        pinot_engine.engine_home(settings.cache_dir, progress)
        progress("pinot engine (Pinot's libraries, in-process) ready: mirrors are read through it")
    down_now = [s for s in services if s.pid() is None]
    stack_secrets.secure_state_dir(settings.state_dir)   # 0700 (0710 as root), nothing group/world-readable

    def taken_ports() -> list[tuple[str, int, str]]:
        return [(s.name, port, n) for s in down_now for n, port in s.ports.items() if port_in_use(settings.host, port)]

    taken = taken_ports()
    deadline = time.monotonic() + 15
    while taken and time.monotonic() < deadline:
        # A process killed a moment ago releases its sockets only when its last thread
        # is gone (its main thread is already a zombie): give it a few seconds.
        time.sleep(0.5)
        taken = taken_ports()
    if taken:
        lines = ", ".join(f"{name} needs {settings.host}:{port} ({n})" for name, port, n in taken)
        raise StackError(taken[0][0], f"port already in use: {lines}",
                         hint="stop whatever holds it, or choose another port with CDC_PORT_<NAME>=...")
    by_name = {s.name: s for s in services}
    started: list[Service] = []
    try:
        pending = list(down_now)
        waiting: list[Service] = []
        while pending or waiting:
            # Start everything whose dependencies are healthy, then wait for that wave.
            wave = [s for s in pending if all(by_name[d].check() is None for d in s.depends_on if d in by_name)]
            if not wave and not waiting:
                names = ", ".join(s.name for s in pending)
                raise StackError(pending[0].name, f"dependencies never became healthy for: {names}")
            for s in wave:
                progress(f"starting {s.name} ({s.version})")
                s.start()
                started.append(s)
                pending.remove(s)
                waiting.append(s)
            # Wait for the first of the waiting to be healthy (others progress meanwhile).
            s = waiting.pop(0)
            s.wait_healthy(settings.start_timeout_s, progress)
            progress(f"{s.name} healthy ({time.monotonic() - t0:.1f}s)")
    except BaseException:
        progress("start failed: stopping what this `up` started")
        for s in reversed(started):
            s.stop(settings.stop_timeout_s)
        raise
    already = [s.name for s in services if s not in down_now]
    if already:
        progress(f"already running: {', '.join(already)}")
    progress(f"stack healthy in {time.monotonic() - t0:.1f}s")
    return status(settings, services, unavailable)


def down(settings: Settings, clean: bool = False, progress: Progress = _say) -> list[str]:
    services, _ = plan_services(settings, progress)
    stopped = []
    for s in reversed(services):  # dependents first
        if s.stop(settings.stop_timeout_s):
            progress(f"stopped {s.name}")
            stopped.append(s.name)
    if clean:
        for sub in ("postgres", "kafka", "connect", "flink", "pinot", "logs", "registry.db"):
            p = settings.state_dir / sub
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        progress(f"removed data under {settings.state_dir}")
    return stopped


def status(settings: Settings, services: list[Service] | None = None,
           unavailable: list[Unavailable] | None = None) -> dict:
    if services is None:
        services, unavailable = plan_services(settings, _say)
    procs = []
    endpoints: dict[str, str] = {}
    for s in services:
        pid = s.pid()
        reason = s.check() if pid else "not running"
        procs.append({"name": s.name, "component": s.component, "version": s.version, "pid": pid,
                      "ports": s.ports, "healthy": reason is None, "reason": reason,
                      "rss_bytes": rss_bytes(pid) if pid else 0, "log": str(s.log_file)})
        endpoints.update(s.endpoints)
    if settings.postgres_dsn is not None:
        endpoints["postgres_dsn"] = "(external, from CDC_POSTGRES_DSN)"
    endpoints.setdefault("pinot_controller_url", settings.controller_url)
    endpoints.setdefault("pinot_broker_url", settings.broker_url)
    missing = [{"name": u.name, "reason": u.reason, "required": u.required} for u in (unavailable or [])]
    healthy = all(p["healthy"] for p in procs) and not any(u["required"] for u in missing)
    return {"healthy": healthy, "processes": procs, "unavailable": missing, "endpoints": endpoints,
            "state_dir": str(settings.state_dir), "cache_dir": str(settings.cache_dir),
            "total_rss_bytes": sum(p["rss_bytes"] for p in procs)}


def service_log(settings: Settings, name: str) -> Path:
    services, _ = plan_services(settings, _say)
    names = [s.name for s in services]
    for s in services:
        if s.name == name or s.component == name:
            return s.log_file
    raise StackError(name, f"unknown component; known: {', '.join(names)}")
