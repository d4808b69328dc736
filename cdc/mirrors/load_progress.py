"""Progress of a mirror's parallel initial load (cdc.mirrors.initial_load): kept, shown, measured.

The loading process writes its progress to STATE_DIR/loads/<mirror>.json (next to the
registry file, replaced atomically about once a second); `cdc mirror status`, the REST status,
/metrics and `cdc mirror add`'s own progress bar read it. A file, not registry rows: a 10M-row
load would otherwise write an event per second into the event log; the registry gets the
milestones as events (load_started, load_done, load_failed). A file older than the mirror
(an earlier mirror of the same name) is ignored. A rebuild's copy load (cdc.mirrors.rebuild_load)
writes the same file: status shows the mirror's latest load, and `start_offset` (its marker + 1)
tells the rebuild its own from an earlier one.

    waiting (open transactions) -> loading -> done | failed
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

STATES = ("waiting", "loading", "done", "failed")


@dataclass
class LoadProgress:
    mirror: str
    state: str = "waiting"
    rows: int = 0                       # rows read from Postgres (and produced) so far
    dead_letters: int = 0
    estimate: int | None = None         # pg_class.reltuples when the load began
    chunks_done: int = 0
    chunks_total: int = 0
    workers: int = 0
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    seq: int | None = None              # the loaded rows' __seq
    start_offset: int | None = None     # the change-topic offset the flatten job starts at
    waiting_for: int = 0                # open transactions still awaited
    reason: str | None = None

    @property
    def elapsed_s(self) -> float:
        return max(1e-9, (self.finished_at or self.updated_at) - self.started_at)

    @property
    def rate(self) -> float:
        return self.rows / self.elapsed_s

    @property
    def eta_s(self) -> float | None:
        if self.state != "loading" or not self.estimate or self.rows <= 0 or self.rows >= self.estimate:
            return None
        return (self.estimate - self.rows) / self.rate

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rows_per_s=round(self.rate), eta_s=None if self.eta_s is None else round(self.eta_s, 1),
                   elapsed_s=round(self.elapsed_s, 1), done=self.state == "done")
        return out


def folder(registry_file: Path) -> Path:
    return registry_file.parent / "loads"


def path_for(registry_file: Path, mirror: str) -> Path:
    return folder(registry_file) / f"{mirror}.json"


def write(registry_file: Path, p: LoadProgress) -> None:
    """Replace the mirror's progress file atomically (0600, like the rest of the state folder)."""
    target = path_for(registry_file, p.mirror)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")     # writers never share one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(p), f)
    os.replace(tmp, target)


def from_dict(data: dict[str, Any]) -> LoadProgress:
    return LoadProgress(**{k: v for k, v in data.items() if k in LoadProgress.__dataclass_fields__})


def read(registry_file: Path, mirror: str, created_at: str | None = None) -> LoadProgress | None:
    """The mirror's load, None when it had none (or the file belongs to an earlier mirror of
    that name: started before `created_at`, the registry's ISO timestamp)."""
    try:
        p = from_dict(json.loads(path_for(registry_file, mirror).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if created_at is not None and p.started_at < datetime.fromisoformat(created_at).timestamp() - 1:
        return None
    return p


# -- rendering ---------------------------------------------------------------------------------

def _dur(s: float | None) -> str:
    if s is None:
        return "--:--"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def line(p: LoadProgress) -> str:
    """One plain line: rows so far of the estimate, rate, ETA."""
    if p.state == "waiting":
        return (f"load {p.mirror}: waiting for {p.waiting_for} transaction(s) open since the table joined the "
                "publication")
    est = f" of ~{p.estimate:,}" if p.estimate else ""
    pct = f" ({100 * p.rows / p.estimate:.0f}%)" if p.estimate else ""
    tail = f", ETA {_dur(p.eta_s)}" if p.state == "loading" else f" in {p.elapsed_s:.1f}s"
    return (f"load {p.mirror}: {p.state} {p.rows:,}{est} rows{pct}, {p.rate:,.0f} rows/s{tail}, "
            f"{p.chunks_done}/{p.chunks_total} chunks")


def bar(p: LoadProgress, width: int = 30) -> str:
    """A terminal progress bar: [#####.....] 45% 4,500,000/~10,000,000 rows 120,000 rows/s ETA 00:45."""
    if p.state == "waiting" or not p.estimate:
        return line(p)
    frac = min(1.0, p.rows / p.estimate) if p.state != "done" else 1.0
    filled = int(frac * width)
    eta = f"ETA {_dur(p.eta_s)}" if p.state == "loading" else f"{p.elapsed_s:.1f}s"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {100 * frac:3.0f}% {p.rows:,}/~{p.estimate:,} rows "
            f"{p.rate:,.0f} rows/s {eta}")
