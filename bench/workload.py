"""The write load the benchmarks put on the source, beyond `bench.loadgen.LoadGen`.

* `BulkGen` makes the same 60/30/10 update/insert/delete mix set-based (three statements per
  transaction), because above ~2k changes/s LoadGen's one statement per change tops out on
  this machine: the decoding ceiling (a) and the sustained steps (d) need more than that.
* `copy_rows` fills a LoadGen-shaped table by COPY, fast enough for the 1M-row snapshot (b)
  that it is not the COPY being measured.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from typing import Any

from psycopg import sql

from cdc.postgres import catalog
from bench.harness import MIX
from bench.loadgen import COLUMNS, KeyModel, LoadGen


class BulkGen:
    """Set-based generator of the same 60/30/10 workload: per transaction one INSERT ...
    unnest, one UPDATE ... = ANY, one DELETE ... = ANY (distinct keys, rows of the LoadGen
    table shape). Needed above ~2k changes/s, where LoadGen's one-statement-per-change
    round trips (one Python thread) top out on this machine."""

    def __init__(self, dsn: str, schema: str, table: str, seed: int) -> None:
        self.dsn, self.t = dsn, sql.Identifier(schema, table)
        self.rng = random.Random(seed)
        self.conn = catalog.connect(dsn, autocommit=False)
        keys = [r[0] for r in self.conn.execute(sql.SQL("SELECT id FROM {} WHERE id > 0").format(self.t))]
        self.conn.commit()
        self.model = KeyModel(keys)
        self.key_space = max(2 * len(keys), 1000)
        self.next_fresh = max([self.key_space, *keys]) + 1

    def _fresh(self, taken: set[int]) -> int:
        for _ in range(8):
            k = self.rng.randint(1, self.key_space)
            if k not in self.model and k not in taken:
                return k
        self.next_fresh += 1
        return self.next_fresh - 1

    def tx(self, n: int) -> int:
        ins_n, del_n = round(n * MIX[0]), round(n * MIX[2])
        upd_n = n - ins_n - del_n
        touched: set[int] = set()
        upd: list[int] = []
        while len(upd) < upd_n and len(touched) < len(self.model):
            k = self.model.choice(self.rng)
            if k not in touched:
                touched.add(k)
                upd.append(k)
        dels: list[int] = []
        while len(dels) < del_n and len(touched) < len(self.model):
            k = self.model.choice(self.rng)
            if k not in touched:
                touched.add(k)
                dels.append(k)
        ins = []
        for _ in range(ins_n):
            k = self._fresh(touched)
            touched.add(k)
            ins.append(k)
        with self.conn.cursor() as cur:
            if upd:
                cur.execute(sql.SQL("UPDATE {} SET amount = amount + 1, qty = qty + 1 WHERE id = ANY(%s)")
                            .format(self.t), [upd])
            if dels:
                cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self.t), [dels])
            if ins:
                cur.execute(sql.SQL(
                    "INSERT INTO {} (id, name, amount, qty, updated_at, attrs) SELECT k, 'bulk ' || k, "
                    "(k %% 100000) / 100.0, (k %% 1000)::int, now(), jsonb_build_object('n', k, 'tag', 'bulk') "
                    "FROM unnest(%s::bigint[]) AS k").format(self.t), [ins])
        self.conn.commit()
        for k in dels:
            self.model.remove(k)
        for k in ins:
            self.model.add(k)
        return len(upd) + len(dels) + len(ins)

    def run(self, rate: float, duration_s: float, batch: int, probe: LoadGen | None = None,
            probe_every_s: float = 0.2) -> dict[str, Any]:
        probes: list[dt.datetime] = []
        stop = threading.Event()

        def prober() -> None:
            nxt = time.monotonic()
            while not stop.is_set():
                probes.append(probe.probe()[1])
                nxt += probe_every_s
                stop.wait(max(0.0, nxt - time.monotonic()))

        th = threading.Thread(target=prober, daemon=True) if probe else None
        if th:
            th.start()
        start = time.monotonic()
        changes = txs = 0
        while True:
            now = time.monotonic()
            if now - start >= duration_s:
                break
            due = start + changes / rate
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            changes += self.tx(batch)
            txs += 1
        elapsed = time.monotonic() - start
        stop.set()
        if th:
            th.join(5)
        return {"target_rate": rate, "changes": changes, "transactions": txs, "elapsed_s": elapsed,
                "achieved_rate": changes / elapsed, "probes": probes}

    def close(self) -> None:
        self.conn.close()


def copy_rows(dsn: str, schema: str, table: str, rows: int, seed: int) -> None:
    """(Re)create a LoadGen-shaped table and COPY `rows` rows (text format, generated cheaply)."""
    t = sql.Identifier(schema, table)
    rng = random.Random(seed)
    words = ("alpha", "beta", "gamma", "delta", "épsilon", "zeta")
    with catalog.connect(dsn, autocommit=False) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text, amount numeric(12,2), qty int, "
                             "updated_at timestamptz, attrs jsonb)").format(t))
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(t, cols)) as cp:
            chunk = []
            for k in range(1, rows + 1):
                r = rng.getrandbits(32)
                chunk.append(f"{k}\t{words[r % 6]} {r}\t{(r % 2000000) / 100 - 10000:.2f}\t{r % 100000}\t"
                             f"2024-01-01 00:00:00+00\t{{\"n\": {r % 1000}, \"tag\": \"{words[r % 6]}\"}}\n")
                if len(chunk) == 10000:
                    cp.write("".join(chunk))
                    chunk = []
            if chunk:
                cp.write("".join(chunk))
        conn.commit()
        conn.execute(sql.SQL("ANALYZE {}").format(t))
        conn.commit()
