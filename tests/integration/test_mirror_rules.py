"""Mirror column rules through the real stack (issue 15 item 2): Postgres -> Debezium -> Kafka ->
Flink -> the mirror, read by Pinot's own ingestion and upsert code (a Pinot server where one runs).

One table, one mirror with every kind of rule: a column excluded, one hashed, one redacted, a
row filter, two computed columns, Pinot indexes. The oracle is SQL run in Postgres, written
here again from Postgres' side (never cdc's code): the salted SHA-256 Debezium puts in place of
a hashed value, the filter's condition, each computed column's Postgres equivalent. Rows move
in and out of the filter both ways by UPDATE, and are deleted, while the mirror streams.

Every Kafka topic of the cluster is read byte by byte for the clear values of the masked and
the excluded columns: none may appear anywhere. Bad rules are refused (by cdc's own checks,
Flink's planner, Pinot's validation) with nothing created, also through the CLI.

Own database (rules_test), own source (rules), own registry: the stack is shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.core import names
from cdc.core.errors import ConfigError, ConflictError
from cdc.core.models import MirrorRules
from cdc.core.settings import Settings
from cdc.mapping import render
from cdc.mirrors import service
from cdc.mirrors import state as mirror_state
from cdc.mirrors.sources import mask_salt
from cdc.mirrors.verify import format_report, verify_mirror
from cdc.postgres import catalog
from syncing import private_database_context, wait_for

pytestmark = pytest.mark.integration
DB = "rules_test"
SOURCE = "rules"
TABLE = "customers"
MARK = uuid.uuid4().hex[:10]          # in every clear value, so that a scan finds nothing else

RULES = MirrorRules(
    exclude_columns=["ssn"],
    mask_columns={"email": "hash", "phone": "redact"},
    row_filter="status = 'active' AND amount >= 10",
    computed_columns={"amount_x2": "amount * 2",
                      "label": "UPPER(region) || '-' || CAST(id AS STRING)",
                      "created_day": "created / 86400000000"},      # timestamps read as epoch microseconds
    pinot_indexes={"region": ["inverted"], "amount": ["range"], "doc": ["json"], "label": ["inverted", "range"]})
# The same computed columns written for Postgres: the oracle's, and `verify --computed`'s.
PG_COMPUTED = {"amount_x2": "amount * 2", "label": "upper(region) || '-' || id::text",
               "created_day": "(extract(epoch FROM created) * 1000000)::bigint / 86400000000"}


def _dsn(settings: Settings, db: str) -> str:
    return f"postgresql://postgres@{settings.host}:{settings.ports.postgres}/{db}"


def _cli(ctx: service.Context, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file),
           "CDC_POSTGRES_DSN": ctx.settings.source_dsn()}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def _mine(ctx: service.Context) -> dict[str, Any]:
    """Everything of this source a mirror add can create (the stack is shared: others' objects vary)."""
    from cdc.clients.kafka import KafkaAdmin
    with catalog.connect(_dsn(ctx.settings, DB)) as conn:
        slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (DB,))]
        pubs = [r[0] for r in conn.execute("SELECT pubname FROM pg_publication")]
        ident = conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'public.customers'::regclass").fetchone()
    jobs = [j.name for j in ctx.jobmanager.jobs() if j.state not in ("CANCELED", "FINISHED", "FAILED")
            and j.name.startswith(names.flink_pipeline(f"{SOURCE}_"))]
    topics = [t for t in KafkaAdmin(ctx.settings.kafka_bootstrap).topics()
              if t.startswith((names.topic_prefix(SOURCE) + ".", f"cdc.flat.{SOURCE}_"))]
    return {"connector": ctx.connect.get_config(names.connector_name(SOURCE)) is not None, "slots": slots,
            "publications": pubs, "jobs": jobs, "topics": sorted(topics), "replica_identity": ident,
            "mirrors": [m.name for m in ctx.registry.list_mirrors()]}


@pytest.fixture(scope="module")
def rules_ctx(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[service.Context]:
    with private_database_context(settings, Path(tmp_path_factory.mktemp("rules")), DB, SOURCE,
                                  lambda db: _dsn(settings, db)) as ctx:
        with psycopg.connect(_dsn(settings, DB), autocommit=True) as conn:
            conn.execute("""CREATE TABLE public.customers (
                id int PRIMARY KEY, email text, phone varchar(32), ssn text, status text NOT NULL,
                amount numeric(10,2), region text, doc jsonb, created timestamptz)""")
        service.add_source(ctx, SOURCE, _dsn(settings, DB))
        yield ctx


def _row(i: int, status: str, amount: str | None) -> tuple:
    return (i, f"user{i}-{MARK}@example.com", f"+1-555-{MARK}-{i}", f"SSN-{MARK}-{i}", status, amount,
            ["north", "south", None][i % 3], json.dumps({"tier": i % 4, "tags": [MARK[:3]]}),
            f"2024-0{1 + i % 9}-1{i % 10} 0{i % 10}:30:00.12345{i % 10}+00")


def _insert(conn: psycopg.Connection, rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO public.customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def oracle(conn: psycopg.Connection, salt: str) -> dict[int, dict[str, Any]]:
    """Postgres renders the mirror: the filter's rows, the mask Debezium applies, the computed
    columns' Postgres equivalents; by Pinot column name."""
    conn.execute("SET TimeZone = 'UTC'")
    q = ("SELECT id, encode(sha256(convert_to(%s, 'UTF8') || convert_to(email, 'UTF8')), 'hex'), '********', "
         "status, trim_scale(amount)::text, region, doc::text, (extract(epoch FROM created) * 1000000)::bigint, "
         f"trim_scale({PG_COMPUTED['amount_x2']})::text, {PG_COMPUTED['label']}, {PG_COMPUTED['created_day']} "
         "FROM public.customers WHERE status = 'active' AND amount >= 10")
    cols = ["id", "email", "phone", "status", "amount", "region", "doc", "created", "amount_x2", "label", "created_day"]
    return {r[0]: dict(zip(cols, r)) for r in conn.execute(q, (salt,))}


def mirror_rows(ctx: service.Context, name: str) -> tuple[dict[int, dict[str, Any]], str]:
    rec = service.get_mirror(ctx, name)
    with catalog.connect(_dsn(ctx.settings, DB)) as conn:
        info = catalog.introspect(conn, "public", TABLE)
    if service.pinot_enabled(ctx)[0]:
        schema = render.render_pinot_schema(rec.spec, info)
        cols = ", ".join(f'"{f["name"]}"' for k in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
                         for f in schema[k] if not f["name"].startswith("__"))
        got, rows = ctx.broker.query(f'SET enableNullHandling=true; SELECT {cols} FROM "{name}" LIMIT 100000')
        raw, reader = [dict(zip(got, r)) for r in rows], mirror_state.SERVER
    else:
        raw, summary = mirror_state.engine_raw_rows(ctx.settings.kafka_bootstrap, rec.spec, info)
        reader = mirror_state.engine_label(summary)
    return {int(r["id"]): r for r in raw}, reader


def _same(col: str, want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if col == "doc":
        return json.loads(want) == json.loads(got)
    if col in ("amount", "amount_x2"):
        from decimal import Decimal
        return Decimal(str(want)) == Decimal(str(got))
    return str(want) == str(got)


def compare(expected: dict[int, dict], actual: dict[int, dict]) -> list[str]:
    problems = [f"row {k} missing" for k in expected if k not in actual]
    problems += [f"row {k} extra (status/amount should keep it out)" for k in actual if k not in expected]
    for k in sorted(set(expected) & set(actual)):
        if "ssn" in actual[k]:
            problems.append(f"row {k} has the excluded column ssn")
        problems += [f"row {k} {c}: Postgres says {v!r}, the mirror {actual[k].get(c)!r}"
                     for c, v in expected[k].items() if not _same(c, v, actual[k].get(c))]
    return problems


def scan_topics(ctx: service.Context, needles: list[bytes]) -> dict[str, int]:
    """Every record (key and value) of every topic of the cluster, searched for the needles."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": ctx.settings.kafka_bootstrap, "group.id": f"rules-scan-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    found: dict[str, int] = {}
    try:
        md = c.list_topics(timeout=10)
        todo: dict[tuple[str, int], int] = {}
        for topic, tm in md.topics.items():
            for p in tm.partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if hi > lo:
                    todo[(topic, p)] = hi
        c.assign([TopicPartition(t, p, 0) for t, p in todo])
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            for msg in c.consume(2000, 1.0):
                tp = (msg.topic(), msg.partition())
                if msg.error() is not None or tp not in todo:
                    continue
                blob = (msg.key() or b"") + b"\0" + (msg.value() or b"")
                for n in needles:
                    if n in blob:
                        found[msg.topic()] = found.get(msg.topic(), 0) + 1
                if msg.offset() + 1 >= todo[tp]:
                    del todo[tp]
        assert not todo, f"could not read {sorted(todo)[:5]} to the end"
    finally:
        c.close()
    return found


def test_bad_rules_are_refused_with_nothing_created(rules_ctx: service.Context) -> None:
    ctx = rules_ctx
    before = _mine(ctx)
    bad = {
        "rules.exclude_columns": MirrorRules(exclude_columns=["nope"]),
        "key columns": MirrorRules(exclude_columns=["id"]),
        "Debezium masks only text": MirrorRules(mask_columns={"amount": "hash"}),
        "rules.row_filter (--filter): Flink's planner": MirrorRules(row_filter="amount > no_such_column"),
        "rules.computed_columns['x'] (--compute): Flink's planner": MirrorRules(
            row_filter="status = 'active'", computed_columns={"x": "NO_SUCH_FUNCTION(amount)"}),
        "not a predicate": MirrorRules(row_filter="amount + 1"),
        "Pinot refuses": MirrorRules(pinot_indexes={"amount": ["json"]}),
        "'__op' starts with '__'": MirrorRules(row_filter="__op <> 'r'"),
        "is not allowed in an expression": MirrorRules(row_filter=(
            "status <> E'\\'' /* /* */ // */ ) FROM (SELECT 1) AS z), false)) AS s; COMMIT; DROP TABLE "
            "public.customers; SELECT 1 FROM (SELECT * FROM \"public\".\"customers\" AS \"__cdc_t\" WHERE "
            "COALESCE((SELECT (TRUE --'\nAND TRUE")),
    }
    for words, rules in bad.items():
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as err:
            service.add_mirror(ctx, "public", TABLE, source=SOURCE, rules=rules, progress=print)
        print(f"refused in {time.monotonic() - t0:.1f}s: {err.value.message[:200]}")
        assert words in err.value.message, err.value
        assert _mine(ctx) == before
    # the CLI flags, end to end: refused, exit code 2 (configuration), nothing created
    cli = _cli(ctx, "mirror", "add", f"public.{TABLE}", "--source", SOURCE, "--exclude", "ssn",
               "--mask", "email=hash", "--filter", "amount >>> 3")
    print(cli.stdout, cli.stderr)
    assert cli.returncode != 0 and "rules.row_filter (--filter)" in cli.stderr, cli.stderr
    assert _mine(ctx) == before


def test_masking_over_kept_topics_is_refused(rules_ctx: service.Context) -> None:
    """A change topic kept by `mirror remove` without --drop-data holds the clear values:
    adding the table again with masking is refused, nothing created."""
    from confluent_kafka import Producer

    from cdc.clients.kafka import KafkaAdmin
    ctx = rules_ctx
    with psycopg.connect(_dsn(ctx.settings, DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.kept (id int PRIMARY KEY, email text)")
    topic = names.change_topic(SOURCE, "public", "kept")
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    kafka.create_topic(topic, 1, render.TOPIC_CONFIG)
    try:
        p = Producer({"bootstrap.servers": ctx.settings.kafka_bootstrap})
        p.produce(topic, key=b'{"id":1}', value=json.dumps({"after": {"id": 1, "email": f"clear-{MARK}"}}).encode())
        assert p.flush(30) == 0
        before = _mine(ctx)
        with pytest.raises(ConflictError) as err:
            service.add_mirror(ctx, "public", "kept", source=SOURCE, rules=MirrorRules(mask_columns={"email": "hash"}),
                               progress=print)
        print(err.value)
        assert topic in str(err.value) and "--drop-data" in str(err.value)
        assert _mine(ctx) == before
    finally:
        kafka.delete_topic(topic)


def test_rules_end_to_end(rules_ctx: service.Context) -> None:
    ctx = rules_ctx
    with psycopg.connect(_dsn(ctx.settings, DB), autocommit=True) as conn:
        # snapshot rows: id 1..30, every third inactive, amounts 0..29 (filter: active AND >= 10)
        _insert(conn, [_row(i, "inactive" if i % 3 == 0 else "active", f"{i}.5") for i in range(1, 31)])
        conn.execute("UPDATE public.customers SET amount = NULL WHERE id = 29")
        plan = _cli(ctx, "mirror", "plan", f"public.{TABLE}", "--source", SOURCE, "--json", "--exclude", "ssn",
                    "--mask", "email=hash", "--mask", "phone=redact", "--filter", RULES.row_filter or "",
                    *[a for n, e in RULES.computed_columns.items() for a in ("--compute", f"{n}={e}")],
                    "--index", "region=inverted", "--index", "amount=range", "--index", "doc=json",
                    "--index", "label=inverted,range")
        assert plan.returncode == 0, plan.stderr
        shown = json.loads(plan.stdout)
        salt = mask_salt(ctx.settings, SOURCE)
        assert salt and salt not in plan.stdout and salt not in plan.stderr
        assert "column.mask.hash.v2.SHA-256.with.salt.<salt>" in shown["connector"]
        assert not any("ssn" in f["name"] for k in ("dimensionFieldSpecs",) for f in shown["pinot_schema"][k])

        t0 = time.monotonic()
        rec = service.add_mirror(ctx, "public", TABLE, source=SOURCE, rules=RULES, progress=print)
        print(f"mirror add returned after {time.monotonic() - t0:.1f}s; computed types {rec.spec.computed_types}")
        assert rec.spec.rules == RULES and plan.returncode == 0
        cfg = ctx.connect.get_config(names.connector_name(SOURCE)) or {}
        assert cfg.get("column.exclude.list") == r"(?-i)public\.customers\.ssn", cfg

        # streaming: new rows in and out of the filter, then rows moving both ways, and deletes
        _insert(conn, [_row(i, "active" if i % 2 else "inactive", f"{i % 20}.25") for i in range(100, 120)])
        conn.execute("UPDATE public.customers SET status = 'inactive' WHERE id IN (1, 2, 10, 11, 101)")   # out
        conn.execute("UPDATE public.customers SET status = 'active' WHERE id IN (3, 6, 12, 100, 102)")    # in
        conn.execute("UPDATE public.customers SET amount = 5 WHERE id IN (13, 14)")                        # out
        conn.execute("UPDATE public.customers SET amount = 50 WHERE id IN (4, 5, 29)")                     # in
        conn.execute("UPDATE public.customers SET status = 'inactive' WHERE id = 20")                      # out ...
        conn.execute("UPDATE public.customers SET status = 'active', region = 'west' WHERE id = 20")       # ... back in
        conn.execute(f"UPDATE public.customers SET email = 'new-{MARK}@example.org', "
                     f"ssn = 'SSN-{MARK}-changed' WHERE id IN (16, 17)")                                   # masked
        conn.execute("DELETE FROM public.customers WHERE id IN (7, 8, 9, 103, 104)")        # kept and not kept
        conn.execute("UPDATE public.customers SET id = 1000 WHERE id = 22")                 # a key change
        expected = oracle(conn, salt)
        assert len(expected) > 15 and expected[16]["email"] == expected[17]["email"]   # same input, same hash
        reader = ""

        def equal() -> bool:
            nonlocal reader
            actual, reader = mirror_rows(ctx, rec.name)
            problems = compare(expected, actual)
            if problems:
                print(f"{len(problems)} differences:\n  " + "\n  ".join(problems[:30]))
            return not problems
        t0 = time.monotonic()
        wait_for("the mirror to equal the Postgres oracle", equal, timeout=240, poll=3)
        print(f"mirror equals the oracle ({len(expected)} rows) {time.monotonic() - t0:.1f}s after the last change; "
              f"read by {reader}")

    needles = [f"{MARK}@example".encode(), f"-{MARK}@example".encode(), f"+1-555-{MARK}".encode(),
               f"SSN-{MARK}".encode(), f"new-{MARK}".encode()]
    t0 = time.monotonic()
    found = scan_topics(ctx, needles)
    print(f"scanned every topic in {time.monotonic() - t0:.1f}s; clear values found: {found}")
    assert found == {}, f"clear values of masked or excluded columns in topics: {found}"
    assert scan_topics(ctx, [MARK[:3].encode()]), "the scan must find the unmasked doc column's values"

    report = verify_mirror(ctx, rec.name, settle_timeout=30, computed_sql=PG_COMPUTED)
    print(format_report(report))
    assert report.clean and report.source_rows == len(expected) and not report.not_compared, report
    plain = verify_mirror(ctx, rec.name, settle_timeout=5)
    assert plain.clean and len(plain.not_compared) == len(RULES.computed_columns), plain
    # the check must be able to fail: a wrong Postgres equivalent of a computed column
    wrong = verify_mirror(ctx, rec.name, settle_timeout=3, computed_sql={**PG_COMPUTED, "amount_x2": "amount * 3"})
    print(format_report(wrong))
    assert not wrong.clean and wrong.differing == len(expected), wrong
