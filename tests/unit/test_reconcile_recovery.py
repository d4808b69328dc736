"""Issue 11 items 7, 9, 10 without servers: the reconciler's plan for lost slots, resyncs,
stuck adds/removes and changed partitions; the add journal and heartbeat; the delete event a
prune appends; Debezium's additional-condition regex; the partition-root connector setting."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.clients.connect import ConnectorStatus, TaskStatus
from cdc.core.models import Column, MirrorSpec, Source, TableInfo
from cdc.mapping import dbz_names, render
from cdc.mirrors import prune, rollback
from cdc.mirrors.reconcile import Observed, plan
from cdc.mirrors.registry import Deployment, MirrorRecord, Registry

NOW = 2_000_000_000.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def table(oids: list[int] | None = None) -> TableInfo:
    return TableInfo(schema_name="public", table_name="t", columns=[Column(name="id", type_name="integer",
                                                                           base_type="int4", position=1)],
                     primary_key=["id"], partition_oids=oids)


def mirror(name: str = "m1", state: str = "running", age: float = 0.0, oids: list[int] | None = None,
           deployed: bool = False) -> MirrorRecord:
    spec = MirrorSpec(name=name, source="s1", schema_name="public", table_name=name)
    dep = Deployment(table=table(oids), group_id="g") if deployed else None
    return MirrorRecord(name=name, source="s1", schema_name="public", table_name=name, spec=spec, state=state,
                        flink_job_id="j1", connector_name="cdc-s1", created_at=_iso(NOW - 1000),
                        updated_at=_iso(NOW - age), deployment=dep)


def conn(state: str = "RUNNING", tasks: tuple[str, ...] = ("RUNNING",)) -> ConnectorStatus:
    return ConnectorStatus(name="cdc-s1", state=state, tasks=[TaskStatus(id=i, state=s) for i, s in enumerate(tasks)])


def obs(**kw: Any) -> Observed:
    base: dict[str, Any] = {"connectors": {"cdc-s1": conn()}, "jobs": {"j1": "RUNNING"}, "pinot_tables": None,
                            "lost_slots": set(), "now": NOW}
    base.update(kw)
    return Observed(**base)


def kinds(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.kind, a.mirror) for a in actions]


CASES = [
    ("lost slot -> repair, not a restart", [mirror()],
     obs(connectors={"cdc-s1": conn("RUNNING", ("FAILED",))}, lost_slots={"s1"}), [("repair_lost_slot", "m1")]),
    ("lost slot unknown (Postgres down) -> the usual restart", [mirror()],
     obs(connectors={"cdc-s1": conn("RUNNING", ("FAILED",))}, lost_slots=None), [("restart_connector", "m1")]),
    ("resyncing -> finish it; its job is still restored", [mirror(state="resyncing")], obs(jobs={"j1": "FAILED"}),
     [("restore_job", "m1"), ("finish_resync", "m1")]),
    ("resyncing mirror's connector is repaired", [mirror(state="resyncing")],
     obs(connectors={"cdc-s1": conn("STOPPED", ())}), [("resume_connector", "m1"), ("finish_resync", "m1")]),
    ("creating with a fresh heartbeat still holds the connector", [mirror(), mirror("m2", "creating", age=5)],
     obs(connectors={"cdc-s1": conn("STOPPED", ())}), []),
    ("creating past the bound: connector repaired first, then the add recovered",
     [mirror(), mirror("m2", "creating", age=500)], obs(connectors={"cdc-s1": conn("STOPPED", ())}),
     [("resume_connector", "m1"), ("recover_stuck", "m2")]),
    ("removing past the bound -> recovered", [mirror("m2", "removing", age=500)], obs(), [("recover_stuck", "m2")]),
    ("pausing is never taken over", [mirror("m2", "pausing", age=5000)], obs(), []),
    ("no clock in the observation -> nothing is stuck", [mirror("m2", "creating", age=5000)], obs(now=None), []),
]


@pytest.mark.parametrize("desired,observed,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired: list[MirrorRecord], observed: Observed, expected: list[tuple[str, str]]) -> None:
    assert kinds(plan(desired, observed, stuck_after_s=120)) == expected


def test_partitions_changed_only_for_a_partitioned_deployment() -> None:
    from cdc.mirrors import schema_change
    m = mirror(oids=[1, 2], deployed=True)
    same = obs(tables={"m1": schema_change.Current(table([2, 1]))})
    attached = obs(tables={"m1": schema_change.Current(table([1, 2, 3]))})
    plain = mirror(deployed=True)
    assert kinds(plan([m], same)) == []
    assert kinds(plan([m], attached)) == [("sync_partitions", "m1")]
    assert kinds(plan([plain], obs(tables={"m1": schema_change.Current(table())}))) == []
    # recorded before partitions were followed: the current set becomes the baseline
    assert kinds(plan([mirror(deployed=True)], obs(tables={"m1": schema_change.Current(table([7]))}))) == \
        [("sync_partitions", "m1")]


def test_is_stuck() -> None:
    assert rollback.is_stuck("creating", _iso(NOW - 121), NOW, 120)
    assert not rollback.is_stuck("creating", _iso(NOW - 119), NOW, 120)
    assert not rollback.is_stuck("running", _iso(NOW - 9999), NOW, 120)
    assert not rollback.is_stuck("creating", _iso(NOW - 9999), None, 120)


@pytest.fixture
def reg(tmp_path: Any) -> Any:
    r = Registry(tmp_path / "r.db")
    r.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    r.add_mirror(MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t"), state="creating")
    yield r
    r.close()


def test_journal_is_persisted_before_the_step_and_read_back(reg: Registry) -> None:
    ctx = SimpleNamespace(registry=reg, settings=SimpleNamespace(stuck_after_s=120))
    j = rollback.Journal(ctx, "m1")   # type: ignore[arg-type]
    j.register("delete_topic", topic="cdc.flat.m1")
    j.register("cancel_jobs", pipeline="cdc-mirror-m1")
    steps, created = rollback.journal_of(ctx, "m1")   # type: ignore[arg-type]
    assert [(s.kind, s.args) for s in steps] == [("delete_topic", {"topic": "cdc.flat.m1"}),
                                                 ("cancel_jobs", {"pipeline": "cdc-mirror-m1"})]
    assert not created
    reg.record_event("m1", rollback.EVENT_CREATED, "all made")
    assert rollback.journal_of(ctx, "m1")[1]   # type: ignore[arg-type]
    rollback.Journal(ctx, "m1")        # a later add of the same name starts a new journal  # type: ignore[arg-type]
    assert rollback.journal_of(ctx, "m1") == ([], False)   # type: ignore[arg-type]


def test_journal_ignores_an_earlier_mirror_of_the_same_name(reg: Registry) -> None:
    ctx = SimpleNamespace(registry=reg, settings=SimpleNamespace(stuck_after_s=120))
    rollback.Journal(ctx, "m1").register("delete_topic", topic="kept")   # type: ignore[arg-type]
    time.sleep(0.01)
    born = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    reg.record_event("m1", rollback.EVENT_STEP, json.dumps({"kind": "cancel_jobs", "pipeline": "p"}))
    steps, _ = rollback.journal_of(ctx, "m1", since=born)   # type: ignore[arg-type]
    assert [s.kind for s in steps] == ["cancel_jobs"]        # no add_started of its own: stops at created_at


def test_heartbeat_touches_the_row(reg: Registry) -> None:
    ctx = SimpleNamespace(registry=reg, settings=SimpleNamespace(stuck_after_s=120))
    before = reg.get_mirror("m1").updated_at
    with rollback.heartbeat(ctx, "m1", every_s=0.05):   # type: ignore[arg-type]
        time.sleep(0.3)
    assert reg.get_mirror("m1").updated_at > before


def test_fault_point_does_nothing_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []
    monkeypatch.setattr(rollback.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.delenv(rollback.FAULT_ENV, raising=False)
    rollback.fault("created")
    monkeypatch.setenv(rollback.FAULT_ENV, "job_submitted")
    rollback.fault("created")
    assert killed == []
    rollback.fault("job_submitted")
    assert killed == [rollback.signal.SIGKILL]


def test_prune_delete_event_is_a_debezium_delete_of_the_row() -> None:
    upd = {"before": None, "after": {"id": 7, "v": "x"}, "op": "u",
           "source": {"schema": "public", "table": "t", "lsn": 5, "ts_ms": 1, "snapshot": "false"}, "ts_ms": 1}
    d = prune.as_delete(upd, 99)
    assert d["op"] == "d" and d["before"] == {"id": 7, "v": "x"} and d["after"] is None
    assert d["source"]["schema"] == "public" and d["source"]["table"] == "t" and d["source"]["ts_ms"] == 99
    json.dumps(d)


def test_seq_offset_split() -> None:
    seq = (3 << prune.SEQ_SHIFT) | 12345
    assert seq & prune.SEQ_OFFSET == 12345 and seq >> prune.SEQ_SHIFT == 3


@pytest.mark.parametrize("schema,tab", [("public", "orders"), ("Sales", "Order Lines"), ("a.b", 'c"d')])
def test_condition_regex_matches_the_entry_and_the_identifier(schema: str, tab: str) -> None:
    kind = dbz_names.snapshot_type(schema, tab)
    entry = dbz_names.signal_data_collection(schema, tab, kind)
    rx = dbz_names.condition_regex(schema, tab, entry)
    assert re.fullmatch(rx, entry) and re.fullmatch(rx, dbz_names.identifier(schema, tab))
    assert not re.fullmatch(rx, dbz_names.identifier(schema, tab + "x"))


def test_connector_publishes_via_root_only_with_a_partitioned_table() -> None:
    src = Source(name="s1", dsn="postgresql://u@h/db")
    plain = render.render_connector(src, [table()], kafka_bootstrap="k", password_ref=None)
    parted = render.render_connector(src, [table(), table([1, 2]).model_copy(update={"table_name": "p"})],
                                     kafka_bootstrap="k", password_ref=None)
    assert "publish.via.partition.root" not in plain
    assert parted["publish.via.partition.root"] == "true"
