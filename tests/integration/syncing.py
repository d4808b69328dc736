"""Helpers for mirror tests: compare Postgres with the mirror, list what exists."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cdc.core import names
from cdc.postgres import catalog
from cdc.mirrors import state as mirror_state
from cdc.mirrors import service


def wait_for(what: str, fn: Callable[[], Any], timeout: float, poll: float = 0.5,
             tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll fn until it returns something truthy and return that. Exceptions of the
    `tolerate` types count as "not yet" (a process that is restarting); others propagate."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except tolerate as exc:
            last = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if last:
                return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def mirror_target_rows(c: service.Context, name: str) -> mirror_state.Rows:
    """The mirror as Pinot answers: a Pinot server where one runs, else Pinot's own ingestion
    and upsert code in-process over the flat topic (cdc's Pinot engine)."""
    return service.read_mirror(c, name)[0]


def wait_in_sync(c: service.Context, name: str, timeout: float = 120.0) -> float:
    """Poll until the mirror equals Postgres, compared in full; return seconds waited."""
    rec = service.get_mirror(c, name)
    spec = rec.spec
    t0 = time.monotonic()
    last: dict = {}
    while time.monotonic() - t0 < timeout:
        with catalog.connect(service.source_dsn(c, service.get_source(c, spec.source))) as conn:
            info = catalog.introspect(conn, spec.schema_name, spec.table_name)
            expected = mirror_state.postgres_rows(conn, info, spec.key_columns)
        actual = mirror_target_rows(c, name)
        last = mirror_state.diff(expected, actual)
        if not (last["missing"] or last["extra"] or last["differing"]):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"mirror {name} not equal to Postgres after {timeout}s: {last}")


def stack_objects(c: service.Context) -> dict:
    """Everything a mirror can create, to prove a failed add created nothing."""
    from cdc.clients.kafka import KafkaAdmin
    with catalog.connect(c.settings.source_dsn()) as conn:
        slots = sorted(r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots"))
        pubs = sorted(r[0] for r in conn.execute("SELECT pubname FROM pg_publication"))
    jobs = sorted(j.id for j in c.jobmanager.jobs() if j.state not in ("CANCELED", "FINISHED", "FAILED"))
    topics = sorted(t for t in KafkaAdmin(c.settings.kafka_bootstrap).topics() if t.startswith("cdc.flat."))
    return {"connectors": sorted(c.connect.list_connectors()), "jobs": jobs, "slots": slots,
            "publications": pubs, "flat_topics": topics, "mirrors": [m.name for m in c.registry.list_mirrors()]}
