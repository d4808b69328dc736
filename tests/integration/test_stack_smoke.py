"""Each component of the local stack works for real (not just 'a port is open')."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import requests

pytestmark = pytest.mark.integration


def test_postgres_logical_replication_slot(stack: dict, settings) -> None:
    slot = f"smoke_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.local_postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {slot}_t (id int primary key, v text)")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
        try:
            conn.execute(f"INSERT INTO {slot}_t VALUES (1, 'hello')")
            changes = [r[0] for r in conn.execute("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)",
                                                  (slot,))]
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f"DROP TABLE {slot}_t")
    assert any("INSERT" in c and "'hello'" in c for c in changes), changes


def test_kafka_produce_consume(stack: dict, settings) -> None:
    from confluent_kafka import Consumer, Producer
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    sent = [f"m{i}".encode() for i in range(5)]
    for m in sent:
        p.produce(topic, m, key=b"k")
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": topic,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    c.close()
    assert got == sent


def test_connect_lists_debezium_postgres_plugin(stack: dict, settings) -> None:
    plugins = requests.get(f"{settings.connect_url}/connector-plugins", timeout=10,
                           auth=settings.connect_auth()).json()
    classes = {p["class"] for p in plugins}
    assert "io.debezium.connector.postgresql.PostgresConnector" in classes, classes


def _gateway_run(gw: str, session: str, statement: str, timeout: float = 60) -> dict:
    """Run one statement through the SQL Gateway REST API; return the first result page."""
    op = requests.post(f"{gw}/v1/sessions/{session}/statements", json={"statement": statement},
                       timeout=30).json()["operationHandle"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{gw}/v1/sessions/{session}/operations/{op}/status", timeout=10).json()["status"]
        if status in ("FINISHED", "ERROR", "CANCELED"):
            break
        time.sleep(0.3)
    res = requests.get(f"{gw}/v1/sessions/{session}/operations/{op}/result/0", timeout=30)
    assert status == "FINISHED", res.text[:2000]
    return res.json()


def _job_state(rest: str, job_id: str) -> str:
    return requests.get(f"{rest}/jobs/{job_id}", timeout=10).json()["state"]


def test_sql_gateway_job_reaches_finished(stack: dict, settings) -> None:
    gw, rest = settings.sql_gateway_url, settings.flink_url
    session = requests.post(f"{gw}/v1/sessions", json={"properties": {}}, timeout=30).json()["sessionHandle"]
    try:
        _gateway_run(gw, session, "CREATE TABLE gen (x INT) WITH ('connector'='datagen', 'number-of-rows'='10')")
        _gateway_run(gw, session, "CREATE TABLE sink (x INT) WITH ('connector'='blackhole')")
        res = _gateway_run(gw, session, "INSERT INTO sink SELECT x FROM gen")
        job_id = res["jobID"]
        deadline = time.monotonic() + 90
        state = _job_state(rest, job_id)
        while state not in ("FINISHED", "FAILED", "CANCELED") and time.monotonic() < deadline:
            time.sleep(1)
            state = _job_state(rest, job_id)
        assert state == "FINISHED"
    finally:
        requests.delete(f"{gw}/v1/sessions/{session}", timeout=10)


def test_flink_kafka_table_reads_produced_records(stack: dict, settings) -> None:
    import json

    from confluent_kafka import Producer
    topic = f"smoke-flink-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    rows = [{"id": i, "name": f"n{i}"} for i in range(3)]
    for r in rows:
        p.produce(topic, json.dumps(r).encode())
    assert p.flush(30) == 0
    gw = settings.sql_gateway_url
    session = requests.post(f"{gw}/v1/sessions", json={"properties": {"execution.runtime-mode": "batch"}},
                            timeout=30).json()["sessionHandle"]
    try:
        _gateway_run(gw, session, f"""CREATE TABLE src (id INT, name STRING) WITH (
            'connector'='kafka', 'topic'='{topic}', 'properties.bootstrap.servers'='{settings.kafka_bootstrap}',
            'scan.startup.mode'='earliest-offset', 'scan.bounded.mode'='latest-offset', 'format'='json')""")
        op = requests.post(f"{gw}/v1/sessions/{session}/statements",
                           json={"statement": "SELECT id, name FROM src"}, timeout=30).json()["operationHandle"]
        got: list = []
        uri = f"/v1/sessions/{session}/operations/{op}/result/0?rowFormat=JSON"
        deadline = time.monotonic() + 120
        while uri and time.monotonic() < deadline:
            body = requests.get(f"{gw}{uri}", timeout=30).json()
            if "errors" in body:
                pytest.fail(str(body["errors"])[:2000])
            got.extend(tuple(r["fields"]) for r in body.get("results", {}).get("data", []))
            if body.get("resultType") == "EOS":
                break
            uri = body.get("nextResultUri")
            time.sleep(0.3)
    finally:
        requests.delete(f"{gw}/v1/sessions/{session}", timeout=10)
    assert sorted(got) == [(r["id"], r["name"]) for r in rows]
