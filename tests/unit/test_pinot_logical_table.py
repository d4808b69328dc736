"""The logical table a rebuilt mirror is queried by: rendered by cdc, judged by Pinot 1.5.1's own
validation (the engine's `logical` mode: what the controller checks on POST/PUT /logicalTables,
ZooKeeper lookups emulated from the given table configs and schemas), and created, switched and
deleted through the controller client.

The engine tests run a local JVM (no server), built into the cache on first use: they need java
and mvn, like tests/integration/test_pinot_contract.py, and skip without them.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any

import pytest

from cdc.clients.pinot import PinotControllerClient
from cdc.clients.pinot_engine import ContractResult, PinotEngine
from cdc.core import names
from cdc.core.errors import PermanentRemoteError
from cdc.core.models import Column, MirrorSpec, TableInfo
from cdc.mapping.render import render_pinot_logical_table, render_pinot_schema, render_pinot_table
from fakes import FakeServer

needs_engine = pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")), reason="needs java and mvn")

MIRROR = "public_orders"
GEN1 = names.pinot_physical_table(MIRROR, 1)          # public_orders_g1


def _mirror() -> tuple[MirrorSpec, TableInfo]:
    cols = [Column(name="id", type_name="int4", base_type="int4", position=1, nullable=False),
            Column(name="status", type_name="text", base_type="text", position=2),
            Column(name="total", type_name="numeric", base_type="numeric", position=3)]
    info = TableInfo(schema_name="public", table_name="orders", columns=cols, primary_key=["id"])
    return MirrorSpec(name=MIRROR, schema_name="public", table_name="orders"), info


def physical(generation: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, REALTIME table config) of one generation, named names.pinot_physical_table:
    Pinot finds a table's schema by the table's raw name."""
    spec, info = _mirror()
    table_name = names.pinot_physical_table(MIRROR, generation)
    schema = render_pinot_schema(spec, info) | {"schemaName": table_name}
    table = render_pinot_table(spec, info, kafka_bootstrap="127.0.0.1:9092",
                               flat_topic=names.flat_topic(MIRROR, generation)) | {"tableName": table_name}
    return schema, table


def logical_schema() -> dict[str, Any]:
    """The schema the logical table needs: the mirror's, under the mirror's name."""
    spec, info = _mirror()
    return render_pinot_schema(spec, info)


# ---------------------------------------------------------------- rendering (pure)

def test_rendered_logical_table_routes_the_mirror_to_one_realtime_table() -> None:
    assert render_pinot_logical_table(MIRROR, GEN1) == {
        "tableName": MIRROR, "brokerTenant": "DefaultTenant",
        "physicalTableConfigMap": {"public_orders_g1_REALTIME": {}},
        "refRealtimeTableName": "public_orders_g1_REALTIME"}


def test_type_suffix_is_added_once() -> None:
    assert (render_pinot_logical_table(MIRROR, "public_orders_g2_REALTIME")
            == render_pinot_logical_table(MIRROR, names.pinot_physical_table(MIRROR, 2)))


# ---------------------------------------------------------------- Pinot's verdict

@pytest.fixture(scope="module")
def engine() -> PinotEngine:
    e = PinotEngine()
    e.home  # noqa: B018 - build (or find) the engine once, outside any test's timing
    return e


def describe(r: ContractResult) -> str:
    return f"errors={list(r.errors)} dropped_keys={list(r.dropped_keys)}"


@needs_engine
def test_pinot_accepts_the_physical_table_of_a_generation(engine: PinotEngine) -> None:
    schema, table = physical(1)
    [result] = engine.check([("g1", schema, table)])
    assert result.ok, describe(result)


@needs_engine
@pytest.mark.parametrize("update", [False, True], ids=["create", "switch"])
def test_pinot_accepts_the_rendered_logical_table(engine: PinotEngine, update: bool) -> None:
    schema, table = physical(1)
    others = [physical(2)[1]] if update else []     # a switch: the previous generation still exists
    result = engine.check_logical(render_pinot_logical_table(MIRROR, GEN1), [table, *others],
                                  [logical_schema(), schema], update=update)
    assert result.ok, describe(result)


def _ref_not_in_map(lt: dict[str, Any]) -> None:
    lt["refRealtimeTableName"] = "public_orders_g9_REALTIME"


def _misspelt_ref(lt: dict[str, Any]) -> None:
    lt["refRealtimeTablename"] = lt.pop("refRealtimeTableName")


def _raw_name_in_map(lt: dict[str, Any]) -> None:
    lt["physicalTableConfigMap"] = {GEN1: {}}


def _typed_logical_name(lt: dict[str, Any]) -> None:
    lt["tableName"] = "public_orders_REALTIME"


@needs_engine
@pytest.mark.parametrize(("breaks", "error", "dropped"), [
    (_ref_not_in_map, "'refRealtimeTableName' should be one of the provided realtime tables", ()),
    (_misspelt_ref, "'refRealtimeTableName' should not be null or empty when realtime table exists",
     ("refRealtimeTablename",)),
    (_raw_name_in_map, "'refRealtimeTableName' should be null or empty when realtime tables do not exist", ()),
    (_typed_logical_name, "'tableName' should not end with _OFFLINE or _REALTIME", ()),
], ids=["ref-not-in-map", "misspelt-key", "raw-physical-name", "typed-logical-name"])
def test_pinot_refuses_a_broken_logical_table(engine: PinotEngine, breaks: Any, error: str,
                                              dropped: tuple[str, ...]) -> None:
    schema, table = physical(1)
    lt = copy.deepcopy(render_pinot_logical_table(MIRROR, GEN1))
    breaks(lt)
    result = engine.check_logical(lt, [table], [logical_schema(), schema])
    assert not result.ok
    assert len(result.errors) == 1 and error in result.errors[0], describe(result)
    assert result.dropped_keys == dropped


@needs_engine
@pytest.mark.parametrize(("cluster", "error"), [
    ("no-physical-table", "'public_orders_g1_REALTIME' should be one of the existing tables"),
    ("no-logical-schema", "Schema with same name as logical table 'public_orders' does not exist"),
    ("generation-0-table-exists", "Table name: public_orders already exists"),
])
def test_pinot_refuses_a_logical_table_the_cluster_cannot_take(engine: PinotEngine, cluster: str,
                                                               error: str) -> None:
    """What the controller reads from ZooKeeper: the routed table must exist, a schema must be
    named like the logical table, and no table may hold its name: the generation-0 table
    (raw name = the mirror's) must be gone before the logical table can be created."""
    schema, table = physical(1)
    tables, schemas = [table], [logical_schema(), schema]
    if cluster == "no-physical-table":
        tables = [physical(2)[1]]
    elif cluster == "no-logical-schema":
        schemas = [schema]
    else:
        tables.append(physical(0)[1])
    result = engine.check_logical(render_pinot_logical_table(MIRROR, GEN1), tables, schemas)
    assert not result.ok and len(result.errors) == 1 and error in result.errors[0], describe(result)


# ---------------------------------------------------------------- controller client

CTRL = "http://controller.test:9000"
LOGICAL = {"tableName": MIRROR, "brokerTenant": "DefaultTenant",
           "physicalTableConfigMap": {"public_orders_g1_REALTIME": {}},
           "refRealtimeTableName": "public_orders_g1_REALTIME"}


def ctrl(server: FakeServer) -> PinotControllerClient:
    return PinotControllerClient(CTRL, session=server.session())


def test_put_logical_table_updates_an_existing_one() -> None:
    server = FakeServer().route("PUT", "/logicalTables/public_orders", 200,
                                {"unrecognizedProperties": {}, "status": "public_orders logical table successfully updated."})
    assert ctrl(server).put_logical_table(LOGICAL)["status"].endswith("updated.")
    assert [(c.method, c.path, c.body) for c in server.calls] == [("PUT", "/logicalTables/public_orders", LOGICAL)]


def test_put_logical_table_creates_an_absent_one() -> None:
    server = (FakeServer()
              .route("PUT", "/logicalTables/public_orders", 404,
                     {"code": 404, "error": "Failed to find logical table public_orders"})
              .route("POST", "/logicalTables", 200,
                     {"unrecognizedProperties": {}, "status": "public_orders logical table successfully added."}))
    assert ctrl(server).put_logical_table(LOGICAL)["status"].endswith("added.")
    assert [(c.method, c.path) for c in server.calls] == [("PUT", "/logicalTables/public_orders"),
                                                           ("POST", "/logicalTables")]
    assert server.calls[1].body == LOGICAL


def test_put_logical_table_refusals_are_permanent() -> None:
    invalid = FakeServer().route("PUT", "/logicalTables/public_orders", 400, {
        "code": 400, "error": "Invalid logical table. Reason: 'public_orders_g1_REALTIME' should be one of the "
                              "existing tables"})
    with pytest.raises(PermanentRemoteError, match="should be one of the existing tables") as ei:
        ctrl(invalid).put_logical_table(LOGICAL)
    assert ei.value.status == 400 and len(invalid.calls) == 1
    clash = (FakeServer()
             .route("PUT", "/logicalTables/public_orders", 404, {"code": 404, "error": "Failed to find logical table"})
             .route("POST", "/logicalTables", 409, {"code": 409, "error": "Table name: public_orders already exists"}))
    with pytest.raises(PermanentRemoteError, match="already exists") as ei:
        ctrl(clash).put_logical_table(LOGICAL)
    assert ei.value.status == 409


def test_get_and_delete_logical_table() -> None:
    stored = LOGICAL | {"query": None, "quota": None, "refOfflineTableName": None, "timeBoundaryConfig": None,
                        "physicalTableConfigMap": {"public_orders_g1_REALTIME": {"multiCluster": False}}}
    server = (FakeServer()
              .route("GET", "/logicalTables/public_orders", 200, stored)
              .route("GET", "/logicalTables/absent", 404, {"code": 404, "error": "Logical table not found"})
              .route("DELETE", "/logicalTables/public_orders", 200,
                     {"status": "public_orders logical table successfully deleted."})
              .route("DELETE", "/logicalTables/absent", 404,
                     {"code": 404, "error": "Logical table: absent does not exists."}))
    c = ctrl(server)
    assert c.get_logical_table("public_orders") == stored
    assert c.get_logical_table("absent") is None
    assert c.delete_logical_table("public_orders") is True
    assert c.delete_logical_table("absent") is False
