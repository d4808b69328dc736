"""The change topic's epoch in __seq (cdc.mirrors.topic_epoch, flink_sql/mirror.sql.j2)."""

from __future__ import annotations

import pytest

from cdc.core.errors import ConfigError
from cdc.core.models import Column, MirrorSpec, TableInfo
from cdc.mapping import render
from cdc.mirrors import topic_epoch
from cdc.mirrors.registry import Deployment

TABLE = TableInfo(schema_name="public", table_name="t", primary_key=["id"],
                  columns=[Column(name="id", type_name="integer", base_type="int4", nullable=False, position=1)])
SPEC = MirrorSpec(name="public_t", schema_name="public", table_name="t")


def _dep(**kw) -> Deployment:
    return Deployment(table=TABLE, group_id="g", **kw)


@pytest.mark.parametrize("dep, now, verdict", [
    (None, ("A", 1), None),                                        # nothing deployed
    (_dep(change_topic_id="A"), None, None),                       # topic gone: Debezium recreates it
    (_dep(change_topic_id="A"), ("A", 1), None),                   # same incarnation
    (_dep(change_topic_id="A"), ("B", 1), topic_epoch.REBASE),     # recreated
    (_dep(), ("A", 1), topic_epoch.RECORD),                        # deployed before ids were kept
    (_dep(change_topic_id="A"), ("A", 3), topic_epoch.PARTITIONS),
    (_dep(change_topic_id="A"), ("B", 2), topic_epoch.PARTITIONS),
])
def test_check(dep, now, verdict) -> None:
    assert topic_epoch.check(dep, now) == verdict


def _seq_expr(epoch: int) -> str:
    stmts = render.render_flink_sql(SPEC, TABLE, kafka_bootstrap="k:9092", change_topic="c", flat_topic="f",
                                    group_id="g", seq_epoch=epoch)
    insert = stmts[-1]
    return next(line.strip() for line in insert.splitlines() if "AS `__seq`" in line)


def test_seq_is_epoch_above_the_offset() -> None:
    assert _seq_expr(0) == "CAST(0 AS BIGINT) + `change_offset` AS `__seq`,"
    assert _seq_expr(3) == f"CAST({3 << 40} AS BIGINT) + `change_offset` AS `__seq`,"
    # every record of epoch n+1 outranks every record of epoch n (offsets stay below 2^40)
    assert render.seq_base(1) > render.seq_base(0) + (1 << 40) - 1
    assert render.seq_base(render.MAX_SEQ_EPOCH) + (1 << 40) - 1 <= (1 << 63) - 1    # fits a BIGINT
    with pytest.raises(ConfigError):
        render.seq_base(render.MAX_SEQ_EPOCH + 1)


def test_old_deployments_read_as_epoch_zero() -> None:
    old = Deployment.model_validate_json(_dep().model_dump_json(exclude={"seq_epoch", "change_topic_id"}))
    assert old.seq_epoch == 0 and old.change_topic_id is None
