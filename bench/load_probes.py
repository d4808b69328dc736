"""What bench/load.py measures around a load: peak RSS per process, a steady writer, COPY.

* `RssPeaks` resets every stack process's peak RSS (writing 5 to /proc/<pid>/clear_refs sets
  VmHWM to the current RSS) when a phase starts, samples the process trees every 0.5 s while it
  runs (Postgres backends come and go: each one's VmHWM is read while it lives) and reports, per
  component, the largest VmHWM of one process, in MiB. The harness process itself is "cdc": the
  load runs inside it (service.add_mirror).
* `Writer` keeps 200 changes/s (60% updates, 30% inserts above the loaded keys, 10% deletes; one
  statement per transaction) on the table while a load runs.
* `copy_baseline` is the plain `COPY (SELECT * FROM t) TO STDOUT` the load is compared with.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from cdc.core.settings import Settings
from cdc.postgres import catalog
from cdc.stack import manager
from cdc.stack.process import children_map, descendants


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssPeaks:
    def __init__(self, settings: Settings) -> None:
        st = manager.status(settings)
        self.roots = {p["name"]: p["pid"] for p in st["processes"] if p["pid"]}
        self.roots["cdc"] = os.getpid()
        self.peaks: dict[str, int] = {}
        self.reset_ok = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _trees(self) -> dict[str, list[int]]:
        kids = children_map()
        out = {}
        for name, pid in self.roots.items():
            tree = [pid] + (descendants(pid, kids) if name != "cdc" else [])
            if name == "postgres":
                out["postgres (postmaster)"] = [pid]
                out["postgres (largest backend)"] = tree[1:]
            else:
                out[name] = tree
        return out

    def _sample(self) -> None:
        for name, pids in self._trees().items():
            self.peaks[name] = max([self.peaks.get(name, 0)] + [_hwm_kib(p) for p in pids])

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> RssPeaks:
        for pids in self._trees().values():
            for p in pids:
                self.reset_ok &= _reset(p)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    @property
    def mib(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in sorted(self.peaks.items())}


def _write(dsn: str, schema: str, table: str, rows: int, rate: float, seed: int, stop: Any, done: Any,
           elapsed: Any, errors: Any) -> None:
    """The writer process' body: one single-statement transaction at a time, paced to `rate`."""
    t, rng = sql.Identifier(schema, table), random.Random(seed)
    try:
        with catalog.connect(dsn) as conn:
            next_id = int(conn.execute(sql.SQL("SELECT COALESCE(max(id), 0) FROM {}").format(t)).fetchone()[0]) + 1_000_000
            t0, n = time.monotonic(), 0
            while not stop.is_set():
                op, k = rng.random(), rng.randint(1, rows)
                if op < 0.6:
                    conn.execute(sql.SQL("UPDATE {} SET qty = qty + 1, updated_at = now() WHERE id = %s").format(t), (k,))
                elif op < 0.9:
                    next_id += 1
                    conn.execute(sql.SQL("INSERT INTO {} (id, name, amount, qty, updated_at, attrs) VALUES "
                                         "(%s, 'w', 1.5, 1, now(), '{{}}')").format(t), (next_id,))
                else:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (k,))
                n += 1
                done.value = n
                elapsed.value = time.monotonic() - t0
                time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    except Exception as exc:  # noqa: BLE001 - reported in the results
        errors.put(f"{type(exc).__name__}: {exc}")


class Writer:
    """`rate` single-statement transactions per second on a LoadGen-shaped table until stopped,
    from a process of its own (an application's writes: in the benchmark's process they would
    wait for the GIL behind the load's threads and fall short of the rate)."""

    def __init__(self, dsn: str, schema: str, table: str, rows: int, rate: float = 200.0, seed: int = 11) -> None:
        import multiprocessing
        mp = multiprocessing.get_context("spawn")
        self.stop, self._done, self._elapsed, self._errors = mp.Event(), mp.Value("q", 0), mp.Value("d", 0.0), mp.Queue()
        self._proc = mp.Process(target=_write, name="bench-writer", daemon=True,
                                args=(dsn, schema, table, rows, rate, seed, self.stop, self._done, self._elapsed,
                                      self._errors))
        self.error: str | None = None

    @property
    def done(self) -> int:
        return int(self._done.value)

    def result(self) -> dict[str, Any]:
        elapsed = self._elapsed.value
        return {"changes": self.done, "achieved_rate": round(self.done / elapsed, 1) if elapsed else None,
                "error": self.error}

    def __enter__(self) -> Writer:
        self._proc.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()
        if not self._errors.empty():
            self.error = self._errors.get_nowait()


def copy_baseline(dsn: str, schema: str, table: str) -> dict[str, Any]:
    """`COPY (SELECT * FROM t) TO STDOUT` read by psycopg, rows counted and dropped."""
    t0, n, size = time.monotonic(), 0, 0
    with catalog.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY (SELECT * FROM {}) TO STDOUT").format(sql.Identifier(schema, table))) as cp:
            for data in cp:
                n += 1
                size += len(data)
    took = time.monotonic() - t0
    return {"rows": n, "seconds": round(took, 2), "rows_per_s": round(n / took), "mib": round(size / 2**20)}
