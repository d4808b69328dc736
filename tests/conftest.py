"""Shared fixtures. Integration tests share ONE running stack per test session."""

from __future__ import annotations

import pytest

from cdc.core.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


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
