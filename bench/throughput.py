"""Streaming throughput at saturation: where the CPU goes per stage, and what tuning changes.

    python -m bench.throughput [--ceiling] [--backlog N] [--plan warmup,baseline,KNOB,baseline,...]
                               [--keep KNOB] [--steps 12000,16000,...] [--skip-sustained] [--keep-up]

Same stack rules as `python -m bench.run` (its own state dir and ports, `Bench`). Two measures:

* **drain** (`drain`): the source connector is paused, N changes of the 30/60/10 mix are written
  (`BulkGen`, 2,000 per transaction), then the connector is resumed and the clock runs until the
  flat topic holds all N. The load generator is idle during that window, so the CPU profile
  (`bench.cpu_profile.StageProfile`) is the pipeline's alone, at saturation, and the rate is
  comparable with the decoding ceiling (a), which also decodes a WAL written beforehand. Rate =
  N / (resume -> last record in the flat topic); `steady` = slope of the flat topic between 10%
  and 90% of N (no task-restart or tail effects). Each knob is a `drain` of its own, between
  two baseline drains of the same run (`--plan`; compare with the adjacent baselines: the box
  is shared, so rates drift). The figure that drifts least is CPU ms per 1,000 changes
  (`cost`), per stage: a knob that saves CPU at one stage shows there whatever else runs.
  A knob that resubmits the Flink job or restarts a JVM gets a warm-up drain (JIT) first.
* **exactness** of every drain: the change topic and the flat topic each grew by exactly N,
  per key the change events' `source.lsn` strictly increase and the flat records' `__seq` strictly
  increase (every change arrives once, in order per key).
* **sustained** (`bench.sustained`, profile on): steps of offered rate with probes, 15 s each;
  held = achieved >= 95%, every probe seen, freshness p99 < 5 s; with the template and again
  with the kept knob (`--keep`), each after 15 single changes on the idle pipeline (what a
  knob costs in latency when there is no load). `--ceiling` measures (a) first, in the same run.

Knobs are applied through `bench.overrides.set_connector` (a PUT of the running connector's
config; Connect's default `connector.client.config.override.policy` is `All`, so
`producer.override.*` keys are accepted) and removed after, never by editing templates.
Output: tables on stdout, bench/results/throughput-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from typing import Any

from cdc.core import names
from cdc.core.settings import Settings
from bench import ceiling, freshness, sustained
from bench.cpu_profile import StageProfile, table
from bench.harness import FRESH_TABLE, RESULTS, SCHEMA, T0, Bench, log, machine
from bench.overrides import _settle, set_connector, set_flink
from bench.workload import BulkGen

KNOBS: dict[str, dict[str, dict[str, str]]] = {
    # Debezium: events per poll() handed to Connect, and the queue between its WAL reader and
    # the task thread (defaults 2048 / 8192; the queue must stay larger than the batch).
    "batch": {"connector": {"max.batch.size": "8192", "max.queue.size": "16384"}},
    "bigqueue": {"connector": {"max.batch.size": "8192", "max.queue.size": "32768"}},
    # Connect's producer for this connector (worker: linger.ms=5, lz4, batch.size 16384 default).
    "producer": {"connector": {"producer.override.linger.ms": "20", "producer.override.batch.size": "262144"}},
    "pbatch": {"connector": {"producer.override.batch.size": "262144"}},
    "nocompress": {"connector": {"producer.override.compression.type": "none"}},
    # The flatten job's Kafka sink producer (Flink's defaults) and Flink's object reuse.
    "flinksink": {"flink_sink": {"properties.linger.ms": "20", "properties.batch.size": "262144",
                                 "properties.compression.type": "lz4"}},
    "objreuse": {"flink_set": {"pipeline.object-reuse": "true"}},
    # Connect's heap (CDC_CONNECT_HEAP, default 768m): the worker is restarted with it.
    "heap2g": {"connect_heap": {"value": "2g"}},
}


def merged(spec: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for k in spec.split("+"):
        for kind, kv in KNOBS[k].items():
            out.setdefault(kind, {}).update(kv)
    return out


def _restart_connect(b: Bench, heap: str) -> None:
    from cdc.stack import manager
    s2 = b.s.model_copy(update={"connect_heap": heap})
    services, _ = manager.plan_services(s2, progress=lambda _m: None)
    svc = next(x for x in services if x.name == "connect")
    svc.stop(60)
    manager.up(s2, progress=lambda _m: None)
    conn = names.connector_name("default")
    time.sleep(3)
    b.ctx.connect.wait_running(conn, timeout=180)
    _settle(b)


def apply(b: Bench, spec: str, undo: bool = False) -> None:
    """Apply a knob (or `a+b`) to the running stack, or take it back to the template."""
    m = merged(spec)
    if "connector" in m:
        set_connector(b, {k: None for k in m["connector"]} if undo else m["connector"])
    if "flink_sink" in m or "flink_set" in m:
        if undo:
            set_flink(b, {}, {})
        else:
            set_flink(b, m.get("flink_sink", {}), m.get("flink_set", {}))
    if "connect_heap" in m:
        _restart_connect(b, b.s.connect_heap if undo else m["connect_heap"]["value"])


class Offsets:
    """End offsets of a topic (sum over partitions), one consumer for many polls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets", "log_level": 0,
                           "enable.auto.commit": False})
        md = self.c.list_topics(topic, timeout=10)
        self.tps = [TopicPartition(topic, p) for p in md.topics[topic].partitions]

    def total(self) -> int:
        return sum(self.c.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in self.tps)

    def close(self) -> None:
        self.c.close()


def _read(bootstrap: str, topic: str, start: dict[int, int]) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record from `start` (partition -> offset) to the end."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{time.time_ns()}", "log_level": 0,
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    out = []
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in start}
        todo = {p for p in start if ends[p] > start[p]}
        c.assign([TopicPartition(topic, p, start[p]) for p in todo])
        deadline = time.monotonic() + 180
        while todo and time.monotonic() < deadline:
            for m in c.consume(20000, 0.5):
                if m.error() is None:
                    out.append((m.key(), m.value()))
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
    finally:
        c.close()
    return out


def _partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.topics[topic].partitions}
    finally:
        c.close()


def exactness(b: Bench, change0: dict[int, int], flat0: dict[int, int], n: int) -> dict[str, Any]:
    """Every change once and in order per key: counts, per-key LSN order (change topic) and
    per-key __seq order (flat topic)."""
    bs = b.s.kafka_bootstrap
    ch = _read(bs, b.change, change0)
    fl = _read(bs, b.flat, flat0)
    bad_lsn = bad_seq = 0
    last: dict[bytes, int] = {}
    for k, v in ch:
        lsn = json.loads(v)["source"]["lsn"]
        if k in last and lsn <= last[k]:
            bad_lsn += 1
        last[k] = lsn
    last = {}
    for k, v in fl:
        seq = json.loads(v)["__seq"]
        if k in last and seq <= last[k]:
            bad_seq += 1
        last[k] = seq
    ok = len(ch) == n and len(fl) == n and bad_lsn == 0 and bad_seq == 0
    return {"ok": ok, "expected": n, "change_records": len(ch), "flat_records": len(fl),
            "keys_out_of_lsn_order": bad_lsn, "keys_out_of_seq_order": bad_seq}


def cost(p: dict[str, Any], changes: int) -> dict[str, Any]:
    """CPU milliseconds per 1,000 changes: the stack's processes (harness excluded) and per
    pipeline stage. Unlike a rate, this hardly depends on what else runs on the shared cores."""
    if not p or not changes:
        return {}
    tot = sum(v["cpu_s"] for k, v in p["processes"].items() if not k.startswith("bench"))
    return {"cpu_ms_per_1000": round(tot / changes * 1e6, 1),
            "cpu_ms_per_1000_by_stage": {k: round(v * p["window_s"] / changes * 1e6, 1)
                                         for k, v in p["by_stage"].items()}}


def drain(b: Bench, label: str, n: int, check: bool = True) -> dict[str, Any]:
    bs = b.s.kafka_bootstrap
    conn = names.connector_name("default")
    change0, flat0 = _partition_ends(bs, b.change), _partition_ends(bs, b.flat)
    fo, co = Offsets(bs, b.flat), Offsets(bs, b.change)
    base_f, base_c = fo.total(), co.total()
    b.ctx.connect.pause(conn)
    b.ctx.connect.wait_state(conn, "PAUSED", timeout=60)
    time.sleep(1)
    gen = BulkGen(b.dsn, SCHEMA, FRESH_TABLE, seed=int(time.time()))
    t = time.monotonic()
    made = 0
    while made < n:
        made += gen.tx(min(2000, n - made))
    write_s = time.monotonic() - t
    gen.close()
    series: list[tuple[float, int, int]] = []
    prof = StageProfile(b.s)
    prof.start()
    t0 = time.monotonic()
    b.ctx.connect.resume(conn)
    done = None
    while time.monotonic() - t0 < 300:
        f, c = fo.total() - base_f, co.total() - base_c
        series.append((time.monotonic() - t0, c, f))
        if f >= made:
            done = time.monotonic() - t0
            break
        time.sleep(0.2)
    prof.stop()
    fo.close()
    co.close()

    def at(frac: float, col: int) -> float | None:
        return next((s[0] for s in series if s[col] >= frac * made), None)

    t10, t90 = at(0.1, 2), at(0.9, 2)
    c10, c90 = at(0.1, 1), at(0.9, 1)
    res: dict[str, Any] = {
        "label": label, "changes": made, "write_s": round(write_s, 2), "drain_s": round(done, 2) if done else None,
        "rate": round(made / done) if done else None,
        "steady_rate_flat": round(0.8 * made / (t90 - t10)) if t10 is not None and t90 and t90 > t10 else None,
        "steady_rate_change": round(0.8 * made / (c90 - c10)) if c10 is not None and c90 and c90 > c10 else None,
        "first_change_record_s": next((round(s[0], 2) for s in series if s[1] > 0), None),
        "profile": prof.result}
    res.update(cost(prof.result, made))
    if check:
        res["exactness"] = exactness(b, change0, flat0, made)
    log(f"drain {label}: {made} changes in {res['drain_s']}s = {res['rate']}/s (steady flat {res['steady_rate_flat']}/s, "
        f"change {res['steady_rate_change']}/s); exact {res.get('exactness', {}).get('ok')}")
    print(table(prof.result, f"drain {label}: {res['rate']}/s"), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=200_000)
    ap.add_argument("--plan", default="warmup,baseline,producer,batch,baseline,producer+batch,flinksink,baseline",
                    help=f"drains in order: warmup, baseline, or a knob ({', '.join(KNOBS)}; a+b = both)")
    ap.add_argument("--keep", default="", help="knobs (a+b) applied for the second sustained run")
    ap.add_argument("--steps", default="8000,12000,16000,20000,24000,28000,32000")
    ap.add_argument("--step-s", type=float, default=15)
    ap.add_argument("--skip-sustained", action="store_true")
    ap.add_argument("--ceiling", action="store_true", help="measure the decoding ceiling (a) first, in this run")
    ap.add_argument("--keep-up", action="store_true")
    args = ap.parse_args(argv)
    b = Bench(Settings(), quick=True)
    out = b.out
    out["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out["machine"] = machine()
    out["knobs"] = KNOBS
    out["plan"] = args.plan
    steps = [int(x) for x in args.steps.split(",") if x]
    try:
        b.up()
        if args.ceiling:
            out["ceiling"] = ceiling.run(b)
        freshness.mirror_up(b)
        drains: list[dict[str, Any]] = []
        out["drains"] = drains
        for item in args.plan.split(","):
            if item in ("warmup", "baseline"):
                drains.append(drain(b, item, args.backlog, check=item == "baseline"))
                continue
            apply(b, item)
            rejit = any(k in merged(item) for k in ("flink_sink", "flink_set", "connect_heap"))
            try:
                if rejit:      # a resubmitted job / restarted JVM compiles its code again
                    drain(b, f"{item} (warm-up)", args.backlog // 2, check=False)
                drains.append(drain(b, item, args.backlog))
            finally:
                apply(b, item, undo=True)
                if rejit:
                    drain(b, "template (warm-up)", args.backlog // 2, check=False)
        base = [d for d in drains if d["label"] == "baseline" and d.get("rate")]
        if base:
            rate = sum(d["rate"] for d in base) / len(base)
            ms = sum(d["cpu_ms_per_1000"] for d in base) / len(base)
            out["baseline_mean"] = {"rate": round(rate), "cpu_ms_per_1000": round(ms, 1)}
            for d in drains:
                d["rate_ratio"] = round(d["rate"] / rate, 3) if d.get("rate") else None
                d["cpu_ratio"] = round(d["cpu_ms_per_1000"] / ms, 3) if d.get("cpu_ms_per_1000") else None
        if not args.skip_sustained:
            out["single_change_template"] = freshness.single_change(b, b.flat, 15)
            out["sustained_template"] = sustained.run(b, steps, args.step_s, profile=True)
            if args.keep:
                apply(b, args.keep)
                out["kept"] = merged(args.keep)
                out["single_change_kept"] = freshness.single_change(b, b.flat, 15)
                out["sustained_kept"] = sustained.run(b, steps, args.step_s, profile=True)
                apply(b, args.keep, undo=True)
        for key in ("sustained_template", "sustained_kept"):
            for st in (out.get(key) or {}).get("steps", []):
                st.update(cost(st.get("stage_profile", {}), st.get("changes", 0)))
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        out["wall_s"] = round(time.monotonic() - T0, 1)
        if b.lg:
            b.lg.close()
        if not args.keep_up:
            b.down()
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"throughput-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
        path.write_text(json.dumps(out, indent=1, default=str))
        log(f"wrote {path}")
        summary(out)
    return 1 if "error" in out else 0


def summary(out: dict[str, Any]) -> None:
    print("\ndrain                | changes | drain s | rate/s | steady/s | rate x | cpu ms/1000 | cpu x | exact", flush=True)
    for d in out.get("drains", []):
        print(f"{d['label'][:20]:<20} | {d['changes']:>7} | {d['drain_s'] or '-':>7} | {d['rate'] or '-':>6} | "
              f"{d['steady_rate_flat'] or '-':>8} | {d.get('rate_ratio') or '-':>6} | {d.get('cpu_ms_per_1000', '-'):>11} | "
              f"{d.get('cpu_ratio') or '-':>5} | {d.get('exactness', {}).get('ok', '-')}", flush=True)
    for key in ("sustained_template", "sustained_kept"):
        s = out.get(key)
        if s:
            print(f"{key}: max held {s['max_held_rate']}/s; steps " + "; ".join(
                f"{st['target_rate']}->{st['achieved_rate']:.0f}/s p99 {st['freshness']['p99_s']:.2f}s "
                f"{st.get('cpu_ms_per_1000', '-')} ms/1000" for st in s["steps"]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
