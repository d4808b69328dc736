"""The stack's generated credentials and the state folder's permissions (cdc.core.stack_secrets)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdc.core import stack_secrets
from cdc.core.settings import Settings
from cdc.mirrors.sources import dsn_password


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_postgres_password_generated_once_private_and_bound_to_the_stack(tmp_path: Path) -> None:
    pw, created = stack_secrets.ensure_postgres_password(tmp_path, "127.0.0.1", 5433)
    assert created and len(pw) >= 40 and ":" not in pw and "\\" not in pw
    f = stack_secrets.postgres_passfile(tmp_path)
    assert _mode(f) == 0o600 and _mode(f.parent) == 0o700
    assert f.read_text() == f"127.0.0.1:5433:*:postgres:{pw}\n"      # never a '*' host
    assert stack_secrets.ensure_postgres_password(tmp_path, "127.0.0.1", 5433) == (pw, False)
    assert stack_secrets.ensure_postgres_password(tmp_path, "127.0.0.1", 6433) == (pw, False)
    assert f.read_text().startswith("127.0.0.1:6433:")              # a new port, same password
    assert stack_secrets.read_passfile(f, "127.0.0.1", 6433, "anydb", "postgres") == pw
    assert stack_secrets.read_passfile(f, "203.0.113.9", 6433, "anydb", "postgres") is None
    assert stack_secrets.read_passfile(f, "127.0.0.1", 6433, "anydb", "alice") is None


def test_read_passfile_follows_libpq_rules(tmp_path: Path) -> None:
    f = tmp_path / "pgpass"
    f.write_text("# comment\n\n"
                 "db.example:5432:app:alice:first\n"
                 "\\:\\:1:5432:*:bob:pa\\:ss\\\\word\n"
                 "*:*:*:alice:fallback\n")
    assert stack_secrets.read_passfile(f, "db.example", 5432, "app", "alice") == "first"
    assert stack_secrets.read_passfile(f, "db.example", 5432, "other", "alice") == "fallback"
    assert stack_secrets.read_passfile(f, "::1", 5432, "x", "bob") == "pa:ss\\word"
    assert stack_secrets.read_passfile(tmp_path / "missing", "h", 1, "d", "u") is None


def test_connect_credentials_file_is_a_properties_users_file(tmp_path: Path) -> None:
    pw = stack_secrets.ensure_connect_password(tmp_path)
    f = stack_secrets.connect_users_file(tmp_path)
    assert f.read_text() == f"cdc: {pw}\n" and _mode(f) == 0o600
    assert stack_secrets.ensure_connect_password(tmp_path) == pw == stack_secrets.connect_password(tmp_path)


def test_secure_state_dir_strips_group_and_other_bits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "kafka" / "data").mkdir(parents=True)
    loose = state / "kafka" / "data" / "00000.log"
    loose.write_text("rows")
    os.chmod(loose, 0o644)
    os.chmod(state / "kafka", 0o755)
    os.chmod(state, 0o755)
    stack_secrets.secure_state_dir(state)
    assert _mode(loose) == 0o600 and _mode(state / "kafka") == 0o700
    if os.geteuid() == 0 and stack_secrets._postgres_gid() is not None:
        assert _mode(state) == 0o710 and state.stat().st_gid == stack_secrets._postgres_gid()
    else:
        assert _mode(state) == 0o700


def test_settings_name_the_password_file_not_the_password(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    pw, _ = stack_secrets.ensure_postgres_password(tmp_path, s.host, s.ports.postgres)
    dsn = s.local_postgres_dsn
    assert pw not in dsn and f"passfile={stack_secrets.postgres_passfile(tmp_path)}" in dsn
    assert dsn_password(dsn) == pw                     # what the connector's secrets file gets
    assert dsn_password(s.local_dsn("other")) == pw


def test_connect_auth_local_external_and_none(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).connect_auth() is None
    pw = stack_secrets.ensure_connect_password(tmp_path)
    assert Settings(state_dir=tmp_path).connect_auth() == ("cdc", pw)
    ext = Settings(state_dir=tmp_path, connect_url_override="http://connect:8083")
    assert ext.connect_auth() is None                  # the local file is not for another Connect
    ext = Settings(state_dir=tmp_path, connect_url_override="http://connect:8083", connect_user="ops",
                   connect_password="s3cret")
    assert ext.connect_auth() == ("ops", "s3cret") and "s3cret" not in repr(ext)


def test_dsn_password_explicit_wins_and_pgpassfile_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pgpass"
    f.write_text("h:5432:*:u:fromfile\n")
    os.chmod(f, 0o600)
    monkeypatch.setenv("PGPASSFILE", str(f))
    assert dsn_password("postgresql://u:inline@h:5432/db") == "inline"
    assert dsn_password("postgresql://u@h:5432/db") == "fromfile"
    assert dsn_password("postgresql://u@other:5432/db") is None
