"""Credentials the local stack generates for itself, and the state folder's permissions.

The stack's Postgres (scram-sha-256) and Kafka Connect's REST API (HTTP basic auth) each get
a random password on their first `cdc stack up`. Both live only in STATE_DIR/secrets (0700,
files 0600); nothing prints them. Clients are given references, not values:
- Postgres: a libpq password file (``passfile=...`` in the DSN, the format libpq reads), so
  the DSN that `cdc stack status --json` shows names the file, never the password;
- Connect: a Java properties file ``cdc: <password>``, which Connect's
  PropertyFileLoginModule reads and this service's Connect client reads back.

The state folder holds every mirrored row (Kafka's data) and these files, so it is 0700 and
everything in it loses group/other bits on every `up` and on every secrets write. As root,
the private Postgres runs as the `postgres` OS user, which must traverse the folder: the
folder is then 0710 with group `postgres` (traverse only, no listing), and every other
local user is still kept out.
"""

from __future__ import annotations

import grp
import os
import secrets
import stat
import tempfile
from pathlib import Path

POSTGRES_USER = "postgres"
CONNECT_USER = "cdc"


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / "secrets"


def postgres_passfile(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / "postgres.pgpass"


def connect_users_file(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / "connect-users.properties"


def new_password() -> str:
    """43 URL-safe characters: no ':' or '\\' (pgpass and properties need no escaping)."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` 0600 through a unique temp file (never readable by others,
    not even for a moment), then harden the folders above it."""
    secure_state_dir(path.parent.parent, walk=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(name, 0o600)
    os.replace(name, path)


# ---------------------------------------------------------------- Postgres

def postgres_password(state_dir: Path) -> str | None:
    f = postgres_passfile(state_dir)
    if not f.exists():
        return None
    for raw in f.read_text().splitlines():
        fields = _pgpass_fields(raw)
        if fields and fields[3] == POSTGRES_USER:
            return fields[4]
    return None


def _pgpass_fields(raw: str) -> list[str] | None:
    """host, port, database, user, password of one password-file line (None: not an entry)."""
    if not raw.strip() or raw.lstrip().startswith("#"):
        return None
    fields, cur, i = [], [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            cur.append(raw[i + 1])
            i += 2
            continue
        if ch == ":" and len(fields) < 4:
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    fields.append("".join(cur))
    return fields if len(fields) == 5 else None


def ensure_postgres_password(state_dir: Path, host: str, port: int) -> tuple[str, bool]:
    """The stack Postgres' superuser password, generated once. Returns (password, created).

    The entry names the stack's host and port (rewritten when the port changes), never '*':
    libpq hands a matching entry to whatever server a DSN names, and it must only ever go to
    this one."""
    existing = postgres_password(state_dir)
    password = existing or new_password()
    esc = host.replace("\\", "\\\\").replace(":", "\\:")      # an IPv6 address has ':'
    line = f"{esc}:{port}:*:{POSTGRES_USER}:{password}\n"    # host:port:database:user:password
    f = postgres_passfile(state_dir)
    if not existing or f.read_text() != line:
        write_private(f, line)
    return password, not existing


def read_passfile(path: str | Path, host: str, port: int, dbname: str, user: str) -> str | None:
    """The password libpq would take from a password file for these settings (first match;
    '*' matches anything, '\\:' and '\\\\' are escapes), or None."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError:
        return None
    for raw in text.splitlines():
        fields = _pgpass_fields(raw)
        if fields is None:
            continue
        want = (host, str(port), dbname, user)
        if all(f == "*" or f == w for f, w in zip(fields[:4], want)):
            return fields[4]
    return None


# ---------------------------------------------------------------- Kafka Connect

def connect_password(state_dir: Path) -> str | None:
    f = connect_users_file(state_dir)
    if not f.exists():
        return None
    for line in f.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == CONNECT_USER:
            return value.strip()
    return None


def ensure_connect_password(state_dir: Path) -> str:
    existing = connect_password(state_dir)
    if existing:
        return existing
    password = new_password()
    write_private(connect_users_file(state_dir), f"{CONNECT_USER}: {password}\n")
    return password


# ---------------------------------------------------------------- the state folder

def _postgres_gid() -> int | None:
    try:
        return grp.getgrnam(POSTGRES_USER).gr_gid
    except KeyError:
        return None


def secure_state_dir(state_dir: Path, *, walk: bool = True) -> None:
    """0700 for the folder (0710 group postgres as root, see the module doc); with `walk`,
    strip group and other bits from everything below it (Kafka's data, logs, configs)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    gid = _postgres_gid() if os.geteuid() == 0 else None
    if gid is not None:
        os.chown(state_dir, 0, gid)
        os.chmod(state_dir, 0o710)
    else:
        os.chmod(state_dir, 0o700)
    if not walk:
        return
    for root, dirs, files in os.walk(state_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                try:
                    os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
                except OSError:
                    pass
