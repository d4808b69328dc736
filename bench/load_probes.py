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


class Writer(threading.Thread):
    """`rate` single-statement transactions per second on a LoadGen-shaped table until stopped."""

    def __init__(self, dsn: str, schema: str, table: str, rows: int, rate: float = 200.0, seed: int = 11) -> None:
        super().__init__(daemon=True)
        self.dsn, self.t, self.rows, self.rate = dsn, sql.Identifier(schema, table), rows, rate
        self.rng, self.next_id = random.Random(seed), 0
        self.stop, self.done, self.error = threading.Event(), 0, None
        self.elapsed = 0.0

    def run(self) -> None:
        try:
            with catalog.connect(self.dsn) as conn:
                self.next_id = int(conn.execute(sql.SQL("SELECT COALESCE(max(id), 0) FROM {}").format(self.t))
                                   .fetchone()[0]) + 1_000_000
                t0 = time.monotonic()
                while not self.stop.is_set():
                    op, k = self.rng.random(), self.rng.randint(1, self.rows)
                    if op < 0.6:
                        conn.execute(sql.SQL("UPDATE {} SET qty = qty + 1, updated_at = now() WHERE id = %s")
                                     .format(self.t), (k,))
                    elif op < 0.9:
                        self.next_id += 1
                        conn.execute(sql.SQL("INSERT INTO {} (id, name, amount, qty, updated_at, attrs) VALUES "
                                             "(%s, 'w', 1.5, 1, now(), '{{}}')").format(self.t), (self.next_id,))
                    else:
                        conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(self.t), (k,))
                    self.done += 1
                    time.sleep(max(0.0, t0 + self.done / self.rate - time.monotonic()))
                self.elapsed = time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - reported in the results
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> dict[str, Any]:
        return {"changes": self.done, "achieved_rate": round(self.done / self.elapsed, 1) if self.elapsed else None,
                "error": self.error}

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.join(10)


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
