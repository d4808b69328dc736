"""A new mirror's existing rows, loaded in parallel straight into its flat topic, exactly.

Debezium's incremental snapshot reads a table at ~11k rows/s here. `mirror add` instead
(CDC_INITIAL_LOAD=copy, the default; `--load debezium` keeps Debezium's snapshot) splits the
table into page ranges read by parallel COPY readers (cdc.mirrors.copy_load), Postgres
rendering each row as the flat record the flatten job would write for it (cdc.mapping.flat_sql).

Order of `mirror add` with the copy load (cdc.mirrors.lifecycle):
  1. topics; a marker record appended to the (empty) change topic at offset M; the job's
     consumer group gets offset J = M + 1 committed (the job reads from J, never earlier);
  2. the connector takes the table (a new connector with snapshot.mode=no_data: Debezium reads
     no rows itself); wait until the table is in the publication and a walsender started
     after the config change streams the slot (the task with the new table list; a new slot
     is consistent only once every transaction open at its creation ended);
  3. T = the transactions in progress now (pg_current_snapshot()); wait until all have ended;
  4. read the table (the load), every record with __seq = seq_base + M;
  5. only then submit the flatten job (from J).

Why the mirror is exact, per key k, whatever is written meanwhile:
* Loaded rows lose against every streamed change: the job writes __seq = seq_base + offset
  with offset >= J > M, and Pinot's FULL upsert keeps the highest __seq. They outrank nothing
  older either: the change topic was empty before M (a mirror over kept topics gets Debezium's
  snapshot), so nothing below M exists; M itself is the marker, which the job skips (its op is
  "m"), so no streamed record ever ties with a loaded one, even when a redeploy replays the
  change topic from its start.
* What pgoutput publishes, A being the commit of the ALTER PUBLICATION that adds the table
  (or, for a new connector, the new slot's consistent point; wait_streaming waits for both):
  (F1) a write made after A is published (pgoutput rebuilds its relation cache from A's
       invalidations; for a transaction open across A, Postgres distributes them since
       15.13 / 14.18 / 16.9 / 17.5 -- older servers can lose such writes with any loader,
       Debezium's snapshot included);
  (F2) a write of a transaction that committed before A is not published;
  (F3) a write made before A by a transaction that commits after A may or may not be: pgoutput
       decides from its relation cache, "not published" as of the write's position unless
       another transaction already filled the cache after A (seen: with concurrent writers
       T1's early changes arrive, without them they do not; the tests cover both).
  Every transaction that may have such writes is in T (one without an xid at (3) had written
  nothing; its writes are after A). The restarted task streams the slot from its committed
  LSN with the new table list, so nothing published after it started is filtered out.
* Per key k, let w be its last write. Writes to one key are serialized by its row lock (or its
  unique index): each is made after the previous writer committed, and pgoutput sends in
  commit order. If w is published, it is k's last streamed change and the mirror ends at it.
  If not, w was made before A (F1), so every earlier write to k was made, and its transaction
  (if not w's) committed, before A: none is published (F2; earlier writes of w's own
  transaction are decoded with the same cache state as w). w's transaction ended before the
  load read (3), so the load holds k's final state (or its absence), and nothing overrides it.
* Each reader takes its own snapshot after (3): a key unchanged since (3) sits at one ctid and
  is read exactly once; a key read twice (moved by an update during the load) was changed
  after (3), so its streamed change wins.
* Kafka compaction keeps a key's last record: the job starts after every loaded record is
  acknowledged (5), so a key's loaded record always precedes its streamed ones.
* Loaded keys that later need a delete no DELETE event carries (a lost slot's repair) are
  removed by cdc.mirrors.prune through the flat topic: a loaded record has no change event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdc.core import names
from cdc.core.errors import CdcError
from cdc.core.models import MirrorSpec, Source, TableInfo
from cdc.mapping import flat_sql, render
from cdc.mapping.typemap import map_table
from cdc.mirrors import copy_load, load_progress
from cdc.mirrors.context import Context
from cdc.mirrors.load_progress import LoadProgress
from cdc.mirrors.sources import publication_of, source_dsn
from cdc.postgres import catalog, open_xacts

COPY, DEBEZIUM = "copy", "debezium"
MODES = (COPY, DEBEZIUM)
MARKER_OP = "m"                     # the flatten job reads only c, r, u, d
MARKER_HEADER = ("cdc-synthetic", b"load-marker")
EVENT_STARTED, EVENT_DONE, EVENT_FAILED = "load_started", "load_done", "load_failed"
NO_DATA = {"snapshot.mode": "no_data"}          # a new connector of a copy-loaded mirror reads no rows
FIXED_MINORS = {14: 18, 15: 13, 16: 9, 17: 5}    # invalidations distributed to open transactions
Say = Callable[[str], None]
OnLoad = Callable[[LoadProgress], None]


@dataclass(frozen=True)
class Choice:
    mode: str                       # COPY | DEBEZIUM
    why: str = ""                   # why Debezium's snapshot, when copy was asked for

    @property
    def copy(self) -> bool:
        return self.mode == COPY


@dataclass(frozen=True)
class Start:
    marker_offset: int              # M
    seq: int                        # the loaded rows' __seq: seq_base + M
    seq_base: int

    @property
    def job_offset(self) -> int:    # J: where the flatten job starts
        return self.marker_offset + 1


def choose_for_table(requested: str | None, setting: str, spec: MirrorSpec, table: TableInfo) -> Choice:
    """Which path reads the table's rows, as far as the table and the setting decide (a
    rebuild's choice; `mirror add` also looks at the topics: choose())."""
    mode = requested or setting
    if mode not in MODES:
        raise CdcError(f"unknown initial load {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if mode == DEBEZIUM:
        return Choice(DEBEZIUM)
    if why := flat_sql.refusal(spec, table):
        return Choice(DEBEZIUM, f"the copy load cannot serve this mirror: {why}")
    return Choice(COPY)


def choose(requested: str | None, setting: str, spec: MirrorSpec, table: TableInfo, kafka: Any,
           change_topic: str, flat_topic: str) -> Choice:
    """Which path loads a new mirror's existing rows (kafka: cdc.clients.kafka.KafkaAdmin)."""
    choice = choose_for_table(requested, setting, spec, table)
    if not choice.copy:
        return choice
    present = kafka.topics()
    kept = [t for t in (change_topic, flat_topic) if t in present and sum(kafka.end_offsets(t).values()) > 0]
    if kept:
        return Choice(DEBEZIUM, f"{', '.join(kept)} already hold records of an earlier mirror (Debezium's snapshot "
                                "re-reads the rows in order behind them)")
    return Choice(COPY)


def begin(kafka: Any, spec: MirrorSpec, change_topic: str, epoch: int, say: Say) -> Start:
    """Step 1: the marker at offset M of the change topic, and offset J = M + 1 committed for the
    flatten job's consumer group (its SQL starts from the group's offsets)."""
    start = mark(kafka.bootstrap, spec, change_topic, epoch)
    kafka.commit(names.flink_group(spec.name), change_topic, start.job_offset)
    say(f"kafka: load marker at offset {start.marker_offset} of {change_topic}: loaded rows get __seq {start.seq}, "
        f"the flatten job starts at offset {start.job_offset}")
    return start


def mark(bootstrap: str, spec: MirrorSpec, change_topic: str, epoch: int) -> Start:
    """Append the marker to the change topic (offset M); __seq of the loaded rows = seq_base + M."""
    from confluent_kafka import Producer
    got: list[Any] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "log_level": 0})
    value = {"op": MARKER_OP, "before": None, "after": None, "ts_ms": int(time.time() * 1000),
             "source": {"schema": spec.schema_name, "table": spec.table_name}, "cdc_load": {"mirror": spec.name}}
    p.produce(change_topic, json.dumps(value).encode(), json.dumps({"__cdc_load": uuid.uuid4().hex}).encode(),
              partition=0, headers=[MARKER_HEADER], on_delivery=lambda err, msg: got.append((err, msg)))
    p.flush(30)
    if not got or got[0][0] is not None:
        raise CdcError(f"could not write the load marker to {change_topic}: {got[0][0] if got else 'no answer'}")
    base = render.seq_base(epoch)
    return Start(marker_offset=got[0][1].offset(), seq=base + got[0][1].offset(), seq_base=base)


def is_marker(value: dict[str, Any] | None) -> bool:
    return bool(value) and value.get("op") == MARKER_OP and "cdc_load" in value   # type: ignore[union-attr]


def wait_streaming(ctx: Context, src: Source, spec: MirrorSpec, since: Any, say: Say, *,
                   pid_before: int | None = None) -> None:
    """Until the table is in the source's publication and the slot is consistent and streamed by
    the task with the new table list: the slot's confirmed_flush_lsn is set (a new slot gets it
    once its creation ended, and creation waits for every transaction with an xid: changes
    committed before its consistent point are never decoded, so the load must read after it),
    and it is held by a walsender other than the one holding it before the connector change
    (`pid_before`: one walsender holds a slot at a time, so the old task let go) that started
    after `since` (the source's clock before the change) and runs START_REPLICATION.
    pg_stat_activity shows a session's start and command to its own role (cdc and the
    connector share the source's DSN); where it hides them from cdc's role, the new pid is
    taken as the proof. (pg_stat_replication.state is not used: it is NULL for roles without
    pg_read_all_stats, the least-privilege role of "Managed Postgres" among them.)"""
    t0 = time.monotonic()
    said = 0.0
    cname = names.connector_name(src.name)
    with catalog.connect(source_dsn(ctx, src)) as conn:
        while True:
            listed = conn.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND "
                                  "tablename = %s", (publication_of(src), spec.schema_name, spec.table_name)).fetchone()
            slot = conn.execute(
                "SELECT s.confirmed_flush_lsn IS NOT NULL, a.pid IS NOT NULL AND a.backend_start IS NULL, "
                "a.backend_start > %s AND a.query LIKE 'START_REPLICATION%%', s.active_pid IS DISTINCT FROM %s "
                "FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid "
                "WHERE s.slot_name = %s AND s.active", (since, pid_before, names.slot_name(src.name))
            ).fetchone()
            st = ctx.connect.status(cname)
            if st is not None and st.failed:
                raise CdcError(f"connector {cname} failed while taking {spec.qualified}: {st.failure_summary()[:300]}",
                               hint="see `cdc stack logs connect`")
            consistent, hidden, streaming, new_holder = slot or (False, False, False, False)
            if listed and consistent and new_holder and (streaming or hidden):
                return
            waited = time.monotonic() - t0
            if waited > ctx.settings.load_wait_timeout_s:
                raise CdcError(f"{spec.qualified} did not join the streaming publication within {waited:.0f}s "
                               f"(in publication: {bool(listed)}, slot consistent: {bool(consistent)}, streamed by "
                               f"the new task: {bool(streaming)})",
                               hint="see `cdc stack logs connect`; a new replication slot waits for every open "
                                    "transaction: end them, or raise CDC_LOAD_WAIT_TIMEOUT_S")
            if waited >= 5 and waited - said >= open_xacts.SAY_EVERY_S:
                n = len(open_xacts.open_now(conn))
                say(f"postgres: waiting for the connector to stream {spec.qualified}"
                    + (f"; {n} transaction(s) open since the replication slot was requested (a new slot waits "
                       "for them)" if n and not consistent else ""))
                said = waited
            time.sleep(0.25)


def _warn_old_postgres(conn: Any, say: Say) -> None:
    v = int(conn.execute("SHOW server_version_num").fetchone()[0])
    major, minor = v // 10000, v % 10000
    if major in FIXED_MINORS and minor < FIXED_MINORS[major] or major < 14:
        say(f"postgres: {major}.{minor} lacks the fix for changes of transactions open across ALTER PUBLICATION "
            f"(14.18, 15.13, 16.9, 17.5): upgrade for exact mirrors under concurrent writes")


def load(ctx: Context, src: Source, spec: MirrorSpec, table: TableInfo, start: Start, say: Say,
         on_load: OnLoad | None = None, *, flat_topic: str | None = None, wait_open: bool = True,
         cancel: Any = None) -> LoadProgress:
    """Steps 3 and 4 of the module doc; returns the final progress (state done). flat_topic:
    the mirror's (generation 0) unless given (a rebuild's, cdc.mirrors.rebuild_load, which also
    has no open transactions to wait for: its table was published all along); cancel: a
    threading.Event that stops the readers (LoadError)."""
    s, dsn = ctx.settings, source_dsn(ctx, src)
    p = LoadProgress(mirror=spec.name, seq=start.seq, start_offset=start.job_offset, workers=s.load_workers)
    reg_file = s.registry_file

    def show(force: bool = False) -> None:
        p.updated_at = time.time()
        load_progress.write(reg_file, p)
        if on_load is not None:
            on_load(p)
        elif force or time.monotonic() - shown[0] >= s.load_report_s:
            say(load_progress.line(p))
            shown[0] = time.monotonic()
    shown = [time.monotonic()]
    try:
        with catalog.connect(dsn) as conn:
            _warn_old_postgres(conn, say)
            open_ = open_xacts.open_now(conn) if wait_open else []
            if open_:
                def waiting(n: int, who: list[str]) -> None:
                    p.waiting_for = n
                    say(f"postgres: waiting for {n} transaction(s) open since {spec.qualified} joined the publication"
                        + (f": {', '.join(who[:5])}" if who else ""))
                    show()
                open_xacts.wait_ended(conn, open_, f"{spec.qualified} joined the publication", waiting,
                                      s.load_wait_timeout_s)
            p.waiting_for, p.estimate = 0, _estimate(ctx, src, table)
            pages = copy_load.heap_pages(conn, table.schema_name, table.table_name)
            tid_ranges = conn.info.server_version >= 140000       # TID range scans: Postgres 14+
        ranges = copy_load.page_ranges(pages, s.load_chunk_pages, s.load_workers) if tid_ranges else [(0, None)]
        query = flat_sql.select(spec, table, seq=start.seq, source_ts_ms=int(time.time() * 1000))
        keys = render.key_columns(spec, table)
        key_fields = [m.name for k in keys for m in map_table(table) if m.column == k]
        target = copy_load.Target(s.kafka_bootstrap, flat_topic or names.flat_topic(spec.name),
                                  names.dead_letter_topic(spec.name),
                                  key_fields, keys, start.seq_base)
        p.state, p.chunks_total, p.started_at = "loading", len(ranges), time.time()
        ctx.registry.record_event(spec.name, EVENT_STARTED, f"{len(ranges)} range(s) of {pages} pages, "
                                  f"{s.load_workers} reader(s), ~{p.estimate or 0} rows, __seq {start.seq}, "
                                  f"job from change-topic offset {start.job_offset}")
        say(f"load: {spec.qualified} -> {target.flat_topic}: ~{p.estimate or 0:,} rows in {len(ranges)} range(s), "
            f"{s.load_workers} reader(s)")
        show(force=True)

        def tick(c: copy_load.Counters) -> None:
            if cancel is not None and cancel.is_set():
                raise copy_load.LoadError(f"the load of {spec.qualified} was cancelled")
            p.rows, p.dead_letters, p.chunks_done = c.rows, c.dead_letters, c.chunks_done
            show()
        done = copy_load.run(dsn, query, ranges, target, workers=s.load_workers, on_tick=tick)
    except BaseException as exc:
        p.state, p.reason, p.finished_at = "failed", str(exc)[:300] or type(exc).__name__, time.time()
        load_progress.write(reg_file, p)
        ctx.registry.record_event(spec.name, EVENT_FAILED, p.reason)
        raise
    p.rows, p.dead_letters, p.chunks_done = done.rows, done.dead_letters, done.chunks_done
    p.state, p.finished_at = "done", time.time()
    show(force=True)
    ctx.registry.record_event(spec.name, EVENT_DONE, f"{p.rows} rows in {p.elapsed_s:.1f}s ({p.rate:,.0f} rows/s), "
                              f"{p.dead_letters} dead letter(s), __seq {start.seq}")
    return p


def _estimate(ctx: Context, src: Source, table: TableInfo) -> int | None:
    """pg_class.reltuples (count(*), at most 5 s, for a table never analysed); None if unknown."""
    from cdc.mirrors.snapshot import estimate_rows
    try:
        return estimate_rows(ctx, src, table.schema_name, table.table_name)
    except Exception:  # noqa: BLE001 - an estimate is optional (statement timeout on a huge table)
        return None
