"""Fast checks of cdc.postgres.catalog's secret handling and message formatting (no server needed)."""

from __future__ import annotations

import sys
import types

import pytest

from cdc.postgres import catalog
from cdc.core.errors import ConfigError, PreflightError, UnreachableError
from cdc.core.models import Column, TableInfo


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app:s3cret@db.example:5432/shop?sslmode=require",
         "postgresql://app:***@db.example:5432/shop?sslmode=require"),
        ("postgres://app:p%40ss@h/db", "postgres://app:***@h/db"),
        ("postgresql://app:pa/ss@h/db", "postgresql://app:***@h/db"),      # unencoded '/' must not leak
        ("postgresql://app:p@ss@h/db", "postgresql://app:***@h/db"),       # unencoded '@' must not leak
        ("postgresql://app@h/db?sslmode=disable&password=s3cret&x=1",
         "postgresql://app@h/db?sslmode=disable&password=***&x=1"),
        ("host=h port=5432 password=s3cret user=app", "host=h port=5432 password=*** user=app"),
        ("host=h password = 's3 cr\\'et' user=app", "host=h password = *** user=app"),
        ("postgresql://app@h:5432/db", "postgresql://app@h:5432/db"),      # nothing to hide
        ("host=h user=app", "host=h user=app"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert catalog.redact_dsn(dsn) == expected


def test_scrub_removes_raw_and_encoded_password() -> None:
    dsn = "postgresql://app:p%40ss%2Fw@h/db"
    text = f"failed for {dsn}; saw p@ss/w and p%40ss%2Fw"
    out = catalog.scrub(text, dsn)
    assert "p@ss/w" not in out and "p%40ss" not in out
    assert "postgresql://app:***@h/db" in out


def test_connect_unreachable_hides_password() -> None:
    dsn = "postgresql://app:topsecret@127.0.0.1:1/db?connect_timeout=2"
    with pytest.raises(UnreachableError) as ei:
        catalog.connect(dsn, connect_timeout=2)
    err = ei.value
    assert err.system == "postgres" and err.transient
    assert "topsecret" not in str(err)
    assert "app:***@127.0.0.1:1" in str(err)


def test_connect_invalid_dsn_is_config_error_without_password() -> None:
    with pytest.raises(ConfigError) as ei:
        catalog.connect("host=h password=topsecret garbage")
    assert "topsecret" not in str(ei.value)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("orders", "orders"), ("Orders", '"Orders"'), ("Order Items", '"Order Items"'),
     ("Sales-EU", '"Sales-EU"'), ("order", '"order"'), ('we"ird', '"we""ird"'), ("_x$1", "_x$1"),
     ("1abc", '"1abc"')],
)
def test_quote_ident(name: str, quoted: str) -> None:
    assert catalog.quote_ident(name) == quoted


def test_qualified_name() -> None:
    assert catalog.qualified_name("Sales-EU", "Order Items") == '"Sales-EU"."Order Items"'
    assert catalog.qualified_name("public", "orders") == "public.orders"


def test_single_problem_reads_as_one_sentence() -> None:
    err = catalog.format_problems("cannot mirror public.orders",
                                  [("wal_level is 'replica'", "ALTER SYSTEM SET wal_level = logical")])
    assert isinstance(err, PreflightError)
    assert str(err) == ("cannot mirror public.orders: wal_level is 'replica'\n"
                        "  hint: ALTER SYSTEM SET wal_level = logical")


def test_several_problems_are_numbered_with_matching_fixes() -> None:
    err = catalog.format_problems("cannot mirror public.orders",
                                  [("problem one", "fix one"), ("problem two", "fix two")])
    assert str(err) == ("cannot mirror public.orders: 2 problems\n"
                        "  1. problem one\n"
                        "  2. problem two\n"
                        "  hint: 1. fix one\n"
                        "        2. fix two")


@pytest.mark.parametrize(
    ("type_name", "typmod", "expected"),
    [("numeric", ((12 << 16) | 2) + 4, (12, 2)), ("numeric", -1, (None, None)),
     ("varchar", 24, (20, None)), ("bpchar", 9, (5, None)), ("timestamptz", 3, (3, None)),
     ("int4", -1, (None, None))],
)
def test_typmod_decoding(type_name: str, typmod: int, expected: tuple[int | None, int | None]) -> None:
    assert catalog._modifiers(type_name, typmod) == expected


def test_type_checks_are_skipped_without_typemap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cdc.mapping.typemap", None)   # makes the import fail like a missing module
    assert catalog._type_problems(_table()) == []


def test_type_problems_from_typemap_are_folded_in(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("cdc.mapping.typemap")
    def unsupported(info: TableInfo) -> list[str]:
        return [f"column {info.columns[0].name} has unsupported type point"]
    fake.check_supported = unsupported  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.mapping.typemap", fake)
    assert catalog._type_problems(_table()) == [("column p has unsupported type point",
                                                  "change the column to a supported type")]


def test_type_errors_raised_by_typemap_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(info: TableInfo) -> None:
        raise PreflightError("unsupported type point", hint="cast it")
    fake = types.ModuleType("cdc.mapping.typemap")
    fake.check_supported = refuse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.mapping.typemap", fake)
    with pytest.raises(PreflightError, match="unsupported type point"):
        catalog._type_problems(_table())


def _table() -> TableInfo:
    return TableInfo(schema_name="public", table_name="t",
                     columns=[Column(name="p", type_name="point", base_type="point", kind="base")])
