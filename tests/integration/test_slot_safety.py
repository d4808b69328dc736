"""Replication-slot safety: while Kafka Connect does not consume (connector STOPPED through the
REST API -- no process is killed), writes continue and Postgres must keep the WAL for the slot;
the retained WAL is visible in the metrics (with an over-threshold flag) and in mirror status;
once the connector resumes, the slot drains and the mirror is exact.

Ours: database h_faults, source h_faults (connector cdc-h_faults), a small LoadGen table with a
per-run name, a private registry, and NO reconciler (it would resume the stopped connector).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from cdc.core import names
from cdc.observe import metrics
from cdc.mirrors import service
from cdc.clients.kafka import KafkaAdmin
from cdc.core.settings import Settings
from cdc.core.errors import CdcError, RemoteError
from bench.loadgen import LoadGen
from cdc.mirrors.verify import verify_mirror
from syncing import wait_for

pytestmark = pytest.mark.integration

DB = SOURCE = "h_faults"
ROWS = 2_000


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_TRANSIENT = (RemoteError, CdcError, psycopg.Error)


def _wait(what: str, fn: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    return wait_for(what, fn, timeout, poll, tolerate=_TRANSIENT)


@dataclass
class Slot:
    ctx: service.Context
    dsn: str
    table: str
    name: str

    @property
    def cname(self) -> str:
        return names.connector_name(SOURCE)

    def retained(self) -> int:
        v = metrics.slot_wal_retained(self.ctx, service.get_source(self.ctx, SOURCE))
        assert v is not None, "the slot cdc_h_faults does not exist"
        return v

    def connector_state(self) -> str | None:
        st = self.ctx.connect.status(self.cname)
        if st is None:
            return None
        if st.state == "STOPPED":          # a stopped connector has no tasks at all
            return "STOPPED"
        states = {st.state, *(t.state for t in st.tasks)}
        return states.pop() if len(states) == 1 and st.tasks else f"{st.state}/{[t.state for t in st.tasks]}"


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'source="{SOURCE}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def slot(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slot]:
    s = settings.model_copy(update={"registry_path": tmp_path_factory.mktemp("slot") / "registry.db"})
    admin = f"postgresql://postgres@{s.host}:{s.ports.postgres}/postgres"
    dsn = f"postgresql://postgres@{s.host}:{s.ports.postgres}/{DB}"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DB}")
    ctx = service.context(s)
    cname = names.connector_name(SOURCE)
    if ctx.connect.status(cname) is not None:        # a crashed earlier run: start from scratch
        service.delete_connector(ctx, cname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (f"cdc_{SOURCE}",)).fetchone()
        if row is not None and not row[0]:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (f"cdc_{SOURCE}",))
    table = f"slot_{uuid.uuid4().hex[:6]}"
    with LoadGen(dsn, "public", table, seed=3) as lg:
        lg.create_table(ROWS)
    service.add_source(ctx, SOURCE, dsn)
    sl = Slot(ctx, dsn, table, table)
    service.add_mirror(ctx, "public", table, source=SOURCE, name=sl.name, progress=_say)
    try:
        rec = ctx.registry.get_mirror(sl.name)
        _wait("mirror job RUNNING", lambda: ctx.jobmanager.job_state(rec.flink_job_id) == "RUNNING", 120)
        _wait("connector RUNNING", lambda: sl.connector_state() == "RUNNING", 120)
        yield sl
    finally:
        try:
            if ctx.connect.status(cname) is not None and sl.connector_state() != "RUNNING":
                ctx.connect.resume(cname)
            service.remove_mirror(ctx, sl.name, drop_data=True, progress=_say)
            service.remove_source(ctx, SOURCE)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS public.{table}")
            kafka = KafkaAdmin(s.kafka_bootstrap)
            for topic in kafka.topics():
                if topic.startswith(f"cdc.{SOURCE}._cdc.") or topic == f"__debezium-heartbeat.cdc.{SOURCE}":
                    kafka.delete_topic(topic)
            ctx.close()


def test_stopped_connector_retains_wal_alerts_and_drains(slot: Slot) -> None:
    ctx, cname = slot.ctx, slot.cname
    _wait("the snapshot in the flat topic", lambda: verify_mirror(ctx, slot.name, settle_timeout=5).clean, 120, poll=2)
    before = slot.retained()

    ctx.connect.stop(cname)                                  # PUT /connectors/cdc-h_faults/stop
    _wait("connector STOPPED", lambda: slot.connector_state() == "STOPPED", 60)
    stopped = slot.retained()
    with LoadGen(slot.dsn, "public", slot.table, seed=11) as lg:
        stats = lg.run(300, 15, batch_per_tx=5)              # writes continue: ~4,500 changes
    grown = slot.retained()
    _say(f"FIGURES: retained WAL {before} B before stop, {stopped} B stopped, {grown} B after "
         f"{stats.changes} changes at {stats.achieved_rate:.0f}/s with the connector STOPPED")
    assert grown - stopped > 500_000, (stopped, grown)       # the slot holds the WAL back

    threshold = stopped + (grown - stopped) // 2
    low = ctx.settings.model_copy(update={"wal_retained_warn_bytes": threshold})
    text = metrics.render_metrics(service.Context(**{**ctx.__dict__, "settings": low}))
    assert _metric(text, "cdc_slot_wal_retained_bytes") is not None and \
        _metric(text, "cdc_slot_wal_retained_bytes") >= grown, text
    assert _metric(text, "cdc_slot_wal_retained_over_threshold") == 1, text
    assert f"cdc_slot_wal_retained_warn_bytes {threshold}" in text
    assert _metric(metrics.render_metrics(ctx), "cdc_slot_wal_retained_over_threshold") == 0   # default 1 GiB

    st = service.mirror_status(service.Context(**{**ctx.__dict__, "settings": low}), slot.name)
    assert st["connector"]["state"] == "STOPPED", st
    assert st.get("slot", {}).get("wal_retained_bytes", 0) >= grown and st["slot"]["warning"] is True, st

    t_resume = time.monotonic()
    ctx.connect.resume(cname)
    _wait("connector RUNNING again", lambda: slot.connector_state() == "RUNNING", 60)
    # restart_lsn moves once Debezium confirms the LSNs it processed (offset commit, 1 s) and
    # Postgres has logged a running-xacts record past them (checkpoint / every 15 s).
    drained = _wait("retained WAL to fall below the threshold", lambda: (r := slot.retained()) < threshold and r + 1,
                    180, poll=2) - 1
    _say(f"FIGURES: after resume, retained WAL {grown} B -> {drained} B in {time.monotonic() - t_resume:.1f}s")
    assert drained < grown
    assert _metric(metrics.render_metrics(service.Context(**{**ctx.__dict__, "settings": low})),
                   "cdc_slot_wal_retained_over_threshold") == 0
    report = verify_mirror(ctx, slot.name, settle_timeout=90)
    assert report.clean, report
