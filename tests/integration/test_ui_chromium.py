"""The status page (/ui) in headless Chromium against `cdc serve` on the real local stack.

Everything here is this test's own: the database ui_test (source ui, so connector cdc-ui and
slot cdc_ui), a tmp registry, two mirrors (removed with their data at the end), and a `cdc
serve` subprocess with a token on a free port. The page is loaded as a user would open it,
/ui#token=..., and what it shows is compared with the API's JSON fetched around the same
moment. A missing chromium fails the test (CI installs it, .ci/run); it never skips.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from cdc.core import names
from cdc.core.settings import Settings
from cdc.mirrors import service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DB, SOURCE = "ui_test", "ui"
TABLES = ("ui_orders", "ui_customers")
MIRRORS = [names.mirror_name("public", t, SOURCE) for t in TABLES]
INTERVAL_S = 3


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remove_leftovers(ctx: service.Context, dsn: str) -> None:
    """A crashed earlier run (its registry was a tmp file) may have left the connector, jobs
    or slot named after source `ui`; only those are touched."""
    if ctx.connect.get_config(names.connector_name(SOURCE)):
        ctx.connect.delete(names.connector_name(SOURCE))
    for job in ctx.jobmanager.jobs():
        info = ctx.jobmanager.job(job.id) or {}
        if any(str(info.get("name", "")).startswith(names.flink_pipeline(m)) for m in MIRRORS) \
                and job.state == "RUNNING":
            ctx.jobmanager.cancel(job.id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while (row := conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                   (names.slot_name(SOURCE),)).fetchone()) is not None and time.monotonic() < deadline:
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (names.slot_name(SOURCE),))
            time.sleep(0.5)


@pytest.fixture(scope="module")
def mirrors(stack: dict, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """Two mirrors on the database ui_test, in a registry of their own."""
    with psycopg.connect(settings.local_postgres_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DB}")
    dsn = settings.local_dsn(DB)
    with psycopg.connect(dsn, autocommit=True) as pg:
        for t in TABLES:
            pg.execute(f"DROP TABLE IF EXISTS public.{t}")
            pg.execute(f"CREATE TABLE public.{t} (id int PRIMARY KEY, name text NOT NULL, qty int)")
            pg.execute(f"INSERT INTO public.{t} SELECT g, 'row ' || g, g % 7 FROM generate_series(1, 500) g")
    registry = tmp_path_factory.mktemp("ui-registry") / "registry.db"
    ctx = service.context(settings.model_copy(update={"registry_path": registry}))
    _remove_leftovers(ctx, dsn)
    try:
        service.add_source(ctx, SOURCE, dsn)
        for t in TABLES:
            service.add_mirror(ctx, "public", t, source=SOURCE, progress=lambda _m: None)
        yield registry, dsn
    finally:
        for m in ctx.registry.list_mirrors():             # never leak connectors, jobs or slots
            try:
                service.remove_mirror(ctx, m.name, drop_data=True, progress=lambda _m: None)
            except Exception as exc:  # pragma: no cover - best effort cleanup
                print(f"cleanup of {m.name} failed: {exc}")
        service.remove_source(ctx, SOURCE)
        ctx.close()


@pytest.fixture(scope="module")
def server(mirrors: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`cdc serve` as a subprocess: token, free port, the stack's CDC_STATE_DIR, the tmp registry."""
    registry, _ = mirrors
    token, port = secrets.token_urlsafe(24), _free_port()
    log = tmp_path_factory.mktemp("ui-serve") / "serve.log"
    env = {**os.environ, "CDC_REGISTRY_PATH": str(registry), "CDC_API_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cdc.cli", "serve", "--port", str(port),
                                 "--sample-interval", str(INTERVAL_S)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"cdc serve exited {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
        assert token not in log.read_text(), "the token reached the log"


# -- the browser ------------------------------------------------------------------------------

def chromium(url: str, *args: str, budget_ms: int = 8000) -> str:
    """Load url in a fresh headless Chromium (own profile), let the page's timers run for
    budget_ms of virtual time, return stdout (the DOM with --dump-dom)."""
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"cdc-ui-chromium-{secrets.token_hex(4)}"
    try:
        out = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--hide-scrollbars", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                              *args, url], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Page(HTMLParser):
    """What the page shows: per mirror row (tr[data-mirror]) its cells' attributes and text,
    the event ids, and whether the token form is visible."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: list[int] = []
        self.login_visible = False
        self._row: str | None = None
        self._cell: dict[str, Any] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("id") == "login":
            self.login_visible = "hidden" not in a
        if tag == "tr" and "data-mirror" in a:
            self._row = str(a["data-mirror"])
            self.rows[self._row] = {"row": {**a, "text": ""}}
        if tag == "tr" and "data-event" in a:
            self.events.append(int(str(a["data-event"])))
        if tag == "td" and self._row and "data-field" in a:
            self._cell = {**a, "text": ""}
            self.rows[self._row][str(a["data-field"])] = self._cell
        if tag == "br" and self._cell is not None:
            self._cell["text"] += "\n"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def _num(attr: str | None) -> float | None:
    return None if attr is None else float(attr)


def _shown(text: str, value: float | None, fmt: str) -> bool:
    """The page rounds with JS toFixed; equal up to the last shown digit's half-unit."""
    if value is None:
        return text.strip().startswith("–")
    digits = int(fmt.split(".")[1][0])
    return abs(float(text.split()[0].rstrip("/s")) - value) <= 0.5 * 10 ** -digits + 1e-12


def _get(url: str, token: str, path: str) -> Any:
    r = requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def _write_changes(dsn: str, stop: threading.Event) -> None:
    """Inserts and updates in both tables until stopped, so the charts have something to draw."""
    i = 0
    with psycopg.connect(dsn, autocommit=True) as pg:
        while not stop.is_set():
            i += 1
            pg.execute(f"INSERT INTO public.{TABLES[0]} SELECT g, 'new ' || g, 0 "
                       f"FROM generate_series({1000 + 40 * i}, {1039 + 40 * i}) g")
            pg.execute(f"UPDATE public.{TABLES[1]} SET qty = qty + 1 WHERE id %% 25 = %s", (i % 25,))
            stop.wait(1)


def _wait_for_history(url: str, token: str, timeout: float = 120) -> dict[str, Any]:
    deadline, d = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        d = _get(url, token, "/ui/data")
        ms = {m["name"]: m for m in d["mirrors"]}
        if set(ms) == set(MIRRORS) and all(m["samples"] >= 5 and m["freshness"]["p50"] is not None
                                           and (m["throughput"]["records"] or 0) > 0 for m in ms.values()):
            return d
        time.sleep(1)
    raise AssertionError(f"no history after {timeout}s: {d}")


def _check_page(url: str, token: str) -> None:
    """Every mirror the API lists is on the page with the figures of /ui/data; then a screenshot."""
    _wait_for_history(url, token)
    # Compare against one sampling pass: right after a pass, fetch the API, load the page,
    # fetch again; if a pass happened in between, try again.
    for _attempt in range(6):
        before, deadline = _get(url, token, "/ui/data")["sampled_at"], time.monotonic() + 60
        while (data := _get(url, token, "/ui/data"))["sampled_at"] == before:
            assert time.monotonic() < deadline, "the sampler stopped sampling"
            time.sleep(0.2)
        listed = _get(url, token, "/mirrors")
        page = Page(chromium(f"{url}/ui#token={token}", "--dump-dom", budget_ms=3000))
        after = _get(url, token, "/ui/data")
        if after["sampled_at"] == data["sampled_at"] and after["events"] == data["events"]:
            break
    else:
        raise AssertionError("a sampling pass happened during every page load")

    assert not page.login_visible
    assert set(page.rows) == {m["name"] for m in listed} == {m["name"] for m in data["mirrors"]} == set(MIRRORS)
    states = {m["name"]: m["state"] for m in listed}
    for m in data["mirrors"]:
        row = page.rows[m["name"]]
        assert row["state"]["data-value"] == row["state"]["text"] == states[m["name"]] == m["state"] == "running"
        assert _num(row["row"]["data-sampled-at"]) == m["sampled_at"] == data["sampled_at"]
        f, tp = m["freshness"], m["throughput"]
        assert (_num(row["freshness"]["data-p50"]), _num(row["freshness"]["data-p99"])) == (f["p50"], f["p99"])
        p50_text, p99_text = row["freshness"]["text"].split("\n")[0].split(" / ")
        assert _shown(p50_text, f["p50"], ".2f") and _shown(p99_text, f["p99"], ".2f"), row["freshness"]
        assert f"{f['samples']} probes, via {f['via']}" in row["freshness"]["text"]
        assert _num(row["throughput"]["data-last"]) == tp["last"] and _num(row["throughput"]["data-avg"]) == tp["avg"]
        assert _num(row["throughput"]["data-records"]) == tp["records"] > 0
        assert _shown(row["throughput"]["text"], tp["last"], ".1f"), row["throughput"]
        assert _num(row["wal"].get("data-value")) == m["wal_retained_bytes"] is not None
        assert row["progress"].get("data-snapshot-state") == (m["snapshot"] or {}).get("state")
        assert _num(row["progress"].get("data-job-lag")) == (m["job"] or {}).get("lag")
    assert page.events == [e["id"] for e in data["events"]] and page.events

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ui.png"
    shot.unlink(missing_ok=True)
    chromium(f"{url}/ui#token={token}", f"--screenshot={shot}", "--window-size=1440,760", budget_ms=3000)
    assert shot.stat().st_size > 10_000
    (ROOT / "docs").mkdir(exist_ok=True)
    shutil.copyfile(shot, ROOT / "docs" / "ui.png")


# -- tests --------------------------------------------------------------------------------------

def test_the_page_shows_what_the_api_says(server: tuple[str, str], mirrors: tuple[Path, str]) -> None:
    url, token = server
    stop = threading.Event()
    writer = threading.Thread(target=_write_changes, args=(mirrors[1], stop), daemon=True)
    writer.start()
    try:
        _check_page(url, token)
    finally:
        stop.set()
        writer.join(30)


def test_a_wrong_token_shows_no_mirrors(server: tuple[str, str]) -> None:
    url, token = server
    page = Page(chromium(f"{url}/ui#token=not-{token}", "--dump-dom", budget_ms=2000))
    assert page.login_visible and page.rows == {} and page.events == []
    wrong = requests.get(f"{url}/ui/data", headers={"Authorization": f"Bearer not-{token}"}, timeout=10)
    assert wrong.status_code == 401
