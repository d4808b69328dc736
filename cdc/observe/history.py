"""The last hour of every mirror, for the status page (/ui): a bounded ring of samples per
mirror, taken every few seconds by a background thread of `cdc serve`.

Why in memory: the page shows the recent past of one process; a restart starts empty (the
charts then show fewer points, never invented ones). Long-term history is Prometheus' job
(/metrics). A ring holds at most window/interval samples, so memory stays flat.

Where each figure comes from; a reading that fails is None (and its error is kept for the
page), never a made-up number:
  * freshness_s: cdc.observe.metrics.measure_freshness of the mirror's source (commit ->
    visible in the change topic, or in Pinot where it runs; `via` says which). It is per
    source: every mirror of a source shows the same probe. Only sources with a running
    mirror are probed. The probe also feeds cdc_freshness_seconds on /metrics.
  * records_per_s: growth of the flat topic's end offsets (the records the mirror's Flink
    job wrote, Pinot's input) since the previous sample, divided by the time between them.
  * job_offset / change_offset: the job's consumer group's committed offset (committed at
    each checkpoint) against the change topic's end: how far a rebuild (a replay of the change
    topic, e.g. after a schema change) has come, and the job's lag otherwise.
  * snapshot: Debezium's snapshot notifications (cdc.observe.metrics.mirror_snapshots).
  * wal_retained_bytes: WAL the source's replication slot keeps (cdc.postgres.slots).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cdc.api.models import scrub_text
from cdc.core import names
from cdc.mirrors import service
from cdc.mirrors.registry import MirrorRecord
from cdc.observe import metrics

log = logging.getLogger(__name__)
WINDOW_S = 3600.0


@dataclass(frozen=True)
class Sample:
    t: float                                    # epoch seconds of the sampling pass
    state: str                                  # registry state at that moment
    freshness_s: float | None = None
    freshness_via: str | None = None
    flat_offset: int | None = None
    records_per_s: float | None = None          # set by History.add from the previous sample
    change_offset: int | None = None
    job_offset: int | None = None
    wal_retained_bytes: int | None = None
    snapshot: dict[str, Any] | None = None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (a value that was measured, never interpolated)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class History:
    """mirror name -> ring of Samples; thread-safe (the sampler writes, requests read)."""

    def __init__(self, interval_s: float, window_s: float = WINDOW_S) -> None:
        self.interval_s, self.window_s = interval_s, window_s
        self._maxlen = int(math.ceil(window_s / interval_s)) + 1
        self._rings: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()
        self.sampled_at: float | None = None
        self.errors: dict[str, str] = {}           # "what: whose" -> the last pass's error

    def add(self, name: str, s: Sample) -> None:
        with self._lock:
            ring = self._rings.setdefault(name, deque(maxlen=self._maxlen))
            prev = ring[-1] if ring else None
            if prev is not None and prev.flat_offset is not None and s.flat_offset is not None \
                    and s.flat_offset >= prev.flat_offset and s.t > prev.t:
                s = replace(s, records_per_s=(s.flat_offset - prev.flat_offset) / (s.t - prev.t))
            ring.append(s)

    def finish_pass(self, t: float, mirrors: set[str], errors: dict[str, str]) -> None:
        """Forget removed mirrors; remember when and how the pass went."""
        with self._lock:
            for gone in set(self._rings) - mirrors:
                del self._rings[gone]
            self.sampled_at, self.errors = t, dict(errors)

    def samples(self, name: str, now: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._rings.get(name, ()) if s.t >= now - self.window_s]

    def view(self, name: str, now: float) -> dict[str, Any]:
        """What the page shows of one mirror: the last sample, p50/p99 and averages over the
        window, and the series for the charts."""
        ss = self.samples(name, now)
        last = ss[-1] if ss else None
        fresh = [s.freshness_s for s in ss if s.freshness_s is not None]
        rated = [(a, b) for a, b in zip(ss, ss[1:]) if b.records_per_s is not None]
        records = sum(b.flat_offset - a.flat_offset for a, b in rated)  # type: ignore[operator]
        seconds = sum(b.t - a.t for a, b in rated)
        job = None
        if last is not None and last.change_offset is not None:
            lag = None if last.job_offset is None else max(0, last.change_offset - last.job_offset)
            job = {"offset": last.job_offset, "end": last.change_offset, "lag": lag}
        return {
            "sampled_at": last.t if last else None, "samples": len(ss),
            "freshness": {"p50": percentile(fresh, 50), "p99": percentile(fresh, 99), "samples": len(fresh),
                          "last": last.freshness_s if last else None, "via": last.freshness_via if last else None},
            "throughput": {"last": last.records_per_s if last else None, "records": records if rated else None,
                           "avg": records / seconds if seconds > 0 else None},
            "job": job, "snapshot": last.snapshot if last else None,
            "wal_retained_bytes": last.wal_retained_bytes if last else None,
            "series": {"t": [s.t for s in ss], "freshness_s": [s.freshness_s for s in ss],
                       "records_per_s": [s.records_per_s for s in ss]},
        }


# -- readings -------------------------------------------------------------------------------

def end_offsets(bootstrap: str, topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    """topic -> sum of its partitions' end offsets, with one consumer; absent topics left out."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdc-history-offsets", "enable.auto.commit": False,
                  "log_level": 0})
    try:
        meta = c.list_topics(timeout=timeout).topics
        out: dict[str, int] = {}
        for topic in dict.fromkeys(topics):
            tm = meta.get(topic)
            if tm is not None and tm.error is None and tm.partitions:
                out[topic] = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                                 for p in tm.partitions)
        return out
    finally:
        c.close()


def committed_offsets(bootstrap: str, groups: dict[str, str], timeout: float = 10.0) -> dict[str, int]:
    """consumer group -> sum of its committed offsets on its topic (groups without any left out)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    out: dict[str, int] = {}
    for group, topic in groups.items():
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
        got = [tp.offset for tp in fut.result(timeout).topic_partitions or [] if tp.topic == topic and tp.offset >= 0]
        if got:
            out[group] = sum(got)
    return out


@dataclass
class Readers:
    """The functions a sampling pass calls (tests pass fakes)."""

    freshness: Callable[[service.Context, str, float], metrics.FreshnessSample] = \
        lambda ctx, source, timeout: metrics.measure_freshness(ctx, source, timeout=timeout)
    wal: Callable[[service.Context, Any], "int | None"] = metrics.slot_wal_retained
    snapshots: Callable[[service.Context, list[MirrorRecord]], dict[str, Any]] = metrics.mirror_snapshots
    end_offsets: Callable[[str, list[str]], dict[str, int]] = end_offsets
    committed: Callable[[str, dict[str, str]], dict[str, int]] = committed_offsets


def job_group(rec: MirrorRecord) -> str:
    """The consumer group the mirror's Flink job reads the change topic with."""
    return rec.deployment.group_id if rec.deployment else names.flink_group(rec.name)


@dataclass
class _Pass:
    """One sampling pass: readings that fail leave None and an error, the pass goes on."""

    errors: dict[str, str] = field(default_factory=dict)

    def read(self, what: str, fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - any system may be down; the page says which
            # scrubbed like every API answer: a libpq or HTTP error can carry a DSN or a token
            self.errors[what] = scrub_text((str(exc).splitlines() or [type(exc).__name__])[0])[:300]
            return default


class Sampler:
    """Samples every mirror every `interval_s` on a daemon thread, into `history`."""

    def __init__(self, ctx_factory: Callable[[], service.Context], interval_s: float = 10.0, *,
                 readers: Readers | None = None, probe_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx_factory, self.interval_s = ctx_factory, interval_s
        self.history = History(interval_s)
        self.readers, self.probe_timeout_s, self.clock = readers or Readers(), probe_timeout_s, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> float:
        t, p, r = self.clock(), _Pass(), self.readers
        ctx = self.ctx_factory()
        try:
            mirrors = ctx.registry.list_mirrors()
            fresh: dict[str, metrics.FreshnessSample | None] = {}
            wal: dict[str, int | None] = {}
            for src in sorted({m.source for m in mirrors}):
                if any(m.source == src and m.state == "running" for m in mirrors):
                    fresh[src] = p.read(f"freshness: {src}", lambda: r.freshness(ctx, src, self.probe_timeout_s))
                wal[src] = p.read(f"slot WAL: {src}", lambda: r.wal(ctx, service.get_source(ctx, src)))
            snaps = p.read("snapshots", lambda: r.snapshots(ctx, mirrors), {})
            boot = ctx.settings.kafka_bootstrap
            change = {m.name: names.change_topic(m.source, m.schema_name, m.table_name) for m in mirrors}
            ends = p.read("topic offsets", lambda: r.end_offsets(
                boot, [names.flat_topic(m.name, m.generation) for m in mirrors] + list(change.values())), {})
            jobs = p.read("job offsets", lambda: r.committed(boot, {job_group(m): change[m.name] for m in mirrors}), {})
            for m in mirrors:
                f, snap = fresh.get(m.source), snaps.get(m.name)
                self.history.add(m.name, Sample(
                    t=t, state=m.state, freshness_s=f.seconds if f else None, freshness_via=f.via if f else None,
                    flat_offset=ends.get(names.flat_topic(m.name, m.generation)), change_offset=ends.get(change[m.name]),
                    job_offset=jobs.get(job_group(m)), wal_retained_bytes=wal.get(m.source),
                    snapshot=_snapshot_dict(snap)))
            self.history.finish_pass(t, {m.name for m in mirrors}, p.errors)
        finally:
            ctx.close()
        return t

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - e.g. the registry is locked: try again next time
                log.warning("history sampling pass failed", exc_info=True)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cdc-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _snapshot_dict(p: Any) -> dict[str, Any] | None:
    if p is None:
        return None
    d = p.as_dict() if hasattr(p, "as_dict") else asdict(p)
    return {k: d.get(k) for k in ("state", "kind", "rows", "estimate", "reason")}
