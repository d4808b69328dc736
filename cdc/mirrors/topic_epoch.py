"""Change-topic incarnations: the ordering column survives a recreated change topic.

__seq is the Debezium change topic's offset above an epoch (flink_sql/mirror.sql.j2:
__seq = epoch << 40 | offset). If the change topic is deleted and created again while the
mirror keeps its rows (lost Kafka disk, a manual delete, Debezium recreating it on its next
event), offsets restart at 0, and without the epoch every new update and delete would lose
against the old rows' higher __seq in Pinot's upsert: the mirror would freeze silently.

A deployment records the Kafka topic id of the change topic its job reads (topic ids are
unique per incarnation). The reconciler compares it with the topic's id now (`observe`, and
the pure `check`); another id means a new incarnation, and `rebase` redeploys the job one
epoch up with a fresh consumer group, so it reads the new topic from its first offset and
every record it writes outranks every record of earlier epochs. Rows whose last change
happened before the recreation keep their old (correct) values; everything changed since
wins. A change topic with another partition count than one is refused (state "error"):
per-key order, and with it __seq, holds only inside one partition.
"""

from __future__ import annotations


from cdc.core import names
from cdc.mapping import render
from cdc.mirrors.context import Context
from cdc.mirrors.registry import Deployment, MirrorRecord

CHANGE_TOPIC_PARTITIONS = 1
EVENT = "change_topic_recreated"

# check() verdicts
RECORD = "record"          # no topic id recorded yet (a mirror deployed before ids were kept)
REBASE = "rebase"          # another incarnation of the change topic: next epoch
PARTITIONS = "partitions"  # wrong partition count: error state


def change_topic(rec: MirrorRecord) -> str:
    return names.change_topic(rec.spec.source, rec.spec.schema_name, rec.spec.table_name)


def observe(ctx: Context, mirrors: list[MirrorRecord]) -> dict[str, tuple[str, int] | None] | None:
    """mirror -> (topic id, partitions) of its change topic now, None when the topic does not
    exist (yet); the whole answer None when Kafka did not answer."""
    from cdc.clients.kafka import KafkaAdmin
    from cdc.core.errors import RemoteError
    topics = {m.name: change_topic(m) for m in mirrors}
    try:
        found = KafkaAdmin(ctx.settings.kafka_bootstrap, timeout=5).describe(sorted(set(topics.values())))
    except RemoteError:
        return None     # unknown, never "recreated": no decision this pass
    return {m: found.get(t) for m, t in topics.items()}


def check(dep: Deployment | None, now: tuple[str, int] | None) -> str | None:
    """What the reconciler must do about the change topic (pure)."""
    if dep is None or now is None:
        return None           # nothing deployed yet / the topic is not there (yet): Debezium recreates it
    topic_id, partitions = now
    if partitions != CHANGE_TOPIC_PARTITIONS:
        return PARTITIONS
    if dep.change_topic_id is None:
        return RECORD
    return REBASE if topic_id != dep.change_topic_id else None


def record(ctx: Context, name: str) -> tuple[str, str]:
    rec = ctx.registry.get_mirror(name)
    now = (observe(ctx, [rec]) or {}).get(name) if rec else None
    if rec is None or rec.deployment is None or now is None:
        return "noop", "mirror, deployment or change topic gone"
    if rec.deployment.change_topic_id is not None:
        return "noop", "topic id already recorded"
    ctx.registry.update_mirror(name, deployment=rec.deployment.model_copy(update={"change_topic_id": now[0]}))
    return "done", f"change topic {change_topic(rec)} id {now[0]} recorded (epoch {rec.deployment.seq_epoch})"


def refuse_partitions(ctx: Context, name: str, partitions: int) -> tuple[str, str]:
    rec = ctx.registry.get_mirror(name)
    if rec is None:
        return "noop", "mirror gone"
    topic = change_topic(rec)
    reason = (f"change topic {topic} has {partitions} partitions; the mirror needs {CHANGE_TOPIC_PARTITIONS}: "
              f"per-key order (and __seq) holds only within one partition. Fix: delete the topic and resync "
              f"(cdc mirror resync {name}), or remove the mirror with --drop-data and add it again")
    ctx.registry.update_mirror(name, state="error")
    ctx.registry.record_event(name, "error", reason)
    return "done", reason


def rebase(ctx: Context, name: str) -> tuple[str, str]:
    """Redeploy the job one epoch up on the change topic's new incarnation. Idempotent: a
    second call finds the new id recorded; a pass that died half-way is finished by the next
    (live jobs of the mirror are cancelled before the submit)."""
    from cdc.clients.kafka import KafkaAdmin
    from cdc.mirrors.schema_change import new_group_id, redeploy
    rec = ctx.registry.get_mirror(name)
    if rec is None or rec.deployment is None:
        return "noop", "mirror gone or without a deployment"
    topic = change_topic(rec)
    kafka = KafkaAdmin(ctx.settings.kafka_bootstrap)
    now = kafka.describe([topic]).get(topic)
    verdict = check(rec.deployment, now)
    if verdict == PARTITIONS and now is not None:
        return refuse_partitions(ctx, name, now[1])
    if verdict != REBASE or now is None:
        return "noop", "the job already reads this incarnation of the change topic"
    # a topic Debezium recreated got the broker's defaults: compaction and no retention limit again
    kafka.ensure_topic(topic, CHANGE_TOPIC_PARTITIONS, render.TOPIC_CONFIG)
    old = rec.deployment
    dep = old.model_copy(update={"seq_epoch": old.seq_epoch + 1, "change_topic_id": now[0],
                                 "group_id": new_group_id(name), "start_offset": 0})
    job, cancelled, _took = redeploy(ctx, rec, dep)
    detail = (f"change topic {topic} was recreated (id {old.change_topic_id} -> {now[0]}): job(s) "
              f"{', '.join(cancelled) or 'none alive'} cancelled, job {job} reads it from its first offset "
              f"in epoch {dep.seq_epoch} (consumer group {dep.group_id}), so its changes outrank the rows kept "
              f"from epoch {old.seq_epoch}")
    ctx.registry.record_event(name, EVENT, detail)
    return "done", detail

