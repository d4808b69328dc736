"""TLS settings from a source DSN to the Debezium connector, the client-key check, and the
translation of libpq's TLS failures (no server needed; the integration side is
tests/integration/test_postgres_tls.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from cdc.core.errors import ConfigError, PreflightError, UnreachableError
from cdc.core.models import Column, Source, TableInfo
from cdc.mapping import render
from cdc.mirrors.sources import publication_of, source_from_dsn
from cdc.postgres import catalog, tls

BOOT = "127.0.0.1:9092"
TABLE = TableInfo(schema_name="public", table_name="t", primary_key=["id"],
                  columns=[Column(name="id", type_name="integer", base_type="int4", position=1, nullable=False)])


def connector(src: Source) -> dict[str, str]:
    return render.render_connector(src, [TABLE], kafka_bootstrap=BOOT, password_ref=None)


# ---------------------------------------------------------------- DSN -> Source -> connector

def test_verify_full_dsn_reaches_the_connector_as_paths() -> None:
    src = source_from_dsn("shop", "postgresql://app@db.example:5432/shop?sslmode=verify-full"
                                  "&sslrootcert=/etc/cdc/ca.pem&sslcert=/etc/cdc/c.crt&sslkey=/etc/cdc/c.key")
    assert (src.sslmode, src.sslrootcert, src.sslcert, src.sslkey) == (
        "verify-full", "/etc/cdc/ca.pem", "/etc/cdc/c.crt", "/etc/cdc/c.key")
    cfg = connector(src)
    assert {k: v for k, v in cfg.items() if k.startswith("database.ssl")} == {
        "database.sslmode": "verify-full", "database.sslrootcert": "/etc/cdc/ca.pem",
        "database.sslcert": "/etc/cdc/c.crt", "database.sslkey": "/etc/cdc/c.key"}


def test_key_value_dsn_and_every_sslmode() -> None:
    for mode in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        src = source_from_dsn("s", f"host=h dbname=d user=u sslmode={mode}")
        assert connector(src)["database.sslmode"] == mode


def test_no_tls_settings_leave_the_config_unchanged() -> None:
    cfg = connector(source_from_dsn("s", "postgresql://u@h/d"))
    assert not [k for k in cfg if k.startswith("database.ssl")]
    assert (cfg["publication.name"], cfg["publication.autocreate.mode"]) == ("cdc_s", "filtered")


def test_libpq_semantics_pgjdbc_lacks_are_spelled_out() -> None:
    # libpq: require + a root CA file verifies the CA -> the connector gets verify-ca
    cfg = connector(source_from_dsn("s", "postgresql://u@h/d?sslmode=require&sslrootcert=/ca.pem"))
    assert cfg["database.sslmode"] == "verify-ca"
    # libpq 16+: system roots imply verify-full; pgjdbc takes the JVM trust store
    cfg = connector(source_from_dsn("s", "postgresql://u@h/d?sslrootcert=system"))
    assert cfg["database.sslmode"] == "verify-full"
    assert cfg["database.sslfactory"] == "org.postgresql.ssl.DefaultJavaSSLFactory"
    assert "database.sslrootcert" not in cfg


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://u@h/d?sslmode=verify-full&sslrootcert=ca.pem", "relative path"),
    ("postgresql://u@h/d?sslkey=./k.key", "relative path"),
    ("postgresql://u@h/d?sslmode=strict", "not a libpq sslmode"),
    ("postgresql://u@h/d?sslcrl=/crl.pem", "sslcrl"),
    ("postgresql://u@h/d?sslcrldir=/crl", "sslcrldir"),
])
def test_settings_the_connector_cannot_apply_are_refused(dsn: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        source_from_dsn("s", dsn)


def test_sslpassword_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as ei:
        source_from_dsn("s", "postgresql://u@h/d?sslkey=/k.key&sslpassword=Sup3rSecret")
    assert "sslpassword" in str(ei.value) and "Sup3rSecret" not in str(ei.value)


def test_managed_publication_disables_autocreate() -> None:
    src = source_from_dsn("shop", "postgresql://cdc_reader@h/shop", publication="cdc_pub")
    assert publication_of(src) == "cdc_pub"
    cfg = connector(src)
    assert (cfg["publication.name"], cfg["publication.autocreate.mode"]) == ("cdc_pub", "disabled")
    assert cfg["slot.name"] == "cdc_shop"
    for bad in ("Cdc Pub", "x;drop", "a" * 64, ""):
        with pytest.raises(ConfigError, match="publication name"):
            source_from_dsn("shop", "postgresql://u@h/shop", publication=bad)


def test_sources_registered_before_tls_support_still_load() -> None:
    old = json.dumps({"name": "s", "dsn": "postgresql://u@h/d", "database": "d", "host": "h", "port": 5432,
                      "user": "u", "has_password": False})
    src = Source.model_validate_json(old)
    assert (src.sslmode, src.publication) == (None, None)
    assert connector(src) == connector(source_from_dsn("s", "postgresql://u@h/d"))


# ---------------------------------------------------------------- client keys

def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


RSA_PKCS8 = bytes.fromhex("308204be020100300d06092a864886f70d0101010500") + b"\x04" * 40
EC_PKCS8 = bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107") + b"\x04" * 40


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("client.key", _pem("PRIVATE KEY", RSA_PKCS8), None),
    ("client.pem", _pem("PRIVATE KEY", RSA_PKCS8), None),
    ("client.pk8", RSA_PKCS8, None),                       # DER: pgjdbc's classic format (libpq checks itself)
    ("client.key", _pem("RSA PRIVATE KEY", b"\x30\x82" + b"\x01" * 40), "openssl pkcs8 -topk8 -nocrypt"),
    ("client.key", _pem("EC PRIVATE KEY", b"\x30\x77" + b"\x01" * 40), "PKCS#8"),
    ("client.key", _pem("ENCRYPTED PRIVATE KEY", b"\x30\x82" + b"\x01" * 40), "decrypt"),
    ("client.key", _pem("PRIVATE KEY", EC_PKCS8), "RSA"),
    ("client.pk8", _pem("PRIVATE KEY", RSA_PKCS8), ".key or .pem"),
    ("client.p12", b"\x30\x82\x01", "PKCS#12"),
])
def test_client_key_formats(tmp_path: Path, name: str, content: bytes, expected: str | None) -> None:
    key = tmp_path / name
    key.write_bytes(content)
    problems = tls.client_key_problems(str(key))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in " ".join(problems[0]), problems
        assert "BEGIN" not in problems[0][0] or "-----BEGIN PRIVATE KEY-----" in problems[0][0]
        assert base64.encodebytes(content).decode()[:20] not in " ".join(problems[0])   # never the key itself


def test_unreadable_key_is_left_to_libpq(tmp_path: Path) -> None:
    assert tls.client_key_problems(str(tmp_path / "missing.key")) == []


# ---------------------------------------------------------------- libpq failures (messages as libpq 18 prints them)

P = {"sslmode": "verify-full", "sslrootcert": "/etc/cdc/ca.pem", "host": "127.0.0.2"}
PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5501 failed: '


@pytest.mark.parametrize(("message", "what", "fix"), [
    ("SSL error: certificate verify failed", "not signed by a CA in sslrootcert=/etc/cdc/ca.pem", "sslrootcert"),
    ('server certificate for "127.0.0.1" (and 1 other name) does not match host name "127.0.0.2"',
     "does not name the host", "verify-ca"),
    ("server does not support SSL, but SSL was required", "does not offer TLS", "ssl = on"),
    ('root certificate file "/x/ca.crt" does not exist\nEither provide the file, use the system\'s trusted roots '
     "with sslrootcert=system, or change sslmode to disable server certificate verification.",
     "does not exist", "absolute path"),
    ('FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "u", database "postgres", no encryption',
     "only over TLS", "sslmode=verify-full"),
    ("FATAL:  connection requires a valid client certificate", "client certificate", "sslcert"),
    ('private key file "/k.key" has group or world access; file must have permissions u=rw (0600) or less',
     "cannot be used", "0600"),
    ("SSL error: tlsv1 alert unknown ca", "rejected the client certificate", "ssl_ca_file"),
    ('weak sslmode "require" may not be used with sslrootcert=system (use "verify-full")', "weak sslmode",
     "verify-full"),
])
def test_tls_failures_are_named(message: str, what: str, fix: str) -> None:
    found = tls.classify_connect_error(PREFIX + message, P)
    assert found is not None and found[0].startswith("TLS") and what in found[0] and fix in found[1], found


@pytest.mark.parametrize("message", [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    'FATAL:  password authentication failed for user "u"',
    "SSL SYSCALL error: EOF detected",
])
def test_other_failures_are_not_called_tls(message: str) -> None:
    assert tls.classify_connect_error(PREFIX + message, P) is None


def test_connect_reports_a_tls_failure_as_preflight_not_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not transient (no retry loop), naming TLS and the fix, without the password."""
    import psycopg

    def refuse(*_a: object, **_k: object) -> None:
        raise psycopg.OperationalError(PREFIX + "SSL error: certificate verify failed")
    monkeypatch.setattr(catalog.psycopg, "connect", refuse)
    dsn = "postgresql://app:topsecret@db.example:5432/shop?sslmode=verify-full&sslrootcert=/etc/cdc/other-ca.pem"
    with pytest.raises(PreflightError) as ei:
        catalog.connect(dsn)
    err = ei.value
    assert not isinstance(err, UnreachableError) and "TLS" in err.message and "sslrootcert=/etc/cdc/other-ca.pem" in err.message
    assert "topsecret" not in err.message + (err.hint or "") and "CA" in (err.hint or "")


# ---------------------------------------------------------------- REST API

def test_api_registers_a_managed_publication_and_tls_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    from fastapi.testclient import TestClient

    from cdc.api.app import create_app
    from cdc.core.settings import Settings
    from cdc.mirrors import sources

    @contextmanager
    def fake_pg(dsn: str, **kw: object):
        class Conn:
            def execute(self, *a: object) -> None:
                return None
        yield Conn()
    monkeypatch.setattr(sources.catalog, "connect", fake_pg)
    settings = Settings(registry_path=tmp_path / "r.db", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                        api_token="tok", pinot_mode="none")
    client = TestClient(create_app(settings))
    auth = {"Authorization": "Bearer tok"}
    dsn = "postgresql://cdc_reader:pw@db.example/shop?sslmode=verify-full&sslrootcert=/etc/cdc/ca.pem"
    r = client.post("/sources", json={"name": "shop", "dsn": dsn, "publication": "cdc_pub"}, headers=auth)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["publication"], body["sslmode"], body["sslrootcert"]) == ("cdc_pub", "verify-full", "/etc/cdc/ca.pem")
    r = client.post("/sources", json={"name": "shop2", "dsn": dsn, "publication": "Bad Name"}, headers=auth)
    assert r.status_code == 422
