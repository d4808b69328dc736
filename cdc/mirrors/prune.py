"""Remove from mirrors the keys Postgres no longer has, when no DELETE event exists for them.

Every ordinary removal of a row is a DELETE that Debezium streams. Two are not:
* rows deleted while the source's replication slot was lost (cdc.mirrors.slot_repair): their
  WAL is gone, and a fresh snapshot only re-reads the rows that still exist;
* rows of a partition detached from (or dropped out of) a mirrored partitioned table
  (cdc.mirrors.partitions): they leave `SELECT * FROM root` without any DELETE.

How, per mirror of one source:
1. The source's connector is stopped (PUT /connectors/<c>/stop, then STOPPED: its task is
   gone), so nothing but this step writes the change topics. Changes committed meanwhile
   wait in the replication slot.
2. The mirror's state is read from its flat topic -- Pinot's input; per key the record with
   the highest __seq wins, as in Pinot's FULL upsert -- once it holds the record of the change
   topic's last offset (the Flink job has caught up with everything written so far). __seq is
   the record's change-topic offset (above the topic's epoch, cdc.mirrors.topic_epoch).
3. Postgres' keys are read in one statement (one snapshot, instant t0).
4. For every key the mirror shows but Postgres lacks at t0, a delete is appended to the change
   topic: the change event the mirror's record came from (found by its __seq, which is its
   change-topic offset) turned into a Debezium delete (op "d", before = that row, after =
   null), under the same record key, so the compacted topic keeps it as the key's latest
   record. The flatten job turns it into a delete like any other, with a higher __seq than
   every earlier record of the key. Such events carry the header cdc-synthetic: prune.
   A key whose record the copy load wrote (cdc.mirrors.initial_load) has no change event: its
   delete goes to the flat topic directly (_delete_loaded says why that is exact too).
5. The connector is resumed.

Why this is exact: the connector was stopped before t0 and resumes after the deletes, so every
change not yet in the topic at step 2 -- whether committed before or after t0 -- is appended
after the deletes, in commit order. A key absent at t0 and unchanged since is absent in
Postgres, and is now deleted in the mirror; a key changed after t0 ends at its last change,
which comes after our delete and wins (higher __seq). Keys Postgres has are never touched.
Deleting through the change topic, not the flat topic, keeps the flat topic's invariant that
a key's last record is its newest (a Flink replay re-creates our delete in order).
Limit: a connector that crashes (not a graceful stop) may re-emit events it had sent before
(Connect is at-least-once): an insert re-emitted after our delete, of a key whose later
removal left no event at all, would return. A graceful stop commits its offsets first.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from psycopg import sql

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.core.models import Source, TableInfo
from cdc.mapping import canonical, render
from cdc.mapping.typemap import TS_NEG_INFINITY, TS_POS_INFINITY, TypeMapping, map_table
from cdc.mirrors import initial_load, snapshot
from cdc.mirrors import state as mirror_state
from cdc.mirrors.context import Context
from cdc.mirrors.registry import MirrorRecord
from cdc.mirrors.sources import source_dsn
from cdc.postgres import catalog

Progress = Callable[[str], None]
Key = tuple[Any, ...]
HEADER = ("cdc-synthetic", b"prune")
# __seq = epoch << SEQ_SHIFT | change-topic offset (cdc.mapping.render; the epoch counts change-topic
# incarnations, 0 for the first)
SEQ_SHIFT = int(getattr(render, "SEQ_EPOCH_SHIFT", 40))
SEQ_OFFSET = (1 << SEQ_SHIFT) - 1
CATCH_UP_TIMEOUT = 180.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prune(ctx: Context, src: Source, recs: list[MirrorRecord], progress: Progress = _say,
          catch_up_timeout: float = CATCH_UP_TIMEOUT) -> dict[str, int]:
    """Steps 1-5 of the module doc for these mirrors of `src`; mirror name -> keys deleted."""
    cname = names.connector_name(src.name)
    exists = ctx.connect.status(cname) is not None
    if exists:
        snapshot.wait_idle(ctx, cname, progress)      # a snapshot is not stopped half-way
        progress(f"connect: stopping {cname} while keys Postgres no longer has are removed")
        ctx.connect.stop(cname)
        _wait_stopped(ctx, src, cname)
    try:
        return {rec.name: prune_one(ctx, src, rec, progress, catch_up_timeout) for rec in recs}
    finally:
        if exists:
            ctx.connect.resume(cname)
            progress(f"connect: {cname} resumed")


def _wait_stopped(ctx: Context, src: Source, cname: str, timeout: float = 90.0) -> None:
    """STOPPED, and the task really gone: the replication slot has no walsender any more
    (Debezium's task closes its replication connection when it stops)."""
    ctx.connect.wait_state(cname, "STOPPED", timeout=timeout)
    deadline = time.monotonic() + timeout
    with catalog.connect(source_dsn(ctx, src)) as conn:
        while conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                           (names.slot_name(src.name),)).fetchone() in ((True,),):
            if time.monotonic() > deadline:
                raise CdcError(f"connector {cname} is STOPPED but its slot is still in use after {timeout:.0f}s")
            time.sleep(0.5)


def prune_one(ctx: Context, src: Source, rec: MirrorRecord, progress: Progress = _say,
              catch_up_timeout: float = CATCH_UP_TIMEOUT) -> int:
    """Steps 2-4 for one mirror; the caller has stopped the connector. Returns keys deleted."""
    from cdc.clients.kafka import KafkaAdmin
    spec, dsn = rec.spec, source_dsn(ctx, src)
    table = rec.deployment.table if rec.deployment is not None else None
    if table is None:
        with catalog.connect(dsn) as conn:
            table = catalog.introspect(conn, spec.schema_name, spec.table_name)
    maps = {m.column: m for m in map_table(table)}
    keys = render.key_columns(spec, table)
    masked = sorted(set(keys) & set(getattr(getattr(spec, "rules", None), "mask_columns", None) or {}))
    if masked:
        raise CdcError(f"{spec.name}: key column(s) {masked} are masked in the mirror, so its keys cannot be compared "
                       "with Postgres' and rows Postgres no longer has cannot be found",
                       hint=f"cdc mirror remove {spec.name} --drop-data, then add it again")
    ctopic = names.change_topic(spec.source, spec.schema_name, spec.table_name)
    end = KafkaAdmin(ctx.settings.kafka_bootstrap).end_offsets(ctopic).get(0, 0)
    group = rec.deployment.group_id if rec.deployment is not None else names.flink_group(spec.name)
    epoch = int(getattr(rec.deployment, "seq_epoch", 0) or 0)       # the change topic's incarnation now
    flat = names.flat_topic(spec.name, rec.generation)
    latest = _mirror_state(ctx.settings.kafka_bootstrap, flat, keys, maps, end, epoch, catch_up_timeout,
                           lambda: _committed(ctx.settings.kafka_bootstrap, group, ctopic))
    present = {k: seq for k, (seq, deleted) in latest.items() if not deleted}
    in_pg = _pg_keys(dsn, table, keys, maps)
    extra = {k: seq for k, seq in present.items() if k not in in_pg}
    progress(f"{spec.name}: mirror {len(present)} keys, Postgres {len(in_pg)}; {len(extra)} key(s) to delete")
    if extra:
        older = [k for k, seq in extra.items() if seq >> SEQ_SHIFT != epoch]
        if older:         # written from an earlier incarnation of the change topic (cdc.mirrors.topic_epoch)
            raise CdcError(f"{spec.name}: {len(older)} key(s) to remove (e.g. {older[0]}) were last changed in an "
                           "earlier incarnation of the change topic, whose events are gone",
                           hint=f"cdc mirror remove {spec.name} --drop-data, then add it again")
        boot = ctx.settings.kafka_bootstrap
        records = _change_records(boot, ctopic, sorted({seq & SEQ_OFFSET for seq in extra.values()}))
        # a winning record whose __seq names the copy load's marker has no change event of its own
        loaded = {k: seq for k, seq in extra.items() if initial_load.is_marker(records[seq & SEQ_OFFSET][1])}
        if loaded:
            raw = _raw_keys(boot, flat, keys, maps, loaded)
            _delete_loaded(boot, spec, table, ctopic, flat, epoch, list(raw.values()))
        _append_deletes(boot, ctopic, {off: r for off, r in records.items() if not initial_load.is_marker(r[1])})
    return len(extra)


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The offset the flatten job's consumer group committed on the change topic: Flink commits
    it when a checkpoint completes, and its at-least-once sink has flushed everything read
    before that checkpoint, so every record below it is in the flat topic (or, for a record the
    job could not convert, in the dead-letter topic)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 0})
    try:
        return int(c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        c.close()


def _mirror_state(bootstrap: str, flat: str, keys: list[str], maps: dict[str, TypeMapping], end: int, epoch: int,
                  timeout: float, committed: Callable[[], int]) -> dict[Key, tuple[int, bool]]:
    """Canonical key -> (__seq, deleted) of its winning flat record, once the Flink job has
    caught up with the change topic's `end`: the flat topic holds the record of offset end - 1,
    or the job's committed offset reached `end`."""
    deadline = time.monotonic() + timeout
    while True:
        done = end == 0 or committed() >= end
        latest: dict[Key, tuple[int, bool]] = {}
        top = -1
        for _, _, r in mirror_state.flat_records(bootstrap, flat):
            seq = int(r["__seq"])
            if seq >> SEQ_SHIFT == epoch:
                top = max(top, seq & SEQ_OFFSET)
            k = tuple(canonical.flat_value(r.get(maps[c].name), maps[c]) for c in keys)
            if k not in latest or seq >= latest[k][0]:      # Pinot: highest __seq, ties to the later one
                latest[k] = (seq, bool(r.get("__deleted")))
        if done or top >= end - 1:
            return latest
        if time.monotonic() > deadline:
            raise CdcError(f"flat topic {flat} did not catch up with its change topic within {timeout:.0f}s "
                           f"(highest __seq {top}, change topic ends at {end})",
                           hint="is the mirror's Flink job RUNNING? `cdc mirror status NAME`")
        time.sleep(1.0)


def _pg_keys(dsn: str, table: TableInfo, keys: list[str], maps: dict[str, TypeMapping]) -> set[Key]:
    sel = sql.SQL(", ").join(sql.SQL(canonical.pg_select(maps[k], sql.Identifier(k).as_string())) for k in keys)
    q = sql.SQL("SELECT {} FROM {}.{}").format(sel, sql.Identifier(table.schema_name), sql.Identifier(table.table_name))
    with catalog.connect(dsn) as conn, conn.cursor() as cur:
        catalog.exact_loaders(cur, TS_POS_INFINITY, TS_NEG_INFINITY)
        cur.execute("SET TimeZone = 'UTC'")
        return {tuple(canonical.pg_value(v, maps[k]) for k, v in zip(keys, r)) for r in cur.execute(q)}


def _change_records(bootstrap: str, topic: str, offsets: list[int], timeout: float = 120.0
                    ) -> dict[int, tuple[bytes | None, dict[str, Any]]]:
    """offset -> (record key, value) of these offsets of the change topic (one partition)."""
    from confluent_kafka import Consumer, TopicPartition
    want, out = set(offsets), {}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cdc-prune-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "log_level": 0})
    try:
        c.assign([TopicPartition(topic, 0, min(want))])
        deadline, last = time.monotonic() + timeout, max(want)
        while len(out) < len(want) and time.monotonic() < deadline:
            for msg in c.consume(1000, 1.0):
                if msg.error() is None and msg.offset() in want and msg.value():
                    out[msg.offset()] = (msg.key(), json.loads(msg.value()))
                if msg.error() is None and msg.offset() >= last:
                    deadline = 0.0
    finally:
        c.close()
    if missing := want - set(out):
        raise CdcError(f"change topic {topic}: records at offsets {sorted(missing)[:5]} not found",
                       hint="retry; a mirror's latest records are never compacted away")
    return out


def as_delete(value: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A Debezium change event (c, r or u) turned into the delete of its row."""
    source = dict(value.get("source") or {})
    source.update(ts_ms=now_ms, snapshot="false")
    return {"before": value.get("after"), "after": None, "source": source, "op": "d", "ts_ms": now_ms,
            "transaction": None}


def _raw_keys(bootstrap: str, flat: str, keys: list[str], maps: dict[str, TypeMapping],
              want: dict[Key, int]) -> dict[Key, dict[str, Any]]:
    """The key fields, as the flat record holds them, of the record with __seq want[k] of each key."""
    out: dict[Key, dict[str, Any]] = {}
    for _, _, r in mirror_state.flat_records(bootstrap, flat):
        k = tuple(canonical.flat_value(r.get(maps[c].name), maps[c]) for c in keys)
        if want.get(k) == int(r["__seq"]):
            out[k] = {maps[c].name: r.get(maps[c].name) for c in keys}
    return out


def _delete_loaded(bootstrap: str, spec: Any, table: TableInfo, ctopic: str, flat: str, epoch: int,
                   key_rows: list[dict[str, Any]]) -> None:
    """Deletes of keys whose winning record the copy load wrote (cdc.mirrors.initial_load): no
    change event exists to turn into a delete, so the delete goes to the flat topic itself, with
    the load's key bytes (same partition, same compaction key) and __seq = seq_base + the offset
    of a marker appended to the change topic now. The connector is stopped (step 1), so that
    offset is above the loaded rows' and below every later change of the key: the delete wins
    over the loaded row and loses to any later change; a replay of the change topic re-creates
    neither the loaded row nor this delete."""
    from confluent_kafka import Producer

    from cdc.mapping import flat_sql, rules
    start = initial_load.mark(bootstrap, spec, ctopic, epoch)
    kept = set(rules.kept_columns(spec.rules, table, render.key_columns(spec, table)))
    columns = [m.name for m in map_table(table) if m.column in kept]
    now_ms, errors = int(time.time() * 1000), []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "partitioner": "murmur2_random", "log_level": 0})
    for key in key_rows:
        value = {c: key.get(c) for c in columns} | {"__deleted": True, "__seq": start.seq, "__source_ts_ms": now_ms,
                                                    "__op": "d"}
        key_bytes = flat_sql.jackson_key(json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode())
        p.produce(flat, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), key_bytes,
                  on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        p.poll(0)
    if p.flush(60) or errors:
        raise CdcError(f"could not append deletes to {flat}: {errors[:3] or 'flush timed out'}")


def _append_deletes(bootstrap: str, topic: str, records: dict[int, tuple[bytes | None, dict[str, Any]]]) -> None:
    """Each change event (offset -> (key, value) of the change topic) turned into its delete."""
    from confluent_kafka import Producer
    if not records:
        return
    errors: list[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "log_level": 0})
    now_ms = int(time.time() * 1000)
    for off in sorted(records):
        key, value = records[off]
        if value.get("op") == "d" or value.get("after") is None:
            continue                                  # cannot happen for a visible row; never re-delete
        p.produce(topic, key=key, value=json.dumps(as_delete(value, now_ms)).encode(), partition=0,
                  headers=[HEADER], on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
    if p.flush(60) or errors:
        raise CdcError(f"could not append deletes to {topic}: {errors[:3] or 'flush timed out'}")
