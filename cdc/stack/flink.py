"""Flink session cluster (JobManager, TaskManager) and SQL Gateway for the local stack.

The runtime is the PyPI distribution of Flink (apache-flink + apache-flink-libraries
wheels, unpacked, not pip-installed: the control service never imports pyflink), plus
flink-sql-gateway and flink-sql-connector-kafka jars from Maven Central.
See flink_recipe.py for the layout facts this relies on.
"""

from __future__ import annotations

from pathlib import Path

import requests

from cdc.core.settings import Settings
from cdc.stack import flink_recipe, provision, versions
from cdc.stack.process import Service


def flink_entry(settings: Settings, progress) -> Path:
    def build(d: Path) -> None:
        wheels = d / "wheels"
        provision.pip_download("flink", f"apache-flink-libraries=={versions.FLINK}", wheels, progress)
        provision.pip_download("flink", f"apache-flink=={versions.FLINK}", wheels, progress)
        jars = d / "jars"
        provision.maven_copy("flink", f"org.apache.flink:flink-sql-gateway:{versions.FLINK}", jars, progress)
        provision.maven_copy("flink", f"org.apache.flink:flink-sql-connector-kafka:{versions.FLINK_KAFKA_CONNECTOR}",
                             jars, progress)
        progress("flink: unpacking the runtime")
        flink_recipe.unpack_flink(wheels, sorted(jars.glob("*.jar")), d / "home")
        for w in wheels.glob("*.whl"):   # unpacked now; keep the cache lean
            w.unlink()

    return provision.ensure_entry(settings.cache_dir, f"flink-{versions.FLINK}", "flink", build, progress) / "home"


def _get(url: str) -> tuple[dict | None, str | None]:
    try:
        r = requests.get(url, timeout=2)
    except requests.RequestException as exc:
        return None, f"GET {url}: {type(exc).__name__}"
    if r.status_code != 200:
        return None, f"GET {url}: HTTP {r.status_code}"
    return r.json(), None


def services(settings: Settings, progress) -> list[Service]:
    home = flink_entry(settings, progress)
    st = settings.state_dir / "flink"
    p = settings.ports
    ports = {"rest": p.flink_rest, "gateway": p.sql_gateway, "jm_rpc": p.flink_jm_rpc, "blob": p.flink_blob,
             "tm_rpc": p.flink_tm_rpc, "tm_data": p.flink_tm_data, "metrics_query": p.flink_metrics}
    conf_dir = st / "conf"

    def prepare() -> None:
        text = flink_recipe.flink_config(home, st, ports, settings.flink_jobmanager_memory,
                                         settings.flink_taskmanager_memory, settings.flink_taskmanager_slots)
        flink_recipe.write_conf_dir(home, conf_dir, text, st)

    specs = flink_recipe.launch_commands(home, conf_dir, st / "log")
    rest = settings.flink_url
    gw = settings.sql_gateway_url

    def jm_health() -> str | None:
        return _get(f"{rest}/overview")[1]

    def tm_health() -> str | None:
        body, err = _get(f"{rest}/overview")
        if err:
            return err
        return None if body and body.get("taskmanagers", 0) >= 1 else "no TaskManager registered"

    def gw_health() -> str | None:
        return _get(f"{gw}/v1/info")[1]

    common = dict(component="flink", version=versions.FLINK, run_dir=settings.state_dir / "run")
    logs = settings.state_dir / "logs"
    return [
        Service(name="flink-jobmanager", argv=specs["jobmanager"].argv, env=specs["jobmanager"].full_env(),
                log_file=logs / "flink-jobmanager.log", ports={"rest": p.flink_rest, "rpc": p.flink_jm_rpc,
                                                               "blob": p.flink_blob},
                health=jm_health, prepare=prepare, endpoints={"flink_rest_url": rest}, **common),
        Service(name="flink-taskmanager", argv=specs["taskmanager"].argv, env=specs["taskmanager"].full_env(),
                log_file=logs / "flink-taskmanager.log", ports={"data": p.flink_tm_data, **({"rpc": p.flink_tm_rpc} if p.flink_tm_rpc else {})},
                health=tm_health, depends_on=["flink-jobmanager"], **common),
        Service(name="flink-sql-gateway", argv=specs["sql-gateway"].argv, env=specs["sql-gateway"].full_env(),
                log_file=logs / "flink-sql-gateway.log", ports={"rest": p.sql_gateway}, health=gw_health,
                depends_on=["flink-jobmanager"], endpoints={"sql_gateway_url": gw}, **common),
    ]
