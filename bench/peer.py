"""e) Peer: the same freshness via Debezium + `ExtractNewRecordState` straight to Kafka, no Flink.

The peer is what one would build without this project: Debezium's own unwrap SMT writing flat
records. Comparing its freshness with the Flink path's (c) on the same table, probes and
machine says what the Flink flatten job costs. A second connector with its own slot,
publication and `topic.prefix`, `snapshot.mode=no_data`, tombstones rewritten and
`op,lsn,source.ts_ms` added, streams the freshness table; the mirror's own connector is
**paused** during the run so each path had the machine to itself, and catches up from its
slot afterwards (this step waits for it before the next one runs). Probes are read on the
peer's topic. The ratio reported is Flink-path p99 / peer p99.
"""

from __future__ import annotations

import time
from typing import Any

from cdc.postgres import slots
from cdc.core import names
from cdc.mapping import render
from cdc.mirrors import service
from bench import freshness
from bench.harness import FRESH_TABLE, SCHEMA, Bench, ts_us
from bench.probes import ProbeWatcher


def run(b: Bench, duration: float) -> dict[str, Any]:
    c = b.ctx.connect
    main = names.connector_name("default")
    cfg = dict(c.get_config(main))
    name, slot, prefix = "bench-peer", "bench_peer", "benchpeer"
    for k in list(cfg):
        if k.startswith("signal.") or k == "heartbeat.action.query":
            del cfg[k]
    cfg.update({"name": name, "slot.name": slot, "publication.name": slot, "topic.prefix": prefix,
                "table.include.list": render._table_regex(SCHEMA, FRESH_TABLE), "snapshot.mode": "no_data",
                "transforms": "unwrap",
                "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
                "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
                "transforms.unwrap.add.fields": "op,lsn,source.ts_ms"})
    topic = f"{prefix}.{SCHEMA}.{FRESH_TABLE}"
    service.create_connector(b.ctx, name, cfg)
    c.wait_running(name, timeout=120)
    try:
        from cdc.clients.kafka import KafkaAdmin
        admin = KafkaAdmin(b.s.kafka_bootstrap)
        deadline = time.monotonic() + 90
        while topic not in admin.topics():      # created by Connect with the first record
            if time.monotonic() > deadline:
                raise RuntimeError(f"peer topic {topic} never appeared")
            b.lg.probe()
            time.sleep(1)
        w = ProbeWatcher(b.s.kafka_bootstrap, topic)
        _, ts = b.lg.probe()
        w.wait_for(ts_us(ts), 60)
        w.close()
        # The mirror's own connector is paused so the peer has the machine to itself, as
        # the Flink path had in (c); it catches up afterwards from its slot.
        c.pause(main)
        c.wait_state(main, "PAUSED")
        time.sleep(1)
        res = freshness.run(b, "peer_1000", topic, 1000, duration)
        res["single_change"] = freshness.single_change(b, topic, 10 if b.quick else 20)
        res["config"] = {k: v for k, v in cfg.items() if k.startswith("transforms") or k in ("snapshot.mode",)}
        res["topic"] = topic
        res["note"] = "cdc-default paused during this run (its slot retains WAL, then catches up)"
    finally:
        try:
            c.resume(main)
            c.wait_running(main, timeout=120)
        finally:
            service.delete_connector(b.ctx, name)
            _drop_slot(b, slot)
            from cdc.clients.kafka import KafkaAdmin
            KafkaAdmin(b.s.kafka_bootstrap).delete_topic(topic)
    _, ts = b.lg.probe()           # the mirror catches up before anything else runs
    w = ProbeWatcher(b.s.kafka_bootstrap, b.flat)
    w.wait_for(ts_us(ts), 120)
    w.close()
    return res


def _drop_slot(b: Bench, slot: str) -> None:
    with b.pg() as conn:
        slots.drop_slot_when_idle(conn, slot, 60)
        conn.execute(f"DROP PUBLICATION IF EXISTS {slot}")
