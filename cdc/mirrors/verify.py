"""Does the mirror hold exactly what Postgres holds? Counts first, then per-key digests.

Why digests in chunks: a table of millions of rows must never sit in memory as rows. Postgres
is read by keyset pagination in key order in one REPEATABLE READ transaction (one snapshot;
its pg_current_wal_lsn() is reported). Pinot is queried per key range of each Postgres chunk
(on the first key column; the other key columns are part of the hashed key). Where no Pinot
server runs, Pinot's own ingestion and FULL-upsert code (cdc's in-process Pinot engine) consumes
the mirror's flat topic with the schema and table config cdc renders, and the rows it would
answer are hashed; only key -> digest is kept.

Why a re-check: the snapshot and the target are read at different moments, so changes in
flight look like differences. Every key that differs is re-read on both sides (Postgres
fresh, the engine over the whole topic again, Pinot by key) until they agree or
settle_timeout expires; only keys that still differ are reported. A key that agrees at any
moment really was mirrored, so the re-check cannot hide a wrong value that persists.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.core.models import MirrorRules, MirrorSpec, TableInfo
from cdc.mapping import canonical, render, rules
from cdc.mirrors import service
from cdc.mirrors import state as mirror_state
from cdc.postgres import catalog
from cdc.mapping.typemap import TS_NEG_INFINITY, TS_POS_INFINITY, TypeMapping, map_table, normalize_type

Key = tuple[Any, ...]
Row = dict[str, Any]
Progress = Callable[[str], None]
SAMPLES = 5
_BATCH = 500                 # keys per re-check query
_PINOT_LIMIT = 10_000_000
_BUCKET_ROWS = 200_000       # rows per hash bucket of the engine comparison (both sides)


class Sample(BaseModel):
    key: list[Any]
    source: Row | None = None      # canonical values as Postgres holds them (None: absent)
    target: Row | None = None      # canonical values as the target holds them (None: absent)


class VerifyReport(BaseModel):
    mirror: str
    table: str
    target: Literal["pinot", "pinot-engine"]
    target_detail: str
    source_lsn: str
    source_rows: int
    target_rows: int
    missing: int = 0
    extra: int = 0
    differing: int = 0
    duplicates: int = 0                      # keys the target shows more than once (upsert failure)
    samples: dict[str, list[Sample]] = {}    # "missing" / "extra" / "differing" -> at most 5 each
    rechecked: int = 0                       # keys that differed in the first pass and were re-read
    recheck_attempts: int = 0
    duration_s: float = 0.0
    clean: bool = False
    rules: list[str] = []                    # how the mirror's column rules shaped the comparison
    not_compared: list[str] = []             # mirror columns left out of the comparison, and why

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1


class _Table:
    """The layout verify hashes in: every mirrored column in attnum order, the mirror's key.

    The mirror's rules, applied by Postgres (the oracle), never by cdc's code under test: only
    kept columns; a masked column as Postgres computes the mask (SHA-256 over the salt and the
    value, cut like Debezium cuts it; the constant of redact); only rows for which Postgres finds
    the row filter true (timestamps given to it as epoch microseconds, as in the job); a computed
    column only when a Postgres expression for it is given (computed_sql), else not compared.
    ``params`` fill the placeholders of sel_cols (the salt) and come first in every query."""

    def __init__(self, info: TableInfo, keys: list[str], spec: MirrorSpec | None = None, salt: str | None = None,
                 computed_sql: dict[str, str] | None = None) -> None:
        self.info, self.keys = info, keys
        r = spec.rules if spec is not None else MirrorRules()
        kept = set(rules.kept_columns(r, info, keys))
        self.maps: dict[str, TypeMapping] = {m.column: m for m in map_table(info) if m.column in kept}
        self.params: list[Any] = []
        sel = []
        for c, m in self.maps.items():
            quoted = sql.Identifier(c).as_string()
            if c in r.mask_columns:
                sel.append(sql.SQL(rules.pg_masked(r.mask_columns[c], info.column(c), quoted)))
                self.params += [salt] * (r.mask_columns[c] == "hash")
            else:
                sel.append(sql.SQL(canonical.pg_select(m, quoted)))
        for name, expr in (computed_sql or {}).items():       # the user's Postgres SQL, as given
            assert spec is not None
            self.maps[name] = rules.computed_mapping(name, spec.computed_types[name])
            sel.append(sql.SQL("(" + expr.replace("%", "%%") + ")"))
        self.cols = list(self.maps)
        self.rel: sql.Composable = sql.Identifier(info.schema_name, info.table_name)
        if r.row_filter:
            view = ", ".join(rules.pg_view(r, info, keys, '"__cdc_t"'))
            self.rel = sql.SQL('(SELECT * FROM {} AS "__cdc_t" WHERE COALESCE((SELECT ({}) FROM (SELECT {}) AS '
                               '"__cdc_v"), false)) AS "__cdc_src"').format(
                self.rel, sql.SQL(rules.pg_expression(r.row_filter)), sql.SQL(view))
        self.sel_cols = sql.SQL(", ").join(sel)
        self.key_cols = sql.SQL(", ").join(map(sql.Identifier, keys))

    def from_pg(self, rec: Iterable[Any]) -> Row:
        return {c: canonical.pg_value(v, self.maps[c]) for c, v in zip(self.cols, rec)}

    def from_flat(self, rec: dict[str, Any]) -> Row:
        return {c: canonical.flat_value(rec.get(self.maps[c].name), self.maps[c]) for c in self.cols}

    def key(self, row: Row) -> Key:
        return tuple(row[k] for k in self.keys)

    def flat_key(self, rec: dict[str, Any]) -> Key:
        """key(from_flat(rec)), converting only the key columns."""
        return tuple(canonical.flat_value(rec.get(self.maps[k].name), self.maps[k]) for k in self.keys)

    def digest(self, row: Row) -> str:
        return canonical.row_digest([row[c] for c in self.cols])


def _query(conn: psycopg.Connection[Any], query: sql.Composable, params: list[Any]) -> psycopg.Cursor[Any]:
    """Run a query that holds user text (the row filter, --computed SQL) as ONE statement:
    prepared, i.e. always the extended protocol. Without parameters psycopg would send it with
    the simple protocol, which runs every ';'-separated statement in the text."""
    return conn.execute(query, params, prepare=True)


def _pg_count(conn: psycopg.Connection[Any], t: _Table) -> tuple[str, int]:
    """(the snapshot's WAL position, the number of rows the mirror should hold)."""
    row = _query(conn, sql.SQL("SELECT pg_current_wal_lsn()::text, count(*) FROM {}").format(t.rel), []).fetchone()
    return row or ("?", 0)


def _pg_chunks(conn: psycopg.Connection[Any], t: _Table, chunk_rows: int) -> Iterable[tuple[dict[Key, str], Any]]:
    """Yield (key -> digest, last row's first key column) in key order; the last chunk is short."""
    kidx = [t.cols.index(k) for k in t.keys]
    after: list[Any] | None = None
    while True:
        where = sql.SQL("") if after is None else sql.SQL("WHERE ({}) > ({})").format(
            t.key_cols, sql.SQL(", ").join(sql.Placeholder() * len(after)))
        recs = _query(conn, sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT {}").format(
            t.sel_cols, t.rel, where, t.key_cols, sql.Literal(chunk_rows)), t.params + (after or [])).fetchall()
        rows = [t.from_pg(rec) for rec in recs]
        yield {t.key(row): t.digest(row) for row in rows}, rows[-1][t.keys[0]] if rows else None
        if len(recs) < chunk_rows:
            return
        after = [recs[-1][i] for i in kidx]


def _pg_key_expr(t: _Table, col: str) -> sql.Composable:
    """A placeholder turning a canonical key value (passed as text) back into the column's type."""
    c, base = t.info.column(col), normalize_type(t.info.column(col).base_type)
    if base in ("timestamp", "timestamptz"):
        return sql.SQL(f"({base} 'epoch' + %s::bigint * interval '1 microsecond')")
    return sql.SQL("decode(%s::text, 'hex')") if base == "bytea" else \
        sql.SQL("CAST(%s::text AS {})").format(sql.SQL(c.type_name))


def _exact(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("SET TimeZone = 'UTC'")       # canonical.pg_select: ranges print in UTC
    conn.execute("SET default_transaction_read_only = on")   # verify only reads (a row filter runs here)
    return catalog.exact_loaders(conn, TS_POS_INFINITY, TS_NEG_INFINITY)


def _pg_current(dsn: str, t: _Table, keys: list[Key]) -> dict[Key, Row]:
    """The rows of these keys as Postgres holds them now."""
    out: dict[Key, Row] = {}
    tup = sql.SQL("({})").format(sql.SQL(", ").join(_pg_key_expr(t, k) for k in t.keys))
    with _exact(catalog.connect(dsn)) as conn:
        for batch in (keys[i:i + _BATCH] for i in range(0, len(keys), _BATCH)):
            q = sql.SQL("SELECT {} FROM {} WHERE ({}) IN ({})").format(
                t.sel_cols, t.rel, t.key_cols, sql.SQL(", ").join([tup] * len(batch)))
            out.update((t.key(r), r) for r in map(t.from_pg, _query(conn, q, t.params + [str(v) for k in batch
                                                                                       for v in k])))
    return out


class _EngineTarget:
    """The mirror as Pinot's own ingestion and FULL-upsert code builds it from the flat topic,
    in-process (no server). Its rows stream out of the engine into hash buckets on disk (key ->
    digest), compared bucket by bucket with Postgres' (_bucket_pass): memory stays bounded
    whatever the table's size. Every read replays the whole topic through the engine, so a
    re-check sees everything written since the first pass."""

    def __init__(self, bootstrap: str, spec: MirrorSpec, t: _Table, generation: int = 0) -> None:
        self.bootstrap, self.spec, self.t, self.generation = bootstrap, spec, t, generation
        self.buckets: _Buckets | None = None
        self.label = mirror_state.engine_label()
        self.duplicates = 0

    def _stream(self, want: set[Key] | frozenset[Key] = frozenset()) -> Iterator[tuple[Key, str, Row | None]]:
        """(key, digest, the row only for keys in `want`) of every row the engine holds."""
        summary: dict[str, Any] = {}
        for r in mirror_state.engine_row_iter(self.bootstrap, self.spec, self.t.info, summary, self.generation):
            if want and self.t.flat_key(r) not in want:
                continue                       # a re-check: only the suspects' rows matter
            row = self.t.from_flat(r)
            k = self.t.key(row)
            yield k, self.t.digest(row), (row if k in want else None)
        self.label = mirror_state.engine_label(summary)

    def load(self, say: Progress, buckets: int = 1) -> int:
        """Into self.buckets, which the caller closes (_bucket_pass, or verify_mirror on error)."""
        self.buckets = _Buckets(buckets)
        n = 0
        for k, d, _ in self._stream():
            self.buckets.add(k, (d, None))
            n += 1
            if n % 500_000 == 0:
                say(f"{self.label}: {n:,} rows read")
        say(f"{self.label}: {n:,} rows")
        return n

    def close(self) -> None:
        if self.buckets is not None:
            self.buckets.close()
            self.buckets = None

    def current(self, suspects: dict[Key, Any]) -> dict[Key, tuple[str, Any]]:
        return {k: (d, row) for k, d, row in self._stream(set(suspects)) if k in suspects}

    def rows(self, refs: dict[Key, Any]) -> dict[Key, Row]:
        return {k: r for k, r in refs.items() if isinstance(r, dict)}


class _Buckets:
    """(key, value) pairs spread over n temporary files by the key's hash: a bucket of each
    side fits in memory, and equal keys (Python equality: 1 == 1.0, Decimal('1.0') ==
    Decimal('1.00')) always meet in the same bucket. One process only (hash seeds differ).
    Files are opened per write or read (no n open descriptors); close() removes them all."""

    _FLUSH = 2_000

    def __init__(self, n: int) -> None:
        self.n = max(1, n)
        self._dir = tempfile.TemporaryDirectory(prefix="cdc-verify-")
        self._pending: list[list[tuple[Key, Any]]] = [[] for _ in range(self.n)]

    def __enter__(self) -> _Buckets:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _flush(self, i: int) -> None:
        if self._pending[i]:
            with open(os.path.join(self._dir.name, str(i)), "ab") as f:
                pickle.dump(self._pending[i], f, protocol=pickle.HIGHEST_PROTOCOL)
            self._pending[i] = []

    def add(self, k: Key, v: Any) -> None:
        i = hash(k) % self.n
        self._pending[i].append((k, v))
        if len(self._pending[i]) >= self._FLUSH:
            self._flush(i)

    def bucket(self, i: int) -> Iterator[tuple[Key, Any]]:
        self._flush(i)
        path = os.path.join(self._dir.name, str(i))
        if not os.path.exists(path):
            return
        with open(path, "rb") as f:
            while True:
                try:
                    yield from pickle.load(f)
                except EOFError:
                    return

    def close(self) -> None:
        self._pending = [[] for _ in range(self.n)]
        self._dir.cleanup()


def _pinot_literal(v: Any) -> str:
    return str(v) if isinstance(v, (int, float, Decimal)) else "'" + str(v).replace("'", "''") + "'"


class _PinotTarget:
    """Pinot answers per key range of each Postgres chunk (first key column)."""

    def __init__(self, query: Callable[[str], tuple[list[str], list[list[Any]]]], table: str, t: _Table) -> None:
        self.query, self.table, self.t = query, table, t

    def _select(self, where: str) -> dict[Key, Row]:
        cols = ", ".join(f'"{self.t.maps[c].name}"' for c in self.t.cols)
        names, rows = self.query(f'SET enableNullHandling=true; SELECT {cols} FROM "{self.table}"{where} '
                                 f'LIMIT {_PINOT_LIMIT}')
        if len(rows) >= _PINOT_LIMIT:
            raise CdcError(f"Pinot returned {_PINOT_LIMIT} rows for one key range: cannot verify exactly",
                           hint="use a smaller chunk_rows")
        found = (dict(zip(names, r)) for r in rows)
        return {self.t.key(row): row for row in map(self.t.from_flat, found)}

    def load(self, say: Progress) -> int:
        say(f"pinot table {self.table}: comparing by key range")
        _, rows = self.query(f'SELECT COUNT(*) FROM "{self.table}"')
        return int(rows[0][0]) if rows else 0

    def chunk(self, keys: Iterable[Key], lo: Any, hi: Any) -> dict[Key, tuple[str, Any]]:
        """Pinot rows whose first key column is in (lo, hi]; None = unbounded."""
        conds = [f'"{self.t.maps[self.t.keys[0]].name}" {op} {_pinot_literal(v)}' for op, v in ((">", lo), ("<=", hi)) if v is not None]
        return {k: (self.t.digest(r), None) for k, r in self._select(" WHERE " + " AND ".join(conds)
                                                                      if conds else "").items()}

    def current(self, suspects: dict[Key, Any]) -> dict[Key, tuple[str, Any]]:
        firsts = list({k[0] for k in suspects})
        found = [self._select(f' WHERE "{self.t.maps[self.t.keys[0]].name}" IN ({", ".join(map(_pinot_literal, firsts[i:i + _BATCH]))})')
                 for i in range(0, len(firsts), _BATCH)]
        return {k: (self.t.digest(r), r) for rows in found for k, r in rows.items() if k in suspects}

    def rows(self, refs: dict[Key, Any]) -> dict[Key, Row]:
        return {k: r for k, r in refs.items() if isinstance(r, dict)}


Target = _EngineTarget | _PinotTarget


def _first_pass(conn: psycopg.Connection[Any], t: _Table, target: Target, chunk_rows: int, total: int,
                say: Progress) -> dict[str, dict[Key, Any]]:
    """Chunk by chunk: Postgres digests vs the target's. A key found on one side only is kept
    pending, because chunk boundaries (composite keys) or collation differences can put it in
    another chunk on the other side; whatever is still pending at the end is missing/extra."""
    src_only: dict[Key, str] = {}
    tgt_only: dict[Key, tuple[str, Any]] = {}
    differ: dict[Key, Any] = {}
    lo, done = None, 0
    for digests, hi in _pg_chunks(conn, t, chunk_rows):
        got = target.chunk(digests.keys(), lo, None if len(digests) < chunk_rows else hi)
        for k, d in digests.items():
            if k in got or k in tgt_only:
                td, ref = got.pop(k) if k in got else tgt_only.pop(k)
                if td != d:
                    differ[k] = ref
            else:
                src_only[k] = d
        for k, (td, ref) in got.items():
            if k not in src_only:
                tgt_only[k] = (td, ref)
            elif src_only.pop(k) != td:
                differ[k] = ref
        done, lo = done + len(digests), hi
        say(f"compared {done}/{total} rows")
    return {"missing": dict.fromkeys(src_only), "differing": differ,
            "extra": {k: ref for k, (_, ref) in tgt_only.items()}}


def _compare_buckets(src_side: _Buckets, tgt_side: _Buckets, say: Progress
                     ) -> tuple[dict[str, dict[Key, Any]], int]:
    """Bucket by bucket: source key -> digest against target key -> (digest, ref). Returns
    the keys missing / differing / extra (with the target's ref) and the target's duplicates."""
    found: dict[str, dict[Key, Any]] = {"missing": {}, "differing": {}, "extra": {}}
    duplicates = 0
    for i in range(src_side.n):
        src = dict(src_side.bucket(i))
        seen: set[Key] = set()
        for k, (td, ref) in tgt_side.bucket(i):
            if k in seen:                  # two visible rows of one key: an upsert failure
                duplicates += 1
                continue
            seen.add(k)
            d = src.pop(k, None)
            if d is None:
                found["extra"][k] = ref
            elif d != td:
                found["differing"][k] = ref
        found["missing"].update(dict.fromkeys(src))
        if src_side.n > 1 and (i + 1) % max(1, src_side.n // 10) == 0:
            say(f"compared {i + 1}/{src_side.n} buckets")
    return found, duplicates


def _bucket_pass(conn: psycopg.Connection[Any], t: _Table, target: _EngineTarget, total: int,
                 say: Progress) -> dict[str, dict[Key, Any]]:
    """Postgres' rows (one snapshot, streamed by a server-side cursor) into the same hash
    buckets as the engine's, then each bucket pair compared in memory."""
    assert target.buckets is not None
    with _Buckets(target.buckets.n) as mine:
        done = 0
        with conn.cursor(name="cdc_verify") as cur:
            cur.itersize = 10_000
            # one statement, always with a parameter: the extended protocol (see _query)
            cur.execute(sql.SQL("SELECT {} FROM {} WHERE %s").format(t.sel_cols, t.rel), [*t.params, True])
            for rec in cur:
                row = t.from_pg(rec)
                mine.add(t.key(row), t.digest(row))
                done += 1
                if done % 500_000 == 0:
                    say(f"postgres: {done:,}/{total:,} rows read")
        found, target.duplicates = _compare_buckets(mine, target.buckets, say)
        return found


def _recheck(dsn: str, t: _Table, target: Target, suspects: dict[Key, Any], settle_timeout: float,
             say: Progress) -> tuple[dict[str, list[Key]], dict[Key, Row], dict[Key, Any], int]:
    """Re-read suspects on both sides until they agree or the time is up (at least once).
    Returns the still differing keys by kind, their Postgres rows, their target refs, attempts."""
    attempts, deadline = 0, time.monotonic() + settle_timeout
    pg_rows: dict[Key, Row] = {}
    refs: dict[Key, Any] = {}
    while suspects:
        attempts += 1
        keys = list(suspects)
        pg_rows, tg = _pg_current(dsn, t, keys), target.current(suspects)
        refs = {k: tg[k][1] for k in keys if k in tg}
        suspects = {k: refs.get(k) for k in keys
                    if (t.digest(pg_rows[k]) if k in pg_rows else None) != (tg[k][0] if k in tg else None)}
        if not suspects or time.monotonic() >= deadline:
            break
        say(f"re-check {attempts}: {len(suspects)} keys still differ")
        time.sleep(min(0.5 * attempts, 2.0, max(0.0, deadline - time.monotonic())))
    kinds: dict[str, list[Key]] = {"missing": [], "extra": [], "differing": []}
    for k in suspects:
        kinds["differing" if k in pg_rows and k in refs else "missing" if k in pg_rows else "extra"].append(k)
    return kinds, pg_rows, refs, attempts


def _table_with_rules(ctx: service.Context, spec: MirrorSpec, info: TableInfo,
                      computed_sql: dict[str, str]) -> tuple[_Table, list[str], list[str]]:
    """The comparison layout for the mirror's rules, what they changed, and what is not compared."""
    from cdc.mirrors.sources import mask_salt
    r, keys = spec.rules, render.key_columns(spec, info)
    unknown = sorted(set(computed_sql) - set(r.computed_columns))
    if unknown:
        raise CdcError(f"--computed names no computed column of {spec.name}: {', '.join(unknown)}",
                       hint=f"computed columns: {', '.join(r.computed_columns) or 'none'}")
    salt = mask_salt(ctx.settings, spec.source) if "hash" in r.mask_columns.values() else None
    if "hash" in r.mask_columns.values() and salt is None:
        raise CdcError(f"the mask salt of source {spec.source} is gone, hashed columns cannot be checked",
                       hint="it lives in STATE_DIR/secrets/<source>.mask-salt; restore it or re-create the mirror")
    applied = [f"excluded (not in the mirror): {', '.join(c.name for c in info.columns if c.name not in kept)}"
               for kept in [rules.kept_columns(r, info, keys)] if len(kept) < len(info.columns)]
    applied += [f"{c} {m}ed: Postgres computes the mask" for c, m in r.mask_columns.items()]
    if r.row_filter:
        applied.append(f"row filter evaluated by Postgres: {r.row_filter}")
    applied += [f"computed {n} compared with Postgres' {e}" for n, e in computed_sql.items()]
    skipped = [f"computed {n} (give --computed {n}=POSTGRES_SQL to compare it)"
               for n in r.computed_columns if n not in computed_sql]
    return _Table(info, keys, spec, salt, computed_sql), applied, skipped


def verify_mirror(ctx: service.Context, name: str, *, chunk_rows: int = 10_000, settle_timeout: float = 60.0,
                  progress: Progress | None = None, max_recheck: int = 100_000,
                  computed_sql: dict[str, str] | None = None) -> VerifyReport:
    """Compare mirror `name` with its source table (module docstring). Against Pinot when
    it is enabled, else against the flat topic; report.target says which. computed_sql: a
    Postgres expression per computed column to compare it with (others are not compared)."""
    started, say = time.monotonic(), progress or (lambda _m: None)
    rec = service.get_mirror(ctx, name)
    dsn = service.source_dsn(ctx, service.get_source(ctx, rec.spec.source))
    with catalog.connect(dsn) as c:
        info = catalog.introspect(c, rec.spec.schema_name, rec.spec.table_name)
    t, applied, skipped = _table_with_rules(ctx, rec.spec, info, computed_sql or {})
    use_pinot, why = service.pinot_enabled(ctx)
    topic = names.flat_topic(name, rec.generation)
    target: Target = _PinotTarget(ctx.broker.query, name, t) if use_pinot else \
        _EngineTarget(ctx.settings.kafka_bootstrap, rec.spec, t, rec.generation)
    detail = f"Pinot table {name} (Pinot server)" if use_pinot else \
        f"{mirror_state.engine_label()} over flat topic {topic} (no Pinot server: {why})"
    say(f"verify {name}: {info.qualified} vs {detail}")
    with _exact(catalog.connect(dsn, autocommit=False)) as conn:
        conn.rollback()                            # _exact's SET opened a transaction: start a fresh one
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET TimeZone = 'UTC'")
        lsn, source_rows = _pg_count(conn, t)
        if isinstance(target, _EngineTarget):
            try:
                records = mirror_state.flat_record_count(ctx.settings.kafka_bootstrap, topic)
                target_rows = target.load(say, buckets=max(source_rows, records) // _BUCKET_ROWS + 1)
                say(f"rows: source {source_rows} (snapshot at LSN {lsn}), target {target_rows}")
                found = _bucket_pass(conn, t, target, source_rows, say)
            finally:
                target.close()
        else:
            target_rows = target.load(say)
            say(f"rows: source {source_rows} (snapshot at LSN {lsn}), target {target_rows}")
            found = _first_pass(conn, t, target, chunk_rows, source_rows, say)
        conn.rollback()
    suspects = {k: ref for kind in ("missing", "differing", "extra") for k, ref in found[kind].items()}
    first = len(suspects)
    say(f"first pass: {', '.join(f'{len(v)} {k}' for k, v in found.items())}; re-checking "
        f"{min(first, max_recheck)} keys for up to {settle_timeout:.0f}s")
    kinds, pg_rows, refs, attempts = _recheck(dsn, t, target, dict(list(suspects.items())[:max_recheck]),
                                              settle_timeout, say)
    for k in list(suspects)[max_recheck:]:          # too many to re-check: first-pass verdict
        kinds[next(kind for kind, ks in found.items() if k in ks)].append(k)
    picked = {kind: ks[:SAMPLES] for kind, ks in kinds.items()}
    tgt_rows = target.rows({k: refs[k] for ks in picked.values() for k in ks if refs.get(k) is not None})
    samples = {kind: [Sample(key=list(k), source=pg_rows.get(k), target=tgt_rows.get(k)) for k in ks]
               for kind, ks in picked.items()}
    n = {kind: len(ks) for kind, ks in kinds.items()}
    duplicates = getattr(target, "duplicates", 0)
    report = VerifyReport(
        mirror=name, table=info.qualified, target="pinot" if use_pinot else "pinot-engine", target_detail=detail, source_lsn=lsn,
        source_rows=source_rows, target_rows=target_rows, **n, samples=samples,
        rechecked=min(first, max_recheck), recheck_attempts=attempts,
        duplicates=duplicates, duration_s=round(time.monotonic() - started, 3),
        clean=not any(n.values()) and not duplicates, rules=applied, not_compared=skipped)
    say(f"verify {name}: {'clean' if report.clean else 'DIFFERENCES'} in {report.duration_s:.1f}s")
    return report


def format_report(report: VerifyReport) -> str:
    """Human-readable summary: what was compared with what, the counts, a few samples."""
    r = report
    lines = [f"mirror {r.mirror} ({r.table}) compared with {r.target_detail}"]
    lines += [f"  rules:    {line}" for line in r.rules]
    lines += [f"  not compared: {line}" for line in r.not_compared]
    lines += [f"  rows:     source {r.source_rows:,} (snapshot at LSN {r.source_lsn}), target {r.target_rows:,}",
              f"  content:  {r.missing:,} missing, {r.extra:,} extra, {r.differing:,} differing",
              f"  re-check: {r.rechecked:,} keys differed in the first pass and were re-read "
              f"({r.recheck_attempts} attempt(s)); only keys that still differ are counted above",
              f"  took {r.duration_s:.1f}s: {'CLEAN' if r.clean else 'NOT CLEAN'}"]
    for kind in ("missing", "extra", "differing"):
        for s in r.samples.get(kind, []):
            lines.append(f"  {kind} key {tuple(s.key)}:")
            lines += [f"    {side}: {json.dumps(row, default=str, ensure_ascii=False)[:300]}"
                      for side, row in (("postgres", s.source), (r.target, s.target)) if row is not None]
            if s.source is not None and s.target is not None:
                cols = [c for c in s.source if s.source.get(c) != s.target.get(c)]
                lines.append(f"    columns that differ: {', '.join(cols) or '(none)'}")
    return "\n".join(lines)
