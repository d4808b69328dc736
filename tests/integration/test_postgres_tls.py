"""TLS to Postgres end to end (issue 13, part 1).

A throwaway cluster (port 5501) accepts TCP connections only over TLS (`hostssl` lines,
scram-sha-256 or client certificates) with a CA and server certificate generated here. A
source registered with sslmode=verify-full + sslrootcert mirrors a table exactly through
Debezium, whose connector gets the same settings as database.ssl* properties; a wrong CA, a
host name the certificate does not list, a server without TLS and a client key Debezium's
JDBC driver could not read are refused before anything exists, naming TLS and the fix.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from cdc.core import names
from cdc.core.errors import ConfigError, PreflightError
from cdc.core.settings import Settings
from cdc.mirrors import service
from pg_cluster import Cluster, cli, objects_of, tls_cluster, wait_in_sync_with

pytestmark = pytest.mark.integration

PORT = 5501
SRC, CERT_SRC, BAD_SRC = "i13tls", "i13cert", "i13tlsbad"
ROWS = 300


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[Cluster]:
    with tls_cluster(settings, PORT) as c:
        yield c


@pytest.fixture(scope="module")
def password(cluster: Cluster) -> str:
    pw = secrets.token_urlsafe(18) + "'\\ é"           # quotes, backslash, blank, non-ASCII
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
        a.execute(sql.SQL("CREATE ROLE cdc_tls LOGIN REPLICATION PASSWORD {}").format(sql.Literal(pw)))
        a.execute("CREATE ROLE cdc_cert LOGIN REPLICATION")          # authenticated by its certificate
        a.execute("GRANT CREATE ON DATABASE postgres TO cdc_tls, cdc_cert")
        a.execute("CREATE TABLE public.tls_orders (id int PRIMARY KEY, customer text NOT NULL, "
                  "amount numeric(12,2) NOT NULL, note varchar(40))")
        a.execute("INSERT INTO public.tls_orders SELECT g, 'customer ' || g, g * 1.25, "
                  "CASE WHEN g %% 3 = 0 THEN NULL ELSE 'n' || g END FROM generate_series(1, %s::int) g", (ROWS,))
        a.execute("ALTER TABLE public.tls_orders OWNER TO cdc_tls")
        a.execute("CREATE DATABASE certdb OWNER cdc_cert")          # one source per database
    with psycopg.connect(cluster.admin_dsn.replace("dbname=postgres", "dbname=certdb"), autocommit=True) as a:
        a.execute("CREATE TABLE public.cert_items (id bigint PRIMARY KEY, label text NOT NULL)")
        a.execute("INSERT INTO public.cert_items SELECT g, 'item ' || g FROM generate_series(1, 40) g")
        a.execute("ALTER TABLE public.cert_items OWNER TO cdc_cert")
    return pw


def _cleanup(ctx: service.Context, source: str) -> None:
    for m in ctx.registry.list_mirrors(source=source):
        service.remove_mirror(ctx, m.name, drop_data=True, progress=lambda _m: None)
    service.remove_source(ctx, source)


def test_verify_full_source_mirrors_exactly(ctx: service.Context, cluster: Cluster, password: str) -> None:
    env = {"CDC_TEST_PG_PASSWORD": password}
    try:
        r = cli(ctx.settings.registry_file, "source", "add", SRC, "--dsn", cluster.tls_dsn("cdc_tls"),
                "--password-env", "CDC_TEST_PG_PASSWORD", env=env)
        assert r.returncode == 0, r.stderr
        r = cli(ctx.settings.registry_file, "mirror", "add", "public.tls_orders", "--source", SRC)
        assert r.returncode == 0, r.stderr
        name = r.stdout.strip().splitlines()[-1]
        assert name == names.mirror_name("public", "tls_orders", SRC)

        # The connector got the DSN's TLS settings as Debezium properties: paths, no contents, no password.
        config = ctx.connect.get_config(names.connector_name(SRC))
        assert config["database.sslmode"] == "verify-full"
        assert config["database.sslrootcert"] == str(cluster.certs.ca)
        assert "database.sslkey" not in config and "database.sslcert" not in config
        text = json.dumps(config) + json.dumps([s.model_dump() for s in ctx.registry.list_sources()])
        assert "BEGIN" not in text and password not in text
        assert config["database.password"].startswith("${file:")

        wait_in_sync_with(ctx, name, cluster.admin_dsn)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as a:
            # Debezium's replication connection and this service's both use TLS (pg_hba allows nothing else).
            walsenders = a.execute("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                   "WHERE a.usename = 'cdc_tls' AND a.backend_type = 'walsender'").fetchall()
            assert walsenders and all(ssl for (ssl,) in walsenders)
            a.execute("UPDATE public.tls_orders SET amount = amount + 0.01, note = 'updated' WHERE id % 7 = 0")
            a.execute("DELETE FROM public.tls_orders WHERE id % 10 = 0")
            a.execute("INSERT INTO public.tls_orders SELECT g, 'late ' || g, g, NULL "
                      "FROM generate_series(%s::int, %s::int) g", (ROWS + 1, ROWS + 5))
        wait_in_sync_with(ctx, name, cluster.admin_dsn)
        with psycopg.connect(cluster.admin_dsn) as a:
            assert a.execute("SELECT count(*) FROM public.tls_orders").fetchone()[0] == ROWS - ROWS // 10 + 5
    finally:
        _cleanup(ctx, SRC)
    assert objects_of(ctx, SRC, cluster.admin_dsn) == {
        "connector": False, "jobs": [], "slots": [], "publications": [], "topics": [], "source_row": False,
        "mirrors": [], "secret_file": False}


def test_wrong_ca_fails_naming_tls_and_creates_nothing(ctx: service.Context, cluster: Cluster,
                                                       password: str) -> None:
    env = {"CDC_TEST_PG_PASSWORD": password}
    before = objects_of(ctx, BAD_SRC, cluster.admin_dsn)
    wrong = cluster.tls_dsn("cdc_tls", rootcert=cluster.certs.wrong_ca)
    r = cli(ctx.settings.registry_file, "source", "add", BAD_SRC, "--dsn", wrong,
            "--password-env", "CDC_TEST_PG_PASSWORD", env=env)
    assert r.returncode != 0
    assert "TLS" in r.stderr and "certificate verify failed" in r.stderr, r.stderr
    assert f"sslrootcert={cluster.certs.wrong_ca}" in r.stderr and "hint:" in r.stderr
    assert password not in r.stderr + r.stdout
    r = cli(ctx.settings.registry_file, "mirror", "add", "public.tls_orders", "--source", BAD_SRC)
    assert r.returncode != 0 and "unknown source" in r.stderr
    assert objects_of(ctx, BAD_SRC, cluster.admin_dsn) == before
    assert before["source_row"] is False and before["connector"] is False

    # A registered source whose CA no longer matches (say, the server's certificate was
    # reissued by another CA): `mirror add` stops at its first connection, nothing is created.
    try:
        service.add_source(ctx, BAD_SRC, cluster.tls_dsn("cdc_tls"), password=password)
        src = ctx.registry.get_source(BAD_SRC)
        ctx.registry.put_source(src.model_copy(update={"dsn": wrong, "sslrootcert": str(cluster.certs.wrong_ca)}))
        before = objects_of(ctx, BAD_SRC, cluster.admin_dsn)
        r = cli(ctx.settings.registry_file, "mirror", "add", "public.tls_orders", "--source", BAD_SRC)
        assert r.returncode != 0 and "TLS" in r.stderr and "certificate verify failed" in r.stderr, r.stderr
        assert objects_of(ctx, BAD_SRC, cluster.admin_dsn) == before
        assert before["connector"] is False and before["mirrors"] == [] and before["topics"] == []
    finally:
        service.remove_source(ctx, BAD_SRC)


def test_other_tls_failures_are_named_with_their_fix(ctx: service.Context, cluster: Cluster,
                                                     password: str, settings: Settings) -> None:
    cases = {
        # the certificate lists 127.0.0.1 and localhost; 127.0.0.2 is the same server
        "host": (cluster.tls_dsn("cdc_tls", host="127.0.0.2"), "does not name the host"),
        # the stack's own Postgres has no TLS
        "no_tls": (f"postgresql://postgres@127.0.0.1:{settings.ports.postgres}/postgres?sslmode=verify-full"
                   f"&sslrootcert={cluster.certs.ca}", "does not offer TLS"),
        # this server accepts TCP only over TLS
        "plain": (f"postgresql://cdc_tls@127.0.0.1:{PORT}/postgres?sslmode=disable", "only over TLS"),
        "no_root_file": (cluster.tls_dsn("cdc_tls", rootcert=cluster.root / "missing-ca.crt"), "does not exist"),
    }
    for label, (dsn, expected) in cases.items():
        with pytest.raises(PreflightError) as ei:
            service.add_source(ctx, BAD_SRC, dsn, password=password)
        err = ei.value
        assert "TLS" in err.message and expected in err.message, (label, err.message)
        assert err.hint and password not in err.message + err.hint
        assert ctx.registry.get_source(BAD_SRC) is None
    # Settings the connector could not apply are refused, not silently dropped.
    for extra, expected in (("&sslcrl=/etc/crl.pem", "sslcrl"), ("&sslpassword=x", "sslpassword")):
        with pytest.raises(ConfigError, match=expected):
            service.add_source(ctx, BAD_SRC, cluster.tls_dsn("cdc_tls") + extra, password=password)
    with pytest.raises(ConfigError, match="absolute path"):
        service.add_source(ctx, BAD_SRC, f"postgresql://cdc_tls@127.0.0.1:{PORT}/postgres?sslmode=verify-full"
                                         "&sslrootcert=certs/ca.crt", password=password)
    assert ctx.registry.get_source(BAD_SRC) is None


def test_client_certificate_reaches_debezium(ctx: service.Context, cluster: Cluster, password: str) -> None:
    c = cluster.certs
    admin = cluster.admin_dsn.replace("dbname=postgres", "dbname=certdb")
    dsn = cluster.tls_dsn("cdc_cert", dbname="certdb") + f"&sslcert={c.client_cert}&sslkey={c.client_key}"
    # A PKCS#1 key: libpq reads it, Debezium's pgjdbc would not. Refused with the conversion.
    pkcs1 = cluster.tls_dsn("cdc_cert", dbname="certdb") + f"&sslcert={c.client_cert}&sslkey={c.client_key_pkcs1}"
    with psycopg.connect(pkcs1):                                  # libpq is happy with it
        pass
    with pytest.raises(PreflightError) as ei:
        service.add_source(ctx, CERT_SRC, pkcs1)
    assert "PKCS#8" in ei.value.message and "openssl pkcs8 -topk8 -nocrypt" in (ei.value.hint or "")
    assert ctx.registry.get_source(CERT_SRC) is None
    try:
        src = service.add_source(ctx, CERT_SRC, dsn)     # unencrypted PKCS#8 PEM RSA in *.key: both read it
        assert (src.sslcert, src.sslkey, src.has_password) == (str(c.client_cert), str(c.client_key), False)
        rec = service.add_mirror(ctx, "public", "cert_items", source=CERT_SRC, progress=lambda _m: None)
        config = ctx.connect.get_config(names.connector_name(CERT_SRC))
        assert (config["database.sslcert"], config["database.sslkey"]) == (str(c.client_cert), str(c.client_key))
        assert "database.password" not in config
        wait_in_sync_with(ctx, rec.name, admin)
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute("UPDATE public.cert_items SET label = label || ' v2' WHERE id <= 10")
            a.execute("DELETE FROM public.cert_items WHERE id > 35")
        wait_in_sync_with(ctx, rec.name, admin)
    finally:
        _cleanup(ctx, CERT_SRC)
    assert os.stat(c.client_key).st_mode & 0o077 == 0             # the key was never copied or loosened
