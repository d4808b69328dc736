"""Tuning: Debezium's `poll.interval.ms` at 50 ms instead of its 500 ms default.

The template does not set it, and when the connector task's queue is empty it sleeps a whole
poll interval before looking again: on a lightly loaded pipeline that sleep, not any work, is
most of the freshness (the sawtooth in the plot, where the 500 ms poll cycle beats against the
load's transactions). This run sets only that key on the source connector (`set_connector`),
then measures freshness at 1,000 changes/s (12 s, 20 s in a full run) and 10 single changes on
the idle pipeline, against (c) as the baseline. The override stays on for the sink-guarantee
runs (`bench.sink_guarantee`) and is removed by `undo` after them.
"""

from __future__ import annotations

from typing import Any

from bench import freshness
from bench.harness import Bench
from bench.overrides import set_connector

NAME = "debezium poll.interval.ms=50"


def run(b: Bench, duration: float) -> dict[str, Any]:
    base = (b.out.get("freshness_1000") or {}).get("freshness", {}).get("p99_s")
    base_single = b.out.get("single_change")
    set_connector(b, {"poll.interval.ms": "50"})
    r = freshness.run(b, "tune_poll50", b.flat, 1000, duration)
    r["single_change"] = freshness.single_change(b, b.flat, 10)
    r["baseline_p99_s"] = base
    r["baseline_single_change"] = base_single
    r["override"] = {"connector": {"poll.interval.ms": "50"}}
    return r


def undo(b: Bench) -> None:
    set_connector(b, {"poll.interval.ms": None})     # back to the template defaults
