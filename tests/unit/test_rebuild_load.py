"""cdc.mirrors.rebuild_load: which path reads a rebuild's rows (initial_load.choose_for_table), and
where its load is."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.core.errors import CdcError
from cdc.core.models import Column, MirrorRules, MirrorSpec, TableInfo
from cdc.mirrors import initial_load, load_progress, rebuild_load
from cdc.mirrors.load_progress import LoadProgress
from cdc.mirrors.registry import Rebuild

T = TableInfo(schema_name="public", table_name="t", primary_key=["id"],
              columns=[Column(name="id", type_name="bigint", base_type="int8", position=1, nullable=False),
                       Column(name="v", type_name="text", base_type="text", position=2, nullable=True)])
SPEC = MirrorSpec(name="m", source="s1", schema_name="public", table_name="t")


def test_a_rebuilds_load_path_follows_the_setting_and_the_tables_refusal() -> None:
    def mode(requested: str | None, setting: str, spec: MirrorSpec = SPEC) -> tuple[str, str]:
        c = initial_load.choose_for_table(requested, setting, spec, T)
        return c.mode, c.why
    assert mode(None, "copy") == ("copy", "")
    assert mode("debezium", "copy") == ("debezium", "")
    assert mode(None, "debezium") == ("debezium", "")
    got, why = mode(None, "copy", SPEC.model_copy(update={"rules": MirrorRules(mask_columns={"v": "redact"})}))
    assert got == "debezium" and "masked" in why
    with pytest.raises(CdcError, match="unknown initial load 'fast'"):
        mode("fast", "copy")


def _ctx(tmp_path: Path) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(registry_file=tmp_path / "registry.db"))


def _rb(started_at: float, start_offset: int = 41) -> Rebuild:
    return Rebuild(generation=1, table=T, group_id="g", start_offset=start_offset, started_at=started_at, load="copy")


REC = SimpleNamespace(name="m")


def test_phase_reads_the_loads_progress_file(tmp_path: Path) -> None:
    ctx, now = _ctx(tmp_path), time.time()
    assert rebuild_load.phase(ctx, REC, _rb(now)) == ("loading", None)             # not written yet
    assert rebuild_load.phase(ctx, REC, _rb(now - 600)) == ("lost", None)          # never written: its process died
    p = LoadProgress(mirror="m", state="loading", rows=10, start_offset=41, started_at=now, updated_at=now)
    load_progress.write(ctx.settings.registry_file, p)
    assert rebuild_load.phase(ctx, REC, _rb(now))[0] == "loading"
    # the file of another rebuild (another marker) is not this one's
    assert rebuild_load.phase(ctx, REC, _rb(now - 600, start_offset=99)) == ("lost", None)
    p.updated_at = now - rebuild_load.LOAD_STALE_S - 1
    load_progress.write(ctx.settings.registry_file, p)
    assert rebuild_load.phase(ctx, REC, _rb(now))[0] == "lost"                     # stopped moving
    for state in ("done", "failed"):
        p.state = state
        load_progress.write(ctx.settings.registry_file, p)
        assert rebuild_load.phase(ctx, REC, _rb(now))[0] == state


def test_a_load_alive_in_this_process_is_never_lost(tmp_path: Path) -> None:
    import threading
    ctx, gate = _ctx(tmp_path), threading.Event()
    t = threading.Thread(target=gate.wait, daemon=True)
    t.start()
    rebuild_load._RUNNING["m"] = (t, threading.Event())
    try:
        assert rebuild_load.phase(ctx, REC, _rb(time.time() - 600)) == ("loading", None)
        rebuild_load.stop("m", wait_s=0.1)
        assert rebuild_load._RUNNING["m"][1].is_set()                   # the load's cancel event
    finally:
        gate.set()
        rebuild_load._RUNNING.pop("m", None)
