"""`cdc mirror add`'s output while it loads: a progress bar on a terminal, lines otherwise.

On a terminal the initial load's progress (cdc.mirrors.load_progress) redraws one line in
place (rows / estimated total, rate, ETA) at most every REDRAW_S; any other message first
ends that line. Elsewhere (a pipe, a log file) the load prints plain lines every
CDC_LOAD_REPORT_S itself, and this only passes messages through.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from cdc.mirrors.load_progress import LoadProgress, bar

REDRAW_S = 0.2


class LoadBar:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._open = False          # a bar line is drawn and not ended yet
        self._drawn = 0.0

    def say(self, msg: str) -> None:
        self._end_line()
        print(msg, file=self.out, flush=True)

    def update(self, p: LoadProgress) -> None:
        now = time.monotonic()
        if p.state == "loading" and now - self._drawn < REDRAW_S:
            return
        self._drawn = now
        self.out.write("\r\033[K" + bar(p))
        self.out.flush()
        self._open = True
        if p.state in ("done", "failed"):
            self._end_line()

    def _end_line(self) -> None:
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False

    def __enter__(self) -> LoadBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end_line()
