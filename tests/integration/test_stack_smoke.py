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
    plugins = requests.get(f"{settings.connect_url}/connector-plugins", timeout=10).json()
    classes = {p["class"] for p in plugins}
    assert "io.debezium.connector.postgresql.PostgresConnector" in classes, classes
