"""Cache entries are atomic and verified; a corrupt entry is detected and rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.core.errors import StackError
from cdc.stack import provision


def _build_ok(d: Path) -> None:
    (d / "lib").mkdir()
    (d / "lib" / "a.jar").write_bytes(b"x" * 100)


def test_entry_is_built_once_and_verified(tmp_path: Path) -> None:
    calls = []

    def build(d: Path) -> None:
        calls.append(d)
        _build_ok(d)

    e1 = provision.ensure_entry(tmp_path, "thing-1", "thing", build, progress=lambda m: None)
    e2 = provision.ensure_entry(tmp_path, "thing-1", "thing", build, progress=lambda m: None)
    assert e1 == e2 == tmp_path / "thing-1"
    assert len(calls) == 1
    assert provision.verify_entry(e1) is None


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(d: Path) -> None:
        (d / "half.jar").write_bytes(b"partial")
        raise StackError("thing", "download died midway")

    with pytest.raises(StackError, match="midway"):
        provision.ensure_entry(tmp_path, "thing-1", "thing", build, progress=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_detected_and_rebuilt(tmp_path: Path) -> None:
    e = provision.ensure_entry(tmp_path, "thing-1", "thing", _build_ok, progress=lambda m: None)
    (e / "lib" / "a.jar").write_bytes(b"x" * 10)
    assert "a.jar has 10 bytes, expected 100" in (provision.verify_entry(e) or "")
    notes: list[str] = []
    provision.ensure_entry(tmp_path, "thing-1", "thing", _build_ok, progress=notes.append)
    assert (e / "lib" / "a.jar").stat().st_size == 100
    assert any("corrupt" in n for n in notes)


def test_missing_manifest_means_incomplete(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    assert "MANIFEST" in (provision.verify_entry(tmp_path / "x") or "")


def test_pom_lists_dependencies_with_exclusions() -> None:
    pom = provision._pom([provision.MavenDep("g", "a", "1", (("x", "*"),))])
    assert "<artifactId>a</artifactId><version>1</version>" in pom
    assert "<exclusion><groupId>x</groupId><artifactId>*</artifactId></exclusion>" in pom


def test_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StackError, match="mvn"):
        provision.require_tool("kafka", "mvn", "install Maven")
