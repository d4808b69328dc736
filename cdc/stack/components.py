"""What each component of the local stack runs: config files, argv, health checks.

Every function here returns Service objects (cdc.stack.process) and writes nothing until
a Service's `prepare` runs, right before its first start. Configs are regenerated on each
start so a changed port or heap setting takes effect; data folders are kept.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import requests

from cdc.core import stack_secrets
from cdc.core.settings import Settings
from cdc.core.errors import StackError
from cdc.stack import versions
from cdc.stack.process import Service

LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


def http_ok(url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None) -> str | None:
    try:
        r = requests.get(url, timeout=timeout, auth=auth)
    except requests.RequestException as exc:
        return f"GET {url}: {type(exc).__name__}"
    return None if r.status_code == 200 else f"GET {url}: HTTP {r.status_code}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _java(heap: str, *extra: str) -> list[str]:
    # file.encoding: Java 17 takes the default charset from the locale (ASCII under a bare
    # systemd unit); Debezium's column hash (masking) hashes String.getBytes() of it.
    return ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=50",
            "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8", *extra]


# -- Postgres ------------------------------------------------------------------------

def postgres_bin_dir(settings: Settings) -> Path:
    if settings.postgres_bin_dir:
        return settings.postgres_bin_dir
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise StackError("postgres", "no PostgreSQL server binaries under /usr/lib/postgresql",
                         hint="install Debian's server: apt-get install -y postgresql "
                              "(or set CDC_POSTGRES_DSN to use an existing server)")
    return found[-1].parent


def _clear_stale_postmaster(data: Path, sock: Path, timeout: float = 15.0) -> None:
    """After a kill -9 of the postmaster its backends linger until they notice, and its
    postmaster.pid may name a pid that is now a zombie nobody reaps: Postgres then refuses
    to start. Wait for processes still working in the data dir, then drop the stale lock."""
    import time
    lock = data / "postmaster.pid"
    if not lock.exists():
        return
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    from cdc.stack.process import is_alive

    if is_alive(pid):
        return   # a live postmaster: leave it to Postgres to complain
    deadline = time.monotonic() + timeout
    while True:
        left = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and is_alive(int(d.name))
                and _cwd(int(d.name)) == data.resolve()]
        if not left:
            break
        if time.monotonic() > deadline:
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
            break
        time.sleep(0.2)
    lock.unlink(missing_ok=True)
    for sock_lock in sock.glob(".s.PGSQL.*.lock"):   # same stale pid in the socket lock
        sock_lock.unlink(missing_ok=True)


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def postgres_service(settings: Settings) -> Service:
    st = settings.state_dir / "postgres"
    data, sock = st / "data", st / "sock"
    bindir = postgres_bin_dir(settings)
    version = bindir.parent.name
    user = "postgres" if os.geteuid() == 0 else None
    port = settings.ports.postgres

    def prepare() -> None:
        sock.mkdir(parents=True, exist_ok=True)
        pw = None
        if user:
            try:
                pw = pwd.getpwnam(user)
            except KeyError as exc:
                raise StackError("postgres", "running as root but there is no `postgres` OS user",
                                 hint="apt-get install -y postgresql creates it") from exc
            stack_secrets.secure_state_dir(settings.state_dir, walk=False)   # 0710, group postgres
            for p in (st, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
                os.chmod(p, 0o700)
        _clear_stale_postmaster(data, sock)
        password, created = stack_secrets.ensure_postgres_password(settings.state_dir, settings.host, port)
        if not (data / "PG_VERSION").exists():
            _initdb(password)
        elif created:
            try:
                _set_password(password)    # a cluster made before passwords (trust): give it one
            except BaseException:         # the next `up` must try again, not assume it was set
                stack_secrets.postgres_passfile(settings.state_dir).unlink(missing_ok=True)
                raise
        hba = data / "pg_hba.conf"
        hba.write_text(PG_HBA)
        if user:
            os.chown(hba, pw.pw_uid, pw.pw_gid)

    def _as_user(cmd: list[str]) -> list[str]:
        return ["runuser", "-u", user, "--", *cmd] if user else cmd

    def _initdb(password: str) -> None:
        pwfile = st / ".initdb-password"     # read by initdb (as `postgres`), removed right after
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if user:
            os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        try:
            proc = subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "--auth=scram-sha-256",
                                            f"--pwfile={pwfile}", "-U", "postgres", "-E", "UTF8",
                                            "--no-instructions"]), capture_output=True, text=True)
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StackError("postgres", f"initdb failed: {proc.stderr.strip()[-400:]}")

    def _set_password(password: str) -> None:
        # single-user mode: the server is down here; the password goes through stdin, not argv
        # wal_level as the server runs it: a cluster with logical slots refuses to start below it
        proc = subprocess.run(_as_user([str(bindir / "postgres"), "--single", "-D", str(data),
                                        "-c", "wal_level=logical", "postgres"]),
                              input=f"ALTER ROLE postgres PASSWORD '{password}';\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError("postgres", f"setting the superuser password failed: {proc.stderr.strip()[-400:]}")

    def health() -> str | None:
        import psycopg
        try:
            with psycopg.connect(settings.local_postgres_dsn, connect_timeout=2) as conn:
                wal = conn.execute("show wal_level").fetchone()
        except psycopg.Error as exc:
            return f"connect: {str(exc).strip().splitlines()[0][:120]}"
        return None if wal and wal[0] == "logical" else f"wal_level is {wal}"

    argv = [str(bindir / "postgres"), "-D", str(data), "-c", f"port={port}", "-c", f"listen_addresses={settings.host}",
            "-c", f"unix_socket_directories={sock}", "-c", "wal_level=logical", "-c", "max_replication_slots=20",
            "-c", "max_wal_senders=20", "-c", "shared_buffers=256MB", "-c", "max_connections=200",
            "-c", "logging_collector=off"]
    return Service(name="postgres", component="postgres", version=version, argv=argv,
                   run_dir=settings.state_dir / "run", log_file=settings.state_dir / "logs" / "postgres.log",
                   ports={"postgres": port}, health=health, user=user, prepare=prepare,
                   stop_signal=signal.SIGINT, endpoints={"postgres_dsn": settings.local_postgres_dsn})


# Password (scram-sha-256) for every connection, local socket included: a local OS user
# without the password gets nothing (README "Security").
PG_HBA = """# written by cdc stack up on every start
local   all          all                 scram-sha-256
host    all          all  127.0.0.1/32   scram-sha-256
host    all          all  ::1/128        scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all  127.0.0.1/32   scram-sha-256
host    replication  all  ::1/128        scram-sha-256
"""


# -- Kafka ---------------------------------------------------------------------------

def kafka_service(settings: Settings, kafka_home: Path) -> Service:
    st = settings.state_dir / "kafka"
    props, logs = st / "server.properties", st / "data"
    p, pc, h = settings.ports.kafka, settings.ports.kafka_controller, settings.host
    cp = f"{kafka_home}/lib/*"

    def prepare() -> None:
        _write(st / "log4j2.properties", LOG4J2)
        _write(props, "\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.bootstrap.servers={h}:{pc}",
            f"listeners=PLAINTEXT://{h}:{p},CONTROLLER://{h}:{pc}",
            f"advertised.listeners=PLAINTEXT://{h}:{p},CONTROLLER://{h}:{pc}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={logs}", "num.partitions=1", "default.replication.factor=1",
            "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true", "log.retention.hours=168", "num.network.threads=2",
            "num.io.threads=4", "log.flush.interval.ms=1000", ""]))
        if not (logs / "meta.properties").exists():
            cid_file = st / "cluster.id"
            if not cid_file.exists():
                out = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise StackError("kafka", f"StorageTool random-uuid failed: {out.stderr[-300:]}")
                cid_file.write_text(out.stdout.strip().splitlines()[-1])
            out = subprocess.run(["java", f"-Dlog4j2.configurationFile={st / 'log4j2.properties'}", "-cp", cp,
                                  "kafka.tools.StorageTool", "format", "--standalone", "-t",
                                  cid_file.read_text().strip(), "-c", str(props)], capture_output=True, text=True)
            if out.returncode != 0:
                raise StackError("kafka", f"formatting the log dir failed: {(out.stderr or out.stdout)[-400:]}")

    def health() -> str | None:
        from confluent_kafka.admin import AdminClient

        from cdc.stack.process import port_in_use
        if not port_in_use(h, p):
            return f"nothing listens on {h}:{p}"
        try:
            md = AdminClient({"bootstrap.servers": f"{h}:{p}", "socket.timeout.ms": 2000,
                              "log_level": 0}).list_topics(timeout=2)
        except Exception as exc:
            return f"metadata request failed: {exc}"
        return None if md.brokers else "no broker in metadata"

    argv = _java(settings.kafka_heap, f"-Dlog4j2.configurationFile={st / 'log4j2.properties'}",
                 f"-Dkafka.logs.dir={settings.state_dir / 'logs'}", "-cp", cp, "kafka.Kafka", str(props))
    return Service(name="kafka", component="kafka", version=versions.KAFKA, argv=argv,
                   run_dir=settings.state_dir / "run", log_file=settings.state_dir / "logs" / "kafka.log",
                   ports={"kafka": p, "controller": pc}, health=health, prepare=prepare,
                   endpoints={"kafka_bootstrap_servers": f"{h}:{p}"})


def connect_service(settings: Settings, kafka_home: Path, debezium_home: Path) -> Service:
    st = settings.state_dir / "connect"
    props, jaas = st / "worker.properties", st / "jaas.conf"
    h, port = settings.host, settings.ports.connect

    def prepare() -> None:
        _write(st / "log4j2.properties", LOG4J2)
        (st / "secrets").mkdir(parents=True, exist_ok=True)
        os.chmod(st / "secrets", 0o700)
        stack_secrets.ensure_connect_password(settings.state_dir)
        users = str(stack_secrets.connect_users_file(settings.state_dir)).replace("\\", "\\\\").replace('"', '\\"')
        _write(jaas, "KafkaConnect {\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule "
                     f'required\n  file="{users}";\n}};\n')
        _write(props, "\n".join([
            f"bootstrap.servers={settings.kafka_bootstrap}", "group.id=cdc-connect",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable=false", "value.converter.schemas.enable=false",
            "config.storage.topic=_cdc_connect_configs", "offset.storage.topic=_cdc_connect_offsets",
            "status.storage.topic=_cdc_connect_status", "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1", "status.storage.replication.factor=1",
            "offset.storage.partitions=1", "status.storage.partitions=1",
            # Commit source offsets every second: fewer events replayed after a crash.
            "offset.flush.interval.ms=1000",
            f"listeners=http://{h}:{port}", f"rest.advertised.host.name={h}", f"rest.advertised.port={port}",
            f"plugin.path={debezium_home / 'plugins'}",
            # Secrets (database passwords) reach connector configs as ${file:...} references.
            "config.providers=file", "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider",
            "producer.linger.ms=5", "producer.compression.type=lz4",
            # HTTP basic auth on the REST API (users file in STATE_DIR/secrets): without it any
            # local user could register a connector that reads a source's password file.
            "rest.extension.classes=org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension",
            ""]))

    argv = _java(settings.connect_heap, f"-Djava.security.auth.login.config={jaas}",
                 f"-Dlog4j2.configurationFile={st / 'log4j2.properties'}",
                 f"-Dkafka.logs.dir={settings.state_dir / 'logs'}", "-cp", f"{kafka_home}/lib/*",
                 "org.apache.kafka.connect.cli.ConnectDistributed", str(props))
    url = f"http://{h}:{port}"
    return Service(name="connect", component="kafka-connect", version=f"{versions.KAFKA} + debezium {versions.DEBEZIUM}",
                   argv=argv, run_dir=settings.state_dir / "run", log_file=settings.state_dir / "logs" / "connect.log",
                   ports={"rest": port}, health=lambda: http_ok(f"{url}/connectors", auth=settings.connect_auth()), prepare=prepare,
                   depends_on=["kafka"], endpoints={"connect_url": url})


def which_java_ok() -> None:
    if not shutil.which("java"):
        raise StackError("java", "`java` is not on PATH",
                         hint="install a JDK 17: apt-get install -y openjdk-17-jdk-headless")
