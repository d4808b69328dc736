"""The deployment files, checked by parsing: compose/docker-compose.yml, Dockerfile,
packaging/cdc.mirrors.service and packaging/cdc.env.example.

No Docker engine runs where these tests were written, so the files are right by
construction and held there by these checks: pinned images that match
cdc/stack/versions.py, a healthcheck on every service, start order on health, the cdc
service pointed at host:port pairs the other services really listen on, logical
decoding on Postgres, the FileConfigProvider on Connect, a non-root image, a systemd unit
that restarts and stops gracefully. test_compose_stack_end_to_end runs the real stack
when `docker info` succeeds and is skipped otherwise.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

from cdc.core.settings import Ports, Settings  # noqa: E402
from cdc.stack import versions  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
UNIT_FILE = ROOT / "packaging" / "cdc.service"
ENV_EXAMPLE = ROOT / "packaging" / "cdc.env.example"


def setting_env_names() -> dict[str, set[str]]:
    """Field name -> the environment variables that set it (CDC_<NAME>, or its aliases)."""
    out: dict[str, set[str]] = {}
    for model, prefix in ((Settings, "CDC_"), (Ports, "CDC_PORT_")):
        for name, field in model.model_fields.items():
            if model is Settings and name == "ports":
                continue
            alias = field.validation_alias
            choices = getattr(alias, "choices", [alias]) if alias is not None else []
            names = {c.upper() for c in choices if isinstance(c, str) and c.upper().startswith("CDC_")}
            out[f"{prefix}{name}"] = names or {f"{prefix}{name}".upper()}
    return out


_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?err} and $$ on strings, recursively."""
    env = {} if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<required {name}>"
        return ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw_compose, {"CDC_API_TOKEN": "test-token"})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_args(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(args: list[str], name: str) -> str:
    """Value of `-name value` or `-Dname=value` in a command line."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"-D{name}="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def container_ports(svc: dict[str, Any]) -> set[int]:
    """Ports a service declares inside the network: `expose` plus the container side of `ports`."""
    out = {int(str(p).split("/")[0]) for p in svc.get("expose") or []}
    for p in svc.get("ports") or []:
        target = p.get("target") if isinstance(p, dict) else str(p).rsplit(":", 1)[-1]
        out.add(int(str(target).split("/")[0]))
    return out


def one_shot(svc: dict[str, Any]) -> bool:
    return str(svc.get("restart", "no")) == "no"


def flink_properties(svc: dict[str, Any]) -> dict[str, str]:
    out = {}
    for line in env_of(svc).get("FLINK_PROPERTIES", "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


# ------------------------------------------------------------------------- compose: images


IMAGE_RE = re.compile(r"^(?P<repo>[a-z0-9][\w./-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def image_tag(image: str) -> str:
    m = IMAGE_RE.match(image)
    assert m, f"unparseable image reference {image!r}"
    return m.group("tag") or ""


def test_every_service_has_a_pinned_image(services: dict[str, dict[str, Any]]) -> None:
    assert services
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image (a built service names its image:tag too)"
        m = IMAGE_RE.match(image)
        assert m, f"{name}: unparseable image {image!r}"
        tag, digest = m.group("tag"), m.group("digest")
        assert tag or digest, f"{name}: {image} has neither tag nor digest"
        assert tag != "latest", f"{name}: {image} uses :latest"
        if not svc.get("build"):
            # pulled images: an exact version, not a floating major/minor or a name
            assert digest or re.search(r"\d+\.\d+", tag or ""), f"{name}: {image} is not an exact version"


def test_images_match_the_pinned_versions(services: dict[str, dict[str, Any]]) -> None:
    """The containers run what cdc/stack/versions.py pins for the local stack."""
    def tag(svc: str) -> str:
        return image_tag(services[svc]["image"])

    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert tag("kafka") == versions.KAFKA
    assert services["connect"]["image"].startswith("quay.io/debezium/connect:")
    assert tag("connect") == versions.DEBEZIUM
    for name in ("flink-init", "flink-jobmanager", "flink-taskmanager", "flink-sql-gateway"):
        assert services[name]["image"].startswith("flink:"), name
        assert tag(name).startswith(f"{versions.FLINK}-") and "java17" in tag(name), name
    for name in ("pinot-controller", "pinot-broker", "pinot-server"):
        assert services[name]["image"].startswith("apachepinot/pinot:"), name
        assert tag(name) == versions.PINOT, name
    assert services["postgres"]["image"].startswith("postgres:")
    assert int(tag("postgres").split(".")[0]) in (16, 17)
    assert int(tag("postgres").split(".")[0]) >= versions.POSTGRES_MAJOR_MIN
    assert env_of(services["flink-init"])["CONNECTOR_VERSION"] == versions.FLINK_KAFKA_CONNECTOR
    assert env_of(services["flink-init"])["MAVEN_CENTRAL"] == versions.MAVEN_CENTRAL


def test_the_cdc_image_is_built_from_the_dockerfile(raw_compose: dict[str, Any]) -> None:
    build = raw_compose["services"]["cdc"]["build"]
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


# ------------------------------------------------------------------------- compose: health and order


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc, f"{name}: no healthcheck"
        assert not hc.get("disable"), f"{name}: healthcheck disabled"
        test = hc.get("test")
        assert test and test not in (["NONE"], "NONE"), f"{name}: empty healthcheck test"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test[0]}"


def test_long_running_services_restart(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if not one_shot(svc):
            assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name


def test_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    """Long-running dependencies: service_healthy. One-shot init jobs (restart "no"):
    service_completed_successfully, the only condition such a job can meet."""
    seen = 0
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must be the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if one_shot(services[dep]) else "service_healthy"
            assert (spec or {}).get("condition") == want, f"{name} -> {dep}: condition must be {want}"
            seen += 1
    assert seen >= 10
    # cdc starts last: after every long-running system it talks to
    cdc_deps = set(services["cdc"]["depends_on"])
    assert {"postgres", "kafka", "connect", "flink-jobmanager", "flink-sql-gateway", "pinot-controller",
            "pinot-broker", "pinot-server"} <= cdc_deps


def test_no_dependency_cycle(services: dict[str, dict[str, Any]]) -> None:
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        assert state.get(n) != 1, f"dependency cycle: {' -> '.join(path + (n,))}"
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in services[n].get("depends_on") or {}:
            visit(d, path + (n,))
        state[n] = 2

    for n in services:
        visit(n, ())


def test_host_ports_are_loopback_and_match_settings(services: dict[str, dict[str, Any]]) -> None:
    """Published on 127.0.0.1 only, on the ports cdc/core/settings.py uses by default (Postgres on
    the local stack's 5433; Kafka's host listener on 29092, as kafka:9092 is for the network)."""
    p = Ports()
    expected = {"postgres": (p.postgres, 5432), "connect": (p.connect, 8083), "flink-jobmanager": (p.flink_rest, 8081),
                "flink-sql-gateway": (p.sql_gateway, 8082), "pinot-controller": (p.pinot_controller, 9000),
                "pinot-broker": (p.pinot_broker, 8099), "cdc": (Settings.model_fields["api_port"].default, 8765),
                "kafka": (29092, 29092)}
    for name, svc in services.items():
        for spec in svc.get("ports") or []:
            parts = str(spec).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: {spec} is not bound to 127.0.0.1"
            if name in expected:
                assert (int(parts[1]), int(parts[2])) == expected[name], f"{name}: {spec}"
    for name in expected:
        assert services[name].get("ports"), f"{name} publishes no port"


# ------------------------------------------------------------------------- compose: wiring


def test_cdc_points_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["cdc"])
    assert env["CDC_PINOT_MODE"] == "external"

    def target(url: str, default_port: int | None = None) -> tuple[str, int]:
        parts = urlsplit(url if "://" in url else f"//{url}")
        assert parts.hostname and (parts.port or default_port), url
        return parts.hostname, parts.port or default_port  # type: ignore[return-value]

    def listens(svc: str, port: int) -> None:
        assert svc in services, f"{svc} is not a compose service"
        assert port in container_ports(services[svc]), f"{svc} does not expose {port}"

    # Postgres
    host, port = target(env["CDC_POSTGRES_DSN"], 5432)
    assert (host, port) == ("postgres", 5432)
    listens(host, port)
    assert urlsplit(env["CDC_POSTGRES_DSN"]).password == env_of(services["postgres"])["POSTGRES_PASSWORD"]

    # Pinot: the ports the processes are started with
    host, port = target(env["CDC_PINOT_CONTROLLER_URL"])
    assert host == "pinot-controller"
    listens(host, port)
    assert int(flag(command_args(services[host]), "-controllerPort")) == port
    assert flag(command_args(services[host]), "-controllerHost") == host
    host, port = target(env["CDC_PINOT_BROKER_URL"])
    assert host == "pinot-broker"
    listens(host, port)
    assert int(flag(command_args(services[host]), "-brokerPort")) == port

    # Kafka: one of the broker's advertised listeners, exactly
    host, port = target(env["CDC_KAFKA_BOOTSTRAP"])
    assert host == "kafka"
    listens(host, port)
    advertised = [a.split("://", 1)[1] for a in env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert f"{host}:{port}" in advertised

    # Kafka Connect: its REST listener and advertised name
    host, port = target(env["CDC_CONNECT_URL"])
    assert host == "connect"
    listens(host, port)
    cenv = env_of(services["connect"])
    assert urlsplit(cenv["CONNECT_LISTENERS"]).port == port
    assert (cenv["ADVERTISED_HOST_NAME"], int(cenv["ADVERTISED_PORT"])) == (host, port)

    # Flink JobManager REST and the SQL Gateway
    host, port = target(env["CDC_FLINK_URL"])
    assert host == "flink-jobmanager"
    listens(host, port)
    assert int(flink_properties(services[host])["rest.port"]) == port
    host, port = target(env["CDC_SQL_GATEWAY_URL"])
    assert host == "flink-sql-gateway"
    listens(host, port)
    assert int(flag(command_args(services[host]), "sql-gateway.endpoint.rest.port")) == port
    assert flag(command_args(services[host]), "rest.address") == "flink-jobmanager"


def test_every_system_reaches_kafka_and_flink_by_name(services: dict[str, dict[str, Any]]) -> None:
    assert env_of(services["connect"])["BOOTSTRAP_SERVERS"] == env_of(services["cdc"])["CDC_KAFKA_BOOTSTRAP"]
    for name in ("flink-jobmanager", "flink-taskmanager", "flink-sql-gateway"):
        props = flink_properties(services[name])
        assert props["jobmanager.rpc.address"] == "flink-jobmanager", name
        assert props["rest.address"] == "flink-jobmanager", name
    for name in ("pinot-controller", "pinot-broker", "pinot-server"):
        assert flag(command_args(services[name]), "-zkAddress") == "zookeeper:2181", name
        assert flag(command_args(services[name]), "-clusterName") == "cdc", name
    assert 2181 in container_ports(services["zookeeper"])


def test_cdc_env_names_known_settings(services: dict[str, dict[str, Any]]) -> None:
    known = set().union(*setting_env_names().values())
    for key in env_of(services["cdc"]):
        if key.startswith("CDC_"):
            assert key in known, f"{key} is no setting of cdc/core/settings.py"


def test_compose_env_gives_the_service_compose_addresses(services: dict[str, dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from the cdc service's environment address the compose services."""
    for key in list(os.environ):
        if key.startswith("CDC_"):
            monkeypatch.delenv(key)
    env = env_of(services["cdc"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CDC_SETTINGS_FILE", str(ROOT / "does-not-exist.env"))
    s = Settings(_env_file=None)
    assert s.pinot_mode == "external"
    assert s.controller_url == env["CDC_PINOT_CONTROLLER_URL"]
    assert s.broker_url == env["CDC_PINOT_BROKER_URL"]
    assert s.source_dsn() == env["CDC_POSTGRES_DSN"]
    assert str(s.state_dir) == "/var/lib/cdc"
    got = {"CDC_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "CDC_CONNECT_URL": s.connect_url,
           "CDC_FLINK_URL": s.flink_url, "CDC_SQL_GATEWAY_URL": s.sql_gateway_url}
    assert got == {k: env[k] for k in got}


def test_postgres_has_logical_decoding(services: dict[str, dict[str, Any]]) -> None:
    args = command_args(services["postgres"])
    settings = dict(a.split("=", 1) for a in args if "=" in a)
    assert args[0] == "postgres"
    assert settings["wal_level"] == "logical"
    assert int(settings["max_replication_slots"]) >= 4
    assert int(settings["max_wal_senders"]) >= 4


def test_connect_has_the_file_config_provider_and_shared_secrets(services: dict[str, dict[str, Any]]) -> None:
    cenv = env_of(services["connect"])
    providers = [p.strip() for p in cenv["CONNECT_CONFIG_PROVIDERS"].split(",")]
    assert "file" in providers
    assert cenv["CONNECT_CONFIG_PROVIDERS_FILE_CLASS"] == "org.apache.kafka.common.config.provider.FileConfigProvider"

    # The secrets volume is mounted at CDC_STATE_DIR/secrets in both containers, because
    # connector configs carry ${file:<that path>/<source>.properties:password}.
    def mounts(svc: str) -> dict[str, str]:
        out = {}
        for v in services[svc].get("volumes") or []:
            src, dst = str(v).split(":")[:2]
            out[src] = dst
        return out

    secrets_dir = f"{env_of(services['cdc'])['CDC_STATE_DIR']}/secrets"
    assert mounts("cdc")["cdc-secrets"] == secrets_dir
    assert mounts("connect")["cdc-secrets"] == secrets_dir
    # Flink writes checkpoints where the cdc service looks for restore points (cdc/mirrors/ops.py).
    flink_dir = f"{env_of(services['cdc'])['CDC_STATE_DIR']}/flink"
    assert mounts("cdc")["flink-state"] == flink_dir
    for name in ("flink-jobmanager", "flink-taskmanager", "flink-sql-gateway"):
        assert mounts(name)["flink-state"] == flink_dir, name
        assert flink_properties(services[name])["execution.checkpointing.dir"] == f"file://{flink_dir}/checkpoints"
        assert mounts(name)["flink-connectors"].startswith("/opt/flink/lib/"), name


def test_flink_connector_jar_comes_from_maven_central(raw_compose: dict[str, Any]) -> None:
    script = raw_compose["services"]["flink-init"]["command"][0]
    assert "flink-sql-connector-kafka" in script and "sha1sum -c" in script
    for name in ("flink-jobmanager", "flink-taskmanager", "flink-sql-gateway"):
        deps = raw_compose["services"][name]["depends_on"]
        assert "flink-init" in deps or "flink-jobmanager" in deps, name


def test_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for v in svc.get("volumes") or []:
            src = str(v).split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: named volume {src} is not declared"


# ------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        buf += (" " if buf else "") + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_dockerfile() -> None:
    ins = dockerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert froms
    for ref in froms:
        image = ref.split()[0]
        tag = image_tag(image)
        assert tag and tag != "latest", f"FROM {image} is not pinned"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms[-1].split()[0]), froms[-1]

    users = [a for i, a in ins if i == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]

    hcs = [a for i, a in ins if i == "HEALTHCHECK"]
    assert hcs and "/healthz" in hcs[-1] and "NONE" not in hcs[-1].split()
    exposed = {p for i, a in ins if i == "EXPOSE" for p in a.split()}
    assert "8765" in exposed and Settings.model_fields["api_port"].default == 8765

    entry = " ".join(a for i, a in ins if i in ("ENTRYPOINT", "CMD"))
    assert "cdc" in entry and "serve" in entry and "0.0.0.0" in entry
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "pip install" in runs and "[service]" in runs
    env = " ".join(a for i, a in ins if i == "ENV")
    assert "CDC_TEMPLATES_DIR=" in env


def test_image_user_can_share_secrets_with_connect() -> None:
    """The Debezium image runs as uid 1001; the secrets it reads are the cdc user's 0600 files."""
    text = DOCKERFILE.read_text()
    assert re.search(r"useradd\b[^\n]*--uid 1001", text)
    assert re.search(r"groupadd\b[^\n]*--gid 1001", text)


# ------------------------------------------------------------------------- systemd unit


def read_unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT_FILE.read_text())
    return cp


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value.strip())
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def test_systemd_unit() -> None:
    unit = read_unit()
    svc = unit["Service"]
    assert svc["Type"] in ("simple", "exec", "notify")
    assert svc["ExecStart"].split() == ["/opt/cdc/.venv/bin/cdc", "serve"]
    assert svc["EnvironmentFile"] == "/etc/cdc/cdc.env"
    assert svc["Restart"] == "on-failure"
    assert seconds(svc["RestartSec"]) > 0
    assert svc["User"] == "cdc" and svc.get("Group", "cdc") == "cdc"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert "/var/lib/cdc" in svc["ReadWritePaths"].split()
    assert svc["PrivateTmp"] == "yes"
    # state dir writable and named explicitly (a system user has no usable ~/.local/state)
    assert "CDC_STATE_DIR=/var/lib/cdc" in svc["Environment"].split()
    # graceful stop: uvicorn drain + reconciler stop, each up to CDC_STOP_TIMEOUT_S
    stop_timeout = Settings.model_fields["stop_timeout_s"].default
    assert seconds(svc["TimeoutStopSec"]) > 2 * stop_timeout
    assert svc.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_env_example_documents_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    keys = set(re.findall(r"^#?(CDC_[A-Z0-9_]+)=", text, flags=re.M))
    for field, names in setting_env_names().items():
        assert names & keys, f"{field} ({', '.join(sorted(names))}) is not documented in {ENV_EXAMPLE.name}"
    assert {"CDC_KAFKA_BOOTSTRAP", "CDC_CONNECT_URL", "CDC_FLINK_URL", "CDC_SQL_GATEWAY_URL"} <= keys
    # no real secrets: the only uncommented value lines carry no value
    for line in text.splitlines():
        if line.startswith("CDC_"):
            key, _, value = line.partition("=")
            if "TOKEN" in key or "DSN" in key or "PASSWORD" in key:
                assert value == "", f"{key} has a value in the example"


# ------------------------------------------------------------------------- optional: the real stack


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine on this machine")
def test_compose_stack_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds and starts the whole compose stack, waits for every healthcheck, then checks
    through the published ports: the cdc API is live and ready, Connect has the Debezium
    Postgres plugin of the pinned version, Flink has a TaskManager and the SQL Gateway
    answers, Pinot's controller answers."""
    import requests
    from testcontainers.compose import DockerCompose

    token = "e2e-" + os.urandom(12).hex()
    monkeypatch.setenv("CDC_API_TOKEN", token)
    stack = DockerCompose(context=str(COMPOSE_FILE.parent), compose_file_name="docker-compose.yml",
                          build=True, wait=True)
    with stack:
        assert requests.get("http://127.0.0.1:8765/healthz", timeout=5).ok
        auth = {"Authorization": f"Bearer {token}"}
        deadline, ready = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            ready = requests.get("http://127.0.0.1:8765/readyz", headers=auth, timeout=30)
            if ready.status_code == 200:
                break
            time.sleep(5)
        assert ready is not None and ready.status_code == 200, ready.text if ready is not None else "no answer"
        plugins = requests.get("http://127.0.0.1:8083/connector-plugins", timeout=10).json()
        pg = [p for p in plugins if p["class"] == "io.debezium.connector.postgresql.PostgresConnector"]
        assert pg and pg[0]["version"] == versions.DEBEZIUM
        assert requests.get("http://127.0.0.1:8081/overview", timeout=10).json()["taskmanagers"] >= 1
        assert requests.get("http://127.0.0.1:8082/v1/info", timeout=10).json()["version"] == versions.FLINK
        assert requests.get("http://127.0.0.1:9000/health", timeout=10).ok
        assert requests.get("http://127.0.0.1:8099/health", timeout=10).ok
