"""Folding Debezium 3.6.1's snapshot notifications into one table's progress (cdc.mirrors.snapshot).

The notification shapes follow IncrementalSnapshotNotificationService and
InitialSnapshotNotificationService as read in Debezium's source: id, aggregate_type, type,
additional_data (strings), timestamp."""

from __future__ import annotations

from typing import Any

from cdc.mirrors import snapshot
from cdc.mirrors.snapshot import Progress, fold, step

T = "Sales.Order Lines"
SIG = "abc123"


def inc(typ: str, ts: int, id: str = SIG, **data: str) -> dict[str, Any]:
    return {"id": id, "aggregate_type": "Incremental Snapshot", "type": typ, "timestamp": ts,
            "additional_data": {"connector_name": "cdc.x", **data}}


def init(typ: str, ts: int, **data: str) -> dict[str, Any]:
    return {"id": f"u{ts}", "aggregate_type": "Initial Snapshot", "type": typ, "timestamp": ts,
            "additional_data": {"connector_name": "cdc.x", **data}}


def confirm_run(notes: list[dict[str, Any]], kind: str, signal_id: str | None = None) -> Progress:
    p = Progress(table=T, kind=kind)
    for n in notes:
        step(p, n, expect=kind, signal_id=signal_id)
    return p


def test_incremental_snapshot_runs_and_completes_with_rows() -> None:
    notes = [inc("STARTED", 1, data_collections=T),
             inc("IN_PROGRESS", 2, data_collections=T, current_collection_in_progress=T, maximum_key="300",
                 last_processed_key="300"),
             inc("TABLE_SCAN_COMPLETED", 3, data_collections=T, scanned_collection=T, total_rows_scanned="300",
                 status="SUCCEEDED"),
             inc("COMPLETED", 4)]
    assert confirm_run(notes[:1], "incremental", SIG).state == "queued"
    assert confirm_run(notes[:2], "incremental", SIG).state == "running"
    done = fold(T, notes)
    assert (done.state, done.rows, done.kind, done.started_ms) == ("done", 300, "incremental", 1)
    assert done.as_dict()["done"] is True


def test_the_issue_11_skip_is_a_failure() -> None:
    """Debezium could not parse the name: STARTED of our signal with an empty list."""
    p = confirm_run([inc("STARTED", 1, data_collections=""), inc("COMPLETED", 2)], "incremental", SIG)
    assert p.state == "failed" and "could not parse" in (p.reason or "")


def test_scan_statuses_other_than_success_fail() -> None:
    for status in ("NO_PRIMARY_KEY", "SQL_EXCEPTION", "UNKNOWN_SCHEMA", "SKIPPED"):
        p = fold(T, [inc("STARTED", 1, data_collections=T),
                     inc("TABLE_SCAN_COMPLETED", 2, data_collections=T, scanned_collection=T,
                         total_rows_scanned="0", status=status)])
        assert p.state == "failed" and status in (p.reason or "")
    empty = fold(T, [inc("TABLE_SCAN_COMPLETED", 2, scanned_collection=T, total_rows_scanned="0", status="EMPTY")])
    assert (empty.state, empty.rows) == ("done", 0)


def test_queued_behind_another_table_then_aborted() -> None:
    other = "public.big"
    notes = [inc("IN_PROGRESS", 1, id="other", data_collections=f"{other},{T}", current_collection_in_progress=other),
             inc("ABORTED", 2, id="other", data_collections=T)]
    assert fold(T, notes[:1]).state == "queued"
    assert fold(T, notes).state == "failed"


def test_names_with_commas_and_prefixes_are_not_confused() -> None:
    assert fold("public.a", [inc("STARTED", 1, data_collections="public.ab,public.a b")]).state == "requested"
    assert fold("s.t,u", [inc("STARTED", 1, data_collections="x.y,s.t,u")]).state == "queued"


def test_other_kinds_are_ignored_while_confirming() -> None:
    """A task restart emits Initial Snapshot SKIPPED; it says nothing about our incremental one."""
    p = confirm_run([init("SKIPPED", 1)], "incremental", SIG)
    assert p.state == "requested"


def test_initial_snapshot_confirmed_by_started_and_done_per_table() -> None:
    tables = f"_cdc.heartbeat,{T},public.base"
    notes = [init("STARTED", 1), init("IN_PROGRESS", 2, current_collection_in_progress="public.base",
                                      data_collections=tables),
             init("TABLE_SCAN_COMPLETED", 3, scanned_collection="public.base", data_collections=tables,
                  total_rows_scanned="50", status="SUCCEEDED"),
             init("IN_PROGRESS", 4, current_collection_in_progress=T, data_collections=tables),
             init("TABLE_SCAN_COMPLETED", 5, scanned_collection=T, data_collections=tables,
                  total_rows_scanned="7", status="SUCCEEDED"),
             init("IN_PROGRESS", 6, current_collection_in_progress="_cdc.heartbeat", data_collections=tables),
             init("COMPLETED", 7)]
    assert confirm_run(notes[:1], "initial").state == "queued"
    p = fold(T, notes)
    assert (p.state, p.rows) == ("done", 7)          # later listings of an initial snapshot do not re-queue it
    assert confirm_run([init("SKIPPED", 1)], "initial").state == "failed"


def test_abort_fails_and_a_rerun_or_resync_restarts() -> None:
    notes = [init("IN_PROGRESS", 1, current_collection_in_progress=T, data_collections=T),
             init("ABORTED", 2)]
    assert fold(T, notes).state == "failed"
    notes += [init("STARTED", 3), init("IN_PROGRESS", 4, current_collection_in_progress=T, data_collections=T),
              init("TABLE_SCAN_COMPLETED", 5, scanned_collection=T, total_rows_scanned="9", status="SUCCEEDED"),
              inc("STARTED", 6, data_collections=T)]                       # then a resync
    p = fold(T, notes)
    assert (p.state, p.started_ms, p.rows) == ("queued", 6, 9)


def test_since_drops_notifications_of_an_earlier_incarnation() -> None:
    notes = [inc("TABLE_SCAN_COMPLETED", 1, scanned_collection=T, total_rows_scanned="1", status="SUCCEEDED")]
    assert fold(T, notes, since_ms=5).state == "requested"


def test_blocking_snapshot_is_confirmed_by_initial_snapshot_notifications() -> None:
    """A task restart's SKIPPED says nothing about the blocking snapshot requested after it."""
    notes = [init("SKIPPED", 1), init("STARTED", 2),
             init("IN_PROGRESS", 3, current_collection_in_progress=T, data_collections=T),
             init("TABLE_SCAN_COMPLETED", 4, scanned_collection=T, data_collections=T, total_rows_scanned="60000",
                  status="SUCCEEDED")]
    assert confirm_run(notes[:1], "blocking").state == "requested"
    assert confirm_run(notes[:2], "blocking").state == "queued"
    assert (confirm_run(notes, "blocking").state, confirm_run(notes, "blocking").rows) == ("done", 60000)
    # a regex matching nothing: STARTED, then COMPLETED without the table
    assert confirm_run([init("STARTED", 1), init("COMPLETED", 2)], "blocking").state == "failed"


def test_snapshot_running_reads_connect_offsets() -> None:
    assert snapshot.snapshot_running([{"partition": {}, "offset": {"lsn": 1, snapshot.OFFSET_KEY: "[...]"}}])
    assert snapshot.snapshot_running([{"partition": {}, "offset": {"lsn": 1, "snapshot": "BLOCKING",
                                                                    "snapshot_completed": False}}])
    assert not snapshot.snapshot_running([{"partition": {}, "offset": {"lsn": 1}}])
