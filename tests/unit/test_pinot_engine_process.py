"""The Pinot engine client's process handling, with a stand-in program instead of the JVM."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from cdc.clients import pinot_engine
from cdc.clients.pinot_engine import PinotEngine, PinotEngineError, _record_lines, heap_for, heap_mib

# Prints many rows regardless of its input, as the engine's upsert mode does for a big table.
CHATTY = "import sys\nfor i in range(200000):\n    sys.stdout.write('{\"row\": {\"id\": %d}}\\n' % i)\n"


def _engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, program: str, seen_tmp: list[str]) -> PinotEngine:
    script = tmp_path / "fake_engine.py"
    script.write_text(program)

    def command(home: Path, *args: str, heap: str = "", tmp_dir: str | None = None) -> list[str]:
        seen_tmp.append(tmp_dir or "")
        return [sys.executable, str(script)]
    monkeypatch.setattr(pinot_engine.recipe, "java_command", command)
    return PinotEngine(home=tmp_path)


def test_a_reader_that_stops_early_does_not_hang(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The stand-in blocks on a full stdout pipe once the reader stops: closing the generator
    must kill it, not wait for it forever; its temporary folder is removed."""
    tmps: list[str] = []
    eng = _engine(monkeypatch, tmp_path, CHATTY, tmps)
    finished = threading.Event()

    def read_ten() -> None:
        it = eng._run(["upsert"], iter(()))
        for _ in range(10):
            next(it)
        it.close()
        finished.set()
    t = threading.Thread(target=read_ten, daemon=True)
    t.start()
    assert finished.wait(20), "closing the engine's output early hung"
    assert tmps and not Path(tmps[0]).exists()


def test_a_failed_engine_is_an_error_naming_the_heap_when_it_ran_out(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    program = "import sys\nsys.stderr.write('Terminating due to java.lang.OutOfMemoryError: Java heap space\\n')\n" \
              "sys.exit(3)\n"
    eng = _engine(monkeypatch, tmp_path, program, [])
    with pytest.raises(PinotEngineError) as err:
        list(eng._run(["upsert"], iter(())))
    assert "exit 3" in err.value.message and err.value.hint and "heap" in err.value.hint


def test_raw_messages_become_one_json_line_each() -> None:
    raw = '{"id": 1,\n "v": "a\\nb"}'             # CR/LF between tokens; an escaped one inside a string
    lines = list(_record_lines([(2, 7, raw), (0, 1, {"id": 2})]))
    assert all("\n" not in ln for ln in lines)
    assert [json.loads(ln) for ln in lines] == [{"partition": 2, "offset": 7, "value": {"id": 1, "v": "a\nb"}},
                                                {"partition": 0, "offset": 1, "value": {"id": 2}}]


def test_heap_grows_with_the_topic() -> None:
    assert heap_mib(heap_for(0)) == 1024 == heap_mib("1g")
    assert heap_mib(heap_for(10_000_000)) > 2_500
    assert heap_mib(heap_for(10**10)) == 16_384
