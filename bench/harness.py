"""What every benchmark of `python -m bench.run` shares: its own stack, the clock, the
statistics, and CPU accounting.

* `Bench` brings up the stack described by `Settings()` (the `CDC_*` environment: a state dir
  and every port shifted away from the main stack), wipes it first only if the harness created
  it (`MARKER`), and holds what the steps share: the service context, the freshness mirror's
  names and its `LoadGen`, the result dict `out` that becomes the JSON, and the freshness
  series the plot draws (`runs`).
* `log` stamps every progress line with the seconds since the harness started (`T0`, also the
  run's `wall_s`).
* `pct`/`summary` turn freshness samples into p50/p95/p99 (a probe never seen counts as
  infinitely late), `secs` prints them, `ts_us` reads `updated_at` the way both topics carry it.
* `CpuWindow` measures CPU per stack process over a run, because the figures only mean
  something next to what else was using the machine's shared cores.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cdc.postgres import catalog
from cdc.mirrors import service
from cdc.core.settings import Settings
from bench.loadgen import LoadGen
from cdc.stack import manager
from cdc.stack.process import children_map, descendants

SCHEMA = "bench"
MIX = (0.3, 0.6, 0.1, 0.0)         # inserts, updates, deletes, pk-updates: the brief's 60/30/10
FRESH_TABLE = "fresh"
FRESH_ROWS = 20_000
RESULTS = Path(__file__).resolve().parent / "results"
MARKER = ".cdc-bench-owned"        # a state dir holding this may be wiped by the harness
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def quiet(_msg: str) -> None:
    pass


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(lat: list[float], missing: int = 0) -> dict[str, Any]:
    """p50/p95/p99 of freshness in seconds; a probe never seen counts as infinitely late."""
    full = lat + [float("inf")] * missing
    return {"samples": len(full), "missing": missing, "p50_s": pct(full, 50), "p95_s": pct(full, 95),
            "p99_s": pct(full, 99), "max_s": max(full) if full else None}


def secs(v: float | None) -> str:
    """A duration in seconds as the log and the table print it."""
    if v is None:
        return "-"
    if v == float("inf"):
        return "inf"
    return f"{v:.2f}s" if v < 10 else f"{v:.1f}s"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def ts_us(value: Any) -> int | None:
    """updated_at as epoch microseconds: a LONG in the flat topic, ISO text from Debezium."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dt.datetime):   # exact integer arithmetic: probes match on equality
        return (value - _EPOCH) // dt.timedelta(microseconds=1)
    return ts_us(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {"cpu_model": model, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


# ------------------------------------------------------------------ the stack

class Bench:
    """The harness state the steps share. The freshness mirror's attributes (`mirror`, `flat`,
    `change`, `lg`, `batch_1000`) are set by `bench.freshness.mirror_up`."""

    mirror: str
    flat: str
    change: str

    def __init__(self, settings: Settings, quick: bool) -> None:
        self.s = settings
        self.quick = quick
        self.dsn = settings.source_dsn()
        self.out: dict[str, Any] = {"quick": quick, "notes": []}
        self.ctx: service.Context | None = None
        self.lg: LoadGen | None = None
        self.batch_1000 = 10
        self.runs: dict[str, dict[str, Any]] = {}     # freshness series for the plot

    def up(self) -> None:
        s = self.s
        marker = s.state_dir / MARKER
        if marker.exists():
            log(f"fresh bench stack: down --clean of {s.state_dir} (it carries {MARKER})")
            manager.down(s, clean=True, progress=quiet)
        elif s.state_dir.exists() and any(s.state_dir.iterdir()):
            self.out["notes"].append(f"{s.state_dir} not owned by the harness: reused, not wiped")
        t = time.monotonic()
        manager.up(s, progress=quiet)
        self.out["stack_up_s"] = round(time.monotonic() - t, 1)
        s.state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text("created by bench/run.py; `python -m bench.run` wipes this state dir\n")
        log(f"stack up in {self.out['stack_up_s']} s ({s.state_dir}, kafka {s.kafka_bootstrap})")
        self.ctx = service.context(s)
        for m in self.ctx.registry.list_mirrors():       # leftovers of an earlier run on a kept stack
            if m.spec.schema_name == SCHEMA:
                service.remove_mirror(self.ctx, m.name, drop_data=True, progress=quiet)
        with catalog.connect(self.dsn) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")

    def down(self) -> None:
        try:
            manager.down(self.s, progress=quiet)
            log("stack stopped")
        except Exception as exc:
            self.out["notes"].append(f"down failed: {exc}")

    def pg(self):
        return catalog.connect(self.dsn)


# ------------------------------------------------------------------ machine / process CPU

CLK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, children: bool = False) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    t = int(f[11]) + int(f[12])          # utime + stime
    if children:
        t += int(f[13]) + int(f[14])     # cutime + cstime: reaped children (short-lived backends)
    return t


def _machine_busy() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


class CpuWindow:
    """CPU per stack process (incl. descendants; % of one core) over a window, plus the
    harness itself and everything else on the machine (the shared 2 cores)."""

    def __init__(self, settings: Settings) -> None:
        st = manager.status(settings)
        self.pids = {p["name"]: p["pid"] for p in st["processes"] if p["pid"]}
        self.pids["bench-harness"] = os.getpid()

    def _sample(self) -> dict[str, int]:
        kids = children_map()
        out = {}
        for name, pid in self.pids.items():
            tree = descendants(pid, kids) if name != "bench-harness" else []
            out[name] = _ticks(pid, children=(name == "postgres")) + sum(_ticks(p) for p in tree)
        return out

    def __enter__(self) -> CpuWindow:
        self.t = time.monotonic()
        self.a = self._sample()
        self.ma = _machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        dt_s = time.monotonic() - self.t
        b = self._sample()
        mb = _machine_busy()
        self.result = {k: round(100 * (b[k] - self.a.get(k, 0)) / CLK / dt_s, 1) for k in b}
        busy = mb[0] - self.ma[0]
        total = mb[1] - self.ma[1]
        ncpu = os.cpu_count() or 1
        machine = 100 * busy / total * ncpu if total else 0.0     # % of one core, all cores summed
        self.result["machine_total"] = round(machine, 1)
        self.result["other_processes"] = round(max(0.0, machine - sum(v for k, v in self.result.items()
                                                                         if k not in ("machine_total",))), 1)
