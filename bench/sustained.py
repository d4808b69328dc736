"""d) Sustained: the highest write rate the pipeline holds, as a fraction of the ceiling (a).

A freshness figure at one rate says nothing about headroom; this steps the rate up (500, 1k,
2k, … 32k changes/s, 30 s each, 15 s with `--quick`) until a step fails, and reports the last
one held: achieved ≥ 95% of the target, every probe seen, freshness p99 < 5 s. The steps use
`BulkGen` (set-based, same mix), since LoadGen's one statement per change tops out around
2k/s. Each step also records the Flink job's backpressure and, via `bench.freshness.run`,
the slot's unconfirmed WAL and change − flat records at the end, which together say whether
Debezium/Connect or Flink was the bottleneck when a step failed. Runs are short in the
interest of time: long runs could show GC or segment effects these do not.
"""

from __future__ import annotations

import time
from typing import Any

from bench import freshness
from bench.cpu_profile import table
from bench.harness import Bench


def run(b: Bench, rates: list[int], duration: float, profile: bool = False) -> dict[str, Any]:
    """`profile`: CPU per stage of every step (bench/cpu_profile.py); the tables of the highest
    held step and of the first failing one are printed."""
    steps = []
    best = 0
    for r in rates:
        res = freshness.run(b, f"step_{r}", b.flat, r, duration, gen="bulk", profile=profile)
        f = res["freshness"]
        held = (f["p99_s"] is not None and f["p99_s"] < 5 and f["missing"] == 0
                and res["achieved_rate"] >= 0.95 * r)
        res["held"] = held
        res["backpressure"] = backpressure(b)
        steps.append(res)
        if held:
            best = r
        else:
            break
        time.sleep(2)
    if profile:
        for st in [x for x in steps if x["held"]][-1:] + [x for x in steps if not x["held"]]:
            print(table(st.get("stage_profile", {}), f"step {st['target_rate']}/s "
                        f"({'held' if st['held'] else 'NOT held'}, achieved {st['achieved_rate']:.0f}/s, "
                        f"p99 {st['freshness']['p99_s']})"), flush=True)
    return {"step_duration_s": duration, "steps": steps, "max_held_rate": best,
            "criterion": "achieved >= 95% of target, every probe seen, freshness p99 < 5 s"}


def backpressure(b: Bench) -> dict[str, Any]:
    rec = b.ctx.registry.get_mirror(b.mirror)
    jm = b.ctx.jobmanager.http
    try:
        job = jm.get(f"/jobs/{rec.flink_job_id}")
        out = {}
        for v in job.get("vertices", []):
            bp = jm.get(f"/jobs/{rec.flink_job_id}/vertices/{v['id']}/backpressure") or {}
            subs = bp.get("subtasks") or [{}]
            out[v["name"][:60]] = {"level": bp.get("backpressureLevel"),
                                   "ratio": subs[0].get("ratio"), "busyRatio": subs[0].get("busyRatio"),
                                   "idleRatio": subs[0].get("idleRatio")}
        return out
    except Exception as exc:  # informative only
        return {"error": str(exc)[:200]}
