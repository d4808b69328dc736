"""What a run leaves behind: the table on stdout, `bench/results/bench-<date>.json` and
`bench/results/freshness.png`.

The table puts each figure next to its baseline measured in the same run and the ratio the
targets are stated in (Flink p99 / peer p99, sustained rate / decoding ceiling, tuning run /
its baseline), so a run on a noisy shared machine is judged against itself rather than
against figures from another day. The JSON holds everything (`jsonable` turns inf, datetimes
and paths into JSON), including the table; the plot shows the freshness series of (c) and (e)
and the sustained steps (d).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, Bench, log, secs


def table(out: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(metric: str, value: str, baseline: str = "", ratio: str = "", target: str = "") -> None:
        rows.append((metric, value, baseline, ratio, target))

    ce = out.get("ceiling", {}).get("changes_per_s")
    if ce:
        add("a) pgoutput decoding ceiling (changes/s)", f"{ce:,}", "", "", "")
    sn = out.get("snapshot")
    if sn:
        ok = "MET" if sn["rows_per_s"] >= 20000 else "MISSED"
        add(f"b) snapshot {sn['rows']:,} rows -> flat topic (rows/s)", f"{sn['rows_per_s']:,}",
            "", f"{sn['all_rows_s']}s total", f">=20,000: {ok}")
    fr = out.get("freshness_1000")
    pe = out.get("peer_1000")
    if fr:
        f = fr["freshness"]
        ok = "MET" if f["p99_s"] is not None and f["p99_s"] <= 2 else "MISSED"
        add(f"c) freshness @1000/s (achieved {fr['achieved_rate']:.0f}/s) p50/p95/p99",
            f"{secs(f['p50_s'])}/{secs(f['p95_s'])}/{secs(f['p99_s'])}", "", "", f"p99<=2s: {ok}")
        sc = out.get("single_change", {})
        if sc:
            add("c) single change, idle pipeline p50/p95", f"{secs(sc['p50_s'])}/{secs(sc['p95_s'])}")
    if pe and fr:
        pf, f = pe["freshness"], fr["freshness"]
        ratio = f["p99_s"] / pf["p99_s"] if pf["p99_s"] else None
        ok = "MET" if ratio is not None and ratio <= 1.5 else "MISSED"
        add(f"e) peer Debezium+SMT @1000/s (achieved {pe['achieved_rate']:.0f}/s) p50/p95/p99",
            f"{secs(pf['p50_s'])}/{secs(pf['p95_s'])}/{secs(pf['p99_s'])}", "",
            f"Flink p99 / peer p99 = {ratio:.2f}x" if ratio else "", f"<=1.5x: {ok}")
        if pe.get("single_change"):
            sc = pe["single_change"]
            add("e) peer single change p50/p95", f"{secs(sc['p50_s'])}/{secs(sc['p95_s'])}")
    su = out.get("sustained")
    if su:
        for st in su["steps"]:
            f = st["freshness"]
            add(f"d) step {st['target_rate']:.0f}/s ({su['step_duration_s']:.0f}s): achieved, p50/p99",
                f"{st['achieved_rate']:.0f}/s, {secs(f['p50_s'])}/{secs(f['p99_s'])}", "", "",
                "held" if st["held"] else "NOT held")
        if ce:
            r = su["max_held_rate"] / ce
            add("d) sustained max rate with p99<5s (changes/s)", f"{su['max_held_rate']:,}", f"ceiling {ce:,}",
                f"{100 * r:.1f}% of ceiling", f">=25%: {'MET' if r >= 0.25 else 'MISSED'}")
    for name, tr in (out.get("tuning") or {}).items():
        if not isinstance(tr, dict):
            add(f"tuning: {name}", str(tr)[:80])
            continue
        if "rows_per_s" in tr:
            base = tr.get("baseline_rows_per_s")
            add(f"tuning: {name} (rows/s)", f"{tr['rows_per_s']:,}", f"{base:,}" if base else "",
                f"{tr['rows_per_s'] / base:.2f}x" if base else "")
        if "freshness" in tr:
            f = tr["freshness"]
            base = tr.get("baseline_p99_s")
            add(f"tuning: {name} @{tr['target_rate']:.0f}/s p50/p99", f"{secs(f['p50_s'])}/{secs(f['p99_s'])}",
                f"p99 {secs(base)}" if base else "",
                f"{f['p99_s'] / base:.2f}x" if base and f["p99_s"] not in (None, float('inf')) else "")
        if "single_change" in tr:
            sc = tr["single_change"]
            add(f"tuning: {name} single change p50/p95", f"{secs(sc['p50_s'])}/{secs(sc['p95_s'])}")
    cp = out.get("control_plane")
    if cp:
        add(f"f) register {cp['mirrors']} mirrors sequentially", f"{cp['register_total_s']}s",
            "", f"p50 {cp['per_mirror_p50_s']:.2f}s/mirror, max {cp['per_mirror_max_s']:.1f}s")
        add("f) replication slots for the source", str(cp["slots_for_source"]), "", "", "exactly 1: "
            + ("MET" if cp["slots_for_source"] == 1 else "MISSED"))
        add("f) Flink jobs: job state / all tasks RUNNING", f"{json.dumps(cp['flink_job_states'])} / "
            f"{cp['flink_jobs_with_all_tasks_running']}", f"{cp['flink_slots_total']} TM slots")
        add("f) mirrors with their 10 rows in the flat topic", str(cp["mirrors_with_rows_in_flat_topic_after_5s"]))
        add("f) stack total RSS after", f"{cp['stack_total_rss_bytes'] / 2**30:.2f} GiB")
    w = [max(len(r[i]) for r in rows + [("metric", "value", "baseline", "ratio", "target")]) for i in range(5)]
    lines = [" | ".join(h.ljust(w[i]) for i, h in enumerate(("metric", "value", "baseline", "ratio", "target"))),
             "-+-".join("-" * x for x in w)]
    lines += [" | ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def plot(bench: Bench, out: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for name, label in (("freshness_1000", "Flink path (cdc flat topic)"), ("peer_1000", "peer: Debezium+SMT topic")):
        r = bench.runs.get(name)
        if r and r["lat"]:
            t0 = r["probe_ts"][0]
            xs = [t - t0 for t in r["probe_ts"]][: len(r["lat"])]
            ax.plot(xs, r["lat"], ".-", ms=3, lw=0.6, label=label)
    ax.set_xlabel("seconds into the 1,000 changes/s run")
    ax.set_ylabel("commit -> visible in topic (s)")
    ax.set_title("Freshness at 1,000 changes/s (visible = in the topic Pinot consumes)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    su = out.get("sustained")
    if su:
        rates = [s["achieved_rate"] for s in su["steps"]]
        for key, lab in (("p50_s", "p50"), ("p95_s", "p95"), ("p99_s", "p99")):
            ys = [s["freshness"][key] if s["freshness"][key] != float("inf") else None for s in su["steps"]]
            ax.plot(rates, ys, "o-", label=lab)
        ax.axhline(5, color="red", ls="--", lw=0.8, label="5 s limit")
        ax.set_xscale("log")
        ax.set_xlabel("achieved write rate (changes/s, log)")
        ax.set_ylabel("freshness (s)")
        ax.set_title(f"Sustained steps ({su['step_duration_s']:.0f} s each), flat topic")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def jsonable(o: Any) -> Any:
    if isinstance(o, float) and o == float("inf"):
        return "inf"
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (dt.datetime, Path)):
        return str(o)
    return o


def write(b: Bench) -> None:
    """Table into the JSON, JSON and plot to `RESULTS`, then the summary on stdout."""
    out = b.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    jpath = RESULTS / f"bench-{date}.json"
    out["table"] = table(out)
    jpath.write_text(json.dumps(jsonable(out), indent=2) + "\n")
    try:
        plot(b, out, RESULTS / "freshness.png")
    except Exception as exc:
        log(f"plot failed: {exc}")
    print(f"\ncdc benchmark {out['started_at']} on {out['machine']['cpu_model']}, {out['machine']['cores']} cores, "
          f"{out['machine']['mem_gib']} GiB; {'QUICK' if b.quick else 'full'} run, {out['wall_s']} s")
    print("visible = in the mirror's flat Kafka topic (Pinot's input); Pinot itself does not run here\n")
    print(out["table"])
    print(f"\nJSON: {jpath}\nplot: {RESULTS / 'freshness.png'}")
