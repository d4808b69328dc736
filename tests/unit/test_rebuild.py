"""cdc.mirrors.rebuild: generation numbering, the deployment a switch installs, names."""

from __future__ import annotations

from typing import Any

from cdc.core import names
from cdc.core.models import Column, MirrorSpec, Source, TableInfo
from cdc.mirrors import rebuild, rebuild_gate
from cdc.mirrors.registry import Deployment, Rebuild, Registry

T = TableInfo(schema_name="public", table_name="t", primary_key=["id"],
              columns=[Column(name="id", type_name="bigint", base_type="int8", position=1, nullable=False)])


class Ctx:
    def __init__(self, reg: Registry) -> None:
        self.registry = reg


def _registry(tmp_path: Any, *mirrors: str) -> Registry:
    r = Registry(tmp_path / "r.db")
    r.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    for m in mirrors:
        r.add_mirror(MirrorSpec(name=m, source="s1", schema_name="public", table_name=m), state="running")
    return r


def test_next_generation_is_above_the_one_in_flight_and_skips_other_mirrors_names(tmp_path: Any) -> None:
    r = _registry(tmp_path, "orders", "orders_g3")
    dep = Deployment(table=T, group_id="g", generation=1)
    r.update_mirror("orders", deployment=dep)
    assert rebuild._next_generation(Ctx(r), r.get_mirror("orders")) == 2            # type: ignore[arg-type]
    rb = Rebuild(generation=2, table=T, group_id="g2", start_offset=10)
    r.update_mirror("orders", deployment=dep.model_copy(update={"rebuild": rb}))
    # 3 would be named like the mirror "orders_g3": skipped; never 2 again (it is being torn down)
    assert rebuild._next_generation(Ctx(r), r.get_mirror("orders")) == 4            # type: ignore[arg-type]
    r.close()


def test_switch_installs_the_rebuilt_generation() -> None:
    dep = Deployment(table=T, group_id="g0", generation=0, seq_epoch=2, change_topic_id="abc", deployed_at=1.0,
                     filenodes={"1": 5})
    rb = Rebuild(generation=1, table=T, group_id="g1", start_offset=77, filenodes={"1": 9}, started_at=50.0)
    new = rebuild.deployment_of(dep.model_copy(update={"rebuild": rb}), rb, 60.0)
    assert (new.generation, new.group_id, new.start_offset, new.filenodes, new.rebuild) == (1, "g1", 77, {"1": 9}, None)
    assert (new.seq_epoch, new.change_topic_id) == (2, "abc")       # same change topic incarnation
    assert new.deployed_at == 60.0          # restore points of the old generation's job never count


def test_generation_names_cannot_meet_another_mirror() -> None:
    assert names.flat_topic("m") == "cdc.flat.m" and names.flat_topic("m", 2) == "cdc.flat.m.g2"
    assert names.flink_pipeline("m", 2) == "cdc-mirror-m-g2"
    assert names.is_pipeline_of("cdc-mirror-m-g2", "m") and names.is_pipeline_of("cdc-mirror-m", "m")
    assert not names.is_pipeline_of("cdc-mirror-m_g2", "m") and not names.is_pipeline_of("cdc-mirror-mm", "m")
    assert names.pinot_physical_table("m") == "m" and names.pinot_physical_table("m", 3) == "m_g3"


def test_an_abandoned_generation_number_is_never_used_again(tmp_path: Any) -> None:
    r = _registry(tmp_path, "orders")
    r.update_mirror("orders", deployment=Deployment(table=T, group_id="g", generation=0, last_generation=3))
    assert rebuild._next_generation(Ctx(r), r.get_mirror("orders")) == 4            # type: ignore[arg-type]
    r.close()


def test_one_process_drives_a_rebuild(tmp_path: Any) -> None:
    """Another holder's lease on the rebuild (e.g. `cdc mirror resync` while `cdc serve` runs):
    this process' step does nothing; once the lease is free it is taken."""
    r = _registry(tmp_path, "orders")
    rb = Rebuild(generation=1, table=T, group_id="g1", start_offset=10, load="copy")
    r.update_mirror("orders", deployment=Deployment(table=T, group_id="g", rebuild=rb))
    assert r.acquire_lease("elsewhere:1", 60, name="rebuild:orders")
    assert rebuild.step(Ctx(r), "orders") == ("noop", "generation 1: driven by elsewhere:1")   # type: ignore[arg-type]
    assert rebuild_gate.lease(Ctx(r), "orders") == "elsewhere:1"                                    # type: ignore[arg-type]
    r.release_lease("elsewhere:1", name="rebuild:orders")
    assert rebuild_gate.lease(Ctx(r), "orders") is None                                            # type: ignore[arg-type]
    assert r.lease_holder("rebuild:orders")[0] == rebuild_gate.holder()
    r.close()


def test_a_failed_start_removes_only_its_own_generation(tmp_path: Any, monkeypatch: Any) -> None:
    """start() undoing its generation 8 must not abandon generation 9, which another process
    began meanwhile (and which superseded 8)."""
    dropped: list[int] = []
    monkeypatch.setattr(rebuild, "_drop_generation", lambda _ctx, _rec, gen: dropped.append(gen))
    r = _registry(tmp_path, "orders")
    rb = Rebuild(generation=9, table=T, group_id="g9", start_offset=10, load="copy")
    r.update_mirror("orders", deployment=Deployment(table=T, group_id="g", rebuild=rb, last_generation=9))
    rebuild.abort(Ctx(r), "orders", "its start failed", generation=8)                     # type: ignore[arg-type]
    assert dropped == [8] and r.get_mirror("orders").deployment.rebuild.generation == 9
    rebuild.abort(Ctx(r), "orders", "superseded")                                          # type: ignore[arg-type]
    assert dropped == [8, 9] and r.get_mirror("orders").deployment.rebuild is None
    r.close()
