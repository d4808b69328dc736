"""Logging setup: text for people, JSON lines for log shippers (CDC_LOG_FORMAT=json).

Every record passes a filter that masks anything that looks like a credential (DSN
passwords, bearer tokens), as a last line of defence behind the clients' own scrubbing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_SECRET = re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)|((?:password|token|secret)\s*[=:]\s*)"
                     r"(?:'(?:[^'\\]|\\.)*'|\S+)|(Bearer\s+)\S+", re.IGNORECASE)


_MASK_SALT = re.compile(r"(with\.salt\.)[^\s\"',:}]+")    # Debezium's hash salt, in a property name


def mask(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return f"{m.group(1)}***{m.group(2)}"
        return f"{m.group(3) or m.group(4)}***"
    return _MASK_SALT.sub(r"\1***", _SECRET.sub(repl, text))


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(doc)


class _TextFormatter(logging.Formatter):
    """Text lines; a traceback is masked too (exception messages can carry a DSN)."""

    def formatException(self, ei: Any) -> str:
        return mask(super().formatException(ei))


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_MaskFilter())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
