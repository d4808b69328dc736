"""`cdc demo`: the README's main command. Stack up, a demo table, its mirror, the same
aggregate over the mirror and over Postgres before and after a live change, with the time
the change took to show. Exit 0 only when the mirror's answer equals Postgres' both times."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from typing import Any

from cdc.core import names
from cdc.core.settings import get_settings
from cdc.mirrors import service
from cdc.postgres import catalog

DEMO_TABLE = "demo_orders"
_DDL = f"""
CREATE TABLE IF NOT EXISTS public.{DEMO_TABLE} (
    id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())
"""
# The oracle: Postgres answers the same question the mirror is asked.
_PG_AGG = (f"SELECT status, count(*) AS orders, sum(amount) AS total FROM public.{DEMO_TABLE} "
           "GROUP BY status ORDER BY status")
Agg = list[tuple[str, int, Decimal]]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _postgres_agg(dsn: str) -> Agg:
    with catalog.connect(dsn) as conn:
        return [(s, int(n), Decimal(t)) for s, n, t in conn.execute(_PG_AGG)]


def _mirror_agg(ctx: service.Context, name: str) -> tuple[Agg, str]:
    """(the aggregate over the mirror, what answered it). Pinot answers the SQL: its broker
    where a Pinot server runs, else its query engine in-process. SUMPRECISION is Pinot's
    exact BIG_DECIMAL sum (SUM would answer in DOUBLE)."""
    sql = (f'SELECT status, COUNT(*) AS orders, SUMPRECISION(amount) AS total FROM "{name}" '
           "GROUP BY status ORDER BY status LIMIT 100")
    _, rows = service.query(ctx, sql)
    return [(str(s), int(n), Decimal(str(t))) for s, n, t in rows], f"{service.answered_by(ctx)}: {sql}"


def _print(title: str, mirror: Agg, reader: str, pg: Agg) -> None:
    print(f"\n{title}\n  mirror (answered by {reader}):")
    for s, n, t in mirror:
        print(f"    status={s:<8} orders={n:<5} total={t}")
    print(f"  Postgres ({_PG_AGG}):")
    for s, n, t in pg:
        print(f"    status={s:<8} orders={n:<5} total={t}")
    print(f"  equal: {'yes' if mirror == pg else 'NO'}")


def run(rows: int = 1000) -> int:
    from cdc.stack import manager
    settings = get_settings()
    _say("1/4 bringing up the local stack (first run downloads everything; later runs take seconds)")
    manager.up(settings)
    ctx = service.context(settings)
    dsn = settings.source_dsn()
    _say(f"2/4 creating public.{DEMO_TABLE} with {rows} rows in Postgres")
    with catalog.connect(dsn) as conn:
        conn.execute(_DDL)
        if conn.execute(f"SELECT count(*) FROM public.{DEMO_TABLE}").fetchone()[0] == 0:
            conn.execute(f"INSERT INTO public.{DEMO_TABLE} (customer, amount, status) "
                         "SELECT 'customer ' || g, (g %% 500) + 0.99, (ARRAY['new','paid','shipped'])[1 + g %% 3] "
                         "FROM generate_series(1, %s) g", (rows,))
    _say(f"3/4 mirroring public.{DEMO_TABLE}")
    rec = service.add_mirror(ctx, "public", DEMO_TABLE)
    _wait(ctx, rec.name, dsn)
    before, reader = _mirror_agg(ctx, rec.name)
    pg_before = _postgres_agg(dsn)
    _print("Before the change:", before, reader, pg_before)
    _say("4/4 live change in Postgres: 10 'new' orders become 'paid'")
    with catalog.connect(dsn) as conn:
        conn.execute(f"UPDATE public.{DEMO_TABLE} SET status = 'paid' WHERE id IN "
                     f"(SELECT id FROM public.{DEMO_TABLE} WHERE status = 'new' ORDER BY id LIMIT 10)")
    pg_after = _postgres_agg(dsn)
    t0 = time.monotonic()
    after = before
    while after != pg_after and time.monotonic() - t0 < 120:
        time.sleep(0.2)
        after, reader = _mirror_agg(ctx, rec.name)
    _print(f"After the change (visible {time.monotonic() - t0:.1f}s after COMMIT):", after, reader, pg_after)
    print(f"\nmirror {rec.name} keeps running: `cdc mirror status {rec.name}`, `cdc mirror verify {rec.name}`")
    return 0 if before == pg_before and after == pg_after else 1


def _wait(ctx: service.Context, name: str, dsn: str, timeout: float = 180) -> None:
    with catalog.connect(dsn) as conn:
        want = conn.execute(f"SELECT count(*) FROM public.{DEMO_TABLE}").fetchone()[0]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _, rows = service.query(ctx, f'SELECT COUNT(*) FROM "{name}"')
        have = int(rows[0][0]) if rows else 0
        _say(f"   snapshot: {have}/{want} rows in the mirror ({names.flat_topic(name)})")
        if have >= want:
            return
        time.sleep(1)
    raise TimeoutError(f"the mirror did not reach {want} rows in {timeout}s")
