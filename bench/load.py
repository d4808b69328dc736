"""Initial load benchmark: the copy load vs Debezium's incremental snapshot vs a plain COPY.

    python -m bench.load [--rows 2000000,10000000] [--skip-debezium] [--verify-max N] [--keep-up]

For each table size, in the same run and on the same table (bench.workload.copy_rows: the
LoadGen shape, 6 columns, COPYed first and not timed), with another mirror of the source
already streaming (so a new table joins a running connector, the path of every mirror but a
source's first):

  copy      `add_mirror(load="copy")` -> the last loaded row acknowledged in the flat topic
            (cdc/mirrors/initial_load.py: parallel COPY readers, Postgres renders the flat
            records); its progress timeline; then `cdc mirror verify` (up to --verify-max rows;
            Pinot's engine in-process reads the whole flat topic, rows compared in hash buckets
            on disk), with its time and peak RSS (this process, and the engine's JVM)
  debezium  the same table by `add_mirror(load="debezium")`: Debezium's incremental snapshot,
            flat topic end offsets polled every 0.5 s until they hold the table's rows
  baseline  `COPY (SELECT * FROM t) TO STDOUT` read by psycopg, nothing rendered, nothing sent

200 changes/s of writes (bench/load_probes.Writer) run through both adds. Per phase: peak RSS
of every process (VmHWM reset at the start of the phase, bench/load_probes.RssPeaks) and CPU per
process (bench.harness.CpuWindow). Output: a table on stdout, bench/results/load-<date>-<time>.json
(named figures and ratios copy/debezium, copy/baseline) and bench/results/load.png.
"""

from __future__ import annotations

import argparse
import resource
import datetime as dt
import faulthandler
import json
import signal
import sys
import time
import traceback
from typing import Any

from cdc.core import names
from cdc.core.settings import Settings
from cdc.mirrors import service
from cdc.mirrors.load_progress import LoadProgress
from cdc.mirrors.verify import format_report, verify_mirror
from bench.harness import RESULTS, SCHEMA, T0, Bench, CpuWindow, log, machine, quiet
from bench.load_probes import RssPeaks, Writer, copy_baseline
from bench.probes import end_offsets
from bench.report import jsonable
from bench.workload import copy_rows

ANCHOR = "load_anchor"
RATE = 200.0


def _anchor(b: Bench) -> str:
    """A tiny mirror of the source, so the measured tables join a running connector."""
    with b.pg() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{ANCHOR} (id int PRIMARY KEY)")
    return service.add_mirror(b.ctx, SCHEMA, ANCHOR, progress=quiet).name


def _table_rows(b: Bench, table: str) -> int:
    with b.pg() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()[0])


def _maxrss_mib(who: int) -> int:
    return resource.getrusage(who).ru_maxrss // 1024     # Linux: KiB; peak over the process' life


def copy_phase(b: Bench, table: str, rows: int, verify_max: int) -> dict[str, Any]:
    timeline: list[tuple[float, int]] = []
    last: list[LoadProgress] = []
    with RssPeaks(b.s) as rss, CpuWindow(b.s) as cpu, Writer(b.dsn, SCHEMA, table, rows, RATE) as w:
        t0, t0_wall = time.monotonic(), time.time()

        def tick(p: LoadProgress) -> None:
            timeline.append((round(time.monotonic() - t0, 2), p.rows))
            last[:] = [p]
        rec = service.add_mirror(b.ctx, SCHEMA, table, load="copy", progress=quiet, on_load=tick)
        add_s = time.monotonic() - t0
        p = last[0]
        loaded_s = p.finished_at - p.started_at if p.finished_at else None
        last_row_s = (p.finished_at or time.time()) - t0_wall     # the load flushed: every row acknowledged
        flat = end_offsets(b.s.kafka_bootstrap, names.flat_topic(rec.name))
        time.sleep(5)                                       # writes go on after the load
    res: dict[str, Any] = {
        "rows_loaded": p.rows, "estimate": p.estimate, "add_to_last_row_s": round(last_row_s, 2),
        "add_call_s": round(add_s, 2), "read_s": round(loaded_s or 0, 2), "rows_per_s": round(p.rows / last_row_s),
        "read_rows_per_s": round(p.rate), "flat_records_at_return": flat, "workers": p.workers,
        "chunks": p.chunks_total, "writes": w.result(), "peak_rss_mib": rss.mib, "rss_reset": rss.reset_ok,
        "cpu_pct_of_one_core": cpu.result, "timeline_s_rows": timeline[:: max(1, len(timeline) // 60)]}
    log(f"copy {rows:,}: {p.rows:,} rows, add -> last row {last_row_s:.1f}s = {res['rows_per_s']:,} rows/s "
        f"(read {p.rate:,.0f} rows/s)")
    if rows <= verify_max:
        t = time.monotonic()
        report = verify_mirror(b.ctx, rec.name, settle_timeout=120, progress=log)
        res["verify"] = {"clean": report.clean, "seconds": round(time.monotonic() - t, 1),
                         "peak_rss_mib": {"bench (verify in-process)": _maxrss_mib(resource.RUSAGE_SELF),
                                          "largest child (the Pinot engine JVM)": _maxrss_mib(resource.RUSAGE_CHILDREN)},
                         "source_rows": report.source_rows, "target_rows": report.target_rows,
                         "missing": report.missing, "extra": report.extra, "differing": report.differing,
                         "reader": report.target_detail}
        log(f"copy {rows:,}: verify {'CLEAN' if report.clean else 'NOT CLEAN'} in {res['verify']['seconds']}s")
        if not report.clean:
            log(format_report(report))
    else:
        res["verify"] = {"skipped": f"{rows:,} rows > --verify-max {verify_max:,}"}
    service.remove_mirror(b.ctx, rec.name, drop_data=True, progress=quiet)
    return res


def debezium_phase(b: Bench, table: str, rows: int, timeout: float) -> dict[str, Any]:
    want = _table_rows(b, table)
    timeline: list[tuple[float, int]] = []
    with RssPeaks(b.s) as rss, CpuWindow(b.s) as cpu, Writer(b.dsn, SCHEMA, table, rows, RATE, seed=12) as w:
        t0 = time.monotonic()
        rec = service.add_mirror(b.ctx, SCHEMA, table, load="debezium", progress=quiet)
        add_s = time.monotonic() - t0
        topic, n = names.flat_topic(rec.name), 0
        while n < want and time.monotonic() - t0 < timeout:
            time.sleep(0.5)
            n = end_offsets(b.s.kafka_bootstrap, topic)
            timeline.append((round(time.monotonic() - t0, 1), n))
        took = time.monotonic() - t0
    res = {"rows": want, "flat_records": n, "complete": n >= want, "add_call_s": round(add_s, 2),
           "add_to_last_row_s": round(took, 1), "rows_per_s": round(min(n, want) / took), "writes": w.result(),
           "path": "incremental snapshot (signal): the connector already streams another table",
           "peak_rss_mib": rss.mib, "cpu_pct_of_one_core": cpu.result,
           "timeline_s_rows": timeline[:: max(1, len(timeline) // 60)]}
    log(f"debezium {rows:,}: {n:,}/{want:,} records in {took:.1f}s = {res['rows_per_s']:,} rows/s")
    service.remove_mirror(b.ctx, rec.name, drop_data=True, progress=quiet)
    return res


def run_size(b: Bench, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    table = f"load_{rows // 1000}k"
    t = time.monotonic()
    copy_rows(b.dsn, SCHEMA, table, rows, seed=rows % 97)
    log(f"{rows:,} rows COPYed into {SCHEMA}.{table} in {time.monotonic() - t:.1f}s (not timed)")
    out: dict[str, Any] = {"rows": rows, "table": f"{SCHEMA}.{table}"}
    with RssPeaks(b.s) as rss:
        out["baseline_copy"] = copy_baseline(b.dsn, SCHEMA, table)
    out["baseline_copy"]["peak_rss_mib"] = rss.mib
    log(f"baseline COPY {rows:,}: {out['baseline_copy']['rows_per_s']:,} rows/s")
    out["copy"] = copy_phase(b, table, rows, args.verify_max)
    if not args.skip_debezium:
        out["debezium"] = debezium_phase(b, table, rows, args.debezium_timeout)
        out["ratio_copy_to_debezium"] = round(out["copy"]["rows_per_s"] / max(1, out["debezium"]["rows_per_s"]), 2)
    out["ratio_copy_to_baseline"] = round(out["copy"]["rows_per_s"] / out["baseline_copy"]["rows_per_s"], 3)
    with b.pg() as conn:
        conn.execute(f"DROP TABLE {SCHEMA}.{table}")
    return out


def table(out: dict[str, Any]) -> str:
    head = ("rows", "copy load rows/s", "debezium rows/s", "plain COPY rows/s", "copy/debezium", "copy/COPY",
            "verify")
    lines = [head]
    for r in out["sizes"]:
        c, d = r["copy"], r.get("debezium") or {}
        v = c.get("verify", {})
        lines.append((f"{r['rows']:,}", f"{c['rows_per_s']:,} ({c['add_to_last_row_s']}s)",
                      f"{d['rows_per_s']:,} ({d['add_to_last_row_s']}s)" if d else "-",
                      f"{r['baseline_copy']['rows_per_s']:,}", f"{r.get('ratio_copy_to_debezium', '-')}x",
                      f"{r['ratio_copy_to_baseline']}x",
                      ("clean" if v.get("clean") else "skipped" if "skipped" in v else "NOT CLEAN")
                      + (f" ({v['seconds']}s)" if "seconds" in v else "")))
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    return "\n".join(" | ".join(c.ljust(w[i]) for i, c in enumerate(x)) for x in lines)


def plot(out: dict[str, Any], path: Any) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for r in out["sizes"]:
        for phase, style in (("copy", "-"), ("debezium", "--")):
            if r.get(phase):
                xs, ys = zip(*r[phase]["timeline_s_rows"]) if r[phase]["timeline_s_rows"] else ((), ())
                ax.plot(xs, ys, style, label=f"{phase} {r['rows']:,}")
    ax.set_xlabel("seconds since mirror add")
    ax.set_ylabel("rows in the flat topic")
    ax.set_title("Initial load progress (200 changes/s of writes meanwhile)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    labels = [f"{r['rows'] / 1e6:g}M" for r in out["sizes"]]
    xs = range(len(labels))
    for i, (key, name) in enumerate((("copy", "copy load"), ("debezium", "Debezium incremental"),
                                     ("baseline_copy", "plain COPY (no rendering, no Kafka)"))):
        ax.bar([x + (i - 1) * 0.27 for x in xs], [(r.get(key) or {}).get("rows_per_s", 0) for r in out["sizes"]],
               0.27, label=name)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("rows/s")
    ax.set_title("rows/s by table size")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="2000000,10000000", help="table sizes, comma-separated")
    ap.add_argument("--skip-debezium", action="store_true")
    ap.add_argument("--debezium-timeout", type=float, default=1800.0)
    ap.add_argument("--verify-max", type=int, default=10_000_000, help="verify copy-loaded mirrors up to this size")
    ap.add_argument("--keep-up", action="store_true", help="leave the stack running at the end")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)           # kill -USR1 <pid>: every thread's stack on stderr
    settings = Settings()
    b = Bench(settings, quick=False)
    out: dict[str, Any] = b.out
    out.update(started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), machine=machine(),
               load_settings={"workers": settings.load_workers, "chunk_pages": settings.load_chunk_pages},
               writes_per_s=RATE, sizes=[])
    try:
        out["uptime_before"] = open("/proc/loadavg").read().strip()
        b.up()
        anchor = _anchor(b)
        for rows in (int(x) for x in args.rows.split(",")):
            out["sizes"].append(run_size(b, rows, args))
        service.remove_mirror(b.ctx, anchor, drop_data=True, progress=quiet)
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        out["uptime_after"] = open("/proc/loadavg").read().strip()
        out["wall_s"] = round(time.monotonic() - T0, 1)
        if not args.keep_up:
            b.down()
        RESULTS.mkdir(parents=True, exist_ok=True)
        out["table"] = table(out) if out["sizes"] else ""
        path = RESULTS / f"load-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(jsonable(out), indent=2) + "\n")
        try:
            plot(out, RESULTS / "load.png")
        except Exception as exc:  # noqa: BLE001 - the JSON and table still stand
            log(f"plot failed: {exc}")
        print(f"\ninitial load benchmark {out['started_at']} on {out['machine']['cpu_model']}, "
              f"{out['machine']['cores']} cores; load average before {out['uptime_before']}, after "
              f"{out['uptime_after']}\n")
        print(out["table"])
        print(f"\nJSON: {path}\nplot: {RESULTS / 'load.png'}")
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
