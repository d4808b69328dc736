"""Sources: Postgres databases that mirrors read from, and their passwords.

A source's password never enters the registry, a connector config, a log or an API answer:
it lives in STATE_DIR/secrets/<source>.properties (0600, in a 0700 folder), which Kafka
Connect's FileConfigProvider resolves from the reference ``${file:<path>:password}`` in the
connector config, and which this service reads back for its own connections. Connection
strings are always built with psycopg's conninfo functions, so any password (quotes,
backslashes, blanks, non-ASCII) survives unchanged and nothing can be injected through it.

TLS: the DSN's libpq settings (sslmode up to verify-full, sslrootcert, sslcert, sslkey) are
used as they are for this service's own connections (psycopg gets the whole DSN) and copied
into the Source, from which render_connector sets Debezium's database.sslmode /
database.sslrootcert / database.sslcert / database.sslkey. Certificates and keys are passed by
absolute path, never read into a config or a log; Kafka Connect opens the same paths, so it
must run where they exist (the local stack: same host, as root). Settings the connector
cannot apply (sslpassword, sslcrl, sslcrldir) are refused rather than silently dropped, and a
client key the connector's pgjdbc could not read is refused with the conversion
(cdc/postgres/tls.py).
"""

from __future__ import annotations

import os
import tempfile
import re
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc.core import names, stack_secrets
from cdc.core.errors import ConfigError, ConflictError, NotFoundError
from cdc.core.models import Source
from cdc.core.settings import Settings
from cdc.mirrors.context import Context
from cdc.mirrors.registry import redact_dsn
from cdc.postgres import catalog, tls


# ---------------------------------------------------------------- the secrets file

def _secrets_dir(s: Settings) -> Path:
    stack_secrets.secure_state_dir(s.state_dir, walk=False)   # the folder above is enforced on every write too
    d = stack_secrets.secrets_dir(s.state_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def secret_file(s: Settings, source: str) -> Path:
    return _secrets_dir(s) / f"{source}.properties"


def _existing_secret(s: Settings, file_name: str) -> Path:
    """A secrets file's path for reading: unlike _secrets_dir, creates (and chmods) nothing,
    so a plan reads what is stored without writing anything."""
    return stack_secrets.secrets_dir(s.state_dir) / file_name


def escape_property(value: str) -> str:
    """A value as java.util.Properties reads it back unchanged: backslash escapes, control
    characters and non-ASCII as \\uXXXX (valid whatever charset the reader assumes), and a
    leading blank kept (Properties strips leading whitespace of a value)."""
    out = []
    for i, ch in enumerate(value):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == " " and i == 0:
            out.append("\\ ")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        else:
            for unit in (ch.encode("utf-16-be")[j:j + 2] for j in range(0, len(ch.encode("utf-16-be")), 2)):
                out.append("\\u%04x" % int.from_bytes(unit, "big"))
    return "".join(out)


def unescape_property(text: str) -> str:
    """Inverse of escape_property (the subset of Properties escapes it writes)."""
    units: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u":
                units.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            units.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
            i += 2
            continue
        units.append(ch)
        i += 1
    return "".join(units).encode("utf-16-be", "surrogatepass").decode("utf-16-be")


def write_password(s: Settings, source: str, password: str) -> Path:
    """Store the password 0600; the mode is set on every write, also for an existing file."""
    f = secret_file(s, source)
    data = "password=" + escape_property(password) + "\n"
    if f.exists() and f.read_text() == data:
        os.chmod(f, 0o600)
        return f
    fd, name = tempfile.mkstemp(dir=f.parent, prefix=f".{source}.", suffix=".tmp")   # 0600, unique
    tmp = Path(name)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, f)
    return f


def read_password(s: Settings, source: str) -> str | None:
    f = _existing_secret(s, f"{source}.properties")
    if not f.exists():
        return None
    for line in f.read_text().splitlines():
        if line.startswith("password="):
            return unescape_property(line[len("password="):])
    return None


def mask_salt_file(s: Settings, source: str) -> Path:
    return _secrets_dir(s) / f"{source}.mask-salt"


def mask_salt(s: Settings, source: str, *, create: bool = False) -> str | None:
    """The source's salt for hashed columns (cdc.mapping.rules): 32 random hex characters kept
    0600 in the secrets folder, made on first use and never changed while it exists, so a
    value hashes the same in every mirror of the source. None if there is none (and not create)."""
    f = _existing_secret(s, f"{source}.mask-salt")
    if not f.exists():
        if not create:
            return None
        f = mask_salt_file(s, source)
        import secrets
        fd, name = tempfile.mkstemp(dir=f.parent, prefix=f".{source}.", suffix=".tmp")   # 0600, unique
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(16) + "\n")
        try:
            os.link(name, f)             # never replaces a salt another process made meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(name)
    os.chmod(f, 0o600)
    return f.read_text().strip() or None


def password_ref(ctx: Context, src: Source) -> str | None:
    """The connector's database.password: a FileConfigProvider reference, never the value."""
    f = _existing_secret(ctx.settings, f"{src.name}.properties")
    return f"${{file:{f}:password}}" if f.exists() else None


# ---------------------------------------------------------------- sources

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PUBLICATION_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _tls_settings(name: str, parts: dict) -> dict[str, str]:
    """The DSN's TLS settings as Source fields (the connector gets the same ones, see
    render.render_connector). Paths must be absolute: Kafka Connect resolves a relative one
    from its own working directory, not this service's."""
    for key, why in tls.UNSUPPORTED_DSN_SETTINGS.items():
        if parts.get(key):
            raise ConfigError(f"source {name}: {key} in the DSN is not supported (the Debezium connector cannot "
                              f"apply it)", hint=f"{key} sets {why}")
    out: dict[str, str] = {}
    mode = parts.get("sslmode")
    if mode:
        if mode not in _SSLMODES:
            raise ConfigError(f"source {name}: sslmode={mode!r} is not a libpq sslmode",
                              hint="use one of " + ", ".join(_SSLMODES) + " (verify-full for managed Postgres)")
        out["sslmode"] = str(mode)
    for key in ("sslrootcert", "sslcert", "sslkey"):
        value = parts.get(key)
        if not value:
            continue
        if not (os.path.isabs(value) or (key == "sslrootcert" and value == "system")):
            raise ConfigError(f"source {name}: {key}={value!r} is a relative path",
                              hint=f"give the absolute path: Kafka Connect reads the {key} file itself and would "
                                   "resolve a relative path from its own working directory")
        out[key] = str(value)
    return out


def dsn_password(dsn: str) -> str | None:
    """The password libpq would use for this DSN: its own, else the entry of its password file
    (passfile=..., else PGPASSFILE, else ~/.pgpass). Debezium cannot read a password file, so
    the value found here is what goes to the source's secrets file for the connector."""
    parts = conninfo_to_dict(dsn)
    if parts.get("password"):
        return str(parts["password"])
    passfile = parts.get("passfile") or os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass")
    host = str(parts.get("host") or "localhost")
    if host.startswith("/"):
        host = "localhost"      # libpq matches a socket directory as "localhost"
    return stack_secrets.read_passfile(passfile, host, int(parts.get("port") or 5432),
                                       str(parts.get("dbname") or parts.get("user") or "postgres"),
                                       str(parts.get("user") or "postgres"))


def source_from_dsn(name: str, dsn: str, *, publication: str | None = None) -> Source:
    try:
        parts = conninfo_to_dict(dsn)
        port = int(parts.get("port") or 5432)
    except Exception as exc:
        raise ConfigError(f"source {name}: the DSN cannot be parsed ({type(exc).__name__})",
                          hint="use postgresql://USER@HOST:PORT/DBNAME (give the password with --password-env, "
                               "--password-file or --password-prompt)") from None
    if publication is not None and not _PUBLICATION_NAME.fullmatch(publication):
        raise ConfigError(f"source {name}: publication name {publication!r} is not supported",
                          hint="use the DBA's publication name in lowercase letters, digits and _ (at most 63), "
                               "e.g. cdc_publication")
    return Source(name=name, dsn=redact_dsn(dsn),
                  database=str(parts.get("dbname") or parts.get("user") or "postgres"),
                  host=str(parts.get("host") or "127.0.0.1"), port=port,
                  user=str(parts.get("user") or "postgres"), has_password=bool(dsn_password(dsn)),
                  publication=publication, **_tls_settings(name, parts))


def publication_of(src: Source) -> str:
    """The publication the source's connector reads: the DBA's, or cdc's own."""
    return src.publication or names.publication_name(src.name)


def with_password(dsn: str, password: str | None) -> str:
    """The DSN with this password set (or the DSN's own kept when None), built by libpq's rules."""
    return make_conninfo(dsn, password=password) if password is not None else make_conninfo(dsn)


def add_source(ctx: Context, name: str, dsn: str, password: str | None = None,
               publication: str | None = None) -> Source:
    """Register a Postgres database. `password` (from an environment variable, a file or a
    prompt) wins over one inside the DSN. `publication`: a publication the DBA created and
    maintains (least privilege; README "Managed Postgres"). Nothing is stored unless a
    connection works, with the DSN's TLS settings, and the connector could use them too."""
    names.check_source_name(name)
    if name == names.DEFAULT_SOURCE:
        raise ConfigError("the source name 'default' is reserved for CDC_POSTGRES_DSN (or the local stack)",
                          hint="choose another name")
    full = with_password(dsn, password)
    src = source_from_dsn(name, full, publication=publication)
    with catalog.connect(full) as conn:      # reachable, the credentials work, TLS verifies
        conn.execute("select 1")
    if src.sslkey and (problems := tls.client_key_problems(src.sslkey)):
        raise catalog.format_problems(f"source {name}: the Debezium connector could not use this TLS client key",
                                      problems)
    existing = ctx.registry.get_source(name)
    if existing is not None and existing != src.model_copy(update={"dsn": redact_dsn(src.dsn)}):
        # refuse before touching the stored password: the registered source keeps working
        raise ConflictError(f"source {name!r} already exists with a different definition",
                            hint="remove it first (cdc source remove NAME) or pick another name")
    added = ctx.registry.add_source(src)
    secret = dsn_password(full)
    if secret:
        write_password(ctx.settings, name, str(secret))
    else:
        secret_file(ctx.settings, name).unlink(missing_ok=True)
    return added


def remove_source(ctx: Context, name: str) -> bool:
    """Forget a source and its stored password (refused while mirrors use it)."""
    removed = ctx.registry.remove_source(name)
    secret_file(ctx.settings, name).unlink(missing_ok=True)
    mask_salt_file(ctx.settings, name).unlink(missing_ok=True)
    return removed


def source_dsn(ctx: Context, src: Source) -> str:
    """Full DSN (with password) for our own Postgres connections; never stored or shown."""
    if src.name == names.DEFAULT_SOURCE:
        return ctx.settings.source_dsn()
    return with_password(src.dsn, read_password(ctx.settings, src.name))


def default_source(s: Settings) -> Source:
    """The default source as ensure_default_source would register it, computed only."""
    return source_from_dsn(names.DEFAULT_SOURCE, s.source_dsn())


def ensure_default_source(ctx: Context) -> Source:
    """The default source is CDC_POSTGRES_DSN (or the local stack's Postgres). Its password,
    if the DSN has one, is (re)written to the secrets file for Connect on every call, so a
    changed password in the settings reaches the connector."""
    dsn = ctx.settings.source_dsn()
    password = dsn_password(dsn)
    if password:
        write_password(ctx.settings, names.DEFAULT_SOURCE, str(password))
    else:
        secret_file(ctx.settings, names.DEFAULT_SOURCE).unlink(missing_ok=True)
    fresh = default_source(ctx.settings)
    existing = ctx.registry.get_source(names.DEFAULT_SOURCE)
    if existing == fresh:
        return existing
    return ctx.registry.put_source(fresh)


def get_source(ctx: Context, name: str) -> Source:
    if name == names.DEFAULT_SOURCE:
        return default_source(ctx.settings) if ctx.read_only else ensure_default_source(ctx)
    src = ctx.registry.get_source(name)
    if src is None:
        known = ", ".join(s.name for s in ctx.registry.list_sources()) or "none"
        raise NotFoundError(f"unknown source {name!r} (known: {known})", hint="add it: cdc source add NAME --dsn ...")
    return src
