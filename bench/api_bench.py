"""Control-plane figures for the daemon (issue 4): GET /mirrors latency with 100 mirrors in
the registry, and the daemon's RSS at idle with 10 mirrors (reconciler running).

Runs `cdc serve` as a real subprocess on its own registry; the registry rows point at a
source whose systems are unreachable ports, so the reconciler only observes (and records
nothing can be done) — the figure is the daemon's own footprint, not the stack's.
Baseline in the same run: GET /healthz (no registry access, no auth) on the same server.

    python -m bench.api_bench           # prints a table, writes bench/results/api-<date>.json
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from cdc.core.models import MirrorSpec, Source
from cdc.mirrors.registry import Registry

TOKEN = "bench-token-not-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(path: Path, mirrors: int) -> None:
    with Registry(path) as reg:
        reg.add_source(Source(name="benchsrc", dsn="postgresql://bench@127.0.0.1:1/bench", port=1))
        for i in range(mirrors):
            reg.add_mirror(MirrorSpec(name=f"bench_{i:03d}", source="benchsrc", schema_name="public",
                                      table_name=f"t{i:03d}"), state="running", connector_name="cdc-benchsrc",
                           flink_job_id=f"{i:032x}")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _serve(registry: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(registry), "CDC_API_TOKEN": TOKEN,
           # every system unreachable: the reconciler observes "unknown" and acts on nothing
           "CDC_PORT_CONNECT": "1", "CDC_PORT_FLINK_REST": "1", "CDC_PORT_SQL_GATEWAY": "1",
           "CDC_PINOT_MODE": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "cdc.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("cdc serve did not come up")


def _latencies(url: str, n: int, headers: dict) -> list[float]:
    s = requests.Session()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(url, headers=headers, timeout=10)
        out.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return out


def _pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 1 else xs[0]


def main() -> int:
    out: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        reg10, reg100 = Path(tmp) / "r10.db", Path(tmp) / "r100.db"
        _fill(reg10, 10)
        _fill(reg100, 100)
        port = _free_port()
        proc = _serve(reg10, port)
        try:
            time.sleep(20)   # a few reconcile passes, then idle
            out["daemon_rss_idle_10_mirrors_mib"] = round(_rss(proc.pid) / 2**20, 1)
        finally:
            proc.terminate()
            t0 = time.monotonic()
            out["sigterm_exit_code"] = proc.wait(30)
            out["sigterm_exit_s"] = round(time.monotonic() - t0, 2)
        port = _free_port()
        proc = _serve(reg100, port)
        try:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            body = requests.get(f"http://127.0.0.1:{port}/mirrors", headers=auth, timeout=10).json()
            n = len(body) if isinstance(body, list) else len(body.get("mirrors", body.get("items", [])))
            _latencies(f"http://127.0.0.1:{port}/mirrors", 20, auth)          # warm-up
            base = _latencies(f"http://127.0.0.1:{port}/healthz", 300, {})
            lat = _latencies(f"http://127.0.0.1:{port}/mirrors", 300, auth)
        finally:
            proc.terminate()
            proc.wait(30)
    out.update({"mirrors_listed": n,
                "get_mirrors_ms": {"p50": round(_pct(lat, 50), 2), "p99": round(_pct(lat, 99), 2)},
                "healthz_baseline_ms": {"p50": round(_pct(base, 50), 2), "p99": round(_pct(base, 99), 2)}})
    out["get_mirrors_p99_over_healthz_p99"] = round(out["get_mirrors_ms"]["p99"] / out["healthz_baseline_ms"]["p99"], 2)
    print(f"{'figure':44} value")
    print(f"{'daemon RSS, idle, 10 mirrors (MiB)':44} {out['daemon_rss_idle_10_mirrors_mib']}")
    print(f"{'SIGTERM -> exit code / seconds':44} {out['sigterm_exit_code']} / {out['sigterm_exit_s']}")
    print(f"{'GET /mirrors, ' + str(n) + ' mirrors: p50 / p99 (ms)':44} "
          f"{out['get_mirrors_ms']['p50']} / {out['get_mirrors_ms']['p99']}")
    print(f"{'GET /healthz baseline: p50 / p99 (ms)':44} "
          f"{out['healthz_baseline_ms']['p50']} / {out['healthz_baseline_ms']['p99']}")
    print(f"{'ratio p99 /mirrors : /healthz':44} {out['get_mirrors_p99_over_healthz_p99']}")
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"api-{out['date']}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
