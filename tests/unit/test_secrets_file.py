"""Passwords survive the secrets file exactly (Java Properties escapes), mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from cdc.mirrors import sources

PASSWORDS = ["simple", "it's", 'dq"', "back\\slash", "trailing\\", " lead and trail ", "x' sslmode='disable",
             "=:#!", "ünïcødé €", "emoji 🐘", "tab\tand\nnewline", "#comment"]


@pytest.mark.parametrize("pw", PASSWORDS)
def test_roundtrip(pw: str, tmp_path: Path) -> None:
    s = SimpleNamespace(state_dir=tmp_path)
    f = sources.write_password(s, "src", pw)   # type: ignore[arg-type]
    assert sources.read_password(s, "src") == pw   # type: ignore[arg-type]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
    assert f.read_text().isascii()


@pytest.mark.parametrize("pw", PASSWORDS)
def test_dsn_with_password_keeps_it_exactly(pw: str) -> None:
    from psycopg.conninfo import conninfo_to_dict
    dsn = sources.with_password("postgresql://alice@db.example:5432/shop?sslmode=require", pw)
    parts = conninfo_to_dict(dsn)
    assert parts["password"] == pw and parts["sslmode"] == "require" and parts["user"] == "alice"


def test_existing_file_gets_0600_again(tmp_path: Path) -> None:
    s = SimpleNamespace(state_dir=tmp_path)
    f = sources.write_password(s, "src", "a")   # type: ignore[arg-type]
    f.chmod(0o644)
    sources.write_password(s, "src", "a")   # type: ignore[arg-type]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_re_adding_a_source_differently_keeps_its_stored_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conflicting `cdc source add` is refused before the stored password is touched."""
    import contextlib

    from cdc.core.errors import ConflictError
    from cdc.mirrors.registry import Registry
    monkeypatch.setattr(sources.catalog, "connect", lambda dsn, **kw: contextlib.nullcontext(
        SimpleNamespace(execute=lambda q: None)))
    ctx = SimpleNamespace(settings=SimpleNamespace(state_dir=tmp_path), registry=Registry(tmp_path / "r.db"))
    sources.add_source(ctx, "shop", "postgresql://a@db1/shop", password="first")    # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        sources.add_source(ctx, "shop", "postgresql://a@db2/shop", password="second")   # type: ignore[arg-type]
    assert sources.read_password(ctx.settings, "shop") == "first"    # type: ignore[arg-type]


def test_topic_names_count_utf16_units_like_debezium() -> None:
    from cdc.core import names
    assert names.change_topic("default", "public", "orders🚀") == "cdc.default.public.orders__"
    assert names.change_topic("default", "public", "é") == "cdc.default.public._"
