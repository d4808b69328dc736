"""Issue 11 items 2, 3 and 5 on the real stack: mirror topics never age data out (compacted,
infinite retention, also when they existed before with other settings), a topic whose
partition count differs from what the mirror needs is refused, and two tables whose change
topics would collide cannot both be mirrored. Every refusal leaves nothing half-made."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from cdc.clients.kafka import KafkaAdmin
from cdc.core import names
from cdc.core.errors import ConflictError
from cdc.mapping import render
from cdc.mirrors import service
from syncing import stack_objects, wait_in_sync

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka(ctx: service.Context) -> KafkaAdmin:
    return KafkaAdmin(ctx.settings.kafka_bootstrap)


@pytest.fixture
def tables(pg: psycopg.Connection) -> Iterator[str]:
    uid = uuid.uuid4().hex[:6]
    pg.execute(f'CREATE TABLE public."t {uid}" (id int PRIMARY KEY, v text)')
    pg.execute(f'CREATE TABLE public."t_{uid}" (id int PRIMARY KEY, v text)')
    pg.execute(f'INSERT INTO public."t {uid}" SELECT g, \'blank \' || g FROM generate_series(1, 50) g')
    pg.execute(f'INSERT INTO public."t_{uid}" SELECT g, \'under \' || g FROM generate_series(1, 70) g')
    yield uid
    pg.execute(f'DROP TABLE IF EXISTS public."t {uid}"')
    pg.execute(f'DROP TABLE IF EXISTS public."t_{uid}"')


def test_topics_compacted_forever_and_collision_refused(ctx: service.Context, kafka: KafkaAdmin,
                                                         tables: str) -> None:
    uid = tables
    first = service.add_mirror(ctx, "public", f"t {uid}", progress=print)
    try:
        wait_in_sync(ctx, first.name, timeout=180)
        for topic in (names.change_topic("default", "public", f"t {uid}"), names.flat_topic(first.name)):
            cfg = kafka.topic_config(topic)
            assert {k: cfg[k] for k in render.TOPIC_CONFIG} == render.TOPIC_CONFIG, (topic, cfg)
        # public."t_<uid>" maps to the same change topic as public."t <uid>": refused, nothing made
        assert names.change_topic("default", "public", f"t_{uid}") == names.change_topic("default", "public", f"t {uid}")
        before = stack_objects(ctx)
        with pytest.raises(ConflictError) as ei:
            service.add_mirror(ctx, "public", f"t_{uid}", progress=print)
        assert "would share Debezium's change topic" in ei.value.message, ei.value.message
        assert stack_objects(ctx) == before
        wait_in_sync(ctx, first.name, timeout=60)          # the first mirror holds only its own rows
    finally:
        service.remove_mirror(ctx, first.name, drop_data=True, progress=print)


def test_existing_topics_brought_to_config_or_refused(ctx: service.Context, kafka: KafkaAdmin, tables: str) -> None:
    uid = tables
    name = names.mirror_name("public", f"t_{uid}")
    flat = names.flat_topic(name)
    # a flat topic left with the wrong partition count: refused before anything is created
    kafka.create_topic(flat, ctx.settings.flat_topic_partitions + 1, {"retention.ms": "604800000"})
    before = stack_objects(ctx)
    try:
        with pytest.raises(ConflictError) as ei:
            service.add_mirror(ctx, "public", f"t_{uid}", progress=print)
        assert "partitions" in ei.value.message and flat in ei.value.message
        assert stack_objects(ctx) == before
    finally:
        kafka.delete_topic(flat)
    # the right partition count but a week's retention (the broker default): fixed in place
    kafka.create_topic(flat, ctx.settings.flat_topic_partitions, {"retention.ms": "604800000"})
    rec = service.add_mirror(ctx, "public", f"t_{uid}", progress=print)
    try:
        cfg = kafka.topic_config(flat)
        assert {k: cfg[k] for k in render.TOPIC_CONFIG} == render.TOPIC_CONFIG, cfg
        wait_in_sync(ctx, rec.name, timeout=180)
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
