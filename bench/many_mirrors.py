"""f) Many mirrors: what the control plane does with 50 mirrors on one source (10 with `--quick`).

Each mirror adds its table to the source's one connector and starts its own Flink job, so the
question is whether registration stays flat as the include list grows, whether the source
still has exactly one replication slot, and what the stack costs in memory and Flink task
slots. 50 tables of 10 rows are registered sequentially (`add_mirror`, timed one by one);
then slots, publication tables, Flink job and task states, TaskManager slots, which mirrors'
10 rows are in their flat topic 5 s after the last registration, and the stack's RSS are
recorded. All mirrors are removed after (`remove_mirror --drop-data`, timed) and their
tables dropped.
"""

from __future__ import annotations

import time
from typing import Any

from cdc.core import names
from cdc.mirrors import service
from bench.harness import SCHEMA, Bench, log, pct, quiet
from bench.probes import end_offsets
from cdc.stack import manager


def run(b: Bench) -> dict[str, Any]:
    n = 10 if b.quick else 50
    with b.pg() as conn:
        for i in range(n):
            conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.cp_{i:02d}")
            conn.execute(f"CREATE TABLE {SCHEMA}.cp_{i:02d} (id bigint PRIMARY KEY, v text, n int)")
            conn.execute(f"INSERT INTO {SCHEMA}.cp_{i:02d} SELECT g, 'v' || g, g FROM generate_series(1, 10) g")
    per = []
    mirrors: list[str] = []
    t0 = time.monotonic()
    for i in range(n):
        t = time.monotonic()
        rec = service.add_mirror(b.ctx, SCHEMA, f"cp_{i:02d}", progress=quiet)
        per.append(round(time.monotonic() - t, 2))
        mirrors.append(rec.name)
    total = time.monotonic() - t0
    with b.pg() as conn:
        slots = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
        pub_tables = conn.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = %s",
                                  (names.slot_name("default"),)).fetchone()[0]
    time.sleep(5)
    jobs = b.ctx.jobmanager.jobs()
    mine = {b.ctx.registry.get_mirror(nm).flink_job_id for nm in mirrors}
    states: dict[str, int] = {}
    for j in jobs:
        if j.id in mine:
            states[j.state] = states.get(j.state, 0) + 1
    tasks_running = 0
    for jid in mine:
        d = b.ctx.jobmanager.job(jid) or {}
        if d.get("vertices") and all(v.get("status") == "RUNNING" for v in d["vertices"]):
            tasks_running += 1
    ov = b.ctx.jobmanager.overview()
    st = manager.status(b.s)
    rows_visible = sum(1 for nm in mirrors if end_offsets(b.s.kafka_bootstrap, names.flat_topic(nm)) >= 10)
    res = {"mirrors": n, "register_total_s": round(total, 1), "per_mirror_s": per,
           "per_mirror_p50_s": pct(per, 50), "per_mirror_max_s": max(per),
           "replication_slots": [list(r) for r in slots], "slots_for_source": sum(1 for r in slots if r[0] == names.slot_name("default")),
           "publication_tables": pub_tables, "flink_job_states": states,
           "flink_jobs_with_all_tasks_running": tasks_running,
           "flink_slots_total": ov.get("slots-total"), "flink_slots_available": ov.get("slots-available"),
           "mirrors_with_rows_in_flat_topic_after_5s": rows_visible,
           "stack_total_rss_bytes": st["total_rss_bytes"],
           "rss_by_process_bytes": {p["name"]: p["rss_bytes"] for p in st["processes"]}}
    log(f"control plane: {n} mirrors in {total:.1f}s (p50 {res['per_mirror_p50_s']:.2f}s), slots {slots}, "
        f"jobs {states}, RSS {st['total_rss_bytes'] / 2**30:.2f} GiB")
    t = time.monotonic()
    for nm in mirrors:
        service.remove_mirror(b.ctx, nm, drop_data=True, progress=quiet)
    res["remove_total_s"] = round(time.monotonic() - t, 1)
    with b.pg() as conn:
        for i in range(n):
            conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.cp_{i:02d}")
    return res
