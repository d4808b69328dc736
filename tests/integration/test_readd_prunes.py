"""Remove (keeping the data), change the table, add again: the mirror ends exact (issue 11 item 4).

Real stack: Postgres -> Debezium -> Kafka -> Flink -> flat topic, read through Apache Pinot
1.5.1's upsert code in-process (no Pinot server here). `mirror remove` without --drop-data
keeps the topics (and, with a Pinot server, the table). Rows deleted while no mirror follows
the table leave no DELETE event anywhere; before the prune, a re-added mirror showed them
forever, and `cdc mirror resync` could not remove them. Now the add prunes them once the
snapshot is read, through the change topic (cdc/mirrors/prune.py), without clearing anything
first (no half-empty window). Postgres is the oracle (SELECT of the table).
"""

from __future__ import annotations

import sys
import uuid

import psycopg
import pytest

from cdc.core import names
from cdc.core.settings import Settings
from cdc.clients.kafka import KafkaAdmin
from cdc.mirrors import service
from cdc.mirrors import state as mirror_state
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.postgres import catalog
from syncing import ensure_database, wait_for

pytestmark = pytest.mark.integration

DB = "h_readd"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)




def test_readd_over_kept_data_removes_rows_deleted_meanwhile(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(registry_path=tmp_path_factory.mktemp("readd") / "r.db")
    ensure_database(settings.local_postgres_dsn, DB)
    ctx = service.context(settings)
    pg = psycopg.connect(settings.local_dsn(DB), autocommit=True)
    table = f"items_{uuid.uuid4().hex[:6]}"
    name = f"readd_{table}"
    pg.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, v text, n int NOT NULL)")
    pg.execute(f"INSERT INTO public.{table} SELECT g, 'v' || g, 0 FROM generate_series(1, 300) g")
    service.add_source(ctx, DB, settings.local_dsn(DB))

    def in_sync() -> bool:
        info = catalog.introspect(pg, "public", table)
        try:
            return service.read_mirror(ctx, name)[0] == mirror_state.postgres_rows(pg, info)
        except Exception as exc:  # noqa: BLE001
            _say(f"mirror not readable yet: {exc}")
            return False

    try:
        service.add_mirror(ctx, "public", table, source=DB, name=name, progress=_say)
        wait_for("the first mirror in sync", in_sync, 120)
        service.remove_mirror(ctx, name, drop_data=False, progress=_say)
        assert names.flat_topic(name) in KafkaAdmin(settings.kafka_bootstrap).topics(), "the flat topic was kept"

        # while no mirror follows the table: no event for these reaches any topic
        pg.execute(f"DELETE FROM public.{table} WHERE id % 10 = 0")                 # 30 rows
        pg.execute(f"UPDATE public.{table} SET v = 'changed', n = n + 1 WHERE id % 7 = 0")
        pg.execute(f"INSERT INTO public.{table} SELECT g, 'new', 1 FROM generate_series(301, 320) g")

        service.add_mirror(ctx, "public", table, source=DB, name=name, progress=_say)
        wait_for("the re-added mirror equal to Postgres", in_sync, 180)
        events = [e for e in ctx.registry.list_events(name) if e.action == "pruned"]
        assert events and events[0].reason.startswith("30 key(s)"), [(e.action, e.reason) for e in events]
        report = verify_mirror(ctx, name, settle_timeout=60, progress=_say)
        assert report.clean, format_report(report)
    finally:
        try:
            if ctx.registry.get_mirror(name) is not None:
                service.remove_mirror(ctx, name, drop_data=True, progress=_say)
            else:
                kafka = KafkaAdmin(settings.kafka_bootstrap)
                for t in (names.flat_topic(name), names.dead_letter_topic(name),
                          names.change_topic(DB, "public", table)):
                    kafka.delete_topic(t)
        finally:
            pg.execute(f"DROP TABLE IF EXISTS public.{table}")
            pg.close()
            ctx.close()
