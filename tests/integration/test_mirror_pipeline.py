"""Issue 3 acceptance: a Postgres table becomes an exact, live mirror.

Every test compares the mirror with Postgres in full (all rows, all columns, canonical
values) through `wait_in_sync`; see conftest for what "the mirror" is on this machine.
"""

from __future__ import annotations

import json
import random
import string
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.mirrors import service
from syncing import stack_objects, wait_in_sync

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _drop(pg: psycopg.Connection, schema: str, table: str) -> None:
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))


def _change_ops(ctx: service.Context, topic: str) -> dict[str, int]:
    """Count Debezium ops in a change topic (to prove a table was not re-snapshotted)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": ctx.settings.kafka_bootstrap, "group.id": f"ops-{_uid()}",
                  "enable.auto.commit": False, "log_level": 0})
    end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    c.assign([TopicPartition(topic, 0, 0)])
    ops: dict[str, int] = {}
    seen = 0
    deadline = time.monotonic() + 60
    while seen < end and time.monotonic() < deadline:
        for m in c.consume(500, 1.0):
            seen = m.offset() + 1
            if m.value():
                op = json.loads(m.value()).get("op")
                ops[op] = ops.get(op, 0) + 1
    c.close()
    return ops


def test_existing_10k_rows_complete_after_add(ctx: service.Context, pg: psycopg.Connection) -> None:
    t = f"snap_{_uid()}"
    pg.execute(f"CREATE TABLE public.{t} (id bigint primary key, name text not null, qty int, price numeric(10,3))")
    pg.execute(f"INSERT INTO public.{t} SELECT g, 'item ' || g, g % 97, g / 7.0 FROM generate_series(1, 10000) g")
    try:
        t0 = time.monotonic()
        rec = service.add_mirror(ctx, "public", t)
        assert rec.name == f"public_{t}" and rec.state == "running" and rec.flink_job_id
        waited = wait_in_sync(ctx, rec.name, timeout=180)
        print(f"\nMEASURE snapshot 10k rows: add -> complete {time.monotonic() - t0:.1f}s (sync wait {waited:.1f}s)")
    finally:
        if ctx.registry.get_mirror(f"public_{t}"):
            service.remove_mirror(ctx, f"public_{t}", drop_data=True)
        _drop(pg, "public", t)


def test_dml_including_pk_update_and_multi_update_tx(ctx: service.Context, pg: psycopg.Connection) -> None:
    t = f"dml_{_uid()}"
    pg.execute(f"CREATE TABLE public.{t} (id int primary key, v text, n numeric(12,2), ts timestamptz)")
    pg.execute(f"INSERT INTO public.{t} SELECT g, 'v' || g, g, now() FROM generate_series(1, 50) g")
    name = service.add_mirror(ctx, "public", t).name
    try:
        wait_in_sync(ctx, name)
        pg.execute(f"INSERT INTO public.{t} VALUES (100, 'new', 1.01, '2024-02-29 23:59:59.999999+00')")
        pg.execute(f"UPDATE public.{t} SET v = 'updated', n = n * 3 WHERE id <= 10")
        pg.execute(f"DELETE FROM public.{t} WHERE id BETWEEN 20 AND 25")
        pg.execute(f"UPDATE public.{t} SET id = 1000 WHERE id = 30")          # primary key change
        with pg.transaction():
            for i in range(5):                                                 # several updates, one tx
                pg.execute(f"UPDATE public.{t} SET v = %s, n = %s WHERE id = 40", (f"step{i}", i))
        with pg.transaction():                                                 # delete + re-insert, one tx
            pg.execute(f"DELETE FROM public.{t} WHERE id = 41")
            pg.execute(f"INSERT INTO public.{t} VALUES (41, 'reborn', NULL, NULL)")
        wait_in_sync(ctx, name)
    finally:
        service.remove_mirror(ctx, name, drop_data=True)
        _drop(pg, "public", t)


def test_composite_key_non_public_schema_mixed_case(ctx: service.Context, pg: psycopg.Connection) -> None:
    schema, table = f"Sales-EU {_uid()}", "Order Items"
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    pg.execute(sql.SQL('CREATE TABLE {}.{} ("OrderNo" int, "Region" text, "Qty" int, note text, '
                       'PRIMARY KEY ("Region", "OrderNo"))').format(sql.Identifier(schema), sql.Identifier(table)))
    ins = sql.SQL("INSERT INTO {}.{} VALUES (%s, %s, %s, %s)").format(sql.Identifier(schema), sql.Identifier(table))
    for i in range(30):
        pg.execute(ins, (i, ["north", "south"][i % 2], i * 2, None if i % 3 else f"n{i}"))
    name = service.add_mirror(ctx, schema, table).name
    try:
        wait_in_sync(ctx, name)
        pg.execute(sql.SQL('UPDATE {}.{} SET "Qty" = -1 WHERE "Region" = %s AND "OrderNo" < 10').format(
            sql.Identifier(schema), sql.Identifier(table)), ("south",))
        pg.execute(sql.SQL('DELETE FROM {}.{} WHERE "OrderNo" = 4').format(sql.Identifier(schema),
                                                                          sql.Identifier(table)))
        wait_in_sync(ctx, name)
    finally:
        service.remove_mirror(ctx, name, drop_data=True)
        pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_unchanged_toasted_columns_survive_updates(ctx: service.Context, pg: psycopg.Connection) -> None:
    t = f"toast_{_uid()}"
    pg.execute(f"CREATE TABLE public.{t} (id int primary key, counter int, body text, doc jsonb)")
    rnd = random.Random(7)

    def blob(n: int) -> str:  # incompressible, so it is stored out of line (TOAST)
        return "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(n))

    for i in range(5):
        pg.execute(f"INSERT INTO public.{t} VALUES (%s, 0, %s, %s)",
                   (i, blob(20_000), json.dumps({"k": blob(12_000), "i": i})))
    assert pg.execute(f"SELECT pg_column_size(body) FROM public.{t} LIMIT 1").fetchone()[0] > 8000
    name = service.add_mirror(ctx, "public", t).name
    try:
        wait_in_sync(ctx, name)
        pg.execute(f"UPDATE public.{t} SET counter = counter + 1")           # body/doc untouched
        pg.execute(f"UPDATE public.{t} SET counter = counter + 1 WHERE id = 2")
        wait_in_sync(ctx, name)
    finally:
        service.remove_mirror(ctx, name, drop_data=True)
        _drop(pg, "public", t)


def test_second_table_added_while_first_streams(ctx: service.Context, pg: psycopg.Connection) -> None:
    t1, t2 = f"first_{_uid()}", f"second_{_uid()}"
    pg.execute(f"CREATE TABLE public.{t1} (id serial primary key, v int)")
    pg.execute(f"INSERT INTO public.{t1} (v) SELECT g FROM generate_series(1, 500) g")
    pg.execute(f"CREATE TABLE public.{t2} (id int primary key, label text)")
    pg.execute(f"INSERT INTO public.{t2} SELECT g, 'l' || g FROM generate_series(1, 3000) g")
    m1 = service.add_mirror(ctx, "public", t1).name
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(ctx.settings.local_postgres_dsn, autocommit=True) as w:
            while not stop.is_set():
                w.execute(f"INSERT INTO public.{t1} (v) VALUES (1)")
                w.execute(f"UPDATE public.{t1} SET v = v + 1 WHERE id = (SELECT max(id) FROM public.{t1}) - 3")
                time.sleep(0.02)

    m2 = None
    try:
        wait_in_sync(ctx, m1)
        snapshot_reads_before = _change_ops(ctx, names.change_topic("default", "public", t1)).get("r", 0)
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        m2 = service.add_mirror(ctx, "public", t2).name
        wait_in_sync(ctx, m2, timeout=180)
        stop.set()
        th.join(10)
        wait_in_sync(ctx, m1)
        ops = _change_ops(ctx, names.change_topic("default", "public", t1))
        assert ops.get("r", 0) == snapshot_reads_before, f"first table was re-snapshotted: {ops}"
        assert ops.get("c", 0) > 0, "first table's changes did not keep flowing while the second was added"
        slots = [r[0] for r in pg.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'cdc%' AND database = current_database()")]
        assert slots == ["cdc_default"]
        st = service.mirror_status(ctx, m1)
        assert st["flink_job"]["state"] == "RUNNING" and st["connector"]["state"] == "RUNNING"
    finally:
        stop.set()
        if m2:
            service.remove_mirror(ctx, m2, drop_data=True)
        service.remove_mirror(ctx, m1, drop_data=True)
        _drop(pg, "public", t1)
        _drop(pg, "public", t2)


def test_remove_leaves_nothing(ctx: service.Context, pg: psycopg.Connection) -> None:
    ta, tb = f"rma_{_uid()}", f"rmb_{_uid()}"
    for t in (ta, tb):
        pg.execute(f"CREATE TABLE public.{t} (id int primary key, v text)")
        pg.execute(f"INSERT INTO public.{t} VALUES (1, 'x')")
    a = service.add_mirror(ctx, "public", ta)
    b = service.add_mirror(ctx, "public", tb)
    try:
        wait_in_sync(ctx, b.name)
        service.remove_mirror(ctx, a.name, drop_data=True)
        assert ctx.jobmanager.job_state(a.flink_job_id) in ("CANCELED", "CANCELLING")
        include = ctx.connect.get_config("cdc-default")["table.include.list"]
        assert ta not in include and tb in include
        pubtables = [r[0] for r in pg.execute("SELECT tablename FROM pg_publication_tables WHERE pubname='cdc_default'")]
        deadline = time.monotonic() + 60   # Debezium rewrites the publication when its task restarts
        while ta in pubtables and time.monotonic() < deadline:
            time.sleep(1)
            pubtables = [r[0] for r in pg.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname='cdc_default'")]
        assert ta not in pubtables and tb in pubtables
        service.remove_mirror(ctx, b.name, drop_data=True)
        objs = stack_objects(ctx)
        assert "cdc-default" not in objs["connectors"]
        assert "cdc_default" not in objs["slots"] and "cdc_default" not in objs["publications"]
        assert b.flink_job_id not in objs["jobs"]
        assert not any(t.endswith(ta) or t.endswith(tb) for t in objs["flat_topics"])
    finally:
        for m in (a.name, b.name):
            if ctx.registry.get_mirror(m):
                service.remove_mirror(ctx, m, drop_data=True)
        _drop(pg, "public", ta)
        _drop(pg, "public", tb)


def test_add_is_idempotent_and_conflicts_are_refused(ctx: service.Context, pg: psycopg.Connection) -> None:
    from cdc.core.errors import ConflictError
    t = f"idem_{_uid()}"
    pg.execute(f"CREATE TABLE public.{t} (id int primary key, v text)")
    pg.execute(f"CREATE TABLE public.{t}_other (id int primary key, v text)")
    first = service.add_mirror(ctx, "public", t)
    try:
        before = stack_objects(ctx)
        again = service.add_mirror(ctx, "public", t)
        assert again.flink_job_id == first.flink_job_id
        with pytest.raises(ConflictError):
            service.add_mirror(ctx, "public", f"{t}_other", name=first.name)
        assert stack_objects(ctx) == before
    finally:
        service.remove_mirror(ctx, first.name, drop_data=True)
        _drop(pg, "public", t)
        _drop(pg, "public", f"{t}_other")
