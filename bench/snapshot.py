"""b) Snapshot: rows/s from `add_mirror` of a populated table to all its rows in the flat topic.

Adding a mirror to a table that already holds data is the other thing users wait for, and its
rate decides how long a large table takes to appear. The table (1,000,000 rows, 200k with
`--quick`) is COPYed first and the COPY is not timed. The source's connector already streams
the freshness mirror's table, so this is Debezium's *incremental* snapshot (signal), the path
of every mirror but a source's first. The change and flat topics' end offsets are polled every
0.5 s (the timeline tells whether Flink kept pace with Debezium), then the distinct keys of the
whole flat topic are counted to confirm every row arrived, not just as many records. The
mirror and table are removed after, so the run can be repeated (see `bench.snapshot_chunk`).
"""

from __future__ import annotations

import time
from typing import Any

from cdc.core import names
from cdc.mirrors import service
from bench.harness import SCHEMA, Bench, CpuWindow, log, quiet
from bench.probes import distinct_keys, end_offsets
from bench.workload import copy_rows


def run(b: Bench, rows: int, path_note: str = "") -> dict[str, Any]:
    t = time.monotonic()
    copy_rows(b.dsn, SCHEMA, "snap", rows, seed=31)
    copy_s = time.monotonic() - t
    log(f"snapshot: {rows:,} rows COPYed in {copy_s:.1f}s; add_mirror")
    topic = names.flat_topic(f"{SCHEMA}_snap")
    ctopic = names.change_topic("default", SCHEMA, "snap")
    timeline = []
    with CpuWindow(b.s) as cpu:
        t = time.monotonic()
        rec = service.add_mirror(b.ctx, SCHEMA, "snap", progress=quiet)
        add_s = time.monotonic() - t
        first = None
        while True:
            n = end_offsets(b.s.kafka_bootstrap, topic)
            c = end_offsets(b.s.kafka_bootstrap, ctopic)
            el = time.monotonic() - t
            timeline.append((round(el, 1), c, n))
            if n and first is None:
                first = el
            if n >= rows:
                break
            if el > (240 if not b.quick else 120):
                b.out["notes"].append(f"snapshot stopped waiting at {el:.0f}s with {n} of {rows} rows")
                b.out["notes"].append("snapshot rows/s then counts only the rows that arrived")
                break
            time.sleep(0.5)
        total = time.monotonic() - t
    keys = distinct_keys(b.s.kafka_bootstrap, topic)
    res = {
        "rows": rows, "copy_s": round(copy_s, 1), "add_mirror_call_s": round(add_s, 1),
        "first_row_s": round(first or 0, 1), "all_rows_s": round(total, 1), "flat_records": n,
        "distinct_keys_in_flat_topic": keys, "rows_per_s": round(min(n, rows) / total),
        "path": "incremental snapshot (signal): the connector already streams another table of the source"
                + path_note,
        "cpu_pct_of_one_core": cpu.result, "timeline_s_change_flat": timeline[:: max(1, len(timeline) // 40)]}
    log(f"snapshot: {n:,} records, {keys:,} distinct keys in {total:.1f}s = {min(n, rows) / total:,.0f} rows/s")
    service.remove_mirror(b.ctx, rec.name, drop_data=True, progress=quiet)
    with b.pg() as conn:
        conn.execute(f"DROP TABLE {SCHEMA}.snap")
    time.sleep(3)
    return res
