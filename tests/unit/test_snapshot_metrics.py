"""Snapshot progress in the Prometheus text (cdc.observe.metrics, reader injected)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cdc.core.models import MirrorSpec, Source
from cdc.mirrors.registry import Registry
from cdc.mirrors.snapshot import Progress
from cdc.observe import metrics


class Down:
    def list_connectors(self) -> list[str]:
        from cdc.core.errors import UnreachableError
        raise UnreachableError("Kafka Connect", "cannot connect")

    jobs = list_connectors


def test_snapshot_series_per_mirror(tmp_path: Any) -> None:
    reg = Registry(tmp_path / "r.db")
    reg.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    for name in ("m1", "m2", "m3"):
        reg.add_mirror(MirrorSpec(name=name, source="s1", schema_name="Sales", table_name=f"Order {name}"),
                       state="running", connector_name="cdc-s1")
    ctx = SimpleNamespace(registry=reg, settings=SimpleNamespace(pinot_mode="none", wal_retained_warn_bytes=1),
                          connect=Down(), jobmanager=Down(), broker=None, controller=None)
    snaps = {"m1": Progress(table="Sales.Order m1", kind="incremental", state="running", rows=120, estimate=300),
             "m2": Progress(table="Sales.Order m2", kind="incremental", state="done", rows=300)}
    text = metrics.render_metrics(ctx, wal_reader=lambda c, s: None, snapshot_reader=lambda c, ms: snaps)
    assert 'cdc_mirror_snapshot_state{mirror="m1",source="s1",state="running"} 1' in text
    assert 'cdc_mirror_snapshot_state{mirror="m1",source="s1",state="done"} 0' in text
    assert 'cdc_mirror_snapshot_rows{mirror="m1",source="s1"} 120' in text
    assert 'cdc_mirror_snapshot_rows_estimate{mirror="m1",source="s1"} 300' in text
    assert 'cdc_mirror_snapshot_state{mirror="m2",source="s1",state="done"} 1' in text
    assert 'cdc_mirror_snapshot_rows{mirror="m2",source="s1"} 300' in text
    assert 'mirror="m3"' in text and 'cdc_mirror_snapshot_state{mirror="m3"' not in text   # unknown: no series
    broken = metrics.render_metrics(ctx, wal_reader=lambda c, s: None, snapshot_reader=lambda c, ms: 1 / 0)
    assert "cdc_mirror_snapshot_state" not in broken and "cdc_mirror_state" in broken
    reg.close()


def test_load_series_replace_an_unused_snapshot(tmp_path: Any) -> None:
    """A mirror whose rows the copy load read (cdc.mirrors.load_progress) has load series, and
    Debezium's "nothing reported" snapshot is not exported for it."""
    import time

    from cdc.mirrors import load_progress
    reg = Registry(tmp_path / "r.db")
    reg.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    reg.add_mirror(MirrorSpec(name="m1", source="s1", schema_name="s", table_name="t"), state="creating")
    load_progress.write(tmp_path / "r.db", load_progress.LoadProgress(
        mirror="m1", state="loading", rows=400, estimate=1000, started_at=time.time(), updated_at=time.time() + 40))
    ctx = SimpleNamespace(registry=reg, settings=SimpleNamespace(pinot_mode="none", wal_retained_warn_bytes=1,
                                                                 registry_file=tmp_path / "r.db"),
                          connect=Down(), jobmanager=Down(), broker=None, controller=None)
    snaps = {"m1": Progress(table="s.t", state="unknown")}
    text = metrics.render_metrics(ctx, wal_reader=lambda c, s: None, snapshot_reader=lambda c, ms: snaps)
    assert 'cdc_mirror_load_state{mirror="m1",source="s1",state="loading"} 1' in text
    assert 'cdc_mirror_load_rows{mirror="m1",source="s1"} 400' in text
    assert 'cdc_mirror_load_rows_estimate{mirror="m1",source="s1"} 1000' in text
    assert 'cdc_mirror_load_rows_per_second{mirror="m1",source="s1"} 10' in text
    assert 'cdc_mirror_load_eta_seconds{mirror="m1",source="s1"}' in text
    assert "cdc_mirror_snapshot_state" not in text
    reg.close()
