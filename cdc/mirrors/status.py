"""What a mirror is doing now (registry, snapshot, connector, Flink job, slot, Pinot), and SQL on Pinot."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from cdc.core import names
from cdc.core.errors import CdcError, ConfigError, RemoteError, first_line
from cdc.core.models import TableInfo
from cdc.mirrors.context import Context, pinot_enabled
from cdc.mirrors import dead_letters, load_progress, snapshot
from cdc.mirrors.lifecycle import get_mirror
from cdc.mirrors.registry import MirrorRecord
from cdc.mirrors.sources import get_source, source_dsn
from cdc.mirrors import state
from cdc.postgres import catalog, slots


# -- status / query ----------------------------------------------------------------------

def _snapshot_status(ctx: Context, rec: MirrorRecord) -> tuple[dict[str, Any], MirrorRecord]:
    """The table's snapshot as Debezium reported it (cdc.mirrors.snapshot); a failure seen now
    turns the registry state to "error" (and a later snapshot under way back to "running")."""
    try:
        p = snapshot.progress_of(ctx, rec, get_source(ctx, rec.spec.source))
        return p.as_dict(), snapshot.settle(ctx, rec, p)
    except Exception as exc:  # Kafka, Postgres or Connect: status must still answer
        return {"error": first_line(exc, 300)}, rec


def _last_schema_change(ctx: Context, name: str) -> dict[str, Any] | None:
    """The newest "schema_change" event (cdc.mirrors.schema_change.EVENT) of the mirror."""
    ev = next((e for e in ctx.registry.list_events(name, limit=500) if e.action == "schema_change"), None)
    if ev is None:
        return None
    return {"ts": ev.ts, "followed": (ev.reason or "").startswith(("followed", "in place", "rebuild")),
            "reason": ev.reason}


def _last_slot_repair(ctx: Context, name: str) -> dict[str, Any] | None:
    """The newest step of a lost slot's repair (cdc.mirrors.slot_repair events) of the mirror."""
    steps = {"slot_lost": "lost", "resync_started": "resyncing", "slot_repaired": "repaired"}
    ev = next((e for e in ctx.registry.list_events(name, limit=500) if e.action in steps), None)
    return None if ev is None else {"state": steps[ev.action], "ts": ev.ts, "reason": ev.reason}


def mirror_status(ctx: Context, name: str) -> dict[str, Any]:
    snap, rec = _snapshot_status(ctx, get_mirror(ctx, name))
    out: dict[str, Any] = {"name": name, "state": rec.state, "source": rec.spec.source,
                           "table": rec.spec.qualified, "flat_topic": names.flat_topic(name, rec.generation), "snapshot": snap}
    load = load_progress.read(ctx.settings.registry_file, name, rec.created_at)
    if load is not None:       # the copy load read the rows (cdc.mirrors.initial_load), not Debezium
        out["load"] = load.as_dict()
        if snap.get("state") in ("requested", "unknown"):
            out["snapshot"] = {"state": "not_used", "reason": "the rows were read by the copy load (see load)"}
    out["schema"] = {"deployed_columns": rec.deployment.columns() if rec.deployment else None,
                     "consumer_group": rec.deployment.group_id if rec.deployment else None,
                     "last_change": _last_schema_change(ctx, name)}
    from cdc.mirrors import rebuild       # a new generation being filled beside the serving one
    out["generation"] = rec.generation
    out["rebuild"] = rebuild.status(ctx, rec)
    try:
        st = ctx.connect.status(names.connector_name(rec.spec.source))
        out["connector"] = None if st is None else {
            "name": st.name, "state": st.state, "tasks": [{"id": t.id, "state": t.state} for t in st.tasks]}
    except RemoteError as exc:
        out["connector"] = {"error": str(exc)}
    try:
        out["flink_job"] = {"id": rec.flink_job_id,
                            "state": ctx.jobmanager.job_state(rec.flink_job_id) if rec.flink_job_id else None}
    except RemoteError as exc:
        out["flink_job"] = {"id": rec.flink_job_id, "error": str(exc)}
    try:
        src = get_source(ctx, rec.spec.source)
        dsn = source_dsn(ctx, src)
        retained, wal = slots.wal_retained(dsn, src.name), slots.wal_status(dsn, src.name)
        out["slot"] = {"name": names.slot_name(src.name), "wal_retained_bytes": retained,
                       "warn_threshold_bytes": ctx.settings.wal_retained_warn_bytes, "wal_status": wal,
                       "warning": retained is not None and retained > ctx.settings.wal_retained_warn_bytes}
        if wal == "lost":
            out["slot"].update(lost=True, error="replication slot lost", hint=slots.LOST_HINT)
        if rep := _last_slot_repair(ctx, name):
            out["slot"]["repair"] = rep
    except (CdcError, psycopg.Error) as exc:
        out["slot"] = {"error": first_line(exc)}
    try:
        dl = dead_letters.summary(ctx.settings.kafka_bootstrap, name)
        dl["superseded"] = dead_letters.acknowledged(ctx.registry.list_events(name, limit=500))
        out["dead_letters"] = dl
        out["degraded"] = dl["count"] > dl["superseded"]     # new ones since the last resync
        if out["degraded"]:
            out["dead_letters"]["hint"] = dead_letters.HINT.replace("NAME", name)
    except Exception as exc:   # Kafka unreachable: status still answers, and says it does not know
        out["dead_letters"] = {"error": first_line(exc, 300)}
    use_pinot, why = pinot_enabled(ctx)
    if not use_pinot:
        out["pinot"] = {"enabled": False, "reason": why}
    else:
        try:
            info = ctx.controller.consuming_segments_info(name)
            out["pinot"] = {"enabled": True, "rows": ctx.broker.count(name), "consuming_segments": info}
        except RemoteError as exc:
            out["pinot"] = {"enabled": True, "error": str(exc)}
    return out


def query(ctx: Context, sql_text: str) -> tuple[list[str], list[list[Any]]]:
    """SQL on the mirrors: through the Pinot broker where a Pinot server runs, else through
    Pinot's own query engine in-process over segments built from the mirror's flat topic
    (answered_by says which)."""
    if not pinot_enabled(ctx)[0]:
        return _engine_query(ctx, sql_text)
    from urllib.parse import urlsplit

    from cdc.clients.pinot import query_dbapi
    u = urlsplit(ctx.settings.broker_url)
    cols, rows = query_dbapi(u.hostname or "127.0.0.1", u.port or 8099, sql_text, scheme=u.scheme or "http")
    return cols, [list(r) for r in rows]


def answered_by(ctx: Context) -> str:
    return state.SERVER if pinot_enabled(ctx)[0] else state.engine_label()


def _serving_table(ctx: Context, rec: MirrorRecord) -> TableInfo:
    """The table in the shape of the generation that answers (its deployed table): during a
    rebuild, while a schema change is blocked, or after the table was dropped, that is not
    the catalog's shape. The catalog's for a mirror without a recorded deployment."""
    if rec.deployment is not None:
        return rec.deployment.table
    with catalog.connect(source_dsn(ctx, get_source(ctx, rec.spec.source))) as conn:
        return catalog.introspect(conn, rec.spec.schema_name, rec.spec.table_name)


def read_mirror(ctx: Context, name: str) -> tuple[state.Rows, str]:
    """The mirror's current rows (canonical, by key) and what read them: a Pinot server
    where one runs, else Pinot's own ingestion and upsert code in-process, read in the shape
    of the generation that answers (_serving_table)."""
    rec = get_mirror(ctx, name)
    spec, info = rec.spec, _serving_table(ctx, rec)
    if pinot_enabled(ctx)[0]:
        return state.pinot_rows(ctx.broker.query, name, info, spec.key_columns), state.SERVER
    raw, summary = state.engine_raw_rows(ctx.settings.kafka_bootstrap, spec, info, rec.generation)
    return state.canonical_rows(raw, info, spec.key_columns), state.engine_label(summary)


def _engine_query(ctx: Context, sql_text: str) -> tuple[list[str], list[list[Any]]]:
    from cdc.mapping import render
    m = re.search(r'\bFROM\s+"?([A-Za-z0-9_]+)"?', sql_text, re.IGNORECASE)
    if m is None:
        raise ConfigError("cannot tell which mirror the query reads (no FROM <mirror>)",
                          hint='write SELECT ... FROM "<mirror name>" (see `cdc mirror list`)')
    rec = get_mirror(ctx, m.group(1))
    spec, info = rec.spec, _serving_table(ctx, rec)
    topic = names.flat_topic(spec.name, rec.generation)
    engine, records = state.engine_input(ctx.settings.kafka_bootstrap, topic)
    response = engine.query(
        render.render_pinot_schema(spec, info),
        render.render_pinot_table(spec, info, kafka_bootstrap=ctx.settings.kafka_bootstrap, flat_topic=topic),
        records, sql_text)
    if response.get("exceptions"):
        raise ConfigError(f"Pinot refused the query: {response['exceptions'][0].get('message', '')[:500]}",
                          hint="check the SQL against Pinot's dialect; table and column names as in `cdc mirror plan`")
    result = response.get("resultTable") or {}
    return list(result.get("dataSchema", {}).get("columnNames", [])), [list(r) for r in result.get("rows", [])]
