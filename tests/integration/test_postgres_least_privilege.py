"""Least privilege, managed-Postgres style (issue 13, part 2), on a throwaway TLS cluster.

The DBA (here: the superuser over the Unix socket) owns the tables, creates cdc's _cdc tables
and a publication, and gives the cdc role only LOGIN + REPLICATION, USAGE + SELECT on the
mirrored tables and SELECT/INSERT/UPDATE on the _cdc tables: no superuser, no table
ownership, no CREATE on the database or any schema. A source registered with
`--publication` mirrors exactly with that role; preflight names exactly what is missing
instead of demanding ownership; cdc never changes or drops the DBA's publication.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.core.errors import PreflightError
from cdc.core.settings import Settings
from cdc.mapping.render import bootstrap_sql
from cdc.mirrors import service
from pg_cluster import Cluster, cli, objects_of, tls_cluster, wait_in_sync_with

pytestmark = pytest.mark.integration

PORT = 5502
SRC, PLAIN_SRC = "i13lp", "i13lpplain"
PUB = "cdc_pub"
ROLE = "cdc_reader"


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[Cluster]:
    with tls_cluster(settings, PORT) as c:
        yield c


def dba_recipe(role: str, password: str, publication: str, tables: list[str]) -> list[sql.Composable]:
    """The README recipe ("Managed Postgres (least privilege)"), as the DBA runs it."""
    stmts: list[sql.Composable] = [
        sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)),
    ]
    stmts += [sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(t), sql.Identifier(role)) for t in tables]
    stmts += [sql.SQL(s) for s in bootstrap_sql("")]
    stmts += [sql.SQL("GRANT USAGE ON SCHEMA _cdc TO {}").format(sql.Identifier(role)),
              sql.SQL("GRANT SELECT, INSERT, UPDATE ON _cdc.debezium_signal, _cdc.heartbeat, _cdc.freshness TO {}")
              .format(sql.Identifier(role)),
              sql.SQL("CREATE PUBLICATION {} FOR TABLE {}, _cdc.debezium_signal, _cdc.heartbeat, _cdc.freshness")
              .format(sql.Identifier(publication), sql.SQL(", ").join(map(sql.SQL, tables)))]
    return stmts


@pytest.fixture(scope="module")
def password(cluster: Cluster) -> str:
    pw = secrets.token_urlsafe(18)
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
        a.execute("CREATE ROLE app_owner NOLOGIN")
        for t, n in (("lp_orders", 250), ("lp_extra", 60)):
            a.execute(sql.SQL("CREATE TABLE public.{} (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL, "
                              "price numeric(10,2))").format(sql.Identifier(t)))
            a.execute(sql.SQL("INSERT INTO public.{} SELECT g, 'item ' || g, g %% 17, g / 4.0 "
                              "FROM generate_series(1, %s::int) g").format(sql.Identifier(t)), (n,))
            a.execute(sql.SQL("ALTER TABLE public.{} OWNER TO app_owner").format(sql.Identifier(t)))
        # lp_extra: SELECT granted, but not (yet) in the publication
        for stmt in dba_recipe(ROLE, pw, PUB, ["public.lp_orders"]):
            a.execute(stmt)
        a.execute(sql.SQL("GRANT SELECT ON public.lp_extra TO {}").format(sql.Identifier(ROLE)))
        r = a.execute("SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                      (ROLE,)).fetchone()
        assert r == (False, True, False, False)
    with psycopg.connect(cluster.tls_dsn(ROLE), password=pw) as conn:   # what the role can NOT do
        assert conn.execute("SELECT has_database_privilege('postgres', 'CREATE'), "
                            "has_schema_privilege('public', 'CREATE'), has_schema_privilege('_cdc', 'CREATE'), "
                            "pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'public.lp_orders'::regclass), "
                            "'USAGE')").fetchone() == (False, False, False, False)
    return pw


def _publication(cluster: Cluster) -> list[tuple[str, str]]:
    with psycopg.connect(cluster.admin_dsn) as a:
        return a.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
                         "ORDER BY 1, 2", (PUB,)).fetchall()


def test_without_a_managed_publication_preflight_asks_for_ownership(ctx: service.Context, cluster: Cluster,
                                                                      password: str) -> None:
    try:
        service.add_source(ctx, PLAIN_SRC, cluster.tls_dsn(ROLE), password=password)
        with pytest.raises(PreflightError) as ei:
            service.plan_mirror(ctx, "public", "lp_orders", source=PLAIN_SRC)
        text = str(ei.value)
        assert "does not own public.lp_orders" in text and "CREATE PUBLICATION" in text
        assert "--publication" in text                       # the hint names the least-privilege way
    finally:
        service.remove_source(ctx, PLAIN_SRC)


def test_least_privileged_role_mirrors_through_the_dba_publication(ctx: service.Context, cluster: Cluster,
                                                                  password: str) -> None:
    env = {"CDC_TEST_PG_PASSWORD": password}
    reg = ctx.settings.registry_file
    published = _publication(cluster)
    try:
        r = cli(reg, "source", "add", SRC, "--dsn", cluster.tls_dsn(ROLE), "--password-env", "CDC_TEST_PG_PASSWORD",
                "--publication", PUB, env=env)
        assert r.returncode == 0, r.stderr

        # A table the publication lacks: refused, naming exactly that, before anything exists.
        before = objects_of(ctx, SRC, cluster.admin_dsn)
        r = cli(reg, "mirror", "add", "public.lp_extra", "--source", SRC)
        assert r.returncode != 0
        assert f"publication {PUB} does not contain public.lp_extra" in r.stderr, r.stderr
        assert f"ALTER PUBLICATION {PUB} ADD TABLE public.lp_extra;" in r.stderr
        assert "own" not in r.stderr.split("hint:")[0]             # no ownership demanded
        assert objects_of(ctx, SRC, cluster.admin_dsn) == before

        # A grant the DBA forgot on a _cdc table: named with the GRANT that fixes it.
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            a.execute(sql.SQL("REVOKE UPDATE ON _cdc.heartbeat FROM {}").format(sql.Identifier(ROLE)))
        with pytest.raises(PreflightError) as ei:
            service.plan_mirror(ctx, "public", "lp_orders", source=SRC)
        assert "lacks UPDATE on _cdc.heartbeat" in str(ei.value) and "GRANT SELECT, INSERT, UPDATE" in str(ei.value)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            a.execute(sql.SQL("GRANT UPDATE ON _cdc.heartbeat TO {}").format(sql.Identifier(ROLE)))

        r = cli(reg, "mirror", "add", "public.lp_orders", "--source", SRC)
        assert r.returncode == 0, r.stderr
        orders = r.stdout.strip().splitlines()[-1]
        config = ctx.connect.get_config(names.connector_name(SRC))
        assert (config["publication.name"], config["publication.autocreate.mode"]) == (PUB, "disabled")
        assert config["database.sslmode"] == "verify-full"
        wait_in_sync_with(ctx, orders, cluster.admin_dsn)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            a.execute("UPDATE public.lp_orders SET qty = qty + 100, price = NULL WHERE id % 9 = 0")
            a.execute("DELETE FROM public.lp_orders WHERE id > 240")
        wait_in_sync_with(ctx, orders, cluster.admin_dsn)

        # The freshness probe writes _cdc.freshness as the least-privileged role too.
        from cdc.observe import metrics
        assert metrics.measure_freshness(ctx, SRC, timeout=60).seconds < 60

        # The DBA adds the second table; the running connector picks it up (incremental snapshot).
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            a.execute(f"ALTER PUBLICATION {PUB} ADD TABLE public.lp_extra")
        published = _publication(cluster)
        extra = service.add_mirror(ctx, "public", "lp_extra", source=SRC, progress=lambda _m: None).name
        wait_in_sync_with(ctx, extra, cluster.admin_dsn)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            a.execute("UPDATE public.lp_extra SET item = 'changed' WHERE id <= 5")
            a.execute("DELETE FROM public.lp_orders WHERE id <= 3")
        wait_in_sync_with(ctx, extra, cluster.admin_dsn)
        wait_in_sync_with(ctx, orders, cluster.admin_dsn)
        assert _publication(cluster) == published                  # Debezium never altered it
    finally:
        for m in ctx.registry.list_mirrors(source=SRC):
            service.remove_mirror(ctx, m.name, drop_data=True, progress=lambda _m: None)
        service.remove_source(ctx, SRC)
    # The slot is gone, the DBA's publication stays as the DBA left it.
    after = objects_of(ctx, SRC, cluster.admin_dsn)
    assert after == {"connector": False, "jobs": [], "slots": [], "publications": [PUB], "topics": [],
                     "source_row": False, "mirrors": [], "secret_file": False}
    assert _publication(cluster) == published
