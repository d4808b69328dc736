"""cdc.observe.metrics: Prometheus text format, enum state gauges, down systems, WAL threshold."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.observe import metrics
from cdc.clients.connect import ConnectorStatus, TaskStatus
from cdc.clients.flink import CheckpointInfo, JobInfo
from cdc.core.errors import UnreachableError
from cdc.core.models import MirrorSpec, Source
from cdc.mirrors.registry import Registry

NOW = 2_000_000_000.0
LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? \S+$')


class FakeConnect:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    def list_connectors(self) -> list[str]:
        if not self.up:
            raise UnreachableError("Kafka Connect", "cannot connect")
        return ["cdc-s1"]

    def status(self, name: str) -> ConnectorStatus:
        return ConnectorStatus(name=name, state="RUNNING",
                               tasks=[TaskStatus(id=0, state="RUNNING"), TaskStatus(id=1, state="FAILED")])


class FakeJM:
    def jobs(self) -> list[JobInfo]:
        return [JobInfo(jid="j1", name="cdc-mirror-m1", state="RUNNING")]

    def checkpoints(self, job_id: str) -> CheckpointInfo | None:
        return CheckpointInfo(id=7, external_path="file:/x/chk-7", timestamp=int((NOW - 12.5) * 1000))


class FakeBroker:
    def count(self, table: str) -> int:
        return 42


@pytest.fixture
def ctx(tmp_path: Any) -> Any:
    reg = Registry(tmp_path / "r.db")
    reg.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    reg.add_source(Source(name="unused", dsn="postgresql://u@h/db2"))
    reg.add_mirror(MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t1"), state="running",
                   connector_name="cdc-s1", flink_job_id="j1")
    reg.add_mirror(MirrorSpec(name="m2", source="s1", schema_name="public", table_name='t"2'), state="paused",
                   connector_name="cdc-s1", flink_job_id="gone")
    settings = SimpleNamespace(pinot_mode="none", wal_retained_warn_bytes=1000)
    yield SimpleNamespace(registry=reg, settings=settings, connect=FakeConnect(), jobmanager=FakeJM(),
                          broker=FakeBroker(), controller=None)
    reg.close()


def _render(ctx: Any, wal: int | None = 5000) -> str:
    return metrics.render_metrics(ctx, wal_reader=lambda c, s: wal, now=lambda: NOW)


def _value(text: str, series: str) -> str:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return line.rsplit(" ", 1)[1]
    raise AssertionError(f"{series} not in\n{text}")


def test_text_format_is_valid(ctx: Any) -> None:
    text = _render(ctx)
    assert text.endswith("\n")
    families: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            families.append(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[2] == families[-1] and line.split()[3] == "gauge"
        else:
            assert LINE.match(line), line
            assert line.split("{")[0].split(" ")[0] == families[-1]    # samples follow their family
    assert len(families) == len(set(families))                          # HELP/TYPE once per family


def test_state_gauges(ctx: Any) -> None:
    text = _render(ctx)
    assert _value(text, 'cdc_connector_state{mirror="m1",source="s1",connector="cdc-s1",state="RUNNING"}') == "1"
    assert _value(text, 'cdc_connector_state{mirror="m1",source="s1",connector="cdc-s1",state="FAILED"}') == "0"
    assert _value(text, 'cdc_connector_task_state{mirror="m1",source="s1",connector="cdc-s1",task="1",'
                        'state="FAILED"}') == "1"
    assert _value(text, 'cdc_flink_job_state{mirror="m1",source="s1",job_id="j1",state="RUNNING"}') == "1"
    assert _value(text, 'cdc_flink_job_state{mirror="m2",source="s1",job_id="gone",state="MISSING"}') == "1"
    assert _value(text, 'cdc_flink_last_checkpoint_age_seconds{mirror="m1",source="s1"}') == "12.5"
    assert _value(text, 'cdc_mirror_state{mirror="m2",source="s1",state="paused"}') == "1"
    assert "cdc_pinot_rows" not in text                                 # Pinot disabled
    assert _value(text, 'cdc_up{system="connect"}') == "1"


def test_label_values_are_escaped(ctx: Any) -> None:
    ctx.registry.add_mirror(MirrorSpec(name='q"\\\nx', source="s1", schema_name="public", table_name="t3"),
                            state="creating")
    text = _render(ctx)
    assert 'cdc_mirror_state{mirror="q\\"\\\\\\nx",source="s1",state="creating"} 1' in text


def test_wal_threshold(ctx: Any) -> None:
    over = _render(ctx, wal=5000)
    assert _value(over, 'cdc_slot_wal_retained_bytes{source="s1",slot="cdc_s1"}') == "5000"
    assert _value(over, 'cdc_slot_wal_retained_over_threshold{source="s1",slot="cdc_s1"}') == "1"
    assert _value(over, "cdc_slot_wal_retained_warn_bytes") == "1000"
    assert 'source="unused"' not in over                                 # no mirrors: not scraped
    under = _render(ctx, wal=10)
    assert _value(under, 'cdc_slot_wal_retained_over_threshold{source="s1",slot="cdc_s1"}') == "0"
    assert "cdc_slot_wal_retained_bytes" not in _render(ctx, wal=None)   # no slot yet
    del ctx.settings.wal_retained_warn_bytes                             # default 1 GiB
    assert _value(_render(ctx), "cdc_slot_wal_retained_warn_bytes") == str(1 << 30)


def test_down_system_is_absent_not_zero(ctx: Any) -> None:
    ctx.connect = FakeConnect(up=False)

    def broken(c: Any, s: Any) -> int:
        raise RuntimeError("pg down")

    text = metrics.render_metrics(ctx, wal_reader=broken, now=lambda: NOW)
    assert "cdc_connector_state" not in text
    assert _value(text, 'cdc_up{system="connect"}') == "0"
    assert _value(text, 'cdc_up{system="postgres:s1"}') == "0"
    assert "cdc_flink_job_state" in text


def test_pinot_rows_and_freshness(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.settings.pinot_mode = "external"
    monkeypatch.setattr(metrics, "_samples", {"s1": metrics.FreshnessSample("s1", 0.25, "change_topic", NOW - 3)})
    text = _render(ctx)
    assert _value(text, 'cdc_pinot_rows{mirror="m1",source="s1"}') == "42"
    assert 'cdc_pinot_rows{mirror="m2"' not in text                      # paused: not queried
    assert _value(text, 'cdc_freshness_seconds{source="s1",via="change_topic"}') == "0.25"
    assert _value(text, 'cdc_freshness_sample_age_seconds{source="s1"}') == "3.0"


def test_same_instant_parses_debezium_zoned_timestamp() -> None:
    from datetime import datetime, timezone
    t = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert metrics._same_instant("2030-01-02T03:04:05.123456Z", t)
    assert not metrics._same_instant("2030-01-02T03:04:05.123457Z", t)
    assert not metrics._same_instant(None, t)


def test_lost_slot_is_a_metric_even_without_retained_wal(ctx: Any) -> None:
    """An invalidated slot has no restart_lsn, so no retained-WAL figure: it must still show."""
    lost = metrics.render_metrics(ctx, wal_reader=lambda c, s: None, lost_reader=lambda c, s: True, now=lambda: NOW)
    assert _value(lost, 'cdc_slot_lost{source="s1",slot="cdc_s1"}') == "1"
    ok = metrics.render_metrics(ctx, wal_reader=lambda c, s: 10, lost_reader=lambda c, s: False, now=lambda: NOW)
    assert _value(ok, 'cdc_slot_lost{source="s1",slot="cdc_s1"}') == "0"
