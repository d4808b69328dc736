"""Tuning: Debezium's `incremental.snapshot.chunk.size` at 8192 for the snapshot (b).

The incremental snapshot is Debezium-bound (the flat topic keeps up with the change topic,
Connect is not CPU-saturated): it reads the table in chunks, each bracketed by watermark
signal writes, so bigger chunks mean fewer round trips. 200k rows are snapshotted with the
template defaults (in a full run; `--quick` reuses (b), itself 200k rows) and again with the
override on the source connector; the ratio compares rows/s end to end, so compare
`first_row_s` and the timeline in the JSON before reading it as a faster steady rate.
"""

from __future__ import annotations

from typing import Any

from bench import snapshot
from bench.harness import Bench
from bench.overrides import set_connector

DEFAULTS = "snapshot 200k, template defaults"


def run(b: Bench, tun: dict[str, Any]) -> None:
    """Adds the default and the overridden run to `tun` as soon as each is measured."""
    if not b.quick:
        tun[DEFAULTS] = snapshot.run(b, 200_000)
    set_connector(b, {"incremental.snapshot.chunk.size": "8192"})
    r = snapshot.run(b, 200_000, "; override incremental.snapshot.chunk.size=8192")
    r["baseline_rows_per_s"] = (tun.get(DEFAULTS) or b.out["snapshot"])["rows_per_s"]
    r["override"] = {"connector": {"incremental.snapshot.chunk.size": "8192"}}
    tun["debezium incremental.snapshot.chunk.size=8192"] = r
    set_connector(b, {"incremental.snapshot.chunk.size": None})
