"""CPU per process and per pipeline stage over a run window, from /proc (no agent, no restart).

`CpuWindow` (bench/harness.py) says which *process* used the cores; at saturation that is not
enough to tune anything, because the stages share processes: Kafka Connect runs Debezium's
WAL reader, the converters and the Kafka producer; the Flink TaskManager runs the operator chain
beside its network stack and GC. `StageProfile` splits them:

* every stack process (`manager.status`) plus the harness itself (the load generator and the
  probe consumer: the control process of a benchmark run), CPU = utime + stime of
  /proc/<pid>/stat (and of its descendants), deltas over the window;
* inside each JVM, per thread (/proc/<pid>/task/<tid>/stat). A thread's `comm` is cut at 15
  characters ("kafka-producer-"), so the full Java names come from `jcmd <pid> Thread.print`
  (`nid=0x..` is the Linux tid), taken at the start and at the end of the window; a thread
  is put into a stage by its name (`_jvm_stage`). CPU of threads that ended inside the window
  is in the process figure but in no thread: it shows as "(exited threads)";
* Postgres per backend, classified by process title (`walsender`), by the backend pids the
  caller names (the load generator's connections), as background worker, or as other client
  backends; backends that ended inside the window before any sample saw them (the probes'
  one-shot connections) are counted through the postmaster's cutime + cstime;
* the harness process (its own threads only: a stack it brought up is its child tree; the
  `jcmd` runs land in "other processes") split into librdkafka threads (`rdk:*`: the probe
  consumer) and the Python threads (load generator, probes);
* the whole machine from /proc/stat, so "other processes" (another stack and its tests on the
  same 2 cores) is visible beside the figures.

Threads are re-read every `interval` seconds so a thread or backend that ends before the window
does keeps its last reading. Output: `result` (JSON-ready) and `table()` (text): CPU seconds,
cores used (1.00 = one core fully busy) and % of the machine (all cores).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from cdc.core.settings import Settings
from cdc.stack import manager
from cdc.stack.process import children_map, descendants

CLK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
JVMS = ("kafka", "connect", "flink-taskmanager", "flink-jobmanager", "flink-sql-gateway")
_NID = re.compile(r'^"(?P<name>.*)"\s.*\bnid=(?P<nid>0x[0-9a-f]+|\d+)', re.M)


def _stat(path: str) -> list[str] | None:
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ticks(path: str, children: bool = False) -> int | None:
    f = _stat(path)
    if f is None:
        return None
    t = int(f[11]) + int(f[12])               # utime + stime
    if children:
        t += int(f[13]) + int(f[14])          # cutime + cstime (reaped children)
    return t


def _comm(pid: int, tid: int | None = None) -> str:
    p = f"/proc/{pid}/task/{tid}/comm" if tid else f"/proc/{pid}/comm"
    try:
        return Path(p).read_text().strip()
    except OSError:
        return "?"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _machine() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def jvm_thread_names(pid: int) -> dict[int, str]:
    """Linux tid -> full Java thread name (jcmd Thread.print; {} if jcmd is missing or fails)."""
    try:
        out = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for m in _NID.finditer(out):
        nid = m["nid"]
        names[int(nid, 16) if nid.startswith("0x") else int(nid)] = m["name"]
    return names


def _jvm_stage(proc: str, name: str) -> str:
    """A JVM thread's stage, from its (full) Java name."""
    n = name
    if n.startswith(("GC Thread", "G1 ", "VM Periodic", "ZGC", "Concurrent GC")) or n == "VM Thread":
        return "jvm: GC + VM thread"
    if "CompilerThread" in n or n.startswith("C1 ") or n.startswith("C2 "):
        return "jvm: JIT compiler"
    if proc == "connect":
        if n.startswith("debezium-") and "change-event-source-coordinator" in n:
            return "debezium: WAL reader + event builder (change-event-source-coordinator)"
        if n.startswith("debezium-") or n.startswith("postgres-connector-task"):
            return "debezium: other (heartbeat, keepalive, signals)"
        if n.startswith("task-thread-"):
            return "connect task: poll queue + JSON converter + producer.send/compress"
        if n.startswith("kafka-producer-network-thread"):
            return "connect: producer network thread"
        if n.startswith("SourceTaskOffsetCommitter") or "offset" in n.lower():
            return "connect: offset commits"
        return "connect: other (herder, REST, consumers of config/status topics)"
    if proc == "flink-taskmanager":
        if n.startswith("Source Data Fetcher"):
            return "flink: Kafka source fetcher"
        if n.startswith("Source:") or " -> " in n or "Writer" in n or "Sink" in n:
            return "flink: task (operator chain: deserialize, flatten, serialize, sink write)"
        if n.startswith("kafka-producer-network-thread"):
            return "flink: sink producer network thread"
        if n.startswith("kafka-coordinator") or n.startswith("kafka-admin"):
            return "flink: other Kafka clients"
        if "netty" in n.lower() or "pekko" in n.lower() or "akka" in n.lower() or n.startswith("flink-rpc"):
            return "flink: runtime (rpc, netty)"
        if n.startswith("Checkpoint") or "checkpoint" in n.lower() or n.startswith("AsyncOperations"):
            return "flink: checkpoints"
        return "flink: other"
    if proc == "kafka":
        if n.startswith("data-plane-kafka-request-handler"):
            return "kafka: request handlers (produce/fetch: log append, read)"
        if n.startswith("data-plane-kafka-network-thread") or n.startswith("data-plane-kafka-socket-acceptor"):
            return "kafka: network threads"
        if n.startswith("kafka-log-cleaner") or "log-cleaner" in n:
            return "kafka: log cleaner"
        if "raft" in n.lower() or "quorum" in n.lower() or "controller" in n.lower():
            return "kafka: KRaft controller"
        return "kafka: other (scheduler, replica manager, group coordinator)"
    return f"{proc}: threads"


def _pg_stage(title: str, pid: int, loadgen: set[int]) -> str:
    if pid in loadgen:
        return "postgres: load generator backends"
    if " walsender " in f" {title} " or title.startswith("postgres: walsender"):
        return "postgres: walsender (logical decoding, pgoutput)"
    if any(w in title for w in ("checkpointer", "background writer", "walwriter", "autovacuum",
                                "logical replication launcher", "stats collector", "archiver")):
        return "postgres: background (walwriter, checkpointer, autovacuum)"
    return "postgres: other client backends (Debezium JDBC, cdc, probes)"


class StageProfile:
    """Samples CPU per process and per stage between `start()` and `stop()` (or `with`)."""

    def __init__(self, settings: Settings, loadgen_backends: set[int] | None = None,
                 interval: float = 1.0, jcmd: bool = True) -> None:
        st = manager.status(settings)
        self.pids: dict[str, int] = {p["name"]: p["pid"] for p in st["processes"] if p["pid"]}
        self.pids["bench harness (load generator, probes)"] = os.getpid()
        self.loadgen = set(loadgen_backends or ())
        self.interval, self.jcmd = interval, jcmd
        self.names: dict[int, dict[int, str]] = {}
        self.first: dict[tuple[str, int], int] = {}     # (proc, tid-or-pid) -> ticks at first sight
        self.last: dict[tuple[str, int], int] = {}
        self.label: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self.result: dict[str, Any] = {}

    # ---------------------------------------------------------------- sampling

    def _proc_ticks(self) -> dict[str, int]:
        kids = children_map()
        out = {}
        for name, pid in self.pids.items():
            if name == "postgres":
                t = _ticks(f"/proc/{pid}/stat", children=True) or 0
                t += sum(_ticks(f"/proc/{c}/stat") or 0 for c in descendants(pid, kids))
            elif name.startswith("bench harness"):
                # Not its descendants: a stack the harness brought up is its child tree.
                t = _ticks(f"/proc/{pid}/stat") or 0
            else:
                t = (_ticks(f"/proc/{pid}/stat") or 0) + sum(_ticks(f"/proc/{c}/stat") or 0
                                                             for c in descendants(pid, kids))
            out[name] = t
        return out

    def _sample_units(self, initial: bool) -> None:
        kids = children_map() if "postgres" in self.pids else {}
        for name, pid in self.pids.items():
            if name == "postgres":
                units = [(c, f"/proc/{c}/stat") for c in descendants(pid, kids)]
            else:
                try:
                    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
                except OSError:
                    continue
                units = [(t, f"/proc/{pid}/task/{t}/stat") for t in tids]
            for uid, path in units:
                t = _ticks(path)
                if t is None:
                    continue
                key = (name, uid)
                if key not in self.first:
                    # A unit born inside the window counts from 0, one seen at the start from then.
                    self.first[key] = t if initial else 0
                    if name == "postgres":
                        self.label[key] = _pg_stage(_cmdline(uid), uid, self.loadgen)
                self.last[key] = t
            if name == "postgres":
                self.last[("postgres", pid)] = _ticks(f"/proc/{pid}/stat") or 0
                self.first.setdefault(("postgres", pid), self.last[("postgres", pid)] if initial else 0)

    def _reaped(self, pid: int) -> int:
        f = _stat(f"/proc/{pid}/stat")
        return int(f[13]) + int(f[14]) if f else 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_units(initial=False)

    def _names(self) -> None:
        if not self.jcmd:
            return
        for name in JVMS:
            if name in self.pids:
                self.names.setdefault(self.pids[name], {}).update(jvm_thread_names(self.pids[name]))

    def start(self) -> StageProfile:
        self._names()
        self.m0 = _machine()
        self.p0 = self._proc_ticks()
        self.pg_reaped0 = self._reaped(self.pids["postgres"]) if "postgres" in self.pids else 0
        self._sample_units(initial=True)
        self.t0 = time.monotonic()
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self.th.join(5)
        self._sample_units(initial=False)
        p1 = self._proc_ticks()
        m1 = _machine()
        wall = time.monotonic() - self.t0
        pg_reaped = (self._reaped(self.pids["postgres"]) - self.pg_reaped0) if "postgres" in self.pids else 0
        self._names()
        self.result = self._build(wall, p1, m1, pg_reaped)
        return self.result

    def __enter__(self) -> StageProfile:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- result

    def _build(self, wall: float, p1: dict[str, int], m1: tuple[int, int], pg_reaped: int) -> dict[str, Any]:
        def fig(ticks: float) -> dict[str, float]:
            s = ticks / CLK
            return {"cpu_s": round(s, 2), "cores": round(s / wall, 3), "pct_of_machine": round(100 * s / wall / NCPU, 1)}

        stages: dict[str, dict[str, float]] = {}
        for name in self.pids:
            stages[name] = {}
        for (proc, uid), last in self.last.items():
            d = max(0, last - self.first.get((proc, uid), 0))
            if proc == "postgres":
                st = "postgres: postmaster" if uid == self.pids["postgres"] else self.label[(proc, uid)]
            elif proc in JVMS:
                full = self.names.get(self.pids[proc], {}).get(uid) or _comm(self.pids[proc], uid)
                st = _jvm_stage(proc, full)
            elif proc.startswith("bench harness"):
                st = ("harness: librdkafka threads (probe consumer)" if _comm(self.pids[proc], uid).startswith("rdk:")
                      else "harness: Python threads (load generator, probes)")
            else:
                st = f"{proc}: threads"
            stages[proc][st] = stages[proc].get(st, 0) + d
        if "postgres" in self.pids:
            # The postmaster's cutime holds the whole life of every backend reaped in the window;
            # the part of it already counted per backend (seen by a sample before it ended) is
            # taken out, so what is left are the backends no sample saw (probe connections).
            seen = sum(last for (proc, uid), last in self.last.items()
                       if proc == "postgres" and uid != self.pids["postgres"] and not os.path.exists(f"/proc/{uid}"))
            pg_reaped = max(0, pg_reaped - seen)
        if "postgres" in stages and pg_reaped:
            k = "postgres: backends that ended in the window (probe connections)"
            stages["postgres"][k] = stages["postgres"].get(k, 0) + pg_reaped
        procs = {}
        for name, pid in self.pids.items():
            total = max(0, p1.get(name, 0) - self.p0.get(name, 0))
            st = stages.get(name, {})
            rest = total - sum(st.values())
            if rest > 0 and name in JVMS:
                st["(exited threads)"] = rest
            procs[name] = {**fig(total), "pid": pid,
                           "stages": {k: fig(v) for k, v in sorted(st.items(), key=lambda kv: -kv[1]) if v > 0}}
        busy = m1[0] - self.m0[0]
        alltime = m1[1] - self.m0[1]
        machine_cores = NCPU * busy / alltime if alltime else 0.0
        stack_cores = sum(p["cores"] for p in procs.values())
        return {"window_s": round(wall, 2), "cores_on_machine": NCPU, "processes": procs,
                "machine_busy_cores": round(machine_cores, 3),
                "other_processes_cores": round(max(0.0, machine_cores - stack_cores), 3),
                "by_stage": by_stage(procs)}

    def table(self, title: str = "") -> str:
        return table(self.result, title)


PIPELINE = ("walsender", "debezium", "connect task", "connect jvm rest", "kafka broker", "flink task",
            "flink tm rest", "flink jm + gateway", "postgres other", "harness")
"""The pipeline stages the report leads with, in data-flow order:
walsender = Postgres logical decoding (pgoutput) for the slot; debezium = its WAL reader and
event builder thread(s); connect task = Connect's task thread (poll of Debezium's queue, JSON
converter, producer.send incl. compression) plus the producer's network thread; connect jvm rest
= GC, JIT, herder and exited threads of Connect; flink task = the flatten job's operator chain
plus its Kafka source fetcher and sink producer threads; postgres other = the load generator's
backends, probes, background workers; harness = the benchmark process (load generator, probe
consumer)."""


def pipeline_stage(proc: str, st: str) -> str:
    if proc == "postgres":
        return "walsender" if st.startswith("postgres: walsender") else "postgres other"
    if proc == "connect":
        if st.startswith("debezium:"):
            return "debezium"
        if st.startswith(("connect task", "connect: producer network")):
            return "connect task"
        return "connect jvm rest"
    if proc == "kafka":
        return "kafka broker"
    if proc == "flink-taskmanager":
        return "flink task" if st.startswith(("flink: task", "flink: Kafka source", "flink: sink producer")) \
            else "flink tm rest"
    if proc in ("flink-jobmanager", "flink-sql-gateway"):
        return "flink jm + gateway"
    return "harness"


def by_stage(procs: dict[str, Any]) -> dict[str, float]:
    """Cores per pipeline stage (PIPELINE)."""
    out = {k: 0.0 for k in PIPELINE}
    for proc, p in procs.items():
        for st, v in p["stages"].items():
            out[pipeline_stage(proc, st)] += v["cores"]
    return {k: round(v, 3) for k, v in out.items()}


def table(res: dict[str, Any], title: str = "") -> str:
    if not res:
        return "(no profile)"
    w = res["window_s"]
    lines = [f"{title}  window {w:.1f}s, machine busy {res['machine_busy_cores']:.2f} of {res['cores_on_machine']} "
             f"cores, other processes {res['other_processes_cores']:.2f} cores"]
    lines.append(f"{'process / stage':<84} {'cpu s':>7} {'cores':>6} {'% mach':>7}")
    for name, p in sorted(res["processes"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        if p["cpu_s"] < 0.05:
            continue
        lines.append(f"{name:<84} {p['cpu_s']:>7.2f} {p['cores']:>6.2f} {p['pct_of_machine']:>6.1f}%")
        for st, v in p["stages"].items():
            if v["cpu_s"] >= 0.05:
                lines.append(f"  {st[:82]:<82} {v['cpu_s']:>7.2f} {v['cores']:>6.2f} {v['pct_of_machine']:>6.1f}%")
    lines.append("pipeline stages (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in res["by_stage"].items()))
    return "\n".join(lines)
