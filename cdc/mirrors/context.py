"""The clients of every system a command or request talks to, built once from settings,
and whether Pinot is part of this deployment."""

from __future__ import annotations

from dataclasses import dataclass

from cdc.clients.connect import ConnectClient
from cdc.clients.flink import JobManagerClient, SqlGatewayClient
from cdc.clients.pinot import PinotBrokerClient, PinotControllerClient
from cdc.core.errors import RemoteError
from cdc.core.settings import Settings, get_settings
from cdc.mirrors.registry import Registry


@dataclass
class Context:
    """Clients for every system, built from settings once per command or request."""

    settings: Settings
    registry: Registry
    connect: ConnectClient
    gateway: SqlGatewayClient
    jobmanager: JobManagerClient
    controller: PinotControllerClient
    broker: PinotBrokerClient
    #: a plan's context (`cdc apply --plan`): checks read, nothing is written, so the default
    #: source is computed from the settings instead of registered (cdc.mirrors.sources.get_source)
    read_only: bool = False

    def close(self) -> None:
        self.registry.close()


def context(settings: Settings | None = None) -> Context:
    s = settings or get_settings()
    s.registry_file.parent.mkdir(parents=True, exist_ok=True)
    return Context(settings=s, registry=Registry(s.registry_file), connect=ConnectClient(s.connect_url, auth=s.connect_auth()),
                   gateway=SqlGatewayClient(s.sql_gateway_url), jobmanager=JobManagerClient(s.flink_url),
                   controller=PinotControllerClient(s.controller_url), broker=PinotBrokerClient(s.broker_url))


def pinot_enabled(ctx: Context) -> tuple[bool, str]:
    """(enabled, why). Pinot is skipped only when told so, or when the local stack knows
    it cannot run Pinot on this machine (mode auto + provisioning refused)."""
    s = ctx.settings
    if s.pinot_mode == "none":
        return False, "CDC_PINOT_MODE=none"
    if s.pinot_mode == "auto" and not s.pinot_controller_url:
        marker = next(iter(s.cache_dir.glob("pinot-*.unavailable")), None)
        if marker is not None and not _pinot_answers(ctx):
            return False, marker.read_text().strip().split(";")[0]
    return True, ""


def _pinot_answers(ctx: Context) -> bool:
    try:
        return bool(ctx.controller.health())
    except RemoteError:
        return False
