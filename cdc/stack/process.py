"""One supervised OS process of the local stack.

A pid file holds "pid starttime": the start time (from /proc/PID/stat) guards against
pid reuse, so `down` never signals a process the stack did not start. Processes run in
their own session (process group) so stop() reaches the JVM behind a wrapper script.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cdc.core.errors import StackError

HealthCheck = Callable[[], "str | None"]  # None = healthy, else a reason
Progress = Callable[[str], None]


@dataclass
class Unavailable:
    """A component that is configured but cannot run here, and why (shown by status)."""

    name: str
    reason: str
    required: bool


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def is_alive(pid: int) -> bool:
    """True for a running process; False when gone or a zombie. (Nothing reaps orphans on
    some machines, so a killed process can stay a zombie that kill(pid, 0) calls alive.)"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def rss_bytes(pid: int) -> int:
    """RSS of pid plus its descendants (a wrapper script's JVM child counts)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every descendant of pid; pass one children_map() to walk several trees in one pass."""
    children = children_map() if children is None else children
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Service:
    """A process the stack runs: what to exec, where it logs, how to tell it is healthy."""

    name: str                       # e.g. "flink-taskmanager"
    component: str                  # e.g. "flink"
    version: str
    argv: list[str]
    run_dir: Path                   # state/run: pid files
    log_file: Path
    ports: dict[str, int]
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None         # run as this OS user (Postgres refuses root)
    depends_on: list[str] = field(default_factory=list)
    prepare: Callable[[], None] | None = None   # write configs / init data before first start
    endpoints: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM   # Postgres: SIGINT = "fast" shutdown

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The pid this stack started, if that very process is still alive."""
        try:
            pid_s, start = self.pid_file.read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            return None
        if _start_time(pid) != start:
            return None
        return pid if is_alive(pid) else None

    def check(self) -> str | None:
        if self.pid() is None:
            return "not running"
        try:
            return self.health()
        except Exception as exc:  # a health probe must never crash status
            return f"health check error: {exc}"

    def start(self) -> int:
        if self.prepare:
            self.prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        kwargs: dict = {}
        if self.user and os.geteuid() == 0 and self.user != "root":
            pw = pwd.getpwnam(self.user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
            env["HOME"] = pw.pw_dir
        log = open(self.log_file, "ab")
        log.write(f"\n==== cdc stack: starting {self.name} at {time.strftime('%F %T')} ====\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    umask=0o077, **kwargs)   # data files 0600: rows are private
        except OSError as exc:
            raise StackError(self.name, f"cannot exec {self.argv[0]}: {exc}", log=str(self.log_file)) from exc
        finally:
            log.close()
        start = None
        for _ in range(50):
            start = _start_time(proc.pid)
            if start:
                break
            time.sleep(0.01)
        self.pid_file.write_text(f"{proc.pid} {start}\n")
        return proc.pid

    def wait_healthy(self, timeout: float, on_wait: Callable[[str], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        last_note = 0.0
        reason: str | None = "not checked"
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(self.name, "the process exited while starting", log=str(self.log_file),
                                 hint="read the log's last lines:\n" + tail(self.log_file))
            reason = self.check()
            if reason is None:
                return
            if on_wait and time.monotonic() - last_note > 10:
                on_wait(f"{self.name}: waiting for health ({reason})")
                last_note = time.monotonic()
            time.sleep(0.5)
        raise StackError(self.name, f"not healthy after {timeout:.0f}s: {reason}", log=str(self.log_file),
                         hint="read the log; a slow machine may need a larger CDC_START_TIMEOUT_S")

    def stop(self, timeout: float) -> bool:
        """SIGTERM the process group, SIGKILL after timeout. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal(pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
        if self.pid() is not None:
            self._signal(pid, signal.SIGKILL)
            for _ in range(50):
                if self.pid() is None:
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)   # pid == pgid: started with start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
