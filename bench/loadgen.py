"""A deterministic, seeded change generator for a mirrored Postgres table.

Why deterministic: a failing verify run must be reproducible. Operations are chosen from a
seeded RNG and an in-memory model of the live keys, never from reads of the database, so the
same seed applied to the same starting table yields the same sequence of changes (and a run
can be replayed against a fresh table to chase a bug).

The table has a bigint key and one column of each kind the pipeline converts (text,
numeric(12,2), int, timestamptz, jsonb). The mix covers inserts, updates (some partial, so
untouched columns must survive), deletes and primary-key updates (a delete of the old key
plus an insert of the new one downstream). Inserts draw keys from 1..key_space, so deleted
keys come back: the hard case for an upsert mirror.

Pacing is a token bucket: bursts are capped, so the achieved rate follows the target; when
the database cannot keep up the bucket does not "catch up" in a burst, and the shortfall is
reported as lag behind schedule instead.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from cdc.postgres import catalog

OpKind = Literal["insert", "update", "delete", "pk_update"]
OP_KINDS: tuple[OpKind, ...] = ("insert", "update", "delete", "pk_update")
DEFAULT_MIX = (0.3, 0.6, 0.08, 0.02)
COLUMNS = ("id", "name", "amount", "qty", "updated_at", "attrs")
PROBE_KEY = -1          # outside the generator's key range: probes never disturb the op model
_WORDS = ("alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ēta", "theta", "iota", "kappa",
          "lambda", "mu", "ñu", "xi", "omicron", "pi", "rho", "sigma", "tau", "übsilon", "☃ snow")
_TS_BASE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Op:
    kind: OpKind
    key: int
    new_key: int | None = None                       # pk_update only
    values: dict[str, Any] = field(default_factory=dict)  # insert: all columns; update: the changed ones


def random_values(rng: random.Random, partial: bool = False) -> dict[str, Any]:
    """Column values (jsonb as text). partial=True changes amount/qty plus a random subset."""
    vals: dict[str, Any] = {
        "name": None if rng.random() < 0.05 else f"{rng.choice(_WORDS)} {rng.randrange(10**6)}",
        "amount": Decimal(rng.randrange(-10**9, 10**9)) / 100,
        "qty": rng.randint(-1000, 10**6),
        "updated_at": _TS_BASE + dt.timedelta(microseconds=rng.randrange(0, 3 * 365 * 86400 * 10**6)),
        "attrs": json.dumps({"tag": rng.choice(_WORDS), "n": rng.randrange(1000), "ok": rng.random() < 0.5,
                             "list": [rng.randrange(100) for _ in range(rng.randrange(4))],
                             "price": f"{rng.randrange(10**5) / 100:.2f}"}),
    }
    if partial:
        keep = ["amount", "qty"] + [c for c in ("name", "updated_at", "attrs") if rng.random() < 0.5]
        vals = {c: vals[c] for c in keep}
    return vals


class KeyModel:
    """The live keys in insertion order with O(1) add, remove and seeded random choice."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._keys: list[int] = []
        self._pos: dict[int, int] = {}
        for k in keys:
            self.add(k)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: int) -> bool:
        return key in self._pos

    def add(self, key: int) -> None:
        self._pos[key] = len(self._keys)
        self._keys.append(key)

    def remove(self, key: int) -> None:
        i = self._pos.pop(key)
        last = self._keys.pop()
        if last != key:
            self._keys[i] = last
            self._pos[last] = i

    def choice(self, rng: random.Random) -> int:
        return self._keys[rng.randrange(len(self._keys))]


class OpStream:
    """Infinite iterator of Ops; pure (no I/O) so the sequence for a seed is testable."""

    def __init__(self, seed: int, initial_keys: Iterable[int], key_space: int,
                 mix: tuple[float, float, float, float] = DEFAULT_MIX) -> None:
        if len(mix) != 4 or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError("mix is (inserts, updates, deletes, pk_updates), non-negative, not all zero")
        self.rng = random.Random(seed)
        self.model = KeyModel(initial_keys)
        self.key_space = key_space
        self.mix = mix
        self._next_fresh = max(key_space, max(self.model._keys, default=0)) + 1

    def _fresh_key(self) -> int:
        """A key not live now: a random one in 1..key_space (so deleted keys return), else a new one."""
        for _ in range(8):
            k = self.rng.randint(1, self.key_space)
            if k not in self.model:
                return k
        self._next_fresh += 1
        return self._next_fresh - 1

    def __iter__(self) -> Iterator[Op]:
        return self

    def __next__(self) -> Op:
        kind: OpKind = self.rng.choices(OP_KINDS, weights=self.mix)[0]
        if kind != "insert" and not len(self.model):
            kind = "insert"
        if kind == "insert":
            key = self._fresh_key()
            self.model.add(key)
            return Op("insert", key, values=random_values(self.rng))
        key = self.model.choice(self.rng)
        if kind == "update":
            return Op("update", key, values=random_values(self.rng, partial=True))
        self.model.remove(key)
        if kind == "delete":
            return Op("delete", key)
        new = self._fresh_key()
        self.model.add(new)
        return Op("pk_update", key, new_key=new)


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked. Pure given the clock."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, n: float) -> float:
        """Seconds until n tokens are available (0 when they are now)."""
        self._refill()
        short = n - self.tokens
        return short / self.rate if short > 1e-9 else 0.0

    def take(self, n: float) -> None:
        self._refill()
        self.tokens -= n


class Probe(BaseModel):
    key: int
    commit_ts: dt.datetime


class RunStats(BaseModel):
    target_rate: float
    changes: int = 0
    transactions: int = 0
    elapsed_s: float = 0.0
    achieved_rate: float = 0.0
    per_op: dict[str, int] = {k: 0 for k in OP_KINDS}
    lag_behind_schedule_s: float = 0.0       # at the end: how far the last change was late
    max_lag_behind_schedule_s: float = 0.0
    stopped: bool = False                    # stopped early by stop()
    probes: list[Probe] = []


class LoadGen:
    """Applies an OpStream to schema.table at a paced rate in small transactions."""

    def __init__(self, dsn: str, schema: str, table: str, *, seed: int = 1, key_space: int | None = None,
                 mix: tuple[float, float, float, float] = DEFAULT_MIX) -> None:
        self.dsn, self.schema, self.table, self.seed, self.mix = dsn, schema, table, seed, mix
        self.key_space = key_space
        self.stop_event = threading.Event()
        self._stream: OpStream | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._t = sql.Identifier(schema, table)

    # -- connections -------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = catalog.connect(self.dsn, autocommit=False)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask a running run() (in any thread) to finish its current transaction and return."""
        self.stop_event.set()

    # -- table ---------------------------------------------------------------------------------

    def create_table(self, rows: int, *, replace: bool = True) -> None:
        """(Re)create the table and COPY `rows` rows with keys 1..rows (content from the seed)."""
        conn = self._db()
        if replace:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t))
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text, amount numeric(12,2), qty int, "
                             "updated_at timestamptz, attrs jsonb)").format(self._t))
        rng = random.Random(f"{self.seed}/initial")
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(self._t, cols)) as cp:
            for k in range(1, rows + 1):
                v = random_values(rng)
                cp.write_row([k] + [v[c] for c in COLUMNS[1:]])
        conn.commit()
        self._stream = OpStream(self.seed, range(1, rows + 1), self.key_space or max(2 * rows, 1000), self.mix)

    def stream(self) -> OpStream:
        """The op stream; on an existing table it starts from the keys found there (ordered)."""
        if self._stream is None:
            conn = self._db()
            keys = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} WHERE id > 0 ORDER BY id").format(self._t))]
            conn.commit()
            self._stream = OpStream(self.seed, keys, self.key_space or max(2 * len(keys), 1000), self.mix)
        return self._stream

    def apply(self, cur: psycopg.Cursor[Any], op: Op) -> None:
        t = self._t
        if op.kind == "insert":
            cur.execute(sql.SQL("INSERT INTO {} (id, name, amount, qty, updated_at, attrs) "
                                "VALUES (%s, %s, %s, %s, %s, %s)").format(t),
                        [op.key] + [op.values[c] for c in COLUMNS[1:]])
        elif op.kind == "update":
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in op.values)
            cur.execute(sql.SQL("UPDATE {} SET {} WHERE id = %s").format(t, sets), [*op.values.values(), op.key])
        elif op.kind == "delete":
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), [op.key])
        else:
            cur.execute(sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(t), [op.new_key, op.key])
        if cur.rowcount != 1:
            raise RuntimeError(f"{op.kind} of key {op.key} touched {cur.rowcount} rows: someone else writes "
                               f"{self.schema}.{self.table}, so the op model no longer matches it")

    # -- probes --------------------------------------------------------------------------------

    def probe(self) -> tuple[int, dt.datetime]:
        """Upsert the probe row (key PROBE_KEY) with updated_at = clock_timestamp() taken right
        before COMMIT in its own connection; freshness = when the mirror shows that value."""
        with self._lock, catalog.connect(self.dsn, autocommit=False) as conn:
            row = conn.execute(sql.SQL(
                "INSERT INTO {} AS t (id, name, amount, qty, updated_at, attrs) "
                "VALUES (%s, 'probe', 0, 0, clock_timestamp(), '{{}}') ON CONFLICT (id) DO UPDATE "
                "SET updated_at = clock_timestamp(), qty = t.qty + 1 RETURNING updated_at").format(self._t),
                [PROBE_KEY]).fetchone()
            conn.commit()
        assert row is not None
        return PROBE_KEY, row[0]

    # -- run -----------------------------------------------------------------------------------

    def run(self, rate_per_s: float, duration_s: float | None = None, *, changes: int | None = None,
            batch_per_tx: int = 1, probe_every_s: float | None = None,
            stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic) -> RunStats:
        """Apply changes at `rate_per_s` until `duration_s` passed, `changes` were made, or stop()."""
        if duration_s is None and changes is None:
            raise ValueError("give duration_s or changes")
        if batch_per_tx < 1:
            raise ValueError("batch_per_tx must be >= 1")
        stop = stop or self.stop_event
        stream, conn = self.stream(), self._db()
        bucket = TokenBucket(rate_per_s, burst=max(float(batch_per_tx), rate_per_s * 0.05), clock=clock)
        stats = RunStats(target_rate=rate_per_s)
        start = clock()
        next_probe = start if probe_every_s else float("inf")
        try:
            while not stop.is_set():
                now = clock()
                if duration_s is not None and now - start >= duration_s:
                    break
                n = batch_per_tx if changes is None else min(batch_per_tx, changes - stats.changes)
                if n <= 0:
                    break
                if now >= next_probe:
                    stats.probes.append(Probe.model_validate(dict(zip(("key", "commit_ts"), self.probe()))))
                    next_probe = now + (probe_every_s or 0)
                wait = bucket.wait_time(n)
                if wait > 0:
                    stop.wait(min(wait, 0.5))
                    continue
                bucket.take(n)
                with conn.cursor() as cur:
                    for _ in range(n):
                        op = next(stream)
                        self.apply(cur, op)
                        stats.per_op[op.kind] += 1
                conn.commit()
                stats.changes += n
                stats.transactions += 1
                lag = max(0.0, (clock() - start) - stats.changes / rate_per_s)
                stats.max_lag_behind_schedule_s = max(stats.max_lag_behind_schedule_s, lag)
                stats.lag_behind_schedule_s = lag
        finally:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
        stats.stopped = stop.is_set()
        stop.clear()
        stats.elapsed_s = clock() - start
        stats.achieved_rate = stats.changes / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        return stats
