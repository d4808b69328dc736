"""Run Apache Flink 2.2.x (session cluster + SQL Gateway) from the PyPI wheels.

Stdlib only, no side effects on import. Verified with Flink 2.2.1, Java 17, Kafka connector
5.0.0-2.2 (see /work/notes/flink.md for the measured timings and the REST call sequence).

Layout facts this module relies on:
- The runtime is split over TWO wheels: ``apache_flink_libraries-X-py2.py3-none-any.whl``
  carries ``pyflink/lib``, ``pyflink/opt``, ``pyflink/plugins`` and
  ``pyflink/bin/bash-java-utils.jar``; the platform wheel ``apache_flink-X-cp3*.whl`` carries
  the shell scripts ``pyflink/bin/*.sh`` and ``pyflink/conf``. Both are needed for a
  FLINK_HOME. ``unpack_flink`` therefore takes either wheel (or both / their directory) and
  looks for the sibling wheel next to the one given.
- ``bin/sql-gateway.sh`` looks for exactly one ``opt/flink-sql-gateway*.jar`` (and
  ``opt/flink-python*.jar``); connectors go to ``lib/`` (every jar in lib/ is on the
  classpath of JM, TM and gateway).
- ``jobmanager.sh|taskmanager.sh|sql-gateway.sh start-foreground`` -> ``exec flink-console.sh``
  -> ``exec java``: the pid of ``subprocess.Popen`` becomes the JVM's pid.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

FLINK_VERSION = "2.2.1"

# Top-level directories of pyflink/ inside the wheels that make up a FLINK_HOME.
_HOME_DIRS = ("bin", "conf", "lib", "opt", "plugins", "log", "licenses", "examples")
_MARKER = ".cdc-unpacked.json"

DEFAULT_PORTS: dict[str, int | str] = {
    "rest": 28081,  # JobManager REST + web UI
    "gateway": 28082,  # SQL Gateway REST endpoint
    "jm_rpc": 28100,  # jobmanager.rpc.port (Pekko)
    "blob": 28101,  # blob.server.port
    "tm_rpc": "28110-28119",  # taskmanager.rpc.port (range allowed)
    "tm_data": 28120,  # taskmanager.data.port (netty shuffle)
    "metrics_query": "28130-28139",  # metrics.internal.query-service.port (JM and TM each take one)
}

# What the stock conf/config.yaml of 2.2.1 carries (Java 17 module access for Flink/Kryo/Pekko).
STOCK_JAVA_OPTS_ALL = (
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED "
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED "
    "--add-opens=java.base/java.lang=ALL-UNNAMED "
    "--add-opens=java.base/java.net=ALL-UNNAMED "
    "--add-opens=java.base/java.io=ALL-UNNAMED "
    "--add-opens=java.base/java.nio=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
    "--add-opens=java.base/java.text=ALL-UNNAMED "
    "--add-opens=java.base/java.time=ALL-UNNAMED "
    "--add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"
)


# --------------------------------------------------------------------------- unpacking


def _find_wheels(wheel: Path | Sequence[Path]) -> list[Path]:
    """Resolve the argument to the set of Flink wheels to extract (libraries + platform)."""
    if isinstance(wheel, (str, os.PathLike)):
        given = [Path(wheel)]
    else:
        given = [Path(w) for w in wheel]
    found: dict[str, Path] = {}
    for w in given:
        candidates = sorted(w.glob("*.whl")) if w.is_dir() else [w, *sorted(w.parent.glob("*.whl"))]
        for c in candidates:
            name = c.name.lower()
            if name.startswith("apache_flink_libraries-"):
                found.setdefault("libraries", c)
            elif name.startswith("apache_flink-"):
                found.setdefault("platform", c)
    missing = {"libraries", "platform"} - found.keys()
    if missing:
        raise FileNotFoundError(
            f"need both apache_flink_libraries-*.whl and apache_flink-*.whl; missing {sorted(missing)}"
            f" (looked at {[str(g) for g in given]} and their directories)"
        )
    return [found["libraries"], found["platform"]]


def _wheel_id(p: Path) -> dict[str, Any]:
    st = p.stat()
    return {"name": p.name, "size": st.st_size, "mtime": int(st.st_mtime)}


def _jar_target(home: Path, jar: Path) -> Path:
    # sql-gateway.sh: findSqlGatewayJar -> find "$FLINK_OPT_DIR" -name 'flink-sql-gateway*.jar'
    if jar.name.startswith("flink-sql-gateway") and not jar.name.startswith("flink-sql-gateway-api"):
        return home / "opt" / jar.name
    return home / "lib" / jar.name


def unpack_flink(wheel: Path | Sequence[Path], jars: Iterable[Path], dest: Path) -> Path:
    """Make ``dest`` a FLINK_HOME from the PyPI wheels plus extra jars; return ``dest``.

    ``wheel``: the apache-flink-libraries wheel, the apache-flink platform wheel, both, or a
    directory holding both (the sibling wheel is looked up in the same directory).
    ``jars``: flink-sql-gateway-X.jar goes to opt/ (sql-gateway.sh looks there), every other
    jar (connectors, formats) goes to lib/.
    Idempotent: the wheels are only re-extracted when their name/size/mtime change; jars are
    copied when missing or different in size; stale flink-sql-gateway*.jar versions are removed
    (the script refuses to start with more than one).
    """
    dest = Path(dest)
    wheels = _find_wheels(wheel)
    ident = [_wheel_id(w) for w in wheels]
    marker = dest / _MARKER
    current = None
    if marker.is_file():
        try:
            current = json.loads(marker.read_text())
        except ValueError:
            current = None
    if current != ident:
        tmp = dest.with_name(dest.name + ".unpacking")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for w in wheels:
            with zipfile.ZipFile(w) as zf:
                for info in zf.infolist():
                    parts = info.filename.split("/")
                    if len(parts) < 3 or parts[0] != "pyflink" or parts[1] not in _HOME_DIRS:
                        continue
                    rel = "/".join(parts[1:])
                    target = tmp / rel
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        target.chmod(mode | stat.S_IRUSR | stat.S_IWUSR)
        for d in ("log", "opt", "lib", "plugins", "conf"):
            (tmp / d).mkdir(exist_ok=True)
        for script in (tmp / "bin").iterdir():
            if script.suffix != ".jar" and script.is_file():
                script.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        marker.write_text(json.dumps(ident))
    for jar in jars:
        jar = Path(jar)
        target = _jar_target(dest, jar)
        if target.parent.name == "opt":
            for old in target.parent.glob("flink-sql-gateway*.jar"):
                if old.name != target.name and not old.name.startswith("flink-sql-gateway-api"):
                    old.unlink()
        if not target.is_file() or target.stat().st_size != jar.stat().st_size:
            shutil.copy2(jar, target)
    return dest


# --------------------------------------------------------------------------- configuration


def _y(value: Any) -> str:
    """A YAML scalar: bools/ints bare, everything else as a JSON (= YAML double-quoted) string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def flink_config_dict(
    home: Path,
    state_dir: Path,
    ports: Mapping[str, int | str] | None = None,
    jm_memory: str = "1024m",
    tm_memory: str = "1728m",
    slots: int = 8,
) -> dict[str, Any]:
    """The flat key -> value map behind :func:`flink_config`."""
    p = {**DEFAULT_PORTS, **(ports or {})}
    state = Path(state_dir).resolve()
    host = "127.0.0.1"
    return {
        # --- JVM / scripts
        "env.java.opts.all": STOCK_JAVA_OPTS_ALL,
        "env.log.dir": str(state / "log"),
        "env.pid.dir": str(state / "pid"),
        # The console log goes to stdout, which the stack's supervisor writes to the
        # process's log file (STATE_DIR/logs/<process>.log).
        "env.stdout-err.redirect-to-file": False,
        # --- JobManager
        "jobmanager.rpc.address": host,
        "jobmanager.rpc.port": int(p["jm_rpc"]),
        "jobmanager.bind-host": host,
        "jobmanager.memory.process.size": jm_memory,
        "jobmanager.execution.failover-strategy": "region",
        "blob.server.port": str(p["blob"]),
        # --- TaskManager
        "taskmanager.host": host,
        "taskmanager.bind-host": host,
        "taskmanager.rpc.port": str(p["tm_rpc"]),
        "taskmanager.data.port": int(p["tm_data"]),
        "taskmanager.memory.process.size": tm_memory,
        "taskmanager.numberOfTaskSlots": int(slots),
        "metrics.internal.query-service.port": str(p["metrics_query"]),
        "parallelism.default": 1,
        # --- REST (JobManager) -- also what the SQL Gateway uses to submit jobs
        "rest.address": host,
        "rest.bind-address": host,
        "rest.port": int(p["rest"]),
        "rest.bind-port": str(p["rest"]),
        "web.upload.dir": str(state / "web-upload"),
        "web.submit.enable": False,
        "web.cancel.enable": True,
        "io.tmp.dirs": str(state / "tmp"),
        "blob.storage.directory": str(state / "blob"),
        # --- state, checkpoints, recovery
        "state.backend.type": "hashmap",
        "execution.checkpointing.dir": (state / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (state / "savepoints").as_uri(),
        "execution.checkpointing.interval": "10 s",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.min-pause": "2 s",
        "execution.checkpointing.timeout": "5 min",
        "execution.checkpointing.num-retained": 3,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        # Notice a dead TaskManager in ~15 s instead of the default 50 s: a killed TM
        # otherwise stalls every mirror that long (measured: ~35 s without fresh data).
        "heartbeat.interval": "3 s",
        "heartbeat.timeout": "15 s",
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "1 min",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        # --- SQL Gateway
        "execution.target": "remote",
        "sql-gateway.endpoint.type": "rest",
        "sql-gateway.endpoint.rest.address": host,
        "sql-gateway.endpoint.rest.bind-address": host,
        "sql-gateway.endpoint.rest.port": int(p["gateway"]),
        "sql-gateway.endpoint.rest.bind-port": str(p["gateway"]),
        # sessions die after idle-timeout without a heartbeat (POST .../heartbeat)
        "sql-gateway.session.idle-timeout": "30 min",
        "sql-gateway.session.check-interval": "1 min",
    }


def flink_config(
    home: Path,
    state_dir: Path,
    ports: Mapping[str, int | str] | None = None,
    jm_memory: str = "1024m",
    tm_memory: str = "1728m",
    slots: int = 8,
) -> str:
    """Complete config.yaml text (flat keys, which Flink 2.x's YAML parser accepts)."""
    cfg = flink_config_dict(home, state_dir, ports, jm_memory, tm_memory, slots)
    lines = [f"# generated by cdc.stack.flink_recipe for Flink {FLINK_VERSION} at {Path(home)}"]
    lines += [f"{k}: {_y(v)}" for k, v in cfg.items()]
    return "\n".join(lines) + "\n"


def state_dirs(state_dir: Path) -> list[Path]:
    """Directories the config points at; create them before launching."""
    s = Path(state_dir).resolve()
    return [s / d for d in ("log", "pid", "web-upload", "tmp", "blob", "checkpoints", "savepoints")]


def write_conf_dir(home: Path, conf_dir: Path, config_text: str, state_dir: Path | None = None) -> Path:
    """Populate a FLINK_CONF_DIR: config.yaml + the stock log4j/logback files (flink-console.sh
    passes ``$FLINK_CONF_DIR/log4j-console.properties``) + masters/workers. Idempotent."""
    conf_dir = Path(conf_dir)
    conf_dir.mkdir(parents=True, exist_ok=True)
    for src in (Path(home) / "conf").iterdir():
        if src.suffix in (".properties", ".xml"):
            shutil.copy2(src, conf_dir / src.name)
    (conf_dir / "config.yaml").write_text(config_text)
    (conf_dir / "masters").write_text("127.0.0.1\n")
    (conf_dir / "workers").write_text("127.0.0.1\n")
    if state_dir is not None:
        for d in state_dirs(state_dir):
            d.mkdir(parents=True, exist_ok=True)
    return conf_dir


# --------------------------------------------------------------------------- launching


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # to merge over os.environ

    def full_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        merged = dict(os.environ if base is None else base)
        # an inherited FLINK_ENV_JAVA_OPTS would replace env.java.opts.all from config.yaml
        merged.pop("FLINK_ENV_JAVA_OPTS", None)
        merged.update(self.env)
        return merged


def launch_commands(
    home: Path, conf_dir: Path, log_dir: Path | None = None, ident: str = "cdc"
) -> dict[str, LaunchSpec]:
    """argv + env for "jobmanager", "taskmanager", "sql-gateway", each in the foreground.

    Every script execs into the JVM, so ``subprocess.Popen(spec.argv, env=spec.full_env())``
    gives the JVM's pid; SIGTERM to it is a graceful shutdown. Start the gateway after the
    JobManager REST is up (it submits there); the TaskManager may start right after the JM.
    """
    home = Path(home).resolve()
    env = {
        "FLINK_HOME": str(home),
        "FLINK_CONF_DIR": str(Path(conf_dir).resolve()),
        # used in pid/log file names; $USER may be unset under service managers
        "FLINK_IDENT_STRING": ident,
    }
    if log_dir is not None:
        env["FLINK_LOG_DIR"] = str(Path(log_dir).resolve())
    bin_dir = home / "bin"
    return {
        "jobmanager": LaunchSpec([str(bin_dir / "jobmanager.sh"), "start-foreground"], dict(env)),
        "taskmanager": LaunchSpec([str(bin_dir / "taskmanager.sh"), "start-foreground"], dict(env)),
        "sql-gateway": LaunchSpec([str(bin_dir / "sql-gateway.sh"), "start-foreground"], dict(env)),
    }
