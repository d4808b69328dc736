"""The pure parts of the parallel initial load: which path loads a mirror, the SQL that renders
flat records, Jackson's key escaping, page ranges, progress (file, line, bar) and the CLI bar.
What the SQL renders is checked against the flatten job's own output in
tests/integration/test_load_formats.py; exactness under writes in test_initial_load.py."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from cdc.cli.load_bar import LoadBar
from cdc.core.models import Column, MirrorRules, MirrorSpec, TableInfo
from cdc.mapping import flat_sql
from cdc.mapping.typemap import _VALIDATORS
from cdc.mirrors import copy_load, initial_load, load_progress
from cdc.mirrors.load_progress import LoadProgress


def col(name: str, type_name: str, base: str, pos: int, **kw: object) -> Column:
    return Column(name=name, type_name=type_name, base_type=base, position=pos, **kw)  # type: ignore[arg-type]


def orders(**kw: object) -> TableInfo:
    return TableInfo(schema_name="app", table_name="Order Lines", primary_key=["id", "sku"], columns=[
        col("id", "bigint", "int8", 1, nullable=False), col("sku", "text", "text", 2, nullable=False),
        col("tenant id", "integer", "int4", 3), col("price", "numeric(10,2)", "numeric", 4),
        col("at", "timestamp with time zone", "timestamptz", 5), col("tags", "text[]", "_text", 6, kind="array",
                                                                   element_type="text"),
        col("code", "character(3)", "bpchar", 7, precision=3), col("w", "double precision", "float8", 8),
        col("o", "oid", "oid", 9)], **kw)  # type: ignore[arg-type]


def spec(rules: MirrorRules | None = None, key: list[str] | None = None) -> MirrorSpec:
    return MirrorSpec(name="app_order_lines", schema_name="app", table_name="Order Lines", rules=rules or MirrorRules(),
                      key_columns=key)


# -- flat_sql ----------------------------------------------------------------------------------

def test_every_validator_of_the_job_has_a_postgres_twin() -> None:
    """A value the job sends to dead letters must be one the load sends there too."""
    assert set(_VALIDATORS) <= set(flat_sql.VALIDATORS)


def test_select_renders_key_value_and_bad_columns() -> None:
    q = flat_sql.select(spec(), orders(), seq=41, source_ts_ms=1700)
    assert q.startswith("SELECT '{' || '\"id\":' || COALESCE(to_json(\"__cdc_v\".\"id\")::text, 'null') || ',' || "
                        "'\"sku\":'")
    assert 'AS "tenant_id"' in q                                 # the mirror's column name (no blanks)
    assert '41::int8 AS "__seq"' in q and '1700::int8 AS "__source_ts_ms"' in q and "'r' AS \"__op\"" in q
    assert '"__cdc_r"."o"::int8' in q                              # oid: a number, not to_json's string
    assert '"__cdc_r"."code"::bpchar' in q                         # char(n) keeps its padding
    assert 'array_remove("__cdc_r"."tags", NULL)' in q
    assert "NULLIF(concat_ws(', ', CASE WHEN NOT" in q and "THEN 'at' END" in q   # the timestamptz validator
    assert 'FROM "app"."Order Lines" AS "__cdc_r"' in q
    ranged = flat_sql.ranged(q, 8, 16)
    assert ranged.endswith("WHERE \"__cdc_r\".ctid >= '(8,0)'::tid AND \"__cdc_r\".ctid < '(16,0)'::tid")
    assert flat_sql.ranged(q, 16, None).endswith("WHERE \"__cdc_r\".ctid >= '(16,0)'::tid")


def test_excluded_columns_are_not_loaded() -> None:
    q = flat_sql.select(spec(MirrorRules(exclude_columns=["w"])), orders(), seq=0, source_ts_ms=0)
    assert 'AS "w"' not in q and 'AS "price"' in q


@pytest.mark.parametrize(("rules", "key", "why"), [
    (MirrorRules(row_filter="id > 1"), None, "row filter"),
    (MirrorRules(computed_columns={"x": "id * 2"}), None, "computed"),
    (MirrorRules(mask_columns={"sku": "hash"}), None, "masked"),
    (MirrorRules(), ["w", "id"], "'w' is double precision"),
    (MirrorRules(), ["tags"], "'tags' is text[]"),
])
def test_refusal_names_why(rules: MirrorRules, key: list[str] | None, why: str) -> None:
    assert why in (flat_sql.refusal(spec(rules, key), orders()) or "")


def test_refusal_of_partitioned_tables_and_none_for_plain_ones() -> None:
    assert "partitioned" in (flat_sql.refusal(spec(), orders(partition_oids=[1, 2])) or "")
    assert flat_sql.refusal(spec(MirrorRules(exclude_columns=["w"], pinot_indexes={"sku": ["inverted"]})),
                            orders()) is None


@pytest.mark.parametrize(("pg", "jackson"), [
    (b'{"id":1}', b'{"id":1}'),
    ('{"k":"ünï €"}'.encode(), '{"k":"ünï €"}'.encode()),                      # BMP: raw UTF-8 in both
    (b'{"k":"a\\u001fb"}', b'{"k":"a\\u001Fb"}'),                             # Jackson: upper-case hex
    ('{"k":"😀"}'.encode(), b'{"k":"\\uD83D\\uDE00"}'),                      # outside the BMP: surrogates
    (b'{"k":"x\\\\u001f"}', b'{"k":"x\\\\u001f"}'),                           # an escaped backslash, then text
])
def test_jackson_key(pg: bytes, jackson: bytes) -> None:
    assert flat_sql.jackson_key(pg) == jackson


def test_a_bad_row_becomes_a_delete_and_a_dead_letter() -> None:
    value = json.dumps({"id": 1, "sku": "a", "at": 253402300800000000, "price": "1.5", "__deleted": False,
                        "__seq": 1 << 40 | 9, "__source_ts_ms": 5, "__op": "r"}).encode()
    flat, dead = flat_sql.as_dead_row(value, "at", ["id", "sku"], ["id", "sku"], 1 << 40)
    assert flat is not None and json.loads(flat) == {"id": 1, "sku": "a", "at": None, "price": None,
                                                    "__deleted": True, "__seq": 1 << 40 | 9,
                                                    "__source_ts_ms": 5, "__op": "r"}
    assert json.loads(dead) == {"mirror_key": '{"id":1,"sku":"a"}', "reason": "cannot convert column(s) at",
                                "change_offset": 9, "__seq": 1 << 40 | 9, "__op": "r", "__source_ts_ms": 5}
    flat, dead = flat_sql.as_dead_row(value, "at", ["id", "at"], ["id", "at"], 1 << 40)
    assert flat is None and json.loads(dead)["reason"] == "cannot convert column(s) at"    # a bad key: no record


# -- copy_load -----------------------------------------------------------------------------------

def test_page_ranges_cover_the_heap_and_leave_the_end_open() -> None:
    assert copy_load.page_ranges(0) == [(0, None)]
    r = copy_load.page_ranges(100_000, chunk_pages=4096, workers=2)
    assert r[0] == (0, 4096) and r[-1][1] is None and len(r) == 25
    assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
    small = copy_load.page_ranges(1000, chunk_pages=4096, workers=2)      # every reader gets several
    assert [lo for lo, _ in small] == [0, 128, 256, 384, 512, 640, 768, 896]


# -- choose ------------------------------------------------------------------------------------

class Kafka:
    def __init__(self, records: dict[str, int]) -> None:
        self.records = records

    def topics(self) -> dict[str, int]:
        return dict.fromkeys(self.records, 1)

    def end_offsets(self, name: str) -> dict[int, int]:
        return {0: self.records[name]}


def choose(requested: str | None, setting: str = "copy", rules: MirrorRules | None = None,
           records: dict[str, int] | None = None) -> initial_load.Choice:
    return initial_load.choose(requested, setting, spec(rules), orders(), Kafka(records or {}), "ch", "flat")


def test_choose() -> None:
    assert choose(None) == initial_load.Choice("copy")
    assert choose(None, setting="debezium") == initial_load.Choice("debezium")
    assert choose("debezium").mode == "debezium" and not choose("debezium").why
    assert choose("copy", setting="debezium").copy
    c = choose(None, rules=MirrorRules(row_filter="id > 1"))
    assert c.mode == "debezium" and "row filter" in c.why
    c = choose(None, records={"ch": 5, "flat": 0})
    assert c.mode == "debezium" and "ch already hold records" in c.why
    assert choose(None, records={"ch": 0, "flat": 0}).copy                  # empty topics: copy
    with pytest.raises(Exception, match="unknown initial load"):
        choose("rsync")


# -- progress ----------------------------------------------------------------------------------

def test_progress_rate_eta_line_and_bar() -> None:
    p = LoadProgress(mirror="m", state="loading", rows=250_000, estimate=1_000_000, started_at=100.0,
                     updated_at=102.5, chunks_done=2, chunks_total=8)
    assert p.rate == 100_000 and p.eta_s == pytest.approx(7.5)
    assert load_progress.line(p) == ("load m: loading 250,000 of ~1,000,000 rows (25%), 100,000 rows/s, ETA 00:07, "
                                     "2/8 chunks")
    assert load_progress.bar(p, width=8) == "[##......]  25% 250,000/~1,000,000 rows 100,000 rows/s ETA 00:07"
    p.state, p.finished_at = "done", 110.0
    assert p.eta_s is None and "done" in load_progress.line(p) and "in 10.0s" in load_progress.line(p)
    waiting = LoadProgress(mirror="m", waiting_for=2)
    assert "waiting for 2 transaction(s)" in load_progress.bar(waiting)
    assert p.as_dict()["rows_per_s"] == 25_000


def test_progress_file_round_trip_and_an_older_mirror_is_ignored(tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    p = LoadProgress(mirror="m", state="done", rows=5, started_at=time.time())
    load_progress.write(reg, p)
    assert (tmp_path / "loads" / "m.json").stat().st_mode & 0o777 == 0o600
    assert load_progress.read(reg, "m") == p
    assert load_progress.read(reg, "m", created_at="2000-01-01T00:00:00+00:00") == p
    assert load_progress.read(reg, "m", created_at="2999-01-01T00:00:00+00:00") is None   # an earlier mirror's file
    assert load_progress.read(reg, "other") is None


def test_cli_bar_redraws_on_a_terminal_and_ends_its_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    out = Tty()
    with LoadBar(out) as bar:
        assert bar.tty
        bar.update(LoadProgress(mirror="m", state="loading", rows=1, estimate=10, started_at=0, updated_at=1))
        bar.say("flink: submitting")
    text = out.getvalue()
    assert text.startswith("\r\033[K[") and "1/~10 rows" in text and text.endswith("\nflink: submitting\n")
    plain = io.StringIO()
    assert not LoadBar(plain).tty
