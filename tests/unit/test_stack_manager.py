"""`up` refuses a taken port before starting anything, and undoes a failed start."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from cdc.core.settings import Settings
from cdc.core.errors import StackError
from cdc.stack import manager
from cdc.stack.process import Service


def _svc(tmp_path: Path, name: str, ports: dict, health=lambda: None, deps=()) -> Service:
    return Service(name=name, component=name, version="0", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                   run_dir=tmp_path / "run", log_file=tmp_path / f"{name}.log", ports=ports, health=health,
                   depends_on=list(deps))


def test_taken_port_reported_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        a = _svc(tmp_path, "a", {})
        b = _svc(tmp_path, "b", {"http": port})
        monkeypatch.setattr(manager, "plan_services", lambda s, p=None, **k: ([a, b], []))
        with pytest.raises(StackError, match=f"127.0.0.1:{port}"):
            manager.up(Settings(state_dir=tmp_path), progress=lambda m: None)
        assert a.pid() is None and b.pid() is None


def test_failed_start_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _svc(tmp_path, "a", {})
    b = _svc(tmp_path, "b", {}, health=lambda: "never healthy", deps=["a"])
    monkeypatch.setattr(manager, "plan_services", lambda s, p=None, **k: ([a, b], []))
    with pytest.raises(StackError, match="never healthy"):
        manager.up(Settings(state_dir=tmp_path, start_timeout_s=2), progress=lambda m: None)
    assert a.pid() is None and b.pid() is None


def test_second_up_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _svc(tmp_path, "a", {})
    monkeypatch.setattr(manager, "plan_services", lambda s, p=None, **k: ([a], []))
    try:
        manager.up(Settings(state_dir=tmp_path), progress=lambda m: None)
        pid = a.pid()
        notes: list[str] = []
        manager.up(Settings(state_dir=tmp_path), progress=notes.append)
        assert a.pid() == pid
        assert not any(n.startswith("starting") for n in notes)
    finally:
        a.stop(5)
