"""Tuning: the Flink Kafka sink's delivery guarantee, `none` and `exactly-once` against the
template's `at-least-once`.

The guarantee decides when a flat record becomes visible: at-least-once sends records as they
come and only flushes at checkpoints, while exactly-once writes them in a Kafka transaction
that read_committed consumers (Pinot) see only when the checkpoint commits it, so its
freshness should be about the checkpoint interval. Each guarantee gets one freshness run at
1,000 changes/s with the job resubmitted (`set_flink`); `poll.interval.ms=50` from
`bench.poll_interval` is still on, and that run is the baseline, so the poll sawtooth does not
hide the difference. The template's job is restored after.
"""

from __future__ import annotations

from typing import Any

from bench import freshness
from bench.harness import Bench
from bench.overrides import set_flink
from bench.poll_interval import NAME as POLL_50


def run(b: Bench, tun: dict[str, Any], duration: float) -> None:
    """Adds one entry per guarantee to `tun` as soon as it is measured."""
    for dg, extra in (("none", {}),
                      ("exactly-once", {"sink.transactional-id-prefix": "bench-eo",
                                        "properties.transaction.timeout.ms": "600000"})):
        set_flink(b, {"sink.delivery-guarantee": dg, **extra}, {})
        r = freshness.run(b, f"tune_dg_{dg}", b.flat, 1000, duration)
        r["baseline_p99_s"] = tun[POLL_50]["freshness"]["p99_s"]
        r["override"] = {"flink_sink": {"sink.delivery-guarantee": dg, **extra},
                         "connector": {"poll.interval.ms": "50"}}
        r["note"] = "baseline = at-least-once with poll.interval.ms=50"
        tun[f"flink sink.delivery-guarantee={dg}"] = r
    set_flink(b, {}, {})
