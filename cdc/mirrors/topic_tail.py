"""The last records of a Kafka topic: where a rebuild's new generation stands
(cdc.mirrors.rebuild.step waits until its job has written the change topic's last data record
as it was when the rows were read)."""

from __future__ import annotations

import time
from typing import Any


def _consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"cdc-rebuild-{time.monotonic_ns()}",
                     "enable.auto.commit": False, "log_level": 0})


def _tail(bootstrap: str, topic: str, back: int) -> list[Any]:
    """The last `back` records of each partition of `topic` (fewer when it holds fewer)."""
    from confluent_kafka import TopicPartition
    c = _consumer(bootstrap)
    try:
        md = c.list_topics(topic, timeout=10)
        out: list[Any] = []
        for p in sorted(md.topics[topic].partitions) if topic in md.topics else []:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, max(low, high - back))])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = c.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                out.append(msg)
                if msg.offset() + 1 >= high:
                    break
        return out
    finally:
        c.close()


def last_data_offset(bootstrap: str, change_topic: str, back: int = 200) -> int:
    """Offset of the change topic's last record with a value (not a tombstone), -1 if none in
    its last `back` records."""
    return max((m.offset() for m in _tail(bootstrap, change_topic, back) if m.value() is not None), default=-1)


def written_offset(bootstrap: str, flat_topic: str, seq_base: int) -> int:
    """The highest change-topic offset a generation's job has written to its flat topic (each
    partition is written in the order the job reads the change topic: its last record is its
    highest __seq)."""
    import json
    seqs = [int(json.loads(m.value()).get("__seq", -1)) for m in _tail(bootstrap, flat_topic, 1) if m.value()]
    return max((s - seq_base for s in seqs), default=-1)
