"""add_mirror's reachability check refuses before anything is created."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cdc.mirrors import lifecycle, service
from cdc.core.errors import ConfigError


def _ctx(slots_available: int) -> SimpleNamespace:
    return SimpleNamespace(
        connect=SimpleNamespace(list_connectors=lambda: []),
        gateway=SimpleNamespace(info=lambda: {"version": "2.2.1"}),
        jobmanager=SimpleNamespace(overview=lambda: {"slots-total": 8, "slots-available": slots_available}),
        controller=SimpleNamespace(health=lambda: True),
        settings=SimpleNamespace(controller_url="http://127.0.0.1:9000"))


def test_no_free_flink_slot_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as ei:
        lifecycle._check_reachable(_ctx(0), with_pinot=False)
    assert "no free task slot" in ei.value.message and "CDC_FLINK_TASKMANAGER_SLOTS" in (ei.value.hint or "")


def test_free_slot_passes() -> None:
    lifecycle._check_reachable(_ctx(3), with_pinot=True)


def test_invalid_mirror_name_is_refused() -> None:
    ctx = SimpleNamespace(registry=SimpleNamespace(get_source=lambda n: None, add_source=lambda s: s),
                          settings=SimpleNamespace(source_dsn=lambda: "postgresql://x@127.0.0.1:1/x"))
    with pytest.raises(ConfigError, match="invalid mirror name"):
        service.plan_mirror(ctx, "public", "t", name="Bad Name!")
