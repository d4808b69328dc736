"""c) Freshness: commit in Postgres -> record visible in the mirror's flat topic.

Freshness is the figure the pipeline exists for, and the peer, the sustained steps and the
freshness tuning runs are the same measurement with one thing changed, so it lives here:

* `mirror_up` creates the freshness mirror (a 20k-row `bench.fresh` table, the source's first
  mirror, so Debezium's initial snapshot) and calibrates LoadGen's `batch_per_tx` for
  1,000 changes/s with probes on, as in the measured runs.
* `run` loads the table at a rate (LoadGen, or `BulkGen` for the sustained steps) while
  `LoadGen.probe()` upserts the probe key every 0.2 s with `updated_at = clock_timestamp()`;
  a `ProbeWatcher` on the topic gives each probe's freshness. It also records CPU per process
  and, at the end of the load, how far Debezium (unconfirmed WAL) and Flink (change − flat
  records) are behind, to tell which stage a slow run waited on.
* `single_change` is the floor: one probe at a time on an idle pipeline, where freshness is
  the pipeline's own delays (Debezium's poll interval above all) and not queueing.
"""

from __future__ import annotations

import random
import time
from typing import Any

from cdc.core import names
from cdc.mirrors import service
from bench.harness import (FRESH_ROWS, FRESH_TABLE, MIX, SCHEMA, Bench, CpuWindow, log, quiet, secs, summary,
                           ts_us)
from bench.cpu_profile import StageProfile
from bench.loadgen import LoadGen
from bench.probes import ProbeWatcher, end_offsets
from bench.workload import BulkGen


def mirror_up(b: Bench) -> None:
    b.lg = LoadGen(b.dsn, SCHEMA, FRESH_TABLE, seed=21, mix=MIX)
    b.lg.create_table(FRESH_ROWS)
    b.lg.probe()
    t = time.monotonic()
    rec = service.add_mirror(b.ctx, SCHEMA, FRESH_TABLE, progress=quiet)
    b.mirror = rec.name
    b.flat = names.flat_topic(rec.name)
    b.change = names.change_topic("default", SCHEMA, FRESH_TABLE)
    while end_offsets(b.s.kafka_bootstrap, b.flat) < FRESH_ROWS + 1:
        if time.monotonic() - t > 180:
            raise RuntimeError(f"the {FRESH_ROWS}-row snapshot of {SCHEMA}.{FRESH_TABLE} did not arrive in 180 s")
        time.sleep(0.5)
    b.out["fresh_mirror"] = {"table": f"{SCHEMA}.{FRESH_TABLE}", "rows": FRESH_ROWS,
                             "add_to_snapshot_visible_s": round(time.monotonic() - t, 1),
                             "note": "first mirror of the source: Debezium initial snapshot"}
    log(f"mirror {b.mirror} live ({b.out['fresh_mirror']['add_to_snapshot_visible_s']} s incl. snapshot)")
    # Warm-up (JIT, connections) and pick LoadGen's batch_per_tx for 1,000/s.
    w = ProbeWatcher(b.s.kafka_bootstrap, b.flat)
    for n in (20, 50, 100, 200):       # with probes on, as in the measured runs
        st = b.lg.run(1000, 6, batch_per_tx=n, probe_every_s=0.2)
        b.batch_1000 = n
        if st.achieved_rate >= 980:
            break
    _, ts = b.lg.probe()
    w.wait_for(ts_us(ts), 60)
    w.close()
    log(f"warm-up done; LoadGen batch_per_tx={b.batch_1000} for 1,000/s")


def run(b: Bench, name: str, topic: str, rate: float = 1000, duration: float = 30,
        gen: str = "loadgen", batch: int | None = None, profile: bool = False) -> dict[str, Any]:
    """One run: load at `rate` for `duration` s with probes every 0.2 s; freshness of every
    probe at `topic`; CPU per process; Debezium (WAL) and Flink (topic) lag at the end.
    `profile`: also CPU per stage (`bench.cpu_profile`, BulkGen runs only) over the load."""
    w = ProbeWatcher(b.s.kafka_bootstrap, topic)
    time.sleep(0.3)
    flat0, change0 = end_offsets(b.s.kafka_bootstrap, b.flat), end_offsets(b.s.kafka_bootstrap, b.change)
    prof = None
    with CpuWindow(b.s) as cpu:
        if gen == "loadgen":
            lg = LoadGen(b.dsn, SCHEMA, FRESH_TABLE, seed=random.randrange(1 << 30), mix=MIX)
            st = lg.run(rate, duration, batch_per_tx=batch or b.batch_1000, probe_every_s=0.2)
            lg.close()
            stats = {"target_rate": rate, "changes": st.changes, "transactions": st.transactions,
                     "elapsed_s": st.elapsed_s, "achieved_rate": st.achieved_rate,
                     "max_lag_behind_schedule_s": st.max_lag_behind_schedule_s}
            probes = [p.commit_ts for p in st.probes]
        else:
            bg = BulkGen(b.dsn, SCHEMA, FRESH_TABLE, seed=random.randrange(1 << 30))
            batch = batch or max(10, int(rate / 20))
            prof = StageProfile(b.s, loadgen_backends={bg.conn.info.backend_pid}).start() if profile else None
            res = bg.run(rate, duration, batch, probe=b.lg)
            if prof:
                prof.stop()
            bg.close()
            probes = res.pop("probes")
            stats = res
        lag = lags(b)
    lat, missing, drain = w.latencies(probes, drain_timeout=60)
    records = w.records
    w.close()
    out = {"generator": gen, "batch_per_tx": batch or b.batch_1000, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                       for k, v in stats.items()},
           "freshness": summary(lat, missing), "drain_after_load_s": round(drain, 2),
           "records_seen_on_topic": records, "lag_at_end": lag, "cpu_pct_of_one_core": cpu.result,
           "flat_records": end_offsets(b.s.kafka_bootstrap, b.flat) - flat0,
           "change_records": end_offsets(b.s.kafka_bootstrap, b.change) - change0}
    if prof:
        out["stage_profile"] = prof.result
    b.runs[name] = {"probe_ts": [ts_us(p) / 1e6 for p in probes], "lat": lat, "topic": topic}
    f = out["freshness"]
    log(f"{name}: {out['achieved_rate']:.0f}/s achieved; freshness p50 {secs(f['p50_s'])} p95 {secs(f['p95_s'])} "
        f"p99 {secs(f['p99_s'])} (n={f['samples']}, missing {missing}); cpu {cpu.result}")
    return out


def lags(b: Bench) -> dict[str, Any]:
    """WAL the source slot has not confirmed (Debezium behind) and change - flat records
    (Flink behind), sampled at the end of the load."""
    out: dict[str, Any] = {}
    with b.pg() as conn:
        rows = conn.execute("SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                            "FROM pg_replication_slots").fetchall()
    out["slot_unconfirmed_wal_bytes"] = {r[0]: int(r[1] or 0) for r in rows}
    out["change_minus_flat_records"] = (end_offsets(b.s.kafka_bootstrap, b.change)
                                        - end_offsets(b.s.kafka_bootstrap, b.flat))
    return out


def single_change(b: Bench, topic: str, n: int = 20) -> dict[str, Any]:
    w = ProbeWatcher(b.s.kafka_bootstrap, topic)
    time.sleep(0.5)
    lat, missing = [], 0
    rng = random.Random(5)
    for _ in range(n):
        _, ts = b.lg.probe()
        seen = w.wait_for(ts_us(ts), 20)
        if seen is None:
            missing += 1
        else:
            lat.append(seen - ts_us(ts) / 1e6)
        time.sleep(rng.uniform(0.2, 0.6))     # no load: the pipeline is idle between probes
    w.close()
    res = summary(lat, missing)
    log(f"single change ({topic}): p50 {secs(res['p50_s'])} p95 {secs(res['p95_s'])}")
    return res
