"""verify against the real stack: a loadgen-driven table mirrored end to end.

Shares the stack with other developers, so it only touches its own database (h_ver), its
own source and connector (cdc-h_ver), its own registry and Flink job, and removes them.
Order matters: the corruption test runs last because its bogus records stay in the topic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.core import names
from cdc.mirrors import service
from cdc.core.settings import Settings
from bench.loadgen import LoadGen
from cdc.mirrors.verify import VerifyReport, format_report, verify_mirror

pytestmark = pytest.mark.integration

ADMIN_DSN = Settings().local_dsn("postgres")
DB, SOURCE, TABLE = "h_ver", "h_ver", "ver_t"
DSN = Settings().local_dsn(DB)
MIRROR = names.mirror_name("public", TABLE, SOURCE)
ROWS = 5000


def _reset_database(ctx: service.Context) -> None:
    """Leftovers of an aborted earlier run: our connector, Flink job, slot, database."""
    ctx.connect.delete(names.connector_name(SOURCE))
    for job in ctx.jobmanager.jobs():
        if job.name == f"cdc-mirror-{MIRROR}" and job.state in ("RUNNING", "CREATED", "RESTARTING"):
            ctx.jobmanager.cancel(job.id)
    from cdc.clients.kafka import KafkaAdmin
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    for topic in (names.flat_topic(MIRROR), names.change_topic(SOURCE, "public", TABLE)):
        kafka.delete_topic(topic)
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for _ in range(30):
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_h_ver'").fetchone()
            if row is None:
                break
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot('cdc_h_ver')")
                break
            time.sleep(1)
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")


def _wait_clean(ctx: service.Context, timeout: float = 180) -> VerifyReport:
    """The initial snapshot takes a while to flow through; verify until it is clean."""
    deadline = time.monotonic() + timeout
    while True:
        report = verify_mirror(ctx, MIRROR, settle_timeout=5)
        if report.clean or time.monotonic() > deadline:
            return report
        time.sleep(3)


@pytest.fixture(scope="module")
def mirror(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[service.Context, LoadGen]]:
    tmp: Path = tmp_path_factory.mktemp("verify")
    ctx = service.context(Settings(registry_path=tmp / "r.db"))
    _reset_database(ctx)
    service.add_source(ctx, SOURCE, DSN)
    gen = LoadGen(DSN, "public", TABLE, seed=42)
    gen.create_table(ROWS)
    service.add_mirror(ctx, "public", TABLE, source=SOURCE, progress=print)
    try:
        report = _wait_clean(ctx)
        print(format_report(report))
        assert report.clean, format_report(report)
        yield ctx, gen
    finally:
        gen.close()
        service.remove_mirror(ctx, MIRROR, drop_data=True, progress=print)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        ctx.close()


def test_clean_after_load(mirror: tuple[service.Context, LoadGen]) -> None:
    ctx, gen = mirror
    stats = gen.run(200, 15, probe_every_s=5)
    print(f"loadgen: {stats.changes} changes in {stats.elapsed_s:.1f}s = {stats.achieved_rate:.0f}/s "
          f"(target 200), lag {stats.lag_behind_schedule_s:.2f}s, per op {stats.per_op}")
    assert stats.achieved_rate == pytest.approx(200, rel=0.1)
    assert stats.per_op["update"] > stats.per_op["insert"] > stats.per_op["delete"] > 0
    report = verify_mirror(ctx, MIRROR, settle_timeout=60, progress=print)
    print(format_report(report))
    assert report.clean, format_report(report)
    assert report.target == "pinot-engine" and "in-process" in report.target_detail and report.duplicates == 0
    assert report.source_rows > ROWS * 0.9


def test_loadgen_is_deterministic_on_the_database(mirror: tuple[service.Context, LoadGen]) -> None:
    """Same seed + same starting table -> same final table, whatever the pacing."""
    digests = []
    for name, batch in (("det_a", 1), ("det_b", 7)):
        with LoadGen(DSN, "public", name, seed=5) as g:
            g.create_table(300)
            stats = g.run(5000, changes=600, batch_per_tx=batch)
            assert stats.changes == 600 and sum(stats.per_op.values()) == 600
        with psycopg.connect(DSN) as conn:
            digests.append(conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY id)), count(*) FROM {name} t")
                           .fetchone())
            conn.execute(f"DROP TABLE {name}")
    assert digests[0] == digests[1]


def test_no_false_alarm_while_load_runs(mirror: tuple[service.Context, LoadGen]) -> None:
    ctx, gen = mirror
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(stats=gen.run(200, 60)))
    t.start()
    try:
        time.sleep(3)
        report = verify_mirror(ctx, MIRROR, chunk_rows=1000, settle_timeout=60, progress=print)
    finally:
        gen.stop()
        t.join(30)
    print(format_report(report))
    print(f"loadgen during verify: {result['stats'].changes} changes at {result['stats'].achieved_rate:.0f}/s")
    assert result["stats"].stopped and result["stats"].changes > 200
    assert report.clean, format_report(report)


def _sqlite_broker(rows: list[dict]) -> tuple[object, "sqlite3.Connection"]:
    """A stand-in for Pinot's broker: the same SQL on SQLite, cells as Pinot returns them."""
    import sqlite3
    db = sqlite3.connect(":memory:", check_same_thread=False)
    cols = list(rows[0])
    db.execute(f"CREATE TABLE {TABLE} ({', '.join(cols)}, PRIMARY KEY (id))")
    db.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * len(cols))})",
                   [[json.dumps(v) if isinstance(v, dict) else str(v) if k == "amount" and v is not None else v
                     for k, v in r.items()] for r in rows])

    def query(text: str) -> tuple[list[str], list[list]]:
        cur = db.execute(text.replace("SET enableNullHandling=true; ", "").replace(f'"{MIRROR}"', TABLE))
        return [d[0] for d in cur.description], [list(r) for r in cur.fetchall()]
    return query, db


def test_pinot_path_with_a_stand_in_broker(mirror: tuple[service.Context, LoadGen],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinot cannot run here; its code path (key-range chunks, IN re-reads) runs against SQLite
    holding the table's canonical values, with one row changed, one added, one removed."""
    from cdc.postgres import catalog
    from cdc.mirrors import verify
    ctx, _ = mirror
    with catalog.connect(DSN) as conn:
        t = verify._Table(catalog.introspect(conn, "public", TABLE), ["id"])
        rows = [t.from_pg(r) for r in conn.execute(f"SELECT {', '.join(t.cols)} FROM {TABLE} ORDER BY id")]
    query, db = _sqlite_broker(rows)
    ids = [r["id"] for r in rows]
    db.execute(f"UPDATE {TABLE} SET qty = qty + 1 WHERE id = ?", (ids[1500],))
    db.execute(f"DELETE FROM {TABLE} WHERE id = ?", (ids[2500],))
    db.execute(f"INSERT INTO {TABLE} (id, name) VALUES (?, 'ghost')", (ids[-1] + 10**9,))
    monkeypatch.setattr(service, "pinot_enabled", lambda ctx: (True, ""))
    monkeypatch.setattr(ctx.broker, "query", query)
    report = verify_mirror(ctx, MIRROR, chunk_rows=700, settle_timeout=2)
    text = format_report(report)
    print(text)
    assert report.target == "pinot" and report.target_detail == f"Pinot table {MIRROR} (Pinot server)"
    assert (report.missing, report.extra, report.differing) == (1, 1, 1), text
    assert report.samples["differing"][0].key == [ids[1500]]
    assert report.samples["missing"][0].key == [ids[2500]]
    assert report.source_rows == len(rows) and report.target_rows == len(rows)


def test_corruption_is_reported(mirror: tuple[service.Context, LoadGen]) -> None:
    """Real corruption of Pinot's input: a record with a higher __seq for one key (Pinot would
    take it), and a live record for a key Postgres does not have."""
    from confluent_kafka import Producer
    ctx, _ = mirror
    with psycopg.connect(DSN) as conn:
        row = conn.execute(f"SELECT id, name, amount, qty, updated_at, attrs FROM {TABLE} "
                           "WHERE id > 0 ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    key = row[0]
    micros = int(row[4].timestamp() * 1_000_000) if row[4] else None
    bogus = {"id": key, "name": "CORRUPTED", "amount": str(row[2]), "qty": row[3], "updated_at": micros,
             "attrs": json.dumps(row[5]), "__deleted": False, "__seq": 10**15, "__source_ts_ms": 0, "__op": "u"}
    ghost = {**bogus, "id": 10**12, "name": "ghost"}
    # murmur2 over the JSON key bytes: the partition Flink's Kafka sink (and so Pinot) would use
    p = Producer({"bootstrap.servers": ctx.settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    for rec in (bogus, ghost):
        p.produce(names.flat_topic(MIRROR), key=json.dumps({"id": rec["id"]}, separators=(",", ":")).encode(),
                  value=json.dumps(rec).encode())
    assert p.flush(30) == 0
    report = verify_mirror(ctx, MIRROR, settle_timeout=5)
    text = format_report(report)
    print(text)
    assert (report.differing, report.extra, report.missing) == (1, 1, 0), text
    assert not report.clean and report.exit_code != 0
    assert report.samples["differing"][0].key == [key]
    assert report.samples["differing"][0].target["name"] == "CORRUPTED"  # type: ignore[index]
    assert report.samples["differing"][0].source["name"] == row[1]  # type: ignore[index]
    assert report.samples["extra"][0].key == [10**12] and report.samples["extra"][0].source is None
    assert "name" in text and "NOT CLEAN" in text
