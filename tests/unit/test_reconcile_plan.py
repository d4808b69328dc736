"""reconcile.plan() rule by rule (table-driven), Backoff with a fake clock, and apply()'s
event recording / backoff / re-checks against an in-memory registry and fake clients."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cdc.mirrors import reconcile
from cdc.clients.connect import ConnectorStatus, TaskStatus
from cdc.core.errors import TransientRemoteError
from cdc.core.models import MirrorSpec, Source
from cdc.mirrors.reconcile import Action, Backoff, Observed, plan
from cdc.mirrors.registry import MirrorRecord, Registry

from fakes import FakeClock

NOW = "2030-01-01T00:00:00+00:00"


def mirror(name: str = "m1", state: str = "running", job: str | None = "j1", source: str = "s1") -> MirrorRecord:
    spec = MirrorSpec(name=name, source=source, schema_name="public", table_name=name)
    return MirrorRecord(name=name, source=source, schema_name="public", table_name=name, spec=spec, state=state,
                        flink_job_id=job, connector_name=f"cdc-{source}", created_at=NOW, updated_at=NOW)


def conn(state: str = "RUNNING", tasks: tuple[str, ...] = ("RUNNING",)) -> ConnectorStatus:
    return ConnectorStatus(name="cdc-s1", state=state, tasks=[TaskStatus(id=i, state=s) for i, s in enumerate(tasks)])


def healthy(**kw: Any) -> Observed:
    base: dict[str, Any] = {"connectors": {"cdc-s1": conn()}, "jobs": {"j1": "RUNNING"}, "pinot_tables": None}
    base.update(kw)
    return Observed(**base)


CASES = [
    ("healthy -> nothing", [mirror()], healthy(), []),
    ("healthy with pinot -> nothing", [mirror()], healthy(pinot_tables={"m1"}), []),
    ("connector missing -> recreate", [mirror()], healthy(connectors={}), [("recreate_connector", "m1")]),
    ("connector FAILED -> restart", [mirror()], healthy(connectors={"cdc-s1": conn("FAILED")}),
     [("restart_connector", "m1")]),
    ("task FAILED -> restart", [mirror()], healthy(connectors={"cdc-s1": conn(tasks=("RUNNING", "FAILED"))}),
     [("restart_connector", "m1")]),
    ("connector PAUSED -> resume", [mirror()], healthy(connectors={"cdc-s1": conn("PAUSED", ("PAUSED",))}),
     [("resume_connector", "m1")]),
    ("connector STOPPED -> resume", [mirror()], healthy(connectors={"cdc-s1": conn("STOPPED", ())}),
     [("resume_connector", "m1")]),
    ("connector status unknown -> wait", [mirror()], healthy(connectors={"cdc-s1": None}), []),
    ("task UNASSIGNED -> wait", [mirror()], healthy(connectors={"cdc-s1": conn(tasks=("UNASSIGNED",))}), []),
    ("job FAILED -> restore", [mirror()], healthy(jobs={"j1": "FAILED"}), [("restore_job", "m1")]),
    ("job CANCELED -> restore", [mirror()], healthy(jobs={"j1": "CANCELED"}), [("restore_job", "m1")]),
    ("job FINISHED -> restore", [mirror()], healthy(jobs={"j1": "FINISHED"}), [("restore_job", "m1")]),
    ("job missing -> restore", [mirror()], healthy(jobs={}), [("restore_job", "m1")]),
    ("no job id -> restore", [mirror(job=None)], healthy(), [("restore_job", "m1")]),
    ("job RESTARTING -> Flink's own job", [mirror()], healthy(jobs={"j1": "RESTARTING"}), []),
    ("job INITIALIZING -> wait", [mirror()], healthy(jobs={"j1": "INITIALIZING"}), []),
    ("pinot table missing -> recreate", [mirror()], healthy(pinot_tables={"other"}),
     [("recreate_pinot_table", "m1")]),
    ("pinot disabled -> no pinot rule", [mirror()], healthy(pinot_tables=None), []),
    # Unknown systems are never "missing".
    ("connect unreachable -> no connector rule", [mirror()], healthy(connectors=None, jobs={"j1": "FAILED"}),
     [("restore_job", "m1")]),
    ("flink unreachable -> no job rule", [mirror()], healthy(jobs=None), []),
    # Mirrors that are not running are left to their owner.
    ("creating mirror ignored", [mirror(state="creating")], healthy(connectors={}, jobs={}, pinot_tables=set()), []),
    ("paused mirror ignored", [mirror(state="paused")],
     healthy(connectors={"cdc-s1": conn("PAUSED", ("PAUSED",))}, jobs={"j1": "FINISHED"}, pinot_tables=set()), []),
    ("pausing mirror ignored", [mirror(state="pausing")], healthy(jobs={"j1": "FINISHED"}), []),
    ("removing mirror ignored", [mirror(state="removing")], healthy(connectors={}, jobs={"j1": "CANCELED"}), []),
    ("source with a creating mirror: connector left alone, running mirror's job still restored",
     [mirror(), mirror("m2", state="creating", job=None)], healthy(connectors={}, jobs={"j1": "FAILED"}),
     [("restore_job", "m1")]),
    ("paused + running on one source: connector resumed for the running one",
     [mirror("a", state="paused", job="ja"), mirror("b", job="j1")],
     healthy(connectors={"cdc-s1": conn("PAUSED", ("PAUSED",))}), [("resume_connector", "b")]),
    ("order: connector, pinot, job",
     [mirror()], healthy(connectors={}, jobs={"j1": "FAILED"}, pinot_tables=set()),
     [("recreate_connector", "m1"), ("recreate_pinot_table", "m1"), ("restore_job", "m1")]),
    ("two sources, one broken",
     [mirror(), mirror("x", source="s2", job="j2")],
     healthy(connectors={"cdc-s1": conn(), "cdc-s2": conn("FAILED")}, jobs={"j1": "RUNNING", "j2": "RUNNING"}),
     [("restart_connector", "x")]),
]


@pytest.mark.parametrize("desired,observed,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired: list[MirrorRecord], observed: Observed, expected: list[tuple[str, str]]) -> None:
    actions = plan(desired, observed)
    assert [(a.kind, a.mirror) for a in actions] == expected
    assert all(a.reason for a in actions)


def test_plan_is_pure_and_targets() -> None:
    obs = healthy(connectors={}, jobs={"j1": "CANCELED"})
    desired = [mirror()]
    first = plan(desired, obs)
    assert first == plan(desired, obs)
    assert first[0] == Action("recreate_connector", "m1", first[0].reason, "s1", "cdc-s1")
    assert first[1].target == "j1" and "CANCELED" in first[1].reason
    assert obs == healthy(connectors={}, jobs={"j1": "CANCELED"})


# -- backoff -----------------------------------------------------------------------------------

def test_backoff_doubles_to_cap_and_resets() -> None:
    clock = FakeClock()
    b = Backoff(base_s=2, cap_s=300, clock=clock)
    key = ("m1", "restore_job")
    assert b.ready(key)
    delays = [b.failed(key) for _ in range(10)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert not b.ready(key)
    clock.sleep(299)
    assert not b.ready(key)
    clock.sleep(1)
    assert b.ready(key)
    b.succeeded(key)
    assert b.failures(key) == 0 and b.failed(key) == 2


def test_backoff_is_per_mirror_and_kind() -> None:
    clock = FakeClock()
    b = Backoff(clock=clock)
    b.failed(("m1", "restore_job"))
    assert not b.ready(("m1", "restore_job"))
    assert b.ready(("m1", "restart_connector")) and b.ready(("m2", "restore_job"))


# -- apply -------------------------------------------------------------------------------------

class FakeConnect:
    def __init__(self, status: ConnectorStatus | None, fail_restart: int = 0) -> None:
        self._status = status
        self.fail_restart = fail_restart
        self.calls: list[str] = []

    def status(self, name: str) -> ConnectorStatus | None:
        return self._status

    def get_config(self, name: str) -> dict[str, str] | None:
        return None if self._status is None else {"name": name}

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = True) -> None:
        self.calls.append(f"restart {name}")
        if self.fail_restart > 0:
            self.fail_restart -= 1
            raise TransientRemoteError("Kafka Connect", "POST restart failed", status=500)
        self._status = conn()

    def resume(self, name: str) -> None:
        self.calls.append(f"resume {name}")


@pytest.fixture
def reg(tmp_path: Any) -> Any:
    r = Registry(tmp_path / "r.db")
    r.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    r.add_mirror(mirror().spec, state="running", connector_name="cdc-s1", flink_job_id="j1")
    yield r
    r.close()


def _ctx(reg: Registry, connect: FakeConnect) -> Any:
    return SimpleNamespace(registry=reg, connect=connect)


def test_apply_records_events_and_backs_off(reg: Registry) -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock)
    fc = FakeConnect(conn("RUNNING", ("FAILED",)), fail_restart=2)
    ctx = _ctx(reg, fc)
    act = plan([reg.get_mirror("m1")], healthy(connectors={"cdc-s1": fc.status("cdc-s1")}))
    assert [a.kind for a in act] == ["restart_connector"]

    r1 = reconcile.apply(ctx, act, backoff)
    assert r1[0].status == "failed"
    assert reconcile.apply(ctx, act, backoff)[0].status == "backoff"      # within 2 s: not attempted
    assert fc.calls == ["restart cdc-s1"]
    clock.sleep(2)
    assert reconcile.apply(ctx, act, backoff)[0].status == "failed"       # second failure -> 4 s
    clock.sleep(3)
    assert reconcile.apply(ctx, act, backoff)[0].status == "backoff"
    clock.sleep(1)
    assert reconcile.apply(ctx, act, backoff)[0].status == "done"
    assert backoff.failures(("m1", "restart_connector")) == 0
    events = [(e.action, e.reason) for e in reversed(reg.list_events("m1"))]
    assert [a for a, _ in events] == ["reconcile:restart_connector:failed", "reconcile:restart_connector:failed",
                                      "reconcile:restart_connector"]
    assert "next in 2s" in events[0][1] and "next in 4s" in events[1][1]
    assert "-> done" in events[2][1]


def test_apply_rechecks_before_acting(reg: Registry) -> None:
    fc = FakeConnect(conn())                             # already RUNNING again
    act = [Action("restart_connector", "m1", "task 0 FAILED", "s1", "cdc-s1"),
           Action("resume_connector", "m1", "was PAUSED", "s1", "cdc-s1")]
    res = reconcile.apply(_ctx(reg, fc), act, Backoff())
    assert [r.status for r in res] == ["noop", "noop"] and fc.calls == []
    reg.update_mirror("m1", state="paused")              # paused since the plan was made
    res = reconcile.apply(_ctx(reg, fc), act, Backoff())
    assert [r.status for r in res] == ["skipped", "skipped"]


def test_apply_stops_when_lease_lost(reg: Registry) -> None:
    fc = FakeConnect(conn("PAUSED", ("PAUSED",)))
    act = [Action("resume_connector", "m1", "PAUSED", "s1", "cdc-s1")]
    assert reconcile.apply(_ctx(reg, fc), act, keep_going=lambda: False) == []
    assert fc.calls == []


def test_reconciler_respects_lease(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lease.db"
    other = Registry(path)
    assert other.acquire_lease("someone-else", 60)
    monkeypatch.setattr(reconcile, "observe", lambda ctx, desired: pytest.fail("must not observe without the lease"))
    def factory() -> Any:
        r = Registry(path)
        return SimpleNamespace(registry=r, close=r.close)

    rec = reconcile.Reconciler(factory, SimpleNamespace(), interval_s=0.01, holder="me")
    assert rec.run_once() == []
    other.release_lease("someone-else")
    monkeypatch.setattr(reconcile, "observe", lambda ctx, desired: Observed())
    assert rec.run_once() == []
    assert other.lease_holder()[0] == "me"
    rec.start()
    assert rec.stop(timeout=5)
    assert other.lease_holder() is None
    other.close()
