"""What a mirror is doing now (registry, connector, Flink job, slot, Pinot), and SQL on Pinot."""

from __future__ import annotations

from typing import Any

import psycopg

from cdc.core import names
from cdc.core.errors import CdcError, ConfigError, RemoteError
from cdc.mirrors.context import Context, pinot_enabled
from cdc.mirrors.lifecycle import get_mirror
from cdc.mirrors.sources import get_source, source_dsn
from cdc.postgres import slots


# -- status / query ----------------------------------------------------------------------

def mirror_status(ctx: Context, name: str) -> dict[str, Any]:
    rec = get_mirror(ctx, name)
    out: dict[str, Any] = {"name": name, "state": rec.state, "source": rec.spec.source,
                           "table": rec.spec.qualified, "flat_topic": names.flat_topic(name)}
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
        retained = slots.wal_retained(source_dsn(ctx, src), src.name)
        out["slot"] = {"name": names.slot_name(src.name), "wal_retained_bytes": retained,
                       "warn_threshold_bytes": ctx.settings.wal_retained_warn_bytes,
                       "warning": retained is not None and retained > ctx.settings.wal_retained_warn_bytes}
    except (CdcError, psycopg.Error) as exc:
        out["slot"] = {"error": str(exc).splitlines()[0]}
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
    use_pinot, why = pinot_enabled(ctx)
    if not use_pinot:
        raise ConfigError(f"Pinot is not available: {why}",
                          hint="set CDC_PINOT_HOME or CDC_PINOT_MODE=external with the controller/broker URLs")
    from urllib.parse import urlsplit

    from cdc.clients.pinot import query_dbapi
    u = urlsplit(ctx.settings.broker_url)
    cols, rows = query_dbapi(u.hostname or "127.0.0.1", u.port or 8099, sql_text, scheme=u.scheme or "http")
    return cols, [list(r) for r in rows]
