"""Pinot for the local stack: ZooKeeper + one Pinot JVM (controller, broker, server).

Where the Pinot runtime comes from:
  * CDC_PINOT_HOME: an unpacked Apache Pinot binary distribution (apache-pinot-X-bin);
    we run its bin/pinot-admin.sh StartZookeeper and StartServiceManager.
  * otherwise Maven Central: org.apache.pinot:pinot-tools and its runtime closure.
    The Maven Central served to our build machines has no pinot-tools and no
    pinot-server (any version; 404), so there this path reports Pinot as unavailable,
    with the reason, instead of failing the whole stack (mode "auto"), or fails (mode
    "local"). The negative answer is remembered for a day to keep `up` fast.
  * CDC_PINOT_MODE=external with CDC_PINOT_CONTROLLER_URL / CDC_PINOT_BROKER_URL uses a
    Pinot you run elsewhere (e.g. compose/docker-compose.yml).
"""

from __future__ import annotations

import time
from pathlib import Path

from cdc.core.settings import Settings
from cdc.core.errors import StackError
from cdc.stack import provision, versions
from cdc.stack.components import http_ok
from cdc.stack.process import Progress, Service, Unavailable

_JAVA17_OPENS = ("--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
                 "--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED "
                 "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
                 "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED -Dio.netty.tryReflectionSetAccessible=true")
_NEGATIVE_TTL_S = 24 * 3600


def _maven_pinot(settings: Settings, progress: Progress) -> Path:
    marker = settings.cache_dir / f"pinot-{versions.PINOT}.unavailable"
    if marker.exists() and time.time() - marker.stat().st_mtime < _NEGATIVE_TTL_S:
        raise StackError("pinot", marker.read_text().strip())
    deps = [provision.MavenDep("org.apache.pinot", "pinot-tools", versions.PINOT,
                               (("org.apache.pinot", "pinot-confluent-avro"), ("io.confluent", "*")))]
    try:
        return provision.ensure_entry(settings.cache_dir, f"pinot-{versions.PINOT}", "pinot",
                                      lambda d: provision.maven_copy_dependencies("pinot", deps, d / "lib", progress),
                                      progress)
    except StackError as exc:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"Pinot {versions.PINOT} could not be provisioned from Maven: {exc.reason}")
        raise


def services(settings: Settings, progress: Progress) -> tuple[list[Service], Unavailable | None]:
    if settings.pinot_mode in ("none", "external"):
        return [], None
    if settings.pinot_home:
        home = settings.pinot_home
        if not (home / "bin" / "pinot-admin.sh").is_file():
            raise StackError("pinot", f"CDC_PINOT_HOME={home} has no bin/pinot-admin.sh",
                             hint="point it at an unpacked apache-pinot-<version>-bin folder")
        launcher = [str(home / "bin" / "pinot-admin.sh")]
        version = home.name
    else:
        try:
            lib = _maven_pinot(settings, progress) / "lib"
        except StackError as exc:
            hint = ("set CDC_PINOT_HOME to an unpacked Apache Pinot binary distribution, or "
                    "CDC_PINOT_MODE=external with CDC_PINOT_CONTROLLER_URL and CDC_PINOT_BROKER_URL")
            return [], Unavailable("pinot", f"{exc.reason}; {hint}", required=settings.pinot_mode == "local")
        launcher = ["java", "-cp", f"{lib}/*", "org.apache.pinot.tools.admin.PinotAdministrator"]
        version = versions.PINOT
    st = settings.state_dir / "pinot"
    p = settings.ports
    h = settings.host
    zk = f"{h}:{p.zookeeper}"
    run, logs = settings.state_dir / "run", settings.state_dir / "logs"

    def prepare() -> None:
        st.mkdir(parents=True, exist_ok=True)
        (st / "controller.conf").write_text(
            f"controller.host={h}\ncontroller.port={p.pinot_controller}\ncontroller.zk.str={zk}\n"
            f"controller.helix.cluster.name=cdc\ncontroller.data.dir={st / 'controller'}\n")
        (st / "broker.conf").write_text(
            f"pinot.broker.hostname={h}\npinot.broker.client.queryPort={p.pinot_broker}\n"
            f"pinot.broker.netty.host={h}\npinot.query.runner.port={p.pinot_broker_mse}\n")
        (st / "server.conf").write_text(
            f"pinot.server.netty.host={h}\npinot.server.netty.port={p.pinot_server_netty}\n"
            f"pinot.server.adminapi.port={p.pinot_server_admin}\npinot.server.grpc.port={p.pinot_server_grpc}\n"
            f"pinot.query.server.port={p.pinot_server_mse}\n"
            f"pinot.server.instance.dataDir={st / 'server' / 'data'}\n"
            f"pinot.server.instance.segmentTarDir={st / 'server' / 'segments'}\n")

    common_env = {"JAVA_OPTS": _JAVA17_OPENS}
    zk_svc = Service(
        name="pinot-zookeeper", component="pinot", version=version,
        argv=[*launcher, "StartZookeeper", "-zkPort", str(p.zookeeper), "-dataDir", str(st / "zk")],
        run_dir=run, log_file=logs / "pinot-zookeeper.log", ports={"zookeeper": p.zookeeper},
        health=lambda: _tcp(h, p.zookeeper), prepare=prepare,
        env={**common_env, "JAVA_OPTS": f"-Xms{settings.zookeeper_heap} -Xmx{settings.zookeeper_heap} {_JAVA17_OPENS}"})
    ctl = f"http://{h}:{p.pinot_controller}"
    brk = f"http://{h}:{p.pinot_broker}"
    svc = Service(
        name="pinot", component="pinot", version=version,
        argv=[*launcher, "StartServiceManager", "-zkAddress", zk, "-clusterName", "cdc", "-port", "-1",
              "-bootstrapConfigPaths", str(st / "controller.conf"), str(st / "broker.conf"), str(st / "server.conf")],
        run_dir=run, log_file=logs / "pinot.log",
        ports={"controller": p.pinot_controller, "broker": p.pinot_broker, "server": p.pinot_server_netty,
               "server_admin": p.pinot_server_admin},
        health=lambda: http_ok(f"{ctl}/health") or http_ok(f"{brk}/health")
        or http_ok(f"http://{h}:{p.pinot_server_admin}/health"),
        depends_on=["pinot-zookeeper"],
        env={"JAVA_OPTS": f"-Xms{settings.pinot_heap} -Xmx{settings.pinot_heap} {_JAVA17_OPENS}"},
        endpoints={"pinot_controller_url": ctl, "pinot_broker_url": brk})
    return [zk_svc, svc], None


def _tcp(host: str, port: int) -> str | None:
    from cdc.stack.process import port_in_use
    return None if port_in_use(host, port) else f"nothing listens on {host}:{port}"
