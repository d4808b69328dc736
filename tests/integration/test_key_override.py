"""`--key` on a table without a primary key, end to end: refused without a unique index
and without REPLICA IDENTITY FULL (with the fixes named), then `--replica-identity-full`
sets FULL and the mirror is exact through inserts, updates (also of non-key columns) and
deletes, read through Pinot's own upsert code."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from cdc.core.errors import PreflightError
from cdc.mirrors import service
from cdc.postgres import catalog
from syncing import stack_objects, wait_in_sync

pytestmark = pytest.mark.integration


def test_key_override_end_to_end(ctx: service.Context, pg: psycopg.Connection) -> None:
    t = f"events_{uuid.uuid4().hex[:6]}"
    pg.execute(f'CREATE TABLE public.{t} (tenant int NOT NULL, "Seq" bigint NOT NULL, payload text, n int)')
    pg.execute(f'INSERT INTO public.{t} SELECT g % 7, g, repeat(md5(g::text), 40), g FROM generate_series(1, 500) g')
    before = stack_objects(ctx)
    with pytest.raises(PreflightError) as ei:
        service.add_mirror(ctx, "public", t, key=["tenant", "Seq"], replica_identity_full=True, progress=print)
    assert "not backed by a unique index" in ei.value.message and "CREATE UNIQUE INDEX" in (ei.value.hint or "")
    assert stack_objects(ctx) == before                         # nothing half-made
    pg.execute(f'CREATE UNIQUE INDEX ON public.{t} (tenant, "Seq")')
    with pytest.raises(PreflightError) as ei:                    # FULL not accepted: say how and why
        service.add_mirror(ctx, "public", t, key=["tenant", "Seq"], progress=print)
    assert "REPLICA IDENTITY FULL" in ei.value.message and "--replica-identity-full" in (ei.value.hint or "")
    assert stack_objects(ctx) == before
    rec = service.add_mirror(ctx, "public", t, key=["tenant", "Seq"], replica_identity_full=True, progress=print)
    try:
        assert catalog.introspect(pg, "public", t).replica_identity == "full"
        wait_in_sync(ctx, rec.name, timeout=180)
        pg.execute(f'UPDATE public.{t} SET n = n + 1000 WHERE "Seq" % 3 = 0')      # non-key columns
        pg.execute(f'UPDATE public.{t} SET tenant = tenant + 100 WHERE "Seq" <= 20')  # key changes
        pg.execute(f'DELETE FROM public.{t} WHERE "Seq" BETWEEN 100 AND 150')
        pg.execute(f"INSERT INTO public.{t} VALUES (1, 100000, 'late', 1)")
        print(f"in sync {wait_in_sync(ctx, rec.name, timeout=120):.1f}s after the changes")
    finally:
        service.remove_mirror(ctx, rec.name, drop_data=True, progress=print)
        pg.execute(f"DROP TABLE IF EXISTS public.{t}")
