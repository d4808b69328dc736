"""Every `cdc ...` command that the docs, hints and error messages name exists: each one
found is parsed by the real CLI parser (synopsis lines with [options] | alternatives or
"..." are skipped; f-string fields become a placeholder argument)."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from cdc.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *ROOT.glob("*/README.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("*/*.j2")]
_CMD = re.compile(r"\bcdc (?!cdc\b)(?:[a-z][\w-]*)(?: [^`\"')\n;#]*)?")
_FAMILIES = {"stack", "source", "mirror"}


def _hints_of(path: Path) -> list[str]:
    """Strings a user reads as instructions: hint= arguments, and `backticked` text anywhere."""
    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp):
            parts = [text(node.left), text(node.right)]
            return "".join(p or "X" for p in parts)
        return None
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "hint" and (s := text(node.value)):
            out += [m for m in _CMD.findall(s)]
        if (s := text(node)) and "`" in s:
            out += [m for t in re.findall(r"`([^`]*)`", s) for m in _CMD.findall(t)]
    return out


def _candidates() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for text in re.findall(r"`([^`\n]*)`", doc.read_text()):
            found += [(doc.name, m) for m in _CMD.findall(text)]
        for line in doc.read_text().splitlines():         # command lines in code blocks
            if m := re.match(r"\s*(?:\.venv/bin/)?(cdc .*)", line):
                found.append((doc.name, m.group(1).split("#")[0]))
    for py in (ROOT / "cdc").rglob("*.py"):
        found += [(py.name, m) for m in _hints_of(py)]
    cleaned = []
    for where, cmd in found:
        cmd = re.sub(r"\s+(or|and|then|to|with)\b.*$", "", cmd.strip())
        if any(tok in cmd for tok in ("[", "|", "...", "{", "…")):
            continue
        cmd = cmd.rstrip(".,:")
        cleaned.append((where, cmd))
    return sorted(set(cleaned))


def check(cmd: str) -> str | None:
    """None when cmd names an existing command (and, given arguments, they parse); else why not."""
    args = shlex.split(cmd)[1:]
    parser = build_parser()
    level: argparse.ArgumentParser = parser
    for i, word in enumerate(args):
        subs = [a for a in level._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        if word not in subs[0].choices:
            return f"no command {' '.join(['cdc', *args[:i + 1]])!r}"
        level = subs[0].choices[word]
        if i == len(args) - 1:
            return None                       # a command named without its arguments
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        return f"its arguments do not parse (argparse exit {exc.code})"
    return None


CANDIDATES = _candidates()


def test_found_enough_to_mean_something() -> None:
    names = {c for _, c in CANDIDATES}
    assert len(names) >= 15, names
    assert any(c.startswith("cdc mirror restore") for c in names)    # the hint in ops.py


@pytest.mark.parametrize("where, cmd", CANDIDATES)
def test_named_command_exists(where: str, cmd: str) -> None:
    why = check(cmd)
    assert why is None, f"{where}: `{cmd}`: {why}"


@pytest.mark.parametrize("bad", ["cdc secrets", "cdc mirror frobnicate x", "cdc mirror add a.b --bogus"])
def test_a_wrong_command_is_caught(bad: str) -> None:
    assert check(bad) is not None
