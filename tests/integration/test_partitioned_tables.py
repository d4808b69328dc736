"""Partitioned tables stream through their root (issue 11, item 7).

A RANGE-partitioned and a LIST-partitioned table are mirrored through their roots; changes
made through the root and directly to partitions, rows that move between partitions (an
UPDATE of the partition key), a partition created after the mirror exists (CREATE TABLE ...
PARTITION OF), a table attached with rows it already had (ATTACH PARTITION) and a detached
partition must all end in the mirror exactly as `SELECT * FROM root` shows them: Postgres is
the oracle (syncing.wait_in_sync reads the root), the mirror is read through Pinot's own
upsert code, and `cdc mirror verify` must exit 0 at the end.

Attached rows: ATTACH PARTITION writes no row changes to the WAL, so no change event exists
for the rows the table already had, yet `SELECT * FROM root` shows them from then on. The
mirror must show them too: the reconciler notices the new partition and has Debezium read
that partition's rows. Likewise DETACH removes rows from the root without a DELETE event;
the reconciler removes those keys from the mirror.

Own database (h_part), own source, own registry: the stack is shared with other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.core import names
from cdc.core.errors import PreflightError
from cdc.core.settings import Settings
from cdc.mirrors import reconcile, service
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.postgres import catalog
from syncing import private_database_context, wait_in_sync

pytestmark = pytest.mark.integration
DB = SOURCE = "h_part"


def _dsn(settings: Settings, db: str) -> str:
    return settings.local_dsn(db)


@pytest.fixture(scope="module")
def part_ctx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[service.Context]:
    with private_database_context(settings, Path(tmp_path_factory.mktemp("part")), DB, SOURCE,
                                  lambda db: _dsn(settings, db)) as ctx:
        yield ctx


SETUP = """
CREATE TABLE public.readings (id bigint NOT NULL, taken date NOT NULL, v text, n int,
                              PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);
CREATE TABLE public.readings_2024 PARTITION OF public.readings FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.readings_2025 PARTITION OF public.readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.readings SELECT g, date '2024-01-01' + (g % 700), 'r' || g, g FROM generate_series(1, 400) g;
CREATE TABLE public.orders (region text NOT NULL, id int NOT NULL, amount numeric(10,2), note text,
                            PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE public.orders_eu PARTITION OF public.orders FOR VALUES IN ('eu');
CREATE TABLE public.orders_us PARTITION OF public.orders FOR VALUES IN ('us');
CREATE TABLE public.orders_other PARTITION OF public.orders DEFAULT;
INSERT INTO public.orders SELECT (ARRAY['eu','us','latam'])[1 + g % 3], g, g * 1.25, 'o' || g
  FROM generate_series(1, 300) g;
"""

CHANGES = """
-- through the root and directly into partitions
INSERT INTO public.readings VALUES (1001, '2024-06-01', 'root insert', 1), (1002, '2025-06-01', 'root insert', 2);
INSERT INTO public.readings_2025 VALUES (1003, '2025-07-01', 'partition insert', 3);
UPDATE public.readings_2024 SET v = 'partition update' WHERE id % 10 = 1;
UPDATE public.readings SET n = n + 1000 WHERE id % 10 = 2;
DELETE FROM public.readings_2025 WHERE id % 10 = 3;
DELETE FROM public.readings WHERE id % 10 = 4;
-- rows moving between partitions (UPDATE of the partition key: a new key in the mirror)
UPDATE public.readings SET taken = taken + 366 WHERE id % 10 = 5 AND taken < '2024-12-01';
INSERT INTO public.orders_eu VALUES ('eu', 1001, 9.99, 'partition insert');
UPDATE public.orders SET amount = amount + 1 WHERE id % 7 = 0;
DELETE FROM public.orders_us WHERE id % 7 = 1;
UPDATE public.orders SET region = 'us' WHERE region = 'eu' AND id % 5 = 0;
UPDATE public.orders SET region = 'apac-x' WHERE region = 'latam' AND id % 4 = 0;
"""


def _publication(conn: psycopg.Connection) -> tuple[bool | None, list[str]]:
    pub = names.publication_name(SOURCE)
    row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (pub,)).fetchone()
    tables = [f"{s}.{t}" for s, t in conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2", (pub,))]
    return (row[0] if row else None), tables


def _cli(ctx: service.Context, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file),
           "CDC_POSTGRES_DSN": ctx.settings.source_dsn()}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


class _Reconciling:
    """The reconciler of this test's registry, every 2 s in a thread (as `cdc serve` runs it)."""

    def __init__(self, ctx: service.Context) -> None:
        self.rec = reconcile.Reconciler(lambda: service.context(ctx.settings), ctx.settings, interval_s=2.0,
                                        lease_ttl_s=120.0)

    def __enter__(self) -> _Reconciling:
        self.rec.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.rec.stop(120), "the reconciler did not stop"


def test_partitioned_tables_stream_through_their_root(part_ctx: service.Context) -> None:
    ctx = part_ctx
    dsn = _dsn(ctx.settings, DB)
    service.add_source(ctx, SOURCE, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
        t0 = time.monotonic()
        readings = service.add_mirror(ctx, "public", "readings", source=SOURCE, progress=print)   # initial snapshot
        orders = service.add_mirror(ctx, "public", "orders", source=SOURCE, progress=print)       # incremental one
        print(f"both mirrors added in {time.monotonic() - t0:.1f}s")
        for rec in (readings, orders):
            print(f"{rec.name}: snapshot in sync after {wait_in_sync(ctx, rec.name, timeout=180):.1f}s")

        conn.execute(CHANGES)
        for rec in (readings, orders):
            print(f"{rec.name}: changes to partitions in sync after {wait_in_sync(ctx, rec.name, timeout=120):.1f}s")
        via_root, published = _publication(conn)
        print(f"publication: publish_via_partition_root={via_root}, tables {published}")
        assert via_root is True, "the publication must publish partitions through their root"
        assert "public.readings" in published and "public.orders" in published
        assert not any(t.startswith(("public.readings_", "public.orders_")) for t in published), published
        # A partition is not a mirror of its own: its changes are published as the root's.
        with pytest.raises(PreflightError) as refused:
            service.plan_mirror(ctx, "public", "readings_2024", source=SOURCE)
        print(refused.value)
        assert "partition of public.readings" in str(refused.value) and "public.readings" in str(refused.value.hint)

        with _Reconciling(ctx):
            # a partition created after the mirror exists, written through the root and directly
            conn.execute("CREATE TABLE public.readings_2026 PARTITION OF public.readings "
                         "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
            conn.execute("INSERT INTO public.readings VALUES (2001, '2026-02-01', 'new partition', 1)")
            conn.execute("INSERT INTO public.readings_2026 VALUES (2002, '2026-03-01', 'new partition', 2)")
            conn.execute("UPDATE public.readings SET taken = '2026-05-05' WHERE id % 10 = 6")
            print(f"created partition in sync after {wait_in_sync(ctx, readings.name, timeout=120):.1f}s")

            # a table attached with the rows it already had: no change event exists for them
            conn.execute("CREATE TABLE public.orders_apac (LIKE public.orders INCLUDING ALL)")
            conn.execute("INSERT INTO public.orders_apac SELECT 'apac', g, g * 2.5, 'attached ' || g "
                         "FROM generate_series(5001, 5150) g")
            conn.execute("ALTER TABLE public.orders_other ADD CONSTRAINT no_apac CHECK (region <> 'apac')")
            conn.execute("ALTER TABLE public.orders ATTACH PARTITION public.orders_apac FOR VALUES IN ('apac')")
            t_attach = time.monotonic()
            print(f"attached partition's rows in sync after {wait_in_sync(ctx, orders.name, timeout=240):.1f}s")
            snap = service.mirror_status(ctx, orders.name)["snapshot"]
            print(f"snapshot of the attached rows: {snap}")
            assert snap["state"] == "done" and snap["rows"] == 150, "only the attached partition's rows are re-read"
            conn.execute("UPDATE public.orders SET note = 'changed after attach' WHERE region = 'apac' AND id % 3 = 0")
            conn.execute("DELETE FROM public.orders_apac WHERE id % 3 = 1")
            print(f"changes to the attached partition in sync after {wait_in_sync(ctx, orders.name, timeout=120):.1f}s"
                  f" ({time.monotonic() - t_attach:.1f}s since the ATTACH)")

            # a detached partition: its rows leave the root without a DELETE event
            conn.execute("ALTER TABLE public.orders DETACH PARTITION public.orders_us")
            print(f"detached partition's rows gone after {wait_in_sync(ctx, orders.name, timeout=240):.1f}s")
            conn.execute("INSERT INTO public.orders VALUES ('eu', 7001, 1.00, 'after detach')")
            conn.execute("INSERT INTO public.orders_us VALUES ('us', 7002, 1.00, 'detached: not in the root')")
            wait_in_sync(ctx, orders.name, timeout=120)
            wait_in_sync(ctx, readings.name, timeout=60)

        events = {rec.name: [(e.action, e.reason) for e in ctx.registry.list_events(rec.name, limit=50)]
                  for rec in (readings, orders)}
        for name, evs in events.items():
            print(name, [a for a, _ in evs])
        assert any(a == "partitions" and "orders_apac" in (r or "") for a, r in events[orders.name]), events
        assert any(a == "partitions" and "orders_us" in (r or "") for a, r in events[orders.name]), events

        for rec in (readings, orders):
            report = verify_mirror(ctx, rec.name, settle_timeout=60)
            print(format_report(report))
            assert report.clean, format_report(report)
            cli = _cli(ctx, "mirror", "verify", rec.name)
            print(cli.stdout, cli.stderr[-500:])
            assert cli.returncode == 0, (cli.stdout, cli.stderr[-2000:])
        st = ctx.connect.status(names.connector_name(SOURCE))
        assert st is not None and st.running, st


def test_dba_publication_must_publish_via_root(part_ctx: service.Context) -> None:
    """A DBA-managed publication without publish_via_partition_root publishes a partitioned
    table's changes as its partitions': preflight refuses and names the statement."""
    dsn = _dsn(part_ctx.settings, DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.pt (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k)")
        conn.execute("CREATE TABLE IF NOT EXISTS public.pt_1 PARTITION OF public.pt FOR VALUES IN (1)")
        from cdc.mapping.render import bootstrap_sql
        for stmt in bootstrap_sql(SOURCE):
            conn.execute(stmt)
        conn.execute("DROP PUBLICATION IF EXISTS dba_pub")
        conn.execute("CREATE PUBLICATION dba_pub FOR TABLE public.pt, _cdc.debezium_signal, _cdc.heartbeat, "
                     "_cdc.freshness")
        with pytest.raises(PreflightError) as refused:
            catalog.preflight(conn, "public", "pt", None, publication="dba_pub")
        print(refused.value, refused.value.hint)
        assert "ALTER PUBLICATION dba_pub SET (publish_via_partition_root = true);" in str(refused.value.hint)
        conn.execute("ALTER PUBLICATION dba_pub SET (publish_via_partition_root = true)")
        assert catalog.preflight(conn, "public", "pt", None, publication="dba_pub").partition_oids is not None
        conn.execute("DROP PUBLICATION dba_pub")
