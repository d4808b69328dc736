"""Provision the cdc Pinot engine into the artifact cache.

The engine (top-level folder ``pinot_engine/``) is a small Java program that runs Apache
Pinot's own library code in-process: the controller's schema/table-config checks and a
server's realtime upsert path. No Pinot server is needed, and Pinot's libraries are all
it takes from Maven Central, so tests can put Pinot in the loop wherever Java and Maven run.

Built like every other cache entry (see provision.py): ``mvn package
dependency:copy-dependencies`` runs on a copy of the sources in a temporary folder, the
result (``pinot-engine.jar`` + ``lib/*.jar``) is assembled in a temporary sibling of the
entry and renamed into place with a MANIFEST.json. The entry name carries the Pinot version
(passed to Maven as ``-Dpinot.version``, from versions.py) and a hash of the Java sources and
the pom, so any source change builds a new entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cdc.core.errors import StackError
from cdc.stack import provision, versions
from cdc.stack.pinot import _JAVA17_OPENS
from cdc.stack.provision import Progress

COMPONENT = "pinot-engine"
MAIN_CLASS = "cdc.pinot.Main"
JAR = "pinot-engine.jar"
#: JVM flags Pinot's libraries want on Java 17 (the same set the Pinot stack component uses).
JAVA_OPTS: tuple[str, ...] = tuple(_JAVA17_OPENS.split())


def source_dir() -> Path:
    """pinot_engine/ of this checkout, or $CDC_PINOT_ENGINE_SRC."""
    env = os.environ.get("CDC_PINOT_ENGINE_SRC")
    src = Path(env) if env else Path(__file__).resolve().parents[2] / "pinot_engine"
    if not (src / "pom.xml").is_file():
        raise StackError(COMPONENT, f"no pom.xml in {src}",
                         hint="run from a source checkout, or set CDC_PINOT_ENGINE_SRC to the pinot_engine folder")
    return src


def _sources(src: Path) -> list[Path]:
    return [src / "pom.xml"] + sorted(p for p in (src / "src").rglob("*") if p.is_file())


def recipe_id(src: Path) -> str:
    """Short hash of the pom, every file under src/ and the Pinot version."""
    h = hashlib.sha256(versions.PINOT.encode())
    for p in _sources(src):
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:8]


def entry_name(src: Path | None = None) -> str:
    return f"pinot-engine-{versions.PINOT}-{recipe_id(src or source_dir())}"


def _mvn_build(src: Path, out: Path, log: Path, progress: Progress) -> None:
    """Build in a temporary copy of `src`; put the jar and its runtime closure under `out`."""
    mvn = provision.require_tool(COMPONENT, "mvn", "install Maven: apt-get install -y maven")
    provision.require_tool(COMPONENT, "java", "install a JDK 17: apt-get install -y openjdk-17-jdk-headless")
    with tempfile.TemporaryDirectory(prefix="cdc-pinot-engine-") as tmp:
        work = Path(tmp)
        shutil.copy2(src / "pom.xml", work / "pom.xml")
        shutil.copytree(src / "src", work / "src")
        cmd = [mvn, "-B", "-C", f"-Dpinot.version={versions.PINOT}", "package",
               "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={out / 'lib'}"]
        if os.environ.get("CDC_MAVEN_REPO_LOCAL"):   # e.g. a cold-cache measurement
            cmd.insert(1, f"-Dmaven.repo.local={os.environ['CDC_MAVEN_REPO_LOCAL']}")
        progress(f"{COMPONENT}: building with Maven (Pinot {versions.PINOT}; log: {log})")
        n, t0 = 0, time.monotonic()
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if "Downloaded from" in line and ".jar" in line:
                    n += 1
                    if n % 25 == 1:
                        progress(f"{COMPONENT}: {n} jars downloaded ({time.monotonic() - t0:.0f}s)")
            rc = proc.wait()
        if rc != 0:
            errors = [ln[8:300] for ln in log.read_text().splitlines()
                      if ln.startswith("[ERROR]") and not re.match(r"\[ERROR\]\s*(->|$|To see|Re-run|For more)", ln)]
            raise StackError(COMPONENT, "Maven build failed: " + " | ".join(errors[:4]), log=str(log),
                             hint="check network access to Maven Central and the Java sources in pinot_engine/")
        shutil.copy2(work / "target" / JAR, out / JAR)
        shutil.copy2(work / "pom.xml", out / "pom.xml")   # the recipe, for the record


def engine_home(cache_dir: Path, progress: Progress = provision._say) -> Path:
    """The cache entry holding pinot-engine.jar and lib/, built on first use."""
    src = source_dir()
    name = entry_name(src)
    log = cache_dir / f"{name}.build.log"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return provision.ensure_entry(cache_dir, name, COMPONENT, lambda d: _mvn_build(src, d, log, progress), progress)


def classpath(home: Path) -> str:
    return os.pathsep.join([str(home / JAR), str(home / "lib" / "*")])


def java_command(home: Path, *args: str, heap: str = "1g") -> list[str]:
    """argv that runs the engine in one of its modes (check, upsert, query, version)."""
    return ["java", f"-Xmx{heap}", *JAVA_OPTS, "-cp", classpath(home), MAIN_CLASS, *args]
