"""Postgres catalog client: what a table looks like, and whether it can be mirrored.

Everything is read from pg_catalog (information_schema hides domains, identity details,
storage and index key order). Names are always bound as parameters or sql.Identifier, so
tables like "Sales-EU"."Order Items" work and nothing is string-formatted into SQL.

`preflight` runs every check BEFORE anything is created (slot, publication, connector),
because a half-created pipeline is harder to clean up than a clear error up front. It
collects all fixable problems into one PreflightError so the user fixes them in one go.
psycopg exceptions are translated here; callers only see cdc.core.errors.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg
import psycopg.conninfo
from psycopg import sql
from psycopg.rows import dict_row

from cdc.core.errors import ConfigError, NotFoundError, PermanentRemoteError, PreflightError, UnreachableError
from cdc.core.models import Column, ColumnKind, TableInfo
from cdc.postgres import tls

MIN_SERVER_VERSION = 100000          # pgoutput exists since Postgres 10
_REPLIDENT = {"d": "default", "f": "full", "i": "index", "n": "nothing"}
_RELKIND = {"v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence", "c": "composite type"}
_TIME_TYPES = {"time", "timetz", "timestamp", "timestamptz"}
# Reserved (R) and type/function (T) keywords: such names must be quoted to be valid SQL.
_KEYWORDS = frozenset("""all analyse analyze and any array as asc asymmetric authorization binary both case cast
check collate collation column concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user default deferrable desc distinct do else end except
false fetch for foreign freeze from full grant group having ilike in initially inner intersect into is isnull join
lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or order outer
overlaps placing primary references returning right select session_user similar some symmetric system_user table
tablesample then to trailing true union unique user using variadic verbose when where window with""".split())
_AUTH_WORDS = ("authentication failed", "does not exist", "no pg_hba.conf entry", "password", "permission denied")


# ---------------------------------------------------------------- secrets and formatting

def _dsn_password(dsn: str) -> str | None:
    """The password in a DSN: libpq's parser first, then the patterns redact_dsn uses."""
    try:
        found = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        found = None
    m = None if found else (re.match(r"[^:/]*://[^@/:]*:(.*)@", dsn) or re.search(r"[?&]password=([^&]*)", dsn)
                            or re.search(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", dsn))
    return str(found) if found else (m.group(1).strip("'") or None) if m else None


def redact_dsn(dsn: str) -> str:
    """Return the DSN with any password replaced by ***, safe for logs and error messages."""
    if "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        m = re.match(r"([^@/:]*):(.*)@", rest)  # greedy: an unencoded '@' or '/' must not leak
        if m:
            rest = f"{m.group(1)}:***@" + rest[m.end():]
        return f"{scheme}://" + re.sub(r"([?&]password=)[^&]*", r"\1***", rest)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1***", dsn)


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN and its password (raw or %-encoded) from arbitrary text, e.g. libpq errors."""
    text = text.replace(dsn, redact_dsn(dsn))
    password = _dsn_password(dsn)
    for form in {password, quote(password, safe="")} if password else ():
        text = text.replace(form, "***")
    return text


def quote_ident(name: str) -> str:
    """Quote an identifier only when Postgres needs it, so hints can be pasted into psql."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, table: str) -> str:
    """schema.table as SQL would spell it, e.g. "Sales-EU"."Order Items"."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def format_problems(subject: str, problems: list[tuple[str, str]]) -> PreflightError:
    """Build one PreflightError from (what is wrong, how to fix it) pairs.

    One problem reads as a plain sentence; several are numbered, with fixes numbered to
    match, so `str(err)` is readable in a terminal without extra formatting by the caller.
    """
    if len(problems) == 1:
        what, fix = problems[0]
        return PreflightError(f"{subject}: {what}", hint=fix)
    lines = [f"{subject}: {len(problems)} problems"]
    lines += [f"  {i}. {what}" for i, (what, _) in enumerate(problems, 1)]
    hint = "\n        ".join(f"{i}. {fix}" for i, (_, fix) in enumerate(problems, 1))
    return PreflightError("\n".join(lines), hint=hint)


# ---------------------------------------------------------------- connecting

def connect(dsn: str, *, connect_timeout: int = 10, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Open a connection, translating failures: unreachable server -> UnreachableError
    (transient, retry), server reachable but refusing us -> PreflightError (user must fix)."""
    try:
        return psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=autocommit,
                               application_name="cdc")
    except psycopg.ProgrammingError as e:  # libpq may quote a fragment of a mangled password: omit it
        reason = "" if _dsn_password(dsn) else f": {str(e).strip()}"
        raise ConfigError(f"invalid Postgres DSN {redact_dsn(dsn)!r}{reason}",
                          hint="use postgresql://user@host:port/dbname or 'host=... dbname=...'") from None
    except psycopg.OperationalError as e:
        reason = scrub(str(e).strip(), dsn)
        if tls_failure := tls.classify_connect_error(reason, _dsn_settings(dsn)):   # not transient: name the fix
            raise PreflightError(f"cannot connect to Postgres at {redact_dsn(dsn)}: {tls_failure[0]}",
                                 hint=tls_failure[1]) from None
        if "FATAL" in reason and any(w in reason for w in _AUTH_WORDS):
            raise PreflightError(f"Postgres at {redact_dsn(dsn)} refused the connection: {reason}",
                                 hint="check the user, password, database name and pg_hba.conf") from None
        raise UnreachableError("postgres", f"cannot connect to {redact_dsn(dsn)}: {reason}",
                               hint="check that Postgres is running and reachable from this host") from None


def _dsn_settings(dsn: str) -> dict[str, str]:
    """The DSN's libpq settings without the password (for messages), {} if it does not parse."""
    try:
        return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items()
                if k not in ("password", "sslpassword")}
    except psycopg.Error:
        return {}


def exact_loaders(conn: Any, ts_pos: int, ts_neg: int) -> Any:
    """Make this connection (or cursor) read the values Python's datetime cannot hold:
    timestamp/timestamptz 'infinity' / '-infinity' as the integers ts_pos / ts_neg (the
    sentinels the mirror holds), time '24:00:00' as the text '24:00:00.000000'. psycopg
    would raise on them; readers that compare rows with the mirror need them."""
    from psycopg.types.datetime import TimeLoader, TimestampLoader, TimestamptzLoader

    class Timestamp(TimestampLoader):
        def load(self, data: Any) -> Any:
            raw = bytes(data)
            return ts_pos if raw == b"infinity" else ts_neg if raw == b"-infinity" else super().load(data)

    class Timestamptz(TimestamptzLoader):
        def load(self, data: Any) -> Any:
            raw = bytes(data)
            return ts_pos if raw == b"infinity" else ts_neg if raw == b"-infinity" else super().load(data)

    class Time(TimeLoader):
        def load(self, data: Any) -> Any:
            return "24:00:00.000000" if bytes(data).startswith(b"24:") else super().load(data)

    conn.adapters.register_loader("timestamp", Timestamp)
    conn.adapters.register_loader("timestamptz", Timestamptz)
    conn.adapters.register_loader("time", Time)
    return conn


@contextmanager
def _translated(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Turn psycopg errors raised by catalog queries into the cdc error tree."""
    try:
        yield
    except psycopg.Error as e:
        if isinstance(e, psycopg.OperationalError) and (conn.closed or conn.broken):
            raise UnreachableError("postgres", f"connection lost: {str(e).strip()}",
                                   hint="check that Postgres is still running, then retry") from None
        raise PermanentRemoteError("postgres", f"catalog query failed: {str(e).strip()}") from None


# ---------------------------------------------------------------- introspection

_REL_SQL = """
SELECT c.oid, c.relkind, c.relreplident, c.relpersistence, c.relispartition,
       pg_has_role(c.relowner, 'USAGE') AS is_owner,
       pg_get_userbyid(c.relowner) AS owner,
       has_table_privilege(c.oid, 'SELECT') AS can_select,
       has_schema_privilege(n.oid, 'USAGE') AS can_use_schema
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s"""

_COLUMNS_SQL = """
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnotnull, a.attidentity, a.attstorage, t.typtype, t.typlen, t.typcategory,
       bt.typname AS base_name, bt.typcategory AS base_category, base.typmod AS base_typmod,
       et.typname AS elem_name, pg_get_expr(d.adbin, d.adrelid) AS default_expr
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
CROSS JOIN LATERAL (
    WITH RECURSIVE chain(oid, typmod, depth) AS (
        SELECT a.atttypid, a.atttypmod, 0
        UNION ALL
        SELECT d.typbasetype, d.typtypmod, chain.depth + 1
        FROM chain JOIN pg_type d ON d.oid = chain.oid WHERE d.typtype = 'd')
    SELECT oid, typmod FROM chain ORDER BY depth DESC LIMIT 1) base
JOIN pg_type bt ON bt.oid = base.oid
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""

_INDEX_COLS_SQL = """
SELECT a.attname FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND CASE WHEN %s THEN i.indisprimary ELSE i.indisreplident END ORDER BY k.ord"""

# Leaf partitions of a partitioned table (any depth), with their replica identity. Recursive
# over pg_inherits rather than pg_partition_tree() (Postgres 12+): the same answer on 10 and 11.
_LEAVES_SQL = """
WITH RECURSIVE tree(oid) AS (
    SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
    UNION ALL
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)
SELECT c.oid, n.nspname, c.relname, c.relreplident FROM tree JOIN pg_class c ON c.oid = tree.oid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind <> 'p' ORDER BY c.oid"""

# The topmost ancestor of a partition.
_ROOT_SQL = """
WITH RECURSIVE up(oid, depth) AS (
    SELECT %s::oid, 0
    UNION ALL
    SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
SELECT n.nspname, c.relname FROM up JOIN pg_class c ON c.oid = up.oid
JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY up.depth DESC LIMIT 1"""


def _modifiers(type_name: str, typmod: int) -> tuple[int | None, int | None]:
    """Decode atttypmod into (precision/length, scale) the way format_type does."""
    if typmod < 0:
        return None, None
    if type_name == "numeric":
        return ((typmod - 4) >> 16) & 0xFFFF, (((typmod - 4) & 0x7FF) ^ 1024) - 1024
    if type_name in ("varchar", "bpchar"):
        return typmod - 4, None
    if type_name in _TIME_TYPES or type_name in ("bit", "varbit"):
        return typmod, None
    if type_name == "interval" and (typmod & 0xFFFF) != 0xFFFF:
        return typmod & 0xFFFF, None
    return None, None


def _kind(typtype: str, typcategory: str) -> ColumnKind:
    """Domain/enum/composite win over array: the declared type is what the user wrote."""
    kinds: dict[str, ColumnKind] = {"d": "domain", "e": "enum", "c": "composite"}
    return kinds.get(typtype) or ("array" if typcategory == "A" else "base" if typtype == "b" else "other")


def _column(r: dict[str, Any]) -> Column:
    is_array = r["base_category"] == "A"
    precision, scale = _modifiers(r["elem_name"] if is_array else r["base_name"], r["base_typmod"])
    default = r["default_expr"] or ""
    return Column(
        name=r["attname"], type_name=r["type_name"], base_type=r["base_name"],
        kind=_kind(r["typtype"], r["typcategory"]), element_type=r["elem_name"] if is_array else None,
        precision=precision, scale=scale, nullable=not r["attnotnull"],
        identity=r["attidentity"] in ("a", "d") or default.startswith("nextval("),
        toastable=r["attstorage"] in ("x", "e") and r["typlen"] == -1, position=r["attnum"])


def _relation(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, Any]:
    with _translated(conn), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_REL_SQL, (schema, table)).fetchone()
    if row is None:
        raise _not_found(conn, schema, table)
    return row


def _not_found(conn: psycopg.Connection[Any], schema: str, table: str) -> NotFoundError:
    """NotFoundError naming the closest existing relations (case slips, typos)."""
    with _translated(conn), conn.cursor() as cur:
        names = [(s, t) for s, t in cur.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r','p','v','m','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
                 AND n.nspname !~ '^pg_(toast|temp)' LIMIT 20000""")]
        has_schema = cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        db = cur.execute("SELECT current_database()").fetchone()
    by_lower = {f"{s}.{t}".lower(): (s, t) for s, t in names}
    matches = difflib.get_close_matches(f"{schema}.{table}".lower(), list(by_lower), n=3, cutoff=0.6)
    what = f"table {qualified_name(schema, table)} not found in database {quote_ident(db[0] if db else '?')}"
    if not has_schema:
        what += f" (there is no schema {quote_ident(schema)})"
    if matches:
        hint = "did you mean " + " or ".join(qualified_name(*by_lower[m]) for m in matches) + "?"
    else:
        hint = "check the schema and table name; names are case-sensitive, give them exactly as in Postgres"
    return NotFoundError(what, hint=hint)


def partitions(conn: psycopg.Connection[Any], oid: int) -> list[tuple[int, str, str, str]]:
    """(oid, schema, table, replica identity) of every leaf partition under a partitioned table."""
    with _translated(conn), conn.cursor() as cur:
        return [(r[0], r[1], r[2], _REPLIDENT[r[3]]) for r in cur.execute(_LEAVES_SQL, (oid,))]


def partition_root(conn: psycopg.Connection[Any], oid: int) -> tuple[str, str]:
    """(schema, table) of the partitioned table at the top of a partition's tree."""
    with _translated(conn), conn.cursor() as cur:
        row = cur.execute(_ROOT_SQL, (oid,)).fetchone()
    assert row is not None     # the partition itself is the first row of the walk
    return row[0], row[1]


def introspect(conn: psycopg.Connection[Any], schema: str, table: str) -> TableInfo:
    """Describe schema.table (exact-case names) from pg_catalog; NotFoundError if absent.

    A partitioned table (relkind 'p') is described as the one table its root is: its columns
    and primary key (which Postgres makes include the partition key), plus partition_oids,
    its leaf partitions now. Its replica identity is the weakest of the root's and the
    leaves': the old row of an UPDATE/DELETE is logged by the partition that holds the row,
    under that partition's identity (Postgres does not pass the root's on to partitions)."""
    rel = _relation(conn, schema, table)
    with _translated(conn), conn.cursor(row_factory=dict_row) as cur:
        columns = [_column(r) for r in cur.execute(_COLUMNS_SQL, (rel["oid"],))]
        pk = [r["attname"] for r in cur.execute(_INDEX_COLS_SQL, (rel["oid"], True))]
    ident, oids = _REPLIDENT[rel["relreplident"]], None
    if rel["relkind"] == "p":
        leaves = partitions(conn, rel["oid"])
        oids = [p[0] for p in leaves]
        if ident == "full" and any(p[3] != "full" for p in leaves):
            ident = next(p[3] for p in leaves if p[3] != "full")
    return TableInfo(schema_name=schema, table_name=table, columns=columns, primary_key=pk,
                     replica_identity=ident, oid=rel["oid"], partition_oids=oids)  # type: ignore[arg-type]


#: relfilenode of the table, or of each leaf partition: TRUNCATE gives a table new storage,
#: and so do rewrites (ALTER COLUMN TYPE that is not binary-compatible, VACUUM FULL, CLUSTER)
_FILENODES_SQL = """
SELECT c.oid::text, c.relfilenode::bigint FROM pg_class c
WHERE c.oid = %(oid)s AND c.relkind <> 'p'
UNION ALL
SELECT c.oid::text, c.relfilenode::bigint FROM pg_partition_tree(%(oid)s) t JOIN pg_class c ON c.oid = t.relid
WHERE t.isleaf AND c.oid <> %(oid)s
"""


def filenodes(conn: psycopg.Connection[Any], oid: int | None) -> dict[str, int]:
    """{oid: relfilenode} of a table or of its leaf partitions ({} for no oid)."""
    if not oid:
        return {}
    with _translated(conn):
        return {str(o): int(f) for o, f in conn.execute(_FILENODES_SQL, {"oid": oid}).fetchall()}


def set_replica_identity_full(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """ALTER TABLE ... REPLICA IDENTITY FULL, only when the user accepted it: without a
    primary key this is how UPDATE/DELETE events carry the old row (and thus the key)."""
    rel = _relation(conn, schema, table)  # NotFoundError with suggestions, not a raw UndefinedTable
    # A partitioned table: the root and every leaf partition (each leaf logs its own old rows).
    targets = [(schema, table)] + ([(s_, t_) for _, s_, t_, ident in partitions(conn, rel["oid"]) if ident != "full"]
                                   if rel["relkind"] == "p" else [])
    name = qualified_name(schema, table)
    with _translated(conn):
        try:
            with conn.transaction():  # commits unless the caller already has a transaction open
                for s_, t_ in targets:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(sql.Identifier(s_),
                                                                                          sql.Identifier(t_)))
        except psycopg.errors.InsufficientPrivilege:
            raise PreflightError(f"cannot set REPLICA IDENTITY FULL on {name}: only its owner may alter it",
                                 hint=f"ask the owner to run: ALTER TABLE {name} REPLICA IDENTITY FULL;") from None


# ---------------------------------------------------------------- preflight

def preflight(conn: psycopg.Connection[Any], schema: str, table: str, key_columns: list[str] | None,
              *, check_create_publication: bool = True, slot_name: str | None = None,
              publication: str | None = None, accept_replica_identity_full: bool = False) -> TableInfo:
    """Check that schema.table can be mirrored through Debezium/pgoutput; return its TableInfo.

    Raises NotFoundError for an unknown table, PreflightError (all problems, each with its
    fix) for anything the user must change. `slot_name`: when that replication slot already
    exists (another mirror on this source), no free slot or WAL sender is required.
    `publication`: a DBA-managed publication (least privilege). Then table ownership and
    CREATE on the database are not needed; instead the publication must exist and hold the
    table and cdc's _cdc tables, which the role must be able to use (_publication_problems).
    A TLS client key the connector could not read is reported too (cdc.postgres.tls).
    """
    name, version = qualified_name(schema, table), conn.info.server_version
    subject = f"cannot mirror {name}"
    if version < MIN_SERVER_VERSION:
        raise PreflightError(f"{subject}: Postgres {version // 10000} is too old; logical decoding with "
                             "pgoutput needs Postgres 10 or newer", hint="upgrade the server to Postgres 10+")
    rel = _relation(conn, schema, table)
    if (kind := rel["relkind"]) not in ("r", "p"):
        raise PreflightError(f"{subject}: it is a {_RELKIND.get(kind, 'relation')}, and logical replication "
                             "only streams ordinary and partitioned tables",
                             hint="mirror the underlying table(s) instead")
    if rel["relispartition"]:
        # Its changes are published as the root's (publish_via_partition_root): a mirror of the
        # partition alone would get its snapshot and then nothing.
        root = qualified_name(*partition_root(conn, rel["oid"]))
        raise PreflightError(f"{subject}: it is a partition of {root}; cdc mirrors a partitioned table through "
                             "its root, which receives the changes of every partition",
                             hint=f"mirror the partitioned table: cdc mirror add {root}")
    problems: list[tuple[str, str]] = []
    with _translated(conn), conn.cursor(row_factory=dict_row) as cur:
        s = cur.execute(
            """SELECT current_setting('wal_level') AS wal_level,
                      current_setting('max_replication_slots')::int AS max_slots,
                      current_setting('max_wal_senders')::int AS max_senders,
                      (SELECT count(*) FROM pg_replication_slots) AS used_slots,
                      (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender') AS used_senders,
                      (SELECT active FROM pg_replication_slots WHERE slot_name = %s) AS slot_active,
                      r.rolname, r.rolsuper, r.rolreplication,
                      CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')
                           THEN pg_has_role('rds_replication', 'MEMBER') ELSE false END AS rds_replication,
                      has_database_privilege(current_database(), 'CREATE') AS can_create,
                      current_database() AS db
               FROM pg_roles r WHERE r.rolname = current_user""", (slot_name,)).fetchone()
    assert s is not None  # current_user always has a pg_roles row
    role, db = quote_ident(s["rolname"]), quote_ident(s["db"])
    restart = "then restart Postgres"
    if s["wal_level"] != "logical":
        problems.append((f"wal_level is '{s['wal_level']}', but change data capture needs 'logical'",
                         f"ALTER SYSTEM SET wal_level = logical; {restart}"))
    if s["max_slots"] <= 0 or s["max_senders"] <= 0:
        problems.append((f"max_replication_slots = {s['max_slots']}, max_wal_senders = {s['max_senders']}; both "
                         "must be > 0", f"ALTER SYSTEM SET max_replication_slots = 10; ALTER SYSTEM SET "
                         f"max_wal_senders = 10; {restart}"))
    else:
        if s["slot_active"] is None and s["used_slots"] >= s["max_slots"]:
            problems.append((f"all {s['max_slots']} replication slots are in use",
                             "drop unused slots (SELECT pg_drop_replication_slot(name)) or raise "
                             f"max_replication_slots; {restart}"))
        if not s["slot_active"] and s["used_senders"] >= s["max_senders"]:
            problems.append((f"all {s['max_senders']} WAL senders are busy",
                             f"raise max_wal_senders (ALTER SYSTEM SET max_wal_senders = ...); {restart}"))
    if not (s["rolsuper"] or s["rolreplication"] or s["rds_replication"]):
        problems.append((f"role {role} may not replicate (it has neither REPLICATION nor SUPERUSER)",
                         f"ALTER ROLE {role} REPLICATION;  (on RDS: GRANT rds_replication TO {role};)"))
    managed = " (least privilege: have the DBA create a publication and register the source with " \
              "`cdc source add ... --publication NAME`, README \"Managed Postgres\")"
    if publication is not None:
        check_create_publication = False
        problems += _publication_problems(conn, publication, schema, table, rel, s["rolname"])
    if check_create_publication and not rel["is_owner"]:
        problems.append((f"role {role} does not own {name} (owner: {quote_ident(rel['owner'])}); Debezium must "
                         "own a table to add it to its publication",
                         f"ALTER TABLE {name} OWNER TO {role};{managed}"))
    if check_create_publication and not s["can_create"]:
        problems.append((f"role {role} may not CREATE PUBLICATION in database {db}",
                         f"GRANT CREATE ON DATABASE {db} TO {role};{managed}"))
    if sslkey := conn.info.get_parameters().get("sslkey"):
        problems += tls.client_key_problems(sslkey)
    if not rel["can_use_schema"]:
        problems.append((f"role {role} has no USAGE on schema {quote_ident(schema)}",
                         f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {role};"))
    if not rel["can_select"]:
        problems.append((f"role {role} may not SELECT from {name}, which the initial snapshot needs",
                         f"GRANT SELECT ON {name} TO {role};"))
    if rel["relpersistence"] != "p":
        problems.append((f"{name} is UNLOGGED or TEMPORARY, so its changes never reach the WAL",
                         f"ALTER TABLE {name} SET LOGGED;"))
    if kind == "p" and version < 130000:
        problems.append((f"{name} is partitioned; publishing partitioned tables needs Postgres 13+",
                         "upgrade to Postgres 13+, or mirror each partition"))
    info = introspect(conn, schema, table)
    problems += _key_problems(conn, info, rel["oid"], key_columns, accept_replica_identity_full)
    problems += _type_problems(info)
    if problems:
        raise format_problems(subject, problems)
    return info


def _publication_problems(conn: psycopg.Connection[Any], publication: str, schema: str, table: str,
                          rel: dict[str, Any], rolname: str) -> list[tuple[str, str]]:
    """A DBA-managed publication: it exists, publishes insert/update/delete, and holds the table
    in full (no row filter, no column list) plus cdc's _cdc tables (signal, heartbeat,
    freshness), which exist and which the role may SELECT (Debezium snapshots them), INSERT
    and UPDATE (signals, heartbeats, freshness probes). Nothing is created here; every fix is
    a statement for the DBA (the owner of the publication and the tables)."""
    from cdc.core.names import FRESHNESS_TABLE, HEARTBEAT_TABLE, SIGNAL_TABLE
    from cdc.mapping.render import bootstrap_sql
    pub, role, name = quote_ident(publication), quote_ident(rolname), qualified_name(schema, table)
    cdc_tables = [qualified_name(*t) for t in (SIGNAL_TABLE, HEARTBEAT_TABLE, FRESHNESS_TABLE)]
    with _translated(conn), conn.cursor(row_factory=dict_row) as cur:
        viaroot = "pubviaroot" if conn.info.server_version >= 130000 else "false AS pubviaroot"
        p = cur.execute(f"SELECT oid, puballtables, pubinsert, pubupdate, pubdelete, {viaroot} FROM pg_publication "
                        "WHERE pubname = %s", (publication,)).fetchone()
        cdc = cur.execute(
            """SELECT t.name, c.oid IS NOT NULL AS present,
                      c.oid IS NOT NULL AND has_schema_privilege(c.relnamespace, 'USAGE') AS can_use_schema,
                      c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT') AS can_select,
                      c.oid IS NOT NULL AND has_table_privilege(c.oid, 'INSERT') AS can_insert,
                      c.oid IS NOT NULL AND has_table_privilege(c.oid, 'UPDATE') AS can_update
               FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, ord)
               LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) ORDER BY t.ord""", (cdc_tables,)).fetchall()
        wanted = [(schema, table)] + [(s_, t_) for s_, t_ in (SIGNAL_TABLE, HEARTBEAT_TABLE, FRESHNESS_TABLE)]
        filters = "attnames, rowfilter" if conn.info.server_version >= 150000 else "NULL AS attnames, NULL AS rowfilter"
        published = {(r["schemaname"], r["tablename"]): r for r in cur.execute(
            f"SELECT schemaname, tablename, {filters} FROM pg_publication_tables WHERE pubname = %s", (publication,))}
        root_published = p is not None and cur.execute(   # a partitioned table published via its root
            "SELECT 1 FROM pg_publication_rel WHERE prpubid = %s AND prrelid = %s", (p["oid"], rel["oid"])).fetchone()
    missing_cdc = [r["name"] for r in cdc if not r["present"]]
    ddl = " ".join(f"{stmt};" for stmt in bootstrap_sql("")) if missing_cdc else ""
    partitioned = rel["relkind"] == "p"
    grants = (f"GRANT USAGE ON SCHEMA _cdc TO {role}; GRANT SELECT, INSERT, UPDATE ON {', '.join(cdc_tables)} "
              f"TO {role};")
    if p is None:
        create = f"CREATE PUBLICATION {pub} FOR TABLE {name}, {', '.join(cdc_tables)};"
        return [(f"publication {pub} does not exist in this database (a source registered with --publication "
                 "uses the DBA's publication and never creates one)",
                 "as the DBA (owner of the tables): " + " ".join(x for x in (ddl, grants, create) if x))]
    problems: list[tuple[str, str]] = []
    if not (p["pubinsert"] and p["pubupdate"] and p["pubdelete"]):
        problems.append((f"publication {pub} does not publish every INSERT, UPDATE and DELETE",
                         f"as its owner: ALTER PUBLICATION {pub} SET (publish = 'insert, update, delete, truncate');"))
    if partitioned and not p["pubviaroot"]:
        problems.append((f"publication {pub} publishes the changes of {name}'s partitions as the partitions' own "
                         "(publish_via_partition_root is off), so Debezium, which captures the root, would never "
                         "see them", f"as its owner: ALTER PUBLICATION {pub} SET (publish_via_partition_root = true);"))
    if missing_cdc:
        problems.append((f"cdc's own table(s) {', '.join(missing_cdc)} do not exist, and this role may not create "
                         "them (signals, heartbeats, freshness probes)",
                         f"as the DBA: {ddl} {grants} ALTER PUBLICATION {pub} ADD TABLE {', '.join(missing_cdc)};"))
    lacking = [f"{verb} on {r['name']}" for r in cdc if r["present"] and r["can_use_schema"]
               for verb, ok in (("SELECT", r["can_select"]), ("INSERT", r["can_insert"]),
                                ("UPDATE", r["can_update"])) if not ok]
    if any(r["present"] and not r["can_use_schema"] for r in cdc):
        lacking.insert(0, "USAGE on schema _cdc")
    if lacking:
        problems.append((f"role {role} lacks {'; '.join(lacking)} (Debezium snapshots these tables and writes "
                         "heartbeats, cdc writes signals and freshness probes)", f"as the DBA: {grants}"))
    absent = [qualified_name(s_, t_) for s_, t_ in wanted
              if (s_, t_) not in published and not (p["puballtables"] or ((s_, t_) == (schema, table) and root_published))
              and qualified_name(s_, t_) not in missing_cdc]
    if absent:
        problems.append((f"publication {pub} does not contain {', '.join(absent)}, so Debezium would never see "
                         "their changes", f"as the owner of the publication and the table(s): ALTER PUBLICATION {pub} "
                                          f"ADD TABLE {', '.join(absent)};"))
    partial = [qualified_name(s_, t_) for s_, t_ in wanted if (r := published.get((s_, t_)))
               and (r["rowfilter"] is not None or (r["attnames"] is not None and
                                                   s_ == schema and t_ == table and
                                                   len(r["attnames"]) < len(_column_names(conn, rel["oid"]))))]
    if partial:
        problems.append((f"publication {pub} publishes only some rows or columns of {', '.join(partial)} (a row "
                         "filter or column list): the mirror would not be an exact copy",
                         "as its owner, publish them in full: " + " ".join(
                             f"ALTER PUBLICATION {pub} DROP TABLE {t}; ALTER PUBLICATION {pub} ADD TABLE {t};"
                             for t in partial)))
    return problems


def _column_names(conn: psycopg.Connection[Any], oid: int) -> list[str]:
    with _translated(conn), conn.cursor() as cur:
        return [r[0] for r in cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                                          "AND NOT attisdropped AND attgenerated = ''", (oid,))]


def _key_problems(conn: psycopg.Connection[Any], info: TableInfo, oid: int,
                  key_columns: list[str] | None, accept_full: bool = False) -> list[tuple[str, str]]:
    """accept_full: the caller will set REPLICA IDENTITY FULL once every other check passed."""
    """The mirror needs a key in every event, including the old row of UPDATE/DELETE."""
    name = qualified_name(info.schema_name, info.table_name)
    if not key_columns:
        if not info.primary_key:
            return [(f"{name} has no primary key, so rows cannot be matched to mirror rows",
                     "add a primary key, or pass --key COLUMN[,COLUMN] naming NOT NULL columns that are unique "
                     "(this also needs REPLICA IDENTITY FULL, which cdc sets when you accept it)")]
        key_columns = info.primary_key
    names = {c.name: c for c in info.columns}
    if missing := [k for k in key_columns if k not in names]:
        return [(f"--key column(s) {', '.join(quote_ident(m) for m in missing)} do not exist in {name}",
                 "choose from: " + ", ".join(quote_ident(c.name) for c in info.columns))]
    problems = [(f"--key column {quote_ident(k)} is nullable; a key must never be NULL",
                 f"ALTER TABLE {name} ALTER COLUMN {quote_ident(k)} SET NOT NULL;")
                for k in key_columns if names[k].nullable]
    if set(key_columns) != set(info.primary_key) and not _unique_index_within(conn, oid, key_columns):
        cols = ", ".join(quote_ident(k) for k in key_columns)
        problems.append((f"--key ({cols}) is not backed by a unique index on {name}: rows with equal keys "
                         "would silently collapse into one mirror row",
                         f"CREATE UNIQUE INDEX ON {name} ({cols});  (or choose key columns a unique index covers)"))
    keys, ident = set(key_columns), info.replica_identity
    covered = set(info.primary_key) if ident == "default" else set()
    if ident == "index":
        with _translated(conn), conn.cursor() as cur:
            covered = {r[0] for r in cur.execute(_INDEX_COLS_SQL, (oid, False))}
    if ident != "full" and not keys <= covered and not accept_full:
        if ident == "nothing":
            what = f"{name} has REPLICA IDENTITY NOTHING: UPDATE and DELETE would fail once it is published"
        elif not info.primary_key:
            what = (f"{name} has no primary key, so with --key {', '.join(key_columns)} it needs "
                    "REPLICA IDENTITY FULL for UPDATE/DELETE events to carry the key (not set yet)")
        else:
            what = (f"the replica identity of {name} does not include key column(s) "
                    f"{', '.join(sorted(keys - covered))}; UPDATE/DELETE events would lack them")
        problems.append((what, "accept REPLICA IDENTITY FULL with `cdc mirror add ... --replica-identity-full` "
                               f"(cdc runs ALTER TABLE {name} REPLICA IDENTITY FULL;) or run that yourself; "
                               "UPDATE/DELETE then log the whole old row (more WAL)"))
    return problems


def _unique_index_within(conn: psycopg.Connection[Any], oid: int, key_columns: list[str]) -> bool:
    """True when a valid, non-partial unique index (or constraint) has all its columns
    (no expressions) among key_columns: then no two rows can share the key."""
    with _translated(conn), conn.cursor() as cur:
        rows = cur.execute(
            """SELECT array_agg(a.attname::text) FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey::int2[]) AS k(attnum)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
               WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                 AND i.indexprs IS NULL
               GROUP BY i.indexrelid""", (oid,)).fetchall()
    return any(cols and None not in cols and set(cols) <= set(key_columns) for (cols,) in rows)


def _type_problems(info: TableInfo) -> list[tuple[str, str]]:
    """Delegate type support to cdc.mapping.typemap when it exists (it is optional at import time)."""
    try:
        typemap = importlib.import_module("cdc.mapping.typemap")
    except ModuleNotFoundError as e:
        if e.name in ("cdc.mapping.typemap", "cdc"):
            return []
        raise
    result = typemap.check_supported(info)  # may raise a CdcError itself
    if isinstance(result, (list, tuple)):
        return [(str(r), "change the column to a supported type") for r in result]
    return []


__all__ = ["connect", "format_problems", "introspect", "preflight", "qualified_name", "quote_ident", "redact_dsn",
           "scrub", "set_replica_identity_full"]
