"""Typed settings, read from CDC_* environment variables and an optional settings file.

The settings file is a dotenv-style file (KEY=VALUE lines with CDC_ prefixes) named by
CDC_SETTINGS_FILE, or ./cdc.env when that exists. Environment variables win over the file.
Secrets are SecretStr so they never print in reprs, logs or `cdc stack status --json`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _default_cache_dir() -> Path:
    # As root we run like a system daemon: /var/cache and /var/lib are traversable by the
    # unprivileged `postgres` user that must own the private Postgres cluster, /root is not.
    if _is_root():
        return Path("/var/cache/cdc")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdc"


def _default_state_dir() -> Path:
    if _is_root():
        return Path("/var/lib/cdc")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cdc"


class Ports(BaseSettings):
    """Every port the local stack binds, all on 127.0.0.1."""

    model_config = SettingsConfigDict(env_prefix="CDC_PORT_", extra="ignore")

    postgres: int = 5433
    kafka: int = 9092
    kafka_controller: int = 9093
    connect: int = 8083
    flink_rest: int = 8081
    sql_gateway: int = 8082
    zookeeper: int = 2181
    pinot_controller: int = 9000
    pinot_broker: int = 8099
    pinot_server_netty: int = 8098
    pinot_server_admin: int = 8097
    pinot_server_grpc: int = 8090
    pinot_broker_mse: int = 8421
    flink_jm_rpc: int = 6123
    flink_blob: int = 6124
    # 0 = any free port (Flink's own default). A TaskManager restarted after a crash must not
    # come back on its predecessor's address: the JobManager's Pekko still holds a quarantined
    # association to it and the new TaskManager never registers (seen after kill -9 + restart).
    flink_tm_rpc: int = 0
    flink_tm_data: int = 6121
    flink_metrics: str = "6130-6139"   # JM and TM metric query services take one each
    pinot_server_mse: int = 8442


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CDC_",
        env_file=os.environ.get("CDC_SETTINGS_FILE", "cdc.env"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    cache_dir: Path = Field(default_factory=_default_cache_dir,
                            description="Downloaded artifacts (jars, Flink runtime); safe to share.")
    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="Data, logs and pid files of the local stack.")
    registry_path: Path | None = Field(default=None, description="SQLite registry; default STATE_DIR/registry.db")
    host: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)

    # Where the control service finds each system when it is not the local stack (e.g. the
    # compose network: CDC_KAFKA_BOOTSTRAP=kafka:9092). Default: host + ports above.
    kafka_bootstrap_override: str | None = Field(
        None, validation_alias=AliasChoices("CDC_KAFKA_BOOTSTRAP", "kafka_bootstrap_override"))
    connect_url_override: str | None = Field(
        None, validation_alias=AliasChoices("CDC_CONNECT_URL", "connect_url_override"))
    flink_url_override: str | None = Field(
        None, validation_alias=AliasChoices("CDC_FLINK_URL", "flink_url_override"))
    sql_gateway_url_override: str | None = Field(
        None, validation_alias=AliasChoices("CDC_SQL_GATEWAY_URL", "sql_gateway_url_override"))
    # Kafka Connect REST credentials (HTTP basic auth). The local stack generates its own
    # (STATE_DIR/secrets/connect-users.properties); these are for an external Connect.
    connect_user: str = "cdc"
    connect_password: SecretStr | None = None

    # An existing Postgres to use as the default source instead of the private cluster.
    postgres_dsn: SecretStr | None = None
    postgres_bin_dir: Path | None = Field(default=None, description="Directory of initdb/postgres; auto-detected")

    # Pinot: "local" runs ZooKeeper + one Pinot JVM from CDC_PINOT_HOME (an unpacked Apache
    # Pinot binary distribution) or from Maven Central; "external" uses the URLs below;
    # "auto" is local when it can be provisioned, else reports Pinot as unavailable.
    pinot_mode: Literal["auto", "local", "external", "none"] = "auto"
    pinot_home: Path | None = None
    pinot_controller_url: str | None = None
    pinot_broker_url: str | None = None

    # Heaps, sized for a 2-core / 24 GiB machine that runs everything at once.
    kafka_heap: str = "768m"
    connect_heap: str = "768m"
    zookeeper_heap: str = "256m"
    pinot_heap: str = "2g"
    flink_jobmanager_memory: str = "1024m"
    # One slot per mirror's job: with 8 slots, 50 mirrors left 43 jobs without a slot
    # (bench). 64 slots in a 3 GB TaskManager; more mirrors need more TaskManager memory.
    flink_taskmanager_memory: str = "3072m"
    flink_taskmanager_slots: int = 64

    flat_topic_partitions: int = 2
    wal_retained_warn_bytes: int = Field(1 << 30, description="warn when a source's slot retains more WAL")

    start_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0

    # A daemon killed with -9 cannot release its lease; the next one waits this long.
    reconcile_lease_ttl_s: float = 20.0
    # A mirror "creating"/"removing" whose process showed no sign of life (heartbeat) for this
    # long is taken over by the reconciler: resumed or rolled back (cdc/mirrors/rollback.py).
    stuck_after_s: float = 120.0

    # The Debezium task's producer batch.size, as a connector client override: 256 KiB took
    # 12-20% less CPU per change than the producer's 16 KiB at saturation (bench/throughput.py).
    # 0 leaves it out, for a Connect cluster whose connector.client.config.override.policy
    # forbids overrides (the default policy, All, allows them).
    connect_producer_batch_bytes: int = Field(262_144, ge=0)

    # How `mirror add` loads a table's existing rows (cdc/mirrors/initial_load.py): "copy" reads
    # the table with parallel COPY readers straight into the flat topic; "debezium" has the
    # connector snapshot it (also used when copy cannot serve a mirror, which add says).
    initial_load: Literal["copy", "debezium"] = "copy"
    load_workers: int = Field(2, ge=1, le=64, description="parallel COPY readers of one load")
    load_chunk_pages: int = Field(4096, ge=1, description="heap pages per COPY range (8 KiB each)")
    load_wait_timeout_s: float = Field(3600.0, description="longest wait for transactions open when the table "
                                                           "joined the publication")
    load_report_s: float = Field(5.0, description="seconds between plain progress lines of a load")

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    api_host: str = "127.0.0.1"
    api_port: int = 8765
    api_token: SecretStr | None = None

    @property
    def registry_file(self) -> Path:
        return self.registry_path or self.state_dir / "registry.db"

    @property
    def controller_url(self) -> str:
        return self.pinot_controller_url or f"http://{self.host}:{self.ports.pinot_controller}"

    @property
    def broker_url(self) -> str:
        return self.pinot_broker_url or f"http://{self.host}:{self.ports.pinot_broker}"

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_override or f"{self.host}:{self.ports.kafka}"

    @property
    def connect_url(self) -> str:
        return self.connect_url_override or f"http://{self.host}:{self.ports.connect}"

    @property
    def flink_url(self) -> str:
        return self.flink_url_override or f"http://{self.host}:{self.ports.flink_rest}"

    @property
    def sql_gateway_url(self) -> str:
        return self.sql_gateway_url_override or f"http://{self.host}:{self.ports.sql_gateway}"

    @property
    def local_postgres_dsn(self) -> str:
        return self.local_dsn("postgres")

    def local_dsn(self, dbname: str) -> str:
        """A database of the stack's own Postgres. The password stays in the stack's libpq
        password file; the DSN only names the file (cdc.core.stack_secrets)."""
        from psycopg.conninfo import make_conninfo

        from cdc.core.stack_secrets import postgres_passfile
        return make_conninfo(host=self.host, port=self.ports.postgres, user="postgres", dbname=dbname,
                             passfile=str(postgres_passfile(self.state_dir)))

    def connect_auth(self) -> tuple[str, str] | None:
        """Basic-auth credentials for Kafka Connect's REST API: CDC_CONNECT_PASSWORD for an
        external Connect, else the local stack's generated ones (None when it has none)."""
        if self.connect_password is not None:
            return self.connect_user, self.connect_password.get_secret_value()
        if self.connect_url_override:
            return None
        from cdc.core.stack_secrets import CONNECT_USER, connect_password
        pw = connect_password(self.state_dir)
        return (CONNECT_USER, pw) if pw else None

    def source_dsn(self) -> str:
        """DSN of the default source: the configured one, or the private cluster."""
        return self.postgres_dsn.get_secret_value() if self.postgres_dsn else self.local_postgres_dsn


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
