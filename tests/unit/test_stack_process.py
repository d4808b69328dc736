"""Supervision: pid identity, health wait, a process dying while starting, stop."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from cdc.core.errors import StackError
from cdc.stack.process import Service, port_in_use


def _svc(tmp_path: Path, argv: list[str], health=lambda: None) -> Service:
    return Service(name="dummy", component="dummy", version="0", argv=argv, run_dir=tmp_path / "run",
                   log_file=tmp_path / "logs" / "dummy.log", ports={}, health=health)


def test_start_stop_and_pid_identity(tmp_path: Path) -> None:
    s = _svc(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    pid = s.start()
    assert s.pid() == pid
    s.wait_healthy(5)
    # A pid file naming the right pid but another start time is not ours.
    real = s.pid_file.read_text()
    s.pid_file.write_text(f"{pid} 1\n")
    assert s.pid() is None
    s.pid_file.write_text(real)
    assert s.stop(5) is True
    assert s.pid() is None
    assert s.stop(5) is False


def test_process_dying_while_starting_names_the_log(tmp_path: Path) -> None:
    s = _svc(tmp_path, [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
             health=lambda: "not yet")
    s.start()
    with pytest.raises(StackError) as ei:
        s.wait_healthy(10)
    assert "exited while starting" in str(ei.value)
    assert str(s.log_file) in str(ei.value)
    assert "boom: bad config" in str(ei.value)


def test_unhealthy_times_out_with_reason(tmp_path: Path) -> None:
    s = _svc(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"], health=lambda: "port closed")
    s.start()
    try:
        with pytest.raises(StackError, match="port closed"):
            s.wait_healthy(1.5)
    finally:
        s.stop(5)


def test_sigterm_ignored_then_killed(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    s = _svc(tmp_path, [sys.executable, "-c", code])
    s.start()
    assert s.stop(1.0) is True
    assert s.pid() is None


def test_port_in_use() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        assert port_in_use("127.0.0.1", srv.getsockname()[1])
