"""a) Ceiling: how fast Postgres itself decodes the workload's WAL (pgoutput), changes/s.

This is the yardstick the sustained rate (d) is a fraction of: the pipeline cannot deliver
changes faster than the source decodes them, so "x% of the ceiling" says how much of the
pipeline's cost is above Postgres. The table has the mirror's shape and `REPLICA IDENTITY
FULL`, as Debezium sets it on tables with text/jsonb, so the WAL is what a mirrored table
writes. 100k changes of the 30/60/10 insert/update/delete mix (`BulkGen`, 100 transactions of
1,000) are written with two pgoutput slots already created; then `pg_recvlogical` decodes each
slot to /dev/null up to the LSN after the load. It runs before any mirror exists and writes
nowhere, so a ratio to it is a demanding one. Best of the two slots (same WAL). Slots,
publication and table are dropped after.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from bench.harness import SCHEMA, Bench, log
from bench.workload import BulkGen, copy_rows


def run(b: Bench) -> dict[str, Any]:
    n_changes, per_tx = 100_000, 1000
    table = "ceiling"
    copy_rows(b.dsn, SCHEMA, table, 50_000, seed=11)
    slots = ["bench_ceiling_1", "bench_ceiling_2"]
    pub = "bench_ceiling"
    with b.pg() as conn:
        # Same WAL as a mirrored table: Debezium sets REPLICA IDENTITY FULL on tables with
        # toastable columns (text, jsonb), so updates/deletes carry the whole old row.
        conn.execute(f"ALTER TABLE {SCHEMA}.{table} REPLICA IDENTITY FULL")
        conn.execute(f"DROP PUBLICATION IF EXISTS {pub}")
        conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {SCHEMA}.{table}")
        for sl in slots:
            if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (sl,)).fetchone():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (sl,))
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (sl,))
    gen = BulkGen(b.dsn, SCHEMA, table, seed=12)
    t = time.monotonic()
    made = sum(gen.tx(per_tx) for _ in range(n_changes // per_tx))
    gen_s = time.monotonic() - t
    gen.close()
    with b.pg() as conn:
        endpos = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                           "FROM pg_replication_slots WHERE slot_name = %s", (slots[0],)).fetchone()[0]
    d = conninfo_to_dict(b.dsn)
    binp = Path("/usr/lib/postgresql/15/bin/pg_recvlogical")
    if not binp.exists():
        from cdc.stack.components import postgres_bin_dir
        binp = postgres_bin_dir(b.s) / "pg_recvlogical"
    times = []
    for sl in slots:
        # The whole DSN as -d: it may name a passfile (the stack's own Postgres does), which
        # -h/-p/-U/-d would drop, and pg_recvlogical then waits for a password forever.
        cmd = [str(binp), "-d", b.dsn, "--no-loop",
               "--slot", sl, "--start", "-o", "proto_version=1", "-o", f"publication_names={pub}",
               "--endpos", endpos, "-f", "/dev/null"]
        env = {**os.environ, **({"PGPASSWORD": str(d["password"])} if d.get("password") else {})}
        t = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        times.append(time.monotonic() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_recvlogical failed: {proc.stderr.strip()[-300:]}")
    with b.pg() as conn:
        for sl in slots:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (sl,))
        conn.execute(f"DROP PUBLICATION {pub}")
        conn.execute(f"DROP TABLE {SCHEMA}.{table}")
    best = min(times)
    res = {
        "changes": made, "transactions": n_changes // per_tx, "changes_per_tx": per_tx, "wal_bytes": int(wal),
        "generate_s": round(gen_s, 2), "decode_runs_s": [round(x, 3) for x in times],
        "changes_per_s": round(made / best), "changes_per_s_median_of_runs": round(made / sorted(times)[len(times) // 2]),
        "method": "pg_recvlogical --start -o proto_version=1 --endpos <lsn after load> -f /dev/null, "
                  "slot created before the load; best of 2 slots (same WAL)"}
    log(f"ceiling: {made} changes decoded in {best:.2f}s = {made / best:,.0f}/s (runs {times})")
    return res
