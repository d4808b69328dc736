"""Parallel COPY readers -> one Kafka producer: a table's rows into the flat topic, fast.

The table's heap is split into ranges of pages; `workers` threads each take the next range
and run ``COPY (<flat_sql.select> WHERE ctid in range) TO STDOUT`` (a TID range scan: each
range is read once, from disk order). Postgres renders the key and value JSON text
(cdc.mapping.flat_sql), so a row costs Python one split, one unescape when it holds a
backslash (COPY's text format doubles it) and one produce(). Kafka partitions by murmur2 over
the key bytes (librdkafka's murmur2_random: the Java producer's default for keyed records, as
Flink's 'sink.partitioner' = 'default' uses), so every record of a key lands in the
partition the flatten job writes it to.

Memory is bounded whatever the table size: COPY streams row by row, and the producer's queue
holds at most QUEUE_KBYTES (produce() waits for deliveries when it is full). Threads, not
processes: on the 2-core build machine (2M rows, 6 columns, the box otherwise idle) this module
read and produced 242k rows/s with 1 reader, 257k with 2, 253k with 4, and an early form of the
query in 2 processes was no faster than in 2 threads (239k vs 240k): the two cores are the limit
(Postgres rendering JSON, Kafka, this process), not the reader count. WORKERS = 2 keeps one
reader busy while the other waits on I/O.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.core.errors import CdcError
from cdc.mapping import flat_sql
from cdc.postgres import catalog

WORKERS = 2
CHUNK_PAGES = 4096                 # 32 MiB of heap per range at most
MIN_CHUNK_PAGES = 128
QUEUE_KBYTES = 64 * 1024           # the producer's buffer (librdkafka queue.buffering.max.kbytes)
PRODUCER_CONFIG = {
    "partitioner": "murmur2_random", "compression.type": "lz4", "linger.ms": 50, "batch.size": 1_000_000,
    "acks": "all", "enable.idempotence": True, "queue.buffering.max.messages": 200_000,
    "queue.buffering.max.kbytes": QUEUE_KBYTES, "delivery.report.only.error": True, "log_level": 0,
}
TICK_ROWS = 16_384                 # a reader adds its rows to the counters (and polls) this often


class LoadError(CdcError):
    pass


@dataclass
class Counters:
    rows: int = 0                  # rows read (and produced) so far
    dead_letters: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """Where the rows go and how a bad row is written (cdc.mapping.flat_sql.as_dead_row)."""
    bootstrap: str
    flat_topic: str
    dead_topic: str
    key_fields: list[str]          # the mirror's key fields, in key order
    key_columns: list[str]         # the same as Postgres column names
    seq_base: int


def page_ranges(pages: int, chunk_pages: int = CHUNK_PAGES, workers: int = WORKERS) -> list[tuple[int, int | None]]:
    """[lo, hi) page ranges covering the heap; the last one open-ended (pages added since).
    At most chunk_pages each, and small enough that every reader gets about four (a reader
    that finishes early takes the next), but not below MIN_CHUNK_PAGES."""
    size = max(1, min(chunk_pages, max(MIN_CHUNK_PAGES, -(-pages // (4 * max(1, workers))))))
    starts = list(range(0, max(pages, 1), size))
    return [(lo, starts[i + 1] if i + 1 < len(starts) else None) for i, lo in enumerate(starts)]


def heap_pages(conn: Any, schema: str, table: str) -> int:
    row = conn.execute("SELECT pg_relation_size(format('%%I.%%I', %s::text, %s::text)::regclass) / "
                       "current_setting('block_size')::int", (schema, table)).fetchone()
    return int(row[0]) if row else 0


def run(dsn: str, query: str, ranges: list[tuple[int, int | None]], target: Target, *, workers: int = WORKERS,
        on_tick: Callable[[Counters], None] | None = None, tick_s: float = 1.0,
        producer_config: dict[str, Any] | None = None) -> Counters:
    """Read every range with `workers` COPY readers into the flat topic; returns the counts
    once Kafka acknowledged every record. Raises LoadError on the first failure (the other
    readers stop)."""
    from confluent_kafka import Producer
    counters = Counters(chunks_total=len(ranges))
    todo: queue.Queue[tuple[int, int | None]] = queue.Queue()
    for r in ranges:
        todo.put(r)
    stop = threading.Event()
    lock = threading.Lock()

    def delivered(err: Any, _msg: Any) -> None:      # failures only (delivery.report.only.error)
        if err is not None:
            counters.errors.append(f"kafka: {err}")
            stop.set()

    producer = Producer({"bootstrap.servers": target.bootstrap, **PRODUCER_CONFIG, **(producer_config or {}),
                         "on_delivery": delivered})

    def reader() -> None:
        try:
            with catalog.connect(dsn) as conn, conn.cursor() as cur:
                conn.execute(f"SET TimeZone = '{flat_sql.TIMEZONE}'")
                conn.execute("SET statement_timeout = 0")
                while not stop.is_set():
                    try:
                        lo, hi = todo.get_nowait()
                    except queue.Empty:
                        return
                    _copy_range(cur, flat_sql.ranged(query, lo, hi), producer, target, counters, lock, stop)
                    with lock:
                        counters.chunks_done += 1
        except Exception as exc:  # noqa: BLE001 - reported by run(), which raises
            counters.errors.append(f"{type(exc).__name__}: {exc}")
            stop.set()

    threads = [threading.Thread(target=reader, name=f"cdc-load-{i}", daemon=True) for i in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(tick_s / len(threads))
            producer.poll(0)
            if on_tick:
                on_tick(counters)
        while producer.flush(tick_s) > 0 and not counters.errors:
            if on_tick:
                on_tick(counters)
    except BaseException:
        _halt(stop, threads, producer)
        raise
    if counters.errors:
        _halt(stop, threads, producer)
        raise LoadError(f"the initial load failed: {counters.errors[0]}",
                        hint="see the error; Debezium's snapshot reads the rows instead with `mirror add --load "
                             "debezium` or CDC_INITIAL_LOAD=debezium (resync and rebuilds)")
    if on_tick:
        on_tick(counters)
    return counters


def _halt(stop: threading.Event, threads: list[threading.Thread], producer: Any) -> None:
    """A failed or cancelled load writes nothing more: readers stopped, unsent records dropped."""
    stop.set()
    for t in threads:
        t.join(10)
    try:
        producer.purge()
    except Exception:  # noqa: BLE001 - nothing queued, or the client already closed
        pass


def _copy_range(cur: Any, query: str, producer: Any, target: Target, counters: Counters, lock: threading.Lock,
                stop: threading.Event) -> None:
    """One range: COPY it and produce each row, adding to the counters every TICK_ROWS rows."""
    n = dead = 0
    produce, poll = producer.produce, producer.poll
    with cur.copy(f"COPY ({query}) TO STDOUT") as copy:
        for data in copy:
            line = bytes(data)
            key, value, bad = line[:-1].split(b"\t")
            if b"\\" in value:                   # COPY's text format doubles every backslash
                value = value.replace(b"\\\\", b"\\")
            if b"\\" in key:
                key = key.replace(b"\\\\", b"\\")
            if not key.isascii() or b"\\u" in key:
                key = flat_sql.jackson_key(key)
            if bad != b"\\N":
                value, letter = flat_sql.as_dead_row(value, bad.replace(b"\\\\", b"\\").decode(), target.key_fields,
                                                     target.key_columns, target.seq_base)
                _produce(produce, poll, target.dead_topic, letter, None)
                dead += 1
            if value is not None:
                _produce(produce, poll, target.flat_topic, value, key)
            n += 1
            if n >= TICK_ROWS:
                with lock:
                    counters.rows, counters.dead_letters = counters.rows + n, counters.dead_letters + dead
                n = dead = 0
                poll(0)
                if stop.is_set():
                    raise LoadError("stopped: another reader failed")
    with lock:
        counters.rows, counters.dead_letters = counters.rows + n, counters.dead_letters + dead


def _produce(produce: Callable[..., None], poll: Callable[[float], int], topic: str, value: bytes,
             key: bytes | None) -> None:
    while True:
        try:
            produce(topic, value, key)
            return
        except BufferError:                      # the queue is full: wait for deliveries
            poll(0.05)
