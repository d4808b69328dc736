"""End-to-end benchmark of the cdc pipeline, with baselines measured in the same run.

    python -m bench.run [--quick] [--only STEPS] [--keep-up]

Brings up the stack described by Settings() (CDC_* environment; run it on its own stack,
e.g. CDC_STATE_DIR=/var/lib/cdc-bench and shifted CDC_PORT_*), then measures:

  a) ceiling    Postgres logical decoding (pgoutput via pg_recvlogical) of the same
                60/30/10 update/insert/delete workload: changes/s
  b) snapshot   add_mirror of a 1M-row table (200k with --quick) -> all rows in the flat topic
  c) freshness  commit -> visible in the flat topic, LoadGen at 1,000 changes/s, probes every
                0.2 s; plus single-change freshness on an idle pipeline
  d) sustained  step the write rate; highest rate whose freshness p99 < 5 s; ratio to (a)
  e) peer       Debezium + ExtractNewRecordState straight to Kafka (no Flink), same probes
  f) control    50 mirrors on one source: registration time, slots, stack RSS
  tuning        overrides passed through the harness (connector config / Flink job options)

"Visible" everywhere means: a consumer of the mirror's flat Kafka topic (exactly what Pinot's
REALTIME table would consume) received the record. Pinot itself does not run here.
Results: a table on stdout, bench/results/bench-<date>.json, bench/results/freshness.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cdc.postgres import catalog, slots
from cdc.core import names
from cdc.mapping import render
from cdc.mirrors import service
from cdc.core.settings import Settings
from bench.loadgen import COLUMNS, PROBE_KEY, KeyModel, LoadGen
from cdc.stack import manager

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


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


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
        kids = _children_map()
        out = {}
        for name, pid in self.pids.items():
            tree = _tree(pid, kids) if name != "bench-harness" else [pid]
            out[name] = _ticks(pid, children=(name == "postgres")) + sum(_ticks(p) for p in tree[1:])
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


# ------------------------------------------------------------------ Kafka helpers

def end_offsets(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets", "log_level": 0,
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def distinct_keys(bootstrap: str, topic: str, timeout: float = 120.0) -> int:
    """Distinct message keys in the topic (reads it whole; keys only, values not parsed)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-keys-{time.time_ns()}", "log_level": 0,
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    keys: set[bytes] = set()
    try:
        md = c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                if m.error() is None:
                    keys.add(m.key())
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
    finally:
        c.close()
    return len(keys)


class ProbeWatcher:
    """Consumes a topic from its current end; remembers (updated_at_us, seen_wall_s) of every
    record of the probe key. seen = when this consumer received it (poll returned)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{time.time_ns()}",
                           "enable.auto.commit": False, "log_level": 0, "fetch.wait.max.ms": 10,
                           "fetch.error.backoff.ms": 10, "isolation.level": "read_committed"})
        md = self.c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        self.c.assign([TopicPartition(topic, p, self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                       for p in parts])
        self.seen: list[tuple[int, float]] = []
        self.records = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self.c.consume(5000, 0.05)
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                self.records += 1
                k = m.key()
                if not k or b"-1" not in k or m.value() is None:
                    continue
                try:
                    if json.loads(k).get("id") != PROBE_KEY:
                        continue
                    u = ts_us(json.loads(m.value()).get("updated_at"))
                except (ValueError, AttributeError):
                    continue
                if u is not None:
                    with self._lock:
                        self.seen.append((u, now))

    def first_seen(self, commit_us: int) -> float | None:
        with self._lock:
            for u, t in self.seen:
                if u >= commit_us:
                    return t
        return None

    def wait_for(self, commit_us: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.first_seen(commit_us)
            if t is not None:
                return t
            time.sleep(0.01)
        return None

    def latencies(self, probes: list[dt.datetime], drain_timeout: float = 60.0) -> tuple[list[float], int, float]:
        """Freshness per probe (seen - commit), missing count, and how long the drain took."""
        t = time.monotonic()
        if probes:
            self.wait_for(ts_us(max(probes)), drain_timeout)
        drain = time.monotonic() - t
        out, missing = [], 0
        for p in probes:
            u = ts_us(p)
            seen = self.first_seen(u)
            if seen is None:
                missing += 1
            else:
                out.append(max(0.0, seen - u / 1e6))
        return out, missing, drain

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.c.close()


# ------------------------------------------------------------------ load generators

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


# ------------------------------------------------------------------ the benchmark

class Bench:
    def __init__(self, settings: Settings, quick: bool) -> None:
        self.s = settings
        self.quick = quick
        self.dsn = settings.source_dsn()
        self.out: dict[str, Any] = {"quick": quick, "notes": []}
        self.ctx: service.Context | None = None
        self.lg: LoadGen | None = None
        self.batch_1000 = 10
        self.runs: dict[str, dict[str, Any]] = {}     # freshness series for the plot

    # -- setup / teardown -----------------------------------------------------------------

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

    def pg(self):
        return catalog.connect(self.dsn)

    # -- a) decoding ceiling ----------------------------------------------------------------

    def ceiling(self) -> None:
        n_changes, per_tx = 100_000, 1000
        table = "ceiling"
        copy_rows(self.dsn, SCHEMA, table, 50_000, seed=11)
        slots = ["bench_ceiling_1", "bench_ceiling_2"]
        pub = "bench_ceiling"
        with self.pg() as conn:
            # Same WAL as a mirrored table: Debezium sets REPLICA IDENTITY FULL on tables with
            # toastable columns (text, jsonb), so updates/deletes carry the whole old row.
            conn.execute(f"ALTER TABLE {SCHEMA}.{table} REPLICA IDENTITY FULL")
            conn.execute(f"DROP PUBLICATION IF EXISTS {pub}")
            conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {SCHEMA}.{table}")
            for sl in slots:
                if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (sl,)).fetchone():
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (sl,))
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (sl,))
        gen = BulkGen(self.dsn, SCHEMA, table, seed=12)
        t = time.monotonic()
        made = sum(gen.tx(per_tx) for _ in range(n_changes // per_tx))
        gen_s = time.monotonic() - t
        gen.close()
        with self.pg() as conn:
            endpos = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                               "FROM pg_replication_slots WHERE slot_name = %s", (slots[0],)).fetchone()[0]
        d = conninfo_to_dict(self.dsn)
        binp = Path("/usr/lib/postgresql/15/bin/pg_recvlogical")
        if not binp.exists():
            from cdc.stack.components import postgres_bin_dir
            binp = postgres_bin_dir(self.s) / "pg_recvlogical"
        times = []
        for sl in slots:
            cmd = [str(binp), "-h", str(d.get("host", "127.0.0.1")), "-p", str(d.get("port", 5432)),
                   "-U", str(d.get("user", "postgres")), "-d", str(d.get("dbname", "postgres")), "--no-loop",
                   "--slot", sl, "--start", "-o", "proto_version=1", "-o", f"publication_names={pub}",
                   "--endpos", endpos, "-f", "/dev/null"]
            env = {**os.environ, **({"PGPASSWORD": str(d["password"])} if d.get("password") else {})}
            t = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            times.append(time.monotonic() - t)
            if proc.returncode != 0:
                raise RuntimeError(f"pg_recvlogical failed: {proc.stderr.strip()[-300:]}")
        with self.pg() as conn:
            for sl in slots:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (sl,))
            conn.execute(f"DROP PUBLICATION {pub}")
            conn.execute(f"DROP TABLE {SCHEMA}.{table}")
        best = min(times)
        self.out["ceiling"] = {
            "changes": made, "transactions": n_changes // per_tx, "changes_per_tx": per_tx, "wal_bytes": int(wal),
            "generate_s": round(gen_s, 2), "decode_runs_s": [round(x, 3) for x in times],
            "changes_per_s": round(made / best), "changes_per_s_median_of_runs": round(made / sorted(times)[len(times) // 2]),
            "method": "pg_recvlogical --start -o proto_version=1 --endpos <lsn after load> -f /dev/null, "
                      "slot created before the load; best of 2 slots (same WAL)"}
        log(f"ceiling: {made} changes decoded in {best:.2f}s = {made / best:,.0f}/s (runs {times})")

    # -- the freshness mirror ---------------------------------------------------------------

    def fresh_mirror(self) -> None:
        self.lg = LoadGen(self.dsn, SCHEMA, FRESH_TABLE, seed=21, mix=MIX)
        self.lg.create_table(FRESH_ROWS)
        self.lg.probe()
        t = time.monotonic()
        rec = service.add_mirror(self.ctx, SCHEMA, FRESH_TABLE, progress=quiet)
        self.mirror = rec.name
        self.flat = names.flat_topic(rec.name)
        self.change = names.change_topic("default", SCHEMA, FRESH_TABLE)
        while end_offsets(self.s.kafka_bootstrap, self.flat) < FRESH_ROWS + 1:
            if time.monotonic() - t > 180:
                raise RuntimeError(f"the {FRESH_ROWS}-row snapshot of {SCHEMA}.{FRESH_TABLE} did not arrive in 180 s")
            time.sleep(0.5)
        self.out["fresh_mirror"] = {"table": f"{SCHEMA}.{FRESH_TABLE}", "rows": FRESH_ROWS,
                                    "add_to_snapshot_visible_s": round(time.monotonic() - t, 1),
                                    "note": "first mirror of the source: Debezium initial snapshot"}
        log(f"mirror {self.mirror} live ({self.out['fresh_mirror']['add_to_snapshot_visible_s']} s incl. snapshot)")
        # Warm-up (JIT, connections) and pick LoadGen's batch_per_tx for 1,000/s.
        w = ProbeWatcher(self.s.kafka_bootstrap, self.flat)
        for b in (20, 50, 100, 200):       # with probes on, as in the measured runs
            st = self.lg.run(1000, 6, batch_per_tx=b, probe_every_s=0.2)
            self.batch_1000 = b
            if st.achieved_rate >= 980:
                break
        _, ts = self.lg.probe()
        w.wait_for(ts_us(ts), 60)
        w.close()
        log(f"warm-up done; LoadGen batch_per_tx={self.batch_1000} for 1,000/s")

    # -- c) freshness ---------------------------------------------------------------------

    def freshness_run(self, name: str, topic: str, rate: float = 1000, duration: float = 30,
                      gen: str = "loadgen", batch: int | None = None) -> dict[str, Any]:
        """One run: load at `rate` for `duration` s with probes every 0.2 s; freshness of every
        probe at `topic`; CPU per process; Debezium (WAL) and Flink (topic) lag at the end."""
        w = ProbeWatcher(self.s.kafka_bootstrap, topic)
        time.sleep(0.3)
        flat0, change0 = end_offsets(self.s.kafka_bootstrap, self.flat), end_offsets(self.s.kafka_bootstrap, self.change)
        with CpuWindow(self.s) as cpu:
            if gen == "loadgen":
                lg = LoadGen(self.dsn, SCHEMA, FRESH_TABLE, seed=random.randrange(1 << 30), mix=MIX)
                st = lg.run(rate, duration, batch_per_tx=batch or self.batch_1000, probe_every_s=0.2)
                lg.close()
                stats = {"target_rate": rate, "changes": st.changes, "transactions": st.transactions,
                         "elapsed_s": st.elapsed_s, "achieved_rate": st.achieved_rate,
                         "max_lag_behind_schedule_s": st.max_lag_behind_schedule_s}
                probes = [p.commit_ts for p in st.probes]
            else:
                bg = BulkGen(self.dsn, SCHEMA, FRESH_TABLE, seed=random.randrange(1 << 30))
                batch = batch or max(10, int(rate / 20))
                res = bg.run(rate, duration, batch, probe=self.lg)
                bg.close()
                probes = res.pop("probes")
                stats = res
            lag = self.lags()
        lat, missing, drain = w.latencies(probes, drain_timeout=60)
        records = w.records
        w.close()
        out = {"generator": gen, "batch_per_tx": batch or self.batch_1000, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                              for k, v in stats.items()},
               "freshness": summary(lat, missing), "drain_after_load_s": round(drain, 2),
               "records_seen_on_topic": records, "lag_at_end": lag, "cpu_pct_of_one_core": cpu.result,
               "flat_records": end_offsets(self.s.kafka_bootstrap, self.flat) - flat0,
               "change_records": end_offsets(self.s.kafka_bootstrap, self.change) - change0}
        self.runs[name] = {"probe_ts": [ts_us(p) / 1e6 for p in probes], "lat": lat, "topic": topic}
        f = out["freshness"]
        log(f"{name}: {out['achieved_rate']:.0f}/s achieved; freshness p50 {_s(f['p50_s'])} p95 {_s(f['p95_s'])} "
            f"p99 {_s(f['p99_s'])} (n={f['samples']}, missing {missing}); cpu {cpu.result}")
        return out

    def lags(self) -> dict[str, Any]:
        """WAL the source slot has not confirmed (Debezium behind) and change - flat records
        (Flink behind), sampled at the end of the load."""
        out: dict[str, Any] = {}
        with self.pg() as conn:
            rows = conn.execute("SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                                "FROM pg_replication_slots").fetchall()
        out["slot_unconfirmed_wal_bytes"] = {r[0]: int(r[1] or 0) for r in rows}
        out["change_minus_flat_records"] = (end_offsets(self.s.kafka_bootstrap, self.change)
                                            - end_offsets(self.s.kafka_bootstrap, self.flat))
        return out

    def single_change(self, topic: str, n: int = 20) -> dict[str, Any]:
        w = ProbeWatcher(self.s.kafka_bootstrap, topic)
        time.sleep(0.5)
        lat, missing = [], 0
        rng = random.Random(5)
        for _ in range(n):
            _, ts = self.lg.probe()
            seen = w.wait_for(ts_us(ts), 20)
            if seen is None:
                missing += 1
            else:
                lat.append(seen - ts_us(ts) / 1e6)
            time.sleep(rng.uniform(0.2, 0.6))     # no load: the pipeline is idle between probes
        w.close()
        res = summary(lat, missing)
        log(f"single change ({topic}): p50 {_s(res['p50_s'])} p95 {_s(res['p95_s'])}")
        return res

    # -- b) snapshot ------------------------------------------------------------------------

    def snapshot(self, rows: int, path_note: str = "") -> dict[str, Any]:
        t = time.monotonic()
        copy_rows(self.dsn, SCHEMA, "snap", rows, seed=31)
        copy_s = time.monotonic() - t
        log(f"snapshot: {rows:,} rows COPYed in {copy_s:.1f}s; add_mirror")
        topic = names.flat_topic(f"{SCHEMA}_snap")
        ctopic = names.change_topic("default", SCHEMA, "snap")
        timeline = []
        with CpuWindow(self.s) as cpu:
            t = time.monotonic()
            rec = service.add_mirror(self.ctx, SCHEMA, "snap", progress=quiet)
            add_s = time.monotonic() - t
            first = None
            while True:
                n = end_offsets(self.s.kafka_bootstrap, topic)
                c = end_offsets(self.s.kafka_bootstrap, ctopic)
                el = time.monotonic() - t
                timeline.append((round(el, 1), c, n))
                if n and first is None:
                    first = el
                if n >= rows:
                    break
                if el > (240 if not self.quick else 120):
                    self.out["notes"].append(f"snapshot stopped waiting at {el:.0f}s with {n} of {rows} rows")
                    self.out["notes"].append("snapshot rows/s then counts only the rows that arrived")
                    break
                time.sleep(0.5)
            total = time.monotonic() - t
        keys = distinct_keys(self.s.kafka_bootstrap, topic)
        res = {
            "rows": rows, "copy_s": round(copy_s, 1), "add_mirror_call_s": round(add_s, 1),
            "first_row_s": round(first or 0, 1), "all_rows_s": round(total, 1), "flat_records": n,
            "distinct_keys_in_flat_topic": keys, "rows_per_s": round(min(n, rows) / total),
            "path": "incremental snapshot (signal): the connector already streams another table of the source"
                    + path_note,
            "cpu_pct_of_one_core": cpu.result, "timeline_s_change_flat": timeline[:: max(1, len(timeline) // 40)]}
        log(f"snapshot: {n:,} records, {keys:,} distinct keys in {total:.1f}s = {min(n, rows) / total:,.0f} rows/s")
        service.remove_mirror(self.ctx, rec.name, drop_data=True, progress=quiet)
        with self.pg() as conn:
            conn.execute(f"DROP TABLE {SCHEMA}.snap")
        time.sleep(3)
        return res

    # -- e) peer baseline -----------------------------------------------------------------

    def peer(self, duration: float) -> dict[str, Any]:
        c = self.ctx.connect
        main = names.connector_name("default")
        cfg = dict(c.get_config(main))
        name, slot, prefix = "bench-peer", "bench_peer", "benchpeer"
        for k in list(cfg):
            if k.startswith("signal.") or k == "heartbeat.action.query":
                del cfg[k]
        cfg.update({"name": name, "slot.name": slot, "publication.name": slot, "topic.prefix": prefix,
                    "table.include.list": render._table_regex(SCHEMA, FRESH_TABLE), "snapshot.mode": "no_data",
                    "transforms": "unwrap",
                    "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
                    "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
                    "transforms.unwrap.add.fields": "op,lsn,source.ts_ms"})
        topic = f"{prefix}.{SCHEMA}.{FRESH_TABLE}"
        service.create_connector(self.ctx, name, cfg)
        c.wait_running(name, timeout=120)
        try:
            from cdc.clients.kafka import KafkaAdmin
            admin = KafkaAdmin(self.s.kafka_bootstrap)
            deadline = time.monotonic() + 90
            while topic not in admin.topics():      # created by Connect with the first record
                if time.monotonic() > deadline:
                    raise RuntimeError(f"peer topic {topic} never appeared")
                self.lg.probe()
                time.sleep(1)
            w = ProbeWatcher(self.s.kafka_bootstrap, topic)
            _, ts = self.lg.probe()
            w.wait_for(ts_us(ts), 60)
            w.close()
            # The mirror's own connector is paused so the peer has the machine to itself, as
            # the Flink path had in (c); it catches up afterwards from its slot.
            c.pause(main)
            c.wait_state(main, "PAUSED")
            time.sleep(1)
            res = self.freshness_run("peer_1000", topic, 1000, duration)
            res["single_change"] = self.single_change(topic, 10 if self.quick else 20)
            res["config"] = {k: v for k, v in cfg.items() if k.startswith("transforms") or k in ("snapshot.mode",)}
            res["topic"] = topic
            res["note"] = "cdc-default paused during this run (its slot retains WAL, then catches up)"
        finally:
            try:
                c.resume(main)
                c.wait_running(main, timeout=120)
            finally:
                service.delete_connector(self.ctx, name)
                self._drop_slot(slot)
                from cdc.clients.kafka import KafkaAdmin
                KafkaAdmin(self.s.kafka_bootstrap).delete_topic(topic)
        _, ts = self.lg.probe()           # the mirror catches up before anything else runs
        w = ProbeWatcher(self.s.kafka_bootstrap, self.flat)
        w.wait_for(ts_us(ts), 120)
        w.close()
        return res

    def _drop_slot(self, slot: str) -> None:
        with self.pg() as conn:
            slots.drop_slot_when_idle(conn, slot, 60)
            conn.execute(f"DROP PUBLICATION IF EXISTS {slot}")

    # -- d) sustained --------------------------------------------------------------------

    def sustained(self, rates: list[int], duration: float) -> dict[str, Any]:
        steps = []
        best = 0
        for r in rates:
            res = self.freshness_run(f"step_{r}", self.flat, r, duration, gen="bulk")
            f = res["freshness"]
            held = (f["p99_s"] is not None and f["p99_s"] < 5 and f["missing"] == 0
                    and res["achieved_rate"] >= 0.95 * r)
            res["held"] = held
            res["backpressure"] = self.backpressure()
            steps.append(res)
            if held:
                best = r
            else:
                break
            time.sleep(2)
        return {"step_duration_s": duration, "steps": steps, "max_held_rate": best,
                "criterion": "achieved >= 95% of target, every probe seen, freshness p99 < 5 s"}

    def backpressure(self) -> dict[str, Any]:
        rec = self.ctx.registry.get_mirror(self.mirror)
        jm = self.ctx.jobmanager.http
        try:
            job = jm.get(f"/jobs/{rec.flink_job_id}")
            out = {}
            for v in job.get("vertices", []):
                bp = jm.get(f"/jobs/{rec.flink_job_id}/vertices/{v['id']}/backpressure") or {}
                subs = bp.get("subtasks") or [{}]
                out[v["name"][:60]] = {"level": bp.get("backpressureLevel"),
                                       "ratio": subs[0].get("ratio"), "busyRatio": subs[0].get("busyRatio"),
                                       "idleRatio": subs[0].get("idleRatio")}
            return out
        except Exception as exc:  # informative only
            return {"error": str(exc)[:200]}

    # -- tuning: overrides through the harness -------------------------------------------------

    def set_connector(self, overrides: dict[str, str | None]) -> None:
        name = names.connector_name("default")
        cfg = dict(self.ctx.connect.get_config(name))
        for k, v in overrides.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        self.ctx.connect.put_config(name, cfg)
        time.sleep(3)
        self.ctx.connect.wait_running(name, timeout=120)
        self._settle()

    def set_flink(self, sink: dict[str, str], sets: dict[str, str]) -> str:
        """Cancel the mirror's job and resubmit its rendered SQL with sink options / SET
        statements overridden (the template itself is not changed)."""
        rec = self.ctx.registry.get_mirror(self.mirror)
        spec = rec.spec
        with self.pg() as conn:
            info = catalog.introspect(conn, spec.schema_name, spec.table_name)
        stmts = render.render_flink_sql(spec, info, kafka_bootstrap=self.s.kafka_bootstrap, change_topic=self.change,
                                        flat_topic=self.flat, group_id=names.flink_group(spec.name))
        opts = {"sink.delivery-guarantee": "at-least-once", **sink}
        new = []
        for st in stmts:
            if "'sink.delivery-guarantee' = 'at-least-once'" in st:
                st = st.replace("'sink.delivery-guarantee' = 'at-least-once'",
                                ",\n  ".join(f"'{k}' = '{v}'" for k, v in opts.items()))
            for k, v in sets.items():
                if st.startswith(f"SET '{k}'"):
                    st = f"SET '{k}' = '{v}'"
            new.append(st)
        for k, v in sets.items():
            if not any(x.startswith(f"SET '{k}'") for x in new):
                new.insert(0, f"SET '{k}' = '{v}'")
        self.ctx.jobmanager.cancel(rec.flink_job_id)
        deadline = time.monotonic() + 60
        while self.ctx.jobmanager.job_state(rec.flink_job_id) not in ("CANCELED", "FAILED", "FINISHED", None):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        job = self.ctx.gateway.submit_job(new, {"pipeline.name": f"cdc-mirror-{spec.name}"})
        self.ctx.registry.update_mirror(spec.name, flink_job_id=job)
        self._settle()
        return job

    def _settle(self) -> None:
        _, ts = self.lg.probe()
        w = ProbeWatcher(self.s.kafka_bootstrap, self.flat)
        seen = w.wait_for(ts_us(ts), 120)
        w.close()
        if seen is None:
            raise RuntimeError("the mirror did not deliver a probe within 120 s after a config change")
        time.sleep(2)

    # -- f) control plane ----------------------------------------------------------------

    def control_plane(self) -> dict[str, Any]:
        n = 10 if self.quick else 50
        with self.pg() as conn:
            for i in range(n):
                conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.cp_{i:02d}")
                conn.execute(f"CREATE TABLE {SCHEMA}.cp_{i:02d} (id bigint PRIMARY KEY, v text, n int)")
                conn.execute(f"INSERT INTO {SCHEMA}.cp_{i:02d} SELECT g, 'v' || g, g FROM generate_series(1, 10) g")
        per = []
        names = []
        t0 = time.monotonic()
        for i in range(n):
            t = time.monotonic()
            rec = service.add_mirror(self.ctx, SCHEMA, f"cp_{i:02d}", progress=quiet)
            per.append(round(time.monotonic() - t, 2))
            names.append(rec.name)
        total = time.monotonic() - t0
        with self.pg() as conn:
            slots = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
            pub_tables = conn.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = %s",
                                      (names.slot_name("default"),)).fetchone()[0]
        time.sleep(5)
        jobs = self.ctx.jobmanager.jobs()
        mine = {self.ctx.registry.get_mirror(nm).flink_job_id for nm in names}
        states: dict[str, int] = {}
        for j in jobs:
            if j.id in mine:
                states[j.state] = states.get(j.state, 0) + 1
        tasks_running = 0
        for jid in mine:
            d = self.ctx.jobmanager.job(jid) or {}
            if d.get("vertices") and all(v.get("status") == "RUNNING" for v in d["vertices"]):
                tasks_running += 1
        ov = self.ctx.jobmanager.overview()
        st = manager.status(self.s)
        rows_visible = sum(1 for nm in names if end_offsets(self.s.kafka_bootstrap, names.flat_topic(nm)) >= 10)
        res = {"mirrors": n, "register_total_s": round(total, 1), "per_mirror_s": per,
               "per_mirror_p50_s": pct(per, 50), "per_mirror_max_s": max(per),
               "replication_slots": [list(r) for r in slots], "slots_for_source": sum(1 for r in slots if r[0] == names.slot_name("default")),
               "publication_tables": pub_tables, "flink_job_states": states,
               "flink_jobs_with_all_tasks_running": tasks_running,
               "flink_slots_total": ov.get("slots-total"), "flink_slots_available": ov.get("slots-available"),
               "mirrors_with_rows_in_flat_topic_after_5s": rows_visible,
               "stack_total_rss_bytes": st["total_rss_bytes"],
               "rss_by_process_bytes": {p["name"]: p["rss_bytes"] for p in st["processes"]}}
        log(f"control plane: {n} mirrors in {total:.1f}s (p50 {res['per_mirror_p50_s']:.2f}s), slots {slots}, "
            f"jobs {states}, RSS {st['total_rss_bytes'] / 2**30:.2f} GiB")
        t = time.monotonic()
        for nm in names:
            service.remove_mirror(self.ctx, nm, drop_data=True, progress=quiet)
        res["remove_total_s"] = round(time.monotonic() - t, 1)
        with self.pg() as conn:
            for i in range(n):
                conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.cp_{i:02d}")
        return res


def _s(v: float | None) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return "inf"
    return f"{v:.2f}s" if v < 10 else f"{v:.1f}s"


# ------------------------------------------------------------------ report

def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {"cpu_model": model, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


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
            f"{_s(f['p50_s'])}/{_s(f['p95_s'])}/{_s(f['p99_s'])}", "", "", f"p99<=2s: {ok}")
        sc = out.get("single_change", {})
        if sc:
            add("c) single change, idle pipeline p50/p95", f"{_s(sc['p50_s'])}/{_s(sc['p95_s'])}")
    if pe and fr:
        pf, f = pe["freshness"], fr["freshness"]
        ratio = f["p99_s"] / pf["p99_s"] if pf["p99_s"] else None
        ok = "MET" if ratio is not None and ratio <= 1.5 else "MISSED"
        add(f"e) peer Debezium+SMT @1000/s (achieved {pe['achieved_rate']:.0f}/s) p50/p95/p99",
            f"{_s(pf['p50_s'])}/{_s(pf['p95_s'])}/{_s(pf['p99_s'])}", "",
            f"Flink p99 / peer p99 = {ratio:.2f}x" if ratio else "", f"<=1.5x: {ok}")
        if pe.get("single_change"):
            sc = pe["single_change"]
            add("e) peer single change p50/p95", f"{_s(sc['p50_s'])}/{_s(sc['p95_s'])}")
    su = out.get("sustained")
    if su:
        for st in su["steps"]:
            f = st["freshness"]
            add(f"d) step {st['target_rate']:.0f}/s ({su['step_duration_s']:.0f}s): achieved, p50/p99",
                f"{st['achieved_rate']:.0f}/s, {_s(f['p50_s'])}/{_s(f['p99_s'])}", "", "",
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
            add(f"tuning: {name} @{tr['target_rate']:.0f}/s p50/p99", f"{_s(f['p50_s'])}/{_s(f['p99_s'])}",
                f"p99 {_s(base)}" if base else "",
                f"{f['p99_s'] / base:.2f}x" if base and f["p99_s"] not in (None, float('inf')) else "")
        if "single_change" in tr:
            sc = tr["single_change"]
            add(f"tuning: {name} single change p50/p95", f"{_s(sc['p50_s'])}/{_s(sc['p95_s'])}")
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
                                    "connect_producer_linger_ms": "5 (worker)"}
        if "a" in only:
            b.ceiling()
        b.fresh_mirror()
        if "c" in only:
            out["single_change"] = b.single_change(b.flat, 10 if q else 20)
            out["freshness_1000"] = b.freshness_run("freshness_1000", b.flat, 1000, run_s)
        if "e" in only:
            out["peer_1000"] = b.peer(run_s)
        if "d" in only:
            rates = [500, 1000, 2000, 4000, 8000, 16000, 32000]
            out["sustained"] = b.sustained(rates, 15 if q else 30)
        if "t" in only:
            tun: dict[str, Any] = {}
            out["tuning"] = tun
            base = (out.get("freshness_1000") or {}).get("freshness", {}).get("p99_s")
            base_single = out.get("single_change")
            tr_s = 12 if q else 20
            try:
                # 1. Debezium poll.interval.ms: an empty queue makes the task sleep a full poll
                #    interval (500 ms default) before looking again.
                b.set_connector({"poll.interval.ms": "50"})
                r = b.freshness_run("tune_poll50", b.flat, 1000, tr_s)
                r["single_change"] = b.single_change(b.flat, 10)
                r["baseline_p99_s"] = base
                r["baseline_single_change"] = base_single
                r["override"] = {"connector": {"poll.interval.ms": "50"}}
                tun["debezium poll.interval.ms=50"] = r
                # 2. Flink sink delivery guarantee (one short run each), with poll 50 kept.
                for dg, extra in (("none", {}),
                                  ("exactly-once", {"sink.transactional-id-prefix": "bench-eo",
                                                    "properties.transaction.timeout.ms": "600000"})):
                    b.set_flink({"sink.delivery-guarantee": dg, **extra}, {})
                    r = b.freshness_run(f"tune_dg_{dg}", b.flat, 1000, tr_s)
                    r["baseline_p99_s"] = tun["debezium poll.interval.ms=50"]["freshness"]["p99_s"]
                    r["override"] = {"flink_sink": {"sink.delivery-guarantee": dg, **extra},
                                     "connector": {"poll.interval.ms": "50"}}
                    r["note"] = "baseline = at-least-once with poll.interval.ms=50"
                    tun[f"flink sink.delivery-guarantee={dg}"] = r
                b.set_flink({}, {})
                b.set_connector({"poll.interval.ms": None})     # back to the template defaults
            except Exception as exc:
                tun["error"] = f"{type(exc).__name__}: {exc}"
                log(f"tuning failed: {exc}")
                traceback.print_exc()
        if "b" in only:
            out["snapshot"] = b.snapshot(200_000 if q else 1_000_000)
        if "b" in only and "t" in only:
            # Snapshot tuning: the incremental snapshot is Debezium-bound (flat topic keeps up
            # with the change topic, Connect not CPU-saturated): bigger chunks, fewer
            # watermark round trips. 200k rows with and without the override.
            tun = out.setdefault("tuning", {})
            try:
                if not q:
                    tun["snapshot 200k, template defaults"] = b.snapshot(200_000)
                b.set_connector({"incremental.snapshot.chunk.size": "8192"})
                r = b.snapshot(200_000, "; override incremental.snapshot.chunk.size=8192")
                r["baseline_rows_per_s"] = (tun.get("snapshot 200k, template defaults") or out["snapshot"])["rows_per_s"]
                r["override"] = {"connector": {"incremental.snapshot.chunk.size": "8192"}}
                tun["debezium incremental.snapshot.chunk.size=8192"] = r
                b.set_connector({"incremental.snapshot.chunk.size": None})
            except Exception as exc:
                tun["snapshot_error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        if "f" in only:
            out["control_plane"] = b.control_plane()
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        out["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        out["wall_s"] = round(time.monotonic() - T0, 1)
        if b.lg:
            b.lg.close()
        if not args.keep_up:
            try:
                manager.down(settings, progress=quiet)
                log("stack stopped")
            except Exception as exc:
                out["notes"].append(f"down failed: {exc}")
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
              f"{out['machine']['mem_gib']} GiB; {'QUICK' if q else 'full'} run, {out['wall_s']} s")
        print("visible = in the mirror's flat Kafka topic (Pinot's input); Pinot itself does not run here\n")
        print(out["table"])
        print(f"\nJSON: {jpath}\nplot: {RESULTS / 'freshness.png'}")
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
