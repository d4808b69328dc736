"""Kafka topic administration (confluent-kafka AdminClient), errors mapped to cdc.core.errors."""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cdc.core.errors import ConflictError, PermanentRemoteError, UnreachableError


class KafkaAdmin:
    def __init__(self, bootstrap: str, timeout: float = 15.0) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        self.system = f"Kafka at {bootstrap}"

    def topics(self) -> dict[str, int]:
        """topic -> partition count."""
        try:
            md = self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise UnreachableError(self.system, f"metadata request failed: {exc}",
                                   hint="is Kafka running? `cdc stack status`") from None
        return {name: len(t.partitions) for name, t in md.topics.items()}

    def describe(self, names: list[str]) -> dict[str, tuple[str, int]]:
        """topic -> (topic id, partition count) for the topics that exist. The id changes when
        a topic is deleted and created again under the same name (its offsets restart)."""
        from confluent_kafka import KafkaError, TopicCollection
        if not names:
            return {}
        try:
            futures = self._admin.describe_topics(TopicCollection(list(names)), request_timeout=self.timeout)
        except KafkaException as exc:
            raise UnreachableError(self.system, f"describe topics failed: {exc}") from None
        out: dict[str, tuple[str, int]] = {}
        for name, fut in futures.items():
            try:
                d = fut.result(self.timeout)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise UnreachableError(self.system, f"describe topic {name}: {exc}") from None
            except FutureTimeout:       # no broker answered in time (restarting, down)
                raise UnreachableError(self.system, f"describe topic {name}: no answer within {self.timeout:g}s",
                                       hint="is Kafka running? `cdc stack status`") from None
            out[name] = (str(d.topic_id), len(d.partitions))
        return out

    def create_topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> bool:
        """Create if absent. Returns True when created, False when it already existed."""
        if name in self.topics():
            return False
        fut = self._admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name]
        try:
            fut.result(self.timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                return False
            raise PermanentRemoteError(self.system, f"cannot create topic {name}: {exc}") from None
        return True

    def end_offsets(self, name: str) -> dict[int, int]:
        """partition -> offset of the next record (the high watermark)."""
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "cdc-admin-offsets", "log_level": 0,
                      "enable.auto.commit": False})
        try:
            parts = c.list_topics(name, timeout=self.timeout).topics[name].partitions
            return {p: c.get_watermark_offsets(TopicPartition(name, p), timeout=self.timeout)[1] for p in parts}
        except KafkaException as exc:
            raise UnreachableError(self.system, f"offsets of {name}: {exc}") from None
        finally:
            c.close()

    def committed(self, group: str, topic: str, partition: int = 0) -> int | None:
        """The offset `group` committed on one partition (None: nothing committed)."""
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0,
                      "enable.auto.commit": False})
        try:
            off = c.committed([TopicPartition(topic, partition)], timeout=self.timeout)[0].offset
            return int(off) if off >= 0 else None
        except KafkaException as exc:
            raise UnreachableError(self.system, f"committed offset of {group} on {topic}: {exc}") from None
        finally:
            c.close()

    def commit(self, group: str, topic: str, offset: int, partition: int = 0) -> None:
        """Commit `offset` for `group` (no member active): a job that starts from the group's
        offsets then begins exactly there."""
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0,
                      "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
        except KafkaException as exc:
            raise UnreachableError(self.system, f"cannot commit offset {offset} for {group} on {topic}: {exc}") from None
        finally:
            c.close()

    def topic_config(self, name: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            entries = self._admin.describe_configs([res])[res].result(self.timeout)
        except KafkaException as exc:
            raise PermanentRemoteError(self.system, f"cannot describe topic {name}: {exc}") from None
        return {k: str(e.value) for k, e in entries.items()}

    def ensure_topic(self, name: str, partitions: int, config: dict[str, str]) -> bool:
        """Create the topic with `config`, or bring an existing one to it. An existing topic
        with another partition count is refused: keys would sit in other partitions than the
        records already there, and per-key order (and __seq) would no longer hold.
        Returns True when the topic was created."""
        existing = self.topics()
        if name not in existing:
            return self.create_topic(name, partitions, config)
        if existing[name] != partitions:
            raise ConflictError(f"Kafka topic {name} has {existing[name]} partitions, the mirror needs {partitions}",
                                hint=f"per-key order depends on it: delete the topic ({name}) and its mirror's data "
                                     "(cdc mirror remove NAME --drop-data), then add the mirror again")
        current = self.topic_config(name)
        wrong = {k: v for k, v in config.items() if current.get(k) != v}
        if wrong:
            from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
            res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in wrong.items()])
            try:
                self._admin.incremental_alter_configs([res])[res].result(self.timeout)
            except KafkaException as exc:
                raise PermanentRemoteError(self.system, f"cannot set {wrong} on topic {name}: {exc}") from None
        return False

    def delete_topic(self, name: str) -> bool:
        if name not in self.topics():
            return False
        try:
            self._admin.delete_topics([name])[name].result(self.timeout)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" in str(exc):
                return False
            raise PermanentRemoteError(self.system, f"cannot delete topic {name}: {exc}") from None
        return True
