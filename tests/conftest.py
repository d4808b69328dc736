"""Shared fixtures. Integration tests share ONE running stack per test session."""

from __future__ import annotations

import os

import pytest

from cdc.core.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    s = Settings()
    # The stack's Postgres wants its generated password (scram-sha-256): tests that build
    # their own DSNs for other databases of it find it where libpq looks, PGPASSFILE (a
    # reference to the stack's password file, the value is never copied), and so do the
    # `cdc` subprocesses they start.
    if s.postgres_dsn is None:
        from cdc.core.stack_secrets import postgres_passfile
        os.environ.setdefault("PGPASSFILE", str(postgres_passfile(s.state_dir)))
    return s


@pytest.fixture(scope="session")
def stack(settings: Settings) -> dict:
    """Bring the local stack up if it is not (idempotent), return its status dict."""
    from cdc.stack import manager
    st = manager.up(settings)
    assert st["healthy"], st
    return st


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Unit tests first (a broken unit fails early), then integration, then the slow ones
    # that kill stack processes, so they cannot disturb the others.
    def rank(it: pytest.Item) -> int:
        if it.get_closest_marker("slow"):
            return 2
        return 1 if it.get_closest_marker("integration") else 0
    items.sort(key=rank)
