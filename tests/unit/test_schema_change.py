"""Issue 12 (ADD COLUMN follows in place): schema_change.diff() and the reconciler's plan
rules for schema changes, table-driven; the registry's deployment column (migration 2)."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.clients.connect import ConnectorStatus, TaskStatus
from cdc.core.models import Column, MirrorSpec, Source, TableInfo
from cdc.mirrors import schema_change
from cdc.mirrors.reconcile import Observed, plan
from cdc.mirrors.registry import MIGRATIONS, Deployment, MirrorRecord, Registry
from cdc.mirrors.schema_change import Current, diff

NOW = "2030-01-01T00:00:00+00:00"


def col(name: str, type_name: str = "text", pos: int = 1, base: str | None = None, nullable: bool = True) -> Column:
    return Column(name=name, type_name=type_name, base_type=base or type_name.split("(")[0], position=pos,
                  nullable=nullable)


BASE = [col("id", "bigint", 1, "int8", nullable=False), col("v", "text", 2)]


def table(*cols: Column, pk: tuple[str, ...] = ("id",)) -> TableInfo:
    return TableInfo(schema_name="public", table_name="t", columns=list(cols), primary_key=list(pk))


def cur(*cols: Column, defaulted: tuple[str, ...] = (), pk: tuple[str, ...] = ("id",)) -> Current:
    return Current(table(*cols, pk=pk), frozenset(defaulted))


DEPLOYED = table(*BASE)

DIFF_CASES = [
    ("unchanged", cur(*BASE), "", False),
    ("nullability change is not a column change", cur(BASE[0], col("v", "text", 2, nullable=False)), "", False),
    ("add nullable text", cur(*BASE, col("note", "text", 3)), "added note text", True),
    ("add two", cur(*BASE, col("a", "integer", 3, "int4"), col("b", "text", 4)), "added a integer; added b text", True),
    ("add with default", cur(*BASE, col("note", "text", 3), defaulted=("note",)), "note: added with a default", False),
    ("add unsupported type", cur(*BASE, col("nm", "name", 3)), "nm:", False),
    ("drop", cur(BASE[0]), "dropped v", False),
    ("rename (same attnum)", cur(BASE[0], col("w", "text", 2)), "renamed v -> w", False),
    ("type change", cur(BASE[0], col("v", "character varying(10)", 2, "varchar")),
     "type of v text -> character varying(10)", False),
    ("drop + re-add same name", cur(BASE[0], col("v", "text", 3)), "added v text; dropped v", False),
    ("add + drop", cur(BASE[0], col("note", "text", 3)), "added note text; dropped v", False),
    ("primary key changed", cur(*BASE, pk=("id", "v")), "key ['id'] -> ['id', 'v']", False),
    ("existing column gains a default: not a change", cur(*BASE, defaulted=("v",)), "", False),
]


@pytest.mark.parametrize("current,text,followable", [c[1:] for c in DIFF_CASES], ids=[c[0] for c in DIFF_CASES])
def test_diff(current: Current, text: str, followable: bool) -> None:
    ch = diff(DEPLOYED, current)
    assert bool(ch) == bool(text)
    assert text in ch.describe()
    assert ch.followable is followable
    if ch:
        assert ch.before == ["id bigint", "v text"]
        assert ch.after == [f"{c.name} {c.type_name}" for c in sorted(current.table.columns, key=lambda c: c.position)]


def test_key_override_ignores_primary_key_changes() -> None:
    spec = MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t", key_columns=["id"])
    assert not diff(DEPLOYED, cur(*BASE, pk=()), spec)


def test_new_group_is_new_and_readable() -> None:
    a, b = schema_change.new_group_id("m1", 1.0), schema_change.new_group_id("m1", 2.0)
    assert a != b and a.startswith("cdc-flink-m1-d")


# -- plan ----------------------------------------------------------------------------------

def mirror(state: str = "running", dep: TableInfo | None = DEPLOYED, job: str = "j1") -> MirrorRecord:
    spec = MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t")
    return MirrorRecord(name="m1", source="s1", schema_name="public", table_name="t", spec=spec, state=state,
                        flink_job_id=job, connector_name="cdc-s1", created_at=NOW, updated_at=NOW,
                        deployment=None if dep is None else Deployment(table=dep, group_id="g", deployed_at=1.0))


def observed(tables: dict[str, Current] | None, jobs: dict[str, str] | None = None, **kw: Any) -> Observed:
    conn = ConnectorStatus(name="cdc-s1", state="RUNNING", tasks=[TaskStatus(id=0, state="RUNNING")])
    return Observed(connectors={"cdc-s1": conn}, jobs=jobs or {"j1": "RUNNING"}, tables=tables, **kw)


ADDED = cur(*BASE, col("note", "text", 3))
PLAN_CASES = [
    ("unchanged -> nothing", [mirror()], observed({"m1": cur(*BASE)}), []),
    ("catalog not observed -> nothing", [mirror()], observed(None), []),
    ("table unknown (postgres down) -> nothing", [mirror()], observed({}), []),
    ("column added -> follow", [mirror()], observed({"m1": ADDED}), [("follow_schema_change", "m1")]),
    ("column added and job FAILED -> follow replaces restore", [mirror()],
     observed({"m1": ADDED}, jobs={"j1": "FAILED"}), [("follow_schema_change", "m1")]),
    ("column added, pinot table missing -> pinot first, then follow", [mirror()],
     observed({"m1": ADDED}, pinot_tables=set()), [("recreate_pinot_table", "m1"), ("follow_schema_change", "m1")]),
    ("column dropped -> rebuild", [mirror()], observed({"m1": cur(BASE[0])}),
     [("rebuild_mirror", "m1")]),
    ("added with default -> rebuild", [mirror()],
     observed({"m1": cur(*BASE, col("note", "text", 3), defaulted=("note",))}), [("rebuild_mirror", "m1")]),
    ("added of a type cdc cannot map -> blocked", [mirror()],
     observed({"m1": cur(*BASE, col("nm", "name", 3))}), [("schema_change_unsupported", "m1")]),
    ("blocked and still unmappable -> nothing", [mirror(state="schema_blocked")],
     observed({"m1": cur(*BASE, col("nm", "name", 3))}), []),
    ("blocked, column fixed -> rebuild", [mirror(state="schema_blocked")],
     observed({"m1": cur(*BASE)}), [("rebuild_mirror", "m1")]),
    ("table gone -> marked", [mirror()], observed({"m1": Current(DEPLOYED, gone="table public.t was dropped")}),
     [("table_gone", "m1")]),
    ("no deployment recorded -> record it", [mirror(dep=None)], observed({"m1": ADDED}),
     [("record_deployment", "m1")]),
    ("job FAILED, schema unchanged -> restore", [mirror()], observed({"m1": cur(*BASE)}, jobs={"j1": "FAILED"}),
     [("restore_job", "m1")]),
    ("paused mirror -> left alone", [mirror(state="paused")], observed({"m1": ADDED}), []),
    ("error mirror -> left alone", [mirror(state="error")], observed({"m1": cur(BASE[0])}), []),
]


@pytest.mark.parametrize("desired,obs,expected", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_plan_schema(desired: list[MirrorRecord], obs: Observed, expected: list[tuple[str, str]]) -> None:
    actions = plan(desired, obs)
    assert [(a.kind, a.mirror) for a in actions] == expected
    assert all(a.reason for a in actions)
    if expected and expected[-1][0] in ("follow_schema_change", "schema_change_unsupported"):
        assert "public.t" in actions[-1].reason


DEP = Deployment(table=DEPLOYED, group_id="g", filenodes={"10": 100})
VC10 = col("v", "character varying(10)", 2, "varchar")
DECIDE_CASES = [
    ("same", DEP, Current(DEPLOYED, filenodes={"10": 100}), None),
    ("TRUNCATE: new storage -> rebuild", DEP, Current(DEPLOYED, filenodes={"10": 101}), "rebuild"),
    ("storage of a new partition: recorded, not a rewrite", DEP,
     Current(DEPLOYED, filenodes={"10": 100, "11": 5}), "record_storage"),
    ("storage never recorded + type change: no rewrite can be ruled out -> rebuild",
     Deployment(table=table(BASE[0], VC10), group_id="g"), Current(DEPLOYED, filenodes={"10": 100}), "rebuild"),
    ("storage never recorded -> record", DEP.model_copy(update={"filenodes": None}),
     Current(DEPLOYED, filenodes={"10": 100}), "record_storage"),
    ("nullable add -> follow", DEP, Current(table(*BASE, col("n", "text", 3)), filenodes={"10": 100}), "follow"),
    ("add + TRUNCATE -> rebuild", DEP, Current(table(*BASE, col("n", "text", 3)), filenodes={"10": 7}), "rebuild"),
    ("varchar(10) -> text: in place", Deployment(table=table(BASE[0], VC10), group_id="g", filenodes={"10": 100}),
     Current(DEPLOYED, filenodes={"10": 100}), "in_place"),
    ("numeric(10,2) -> numeric(12,2): in place",
     Deployment(table=table(BASE[0], col("v", "numeric(10,2)", 2, "numeric")), group_id="g", filenodes={"10": 1}),
     Current(table(BASE[0], col("v", "numeric(12,2)", 2, "numeric")), filenodes={"10": 1}), "in_place"),
    ("int -> bigint: Pinot INT -> LONG -> rebuild",
     Deployment(table=table(BASE[0], col("v", "integer", 2, "int4")), group_id="g", filenodes={"10": 1}),
     Current(table(BASE[0], col("v", "bigint", 2, "int8")), filenodes={"10": 1}), "rebuild"),
    ("int -> text -> rebuild",
     Deployment(table=table(BASE[0], col("v", "integer", 2, "int4")), group_id="g", filenodes={"10": 1}),
     Current(table(BASE[0], col("v", "text", 2)), filenodes={"10": 2}), "rebuild"),
    ("rename -> rebuild", DEP, Current(table(BASE[0], col("w", "text", 2)), filenodes={"10": 100}), "rebuild"),
    ("retype to a type cdc cannot map -> unsupported", DEP,
     Current(table(BASE[0], col("v", "name", 2)), filenodes={"10": 100}), "unsupported"),
    ("primary key dropped -> unsupported", DEP, Current(table(*BASE, pk=()), filenodes={"10": 100}), "unsupported"),
    ("gone", DEP, Current(DEPLOYED, gone="dropped"), "gone"),
]


@pytest.mark.parametrize("dep,current,kind", [c[1:] for c in DECIDE_CASES], ids=[c[0] for c in DECIDE_CASES])
def test_decide(dep: Deployment, current: Current, kind: str | None) -> None:
    got, _ch, why = schema_change.decide(dep, current)
    assert got == kind
    assert bool(why) == (kind is not None) or kind == "record_storage"


# -- registry ------------------------------------------------------------------------------

def test_registry_keeps_deployment(tmp_path: Any) -> None:
    r = Registry(tmp_path / "r.db")
    assert r.schema_version() == len(MIGRATIONS) >= 2
    r.add_source(Source(name="s1", dsn="postgresql://u@h/db"))
    spec = MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t")
    assert r.add_mirror(spec, state="running").deployment is None
    dep = Deployment(table=DEPLOYED, group_id="cdc-flink-m1", deployed_at=12.5)
    r.update_mirror("m1", flink_job_id="j9", deployment=dep)
    r.close()
    again = Registry(tmp_path / "r.db")
    got = again.get_mirror("m1")
    assert got is not None and got.deployment == dep and got.flink_job_id == "j9"
    assert got.deployment.columns() == ["id bigint", "v text"]
    again.close()


def test_migration_2_applies_to_a_version_1_file(tmp_path: Any) -> None:
    import sqlite3
    path = tmp_path / "old.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for stmt in MIGRATIONS[0].split(";"):
        if stmt.strip():
            c.execute(stmt)
    c.execute("INSERT INTO schema_migrations VALUES (1, 'x')")
    c.execute("INSERT INTO sources VALUES ('s1', 'postgresql://u@h/db', ?, 'x')",
              (Source(name="s1", dsn="postgresql://u@h/db").model_dump_json(),))
    spec = MirrorSpec(name="m1", source="s1", schema_name="public", table_name="t")
    c.execute("INSERT INTO mirrors (name, source, schema_name, table_name, spec_json, state, created_at, updated_at) "
              "VALUES ('m1', 's1', 'public', 't', ?, 'running', ?, ?)", (spec.model_dump_json(), NOW, NOW))
    c.commit()
    c.close()
    r = Registry(path)
    assert r.schema_version() == len(MIGRATIONS)
    m = r.get_mirror("m1")
    assert m is not None and m.deployment is None and m.state == "running"
    r.close()
