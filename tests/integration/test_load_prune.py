"""Keys whose mirror record the copy load wrote are pruned too (cdc/mirrors/prune.py).

Pruning removes keys Postgres no longer has when no DELETE event exists for them (a lost
slot's repair, a detached partition). For a streamed key it turns the key's change event into
a delete; a loaded key has no change event, so the delete goes to the flat topic. Rows are
deleted here while the table is out of the publication (so no DELETE event exists), some of
them loaded and never changed, one updated after the load (its winning record is streamed);
after prune.prune the mirror must equal Postgres.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.mirrors import prune, service
from cdc.mirrors.verify import format_report, verify_mirror
from syncing import wait_in_sync

pytestmark = pytest.mark.integration


def test_prune_removes_loaded_and_streamed_keys(ctx: service.Context, pg: psycopg.Connection) -> None:
    name = f"prune_load_{uuid.uuid4().hex[:6]}"
    t = sql.Identifier("public", name)
    pg.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, k text NOT NULL, v int)").format(t))
    pg.execute(sql.SQL("INSERT INTO {} SELECT g, 'key ' || g, g FROM generate_series(1, 5000) g").format(t))
    rec = service.add_mirror(ctx, "public", name, load="copy", progress=print)
    try:
        pg.execute(sql.SQL("UPDATE {} SET v = -7 WHERE id = 7").format(t))          # streamed after the load
        wait_in_sync(ctx, rec.name, timeout=120)
        pub = names.publication_name("default")
        pg.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(sql.Identifier(pub), t))
        pg.execute(sql.SQL("DELETE FROM {} WHERE id IN (3, 7, 4000, 4999)").format(t))   # no DELETE event
        pg.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(pub), t))
        removed = prune.prune(ctx, service.get_source(ctx, "default"), [service.get_mirror(ctx, rec.name)],
                              progress=print)
        assert removed == {rec.name: 4}
        pg.execute(sql.SQL("UPDATE {} SET v = 0 WHERE id = 8").format(t))            # streamed after the prune
        wait_in_sync(ctx, rec.name, timeout=120)
        report = verify_mirror(ctx, rec.name, settle_timeout=30)
        assert report.clean, format_report(report)
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
        pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
