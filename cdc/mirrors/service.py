"""The one place the CLI and the REST API call: sources and mirrors, add / remove / status.

add_mirror orders the steps so that a failure leaves nothing half-made:
  1. preflight + render all artifacts (pure; nothing created yet)
  2. check that Connect, Flink and Pinot answer
  3. flat topic -> Pinot schema/table -> Flink job -> connector config -> snapshot signal
Every step that created something registers an undo; any error runs the undos in
reverse and removes the registry row, then re-raises.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cdc.postgres import catalog
from cdc.mapping import render
from cdc.clients.connect import ConnectClient
from cdc.clients.flink import JobManagerClient, SqlGatewayClient
from cdc.clients.pinot import PinotBrokerClient, PinotControllerClient
from cdc.core.settings import Settings, get_settings
from cdc.core.errors import CdcError, ConfigError, ConflictError, NotFoundError, RemoteError, UnreachableError
from cdc.core.models import MirrorSpec, Source, TableInfo, derive_mirror_name
from cdc.mirrors.registry import MirrorRecord, Registry, redact_dsn

Progress = Callable[[str], None]
DEFAULT_SOURCE = "default"
_TOPIC_BAD = re.compile(r"[^a-zA-Z0-9._-]")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Context:
    """Clients for every system, built from settings once per command or request."""

    settings: Settings
    registry: Registry
    connect: ConnectClient
    gateway: SqlGatewayClient
    jobmanager: JobManagerClient
    controller: PinotControllerClient
    broker: PinotBrokerClient

    def close(self) -> None:
        self.registry.close()


def context(settings: Settings | None = None) -> Context:
    s = settings or get_settings()
    s.registry_file.parent.mkdir(parents=True, exist_ok=True)
    return Context(settings=s, registry=Registry(s.registry_file), connect=ConnectClient(s.connect_url),
                   gateway=SqlGatewayClient(s.sql_gateway_url), jobmanager=JobManagerClient(s.flink_url),
                   controller=PinotControllerClient(s.controller_url), broker=PinotBrokerClient(s.broker_url))


# -- names -----------------------------------------------------------------------------

def connector_name(source: str) -> str:
    return f"cdc-{source}"


def change_topic(source: str, schema: str, table: str) -> str:
    """Debezium's topic for a table: <topic.prefix>.<schema>.<table>, invalid chars -> _."""
    return _TOPIC_BAD.sub("_", f"cdc.{source}.{schema}.{table}")


def flat_topic(mirror: str) -> str:
    return f"cdc.flat.{mirror}"


# -- Pinot availability ------------------------------------------------------------------

def pinot_enabled(ctx: Context) -> tuple[bool, str]:
    """(enabled, why). Pinot is skipped only when told so, or when the local stack knows
    it cannot run Pinot on this machine (mode auto + provisioning refused)."""
    s = ctx.settings
    if s.pinot_mode == "none":
        return False, "CDC_PINOT_MODE=none"
    if s.pinot_mode == "auto" and not s.pinot_controller_url:
        marker = next(iter(s.cache_dir.glob("pinot-*.unavailable")), None)
        if marker is not None and not _pinot_answers(ctx):
            return False, marker.read_text().strip().split(";")[0]
    return True, ""


def _pinot_answers(ctx: Context) -> bool:
    try:
        return bool(ctx.controller.health())
    except RemoteError:
        return False


# -- sources -----------------------------------------------------------------------------

def _secrets_dir(s: Settings) -> Path:
    d = s.state_dir / "secrets"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def source_from_dsn(name: str, dsn: str) -> Source:
    try:
        parts = conninfo_to_dict(dsn)
        port = int(parts.get("port") or 5432)
    except Exception as exc:
        raise ConfigError(f"source {name}: the DSN cannot be parsed ({type(exc).__name__})",
                          hint="use postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME") from None
    return Source(name=name, dsn=redact_dsn(dsn), database=str(parts.get("dbname") or parts.get("user") or "postgres"),
                  host=str(parts.get("host") or "127.0.0.1"), port=port,
                  user=str(parts.get("user") or "postgres"), has_password=bool(parts.get("password")))


def add_source(ctx: Context, name: str, dsn: str) -> Source:
    """Register a Postgres database. The password goes to a 0600 secrets file that Kafka
    Connect reads through its FileConfigProvider; the registry keeps a redacted DSN."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise ConfigError(f"invalid source name {name!r}", hint="use lowercase letters, digits and _ (max 41)")
    src = source_from_dsn(name, dsn)
    with catalog.connect(dsn) as conn:      # reachable and the credentials work
        conn.execute("select 1")
    password = conninfo_to_dict(dsn).get("password")
    if password:
        f = _secrets_dir(ctx.settings) / f"{name}.properties"
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("password=" + str(password).replace("\\", "\\\\") + "\n")
    return ctx.registry.add_source(src)


def remove_source(ctx: Context, name: str) -> bool:
    """Forget a source and its stored password (refused while mirrors use it)."""
    removed = ctx.registry.remove_source(name)
    (_secrets_dir(ctx.settings) / f"{name}.properties").unlink(missing_ok=True)
    return removed


def _source_dsn(ctx: Context, src: Source) -> str:
    """Full DSN (with password) for our own Postgres connections; never stored or shown."""
    if src.name == DEFAULT_SOURCE:
        return ctx.settings.source_dsn()
    parts = conninfo_to_dict(src.dsn)
    secret = _secrets_dir(ctx.settings) / f"{src.name}.properties"
    if secret.exists():
        parts["password"] = secret.read_text().split("=", 1)[1].rstrip("\n").replace("\\\\", "\\")
    return " ".join(f"{k}='{str(v)}'" for k, v in parts.items() if v is not None)


def _password_ref(ctx: Context, src: Source) -> str | None:
    secret = _secrets_dir(ctx.settings) / f"{src.name}.properties"
    return f"${{file:{secret}:password}}" if secret.exists() else None


def ensure_default_source(ctx: Context) -> Source:
    existing = ctx.registry.get_source(DEFAULT_SOURCE)
    if existing:
        return existing
    return ctx.registry.add_source(source_from_dsn(DEFAULT_SOURCE, ctx.settings.source_dsn()))


def get_source(ctx: Context, name: str) -> Source:
    if name == DEFAULT_SOURCE:
        return ensure_default_source(ctx)
    src = ctx.registry.get_source(name)
    if src is None:
        known = ", ".join(s.name for s in ctx.registry.list_sources()) or "none"
        raise NotFoundError(f"unknown source {name!r} (known: {known})", hint="add it: cdc source add NAME --dsn ...")
    return src


# -- plan --------------------------------------------------------------------------------

@dataclass
class MirrorPlan:
    spec: MirrorSpec
    table: TableInfo
    source: Source
    connector: dict[str, Any]
    flink_sql: list[str]
    pinot_schema: dict[str, Any]
    pinot_table: dict[str, Any]
    change_topic: str
    flat_topic: str
    notes: list[str] = field(default_factory=list)


def _tables_of_source(ctx: Context, src: Source, extra: MirrorSpec | None = None,
                      exclude: str | None = None) -> tuple[list[TableInfo], dict[str, list[str]]]:
    """TableInfo for every mirrored table of the source (the connector's include list),
    plus the --key overrides by schema.table."""
    specs = [m.spec for m in ctx.registry.list_mirrors(source=src.name) if m.name != exclude]
    if extra is not None and all(sp.qualified != extra.qualified for sp in specs):
        specs.append(extra)
    tables = []
    with catalog.connect(_source_dsn(ctx, src)) as conn:
        for sp in specs:
            tables.append(catalog.introspect(conn, sp.schema_name, sp.table_name))
    overrides = {sp.qualified: list(sp.key_columns) for sp in specs if sp.key_columns}
    return tables, overrides


def _render_connector(ctx: Context, src: Source, tables: list[TableInfo], overrides: dict[str, list[str]]) -> dict:
    return render.render_connector(src, tables, kafka_bootstrap=ctx.settings.kafka_bootstrap,
                                   password_ref=_password_ref(ctx, src), key_overrides=overrides)


def plan_mirror(ctx: Context, schema: str, table: str, *, source: str = DEFAULT_SOURCE, name: str | None = None,
                key: list[str] | None = None) -> MirrorPlan:
    """Preflight and render the three artifacts. Creates nothing."""
    src = get_source(ctx, source)
    if name is not None and not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", name):
        raise ConfigError(f"invalid mirror name {name!r}",
                          hint="use lowercase letters, digits and _ (it becomes the Pinot table name)")
    spec = MirrorSpec(name=name or derive_mirror_name(schema, table, source), source=source, schema_name=schema,
                      table_name=table, key_columns=key)
    with catalog.connect(_source_dsn(ctx, src)) as conn:
        info = catalog.preflight(conn, schema, table, key, slot_name=render.pg_name("cdc", src.name))
    tables, overrides = _tables_of_source(ctx, src, extra=spec)
    ctopic, ftopic = change_topic(source, schema, table), flat_topic(spec.name)
    s = ctx.settings
    return MirrorPlan(
        spec=spec, table=info, source=src,
        connector=_render_connector(ctx, src, tables, overrides),
        flink_sql=render.render_flink_sql(spec, info, kafka_bootstrap=s.kafka_bootstrap, change_topic=ctopic,
                                          flat_topic=ftopic, group_id=f"cdc-flink-{spec.name}"),
        pinot_schema=render.render_pinot_schema(spec, info),
        pinot_table=render.render_pinot_table(spec, info, kafka_bootstrap=s.kafka_bootstrap, flat_topic=ftopic),
        change_topic=ctopic, flat_topic=ftopic)


# -- add -------------------------------------------------------------------------------

def _check_reachable(ctx: Context, with_pinot: bool) -> None:
    """Fail before creating anything when a system the mirror needs does not answer."""
    ctx.connect.list_connectors()
    ctx.gateway.info()
    overview = ctx.jobmanager.overview() or {}
    if overview.get("slots-available", 1) < 1:
        raise ConfigError(f"Flink has no free task slot ({overview.get('slots-total', 0)} slots, all used): "
                          "the mirror's job could never run",
                          hint="raise CDC_FLINK_TASKMANAGER_SLOTS (and CDC_FLINK_TASKMANAGER_MEMORY), then "
                               "restart the TaskManager, or remove unused mirrors")
    if with_pinot and not ctx.controller.health():
        raise UnreachableError(f"Pinot controller at {ctx.settings.controller_url}", "health check failed",
                               hint="is Pinot running? `cdc stack status`")


def _wait_task_restarted(ctx: Context, src: Source, cname: str, spec: MirrorSpec, timeout: float = 120) -> None:
    """Wait until the connector's task runs with the new table list. Debezium rewrites its
    filtered publication (ALTER PUBLICATION ... SET TABLE) when a task starts, so the new
    table showing up in the publication proves the old task is gone: a snapshot signal
    sent now is read by a task that captures the table."""
    pub = render.pg_name("cdc", src.name)
    deadline = time.monotonic() + timeout
    with catalog.connect(_source_dsn(ctx, src)) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
                               "AND tablename = %s", (pub, spec.schema_name, spec.table_name)).fetchone()
            st = ctx.connect.status(cname)
            if row and st is not None and st.running:
                return
            if st is not None and st.failed:
                raise CdcError(f"connector {cname} failed while adding {spec.qualified}: {st.failure_summary()}",
                               hint="see `cdc stack logs connect`")
            time.sleep(0.5)
    raise CdcError(f"connector {cname} did not restart with {spec.qualified} within {timeout:.0f}s",
                   hint=f"check `cdc stack logs connect` and GET /connectors/{cname}/status")


def create_connector(ctx: Context, cname: str, config: dict[str, Any]) -> None:
    """Create a connector with no history: Connect keeps source offsets by connector name
    even after a delete, and a new connector must not resume from an LSN of a slot that no
    longer exists. So: create STOPPED, reset offsets, then resume."""
    ctx.connect.create_stopped(cname, config)
    ctx.connect.wait_state(cname, "STOPPED")
    ctx.connect.delete_offsets(cname)
    ctx.connect.resume(cname)


def delete_connector(ctx: Context, cname: str) -> None:
    """Stop, forget offsets, delete: nothing of the connector survives it."""
    if ctx.connect.status(cname) is None:
        return
    ctx.connect.stop(cname)
    ctx.connect.wait_state(cname, "STOPPED")
    ctx.connect.delete_offsets(cname)
    ctx.connect.delete(cname)


def send_snapshot_signal(ctx: Context, src: Source, tables: list[str]) -> str:
    """Ask Debezium for an incremental snapshot of `tables` only (others keep streaming)."""
    sig_id = uuid.uuid4().hex
    data = json.dumps({"data-collections": tables, "type": "incremental"})
    with catalog.connect(_source_dsn(ctx, src)) as conn:
        conn.execute(f"INSERT INTO {'.'.join(render.SIGNAL_TABLE)} (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
                     (sig_id, data))
    return sig_id


def add_mirror(ctx: Context, schema: str, table: str, *, source: str = DEFAULT_SOURCE, name: str | None = None,
               key: list[str] | None = None, progress: Progress = _say) -> MirrorRecord:
    plan = plan_mirror(ctx, schema, table, source=source, name=name, key=key)
    spec, src = plan.spec, plan.source
    existing = ctx.registry.get_mirror(spec.name)
    if existing is not None:
        if existing.spec == spec:
            progress(f"mirror {spec.name} already exists with the same spec: nothing to do")
            return existing
        raise ConflictError(f"mirror {spec.name} exists with a different spec",
                            hint=f"remove it first (cdc mirror remove {spec.name}) or choose --name")
    use_pinot, why = pinot_enabled(ctx)
    _check_reachable(ctx, use_pinot)
    from cdc.clients.kafka import KafkaAdmin
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    kafka.topics()
    cname = connector_name(src.name)
    undo: list[tuple[str, Callable[[], Any]]] = []
    ctx.registry.add_mirror(spec, state="creating", connector_name=cname)
    try:
        with catalog.connect(_source_dsn(ctx, src)) as conn:
            for stmt in render.bootstrap_sql(src.name):
                conn.execute(stmt)
        # The change topic must exist before the Flink job subscribes to it; one partition,
        # because __seq (the ordering column) is this topic's offset.
        if kafka.create_topic(plan.change_topic, 1):
            undo.append(("delete change topic", lambda: kafka.delete_topic(plan.change_topic)))
        if kafka.create_topic(plan.flat_topic, ctx.settings.flat_topic_partitions):
            undo.append(("delete flat topic", lambda: kafka.delete_topic(plan.flat_topic)))
        if use_pinot:
            progress(f"pinot: schema and REALTIME upsert table {spec.name}")
            ctx.controller.add_schema(plan.pinot_schema, override=True)
            undo.append(("delete Pinot schema", lambda: ctx.controller.delete_schema(spec.name)))
            ctx.controller.add_table(plan.pinot_table)
            undo.append(("delete Pinot table", lambda: ctx.controller.delete_table(spec.name)))
        else:
            progress(f"pinot: skipped ({why}); the mirror ends at Kafka topic {plan.flat_topic}")
        progress(f"flink: submitting the flatten job for {spec.qualified}")
        job_id = ctx.gateway.submit_job(plan.flink_sql, {"pipeline.name": f"cdc-mirror-{spec.name}"})
        undo.append(("cancel Flink job", lambda: ctx.jobmanager.cancel(job_id)))
        previous = ctx.connect.get_config(cname)
        progress(f"connect: {'updating' if previous else 'creating'} connector {cname}")
        if previous:
            ctx.connect.put_config(cname, plan.connector)
            undo.append(("restore connector config", lambda: ctx.connect.put_config(cname, previous)))
            _wait_task_restarted(ctx, src, cname, spec)
            sig = send_snapshot_signal(ctx, src, [spec.qualified])
            progress(f"debezium: incremental snapshot of {spec.qualified} requested (signal {sig})")
        else:
            create_connector(ctx, cname, plan.connector)
            undo.append(("delete connector", lambda: delete_connector(ctx, cname)))
            ctx.connect.wait_running(cname, timeout=120)
            progress(f"debezium: initial snapshot of {spec.qualified} started")
        record = ctx.registry.update_mirror(spec.name, state="running", flink_job_id=job_id)
        ctx.registry.record_event(spec.name, "created", f"flink job {job_id}; connector {cname}")
        return record
    except BaseException as exc:
        progress(f"mirror {spec.name}: failed ({str(exc).splitlines()[0][:200]}); undoing what was created")
        for what, fn in reversed(undo):
            try:
                fn()
                progress(f"  undone: {what}")
            except Exception as undo_exc:  # keep undoing the rest
                progress(f"  could not {what}: {undo_exc}")
        ctx.registry.remove_mirror(spec.name)
        raise


# -- remove ------------------------------------------------------------------------------

def get_mirror(ctx: Context, name: str) -> MirrorRecord:
    rec = ctx.registry.get_mirror(name)
    if rec is None:
        known = ", ".join(m.name for m in ctx.registry.list_mirrors()) or "none"
        raise NotFoundError(f"unknown mirror {name!r} (known: {known})", hint="list them: cdc mirror list")
    return rec


def _drop_slot_and_publication(ctx: Context, src: Source, timeout: float = 60) -> None:
    slot = pub = render.pg_name("cdc", src.name)
    with catalog.connect(_source_dsn(ctx, src)) as conn:
        if not catalog.drop_slot_when_idle(conn, slot, timeout):
            raise CdcError(f"replication slot {slot} is still in use after the connector was deleted",
                           hint=f"drop it when idle: SELECT pg_drop_replication_slot('{slot}')")
        from psycopg import sql
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))


def remove_mirror(ctx: Context, name: str, *, drop_data: bool = False, progress: Progress = _say) -> None:
    from cdc.clients.kafka import KafkaAdmin
    rec = get_mirror(ctx, name)
    spec = rec.spec
    src = get_source(ctx, spec.source)
    cname = connector_name(src.name)
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    # Tell the reconciler this mirror is going away, or it would restore the cancelled job.
    ctx.registry.update_mirror(name, state="removing")
    if rec.flink_job_id:
        progress(f"flink: cancelling job {rec.flink_job_id}")
        try:
            ctx.jobmanager.cancel(rec.flink_job_id)
        except RemoteError as exc:
            progress(f"flink: job {rec.flink_job_id} could not be cancelled ({exc}); continuing")
    others = [m for m in ctx.registry.list_mirrors(source=src.name) if m.name != name]
    if others:
        tables, overrides = _tables_of_source(ctx, src, exclude=name)
        progress(f"connect: removing {spec.qualified} from connector {cname} and its publication")
        ctx.connect.put_config(cname, _render_connector(ctx, src, tables, overrides))
    else:
        progress(f"connect: last mirror of source {src.name}: deleting connector {cname}, its slot and publication")
        delete_connector(ctx, cname)
        _drop_slot_and_publication(ctx, src)
        prefix = change_topic(src.name, "_cdc", "")
        for topic in kafka.topics():   # the source's own _cdc.* change topics and heartbeats
            if topic.startswith(prefix) or topic == f"__debezium-heartbeat.cdc.{src.name}":
                kafka.delete_topic(topic)
    if drop_data:
        use_pinot, _ = pinot_enabled(ctx)
        if use_pinot:
            progress(f"pinot: dropping table and schema {name}")
            ctx.controller.delete_table(name)
            ctx.controller.delete_schema(name)
        kafka.delete_topic(flat_topic(name))
        kafka.delete_topic(change_topic(src.name, spec.schema_name, spec.table_name))
    ctx.registry.remove_mirror(name)
    ctx.registry.record_event(name, "removed", "drop-data" if drop_data else None)
    progress(f"mirror {name} removed")


# -- status / query ----------------------------------------------------------------------

def mirror_status(ctx: Context, name: str) -> dict[str, Any]:
    rec = get_mirror(ctx, name)
    out: dict[str, Any] = {"name": name, "state": rec.state, "source": rec.spec.source,
                           "table": rec.spec.qualified, "flat_topic": flat_topic(name)}
    try:
        st = ctx.connect.status(connector_name(rec.spec.source))
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
        from cdc.observe.metrics import slot_wal_retained
        src = get_source(ctx, rec.spec.source)
        retained = slot_wal_retained(ctx, src)
        out["slot"] = {"name": render.pg_name("cdc", src.name), "wal_retained_bytes": retained,
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


# Public names for the other service modules (ops, reconcile, metrics, verify).
source_dsn = _source_dsn
tables_of_source = _tables_of_source
render_connector_config = _render_connector
