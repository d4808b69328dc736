"""Typed client of the cdc Pinot engine: Apache Pinot's own code, in a local JVM, no server.

    check(pairs)                   -> what a Pinot controller says of (schema, table config)
    check_logical(lt, tables, ss)  -> what it says of a logical table config, given the
                                      cluster's table configs and schemas
    upsert_rows(schema, table, rs) -> the rows a query of the REALTIME FULL-upsert table would
                                      see after consuming records rs, plus a summary
    upsert_iter(schema, table, rs, summary)
                                   -> the same rows one by one (any table size: the Python
                                      side holds one row, the engine's segments are mmapped)
    query(schema, table, rs, sql)  -> the broker response to `sql` over those same segments

The engine is the Java program in pinot_engine/, built into the artifact cache on first use
(cdc.stack.pinot_engine). It speaks JSON lines on stdin/stdout; records are streamed to it
from a thread, so the Python side never holds the input. A rejected artifact is a result,
not an error: PinotEngineError means the engine itself could not run or broke its protocol.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cdc.core.errors import CdcError, StackError
from cdc.core.settings import get_settings
from cdc.stack import pinot_engine as recipe


_ERROR_PREFIX = "pinot-engine error: "   # Main.ERROR_PREFIX: the engine's one-line failure reason


class PinotEngineError(CdcError):
    """The Pinot engine could not be built or started, or died, or answered off-protocol."""


@dataclass(frozen=True)
class ContractResult:
    """Pinot's verdict on one (schema, table config) pair.

    errors: Pinot's exception messages, each prefixed with the step ("schema: ...",
    "table: ...", "schema+table: ..."). dropped_keys: input keys Pinot's parse -> serialise
    round trip loses (unknown, misspelt or dead keys): table config paths as written
    ("upsertConfig.comparisonColumnz"), schema paths under "schema." ("schema.foo")."""

    id: str
    ok: bool
    errors: tuple[str, ...]
    dropped_keys: tuple[str, ...]


class PinotEngine:
    """One engine installation; every call runs one short-lived JVM."""

    def __init__(self, home: Path | None = None, *, cache_dir: Path | None = None,
                 progress: Callable[[str], None] | None = None, heap: str = "1024m") -> None:
        self._home = home
        self._cache_dir = cache_dir
        self._progress = progress
        self.heap = heap

    @property
    def home(self) -> Path:
        if self._home is None:
            cache = self._cache_dir or get_settings().cache_dir
            try:
                self._home = (recipe.engine_home(cache, self._progress) if self._progress
                              else recipe.engine_home(cache))
            except StackError as exc:
                raise PinotEngineError(f"cannot build the Pinot engine: {exc.message}", hint=exc.hint) from None
        return self._home

    # ------------------------------------------------------------------ modes

    def check(self, pairs: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[ContractResult]:
        """Validate (id, schema, table config) triples as POST /schemas + POST /tables would."""
        sent = [0]

        def lines() -> Iterator[str]:
            for i, s, t in pairs:
                sent[0] += 1
                yield json.dumps({"id": i, "schema": s, "table": t})

        results = [ContractResult(id=out["id"], ok=bool(out["ok"]), errors=tuple(out["errors"]),
                                  dropped_keys=tuple(out["dropped_keys"]))
                   for out in self._run(["check"], lines())]
        if len(results) != sent[0]:
            raise PinotEngineError(f"the Pinot engine answered {len(results)} of {sent[0]} checks")
        return results

    def check_logical(self, logical: dict[str, Any], physical_tables: list[dict[str, Any]],
                      schemas: list[dict[str, Any]], *, update: bool = False) -> ContractResult:
        """Validate a logical table config as POST /logicalTables would (PUT /logicalTables/{name}
        with update=True) on a cluster holding `physical_tables` (table configs) and `schemas`.
        Errors are prefixed "logical: " (at most one: the controller stops at the first);
        dropped_keys are logical config paths ("refRealtimeTablename")."""
        line = json.dumps({"id": "logical", "logical": logical, "physical_tables": physical_tables,
                           "schemas": schemas, "update": update})
        out = list(self._run(["logical"], iter([line])))
        if len(out) != 1:
            raise PinotEngineError(f"the Pinot engine answered {len(out)} lines to one logical table check")
        return ContractResult(id=out[0]["id"], ok=bool(out[0]["ok"]), errors=tuple(out[0]["errors"]),
                              dropped_keys=tuple(out[0]["dropped_keys"]))

    def upsert_rows(self, schema: dict[str, Any], table: dict[str, Any],
                    records: Iterable[tuple[int, int, dict[str, Any] | str]], *,
                    rows_per_segment: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Feed (partition, offset, flat record) in topic order; return (visible rows, summary).

        Row values are as a Pinot query returns them with null handling on: None for NULL,
        lists for multi-value columns, BIG_DECIMAL as plain text, BYTES as hex."""
        summary: dict[str, Any] = {}
        rows = list(self.upsert_iter(schema, table, records, summary, rows_per_segment=rows_per_segment))
        return rows, summary

    def upsert_iter(self, schema: dict[str, Any], table: dict[str, Any],
                    records: Iterable[tuple[int, int, dict[str, Any] | str]], summary: dict[str, Any], *,
                    rows_per_segment: int | None = None) -> Iterator[dict[str, Any]]:
        """upsert_rows one row at a time; `summary` is filled once the rows are exhausted. A
        record's value may be the message text as read from Kafka (passed on unparsed)."""
        got = False
        with _table_files(schema, table) as files:
            for out in self._run(["upsert", *files, *_segment_args(rows_per_segment)], _record_lines(records)):
                if "row" in out:
                    yield out["row"]
                elif "summary" in out:
                    summary.update(out["summary"])
                    got = True
        if not got:
            raise PinotEngineError("the Pinot engine ended without a summary line")

    def query(self, schema: dict[str, Any], table: dict[str, Any],
              records: Iterable[tuple[int, int, dict[str, Any] | str]], sql: str, *,
              rows_per_segment: int | None = None) -> dict[str, Any]:
        """Consume `records` as upsert_rows does, then answer `sql` with Pinot's single-stage
        query engine (server plan + broker reduce); returns the broker's JSON response.
        Prefix the SQL with "SET enableNullHandling=true; " to see NULLs as a client would."""
        with _table_files(schema, table) as files:
            args = ["query", *files, "--sql", sql, *_segment_args(rows_per_segment)]
            out = list(self._run(args, _record_lines(records)))
        if len(out) != 1 or "response" not in out[0]:
            raise PinotEngineError(f"the Pinot engine answered off-protocol: {str(out)[:300]}")
        response: dict[str, Any] = out[0]["response"]
        return response

    def version(self) -> str:
        return str(list(self._run(["version"], iter(())))[0]["pinot"])

    # ------------------------------------------------------------------ plumbing

    def _run(self, args: list[str], lines: Iterator[str]) -> Iterator[dict[str, Any]]:
        """Start the JVM, stream `lines` to its stdin from a thread, yield its JSON output lines.
        Its temporary files (memory-mapped segments) live in a folder removed on every exit;
        a caller that stops reading early gets the JVM killed (it could block on a full pipe)."""
        with tempfile.TemporaryFile(mode="w+") as err, \
                tempfile.TemporaryDirectory(prefix="cdc-pinot-engine-run-") as tmp:
            cmd = recipe.java_command(self.home, *args, heap=self.heap, tmp_dir=tmp)
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                        text=True, encoding="utf-8", bufsize=1 << 16)
            except OSError as exc:
                raise PinotEngineError(f"cannot start java: {exc}",
                                       hint="install a JDK 17: apt-get install -y openjdk-17-jdk-headless") from None
            assert proc.stdin is not None and proc.stdout is not None
            failure: list[BaseException] = []
            writer = threading.Thread(target=_feed, args=(proc.stdin, lines, failure), daemon=True)
            writer.start()
            done = False
            try:
                for raw in proc.stdout:
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        raise PinotEngineError(f"the Pinot engine answered off-protocol: {raw[:300]!r}") from None
                done = True
            finally:
                if proc.poll() is None and (not done or writer.is_alive()):
                    proc.kill()
                proc.stdout.close()
                writer.join()
                rc = proc.wait()
            if rc != 0:
                err.seek(0)
                text = err.read()
                said = [ln[len(_ERROR_PREFIX):] for ln in text.splitlines() if ln.startswith(_ERROR_PREFIX)]
                oom = "OutOfMemoryError" in text
                raise PinotEngineError(f"the Pinot engine ({args[0]}) failed (exit {rc}): "
                                       + (said[0] if said else text[-2000:].strip()),
                                       hint=f"its heap ({self.heap}) is too small for this table's keys"
                                       if oom else None)
            if failure and not isinstance(failure[0], BrokenPipeError):
                raise PinotEngineError(f"feeding the Pinot engine failed: {failure[0]!r}")


@contextmanager
def _table_files(schema: dict[str, Any], table: dict[str, Any]) -> Iterator[list[str]]:
    """--schema F --table F arguments, the files living as long as the context."""
    with tempfile.TemporaryDirectory(prefix="cdc-pinot-engine-") as tmp:
        sf, tf = Path(tmp) / "schema.json", Path(tmp) / "table.json"
        sf.write_text(json.dumps(schema))
        tf.write_text(json.dumps(table))
        yield ["--schema", str(sf), "--table", str(tf)]


def _segment_args(rows_per_segment: int | None) -> list[str]:
    return ["--rows-per-segment", str(rows_per_segment)] if rows_per_segment else []


def _record_lines(records: Iterable[tuple[int, int, dict[str, Any] | str]]) -> Iterator[str]:
    """One JSON line per record; a value given as text (a Kafka message's JSON) goes in as is."""
    for p, o, v in records:
        if isinstance(v, str):     # valid JSON has CR/LF only between tokens: one line either way
            yield f'{{"partition": {int(p)}, "offset": {int(o)}, "value": {v.replace(chr(13), " ").replace(chr(10), " ")}}}'
        else:
            yield json.dumps({"partition": p, "offset": o, "value": v})


def _feed(stdin: IO[str], lines: Iterator[str], failure: list[BaseException]) -> None:
    try:
        for line in lines:
            stdin.write(line)
            stdin.write("\n")
    except BaseException as exc:  # reported by the reading side
        failure.append(exc)
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def heap_for(records: int) -> str:
    """JVM heap for consuming `records` messages: Pinot keeps each key's upsert metadata on
    the heap (about 200 bytes a key with hashFunction NONE); segments themselves are mmapped."""
    return f"{max(1024, min(16384, 768 + records * 200 // (1 << 20)))}m"


def heap_mib(heap: str) -> int:
    """'1g' / '2676m' -> MiB."""
    n, unit = int(heap[:-1]), heap[-1].lower()
    return n * 1024 if unit == "g" else n if unit == "m" else n // 1024


_default: PinotEngine | None = None


def default_engine() -> PinotEngine:
    global _default
    if _default is None:
        _default = PinotEngine()
    return _default


def check(pairs: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[ContractResult]:
    return default_engine().check(pairs)


def upsert_rows(schema: dict[str, Any], table: dict[str, Any], records: Iterable[tuple[int, int, dict[str, Any]]],
                *, rows_per_segment: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return default_engine().upsert_rows(schema, table, records, rows_per_segment=rows_per_segment)
