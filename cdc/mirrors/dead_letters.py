"""Dead letters: change events of a mirror that the flatten job could not convert.

The job writes them to the mirror's dead-letter topic (names.dead_letter_topic) instead of
failing on them (flink_sql/mirror.sql.j2): each record holds the row's key, the columns that
could not be converted and the event's change-topic offset, and the mirror gets a delete of
that key: such a row is absent from the mirror, never shown stale, and every other row keeps
flowing. The mirror is "degraded" while the topic has records newer than the last resync
(which re-reads every row: rows still bad become new dead letters). Status, metrics and the
status page report the count and the latest. Fix: correct the row in Postgres (its next change
converts) or leave the column out (--exclude), then `cdc mirror resync NAME`. The topic is
history: it is dropped only with the mirror's data.
"""

from __future__ import annotations

import json
from typing import Any

from cdc.core import names

ACK_EVENT = "dead_letters_superseded"   # reason starts with the count of records it covers

HINT = ("the row(s) named here could not be converted and are not in the mirror as they are in Postgres: "
        "correct the value in Postgres (its next change is mirrored), or remove the column from the mirror "
        "(--exclude), then `cdc mirror resync NAME`")


def summary(bootstrap: str, mirror: str, timeout: float = 10.0) -> dict[str, Any]:
    """{"count": records in the topic, "latest": the newest record (or None)}; count 0 when the
    topic does not exist (a mirror created before dead letters existed)."""
    from confluent_kafka import Consumer, TopicPartition
    topic = names.dead_letter_topic(mirror)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdc-dead-letters", "enable.auto.commit": False,
                  "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return {"count": 0, "latest": None}
        count, latest = 0, None
        for p in md.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            count += high - low
            if high > low:
                c.assign([TopicPartition(topic, p, high - 1)])
                msg = c.poll(timeout)
                if msg is not None and msg.error() is None and msg.value():
                    latest = json.loads(msg.value())
        return {"count": count, "latest": latest}
    finally:
        c.close()


def acknowledged(events: list[Any]) -> int:
    """How many dead letters the newest resync superseded (0: none), from the event log."""
    ev = next((e for e in events if e.action == ACK_EVENT), None)
    try:
        return int((ev.reason or "0").split()[0]) if ev else 0
    except ValueError:
        return 0
