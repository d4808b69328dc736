"""End-to-end benchmark of the cdc pipeline, with baselines measured in the same run.

    python -m bench.run [--quick] [--only STEPS] [--keep-up]

Brings up the stack described by Settings() (CDC_* environment; run it on its own stack,
e.g. CDC_STATE_DIR=/var/lib/cdc-bench and shifted CDC_PORT_*), then measures:

  a) ceiling    Postgres logical decoding (pgoutput via pg_recvlogical) of the same
                60/30/10 update/insert/delete workload: changes/s            bench/ceiling.py
  b) snapshot   add_mirror of a 1M-row table (200k with --quick) -> all rows in the flat topic
                                                                             bench/snapshot.py
  c) freshness  commit -> visible in the flat topic, LoadGen at 1,000 changes/s, probes every
                0.2 s; plus single-change freshness on an idle pipeline      bench/freshness.py
  d) sustained  step the write rate; highest rate whose freshness p99 < 5 s; ratio to (a)
                                                                             bench/sustained.py
  e) peer       Debezium + ExtractNewRecordState straight to Kafka (no Flink), same probes
                                                                             bench/peer.py
  f) control    50 mirrors on one source: registration time, slots, stack RSS
                                                                             bench/many_mirrors.py
  tuning        overrides passed through the harness (connector config / Flink job options):
                bench/poll_interval.py, bench/sink_guarantee.py, bench/snapshot_chunk.py,
                applied by bench/overrides.py

"Visible" everywhere means: a consumer of the mirror's flat Kafka topic (exactly what Pinot's
REALTIME table would consume) received the record. Pinot itself does not run here.
Results: a table on stdout, bench/results/bench-<date>.json, bench/results/freshness.png.

This module is the CLI: it orders the steps and decides what a failed step stops. The shared
harness is bench/harness.py (stack, clock, statistics, CPU), bench/probes.py (topics, probe
watcher), bench/workload.py (BulkGen, COPY) and bench/report.py (table, JSON, plot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from typing import Any

from cdc.mapping import render
from cdc.core.settings import Settings
from bench import (ceiling, freshness, many_mirrors, peer, poll_interval, report, sink_guarantee, snapshot,
                   snapshot_chunk, sustained)
from bench.harness import T0, Bench, log, machine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller snapshot (200k), shorter runs, 10 control-plane mirrors")
    ap.add_argument("--only", default="a,b,c,d,e,f,t", help="steps to run (comma list of a,b,c,d,e,f,t)")
    ap.add_argument("--keep-up", action="store_true", help="leave the stack running at the end")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    q = args.quick
    settings = Settings()
    b = Bench(settings, q)
    out = b.out
    out["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out["machine"] = machine()
    out["settings"] = {"state_dir": str(settings.state_dir), "kafka": settings.kafka_bootstrap,
                       "connect": settings.connect_url, "flink": settings.flink_url,
                       "flink_taskmanager_slots": settings.flink_taskmanager_slots}
    out["visibility"] = ("visible = received by a consumer of the mirror's flat Kafka topic (Pinot's exact input; "
                         "Pinot does not run on this machine), read_committed")
    run_s = 12 if q else 30
    try:
        b.up()
        out["template_defaults"] = {"flink_checkpoint_interval": render.CHECKPOINT_INTERVAL,
                                    "flink_sink_delivery_guarantee": "at-least-once",
                                    "debezium_poll_interval_ms": "500 (Debezium default; not set by the template)",
                                    "debezium_max_batch_size": "2048 (Debezium default; not set by the template)",
                                    "connect_producer_linger_ms": "5 (worker)",
                                    "connect_producer_batch_size": "262144 (connector template)"}
        if "a" in only:
            out["ceiling"] = ceiling.run(b)
        freshness.mirror_up(b)
        if "c" in only:
            out["single_change"] = freshness.single_change(b, b.flat, 10 if q else 20)
            out["freshness_1000"] = freshness.run(b, "freshness_1000", b.flat, 1000, run_s)
        if "e" in only:
            out["peer_1000"] = peer.run(b, run_s)
        if "d" in only:
            rates = [500, 1000, 2000, 4000, 8000, 16000, 32000]
            out["sustained"] = sustained.run(b, rates, 15 if q else 30)
        if "t" in only:
            tun: dict[str, Any] = {}
            out["tuning"] = tun
            tr_s = 12 if q else 20
            try:
                tun[poll_interval.NAME] = poll_interval.run(b, tr_s)
                sink_guarantee.run(b, tun, tr_s)        # with poll.interval.ms=50 kept
                poll_interval.undo(b)
            except Exception as exc:
                tun["error"] = f"{type(exc).__name__}: {exc}"
                log(f"tuning failed: {exc}")
                traceback.print_exc()
        if "b" in only:
            out["snapshot"] = snapshot.run(b, 200_000 if q else 1_000_000)
        if "b" in only and "t" in only:
            tun = out.setdefault("tuning", {})
            try:
                snapshot_chunk.run(b, tun)
            except Exception as exc:
                tun["snapshot_error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        if "f" in only:
            out["control_plane"] = many_mirrors.run(b)
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        out["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        out["wall_s"] = round(time.monotonic() - T0, 1)
        if b.lg:
            b.lg.close()
        if not args.keep_up:
            b.down()
        report.write(b)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
