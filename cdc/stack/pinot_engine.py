"""Provision the cdc Pinot engine into the artifact cache.

The engine (top-level folder ``pinot_engine/``) is a small Java program that runs Apache
Pinot's own library code in-process: the controller's schema/table-config checks and a
server's realtime upsert path. No Pinot server is needed, and Pinot's libraries are all
it takes from Maven Central, so tests can put Pinot in the loop wherever Java and Maven run.

Built like every other cache entry (see provision.py): Maven runs on a copy of the sources
in a temporary folder, the result is assembled in a temporary sibling of the entry and
renamed into place with a MANIFEST.json. Two entries, both named with the Pinot version
(passed to Maven as ``-Dpinot.version``, from versions.py) and a source hash:

    pinot-engine-lib-<pinot>-<hash of pom>        lib/*.jar   dependency:copy-dependencies
    pinot-engine-<pinot>-<hash of pom + src/>     pinot-engine.jar, pom.xml, LIB   package

so a change to the Java sources rebuilds a few kB, and only a pom change re-copies the
~150 MB of Pinot's closure.
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
LIB = "LIB"   # in the jar entry: the name of the lib entry next to it
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


def _hash(src: Path, files: list[Path]) -> str:
    h = hashlib.sha256(versions.PINOT.encode())
    for p in files:
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:8]


def recipe_id(src: Path) -> str:
    """Short hash of the Pinot version, the pom and every file under src/."""
    return _hash(src, [src / "pom.xml"] + sorted(p for p in (src / "src").rglob("*") if p.is_file()))


def entry_names(src: Path) -> tuple[str, str]:
    """(jar entry, lib entry). The ~150 MB of Pinot jars depend on the pom only, so editing
    the Java sources rebuilds a few kB, not the whole closure."""
    return (f"pinot-engine-{versions.PINOT}-{recipe_id(src)}",
            f"pinot-engine-lib-{versions.PINOT}-{_hash(src, [src / 'pom.xml'])}")


def _run_mvn(work: Path, goals: list[str], log: Path, progress: Progress) -> None:
    mvn = provision.require_tool(COMPONENT, "mvn", "install Maven: apt-get install -y maven")
    cmd = [mvn, "-B", "-C", f"-Dpinot.version={versions.PINOT}", *goals]
    if os.environ.get("CDC_MAVEN_REPO_LOCAL"):   # e.g. a cold-cache measurement
        cmd.insert(1, f"-Dmaven.repo.local={os.environ['CDC_MAVEN_REPO_LOCAL']}")
    progress(f"{COMPONENT}: mvn {' '.join(goals[:2])} (Pinot {versions.PINOT}; log: {log})")
    n, t0 = 0, time.monotonic()
    with open(log, "a") as fh:
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


def _copy_sources(src: Path, work: Path) -> None:
    shutil.copy2(src / "pom.xml", work / "pom.xml")
    shutil.copytree(src / "src", work / "src")


def engine_home(cache_dir: Path, progress: Progress = provision._say) -> Path:
    """The cache entry holding pinot-engine.jar (and, through LIB, its lib/), built on first use."""
    src = source_dir()
    jar_name, lib_name = entry_names(src)
    cache_dir.mkdir(parents=True, exist_ok=True)

    def build_lib(d: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="cdc-pinot-engine-") as tmp:
            _copy_sources(src, Path(tmp))
            _run_mvn(Path(tmp), ["dependency:copy-dependencies", "-DincludeScope=runtime",
                                 f"-DoutputDirectory={d / 'lib'}"], cache_dir / f"{lib_name}.build.log", progress)

    def build_jar(d: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="cdc-pinot-engine-") as tmp:
            _copy_sources(src, Path(tmp))
            _run_mvn(Path(tmp), ["-q", "package"], cache_dir / f"{jar_name}.build.log", progress)
            shutil.copy2(Path(tmp) / "target" / JAR, d / JAR)
        shutil.copy2(src / "pom.xml", d / "pom.xml")   # the recipe, for the record
        (d / LIB).write_text(lib_name)

    provision.ensure_entry(cache_dir, lib_name, COMPONENT, build_lib, progress)
    return provision.ensure_entry(cache_dir, jar_name, COMPONENT, build_jar, progress)


def classpath(home: Path) -> str:
    """The engine's jar, then every jar of the lib entry it names."""
    lib = home.parent / (home / LIB).read_text().strip() / "lib"
    return os.pathsep.join([str(home / JAR), str(lib / "*")])


def java_command(home: Path, *args: str, heap: str = "1024m", tmp_dir: str | None = None) -> list[str]:
    """argv that runs the engine in one of its modes (check, upsert, query, version); it dies
    on running out of heap (instead of thrashing), and keeps its temporary files in tmp_dir."""
    tmp = [f"-Djava.io.tmpdir={tmp_dir}"] if tmp_dir else []
    return ["java", f"-Xmx{heap}", "-XX:+ExitOnOutOfMemoryError", *tmp, *JAVA_OPTS, "-cp", classpath(home),
            MAIN_CLASS, *args]
