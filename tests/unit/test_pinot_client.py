"""Pinot controller and broker clients against the fake adapter."""

from __future__ import annotations

import pytest

from cdc.clients.pinot import PinotBrokerClient, PinotControllerClient
from cdc.core.errors import PermanentRemoteError, TransientRemoteError, UnreachableError
from fakes import FakeServer

CTRL = "http://controller.test:9000"
BROKER = "http://broker.test:8099"

SCHEMA = {"schemaName": "public_orders", "primaryKeyColumns": ["id"],
          "dimensionFieldSpecs": [{"name": "id", "dataType": "LONG"}]}
TABLE = {"tableName": "public_orders", "tableType": "REALTIME"}


def ctrl(server: FakeServer) -> PinotControllerClient:
    return PinotControllerClient(CTRL, session=server.session())


def broker(server: FakeServer) -> PinotBrokerClient:
    return PinotBrokerClient(BROKER, session=server.session())


def test_health():
    assert ctrl(FakeServer().route("GET", "/health", 200, "OK")).health() is True
    with pytest.raises(TransientRemoteError):
        ctrl(FakeServer().route("GET", "/health", 503, "not ready")).health()


def test_add_schema_posts_with_override():
    server = FakeServer().route("POST", "/schemas", 200, {"unrecognizedProperties": {}, "status": "public_orders successfully added"})
    ctrl(server).add_schema(SCHEMA)
    call = server.calls[0]
    assert call.params == {"override": "true", "force": "false"} and call.body == SCHEMA


def test_get_schema_404_none_and_delete():
    server = (FakeServer()
              .route("GET", "/schemas/missing", 404, {"code": 404, "error": "Schema not found"})
              .route("GET", "/schemas/public_orders", 200, SCHEMA)
              .route("DELETE", "/schemas/missing", 404, {"code": 404, "error": "Schema not found"})
              .route("DELETE", "/schemas/used", 409, {"code": 409, "error": "Schema is in use by table"}))
    c = ctrl(server)
    assert c.get_schema("missing") is None
    assert c.get_schema("public_orders") == SCHEMA
    assert c.delete_schema("missing") is False
    with pytest.raises(PermanentRemoteError, match="in use"):
        c.delete_schema("used")


def test_tables_crud():
    server = (FakeServer()
              .route("POST", "/tables", 200, {"status": "Table public_orders_REALTIME successfully added"})
              .route("PUT", "/tables/public_orders", 200, {"status": "Table config updated"})
              .route("GET", "/tables/public_orders", 200, {"REALTIME": TABLE})
              .route("GET", "/tables/absent", 200, {})
              .route("DELETE", "/tables/public_orders", 200, {"status": "Tables: [public_orders_REALTIME] deleted"})
              .route("DELETE", "/tables/absent", 404, {"code": 404, "error": "Table 'absent' with type REALTIME does not exist"}))
    c = ctrl(server)
    c.add_table(TABLE)
    c.update_table("public_orders", TABLE)
    assert c.get_table("public_orders") == TABLE
    assert server.calls[-1].params == {"type": "realtime"}
    assert c.get_table("absent") is None
    assert c.delete_table("public_orders") is True
    assert server.calls[-1].params == {"type": "realtime"}
    assert c.delete_table("absent") is False


def test_add_table_conflict_is_permanent():
    server = FakeServer().route("POST", "/tables", 409, {"code": 409, "error": "Table public_orders_REALTIME already exists"})
    with pytest.raises(PermanentRemoteError) as ei:
        ctrl(server).add_table(TABLE)
    assert ei.value.status == 409 and "already exists" in str(ei.value)
    assert "Pinot controller at http://controller.test:9000" in str(ei.value)


def test_consuming_segments_info():
    info = {"serversFailingToRespond": 0, "serversUnparsableRespond": 0, "_segmentToConsumingInfoMap": {
        "public_orders__0__0__20240101T0000Z": [{"serverName": "Server_1", "consumerState": "CONSUMING",
                                                 "lastConsumedTimestamp": 1, "partitionToOffsetMap": {"0": "10"}}]}}
    server = FakeServer().route("GET", "/tables/public_orders/consumingSegmentsInfo", 200, info)
    assert ctrl(server).consuming_segments_info("public_orders") == info


def test_broker_query_rows():
    server = FakeServer().route("POST", "/query/sql", 200, {
        "resultTable": {"dataSchema": {"columnNames": ["id", "name"], "columnDataTypes": ["LONG", "STRING"]},
                        "rows": [[1, "a"], [2, "b"]]},
        "exceptions": [], "numDocsScanned": 2})
    cols, rows = broker(server).query("SELECT id, name FROM public_orders")
    assert cols == ["id", "name"] and rows == [[1, "a"], [2, "b"]]
    assert server.calls[0].body == {"sql": "SELECT id, name FROM public_orders"}


def test_broker_exceptions_raise_permanent_with_text():
    server = FakeServer().route("POST", "/query/sql", 200, {
        "exceptions": [{"errorCode": 150, "message": "SQLParsingError:\nEncountered \"FORM\" at line 1"}],
        "resultTable": None})
    with pytest.raises(PermanentRemoteError) as ei:
        broker(server).query("SELECT * FORM t")
    assert "SQLParsingError" in str(ei.value) and "[150]" in str(ei.value)


def test_broker_resource_missing_is_transient():
    server = FakeServer().route("POST", "/query/sql", 200, {
        "exceptions": [{"errorCode": 410, "message": "BrokerResourceMissingError"}]})
    with pytest.raises(TransientRemoteError):
        broker(server).count("public_orders")


def test_count():
    server = FakeServer().route("POST", "/query/sql", 200, {
        "resultTable": {"dataSchema": {"columnNames": ["count(*)"], "columnDataTypes": ["LONG"]}, "rows": [[42]]},
        "exceptions": []})
    assert broker(server).count("public_orders") == 42
    assert server.calls[0].body == {"sql": 'SELECT COUNT(*) FROM "public_orders"'}
    with pytest.raises(ValueError):
        broker(server).count('x"; DROP')


def test_broker_unreachable():
    with pytest.raises(UnreachableError, match="Pinot broker at http://127.0.0.1:1"):
        PinotBrokerClient("http://127.0.0.1:1", timeout=2).query("SELECT 1")
