"""Readiness probes and the fallback metrics of the REST API (cdc.api.app).

Why separate probes with short timeouts: /readyz is polled by supervisors and load
balancers, so it must answer within a few seconds even when a system hangs, and say which
system is down. The clients' own timeouts (15-30 s) are meant for real work, not probing.
PROBES is a plain dict so tests (and deployments without Kafka, say) can replace entries.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cdc.mirrors import service
from cdc.api.models import Check, Ready, scrub_text
from cdc.clients.connect import ConnectClient
from cdc.clients.flink import JobManagerClient, SqlGatewayClient
from cdc.clients.pinot import PinotControllerClient
from cdc.core.errors import CdcError, UnreachableError

PROBE_TIMEOUT_S = 3.0
Probe = Callable[[service.Context], "str | None"]


def probe_postgres(ctx: service.Context) -> None:
    """The default source (the private cluster, or CDC_POSTGRES_DSN)."""
    from cdc.postgres import catalog
    with catalog.connect(ctx.settings.source_dsn(), connect_timeout=int(PROBE_TIMEOUT_S)) as conn:
        conn.execute("select 1")


def probe_kafka(ctx: service.Context) -> None:
    from cdc.clients.kafka import KafkaAdmin
    KafkaAdmin(ctx.settings.kafka_bootstrap, timeout=PROBE_TIMEOUT_S).topics()


def probe_connect(ctx: service.Context) -> None:
    ConnectClient(ctx.settings.connect_url, timeout=PROBE_TIMEOUT_S, auth=ctx.settings.connect_auth()).list_connectors()


def probe_jobmanager(ctx: service.Context) -> None:
    JobManagerClient(ctx.settings.flink_url, timeout=PROBE_TIMEOUT_S).overview()


def probe_sql_gateway(ctx: service.Context) -> None:
    SqlGatewayClient(ctx.settings.sql_gateway_url, timeout=PROBE_TIMEOUT_S).info()


def probe_pinot(ctx: service.Context) -> str | None:
    """Disabled (with the reason) rather than down when this machine cannot run Pinot."""
    enabled, why = service.pinot_enabled(ctx)
    if not enabled:
        return why or "disabled"
    if not PinotControllerClient(ctx.settings.controller_url, timeout=PROBE_TIMEOUT_S).health():
        raise UnreachableError("Pinot controller", "health check failed")
    return None


PROBES: dict[str, Probe] = {
    "postgres": probe_postgres,
    "kafka": probe_kafka,
    "kafka_connect": probe_connect,
    "flink_jobmanager": probe_jobmanager,
    "flink_sql_gateway": probe_sql_gateway,
    "pinot_controller": probe_pinot,
}


def run_probe(fn: Probe, ctx: service.Context) -> Check:
    """A probe returns None (up), a reason string (disabled) or raises (down)."""
    try:
        why = fn(ctx)
    except CdcError as exc:
        return Check(status="down", detail=scrub_text(exc.message.splitlines()[0] if exc.message else ""))
    except Exception as exc:  # a probe must answer "down", never crash the endpoint
        return Check(status="down", detail=type(exc).__name__)
    return Check(status="up") if why is None else Check(status="disabled", detail=why)


def readiness(ctx: service.Context) -> Ready:
    """All probes concurrently: the answer takes as long as the slowest, not their sum."""
    with ThreadPoolExecutor(max_workers=len(PROBES)) as pool:
        futures = {name: pool.submit(run_probe, fn, ctx) for name, fn in PROBES.items()}
        checks = {name: f.result() for name, f in futures.items()}
    down = sorted(n for n, c in checks.items() if c.status == "down")
    return Ready(ready=not down, down=down, checks=checks)


def fallback_metrics(ctx: service.Context) -> str:
    """Minimal Prometheus text when cdc.observe.metrics is not available: mirrors by state, sources."""
    counts: dict[str, int] = {}
    for m in ctx.registry.list_mirrors():
        counts[m.state] = counts.get(m.state, 0) + 1
    lines = ["# HELP cdc_mirrors Mirrors in the registry, by state.", "# TYPE cdc_mirrors gauge"]
    lines += [f'cdc_mirrors{{state="{_label(s)}"}} {n}' for s, n in sorted(counts.items())]
    lines += ["# HELP cdc_sources Registered Postgres sources.", "# TYPE cdc_sources gauge",
              f"cdc_sources {len(ctx.registry.list_sources())}"]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
