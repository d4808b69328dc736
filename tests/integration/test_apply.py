"""`cdc apply` against the real stack, with the shipped example (examples/mirrors.yaml).

Creates what the example expects on a fresh machine (role shop_cdc, database shop, the tables
of examples/setup.sql), applies the example through the CLI, checks that the registry holds the
file's mirrors, each running and (the rule-free ones) verified clean, that a second plan is
empty, then applies an edited file (one mirror dropped with --prune, one added, one changed)
whose plan is exactly that, rotates the source's password, and removes everything with an
empty file (--prune --drop-data). Its own registry, source, connector, database and role.
Tests run in file order and share one module fixture.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdc.clients.kafka import KafkaAdmin
from cdc.core import names
from cdc.core.settings import Settings
from cdc.declarative import file as apply_file
from cdc.mirrors import service
from syncing import wait_in_sync

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mirrors.yaml"
ROLE, DB, SOURCE = "shop_cdc", "shop", "shop"
MIRRORS = ["shop_order_lines", "shop_orders", "shop_public_customers"]   # the example's, sorted
RULE_FREE = ["shop_order_lines", "shop_orders"]


class Shop:
    def __init__(self, ctx: service.Context, tmp: Path, password: str) -> None:
        self.ctx, self.tmp, self.password = ctx, tmp, password
        self.example = tmp / "mirrors.yaml"

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CDC_REGISTRY_PATH": str(self.ctx.settings.registry_file),
               "CDC_SHOP_PASSWORD": self.password}
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=env,
                             timeout=timeout)
        print(f"$ cdc {' '.join(args)}  -> {out.returncode} in {time.monotonic() - t0:.1f}s\n{out.stdout}"
              f"{out.stderr[-3000:]}")
        return out

    def write(self, name: str, text: str) -> str:
        p = self.tmp / name
        p.write_text(text)
        return str(p)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.ctx.settings.local_postgres_dsn, autocommit=True)


def _reset(ctx: service.Context) -> None:
    """Leftovers of an aborted earlier run: connector, slot, topics, database."""
    if ctx.connect.status(names.connector_name(SOURCE)) is not None:
        ctx.connect.delete(names.connector_name(SOURCE))
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    for topic in kafka.topics():
        if topic.startswith(names.topic_prefix(SOURCE) + ".") or any(topic == names.flat_topic(m) for m in MIRRORS):
            kafka.delete_topic(topic)
    with psycopg.connect(ctx.settings.local_postgres_dsn, autocommit=True) as conn:
        for _ in range(30):
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                               (names.slot_name(SOURCE),)).fetchone()
            if row is None:
                break
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (names.slot_name(SOURCE),))
                break
            time.sleep(1)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


@pytest.fixture(scope="module")
def shop(ctx: service.Context, tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Iterator[Shop]:
    """What the example expects, made here as its comment says (role, database, setup.sql),
    and the example pointed at this stack's Postgres port."""
    s = Shop(ctx, tmp_path_factory.mktemp("apply"), secrets.token_urlsafe(18))
    _reset(ctx)
    with s.admin() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        conn.execute(sql.SQL("{} ROLE {} LOGIN REPLICATION PASSWORD {}").format(
            sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(ROLE), sql.Literal(s.password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB), sql.Identifier(ROLE)))
    port = settings.ports.postgres
    with psycopg.connect(host=settings.host, port=port, user=ROLE, dbname=DB, password=s.password,
                         autocommit=True) as conn:
        conn.execute((ROOT / "examples" / "setup.sql").read_text())
        # one more table, for the edited file to add
        conn.execute("CREATE TABLE public.refunds (id bigint PRIMARY KEY, order_id bigint NOT NULL, "
                     "amount numeric(12,2) NOT NULL)")
        conn.execute("INSERT INTO public.refunds SELECT g, g * 3, g * 1.5 FROM generate_series(1, 40) g")
    s.example.write_text(EXAMPLE.read_text().replace("127.0.0.1:5433/", f"{settings.host}:{port}/"))
    try:
        yield s
    finally:
        for m in ctx.registry.list_mirrors(source=SOURCE):      # a test that failed half-way
            service.remove_mirror(ctx, m.name, drop_data=True, progress=print)
        if ctx.registry.get_source(SOURCE) is not None:
            service.remove_source(ctx, SOURCE)
        _reset(ctx)
        with s.admin() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def _registry(ctx: service.Context) -> dict[str, object]:
    return {m.name: m.spec for m in ctx.registry.list_mirrors()}


def test_apply_creates_the_example(shop: Shop) -> None:
    plan = shop.cli("apply", "-f", str(shop.example), "--plan")
    assert plan.returncode == 2, plan.stderr
    assert [ln.split(":")[0] for ln in plan.stdout.splitlines()[:4]] == [
        "+ source shop", "+ mirror shop_public_customers", "+ mirror shop_orders", "+ mirror shop_order_lines"]
    t0 = time.monotonic()
    out = shop.cli("apply", "-f", str(shop.example))
    assert out.returncode == 0, out.stderr
    print(f"applied the example in {time.monotonic() - t0:.1f}s")
    assert shop.password not in out.stdout + out.stderr

    wanted = {d.spec.name: d.spec for d in apply_file.load(shop.example).mirrors}
    assert _registry(shop.ctx) == wanted and sorted(wanted) == MIRRORS
    src = shop.ctx.registry.get_source(SOURCE)
    assert src is not None and src.has_password and shop.password not in src.dsn
    for name in MIRRORS:
        assert service.get_mirror(shop.ctx, name).state == "running", name
        status = shop.cli("mirror", "status", name)
        assert status.returncode == 0, status.stdout
    for name in RULE_FREE:
        print(f"{name} in sync after {wait_in_sync(shop.ctx, name, timeout=180):.1f}s")
        verify = shop.cli("mirror", "verify", name)
        assert verify.returncode == 0, verify.stdout


def test_a_second_plan_changes_nothing(shop: Shop) -> None:
    plan = shop.cli("apply", "-f", str(shop.example), "--plan")
    assert plan.returncode == 0 and plan.stdout == "plan: no changes; 4 unchanged\n", plan.stdout
    plan = shop.cli("apply", "-f", str(shop.example), "--plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["changed"] is False
    again = shop.cli("apply", "-f", str(shop.example))                 # applying again is a no-op too
    assert again.returncode == 0 and again.stdout.strip() == "applied: nothing to change; 4 unchanged"
    # the same file over REST (the server reads no password for a registered source)
    from fastapi.testclient import TestClient

    from cdc.api.app import create_app
    client = TestClient(create_app(shop.ctx.settings.model_copy(update={"api_token": None})),
                        base_url="http://127.0.0.1")
    r = client.post("/apply?plan=true", content=shop.example.read_text())
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["problems"] == [], r.text


def test_an_edited_file_shows_exactly_its_diff_and_applies(shop: Shop) -> None:
    text = shop.example.read_text()
    lines_block = "\n  - table: public.order_lines\n    source: shop\n    name: shop_order_lines\n"
    assert lines_block in text
    edited = text.replace(lines_block, "\n  - table: public.refunds\n    source: shop\n")          # - one, + one
    edited = edited.replace("exclude: [notes]", "exclude: [notes, email]")                       # ~ one
    path = shop.write("edited.yaml", edited)

    plan = shop.cli("apply", "-f", path, "--plan", "--prune")
    assert plan.returncode == 2
    assert plan.stdout.splitlines() == [
        "- mirror shop_order_lines: public.order_lines of source shop  (not in the file (--prune))",
        "~ mirror shop_public_customers: public.customers of source shop",
        "    how: rebuild: removed with its data, then added again (a new snapshot)",
        '    rules.exclude: ["notes"] -> ["notes", "email"]',
        "+ mirror shop_public_refunds: public.refunds of source shop",
        "plan: 1 to create, 1 to update, 1 to remove; 2 unchanged"]
    without_prune = shop.cli("apply", "-f", path, "--plan")
    assert "  mirror shop_order_lines: public.order_lines of source shop  (not in file, kept (--prune removes it))" \
        in without_prune.stdout.splitlines()

    t0 = time.monotonic()
    out = shop.cli("apply", "-f", path, "--prune", "--drop-data")
    assert out.returncode == 0, out.stderr
    print(f"applied the edit in {time.monotonic() - t0:.1f}s")
    wanted = {d.spec.name: d.spec for d in apply_file.load(path).mirrors}
    assert _registry(shop.ctx) == wanted
    assert sorted(wanted) == ["shop_orders", "shop_public_customers", "shop_public_refunds"]
    for name in wanted:
        assert service.get_mirror(shop.ctx, name).state == "running", name
    print(f"shop_public_refunds in sync after {wait_in_sync(shop.ctx, 'shop_public_refunds', timeout=180):.1f}s")
    assert shop.cli("mirror", "verify", "shop_public_refunds").returncode == 0
    # the dropped mirror's data went with it (--drop-data)
    assert names.flat_topic("shop_order_lines") not in KafkaAdmin(shop.ctx.settings.kafka_bootstrap).topics()
    assert shop.cli("apply", "-f", path, "--plan", "--prune").returncode == 0


@pytest.mark.parametrize("bad", ['filter: "status = \'open"', "exclude: [nots]"])
def test_a_rebuild_with_bad_rules_is_a_plan_problem_and_removes_nothing(shop: Shop, bad: str) -> None:
    """The plan runs `mirror plan`'s checks (rules.check, Flink's planner) on the rebuild: a
    problem, exit 1; applying refuses and the mirror keeps running with its data."""
    edited = (shop.tmp / "edited.yaml").read_text()
    assert "exclude: [notes, email]" in edited
    path = shop.write("bad.yaml", edited.replace("exclude: [notes, email]", bad))
    before = service.get_mirror(shop.ctx, "shop_public_customers")
    plan = shop.cli("apply", "-f", path, "--plan")
    assert plan.returncode == 1, plan.stdout
    assert "~ mirror shop_public_customers" in plan.stdout
    assert "problem: " + path + ":" in plan.stdout and "mirror shop_public_customers: " in plan.stdout
    out = shop.cli("apply", "-f", path)
    assert out.returncode == 1 and "cannot be applied as it is" in out.stderr
    after = service.get_mirror(shop.ctx, "shop_public_customers")
    assert (after.spec, after.state, after.flink_job_id) == (before.spec, "running", before.flink_job_id)
    assert names.flat_topic("shop_public_customers") in KafkaAdmin(shop.ctx.settings.kafka_bootstrap).topics()


def test_a_rotated_password_is_planned_and_stored(shop: Shop) -> None:
    path = str(shop.tmp / "edited.yaml")
    new = secrets.token_urlsafe(18)
    with shop.admin() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(new)))
    shop.password = new
    plan = shop.cli("apply", "-f", path, "--plan")
    assert plan.returncode == 2 and plan.stdout.startswith("~ source shop: ") and new not in plan.stdout
    assert shop.cli("apply", "-f", path).returncode == 0
    assert shop.cli("apply", "-f", path, "--plan").returncode == 0
    with psycopg.connect(service.source_dsn(shop.ctx, service.get_source(shop.ctx, SOURCE))) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == ROLE      # the stored one is the new one


def test_an_empty_file_with_prune_removes_everything(shop: Shop) -> None:
    path = shop.write("empty.yaml", "sources: []\nmirrors: []\n")
    plan = shop.cli("apply", "-f", path, "--plan", "--prune")
    last = plan.stdout.splitlines()
    assert plan.returncode == 2 and last[-1] == "plan: 4 to remove; 0 unchanged", plan.stdout
    assert last[-2].startswith("- source shop: ") and last[-2].endswith("(not in the file (--prune))")
    out = shop.cli("apply", "-f", path, "--prune", "--drop-data")
    assert out.returncode == 0, out.stderr
    assert shop.ctx.registry.list_mirrors() == [] and shop.ctx.registry.get_source(SOURCE) is None
    assert shop.ctx.connect.status(names.connector_name(SOURCE)) is None
    with shop.admin() as conn:
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            (names.slot_name(SOURCE),)).fetchone() is None
