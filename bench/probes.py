"""Reading the topics: how many records a topic holds, how many distinct keys, and when a
probe became visible.

Every freshness figure of the harness is measured here: `ProbeWatcher` consumes a topic
(read_committed, as Pinot would) from its current end and notes when each record of the probe
key arrives, so freshness = that moment − the probe's commit time (`updated_at`). "Visible"
therefore means received by a consumer of the topic Pinot would consume; Pinot's own
consume-and-index step is not part of any figure.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

from bench.harness import ts_us
from bench.loadgen import PROBE_KEY


def end_offsets(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets", "log_level": 0,
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def distinct_keys(bootstrap: str, topic: str, timeout: float = 120.0) -> int:
    """Distinct message keys in the topic (reads it whole; keys only, values not parsed)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-keys-{time.time_ns()}", "log_level": 0,
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    keys: set[bytes] = set()
    try:
        md = c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                if m.error() is None:
                    keys.add(m.key())
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
    finally:
        c.close()
    return len(keys)


class ProbeWatcher:
    """Consumes a topic from its current end; remembers (updated_at_us, seen_wall_s) of every
    record of the probe key. seen = when this consumer received it (poll returned)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{time.time_ns()}",
                           "enable.auto.commit": False, "log_level": 0, "fetch.wait.max.ms": 10,
                           "fetch.error.backoff.ms": 10, "isolation.level": "read_committed"})
        md = self.c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        self.c.assign([TopicPartition(topic, p, self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                       for p in parts])
        self.seen: list[tuple[int, float]] = []
        self.records = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self.c.consume(5000, 0.05)
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                self.records += 1
                k = m.key()
                if not k or b"-1" not in k or m.value() is None:
                    continue
                try:
                    if json.loads(k).get("id") != PROBE_KEY:
                        continue
                    u = ts_us(json.loads(m.value()).get("updated_at"))
                except (ValueError, AttributeError):
                    continue
                if u is not None:
                    with self._lock:
                        self.seen.append((u, now))

    def first_seen(self, commit_us: int) -> float | None:
        with self._lock:
            for u, t in self.seen:
                if u >= commit_us:
                    return t
        return None

    def wait_for(self, commit_us: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.first_seen(commit_us)
            if t is not None:
                return t
            time.sleep(0.01)
        return None

    def latencies(self, probes: list[dt.datetime], drain_timeout: float = 60.0) -> tuple[list[float], int, float]:
        """Freshness per probe (seen - commit), missing count, and how long the drain took."""
        t = time.monotonic()
        if probes:
            self.wait_for(ts_us(max(probes)), drain_timeout)
        drain = time.monotonic() - t
        out, missing = [], 0
        for p in probes:
            u = ts_us(p)
            seen = self.first_seen(u)
            if seen is None:
                missing += 1
            else:
                out.append(max(0.0, seen - u / 1e6))
        return out, missing, drain

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.c.close()
