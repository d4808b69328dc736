"""REST API (cdc.api.app) without servers: a tmp registry, service functions monkeypatched."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cdc.observe import probes as api_probes
from cdc.mirrors import service, sources
from cdc.api.app import create_app
from cdc.core.settings import Settings
from cdc.core.errors import (CdcError, ConfigError, ConflictError, NotFoundError, PermanentRemoteError, PreflightError,
                        TransientRemoteError, UnreachableError)
from cdc.core.models import Column, MirrorSpec, Source, TableInfo

TOKEN = "t0k3n-Very-Secret-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "hunter2-Pa55word"
DSN = f"postgresql://alice:{PASSWORD}@db.example:5432/shop"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(registry_path=tmp_path / "registry.db", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                    api_token=TOKEN, pinot_mode="none")


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=True)


@pytest.fixture
def registry(settings: Settings):
    ctx = service.context(settings)
    yield ctx.registry
    ctx.close()


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every documented (method, path), with path parameters filled in."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [(m.upper(), p.replace("{name}", "x")) for p, ops in paths.items() for m in ops]


# -- authentication -------------------------------------------------------------------------

def test_healthz_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}])
def test_every_endpoint_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    routes = _routes(client) + [("GET", "/openapi.json"), ("GET", "/no/such/path"), ("POST", "/mirrors")]
    assert len(routes) >= 18
    for method, path in routes:
        if path == "/healthz":
            continue
        r = client.request(method, path, headers=headers, content=b"{not json")
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in r.text


def test_non_ascii_authorization_header_is_401(client: TestClient) -> None:
    r = client.get("/mirrors", headers={"Authorization": "Bearer caf\xe9".encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 401


def test_without_token_only_loopback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(registry_path=tmp_path / "r.db", state_dir=tmp_path, api_token=None, api_host="0.0.0.0")
    with pytest.raises(ConfigError, match="without an API token"):
        create_app(s)
    with caplog.at_level(logging.WARNING, logger="cdc.api"):
        c = TestClient(create_app(s.model_copy(update={"api_host": "127.0.0.1"})))
    assert "CDC_API_TOKEN is not set" in caplog.text
    assert c.get("/mirrors", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert c.get("/mirrors", headers={"Host": "localhost"}).status_code == 200
    assert c.get("/mirrors", headers={"Host": "[::1]:8765"}).status_code == 200
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 still sends its own name
    for foreign in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "10.0.0.5"):
        r = c.post("/sources", headers={"Host": foreign}, json={"name": "x", "dsn": "postgresql://a@evil/db"})
        assert r.status_code == 403 and "loopback" in r.json()["message"], (foreign, r.text)


def test_token_is_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.get("/mirrors", headers={"Authorization": "Bearer nope"})
        client.get("/mirrors/nope", headers=AUTH)
    assert TOKEN not in caplog.text


# -- schema ---------------------------------------------------------------------------------

def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=AUTH).json()
    got = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert got == {
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
        ("GET", "/sources"), ("POST", "/sources"), ("GET", "/sources/{name}"), ("DELETE", "/sources/{name}"),
        ("GET", "/mirrors"), ("POST", "/mirrors"), ("POST", "/mirrors/plan"), ("GET", "/mirrors/{name}"),
        ("DELETE", "/mirrors/{name}"), ("GET", "/mirrors/{name}/status"), ("POST", "/mirrors/{name}/pause"),
        ("POST", "/mirrors/{name}/resume"), ("POST", "/mirrors/{name}/resync"), ("GET", "/mirrors/{name}/verify"),
        ("GET", "/events"), ("GET", "/ui/data"), ("POST", "/apply")}
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"] or "201" in op["responses"], path
            if path != "/healthz":
                assert "401" in op["responses"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {}, {"table": ""}, {"table": "a\x00b"}, {"table": "a.b.c"}, {"table": "x" * 128, "schema": "public"},
    {"table": "t", "schema": ""}, {"table": "t", "source": "Bad-Source"}, {"table": "t", "name": "Bad Name"},
    {"table": "t", "name": "x" * 241}, {"table": "t", "key": []}, {"table": "t", "key": [""]},
    {"table": "t", "unknown": 1}, {"table": 5}, b'{"table": "\\ud800"}', {"table": "t", "key": "id"},
    {"table": "a" * 127, "schema": "b" * 127, "source": "s" * 41}, [], "text"])
@pytest.mark.parametrize("path", ["/mirrors", "/mirrors/plan"])
def test_malformed_mirror_bodies_are_422(client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str,
                                         body: Any) -> None:
    monkeypatch.setattr(service, "add_mirror", _fail)
    monkeypatch.setattr(service, "plan_mirror", _fail)
    if isinstance(body, bytes):     # a lone surrogate: valid JSON, not encodable as UTF-8
        r = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_invalid_json_is_422(client: TestClient) -> None:
    r = client.post("/mirrors", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422


@pytest.mark.parametrize("method,path", [
    ("GET", "/mirrors/Bad-Name"), ("GET", "/mirrors/a%00b"), ("GET", "/sources/" + "s" * 42),
    ("GET", "/events?limit=0"), ("GET", "/events?limit=1001"), ("GET", "/events?limit=x"),
    ("GET", "/events?mirror=A"), ("DELETE", "/mirrors/x?drop_data=maybe"), ("GET", "/mirrors?source=X")])
def test_malformed_params_are_422(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path, headers=AUTH).status_code == 422


# -- error mapping --------------------------------------------------------------------------

def _fail(*a: Any, **k: Any) -> Any:
    raise AssertionError("must not be called")


@pytest.mark.parametrize("exc,status", [
    (ConfigError("bad setting", hint="fix it"), 422), (PreflightError("wal_level", hint="set logical"), 422),
    (NotFoundError("no such table"), 404), (ConflictError("different spec"), 409),
    (UnreachableError("Kafka Connect at http://127.0.0.1:8083", "cannot connect"), 503),
    (TransientRemoteError("Flink SQL gateway", "timeout"), 503),
    (PermanentRemoteError("Pinot controller", "rejected", status=400), 502), (CdcError("odd"), 400)])
def test_errors_map_to_status(client: TestClient, monkeypatch: pytest.MonkeyPatch, exc: CdcError,
                              status: int) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise exc
    monkeypatch.setattr(service, "add_mirror", boom)
    r = client.post("/mirrors", json={"table": "public.orders"}, headers=AUTH)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == type(exc).__name__ and body["message"] == exc.message and body["hint"] == exc.hint
    if status == 503:
        assert body["system"] == exc.system and exc.system.split()[0] in body["message"]


def test_unknown_mirror_is_404(client: TestClient) -> None:
    for method, path in [("GET", "/mirrors/nope"), ("GET", "/mirrors/nope/status"), ("DELETE", "/mirrors/nope"),
                         ("GET", "/sources/nope"), ("DELETE", "/sources/nope")]:
        r = client.request(method, path, headers=AUTH)
        assert r.status_code == 404, (path, r.text)
        assert "nope" in r.json()["message"]


def _spec(name: str = "public_orders", **kw: Any) -> MirrorSpec:
    return MirrorSpec(name=name, source="default", schema_name="public", table_name="orders", **kw)


def test_create_mirror_201_then_200_then_409(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def add(ctx: service.Context, schema: str, table: str, *, source: str, name: str, key: Any, replica_identity_full: bool, progress: Any,
            rules: Any = None, load: Any = None):
        spec = MirrorSpec(name=name, source=source, schema_name=schema, table_name=table, key_columns=key)
        existing = ctx.registry.get_mirror(name)
        if existing is not None and existing.spec != spec:
            raise ConflictError(f"mirror {name} exists with a different spec")
        service.ensure_default_source(ctx)
        return ctx.registry.add_mirror(spec, state="running")
    monkeypatch.setattr(service, "add_mirror", add)
    r = client.post("/mirrors", json={"table": "public.orders"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["name"] == "public_orders"
    r = client.post("/mirrors", json={"schema": "public", "table": "orders"}, headers=AUTH)
    assert r.status_code == 200
    r = client.post("/mirrors", json={"table": "orders", "key": ["id"]}, headers=AUTH)
    assert r.status_code == 409
    assert [m["name"] for m in client.get("/mirrors", headers=AUTH).json()] == ["public_orders"]
    assert client.get("/mirrors/public_orders", headers=AUTH).json()["spec"]["table_name"] == "orders"


def test_source_in_use_is_409(client: TestClient, registry: Any) -> None:
    registry.add_source(Source(name="shop", dsn="postgresql://u@h/db"))
    registry.add_mirror(MirrorSpec(name="m", source="shop", schema_name="s", table_name="t"))
    r = client.delete("/sources/shop", headers=AUTH)
    assert r.status_code == 409 and "m" in r.json()["message"]


def test_readyz_names_what_is_down(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(ctx: service.Context) -> None:
        raise UnreachableError("Kafka Connect at http://127.0.0.1:8083", "cannot connect")
    probes = {name: (lambda ctx: None) for name in api_probes.PROBES}
    monkeypatch.setattr(api_probes, "PROBES", {**probes, "kafka_connect": down,
                                               "pinot_controller": api_probes.probe_pinot})
    r = client.get("/readyz", headers=AUTH)
    assert r.status_code == 503
    body = r.json()
    assert body["down"] == ["kafka_connect"] and "Kafka Connect" in body["checks"]["kafka_connect"]["detail"]
    assert body["checks"]["pinot_controller"]["status"] == "disabled"
    monkeypatch.setattr(api_probes, "PROBES", probes)
    assert client.get("/readyz", headers=AUTH).json() == {"ready": True, "down": [], "checks": {
        n: {"status": "up", "detail": None} for n in probes}}


def test_readyz_real_probes_against_closed_ports(tmp_path: Path) -> None:
    s = Settings(registry_path=tmp_path / "r.db", state_dir=tmp_path, api_token=TOKEN, pinot_mode="none",
                 host="127.0.0.1", ports={"postgres": 1, "connect": 1, "flink_rest": 1, "sql_gateway": 1, "kafka": 1})
    monkey = {k: v for k, v in api_probes.PROBES.items() if k != "kafka"}  # librdkafka waits the full timeout
    orig = api_probes.PROBES
    api_probes.PROBES = monkey
    try:
        r = TestClient(create_app(s)).get("/readyz", headers=AUTH)
    finally:
        api_probes.PROBES = orig
    assert r.status_code == 503
    assert r.json()["down"] == ["flink_jobmanager", "flink_sql_gateway", "kafka_connect", "postgres"]


# -- secrets ----------------------------------------------------------------------------------

@contextmanager
def _fake_pg(dsn: str, **kw: Any):
    class Conn:
        def execute(self, *a: Any) -> None:
            return None
    yield Conn()


def test_dsn_password_never_echoed(client: TestClient, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setattr(sources.catalog, "connect", _fake_pg)
    r = client.post("/sources", json={"name": "shop", "dsn": DSN}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["has_password"] and PASSWORD not in r.text and r.json()["dsn"] == "postgresql://alice@db.example:5432/shop"
    assert client.post("/sources", json={"name": "shop", "dsn": DSN}, headers=AUTH).status_code == 200
    assert (settings.state_dir / "secrets" / "shop.properties").exists()
    for path in ("/sources", "/sources/shop", "/events", "/metrics"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 200 and PASSWORD not in r.text
    assert client.delete("/sources/shop", headers=AUTH).json() == {"name": "shop", "removed": True, "drop_data": None}
    assert not (settings.state_dir / "secrets" / "shop.properties").exists()


@pytest.mark.parametrize("body", [{"name": "Bad", "dsn": DSN}, {"dsn": DSN}, {"name": "x", "dsn": DSN + "\x00"},
                                  {"name": "x", "dsn": DSN, "extra": DSN}, {"name": "x", "dsn": [DSN]},
                                  {"name": "x", "dsn": DSN.replace(":5432", ":port")}])
def test_dsn_password_not_in_validation_errors(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                               body: dict[str, Any]) -> None:
    monkeypatch.setattr(sources.catalog, "connect", _fake_pg)
    r = client.post("/sources", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert PASSWORD not in r.text


def test_dsn_password_not_in_remote_errors(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(dsn: str, **kw: Any) -> Any:
        raise PreflightError(f"Postgres at {dsn} refused: password {PASSWORD} wrong", hint=f"not {PASSWORD}")
    monkeypatch.setattr(sources.catalog, "connect", refuse)
    r = client.post("/sources", json={"name": "shop", "dsn": DSN}, headers=AUTH)
    assert r.status_code == 422 and PASSWORD not in r.text


# -- other endpoints --------------------------------------------------------------------------

def test_plan_returns_the_artifacts(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    info = TableInfo(schema_name="public", table_name="orders", primary_key=["id"],
                     columns=[Column(name="id", type_name="integer", base_type="int4")])
    plan = service.MirrorPlan(spec=_spec(), table=info, source=Source(name="default", dsn="postgresql://h/db"),
                              connector={"name": "cdc-default"}, flink_sql=["INSERT INTO x SELECT 1"],
                              pinot_schema={"schemaName": "public_orders"}, pinot_table={"tableName": "x"},
                              change_topic="cdc.default.public.orders", flat_topic="cdc.flat.public_orders")
    monkeypatch.setattr(service, "plan_mirror", lambda ctx, schema, table, **kw: plan)
    r = client.post("/mirrors/plan", json={"table": "orders"}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["flink_sql"] == ["INSERT INTO x SELECT 1"] and body["connector_name"] == "cdc-default"
    assert body["table_info"]["primary_key"] == ["id"]


def test_ops_call_their_modules_or_501(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import types
    fake = types.ModuleType("cdc.mirrors.ops")
    fake.pause_mirror = lambda ctx, name: f"paused {name}"  # type: ignore[attr-defined]
    fake.resume_mirror = lambda ctx, name: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.mirrors.ops", fake)
    assert client.post("/mirrors/m/pause", headers=AUTH).json() == {"name": "m", "action": "pause",
                                                                    "result": "paused m"}
    assert client.post("/mirrors/m/resume", headers=AUTH).status_code == 200
    r = client.post("/mirrors/m/resync", headers=AUTH)          # the module lacks resync_mirror
    assert r.status_code == 501 and "resync_mirror" in r.json()["message"]
    monkeypatch.setitem(sys.modules, "cdc.mirrors.verify", None)        # the module is missing
    r = client.get("/mirrors/m/verify", headers=AUTH)
    assert r.status_code == 501 and "cdc.mirrors.verify" in r.json()["message"]


def test_events_filter_and_limit(client: TestClient, registry: Any) -> None:
    for i in range(3):
        registry.record_event("a", f"act{i}")
    registry.record_event("b", "other")
    r = client.get("/events?mirror=a&limit=2", headers=AUTH)
    assert [e["action"] for e in r.json()] == ["act2", "act1"]


def test_metrics_uses_cdc_metrics_or_falls_back(client: TestClient, registry: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import types
    monkeypatch.setitem(sys.modules, "cdc.observe.metrics", None)
    registry.add_source(Source(name="s", dsn="postgresql://u@h/db"))
    registry.add_mirror(MirrorSpec(name="m", source="s", schema_name="s", table_name="t"), state="running")
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and 'cdc_mirrors{state="running"} 1' in r.text
    assert r.headers["content-type"].startswith("text/plain")
    fake = types.ModuleType("cdc.observe.metrics")
    fake.render_metrics = lambda ctx: "cdc_custom 7\n"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.observe.metrics", fake)
    assert client.get("/metrics", headers=AUTH).text == "cdc_custom 7\n"


def test_remove_mirror_passes_drop_data(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(service, "remove_mirror",
                        lambda ctx, name, *, drop_data, progress: seen.update(name=name, drop_data=drop_data))
    r = client.delete("/mirrors/m?drop_data=true", headers=AUTH)
    assert r.status_code == 200 and seen == {"name": "m", "drop_data": True}


def test_reconciler_runs_for_the_app_lifetime(settings: Settings) -> None:
    calls: list[Any] = []

    class FakeReconciler:
        def start(self) -> None:
            calls.append("start")

        def stop(self, timeout: float) -> None:
            calls.append(("stop", timeout))
    with TestClient(create_app(settings, reconciler=FakeReconciler())) as c:
        assert calls == ["start"]
        c.get("/healthz")
    assert calls == ["start", ("stop", settings.stop_timeout_s)]


@pytest.mark.parametrize("dsn", ["postgresql://postgres@203.0.113.1/db?passfile=/var/lib/cdc/secrets/postgres.pgpass",
                                 "host=203.0.113.1 user=postgres passfile=/root/.pgpass",
                                 "postgresql://postgres@203.0.113.1/db?service=prod"])
def test_source_dsn_naming_server_files_is_refused(client: TestClient, dsn: str) -> None:
    """A DSN that makes the server read its own password file (and send the password to a
    host the caller chose) is a 422 naming the setting; nothing is registered."""
    r = client.post("/sources", headers=AUTH, json={"name": "evil", "dsn": dsn})
    assert r.status_code == 422 and "on the server" in r.text, r.text
    assert "evil" not in [s["name"] for s in client.get("/sources", headers=AUTH).json()]
