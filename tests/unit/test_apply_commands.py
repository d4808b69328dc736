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
from cdc.core.errors import ConflictError
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
    for fn in ("add_source", "remove_source", "add_mirror", "remove_mirror"):
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
    assert out.splitlines() == ["+ source shop: postgresql://shop_cdc@db.example:5432/shop",
                                "+ mirror shop_public_customers: public.customers of source shop",
                                "+ mirror shop_orders: public.orders of source shop",
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
