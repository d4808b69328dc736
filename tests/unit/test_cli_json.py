"""CLI parity with the REST API (issue #15): the operations a script drives print JSON with
--json. Service functions are stubbed; the real parser and main() run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdc.cli import main as cli
from cdc.core.settings import Settings
from cdc.mirrors import ops, service


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    s = Settings(registry_path=tmp_path / "registry.db", state_dir=tmp_path / "state", pinot_mode="none")
    c = service.context(s)
    monkeypatch.setattr(service, "context", lambda *a, **k: c)
    yield c
    c.close()


@pytest.mark.parametrize("verb,fn", [("pause", "pause_mirror"), ("resume", "resume_mirror"),
                                     ("resync", "resync_and_wait"), ("restore", "restore_job")])
def test_mirror_operations_print_json(ctx: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      verb: str, fn: str) -> None:
    monkeypatch.setattr(ops, fn, lambda c, name, **kw: {"savepoint": f"file:///sp/{name}"})
    assert cli.main(["mirror", verb, "public_orders", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "public_orders", "action": verb,
                                                   "result": {"savepoint": "file:///sp/public_orders"}}


def test_source_remove_prints_json(ctx: Any, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(service, "remove_source", lambda c, name: name == "shop")
    assert cli.main(["source", "remove", "shop", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "shop", "removed": True}


def test_events_print_json(ctx: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx.registry.record_event("public_orders", "created", "mirror added")
    ctx.registry.record_event("public_items", "paused", None)
    assert cli.main(["events", "--mirror", "public_orders", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["mirror"], e["action"], e["reason"]) for e in out] == [("public_orders", "created", "mirror added")]


def test_without_json_the_output_is_text(ctx: Any, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ops, "pause_mirror", lambda c, name: None)
    assert cli.main(["mirror", "pause", "public_orders"]) == 0
    assert capsys.readouterr().out.strip() == "mirror public_orders: pause done"
