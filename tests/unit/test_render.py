"""Tests of the rendered connector config, Flink SQL and Pinot schema/table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cdc.mapping import render
from cdc.core.errors import ConfigError, PreflightError
from cdc.core.models import Column, MirrorSpec, Source, TableInfo

BOOT = "127.0.0.1:9092"
REF = "${file:/var/lib/cdc/secrets.properties:pg_default}"


def col(name: str, type_name: str, base: str, pos: int, **kw: object) -> Column:
    return Column(name=name, type_name=type_name, base_type=base, position=pos, **kw)


def orders() -> TableInfo:
    return TableInfo(schema_name="Sales", table_name="Order Items", primary_key=["tenant id", "Id"], columns=[
        col("Id", "bigint", "int8", 1, nullable=False, identity=True),
        col("tenant id", "integer", "int4", 2, nullable=False),
        col("Amount", "numeric(12,2)", "numeric", 3, precision=12, scale=2),
        col("note", "text", "text", 4, toastable=True),
        col("tags", "text[]", "_text", 5, kind="array", element_type="text", toastable=True),
        col("qty`s", "integer[]", "_int4", 6, kind="array", element_type="int4"),
        col("created", "timestamp with time zone", "timestamptz", 7),
    ])


def spec(name: str = "sales_order_items") -> MirrorSpec:
    return MirrorSpec(name=name, schema_name="Sales", table_name="Order Items")


def source(**kw: object) -> Source:
    return Source(name="default", dsn="postgresql://postgres@127.0.0.1/app", database="app", **kw)


def flink(table: TableInfo | None = None, mirror: MirrorSpec | None = None) -> list[str]:
    return render.render_flink_sql(mirror or spec(), table or orders(), kafka_bootstrap=BOOT,
                                   change_topic="cdc.default.Sales.Order Items", flat_topic="cdc.flat.x",
                                   group_id="cdc-x")


# ---------------------------------------------------------------- connector

def test_connector_core_settings() -> None:
    cfg = render.render_connector(source(has_password=True), [orders()], kafka_bootstrap=BOOT, password_ref=REF)
    expected = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput", "slot.name": "cdc_default", "publication.name": "cdc_default",
        "publication.autocreate.mode": "filtered", "topic.prefix": "cdc.default",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter", "value.converter.schemas.enable": "false",
        "tombstones.on.delete": "false", "snapshot.mode": "initial", "signal.enabled.channels": "source",
        "signal.data.collection": "_cdc.debezium_signal", "decimal.handling.mode": "string",
        "time.precision.mode": "microseconds", "binary.handling.mode": "hex", "database.password": REF,
        "database.dbname": "app",
    }
    assert {k: cfg.get(k) for k in expected} == expected
    assert all(isinstance(v, str) for v in cfg.values())
    assert "_cdc.heartbeat" in cfg["heartbeat.action.query"] and int(cfg["heartbeat.interval.ms"]) > 0


def test_include_list_is_case_sensitive_escaped_and_has_signal_table() -> None:
    plain = TableInfo(schema_name="public", table_name="a.b,c", primary_key=["id"],
                      columns=[col("id", "integer", "int4", 1)])
    cfg = render.render_connector(source(), [orders(), plain], kafka_bootstrap=BOOT, password_ref=None)
    assert cfg["table.include.list"].split(",")[0] == r"(?-i)Sales\.Order\x20Items"
    assert r"(?-i)public\.a\.b\x2cc" in cfg["table.include.list"]
    assert r"(?-i)_cdc\.debezium_signal" in cfg["table.include.list"]
    assert r"(?-i)_cdc\.heartbeat" in cfg["table.include.list"]


def test_snapshot_notifications_go_to_the_sources_topic() -> None:
    cfg = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None)
    assert cfg["notification.enabled.channels"] == "sink"
    assert cfg["notification.sink.topic.name"] == "cdc.default._cdc.notifications"


@pytest.mark.parametrize("ref", ["s3cr3t", "${file:/x", "pass${file:/x:y}", "${nocolon}"])
def test_connector_refuses_clear_password(ref: str) -> None:
    with pytest.raises(ConfigError):
        render.render_connector(source(has_password=True), [orders()], kafka_bootstrap=BOOT, password_ref=ref)


def test_connector_never_contains_clear_password() -> None:
    src = Source(name="default", dsn="postgresql://app@db/app", database="app", has_password=True)
    cfg = render.render_connector(src, [orders()], kafka_bootstrap=BOOT, password_ref=REF)
    password_keys = [k for k in cfg if "password" in k]
    assert password_keys == ["database.password"] and cfg["database.password"] == REF
    without = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None)
    assert not any("password" in k for k in without)
    with pytest.raises(ConfigError):
        render.render_connector(src, [orders()], kafka_bootstrap=BOOT, password_ref=None)


def test_toast_columns_get_full_identity_and_reselect() -> None:
    cfg = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None)
    # Debezium's autoset would run ALTER TABLE Sales.Order Items unquoted: cdc sets FULL itself.
    assert "replica.identity.autoset.values" not in cfg and render.needs_full_identity(orders())
    plain = orders().model_copy(update={"schema_name": "sales", "table_name": "order_items"})
    cfg_plain = render.render_connector(source(), [plain], kafka_bootstrap=BOOT, password_ref=None)
    assert cfg_plain["replica.identity.autoset.values"] == r"(?-i)sales\.order_items:FULL"
    assert cfg["post.processors.reselector.type"] == "io.debezium.processors.reselect.ReselectColumnsPostProcessor"
    assert cfg["post.processors.reselector.reselect.columns.include.list"] == \
        r"(?-i)Sales\.Order\x20Items:note,(?-i)Sales\.Order\x20Items:tags"
    assert cfg["post.processors.reselector.reselect.null.values"] == "false"
    full = orders().model_copy(update={"replica_identity": "full"})
    cfg2 = render.render_connector(source(), [full], kafka_bootstrap=BOOT, password_ref=None)
    assert "replica.identity.autoset.values" not in cfg2


def test_key_override_sets_message_key_columns() -> None:
    keyless = TableInfo(schema_name="public", table_name="log", columns=[col("a", "integer", "int4", 1),
                                                                          col("b", "text", "text", 2)])
    cfg = render.render_connector(source(), [keyless], kafka_bootstrap=BOOT, password_ref=None,
                                  key_overrides={"public.log": ["a"]})
    # Debezium joins table and column regex with "." (Key.CustomKeyMapper): no "$" in between.
    assert cfg["message.key.columns"] == r"(?-i)public\.log:a"
    table_rx, cols = cfg["message.key.columns"].split(":", 1)
    assert re.fullmatch(table_rx.replace("(?-i)", "") + "." + cols, "public.log.a")
    assert cfg["replica.identity.autoset.values"] == r"(?-i)public\.log:FULL"
    with pytest.raises(ConfigError):
        render.render_connector(source(), [keyless], kafka_bootstrap=BOOT, password_ref=None)


def test_slot_name_sanitised() -> None:
    cfg = render.render_connector(Source(name="Billing-EU.1", dsn="x"), [orders()], kafka_bootstrap=BOOT,
                                  password_ref=None)
    assert cfg["slot.name"] == "cdc_billing_eu_1" == cfg["publication.name"]


def test_bootstrap_sql_is_idempotent_ddl() -> None:
    stmts = render.bootstrap_sql("default")
    assert all("IF NOT EXISTS" in s for s in stmts)
    assert any("_cdc.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))"
               in s for s in stmts)
    assert any("_cdc.heartbeat" in s for s in stmts)


# ---------------------------------------------------------------- Flink

def test_flink_statements_shape() -> None:
    stmts = flink()
    kinds = [s.split("(")[0].split("`")[0].strip() for s in stmts]
    assert kinds == ["SET 'pipeline.name' = 'cdc-mirror-sales_order_items'", "SET 'execution.checkpointing.interval' = '10 s'",
                     "DROP TEMPORARY TABLE IF EXISTS", "CREATE TEMPORARY TABLE", "DROP TEMPORARY TABLE IF EXISTS",
                     "CREATE TEMPORARY TABLE", "DROP TEMPORARY TABLE IF EXISTS", "CREATE TEMPORARY TABLE",
                     "EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO"]
    assert not any("-- @statement" in s for s in stmts)


def test_flink_change_table() -> None:
    ddl = flink()[3]
    for fragment in ["`before` ROW<`Id` BIGINT, `tenant id` INT, `Amount` STRING, `note` STRING, "
                     "`tags` ARRAY<STRING>, `qty``s` ARRAY<INT>, `created` STRING>",
                     "`op` STRING", "`source` ROW<`lsn` BIGINT, `ts_ms` BIGINT, `txId` BIGINT",
                     "`change_offset` BIGINT METADATA FROM 'offset' VIRTUAL",
                     "`change_partition` INT METADATA FROM 'partition' VIRTUAL",
                     "'topic' = 'cdc.default.Sales.Order Items'", "'format' = 'json'",
                     "'json.ignore-parse-errors' = 'false'", "'properties.group.id' = 'cdc-x'"]:
        assert fragment in ddl


def test_flink_flat_table_keys_and_partitioner() -> None:
    ddl = flink()[5]
    for fragment in ["'key.format' = 'json'", "'key.fields' = 'tenant_id;Id'", "'value.format' = 'json'",
                     "'value.fields-include' = 'ALL'", "'sink.delivery-guarantee' = 'at-least-once'",
                     "'sink.partitioner' = 'default'", "`__deleted` BOOLEAN", "`__seq` BIGINT",
                     "`__source_ts_ms` BIGINT", "`__op` STRING", "`Amount` STRING", "`created` BIGINT"]:
        assert fragment in ddl


def test_flink_insert_flattens_with_quoted_identifiers() -> None:
    ins = flink()[-1]
    assert ins.startswith("EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO `cdc_flat__sales_order_items`")
    for fragment in ["CASE WHEN `op` = 'd' THEN `before`.`tenant id` ELSE `after`.`tenant id` END AS `tenant id`",
                     "CASE WHEN `op` = 'd' THEN `before`.`qty``s` ELSE `after`.`qty``s` END AS `qty``s`",
                     "`op` = 'd' AS `__deleted`", "`change_offset` AS `__seq`",
                     "`source`.`ts_ms` AS `__source_ts_ms`", "`op` AS `__op`",
                     "CASE WHEN `raw`.`__bad` = '' THEN ARRAY_REMOVE(`raw`.`tags`, NULL) END AS `tags`", "WHERE `op` IN ('c', 'r', 'u', 'd')"]:
        assert fragment in ins


def test_flink_literals_are_escaped() -> None:
    stmts = render.render_flink_sql(spec(), orders(), kafka_bootstrap=BOOT, change_topic="it's",
                                    flat_topic="f", group_id="g")
    assert "'topic' = 'it''s'" in stmts[3]


def test_flink_key_override() -> None:
    keyless = TableInfo(schema_name="public", table_name="log", columns=[col("a", "integer", "int4", 1)])
    mirror = MirrorSpec(name="public_log", schema_name="public", table_name="log", key_columns=["a"])
    assert "'key.fields' = 'a'" in flink(keyless, mirror)[5]
    with pytest.raises(ConfigError):
        flink(keyless, MirrorSpec(name="public_log", schema_name="public", table_name="log"))


def test_flink_unsupported_type_names_column() -> None:
    t = orders()
    t.columns.append(col("where", "point", "point", 9))
    with pytest.raises(PreflightError, match="'where'"):
        flink(t)


# ---------------------------------------------------------------- Pinot

def test_pinot_schema_primary_key_order_and_fields() -> None:
    schema = render.render_pinot_schema(spec(), orders())
    assert schema["schemaName"] == "sales_order_items"
    assert schema["primaryKeyColumns"] == ["tenant_id", "Id"]     # Pinot refuses blanks: mapped
    dims = {f["name"]: f for f in schema["dimensionFieldSpecs"]}
    metrics = {f["name"]: f for f in schema["metricFieldSpecs"]}
    dts = {f["name"]: f for f in schema["dateTimeFieldSpecs"]}
    assert dims["tags"] == {"name": "tags", "dataType": "STRING", "singleValueField": False,
                            "maxLengthExceedStrategy": "NO_ACTION"}
    assert dims["qty`s"]["singleValueField"] is False and dims["qty`s"]["dataType"] == "INT"
    assert dims["Id"]["notNull"] is True and dims["__seq"]["dataType"] == "LONG"
    assert dims["__deleted"]["dataType"] == "BOOLEAN"
    assert metrics["Amount"]["dataType"] == "BIG_DECIMAL"
    assert dts["__source_ts_ms"]["format"] == "EPOCH|MILLISECONDS|1"
    assert dts["created"]["format"] == "EPOCH|MICROSECONDS|1"
    assert schema["enableColumnBasedNullHandling"] is True
    every = [f["name"] for k in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs") for f in schema[k]]
    assert sorted(every) == sorted([c.name.replace(" ", "_") for c in orders().columns]
                                   + ["__deleted", "__seq", "__op", "__source_ts_ms"])


def test_pinot_numeric_key_column_is_a_dimension() -> None:
    t = TableInfo(schema_name="s", table_name="t", primary_key=["code"],
                  columns=[col("code", "numeric(10,0)", "numeric", 1, nullable=False)])
    schema = render.render_pinot_schema(MirrorSpec(name="s_t", schema_name="s", table_name="t"), t)
    assert schema["metricFieldSpecs"] == []
    assert schema["dimensionFieldSpecs"][0]["name"] == "code"


def test_pinot_table_upsert_config() -> None:
    cfg = render.render_pinot_table(spec(), orders(), kafka_bootstrap=BOOT, flat_topic="cdc.flat.x")
    assert cfg["tableName"] == "sales_order_items" and cfg["tableType"] == "REALTIME"
    assert cfg["segmentsConfig"]["timeColumnName"] == "__source_ts_ms"
    assert "retentionTimeValue" not in cfg["segmentsConfig"]
    assert cfg["upsertConfig"]["mode"] == "FULL"
    assert cfg["upsertConfig"]["comparisonColumns"] == ["__seq"]
    assert cfg["upsertConfig"]["deleteRecordColumn"] == "__deleted"
    assert cfg["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    stream = cfg["ingestionConfig"]["streamIngestionConfig"]["streamConfigMaps"][0]
    assert stream["stream.kafka.topic.name"] == "cdc.flat.x"
    assert stream["stream.kafka.broker.list"] == BOOT
    assert stream["stream.kafka.consumer.factory.class.name"] == \
        "org.apache.pinot.plugin.stream.kafka30.KafkaConsumerFactory"
    assert stream["stream.kafka.decoder.class.name"] == "org.apache.pinot.plugin.inputformat.json.JSONMessageDecoder"
    assert stream["stream.kafka.consumer.prop.auto.offset.reset"] == "smallest"
    assert int(stream["realtime.segment.flush.threshold.rows"]) > 0


# ---------------------------------------------------------------- templates

def test_templates_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = render.templates_dir()
    for sub in ("connectors", "flink_sql", "pinot_tables"):
        (tmp_path / sub).mkdir()
        for f in (real / sub).glob("*.j2"):
            (tmp_path / sub / f.name).write_text(f.read_text())
    (tmp_path / "pinot_tables" / "schema.json.j2").write_text('{"schemaName": {{ schema_name|tojson }}}')
    monkeypatch.setenv("CDC_TEMPLATES_DIR", str(tmp_path))
    assert render.templates_dir() == tmp_path
    assert render.render_pinot_schema(spec(), orders()) == {"schemaName": "sales_order_items"}


def test_rendered_json_templates_are_plain_json() -> None:
    cfg = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None)
    assert json.loads(json.dumps(cfg)) == cfg
    assert not any("{#" in v or "#}" in v for v in cfg.values())


def test_flink_dead_letters_take_rows_that_cannot_convert() -> None:
    """A value a conversion cannot take (a timestamptz outside years 1-9999) goes with its key
    to the dead-letter topic instead of failing the job; every other row to the flat topic."""
    stmts = flink()
    dlq, job = stmts[7], stmts[-1]
    assert "'topic' = 'cdc.dlq.sales_order_items'" in dlq and "`mirror_key` STRING" in dlq
    flat_insert, dead_insert = job.split("INSERT INTO")[1:]
    # a row that cannot be converted leaves the flat topic as a delete of its key (never stale)
    assert "WHERE `raw`.`__bad_key` = ''" in flat_insert and "WHERE `raw`.`__bad` <> ''" in dead_insert
    assert "`raw`.`__deleted` OR `raw`.`__bad` <> '' AS `__deleted`" in flat_insert
    assert "CASE WHEN `raw`.`__bad` = '' THEN `raw`.`note` END AS `note`" in flat_insert
    # the one convertible-or-not column of orders() is `created` (timestamptz): its check names it
    assert "THEN 'created' END" in job and "REGEXP(CASE WHEN `op` = 'd' THEN `before`.`created`" in job
    assert "JSON_OBJECT(KEY 'tenant id' VALUE `raw`.`tenant id`, KEY 'Id' VALUE `raw`.`Id`)" in dead_insert
    assert job.rstrip().endswith("END")


def test_producer_batch_size_is_a_client_override_only_when_asked() -> None:
    """cdc passes CDC_CONNECT_PRODUCER_BATCH_BYTES (256 KiB by default); 0 leaves the override
    out for a Connect cluster whose client-override policy forbids it."""
    from cdc.core.settings import Settings
    plain = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None)
    assert not any(k.startswith("producer.override.") for k in plain)
    sized = render.render_connector(source(), [orders()], kafka_bootstrap=BOOT, password_ref=None,
                                    producer_batch_bytes=Settings().connect_producer_batch_bytes)
    assert sized["producer.override.batch.size"] == "262144"
