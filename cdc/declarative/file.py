"""Apply files: read the YAML (or JSON), validate it against schema.json, and turn it into
typed declarations (a Source and MirrorSpecs, each with the line that declared it).

Why the node walk instead of yaml.safe_load: every error must name its file, line and field
(`mirrors.yaml:12: mirrors[1].rules.mask.email: 'sha' is not one of ['hash', 'redact']`).
PyYAML's compose() keeps a mark on every node, so the data is built from the nodes with a
field path -> line map beside it, and jsonschema's error paths find their line there.
Anchors and aliases are refused while composing (_Loader): expanding them lets a file of a few
hundred bytes take hours (or never end), which the REST API's size limit cannot prevent.
Mapping keys are taken as written, so a column named `on`, `no` or `1` stays that string
instead of becoming YAML 1.1's boolean or an integer.

Passwords are never in the file: a DSN that carries one is refused; `password_env` and
`password_file` say where the process that applies finds it (cdc.declarative.apply reads it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from psycopg.conninfo import conninfo_to_dict

from cdc.core import names
from cdc.core.errors import CdcError, ConfigError
from cdc.core.models import MirrorRules, MirrorSpec, Source
from cdc.mirrors.sources import source_from_dsn

Loc = tuple[str | int, ...]
#: file field under `rules:` -> MirrorRules field
RULE_FIELDS = {"include": "include_columns", "exclude": "exclude_columns", "mask": "mask_columns",
               "filter": "row_filter", "compute": "computed_columns", "indexes": "pinot_indexes"}
SCHEMA_HINT = "the format is cdc/declarative/schema.json (README, \"Declarative mirrors\")"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of apply files (package data: cdc/declarative/schema.json)."""
    return json.loads(resources.files("cdc.declarative").joinpath("schema.json").read_text(encoding="utf-8"))


def format_loc(loc: Loc) -> str:
    """("mirrors", 1, "rules", "mask", "email") -> mirrors[1].rules.mask.email"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    line: int | None
    loc: Loc
    message: str

    def format(self, file: str) -> str:
        where = f"{format_loc(self.loc)}: " if self.loc else ""
        return f"{file}:{self.line or 1}: {where}{self.message}"


class FileError(ConfigError):
    """An apply file that cannot be used; the message has one `FILE:LINE: field: why` per problem."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line or 0, format_loc(p.loc)))
        super().__init__("\n".join(p.format(file) for p in self.problems), hint=SCHEMA_HINT)


@dataclass(frozen=True)
class SourceDecl:
    source: Source                 # as the registry would hold it (DSN without password)
    password_env: str | None = None
    password_file: str | None = None
    line: int | None = None
    password_line: int | None = None   # of password_env / password_file

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def dsn(self) -> str:
        return self.source.dsn


@dataclass(frozen=True)
class MirrorDecl:
    spec: MirrorSpec
    replica_identity_full: bool = False   # an allowance for `add`, not part of the mirror's definition
    line: int | None = None


@dataclass(frozen=True)
class ApplyFile:
    file: str                      # how errors name it: the path given, "<stdin>" or "body"
    sources: tuple[SourceDecl, ...] = ()
    mirrors: tuple[MirrorDecl, ...] = ()

    def source(self, name: str) -> SourceDecl | None:
        return next((d for d in self.sources if d.name == name), None)

    def lines(self) -> dict[str, int | None]:
        """("source:NAME" | "mirror:NAME") -> the line that declares it."""
        return {**{f"source:{d.name}": d.line for d in self.sources},
                **{f"mirror:{d.spec.name}": d.line for d in self.mirrors}}


# -- reading ------------------------------------------------------------------------------

def load(path: str | Path) -> ApplyFile:
    """Read and validate a file; "-" reads standard input."""
    import sys
    if str(path) == "-":
        return loads(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {path}: {why}", hint="give a readable YAML or JSON file") from None
    return loads(text, str(path))


@dataclass
class _Tree:
    data: Any
    lines: dict[Loc, int]          # value at loc -> its line
    key_lines: dict[Loc, int]      # key of loc (in its mapping) -> its line


class _Refused(Exception):
    def __init__(self, line: int, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(line, loc, message)


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer, refusing what lets a few bytes cost hours or the stack: anchors
    and aliases (composed nodes are shared, so `*a` repeated at each level makes the walk below
    exponential, and `&a [*a]` makes it endless), and nesting deeper than MAX_DEPTH (the
    composer and the walk recurse). An apply file needs neither: write each value out."""

    MAX_DEPTH = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.path: list[str | int] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        step = index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else None
        if step is not None:
            self.path.append(step)
        try:
            line, loc = event.start_mark.line + 1, tuple(self.path)
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _Refused(line, loc, f"anchors (&{event.anchor}) and aliases (*{event.anchor}) are not "
                                          "accepted in apply files: write each value out")
            if len(self.path) >= self.MAX_DEPTH:
                raise _Refused(line, loc, f"nested deeper than {self.MAX_DEPTH} levels (an apply file needs a "
                                          "handful)")
            return super().compose_node(parent, index)
        finally:
            if step is not None:
                self.path.pop()


def _compose(text: str, file: str) -> _Tree:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except _Refused as exc:
        raise FileError(file, [exc.problem]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        why = ", ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None))))
        why = why or str(exc).splitlines()[0]
        raise FileError(file, [Problem(mark.line + 1 if mark else None, (), f"not valid YAML: {why}")]) from None
    if root is None:
        raise FileError(file, [Problem(1, (), "the file is empty: expected `sources:` and/or `mirrors:`")])
    tree = _Tree(None, {}, {})
    problems: list[Problem] = []
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, loc: Loc) -> Any:
        tree.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    problems.append(Problem(knode.start_mark.line + 1, loc, "a key must be a plain name"))
                    continue
                key = str(knode.value)
                if not _clean(key):
                    problems.append(Problem(knode.start_mark.line + 1, loc, "a key must be UTF-8 text without NUL"))
                    continue
                if key in out:
                    problems.append(Problem(knode.start_mark.line + 1, loc + (key,), "duplicate key"))
                tree.key_lines[loc + (key,)] = knode.start_mark.line + 1
                out[key] = build(vnode, loc + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, loc + (i,)) for i, item in enumerate(node.value)]
        try:
            value = constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problems.append(Problem(node.start_mark.line + 1, loc, f"unreadable value: {exc}"))
            return None
        if isinstance(value, str) and not _clean(value):
            problems.append(Problem(node.start_mark.line + 1, loc, "must be UTF-8 text without NUL characters"))
        return value

    tree.data = build(root, ())
    if problems:
        raise FileError(file, problems)
    return tree


def _clean(text: str) -> bool:
    """No NUL (libpq and C strings end there) and no lone surrogate (JSON's "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problems(tree: _Tree) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema())
    out: list[Problem] = []
    for err in validator.iter_errors(tree.data):
        loc: Loc = tuple(err.absolute_path)
        line = tree.lines.get(loc)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                out.append(Problem(tree.key_lines.get(loc + (key,), line), loc + (key,),
                                   f"unknown field (expected one of: {', '.join(allowed)})"))
            continue
        if err.validator == "required" and isinstance(err.instance, dict):
            missing = [r for r in err.validator_value if r not in err.instance]
            out.append(Problem(line, loc, f"missing required field{'s' if len(missing) > 1 else ''} "
                                          f"{', '.join(missing)}"))
            continue
        if err.validator == "type":
            out.append(Problem(line, loc, f"{_short(err.instance)} is not of type {err.validator_value!r}"))
            continue
        if err.validator == "pattern":
            out.append(Problem(line, loc, f"{_short(err.instance)} does not match {err.validator_value!r}"))
            continue
        out.append(Problem(line, loc, err.message))
    return out


# -- meaning (beyond the schema) -----------------------------------------------------------

def loads(text: str, file: str = "body") -> ApplyFile:
    """Validate `text` (YAML, or JSON, which is YAML) and return its declarations; FileError
    names every problem at once."""
    tree = _compose(text, file)
    problems = _schema_problems(tree)
    if problems:
        raise FileError(file, problems)
    data: dict[str, Any] = tree.data
    sources = [_source(i, raw, tree, problems) for i, raw in enumerate(data.get("sources") or [])]
    declared = {raw["name"] for raw in data.get("sources") or []}
    mirrors = [_mirror(i, raw, tree, declared, problems) for i, raw in enumerate(data.get("mirrors") or [])]
    _duplicates(sources, mirrors, tree, problems)
    if problems:
        raise FileError(file, problems)
    return ApplyFile(file=file, sources=tuple(d for d in sources if d is not None),
                     mirrors=tuple(d for d in mirrors if d is not None))


def _source(i: int, raw: dict[str, Any], tree: _Tree, problems: list[Problem]) -> SourceDecl | None:
    at: Loc = ("sources", i)
    name, dsn = raw["name"], raw["dsn"]
    start = len(problems)
    if name == names.DEFAULT_SOURCE:
        problems.append(Problem(tree.lines.get(at + ("name",)), at + ("name",),
                                "'default' is the stack's Postgres (or CDC_POSTGRES_DSN): mirrors name it "
                                "without declaring it"))
    if raw.get("password_env") and raw.get("password_file"):
        problems.append(Problem(tree.key_lines.get(at + ("password_file",)), at + ("password_file",),
                                "give password_env or password_file, not both"))
    try:
        inline = conninfo_to_dict(dsn).get("password")
    except Exception:
        inline = None        # source_from_dsn below says why it cannot be parsed
    if inline:
        problems.append(Problem(tree.lines.get(at + ("dsn",)), at + ("dsn",),
                                "the DSN holds a password: remove it and give password_env (an environment "
                                "variable's name) or password_file (a file's path) instead"))
    src = None
    if len(problems) == start:
        try:
            src = source_from_dsn(name, dsn, publication=raw.get("publication"))
        except CdcError as exc:
            problems.append(Problem(tree.lines.get(at + ("dsn",)), at + ("dsn",),
                                    exc.message + (f" ({exc.hint})" if exc.hint else "")))
    if src is None:
        return None
    # as add_source would record it: a password from the file's fields (or a passfile the DSN names)
    has_password = bool(raw.get("password_env") or raw.get("password_file")) or src.has_password
    pw_field = "password_env" if raw.get("password_env") else "password_file"
    return SourceDecl(src.model_copy(update={"has_password": has_password}), raw.get("password_env"),
                      raw.get("password_file"), tree.lines.get(at), tree.lines.get(at + (pw_field,)))


def _mirror(i: int, raw: dict[str, Any], tree: _Tree, declared: set[str],
            problems: list[Problem]) -> MirrorDecl | None:
    at: Loc = ("mirrors", i)
    start = len(problems)
    source = raw.get("source", names.DEFAULT_SOURCE)
    if source != names.DEFAULT_SOURCE and source not in declared:
        problems.append(Problem(tree.lines.get(at + ("source",)), at + ("source",),
                                f"unknown source {source!r}: declare it under `sources:` (only 'default' "
                                f"needs no declaration)"))
    try:
        schema_name, table = names.split_table(raw["table"])
    except ConfigError as exc:
        problems.append(Problem(tree.lines.get(at + ("table",)), at + ("table",), f"{exc.message} ({exc.hint})"))
        schema_name = table = ""
    if raw.get("replica_identity_full") and not raw.get("key"):
        problems.append(Problem(tree.key_lines.get(at + ("replica_identity_full",)), at + ("replica_identity_full",),
                                "only applies to a mirror with `key` (a table without a primary key)"))
    if len(problems) > start:
        return None
    rules = MirrorRules(**{RULE_FIELDS[k]: v for k, v in (raw.get("rules") or {}).items()})
    spec = MirrorSpec(name=raw.get("name") or names.mirror_name(schema_name, table, source), source=source,
                      schema_name=schema_name, table_name=table, key_columns=raw.get("key"), rules=rules)
    return MirrorDecl(spec, bool(raw.get("replica_identity_full")), tree.lines.get(at))


def _duplicates(sources: list[SourceDecl | None], mirrors: list[MirrorDecl | None], tree: _Tree,
                problems: list[Problem]) -> None:
    seen: dict[Any, int] = {}
    for i, d in enumerate(sources):
        if d is not None:
            if (j := seen.setdefault(("s", d.name), i)) != i:
                problems.append(Problem(tree.lines.get(("sources", i, "name")), ("sources", i, "name"),
                                        f"source {d.name!r} is already declared by sources[{j}]"))
    for i, m in enumerate(mirrors):
        if m is None:
            continue
        sp = m.spec
        if (j := seen.setdefault(("m", sp.name), i)) != i:
            field = "name" if ("mirrors", i, "name") in tree.lines else "table"
            problems.append(Problem(tree.lines.get(("mirrors", i, field)), ("mirrors", i, field),
                                    f"mirror name {sp.name!r} is already used by mirrors[{j}]"))
        elif (j := seen.setdefault(("t", sp.source, sp.schema_name, sp.table_name), i)) != i:
            problems.append(Problem(tree.lines.get(("mirrors", i, "table")), ("mirrors", i, "table"),
                                    f"{sp.qualified} of source {sp.source!r} is already mirrored by mirrors[{j}]"))
