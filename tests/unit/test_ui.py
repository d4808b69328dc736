"""The status page's history (cdc.observe.history) and its endpoints (cdc.api.ui), no servers:
a tmp registry, fake readers, FastAPI's TestClient."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cdc.api.app import create_app
from cdc.cli import serve
from cdc.core import names
from cdc.core.models import MirrorSpec, Source
from cdc.core.settings import Settings
from cdc.mirrors import service
from cdc.mirrors.snapshot import Progress
from cdc.observe.history import History, Readers, Sample, Sampler, job_group, percentile
from cdc.observe.metrics import FreshnessSample

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ui-t0ken-Secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(registry_path=tmp_path / "registry.db", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                    api_token=TOKEN, pinot_mode="none")


def _add(ctx: service.Context, table: str, source: str = "shop", state: str = "running") -> str:
    name = names.mirror_name("public", table, source)
    if ctx.registry.get_source(source) is None:
        ctx.registry.add_source(Source(name=source, dsn=f"postgresql://u@db.example:5432/{source}"))
    ctx.registry.add_mirror(MirrorSpec(name=name, source=source, schema_name="public", table_name=table), state=state)
    return name


# -- History ----------------------------------------------------------------------------------

def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([0.3], 99) == 0.3 and percentile([], 50) is None


def test_ring_is_bounded_and_rates_come_from_offset_growth() -> None:
    h = History(interval_s=10, window_s=60)
    for i in range(20):
        h.add("m", Sample(t=1000 + 10 * i, state="running", flat_offset=50 * i))
    ss = h.samples("m", now=1190)
    assert len(ss) == 7                                   # window / interval + 1, never more
    assert [s.records_per_s for s in ss] == [5.0] * 7
    assert len(h.samples("m", now=1190 + 35)) == 3         # older than the window: not shown


def test_a_counter_reset_or_a_failed_reading_gives_no_rate() -> None:
    h = History(interval_s=10)
    for t, off in [(0, 100), (10, 40), (20, None), (30, 70)]:
        h.add("m", Sample(t=t, state="running", flat_offset=off))
    assert [s.records_per_s for s in h.samples("m", now=30)] == [None, None, None, None]


def test_view_summarises_the_window() -> None:
    h = History(interval_s=10)
    for i in range(101):
        h.add("m", Sample(t=10 * i, state="running", freshness_s=None if i == 0 else float(i),
                          freshness_via="change_topic", flat_offset=100 * i, change_offset=500, job_offset=480,
                          wal_retained_bytes=4096, snapshot={"state": "done", "rows": 10}))
    v = h.view("m", now=1000)
    assert v["freshness"] == {"p50": 50.0, "p99": 99.0, "samples": 100, "last": 100.0, "via": "change_topic"}
    assert v["throughput"] == {"last": 10.0, "records": 10_000, "avg": 10.0}
    assert v["job"] == {"offset": 480, "end": 500, "lag": 20}
    assert (v["samples"], v["sampled_at"], v["wal_retained_bytes"]) == (101, 1000, 4096)
    assert v["series"]["freshness_s"][:2] == [None, 1.0] and len(v["series"]["t"]) == 101
    empty = History(10).view("nothing", now=5)
    assert empty["freshness"]["p50"] is None and empty["throughput"]["avg"] is None and empty["job"] is None


# -- Sampler ----------------------------------------------------------------------------------

class FakeReaders:
    """Readers that count their calls; `fail` names readings that raise."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail, self.probed, self.offset = fail or set(), [], 0

    def _check(self, what: str) -> None:
        if what in self.fail:
            raise RuntimeError(f"{what} is down\nsecond line")

    def readers(self) -> Readers:
        def freshness(ctx: Any, source: str, timeout: float) -> FreshnessSample:
            self._check("freshness")
            self.probed.append(source)
            return FreshnessSample(source, 0.25, "change_topic", time.time())

        def end_offsets(boot: str, topics: list[str]) -> dict[str, int]:
            self._check("kafka")
            self.offset += 30
            return {t: self.offset for t in topics if t.startswith("cdc.flat.")} | {
                t: 900 for t in topics if not t.startswith("cdc.flat.")}

        def snapshots(ctx: Any, mirrors: list[Any]) -> dict[str, Progress]:
            return {m.name: Progress(table=m.table_name, kind="incremental", state="running", rows=5, estimate=10)
                    for m in mirrors}

        return Readers(freshness=freshness, wal=lambda ctx, src: 123 if src.name == "shop" else None,
                       snapshots=snapshots, end_offsets=end_offsets,
                       committed=lambda boot, groups: {g: 850 for g in groups})


def test_a_pass_samples_every_mirror_from_its_readers(settings: Settings) -> None:
    ctx = service.context(settings)
    a, b = _add(ctx, "orders"), _add(ctx, "items", state="paused")
    c = _add(ctx, "users", source="crm", state="paused")
    fake = FakeReaders()
    clock = iter([100.0, 110.0]).__next__
    sampler = Sampler(lambda: service.context(settings), 10, readers=fake.readers(), clock=clock)
    sampler.sample_once()
    sampler.sample_once()
    assert fake.probed == ["shop", "shop"]          # crm has no running mirror: no probe row there
    last = {n: sampler.history.samples(n, now=110)[-1] for n in (a, b, c)}
    assert last[a].freshness_s == last[b].freshness_s == 0.25 and last[c].freshness_s is None
    assert last[a].state == "running" and last[b].state == "paused"
    assert last[a].records_per_s == 3.0              # 30 more records in 10 s
    assert (last[a].change_offset, last[a].job_offset) == (900, 850)
    assert last[a].wal_retained_bytes == 123 and last[c].wal_retained_bytes is None
    assert last[a].snapshot == {"state": "running", "kind": "incremental", "rows": 5, "estimate": 10, "reason": None}
    assert sampler.history.sampled_at == 110.0 and sampler.history.errors == {}
    ctx.registry.remove_mirror(c)
    sampler.clock = lambda: 120.0
    sampler.sample_once()
    assert sampler.history.samples(c, now=120) == [] and len(sampler.history.samples(a, now=120)) == 3
    ctx.close()


def test_a_failing_reading_is_none_and_named(settings: Settings) -> None:
    ctx = service.context(settings)
    a = _add(ctx, "orders")
    sampler = Sampler(lambda: service.context(settings), 10, readers=FakeReaders({"kafka", "freshness"}).readers())
    sampler.sample_once()
    s = sampler.history.samples(a, now=time.time())[-1]
    assert (s.flat_offset, s.change_offset, s.freshness_s) == (None, None, None)
    assert s.wal_retained_bytes == 123 and s.job_offset == 850 and s.snapshot is not None
    assert sampler.history.errors == {"topic offsets": "kafka is down", "freshness: shop": "freshness is down"}
    ctx.close()


def test_the_job_group_is_the_deployed_one() -> None:
    from cdc.mirrors.registry import Deployment, MirrorRecord
    from cdc.core.models import TableInfo
    spec = MirrorSpec(name="public_t", schema_name="public", table_name="t")
    rec = MirrorRecord(name="public_t", source="default", schema_name="public", table_name="t", spec=spec,
                       created_at="x", updated_at="x")
    assert job_group(rec) == names.flink_group("public_t")
    dep = Deployment(table=TableInfo(schema_name="public", table_name="t", columns=[], primary_key=[]), group_id="g-d1")
    assert job_group(rec.model_copy(update={"deployment": dep})) == "g-d1"


def test_the_thread_samples_until_stopped(settings: Settings) -> None:
    ctx = service.context(settings)
    _add(ctx, "orders")
    ctx.close()
    sampler = Sampler(lambda: service.context(settings), 0.05, readers=FakeReaders().readers())
    sampler.start()
    deadline = time.monotonic() + 5
    while len(sampler.history.samples("shop_public_orders", now=time.time())) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    sampler.stop(5)
    assert sampler._thread is not None and not sampler._thread.is_alive()
    assert len(sampler.history.samples("shop_public_orders", now=time.time())) >= 3


# -- endpoints --------------------------------------------------------------------------------

STATIC = ROOT / "cdc" / "api" / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@pytest.mark.parametrize("path,file,media", [("/ui", "index.html", "text/html"), ("/ui/", "index.html", "text/html"),
                                             ("/ui/app.js", "app.js", "text/javascript"),
                                             ("/ui/style.css", "style.css", "text/css")])
def test_the_page_files_need_no_token_and_hold_no_data(settings: Settings, path: str, file: str, media: str) -> None:
    """Served byte for byte as the package holds them (so with no data in them, whatever the
    registry holds), without a token, under a strict CSP; the data itself needs the token."""
    ctx = service.context(settings)
    _add(ctx, "orders")
    ctx.close()
    client = TestClient(create_app(settings))
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    assert r.content == (STATIC / file).read_bytes()
    assert r.headers["content-security-policy"] == CSP and r.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
    assert client.get("/ui/data").status_code == 401


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
def test_the_data_needs_the_token(settings: Settings, headers: dict[str, str]) -> None:
    r = TestClient(create_app(settings)).get("/ui/data", headers=headers)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_data_lists_every_mirror_with_its_history(settings: Settings) -> None:
    ctx = service.context(settings)
    a, b = _add(ctx, "orders"), _add(ctx, "items", state="error")
    ctx.registry.record_event(a, "created", "mirror added")
    ctx.close()
    sampler = Sampler(lambda: service.context(settings), 10, readers=FakeReaders().readers())
    now = time.time()
    sampler.clock = iter([now - 20, now - 10]).__next__
    sampler.sample_once()
    sampler.sample_once()
    d = TestClient(create_app(settings, sampler=sampler)).get("/ui/data", headers=AUTH).json()
    assert {m["name"]: m["state"] for m in d["mirrors"]} == {a: "running", b: "error"}
    m = next(m for m in d["mirrors"] if m["name"] == a)
    assert m["table"] == "public.orders" and m["source"] == "shop" and m["samples"] == 2
    assert m["freshness"]["p50"] == m["freshness"]["p99"] == 0.25
    assert m["throughput"]["last"] == 3.0 and m["wal_retained_bytes"] == 123
    assert m["job"] == {"offset": 850, "end": 900, "lag": 50}
    assert (d["sampling"], d["interval_s"], d["sampled_at"]) == (True, 10, now - 10)
    assert [(e["mirror"], e["action"]) for e in d["events"]] == [(a, "created")]


def test_without_a_sampler_the_data_has_states_and_no_figures(settings: Settings) -> None:
    ctx = service.context(settings)
    a = _add(ctx, "orders")
    ctx.close()
    d = TestClient(create_app(settings)).get("/ui/data", headers=AUTH).json()
    assert d["sampling"] is False and d["sampled_at"] is None
    got = [(m["name"], m["state"], m["samples"], m["freshness"]["p50"]) for m in d["mirrors"]]
    assert got == [(a, "running", 0, None)]


def test_without_a_token_only_loopback_hosts_get_the_page(tmp_path: Path) -> None:
    s = Settings(registry_path=tmp_path / "r.db", state_dir=tmp_path, api_token=None, pinot_mode="none")
    client = TestClient(create_app(s))
    for path in ("/ui", "/ui/app.js", "/ui/data"):
        assert client.get(path, headers={"Host": "evil.example"}).status_code == 403, path
        assert client.get(path, headers={"Host": "127.0.0.1:8765"}).status_code == 200, path


def test_the_app_starts_and_stops_the_sampler(settings: Settings) -> None:
    calls: list[str] = []

    class Fake:
        history = History(10)

        def start(self) -> None:
            calls.append("start")

        def stop(self, timeout: float) -> None:
            calls.append("stop")

    with TestClient(create_app(settings, sampler=Fake())) as client:
        assert client.get("/ui/data", headers=AUTH).json()["interval_s"] == 10
        assert calls == ["start"]
    assert calls == ["start", "stop"]


# -- packaging and the CLI ----------------------------------------------------------------------

def test_the_page_files_are_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cdc.api"]
    files = [p.relative_to(ROOT / "cdc" / "api").as_posix() for p in (ROOT / "cdc" / "api" / "static").iterdir()]
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in data) for f in files), (files, data)


def test_serve_sample_interval(settings: Settings) -> None:
    from cdc.cli.main import build_parser
    assert build_parser().parse_args(["serve"]).sample_interval == 10.0
    assert serve.make_sampler(settings, 0) is None
    sampler = serve.make_sampler(settings, 5)
    assert isinstance(sampler, Sampler) and sampler.interval_s == 5 and sampler.probe_timeout_s == 5
    for bad in ("0.5", "-1", "nan", "99999"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--sample-interval", bad])
    assert not any(t.name == "cdc-history" for t in threading.enumerate())


# -- text from the server stays text ------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>"


def test_failed_readings_are_scrubbed_like_every_api_answer(settings: Settings) -> None:
    ctx = service.context(settings)
    a = _add(ctx, "orders")
    ctx.close()
    fake = FakeReaders()

    def wal(ctx: Any, src: Any) -> int:
        raise RuntimeError('connection to "postgresql://cdc:hunter2@db.example:5432/shop" failed: password=hunter2')

    readers = fake.readers()
    readers.wal = wal
    sampler = Sampler(lambda: service.context(settings), 10, readers=readers)
    sampler.sample_once()
    assert sampler.history.samples(a, now=time.time())[-1].wal_retained_bytes is None
    (why,) = sampler.history.errors.values()
    assert "hunter2" not in why and "db.example" in why
    d = TestClient(create_app(settings, sampler=sampler)).get("/ui/data", headers=AUTH)
    assert "hunter2" not in d.text


def _hostile_data(settings: Settings) -> dict[str, Any]:
    """/ui/data with markup in an event's reason, a table name, a snapshot reason and an error."""
    ctx = service.context(settings)
    a = _add(ctx, HOSTILE)
    ctx.registry.record_event(a, "error", HOSTILE)
    ctx.close()

    def snapshots(ctx: Any, mirrors: list[Any]) -> dict[str, Progress]:
        return {m.name: Progress(table=m.table_name, kind="incremental", state="failed", reason=HOSTILE)
                for m in mirrors}

    def wal(ctx: Any, src: Any) -> int:
        raise RuntimeError(HOSTILE)

    readers = FakeReaders().readers()
    readers.snapshots, readers.wal = snapshots, wal
    sampler = Sampler(lambda: service.context(settings), 10, readers=readers)
    sampler.sample_once()
    r = TestClient(create_app(settings, sampler=sampler)).get("/ui/data", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    d = r.json()
    assert d["events"][0]["reason"] == HOSTILE and d["mirrors"][0]["table"] == f"public.{HOSTILE}"
    assert d["mirrors"][0]["snapshot"]["reason"] == HOSTILE and HOSTILE in d["errors"].values()
    return d


def test_hostile_markup_is_data_and_the_page_has_no_html_sink(settings: Settings) -> None:
    """The data answers markup as JSON strings; the page never turns a string into HTML (no
    innerHTML, outerHTML, insertAdjacentHTML, document.write, eval), and the CSP forbids
    inline script and other origins even if it did."""
    _hostile_data(settings)
    js = (STATIC / "app.js").read_text()
    code = re.sub(r"(?m)(^|\s)//.*$", "", js)                     # comments may name what the code avoids
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "DOMParser", "createContextualFragment", "srcdoc"):
        assert sink not in code, sink
    r = TestClient(create_app(settings)).get("/ui")
    assert HOSTILE not in r.text and r.headers["content-security-policy"] == CSP


NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed: the page's script is checked statically")


def _run_page(tmp_path: Path, hash: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """app.js under node with a fake DOM (tests/unit/js/run_app.js) that records what it built."""
    args = [str(NODE), str(ROOT / "tests" / "unit" / "js" / "run_app.js"), str(STATIC / "app.js"), hash]
    if data is not None:
        (tmp_path / "data.json").write_text(json.dumps(data))
        args.append(str(tmp_path / "data.json"))
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict) and "text" in node:
        return [node["text"]]
    return [t for c in (node.get("children") or []) for t in _texts(c)] if isinstance(node, dict) else []


@needs_node
def test_the_page_renders_hostile_markup_as_text(settings: Settings, tmp_path: Path) -> None:
    page = _run_page(tmp_path, "#token=" + TOKEN, _hostile_data(settings))
    assert page["error"] is None and page["used"] == [] and page["fetched"] == 1
    assert page["stored"] == {"cdc-api-token": TOKEN} and page["hash"] == ""        # out of the address bar
    assert not {"img", "script", "iframe", "object"} & set(page["created"])
    ids = page["ids"]
    assert ids["main"]["hidden"] is False
    assert HOSTILE in _texts(ids["events"]["tBodies"][0])                     # the reason, as one text
    mirrors = _texts(ids["mirrors"]["tBodies"][0])
    assert f"shop · public.{HOSTILE}" in mirrors and HOSTILE in mirrors        # the table, the snapshot reason
    assert f"slot WAL: shop: {HOSTILE}" in _texts(ids["errors"])


@needs_node
@pytest.mark.parametrize("fragment", ["#token=%", "#token=%E0%A4%A", "#x=1&token=abc%zz"])
def test_a_malformed_token_fragment_shows_the_form(tmp_path: Path, fragment: str) -> None:
    """decodeURIComponent throws on a bad escape: the page must not stay on "loading…"."""
    page = _run_page(tmp_path, fragment, None)
    assert page["error"] is None
    ids = page["ids"]
    assert ids["login"]["hidden"] is False and ids["main"]["hidden"] is True
    assert "not valid" in _texts(ids["login-message"])[0]
    assert _texts(ids["status"]) == ["not signed in"] and page["hash"] == "" and page["stored"] == {}
    assert page["fetched"] == 0


@needs_node
def test_without_a_fragment_the_page_polls(settings: Settings, tmp_path: Path) -> None:
    page = _run_page(tmp_path, "", None)                      # no token: the server answers 401
    assert page["error"] is None and page["fetched"] == 1
    assert page["ids"]["login"]["hidden"] is False
    assert _texts(page["ids"]["login-message"]) == ["This service needs its API token."]
