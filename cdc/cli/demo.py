"""`cdc demo`: the README's one command. Stack up, a demo table, its mirror, a query
before and after a live change, with the time the change took to show."""

from __future__ import annotations

import sys
import time
from typing import Any

from cdc.core import names
from cdc.postgres import catalog
from cdc.mirrors import state as mirror_state
from cdc.mirrors import service
from cdc.core.settings import get_settings

DEMO_TABLE = "demo_orders"
_DDL = f"""
CREATE TABLE IF NOT EXISTS public.{DEMO_TABLE} (
    id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())
"""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _show(ctx: service.Context, name: str, title: str) -> list[dict[str, Any]]:
    enabled, why = service.pinot_enabled(ctx)
    sql = (f'SELECT status, COUNT(*) AS orders, SUM(amount) AS total FROM "{name}" '
           f"GROUP BY status ORDER BY status")
    if enabled:
        cols, rows = service.query(ctx, sql)
        result = [dict(zip(cols, r)) for r in rows]
        source = f"Pinot: {sql}"
    else:
        with catalog.connect(ctx.settings.source_dsn()) as conn:
            info = catalog.introspect(conn, "public", DEMO_TABLE)
        state = mirror_state.flat_topic_rows(ctx.settings.kafka_bootstrap, names.flat_topic(name), info)
        agg: dict[str, list] = {}
        for row in state.values():
            a = agg.setdefault(row["status"], [0, 0])
            a[0] += 1
            a[1] += row["amount"] or 0
        result = [{"status": k, "orders": v[0], "total": str(v[1])} for k, v in sorted(agg.items())]
        source = (f"Pinot is not available here ({why}); the same GROUP BY over the mirror's upsert state "
                  f"read from its flat topic {names.flat_topic(name)}, which is exactly Pinot's input")
    print(f"\n{title}\n  ({source})")
    for r in result:
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    return result


def run(rows: int = 1000) -> int:
    from cdc.stack import manager
    settings = get_settings()
    _say("1/4 bringing up the local stack (first run downloads everything; later runs take seconds)")
    manager.up(settings)
    ctx = service.context(settings)
    _say(f"2/4 creating public.{DEMO_TABLE} with {rows} rows in Postgres")
    with catalog.connect(settings.source_dsn()) as conn:
        conn.execute(_DDL)
        if conn.execute(f"SELECT count(*) FROM public.{DEMO_TABLE}").fetchone()[0] == 0:
            conn.execute(f"INSERT INTO public.{DEMO_TABLE} (customer, amount, status) "
                         "SELECT 'customer ' || g, (g % 500) + 0.99, (ARRAY['new','paid','shipped'])[1 + g % 3] "
                         "FROM generate_series(1, %s) g", (rows,))
    _say(f"3/4 mirroring public.{DEMO_TABLE}")
    rec = service.add_mirror(ctx, "public", DEMO_TABLE)
    _wait(ctx, rec.name)
    before = _show(ctx, rec.name, "Before the change:")
    _say("4/4 live change in Postgres: 10 'new' orders become 'paid'")
    with catalog.connect(settings.source_dsn()) as conn:
        conn.execute(f"UPDATE public.{DEMO_TABLE} SET status = 'paid' WHERE id IN "
                     f"(SELECT id FROM public.{DEMO_TABLE} WHERE status = 'new' ORDER BY id LIMIT 10)")
    t0 = time.monotonic()
    after = before
    while after == before and time.monotonic() - t0 < 60:
        time.sleep(0.2)
        after = _quiet(ctx, rec.name)
    _show(ctx, rec.name, f"After the change (visible {time.monotonic() - t0:.1f}s after COMMIT):")
    print(f"\nmirror {rec.name} keeps running: `cdc mirror status {rec.name}`, `cdc mirror verify {rec.name}`")
    return 0 if after != before else 1


def _quiet(ctx: service.Context, name: str) -> list[dict[str, Any]]:
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return _show(ctx, name, "")


def _wait(ctx: service.Context, name: str, timeout: float = 180) -> None:
    rec = service.get_mirror(ctx, name)
    t0 = time.monotonic()
    with catalog.connect(ctx.settings.source_dsn()) as conn:
        info = catalog.introspect(conn, rec.spec.schema_name, rec.spec.table_name)
        want = conn.execute(f"SELECT count(*) FROM public.{DEMO_TABLE}").fetchone()[0]
    while time.monotonic() - t0 < timeout:
        enabled, _ = service.pinot_enabled(ctx)
        have = (ctx.broker.count(name) if enabled else
                len(mirror_state.flat_topic_rows(ctx.settings.kafka_bootstrap, names.flat_topic(name), info)))
        _say(f"   snapshot: {have}/{want} rows in the mirror")
        if have >= want:
            return
        time.sleep(1)
    raise TimeoutError(f"the mirror did not reach {want} rows in {timeout}s")
