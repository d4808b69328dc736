"""Provision pinned artifacts into the cache, through each registry's ordinary client.

Jars come from Maven Central through `mvn` and a generated pom; the Flink runtime comes
from PyPI through `pip download`. Every cache entry is built in a temporary sibling
folder and renamed into place only when complete, so a download that dies midway never
leaves a half-written entry behind. Each entry carries MANIFEST.json (path -> size,
sha256); `verify_entry` checks sizes on every `up` (cheap) so a truncated or deleted
file is caught and the entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cdc.core.errors import StackError
from cdc.stack import versions

Progress = Callable[[str], None]
MANIFEST = "MANIFEST.json"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MavenDep:
    group: str
    artifact: str
    version: str
    exclusions: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def xml(self) -> str:
        excl = "".join(
            f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>" for g, a in self.exclusions
        )
        excl = f"<exclusions>{excl}</exclusions>" if excl else ""
        return (f"<dependency><groupId>{self.group}</groupId><artifactId>{self.artifact}</artifactId>"
                f"<version>{self.version}</version>{excl}</dependency>")


def _pom(deps: Iterable[MavenDep]) -> str:
    body = "".join(d.xml() for d in deps)
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>cdc.local</groupId><artifactId>cdc-provision</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{body}</dependencies></project>")


def require_tool(component: str, tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise StackError(component, f"`{tool}` is not on PATH", hint=hint)
    return path


def java_major() -> int:
    """Major version of the `java` on PATH (the stack needs 17+)."""
    require_tool("java", "java", "install a JDK 17: apt-get install -y openjdk-17-jdk-headless")
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise StackError("java", f"cannot read the Java version from: {out.strip()[:200]}")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def _run_maven(component: str, goal_args: list[str], work: Path, deps: Iterable[MavenDep], progress: Progress) -> None:
    """Run mvn in `work` with a generated pom; show one progress line per downloaded artifact."""
    mvn = require_tool(component, "mvn", "install Maven: apt-get install -y maven")
    (work / "pom.xml").write_text(_pom(deps))
    log = work / "mvn.log"
    cmd = [mvn, "-B", "-C", "-f", str(work / "pom.xml"), *goal_args]
    if os.environ.get("CDC_MAVEN_REPO_LOCAL"):   # e.g. a cold-cache measurement
        cmd.insert(1, f"-Dmaven.repo.local={os.environ['CDC_MAVEN_REPO_LOCAL']}")
    n = 0
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if "Downloaded from" in line and ".jar" in line:
                n += 1
                if n % 10 == 1:
                    progress(f"{component}: {n} jars downloaded ({time.monotonic() - t0:.0f}s)")
        rc = proc.wait()
    if rc != 0:
        text = log.read_text()
        missing = sorted(set(re.findall(r"([\w.-]+:[\w.-]+:(?:jar|pom|tar\.gz)(?::[\w.-]+)?:[\w.-]+)"
                                        r"(?: was not found|,|$| in )", text)))
        if missing:
            reason = f"Maven Central did not serve {', '.join(missing[:6])}"
        else:
            err = [ln for ln in text.splitlines() if ln.startswith("[ERROR]")][:2]
            reason = "Maven could not fetch the artifacts: " + " ".join(e[8:300] for e in err)
        raise StackError(component, reason,
                         log=str(log), hint="check network access to Maven Central, then run `cdc stack up` again")


def maven_copy_dependencies(component: str, deps: list[MavenDep], out: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-mvn-") as tmp:
        _run_maven(component, ["dependency:copy-dependencies", "-DincludeScope=runtime",
                               f"-DoutputDirectory={out}"], Path(tmp), deps, progress)


def maven_unpack(component: str, coords: str, out: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-mvn-") as tmp:
        _run_maven(component, ["dependency:unpack", f"-Dartifact={coords}", f"-DoutputDirectory={out}"],
                   Path(tmp), [], progress)


def maven_copy(component: str, coords: str, out: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-mvn-") as tmp:
        _run_maven(component, ["dependency:copy", f"-Dartifact={coords}", f"-DoutputDirectory={out}"],
                   Path(tmp), [], progress)


def pip_download(component: str, requirement: str, out: Path, progress: Progress) -> Path:
    """Download one wheel (no dependencies) with pip; pip verifies PyPI's sha256."""
    out.mkdir(parents=True, exist_ok=True)
    progress(f"{component}: pip download {requirement}")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
                           "--only-binary", ":all:", "-d", str(out), requirement],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(component, f"pip could not download {requirement}: {proc.stderr.strip()[-400:]}",
                         hint="check network access to PyPI, then run `cdc stack up` again")
    wheels = sorted(out.glob("*.whl"))
    if not wheels:
        raise StackError(component, f"pip download of {requirement} produced no wheel")
    return wheels[0]


# -- cache entries -----------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path) -> None:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST:
            files[str(p.relative_to(root))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    (root / MANIFEST).write_text(json.dumps({"created": time.time(), "files": files}, indent=0))


def verify_entry(root: Path) -> str | None:
    """None when the entry is complete; otherwise a sentence saying what is wrong."""
    mf = root / MANIFEST
    if not mf.is_file():
        return "no MANIFEST.json (incomplete or foreign folder)"
    try:
        files = json.loads(mf.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable MANIFEST.json ({exc})"
    for rel, meta in files.items():
        p = root / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != meta["size"]:
            return f"{rel} has {p.stat().st_size} bytes, expected {meta['size']}"
    return None


def ensure_entry(cache_dir: Path, name: str, component: str, build: Callable[[Path], None],
                 progress: Progress = _say) -> Path:
    """Return cache_dir/name, building it atomically first if absent or corrupt."""
    final = cache_dir / name
    if final.exists():
        problem = verify_entry(final)
        if problem is None:
            return final
        progress(f"{component}: cache entry {final} is corrupt ({problem}); rebuilding it")
        shutil.rmtree(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=cache_dir))
    t0 = time.monotonic()
    try:
        build(tmp)
        write_manifest(tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"{component}: provisioned {name} in {time.monotonic() - t0:.0f}s")
    return final


def clean_partials(cache_dir: Path) -> None:
    """Remove leftovers of interrupted builds (they are never used, only reclaimed)."""
    if cache_dir.is_dir():
        for p in cache_dir.glob(".*.partial-*"):
            shutil.rmtree(p, ignore_errors=True)


# -- the concrete entries ------------------------------------------------------------

def recipe_id(deps: list[MavenDep]) -> str:
    """Short hash of a dependency list: a changed recipe gets a new cache entry."""
    return hashlib.sha256(_pom(deps).encode()).hexdigest()[:8]


def kafka_entry(cache_dir: Path, progress: Progress = _say) -> Path:
    """Kafka broker + Kafka Connect runtime on one classpath (lib/), with a log4j2 binding."""
    deps = [
        MavenDep("org.apache.kafka", "kafka_2.13", versions.KAFKA),
        MavenDep("org.apache.kafka", "kafka-tools", versions.KAFKA),
        MavenDep("org.apache.kafka", "connect-runtime", versions.KAFKA),
        MavenDep("org.apache.kafka", "connect-basic-auth-extension", versions.KAFKA),   # REST basic auth
        MavenDep("org.apache.logging.log4j", "log4j-core", versions.LOG4J),
        MavenDep("org.apache.logging.log4j", "log4j-slf4j2-impl", versions.LOG4J),
        # Maven's nearest-wins picks slf4j-api 1.7 from a transitive path, which has no
        # binding for log4j-slf4j2-impl: every Kafka/Connect log line would be dropped.
        MavenDep("org.slf4j", "slf4j-api", versions.SLF4J),
    ]
    return ensure_entry(cache_dir, f"kafka-{versions.KAFKA}-{recipe_id(deps)}", "kafka",
                        lambda d: maven_copy_dependencies("kafka", deps, d / "lib", progress), progress)


def debezium_entry(cache_dir: Path, progress: Progress = _say) -> Path:
    """Debezium's own plugin archive, unpacked as a Connect plugin.path folder."""
    coords = f"io.debezium:debezium-connector-postgres:{versions.DEBEZIUM}:tar.gz:plugin"

    def build(d: Path) -> None:
        maven_unpack("debezium", coords, d / "plugins", progress)
        for junk in (d / "plugins").glob("PaxHeaders*"):
            shutil.rmtree(junk, ignore_errors=True) if junk.is_dir() else junk.unlink()

    return ensure_entry(cache_dir, f"debezium-{versions.DEBEZIUM}", "debezium", build, progress)
