"""Pinot's own code judges what cdc renders for Pinot, and shows what an upsert table keeps.

No Pinot server runs here: the Pinot engine (pinot_engine/, driven by
cdc.clients.pinot_engine) runs Apache Pinot 1.5.1's library code in a local JVM:
  * check:  the controller's POST /schemas + POST /tables validation, plus the keys Pinot's
            parse -> serialise round trip drops (unknown, misspelt, dead);
  * upsert: a server's REALTIME FULL-upsert ingestion (MutableSegmentImpl + the upsert
            metadata manager) and the documents a query would see.
Needs java and mvn (the engine is built into the cache on first use), not the stack.
"""

from __future__ import annotations

import copy
import json
import shutil
from typing import Any

import pytest

from cdc.clients.pinot_engine import ContractResult, PinotEngine
from cdc.core import names
from cdc.core.models import Column, ColumnKind, MirrorSpec, TableInfo
from cdc.mapping import typemap
from cdc.mapping.render import render_pinot_schema, render_pinot_table

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")), reason="needs java and mvn"),
]

Artifact = tuple[dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def engine() -> PinotEngine:
    e = PinotEngine()
    e.home  # noqa: B018 - build (or find) the engine once, outside any test's timing
    return e


# ---------------------------------------------------------------- artifacts

def col(name: str, pg: str, *, pos: int = 0, kind: ColumnKind = "base", nullable: bool = True) -> Column:
    if kind == "array":
        return Column(name=name, type_name=f"{pg}[]", base_type=f"_{pg}", kind="array", element_type=pg,
                      position=pos, nullable=nullable)
    return Column(name=name, type_name=pg, base_type=pg, kind=kind, position=pos, nullable=nullable)


def render(schema: str, table: str, columns: list[Column], pk: list[str], *, source: str = names.DEFAULT_SOURCE,
           key: list[str] | None = None) -> Artifact:
    columns = [c.model_copy(update={"position": i + 1}) for i, c in enumerate(columns)]
    info = TableInfo(schema_name=schema, table_name=table, columns=columns, primary_key=pk)
    spec = MirrorSpec(name=names.mirror_name(schema, table, source), source=source, schema_name=schema,
                      table_name=table, key_columns=key)
    return (render_pinot_schema(spec, info),
            render_pinot_table(spec, info, kafka_bootstrap="127.0.0.1:9092", flat_topic=names.flat_topic(spec.name)))


def every_type() -> list[Column]:
    """One column of every type typemap maps: scalars, string fallbacks, arrays, enum, domain."""
    cols = [col("id", "int4", nullable=False)]
    cols += [col(f"s_{t}", t) for t in sorted(typemap._SCALARS)]
    cols += [col(f"f_{t}", t) for t in sorted(typemap._STRING_FALLBACKS)]
    cols += [col(f"a_{t}", t, kind="array") for t in sorted(typemap._ARRAY_ELEMENTS)]
    cols.append(Column(name="e_mood", type_name="mood", base_type="mood", kind="enum"))
    cols.append(Column(name="d_email", type_name="email", base_type="text", kind="domain"))
    cols.append(col("s_required", "text", nullable=False))
    return cols


def rendered() -> dict[str, Artifact]:
    text = [col("v", "text")]
    return {
        "every-type": render("public", "every_type", every_type(), ["id"]),
        "odd-names": render("Sales Dept.", 'Order "Items" 2024 Größe', [
            col("Order ID", "int4", nullable=False), col("a.b", "text"), col('say "hi"', "text"),
            col("Größe", "numeric"), col("CamelCase", "int8"), col("naïve café", "timestamptz"),
            col("tab\there", "text"), col("UPPER", "bool")], ["Order ID"]),
        "capitals-and-dots": render("Public", "Orders.V2", [col("ID", "int8", nullable=False), *text], ["ID"]),
        "non-default-source": render("public", "orders", [col("id", "int4", nullable=False), *text], ["id"],
                                     source="shop_eu"),
        "key-override": render("public", "keyless", [col("sku", "text"), col("region", "varchar"),
                                                     col("qty", "int4")], [], key=["sku", "region"]),
        "key-numeric": render("public", "k_numeric", [col("k", "numeric", nullable=False), *text], ["k"]),
        "key-uuid": render("public", "k_uuid", [col("k", "uuid", nullable=False), *text], ["k"]),
        "key-timestamp": render("public", "k_ts", [col("k", "timestamptz", nullable=False),
                                                   col("k2", "timestamp", nullable=False), *text], ["k", "k2"]),
        "key-composite": render("public", "k_composite", [col("a", "int8", nullable=False),
                                                          col("b", "text", nullable=False),
                                                          col("c", "date", nullable=False), col("v", "float8")],
                                ["c", "a", "b"]),
    }


def describe(r: ContractResult) -> str:
    return f"{r.id}: errors={list(r.errors)} dropped_keys={list(r.dropped_keys)}"


@pytest.fixture(scope="module")
def accepted(engine: PinotEngine) -> dict[str, ContractResult]:
    return {r.id: r for r in engine.check([(k, s, t) for k, (s, t) in rendered().items()])}


@pytest.mark.parametrize("artifact", sorted(rendered()))
def test_pinot_accepts_what_cdc_renders(accepted: dict[str, ContractResult], artifact: str) -> None:
    result = accepted[artifact]
    print(describe(result))
    assert result.ok, "Pinot 1.5.1 refuses the rendered artifact: " + describe(result)


# ---------------------------------------------------------------- broken on purpose

def _base() -> Artifact:
    return render("public", "orders", [col("id", "int4", nullable=False), col("v", "text"),
                                       col("ts", "timestamptz")], ["id"])


def _drop_schema_name(a: Artifact) -> Artifact:
    """The known-dead key is removed from every variant, so each one fails for its own reason."""
    a[1]["segmentsConfig"].pop("schemaName", None)
    return a


def broken() -> dict[str, tuple[Artifact, str]]:
    """variant -> (artifact, text Pinot's answer must contain)."""
    out: dict[str, tuple[Artifact, str]] = {}

    def variant(name: str, expect: str) -> Artifact:
        a = _drop_schema_name(copy.deepcopy(_base()))
        out[name] = (a, expect)
        return a

    s, t = variant("misspelt-comparisonColumn", 'UpsertConfig["comparisonColumn"]')
    t["upsertConfig"]["comparisonColumn"] = t["upsertConfig"].pop("comparisonColumns")
    s, t = variant("unknown-key", "dropped:upsertConfig.deleteRecordColum")
    t["upsertConfig"]["deleteRecordColum"] = t["upsertConfig"].pop("deleteRecordColumn")
    s, t = variant("double-underscore-name", "'tableName' cannot contain double underscore ('__')")
    s["schemaName"] = t["tableName"] = "shop__public_orders"
    s, t = variant("column-with-blank", 'The column name "order id" should not contain blank space')
    s["dimensionFieldSpecs"].append({"name": "order id", "dataType": "INT"})
    s, t = variant("no-primary-key", "Upsert/Dedup table must have primary key columns in the schema")
    del s["primaryKeyColumns"]
    s, t = variant("wrong-time-column", "Cannot find valid fieldSpec for timeColumn: updated_at")
    t["segmentsConfig"]["timeColumnName"] = "updated_at"
    s, t = variant("unknown-data-type", 'from String "VARCHAR": not one of the values accepted')
    s["dimensionFieldSpecs"][0]["dataType"] = "VARCHAR"
    s, t = variant("missing-comparison-column", "The comparison column does not exist on schema")
    t["upsertConfig"]["comparisonColumns"] = ["__sequence"]
    s, t = variant("no-strict-routing", "Upsert/Dedup table must use strict replica-group")
    del t["routing"]
    s, t = variant("schema-of-another-table", "Failed to find schema for table: public_orders_REALTIME")
    s["schemaName"] = "other_table"
    s, t = variant("two-dots-in-name", "containing more than one '.' is not allowed")
    s["schemaName"] = t["tableName"] = "db.public.orders"
    return out


@pytest.fixture(scope="module")
def rejected(engine: PinotEngine) -> dict[str, ContractResult]:
    return {r.id: r for r in engine.check([(k, s, t) for k, ((s, t), _) in broken().items()])}


@pytest.mark.parametrize("variant", sorted(broken()))
def test_pinot_rejects_broken_variants(rejected: dict[str, ContractResult], variant: str) -> None:
    result = rejected[variant]
    expect = broken()[variant][1]
    print(describe(result))
    assert not result.ok
    if expect.startswith("dropped:"):
        assert expect.removeprefix("dropped:") in result.dropped_keys
    else:
        assert any(expect in e for e in result.errors), describe(result)


def test_the_unbroken_base_is_accepted(engine: PinotEngine) -> None:
    (result,) = engine.check([("base", *_drop_schema_name(_base()))])
    assert result.ok, describe(result)


def test_a_bad_line_does_not_stop_the_others(engine: PinotEngine) -> None:
    s, t = _drop_schema_name(_base())
    results = engine.check([("not-a-schema", {"schemaName": 42, "dimensionFieldSpecs": "x"}, {}), ("good", s, t)])
    assert [r.id for r in results] == ["not-a-schema", "good"]
    assert not results[0].ok and results[0].errors
    assert results[1].ok, describe(results[1])


# ---------------------------------------------------------------- upsert semantics

BIG = "x" * 20_000
T0 = 1_750_000_000_000


def upsert_table() -> Artifact:
    return render("public", "items", [col("id", "int4", nullable=False), col("note", "text"),
                                      col("amount", "numeric"), col("tags", "text", kind="array"),
                                      col("raw", "bytea")], ["id"])


def rec(seq: int, key: int, note: str | None = None, *, deleted: bool = False, amount: str | None = "1.00",
        tags: list[str] | None = None) -> dict[str, Any]:
    """One flat-topic record (what the Flink job writes): the row + __deleted/__seq/__op/__source_ts_ms."""
    return {"id": key, "note": note, "amount": amount, "tags": tags, "raw": "00ff",
            "__deleted": deleted, "__seq": seq, "__op": "d" if deleted else "u", "__source_ts_ms": T0 + seq}


def history() -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, record). __seq is the change event's position: higher wins."""
    p0 = [
        rec(1, 1, "k1 inserted"),
        rec(2, 1, "k1 updated", tags=["a", "b"]),
        rec(1, 1, "k1 inserted"),                    # stale replay of the insert: lower __seq, ignored
        rec(3, 2, "k2 inserted"),
        rec(4, 2, "k2 inserted", deleted=True),      # delete
        rec(5, 2, "k2 re-inserted", amount="1.20"),  # re-insert after delete
        rec(6, 3, "k3 inserted"),
        rec(7, 3, "k3 inserted", deleted=True),      # delete ...
        rec(6, 3, "k3 inserted"),                    # ... then a stale replay of the old version
        rec(8, 4, BIG, amount=None),                 # 20 kB string; NULL numeric
    ]
    p1 = [rec(1, 5, None, amount="12345678901234567890.000100"), rec(2, 6, "k6", deleted=True)]
    return [(0, i, r) for i, r in enumerate(p0)] + [(1, i, r) for i, r in enumerate(p1)]


@pytest.mark.parametrize("rows_per_segment", [None, 3], ids=["one-segment", "segments-of-3-rows"])
def test_upsert_keeps_the_highest_seq_and_hides_deleted_keys(engine: PinotEngine,
                                                             rows_per_segment: int | None) -> None:
    schema, table = upsert_table()
    rows, summary = engine.upsert_rows(schema, table, history(), rows_per_segment=rows_per_segment)
    print(json.dumps(summary))
    by_key = {r["id"]: r for r in rows}
    assert len(rows) == len(by_key), "one visible row per key"
    assert sorted(by_key) == [1, 2, 4, 5]         # k3 and k6: their winning event is a delete
    assert (by_key[1]["note"], by_key[1]["__seq"], by_key[1]["tags"]) == ("k1 updated", 2, ["a", "b"])
    assert (by_key[2]["note"], by_key[2]["__seq"], by_key[2]["__deleted"]) == ("k2 re-inserted", 5, False)
    assert by_key[4]["amount"] is None and by_key[4]["raw"] == "00ff"
    assert by_key[5]["note"] is None and by_key[5]["tags"] is None
    assert summary["records"] == 12 and summary["valid"] == 4 and summary["partitions"] == 2
    assert summary["errors"] == 0, summary["first_error"]
    assert summary["engine"].startswith("Apache Pinot 1.5.1 in-process")
    if rows_per_segment:
        assert summary["segments"] == 5           # 10 rows in partition 0 -> 4 segments, 2 rows -> 1


def test_a_record_pinot_cannot_ingest_is_dropped_and_counted(engine: PinotEngine) -> None:
    schema, table = upsert_table()
    bad = rec(9, 7, "bad") | {"id": "not a number"}
    rows, summary = engine.upsert_rows(schema, table, [*history(), (0, 99, bad)])
    assert len(rows) == 4 and summary["records"] == 13 and summary["errors"] == 1
    assert "offset 99" in summary["first_error"] and "id" in summary["first_error"]


def test_a_20kb_string_survives_untrimmed(engine: PinotEngine) -> None:
    """Pinot trims STRING values to maxLength (512) unless maxLengthExceedStrategy says not to;
    the rendered schema says NO_ACTION for every STRING column."""
    schema, table = upsert_table()
    rows, _ = engine.upsert_rows(schema, table, history())
    assert len(next(r for r in rows if r["id"] == 4)["note"]) == len(BIG)
    # Without the rendered strategy, Pinot 1.5.1 would keep 512 characters: the check bites.
    for spec in schema["dimensionFieldSpecs"]:
        spec.pop("maxLengthExceedStrategy", None)
    rows, _ = engine.upsert_rows(schema, table, history())
    assert len(next(r for r in rows if r["id"] == 4)["note"]) == 512


def test_big_decimal_reads_back_without_trailing_zeros(engine: PinotEngine) -> None:
    """Pinot 1.5.1 stores BIG_DECIMAL stripped of trailing zeros: '1.20' reads back '1.2' (same
    number, scale lost); cdc.mapping.canonical compares decimals normalised for that reason."""
    schema, table = upsert_table()
    rows, _ = engine.upsert_rows(schema, table, history())
    by_key = {r["id"]: r for r in rows}
    assert by_key[2]["amount"] == "1.2"
    assert by_key[1]["amount"] == "1"
    assert by_key[5]["amount"] == "12345678901234567890.0001"


def test_sql_over_the_upsert_table(engine: PinotEngine) -> None:
    """The same segments answered by Pinot's query engine (server plan + broker reduce)."""
    schema, table = upsert_table()
    sql = f"SET enableNullHandling=true; SELECT id, note FROM {schema['schemaName']} WHERE note IS NULL OR id < 3 " \
          "ORDER BY id"
    response = engine.query(schema, table, history(), sql)
    assert response["exceptions"] == []
    assert response["resultTable"]["rows"] == [[1, "k1 updated"], [2, "k2 re-inserted"], [5, None]]
    count = engine.query(schema, table, history(), f"SELECT COUNT(*) FROM {schema['schemaName']}")
    assert count["resultTable"]["rows"] == [[4]]


def test_a_table_that_consumed_nothing_answers_zero_rows(engine: PinotEngine) -> None:
    """A mirror queried before its first record (cdc demo does that) answers like an empty
    Pinot table, not with an error (seen in CI: "the Pinot engine (query) failed: remove")."""
    schema, table = upsert_table()
    count = engine.query(schema, table, [], f"SELECT COUNT(*) FROM {schema['schemaName']}")
    assert count["exceptions"] == [] and count["resultTable"]["rows"] == [[0]]
    rows, summary = engine.upsert_rows(schema, table, [])
    assert rows == [] and summary["records"] == 0
