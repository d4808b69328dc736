"""`cdc apply` and POST /apply without servers: a tmp registry, the service functions that
would talk to Postgres, Connect, Flink and Pinot replaced by ones that only keep the registry.
Exit codes (0 / 2 pending / 1 error), idempotence, the order of the calls, REST's answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cdc.api.app import create_app
from cdc.cli.main import main
from cdc.core.errors import CdcError, ConfigError, ConflictError
from cdc.core.models import MirrorRules, MirrorSpec, Source
from cdc.core.settings import Settings
from cdc.mirrors import service, sources
from cdc.mirrors.sources import source_from_dsn, with_password

TOKEN = "apply-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEFAULT = Source(name="default", dsn="postgresql://postgres@127.0.0.1:5433/postgres", port=5433)
FILE = """\
sources:
  - name: shop
    dsn: postgresql://shop_cdc@db.example:5432/shop
    password_env: SHOP_PW
mirrors:
  - table: public.customers
    source: shop
    rules: {exclude: [notes]}
  - table: public.orders
    source: shop
    name: shop_orders
"""
EDITED = """\
sources:
  - name: shop
    dsn: postgresql://shop_cdc@db.example:5432/shop
    password_env: SHOP_PW
mirrors:
  - table: public.customers
    source: shop
    rules: {exclude: [notes, email]}
  - table: public.order_lines
    source: shop
"""


class World:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.calls: list[tuple[Any, ...]] = []
        self.fail_on: str | None = None
        self.checked: list[tuple[str | None, bool]] = []     # plan_mirror: (mirror, read-only context)
        self.refuse: dict[str, CdcError] = {}                 # mirror -> what its checks raise ...
        self.refuse_from = 1                                  # ... from its n-th check on

    def plan_mirror(self, ctx: service.Context, schema: str, table: str, *, source: str = "default",
                    name: str | None = None, key: list[str] | None = None, replica_identity_full: bool = False,
                    rules: MirrorRules | None = None) -> Any:
        """lifecycle.plan_mirror's checks (preflight, rules.check, Flink's and Pinot's)."""
        self.checked.append((name, getattr(ctx, "read_only", False)))
        if name in self.refuse and sum(n == name for n, _ in self.checked) >= self.refuse_from:
            raise self.refuse[name]
        return None

    def add_source(self, ctx: service.Context, name: str, dsn: str, password: str | None = None,
                   publication: str | None = None) -> Source:
        self.calls.append(("add_source", name, password))
        src = ctx.registry.add_source(source_from_dsn(name, with_password(dsn, password), publication=publication))
        if password:
            sources.write_password(ctx.settings, name, password)
        return src

    def remove_source(self, ctx: service.Context, name: str) -> bool:
        self.calls.append(("remove_source", name))
        return ctx.registry.remove_source(name)

    def add_mirror(self, ctx: service.Context, schema: str, table: str, *, source: str = "default",
                   name: str | None = None, key: list[str] | None = None, replica_identity_full: bool = False,
                   rules: MirrorRules | None = None, progress: Any = None) -> Any:
        self.plan_mirror(ctx, schema, table, source=source, name=name, key=key, rules=rules)  # as add_mirror does
        self.calls.append(("add_mirror", name, (rules or MirrorRules()).exclude_columns))
        if name == self.fail_on:
            raise ConflictError("connector cdc-shop failed")
        spec = MirrorSpec(name=name, source=source, schema_name=schema, table_name=table, key_columns=key,
                          rules=rules or MirrorRules())
        return ctx.registry.add_mirror(spec, state="running")

    def remove_mirror(self, ctx: service.Context, name: str, *, drop_data: bool = False, progress: Any = None) -> None:
        self.calls.append(("remove_mirror", name, drop_data))
        ctx.registry.remove_mirror(name)

    def registry(self) -> tuple[list[str], list[str]]:
        ctx = service.context(self.settings)
        try:
            return [s.name for s in ctx.registry.list_sources()], [m.name for m in ctx.registry.list_mirrors()]
        finally:
            ctx.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    settings = Settings(registry_path=tmp_path / "registry.db", state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", api_token=TOKEN, pinot_mode="none")
    w = World(settings)
    real_context = service.context
    monkeypatch.setattr(service, "context", lambda s=None: real_context(s or settings))
    for fn in ("add_source", "remove_source", "add_mirror", "remove_mirror", "plan_mirror"):
        monkeypatch.setattr(service, fn, getattr(w, fn))
    monkeypatch.setattr(service, "ensure_default_source", lambda ctx: ctx.registry.put_source(DEFAULT))
    monkeypatch.setenv("SHOP_PW", "s3cret")
    return w


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["apply", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _write(tmp_path: Path, text: str, name: str = "mirrors.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_plan_apply_plan_edit_apply(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, FILE)
    code, out, _ = _cli(capsys, "-f", f, "--plan")
    assert code == 2 and world.calls == []
    later = "  (rules checked when applied: source shop is registered first)"
    assert out.splitlines() == ["+ source shop: postgresql://shop_cdc@db.example:5432/shop",
                                "+ mirror shop_public_customers: public.customers of source shop" + later,
                                "+ mirror shop_orders: public.orders of source shop" + later,
                                "plan: 3 to create; 0 unchanged"]
    code, out, _ = _cli(capsys, "-f", f)
    assert code == 0 and out.splitlines()[-1] == "applied: 3 created; 0 unchanged"
    assert world.calls == [("add_source", "shop", "s3cret"), ("add_mirror", "shop_public_customers", ["notes"]),
                           ("add_mirror", "shop_orders", [])]
    assert world.registry() == (["default", "shop"], ["shop_orders", "shop_public_customers"])

    code, out, _ = _cli(capsys, "-f", f, "--plan")                      # idempotent
    assert (code, out) == (0, "plan: no changes; 3 unchanged\n")
    code, out, _ = _cli(capsys, "-f", f, "--plan", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["changed"] is False and doc["problems"] == [] and len(doc["actions"]) == 3

    world.calls.clear()
    g = _write(tmp_path, EDITED, "edited.yaml")
    code, out, _ = _cli(capsys, "-f", g, "--plan")
    assert code == 2 and out.splitlines() == [
        "~ mirror shop_public_customers: public.customers of source shop",
        "    how: rebuild: removed with its data, then added again (a new snapshot)",
        '    rules.exclude: ["notes"] -> ["notes", "email"]',
        "+ mirror shop_public_order_lines: public.order_lines of source shop",
        "  mirror shop_orders: public.orders of source shop  (not in file, kept (--prune removes it))",
        "plan: 1 to create, 1 to update; 1 unchanged, 1 kept (not in file)"]
    code, out, _ = _cli(capsys, "-f", g, "--plan", "--prune")
    assert code == 2 and "- mirror shop_orders: public.orders of source shop  (not in the file (--prune))" in out
    code, out, _ = _cli(capsys, "-f", g, "--prune", "--drop-data")
    assert code == 0, out
    assert world.calls == [("remove_mirror", "shop_orders", True), ("remove_mirror", "shop_public_customers", True),
                           ("add_mirror", "shop_public_customers", ["notes", "email"]),
                           ("add_mirror", "shop_public_order_lines", [])]
    assert world.registry() == (["default", "shop"], ["shop_public_customers", "shop_public_order_lines"])
    assert _cli(capsys, "-f", g, "--plan", "--prune")[:2] == (0, "plan: no changes; 3 unchanged\n")

    code, out, _ = _cli(capsys, "-f", _write(tmp_path, "mirrors: []\n", "empty.yaml"), "--prune")
    assert code == 0 and world.registry() == (["default"], [])


def test_file_errors_exit_1_naming_the_line(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "mirrors:\n  - table: t\n    rules: {mask: {email: sha}}\n")
    code, out, err = _cli(capsys, "-f", f, "--plan")
    assert code == 1 and out == ""
    assert f"error: {f}:3: mirrors[0].rules.mask.email: 'sha' is not one of ['hash', 'redact']" in err


def test_a_missing_password_variable_exits_1(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_PW")
    code, _, err = _cli(capsys, "-f", _write(tmp_path, FILE), "--plan")
    assert code == 1 and "mirrors.yaml:4: sources[0].password_env: environment variable SHOP_PW is not set" in err


def test_a_plan_with_problems_exits_1_and_applies_nothing(world: World, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _cli(capsys, "-f", _write(tmp_path, FILE))
    moved = FILE.replace("db.example:5432", "db2.example:5432")
    world.calls.clear()
    code, out, _ = _cli(capsys, "-f", _write(tmp_path, moved, "moved.yaml"), "--plan")
    assert code == 1 and "problem: " in out and "mirrors use it: shop_orders, shop_public_customers" in out
    code, _, err = _cli(capsys, "-f", _write(tmp_path, moved, "moved.yaml"))
    assert code == 1 and "cannot be applied as it is" in err and world.calls == []


def test_a_failure_stops_and_says_what_was_done(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    world.fail_on = "shop_orders"
    f = _write(tmp_path, FILE)
    code, _, err = _cli(capsys, "-f", f)
    assert code == 1
    assert "error: mirror shop_orders (create): connector cdc-shop failed" in err
    assert "2 of 3 changes were applied before this one" in err
    world.fail_on = None
    code, out, _ = _cli(capsys, "-f", f, "--plan")
    assert code == 2 and out.splitlines()[0] == "+ mirror shop_orders: public.orders of source shop"


@pytest.mark.parametrize("args", [[], ["-f", "x.yaml", "--bogus"], ["-f", "x.yaml", "--plan", "extra"]])
def test_usage_errors_exit_1_not_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """2 means "changes pending" for --plan, so a usage error must not look like it."""
    with pytest.raises(SystemExit) as exc:
        main(["apply", *args])
    assert exc.value.code == 1


# -- REST ---------------------------------------------------------------------------------------

NO_PASSWORD = FILE.replace("    password_env: SHOP_PW\n", "")


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(create_app(world.settings))


def test_rest_plan_then_apply(client: TestClient, world: World) -> None:
    r = client.post("/apply?plan=true", headers={**AUTH, "Content-Type": "application/yaml"}, content=NO_PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] is True and body["applied"] is False and body["file"] == "body"
    assert [(a["op"], a["name"], a["line"]) for a in body["actions"]] == [
        ("create", "shop", 2), ("create", "shop_public_customers", 5), ("create", "shop_orders", 8)]
    assert world.calls == []
    r = client.post("/apply", headers=AUTH, content=NO_PASSWORD)
    assert r.status_code == 200 and r.json()["applied"] is True
    assert world.registry() == (["default", "shop"], ["shop_orders", "shop_public_customers"])
    again = client.post("/apply?plan=true", headers=AUTH, json={
        "sources": [{"name": "shop", "dsn": "postgresql://shop_cdc@db.example:5432/shop"}],
        "mirrors": [{"table": "public.customers", "source": "shop", "rules": {"exclude": ["notes"]}},
                    {"table": "public.orders", "source": "shop", "name": "shop_orders"}]})
    assert again.status_code == 200 and again.json()["changed"] is False


def test_rest_file_errors_are_422_with_lines(client: TestClient) -> None:
    r = client.post("/apply?plan=true", headers=AUTH, content="mirrors:\n  - table: t\n    key: id\n")
    assert r.status_code == 422
    assert r.json()["message"] == "body:3: mirrors[0].key: 'id' is not of type 'array'"
    r = client.post("/apply", headers=AUTH, content=b"\xff\xfe")
    assert r.status_code == 422 and "UTF-8" in r.json()["message"]


def test_rest_never_reads_server_secrets_for_a_new_source(client: TestClient, world: World) -> None:
    """password_env / password_file / passfile would make the server send its own secrets to a
    host the caller chose: a problem in the plan, 409 on apply, nothing done."""
    r = client.post("/apply?plan=true", headers=AUTH, content=FILE)
    assert r.status_code == 200 and "password_env would make the server read" in r.json()["problems"][0]
    r = client.post("/apply", headers=AUTH, content=FILE.replace("password_env: SHOP_PW", "password_file: /etc/x"))
    assert r.status_code == 409 and "not over the API" in r.json()["message"]
    r = client.post("/apply", headers=AUTH, content=NO_PASSWORD.replace("/shop\n", "/shop?passfile=/root/.pgpass\n"))
    assert r.status_code == 409 and "passfile" in r.json()["message"]
    assert world.calls == []


def test_rest_accepts_a_registered_password_source_as_is(client: TestClient, world: World, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Registered on the server (cdc apply there), the same file is a no-op over the API."""
    assert _cli(capsys, "-f", _write(tmp_path, FILE))[0] == 0
    r = client.post("/apply?plan=true", headers=AUTH, content=FILE)
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["problems"] == []


def test_rest_needs_the_token(client: TestClient) -> None:
    assert client.post("/apply?plan=true", content=FILE).status_code == 401


def test_another_password_is_planned_as_a_safe_update(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path, FILE)
    assert _cli(capsys, "-f", f)[0] == 0
    monkeypatch.setenv("SHOP_PW", "rotated")
    code, out, _ = _cli(capsys, "-f", f, "--plan")
    assert code == 2 and out.splitlines()[:3] == [
        "~ source shop: postgresql://shop_cdc@db.example:5432/shop",
        "    how: rewrite the stored password (the connector reads it when its task next starts)",
        '    password: "***" -> "*** (another)"']
    assert "rotated" not in out and "s3cret" not in out


# -- a body too large, or a file that would cost too much ---------------------------------------------

def _asgi_post(app: Any, path: str, chunks: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """POST through the raw ASGI interface with a streamed body: (status, body, chunks read)."""
    import asyncio
    read, out = 0, {"status": 0, "body": b""}
    it = iter(chunks)

    async def receive() -> dict[str, Any]:
        nonlocal read
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8765"), (b"authorization", f"Bearer {TOKEN}".encode()), *headers],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8765)}
    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"], read


def test_rest_refuses_a_declared_size_over_the_limit_before_reading(world: World) -> None:
    from cdc.api.app import APPLY_MAX_BYTES
    chunks = (b"#" * 65536 for _ in range(10_000))                 # 655 MB, were it read
    status, body, read = _asgi_post(create_app(world.settings), "/apply?plan=true", chunks,
                                    [(b"content-length", str(10_000 * 65536).encode())])
    assert status == 413 and read == 0, (status, body[:200], read)
    assert f"larger than {APPLY_MAX_BYTES >> 20} MiB" in json.loads(body)["message"]


def test_rest_stops_reading_a_streamed_body_past_the_limit(world: World) -> None:
    from cdc.api.app import APPLY_MAX_BYTES
    chunks = (b"#" * 65536 for _ in range(10_000))                 # chunked: no Content-Length
    status, body, read = _asgi_post(create_app(world.settings), "/apply?plan=true", chunks, [])
    assert status == 413, (status, body[:200])
    assert read * 65536 <= APPLY_MAX_BYTES + 65536                   # not one chunk more than needed
    assert world.calls == []


def test_rest_answers_an_alias_file_with_422_not_500(client: TestClient) -> None:
    r = client.post("/apply?plan=true", headers=AUTH, content="mirrors: &a [*a]\n")
    assert r.status_code == 422 and r.json()["message"].startswith("body:1: mirrors: anchors (&a)")


# -- a rebuild is checked before the mirror is removed ---------------------------------------------------

BAD_FILTER = FILE.replace("rules: {exclude: [notes]}", "rules: {filter: \"status = 'open\"}")
REFUSED = ConfigError("rules.row_filter (--filter): cannot parse \"status = 'open\": unterminated string",
                      hint="quote strings with '...'")


def _customers(world: World) -> MirrorSpec:
    ctx = service.context(world.settings)
    try:
        rec = ctx.registry.get_mirror("shop_public_customers")
        assert rec is not None
        return rec.spec
    finally:
        ctx.close()


def test_a_rebuild_whose_new_rules_fail_is_a_plan_problem(world: World, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The plan runs `mirror plan`'s checks on every create and update: a bad rule is a problem
    (exit 1), and apply then changes nothing: the mirror and its data stay."""
    assert _cli(capsys, "-f", _write(tmp_path, FILE))[0] == 0
    world.calls.clear()
    world.checked.clear()
    world.refuse = {"shop_public_customers": REFUSED}
    bad = _write(tmp_path, BAD_FILTER, "bad.yaml")
    code, out, _ = _cli(capsys, "-f", bad, "--plan")
    assert code == 1, out
    assert f"problem: {bad}:6: mirror shop_public_customers: rules.row_filter (--filter): cannot parse" in out
    assert "(hint: quote strings with '...')" in out
    assert ("shop_public_customers", True) in world.checked          # checked read-only
    assert ("shop_orders", True) not in world.checked                # unchanged: nothing to check
    code, _, err = _cli(capsys, "-f", bad)
    assert code == 1 and "cannot be applied as it is" in err and "rules.row_filter" in err
    assert world.calls == []
    assert _customers(world).rules.exclude_columns == ["notes"]


def test_apply_checks_the_rebuild_again_and_never_removes_when_it_fails(world: World, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Checks that pass when planning but fail when applying (a column dropped meanwhile, a
    Flink that changed): the mirror is not removed."""
    assert _cli(capsys, "-f", _write(tmp_path, FILE))[0] == 0
    world.calls.clear()
    world.checked.clear()
    world.refuse, world.refuse_from = {"shop_public_customers": REFUSED}, 2     # the plan's check passes
    code, _, err = _cli(capsys, "-f", _write(tmp_path, BAD_FILTER, "bad.yaml"))
    assert code == 1
    assert "mirror shop_public_customers (update): the mirror was not removed: checking its new definition failed: " \
           "rules.row_filter (--filter): cannot parse" in err
    assert "rules.row_filter (--filter): cannot parse" in err
    assert [n for n, _ in world.checked] == ["shop_public_customers", "shop_public_customers"]
    assert not any(c[0] == "remove_mirror" for c in world.calls)
    assert _customers(world).rules.exclude_columns == ["notes"]


def test_mirrors_of_a_source_the_file_creates_are_checked_when_applied(world: World, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Their source is not registered yet, so the plan says when their checks run; add_mirror
    runs them before it creates anything."""
    code, out, _ = _cli(capsys, "-f", _write(tmp_path, FILE), "--plan")
    assert code == 2 and world.checked == []
    assert "+ mirror shop_orders: public.orders of source shop  (rules checked when applied: source shop is " \
           "registered first)" in out
    world.refuse = {"shop_orders": REFUSED}
    code, _, err = _cli(capsys, "-f", _write(tmp_path, FILE))
    assert code == 1 and "rules.row_filter" in err
    assert world.registry() == (["default", "shop"], ["shop_public_customers"])


# -- --plan changes nothing --------------------------------------------------------------------------------

def test_plan_writes_nothing(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not even the default source: the plan computes it instead of registering it."""
    text = FILE + "  - table: public.items\n"                        # a mirror of the default source
    code, out, _ = _cli(capsys, "-f", _write(tmp_path, text), "--plan")
    assert code == 2 and "+ mirror public_items: public.items of source default" in out
    assert world.registry() == ([], [])
    assert ("public_items", True) in world.checked
    secrets = world.settings.state_dir / "secrets"
    assert not secrets.exists() or list(secrets.iterdir()) == []


def test_the_default_source_of_a_read_only_context_is_computed_not_registered(tmp_path: Path) -> None:
    import dataclasses
    settings = Settings(registry_path=tmp_path / "registry.db", state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", pinot_mode="none",
                        postgres_dsn="postgresql://cdc:pw@db.example:5432/app")
    ctx = service.context(settings)
    try:
        src = sources.get_source(dataclasses.replace(ctx, read_only=True), "default")
        assert (src.name, src.host, src.database, src.has_password) == ("default", "db.example", "app", True)
        assert ctx.registry.list_sources() == [] and not (tmp_path / "state" / "secrets").exists()
        assert sources.get_source(ctx, "default") == src                       # registers it, as before
        assert [s.name for s in ctx.registry.list_sources()] == ["default"]
    finally:
        ctx.close()


# -- a password source over REST ------------------------------------------------------------------------

SOURCE_ONLY = "sources:\n  - name: shop\n    dsn: postgresql://shop_cdc@db.example:5432/shop\n"


def test_rest_keeps_the_stored_password_of_a_source_listed_without_one(client: TestClient, world: World,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Over the API the caller cannot name a password, so leaving it out means "as stored":
    never re-registered without it."""
    assert _cli(capsys, "-f", _write(tmp_path, SOURCE_ONLY + "    password_env: SHOP_PW\n"))[0] == 0
    world.calls.clear()
    r = client.post("/apply?plan=true", headers=AUTH, content=SOURCE_ONLY)
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["problems"] == [], r.text
    r = client.post("/apply", headers=AUTH, content=SOURCE_ONLY)
    assert r.status_code == 200 and r.json()["applied"] is True
    assert world.calls == [] and sources.read_password(world.settings, "shop") == "s3cret"
    ctx = service.context(world.settings)
    try:
        shop = ctx.registry.get_source("shop")
        assert shop is not None and shop.has_password
    finally:
        ctx.close()
    # another database for it: the server would send the stored password there, or drop it: refused
    moved = SOURCE_ONLY.replace("db.example", "elsewhere.example")
    r = client.post("/apply?plan=true", headers=AUTH, content=moved)
    assert r.status_code == 200 and "has a stored password" in r.json()["problems"][0], r.text
    r = client.post("/apply", headers=AUTH, content=moved)
    assert r.status_code == 409 and world.calls == []
    assert sources.read_password(world.settings, "shop") == "s3cret"
