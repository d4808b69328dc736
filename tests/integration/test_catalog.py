"""cdc.postgres.catalog against a real Postgres (wal_level=logical, superuser DSN).

DSN: CDC_TEST_PG_DSN (default: the local stack's Postgres). The wal_level=replica case
uses CDC_TEST_PG_REPLICA_DSN and is skipped without it. Every test works in its own
uniquely named schema/role and drops it afterwards, so runs can overlap.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc.postgres import catalog
from cdc.core.settings import Settings
from cdc.core.errors import NotFoundError, PreflightError
from cdc.core.models import Column

pytestmark = pytest.mark.integration

DSN = os.environ.get("CDC_TEST_PG_DSN") or Settings().local_dsn("postgres")
REPLICA_DSN = os.environ.get("CDC_TEST_PG_REPLICA_DSN")


@pytest.fixture(autouse=True, scope="module")
def _postgres_up(stack: dict) -> None:
    """The stack's Postgres is brought up (never skipped: a missing Postgres fails the run)."""


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return catalog.connect(dsn, connect_timeout=5)


@pytest.fixture(autouse=True)
def _only_catalog_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Type support belongs to cdc.mapping.typemap (tested on its own); test only catalog's checks."""
    monkeypatch.setattr(catalog, "_type_problems", lambda info: [])


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[Any]]:
    c = _connect(DSN)
    yield c
    c.close()


@pytest.fixture
def schema(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh schema; everything created in it is dropped with it."""
    name = f"cdc_test_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _ddl(conn: psycopg.Connection[Any], schema: str, text: str) -> None:
    """Run DDL with {s} standing for the quoted test schema."""
    conn.execute(sql.SQL(text).format(s=sql.Identifier(schema)))


def test_golden_table_every_supported_type(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy')")
    _ddl(conn, schema, "CREATE DOMAIN {s}.posnum AS numeric(10,3) CHECK (VALUE > 0)")
    _ddl(conn, schema, "CREATE DOMAIN {s}.posnum2 AS {s}.posnum")
    _ddl(conn, schema, """CREATE TABLE {s}.golden (
        c_identity bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        c_smallint smallint, c_integer integer NOT NULL, c_gone text, c_bigint bigint,
        c_numeric_12_2 numeric(12,2), c_numeric numeric, c_real real, c_double double precision,
        c_boolean boolean, c_text text, c_varchar varchar(20), c_char char(5), c_uuid uuid,
        c_json json, c_jsonb jsonb, c_date date, c_time time, c_timestamp timestamp,
        c_timestamptz timestamptz, c_ts3 timestamp(3), c_bytea bytea, c_enum {s}.mood,
        c_int_array int[], c_text_array text[], c_serial serial, c_domain {s}.posnum,
        c_domain2 {s}.posnum2)""")
    _ddl(conn, schema, "ALTER TABLE {s}.golden DROP COLUMN c_gone")

    info = catalog.introspect(conn, schema, "golden")

    s = schema
    # name, type_name, base_type, kind, element_type, precision, scale, nullable, identity, toastable
    expected = [
        ("c_identity", "bigint", "int8", "base", None, None, None, False, True, False),
        ("c_smallint", "smallint", "int2", "base", None, None, None, True, False, False),
        ("c_integer", "integer", "int4", "base", None, None, None, False, False, False),
        ("c_bigint", "bigint", "int8", "base", None, None, None, True, False, False),
        ("c_numeric_12_2", "numeric(12,2)", "numeric", "base", None, 12, 2, True, False, False),
        ("c_numeric", "numeric", "numeric", "base", None, None, None, True, False, False),
        ("c_real", "real", "float4", "base", None, None, None, True, False, False),
        ("c_double", "double precision", "float8", "base", None, None, None, True, False, False),
        ("c_boolean", "boolean", "bool", "base", None, None, None, True, False, False),
        ("c_text", "text", "text", "base", None, None, None, True, False, True),
        ("c_varchar", "character varying(20)", "varchar", "base", None, 20, None, True, False, True),
        ("c_char", "character(5)", "bpchar", "base", None, 5, None, True, False, True),
        ("c_uuid", "uuid", "uuid", "base", None, None, None, True, False, False),
        ("c_json", "json", "json", "base", None, None, None, True, False, True),
        ("c_jsonb", "jsonb", "jsonb", "base", None, None, None, True, False, True),
        ("c_date", "date", "date", "base", None, None, None, True, False, False),
        ("c_time", "time without time zone", "time", "base", None, None, None, True, False, False),
        ("c_timestamp", "timestamp without time zone", "timestamp", "base", None, None, None, True, False, False),
        ("c_timestamptz", "timestamp with time zone", "timestamptz", "base", None, None, None, True, False,
         False),
        ("c_ts3", "timestamp(3) without time zone", "timestamp", "base", None, 3, None, True, False, False),
        ("c_bytea", "bytea", "bytea", "base", None, None, None, True, False, True),
        ("c_enum", f"{s}.mood", "mood", "enum", None, None, None, True, False, False),
        ("c_int_array", "integer[]", "_int4", "array", "int4", None, None, True, False, True),
        ("c_text_array", "text[]", "_text", "array", "text", None, None, True, False, True),
        ("c_serial", "integer", "int4", "base", None, None, None, False, True, False),
        # numeric has storage 'main': compressed in place, never an "unchanged TOAST" placeholder
        ("c_domain", f"{s}.posnum", "numeric", "domain", None, 10, 3, True, False, False),
        ("c_domain2", f"{s}.posnum2", "numeric", "domain", None, 10, 3, True, False, False),
    ]
    got = [(c.name, c.type_name, c.base_type, c.kind, c.element_type, c.precision, c.scale, c.nullable,
            c.identity, c.toastable) for c in info.columns]
    assert got == expected
    positions = [c.position for c in info.columns]
    assert positions == sorted(positions) and 4 not in positions   # dropped column skipped
    assert info.column("c_bigint").position == 5
    assert info.primary_key == ["c_identity"]
    assert info.replica_identity == "default"
    assert info.schema_name == schema and info.table_name == "golden"
    assert isinstance(info.oid, int) and info.oid > 0
    assert all(isinstance(c, Column) for c in info.columns)
    assert catalog.preflight(conn, schema, "golden", None) == info


def test_composite_pk_in_key_order(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.pairs (a int, b int, c text, PRIMARY KEY (b, a))")
    info = catalog.preflight(conn, schema, "pairs", None)
    assert info.primary_key == ["b", "a"]
    assert [c.name for c in info.columns] == ["a", "b", "c"]
    assert not info.column("a").nullable   # PRIMARY KEY implies NOT NULL


def test_partitioned_table_is_accepted(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.events (id bigint, day date, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
    info = catalog.preflight(conn, schema, "events", None)
    assert info.primary_key == ["id", "day"]


def test_mixed_case_and_special_identifiers(conn: psycopg.Connection[Any]) -> None:
    schema = f"Sales-EU {uuid.uuid4().hex[:6]}"
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    try:
        conn.execute(sql.SQL('CREATE TABLE {}."Order Items" ("Id" int, "Line No" int NOT NULL, '
                             '"Qty" numeric(8,0), PRIMARY KEY ("Line No", "Id"))').format(ident))
        info = catalog.preflight(conn, schema, "Order Items", None)
        assert [c.name for c in info.columns] == ["Id", "Line No", "Qty"]
        assert info.primary_key == ["Line No", "Id"]
        assert info.qualified == f"{schema}.Order Items"
        with pytest.raises(NotFoundError) as ei:
            catalog.introspect(conn, schema, "order items")       # names are exact-case
        assert f'"{schema}"."Order Items"' in (ei.value.hint or "")
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))


def test_no_primary_key_asks_for_key(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.nopk (id int NOT NULL, v text)")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "nopk", None)
    assert "no primary key" in ei.value.message
    assert "--key" in str(ei.value)


def test_key_columns_need_replica_identity_full(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, 'CREATE TABLE {s}."Log Lines" (id int NOT NULL, "Seq" int NOT NULL, v text)')
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "Log Lines", ["id", "Seq"])
    assert "REPLICA IDENTITY FULL" in str(ei.value)
    assert f'ALTER TABLE {schema}."Log Lines" REPLICA IDENTITY FULL' in (ei.value.hint or "")
    # a --key must identify rows: without a unique index equal keys would collapse
    assert 'is not backed by a unique index' in ei.value.message
    assert f'CREATE UNIQUE INDEX ON {schema}."Log Lines" (id, "Seq")' in (ei.value.hint or "")

    _ddl(conn, schema, 'CREATE UNIQUE INDEX ON {s}."Log Lines" ("Seq", id)')
    catalog.set_replica_identity_full(conn, schema, "Log Lines")
    info = catalog.preflight(conn, schema, "Log Lines", ["id", "Seq"])
    assert info.replica_identity == "full" and info.primary_key == []


def test_replica_identity_index_and_nothing(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.t (id int PRIMARY KEY, code text NOT NULL, other int NOT NULL)")
    _ddl(conn, schema, "CREATE UNIQUE INDEX t_code ON {s}.t (code)")
    _ddl(conn, schema, "ALTER TABLE {s}.t REPLICA IDENTITY USING INDEX t_code")
    assert catalog.preflight(conn, schema, "t", ["code"]).replica_identity == "index"
    with pytest.raises(PreflightError) as ei:      # old rows would carry only `code`, not `other`
        catalog.preflight(conn, schema, "t", ["other"])
    assert "does not include key column(s) other" in ei.value.message
    _ddl(conn, schema, "ALTER TABLE {s}.t REPLICA IDENTITY NOTHING")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "t", None)
    assert "REPLICA IDENTITY NOTHING" in ei.value.message


def test_bad_key_columns(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.t (id int NOT NULL, maybe int)")
    _ddl(conn, schema, "ALTER TABLE {s}.t REPLICA IDENTITY FULL")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "t", ["idd"])
    assert "idd" in ei.value.message and "do not exist" in ei.value.message
    assert "id" in (ei.value.hint or "")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "t", ["id", "maybe"])
    assert "maybe is nullable" in ei.value.message
    assert "ALTER COLUMN maybe SET NOT NULL" in (ei.value.hint or "")


def test_unknown_table_suggests_close_match(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.customer_orders (id int PRIMARY KEY)")
    with pytest.raises(NotFoundError) as ei:
        catalog.preflight(conn, schema, "customer_order", None)
    assert f"{schema}.customer_order " in ei.value.message
    assert f"{schema}.customer_orders" in (ei.value.hint or "")
    with pytest.raises(NotFoundError) as ei:
        catalog.introspect(conn, schema + "_nope", "customer_orders")
    assert "there is no schema" in ei.value.message


def test_view_is_rejected(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.base (id int PRIMARY KEY)")
    _ddl(conn, schema, "CREATE VIEW {s}.v AS SELECT id FROM {s}.base")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "v", None)
    assert "is a view" in ei.value.message
    assert catalog.introspect(conn, schema, "v").columns[0].name == "id"   # describing it is fine


def test_unlogged_table_is_rejected(conn: psycopg.Connection[Any], schema: str) -> None:
    _ddl(conn, schema, "CREATE UNLOGGED TABLE {s}.scratch (id int PRIMARY KEY)")
    with pytest.raises(PreflightError) as ei:
        catalog.preflight(conn, schema, "scratch", None)
    assert "SET LOGGED" in (ei.value.hint or "")


@pytest.fixture
def role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"cdc_role_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOREPLICATION").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_non_replication_role(conn: psycopg.Connection[Any], schema: str, role: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.t (id int PRIMARY KEY)")
    r = sql.Identifier(role)
    _ddl(conn, schema, "GRANT USAGE ON SCHEMA {s} TO " + r.as_string(conn))
    _ddl(conn, schema, "GRANT SELECT ON {s}.t TO " + r.as_string(conn))
    other = _connect(DSN)
    try:
        other.execute(sql.SQL("SET ROLE {}").format(r))
        with pytest.raises(PreflightError) as ei:
            catalog.preflight(other, schema, "t", None, check_create_publication=False)
        assert ei.value.message == (f"cannot mirror {schema}.t: role {role} may not replicate "
                                    "(it has neither REPLICATION nor SUPERUSER)")
        assert ei.value.hint == f"ALTER ROLE {role} REPLICATION;  (on RDS: GRANT rds_replication TO {role};)"

        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(r))
        assert catalog.preflight(other, schema, "t", None, check_create_publication=False).primary_key == ["id"]
        with pytest.raises(PreflightError) as ei:           # Debezium must own the table to publish it
            catalog.preflight(other, schema, "t", None)
        assert "does not own" in ei.value.message and "CREATE PUBLICATION" in ei.value.message
        assert f"ALTER TABLE {schema}.t OWNER TO {role}" in (ei.value.hint or "")
    finally:
        other.close()


def test_missing_select_privilege(conn: psycopg.Connection[Any], schema: str, role: str) -> None:
    _ddl(conn, schema, "CREATE TABLE {s}.t (id int PRIMARY KEY)")
    r = sql.Identifier(role)
    conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(r))
    other = _connect(DSN)
    try:
        other.execute(sql.SQL("SET ROLE {}").format(r))
        with pytest.raises(PreflightError) as ei:
            catalog.preflight(other, schema, "t", None, check_create_publication=False)
        assert "2 problems" in ei.value.message
        assert f"GRANT USAGE ON SCHEMA {schema} TO {role};" in (ei.value.hint or "")
        assert f"GRANT SELECT ON {schema}.t TO {role};" in (ei.value.hint or "")
    finally:
        other.close()


def test_wal_level_replica(request: pytest.FixtureRequest) -> None:
    # An explicit CDC_TEST_PG_REPLICA_DSN wins; otherwise a throwaway cluster (conftest).
    dsn = REPLICA_DSN or request.getfixturevalue("replica_pg")
    c = _connect(dsn)
    table = f"cdc_test_{uuid.uuid4().hex[:10]}"
    try:
        c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(table)))
        with pytest.raises(PreflightError) as ei:
            catalog.preflight(c, "public", table, None)
        assert "wal_level is 'replica'" in ei.value.message
        assert "ALTER SYSTEM SET wal_level = logical" in (ei.value.hint or "")
        assert "restart" in (ei.value.hint or "")
    finally:
        c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        c.close()
