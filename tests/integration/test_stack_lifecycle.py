"""`up` on a partly running stack: a killed process comes back with its data; the others
are left alone. (Kills real processes: run when nothing else uses the stack.)"""

from __future__ import annotations

import os
import signal
import time
import uuid

import psycopg
import pytest

from cdc.stack import manager

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pids(st: dict) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in st["processes"]}


def test_killed_processes_come_back_with_their_data(stack: dict, settings) -> None:
    from confluent_kafka import Consumer, Producer
    topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
    table = f"lifecycle_{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(10):
        p.produce(topic, f"m{i}".encode())
    assert p.flush(30) == 0
    with psycopg.connect(settings.local_postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} AS SELECT g AS id FROM generate_series(1, 100) g")

    before = _pids(manager.status(settings))
    for name in ("kafka", "postgres"):
        os.kill(before[name], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
            p["pid"] for p in manager.status(settings)["processes"] if p["name"] in ("kafka", "postgres")):
        time.sleep(0.5)

    st = manager.up(settings)
    after = _pids(st)
    assert st["healthy"]
    assert after["kafka"] != before["kafka"] and after["postgres"] != before["postgres"]
    for name in ("connect", "flink-jobmanager", "flink-taskmanager", "flink-sql-gateway"):
        assert after[name] == before[name], f"{name} was restarted although it was running"

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.close()
    assert got == [f"m{i}" for i in range(10)]
    with psycopg.connect(settings.local_postgres_dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 100
        conn.execute(f"DROP TABLE {table}")


def test_second_up_starts_nothing(stack: dict, settings) -> None:
    before = _pids(manager.status(settings))
    notes: list[str] = []
    manager.up(settings, progress=notes.append)
    assert _pids(manager.status(settings)) == before
    assert not any(n.startswith("starting") for n in notes)
