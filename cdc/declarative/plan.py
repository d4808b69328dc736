"""What applying a file would change: a pure function from (declarations, what the registry
holds) to an ordered list of actions. No server, no registry: tests are table-driven.

Why these rules:
  * A mirror is identified by its name. A changed definition (table, source, key, rules) is
    an *update* carried out as a rebuild: the mirror is removed with its data, then added
    again, so a fresh snapshot fills it. Nothing less is exact: the flat topic is compacted
    and keeps each key's last record in the old shape (an unmasked value, a column now
    excluded, a row a new filter would drop, the old key), and a resync (ops.resync_mirror)
    only re-reads rows through the job and Pinot table that already exist: it neither
    redeploys the job nor deletes rows the new definition no longer holds.
  * A source's database cannot change under its mirrors (their slot, publication and change
    topics belong to the old one): a changed source is replaced only when no mirror uses it
    after this apply's removals; otherwise the plan reports a problem and nothing is applied.
    A changed password alone is safe (the secrets file is rewritten).
  * Without prune, what the file does not name is listed as "kept" and left alone; with
    prune, mirrors the file does not name are removed, then sources the file does not name
    (by then none of their mirrors remains). `default` is never removed or changed.

Order: mirror removals, source replacements, password changes, new sources, mirror
rebuilds, new mirrors, source removals; so a source exists before its mirrors and goes
after them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, Field, computed_field

from cdc.core import names
from cdc.core.models import MirrorRules, MirrorSpec, Source
from cdc.declarative.file import RULE_FIELDS, ApplyFile

Op = Literal["create", "update", "remove", "kept", "unchanged"]
CHANGING: frozenset[str] = frozenset({"create", "update", "remove"})
SYMBOL = {"create": "+", "update": "~", "remove": "-", "kept": " ", "unchanged": "="}
_RULE_NAMES = {v: k for k, v in RULE_FIELDS.items()}     # MirrorRules field -> file field


class FieldChange(BaseModel):
    field: str = Field(description="the file's name for it, e.g. rules.exclude")
    old: Any = None
    new: Any = None


class Action(BaseModel):
    op: Op
    kind: Literal["source", "mirror"]
    name: str
    what: str = Field(description="the mirror's table and source, or the source's DSN (no password)")
    line: int | None = Field(default=None, description="where the file declares it")
    changes: list[FieldChange] = Field(default_factory=list)
    how: str | None = Field(default=None, description="how an update or removal is carried out")

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


class Plan(BaseModel):
    file: str
    prune: bool = False
    actions: list[Action] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="why the file cannot be applied as it is")
    applied: bool = Field(default=False, description="the actions were carried out (not a plan only)")

    @computed_field   # type: ignore[prop-decorator]
    @property
    def changed(self) -> bool:
        """True when applying would change something (a plan exits 2 then)."""
        return any(a.op in CHANGING for a in self.actions)

    def count(self, op: str) -> int:
        return sum(a.op == op for a in self.actions)


@dataclass(frozen=True)
class Observed:
    """What the registry holds. password_digests: source -> digest of its stored password."""

    sources: list[Source] = field(default_factory=list)
    mirrors: list[MirrorSpec] = field(default_factory=list)
    password_digests: Mapping[str, str | None] = field(default_factory=dict)


# -- field-level differences ---------------------------------------------------------------

def _dsn_parts(dsn: str) -> dict[str, str]:
    """Two spellings of one DSN (URL or key=value, as the registry keeps it after a password
    was given) compare equal."""
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return {"dsn": dsn}
    parts.pop("password", None)
    return {k: str(v) for k, v in parts.items() if v is not None}


def source_changes(old: Source, new: Source) -> list[FieldChange]:
    out = []
    if _dsn_parts(old.dsn) != _dsn_parts(new.dsn):
        out.append(FieldChange(field="dsn", old=old.dsn, new=new.dsn))
    for name in Source.model_fields:
        if name in ("name", "dsn", "database", "host", "port", "user") or name.startswith("ssl"):
            continue            # the DSN's parts: its difference says it all
        if getattr(old, name) != getattr(new, name):
            out.append(FieldChange(field=name, old=getattr(old, name), new=getattr(new, name)))
    return out


#: MirrorSpec fields an apply file writes, and those cdc derives when it plans the mirror
#: (computed_types: Flink's planner types rules.computed_columns); a derived one is never a
#: difference. Any other MirrorSpec field is compared under its own name.
SPEC_FIELDS = frozenset({"name", "source", "schema_name", "table_name", "key_columns", "rules"})
DERIVED_SPEC_FIELDS = frozenset({"computed_types"})


def mirror_fields(spec: MirrorSpec) -> dict[str, Any]:
    """A mirror's definition under the file's field names; any MirrorSpec or MirrorRules field
    without a file name appears under its own, so no difference goes unseen."""
    out: dict[str, Any] = {"table": spec.qualified, "source": spec.source, "key": spec.key_columns}
    for name in MirrorSpec.model_fields:
        if name not in SPEC_FIELDS | DERIVED_SPEC_FIELDS:
            out[name] = getattr(spec, name)
    for name in MirrorRules.model_fields:
        out[f"rules.{_RULE_NAMES.get(name, name)}"] = getattr(spec.rules, name)
    return out


def mirror_changes(old: MirrorSpec, new: MirrorSpec) -> list[FieldChange]:
    if (old.schema_name, old.table_name) != (new.schema_name, new.table_name):
        tables = [FieldChange(field="table", old=old.qualified, new=new.qualified)]
    else:
        tables = []
    a, b = mirror_fields(old), mirror_fields(new)
    return tables + [FieldChange(field=k, old=a[k], new=b[k]) for k in a if k != "table" and a[k] != b[k]]


def _mirror_what(spec: MirrorSpec) -> str:
    return f"{spec.qualified} of source {spec.source}"


# -- the plan ----------------------------------------------------------------------------------

def plan(f: ApplyFile, observed: Observed, *, prune: bool = False,
         password_digests: Mapping[str, str] | None = None) -> Plan:
    """password_digests: source -> digest of the password the file points at (read by the
    caller), compared with the stored one for sources that exist."""
    wanted_pw = password_digests or {}
    reg_sources = {s.name: s for s in observed.sources if s.name != names.DEFAULT_SOURCE}
    reg_mirrors = {m.name: m for m in observed.mirrors}
    want_mirrors = {d.spec.name: d for d in f.mirrors}
    want_sources = {d.name for d in f.sources}
    lines = f.lines()
    problems: list[str] = []
    out: dict[str, list[Action]] = {k: [] for k in ("mirror-", "source~", "password~", "source+", "mirror~",
                                                    "mirror+", "source-", "kept", "unchanged")}

    removed: set[str] = set()
    for name, spec in sorted(reg_mirrors.items()):
        if name in want_mirrors:
            continue
        if prune:
            removed.add(name)
            out["mirror-"].append(Action(op="remove", kind="mirror", name=name, what=_mirror_what(spec),
                                         how="not in the file (--prune)"))
        else:
            out["kept"].append(Action(op="kept", kind="mirror", name=name, what=_mirror_what(spec),
                                      how="not in file, kept (--prune removes it)"))

    for d in f.sources:
        old = reg_sources.get(d.name)
        line = lines.get(f"source:{d.name}")
        if old is None:
            out["source+"].append(Action(op="create", kind="source", name=d.name, what=d.dsn, line=line))
            continue
        changes = source_changes(old, d.source)
        if changes:
            users = sorted(m.name for m in reg_mirrors.values() if m.source == d.name and m.name not in removed)
            if users:
                problems.append(
                    f"{f.file}:{line or 1}: source {d.name} differs from the registered one "
                    f"({', '.join(c.field for c in changes)}) and mirrors use it: {', '.join(users)}. A source's "
                    "database cannot change under its mirrors: take them out of the file and apply with "
                    "--prune, apply the changed source, then add them back (or declare a new source)")
            out["source~"].append(Action(op="update", kind="source", name=d.name, what=d.dsn, line=line,
                                         changes=changes, how="replace: removed and registered again"))
        elif d.name in wanted_pw and old.has_password and \
                wanted_pw[d.name] != observed.password_digests.get(d.name):
            out["password~"].append(Action(
                op="update", kind="source", name=d.name, what=d.dsn, line=line,
                changes=[FieldChange(field="password", old="***", new="*** (another)")],
                how="rewrite the stored password (the connector reads it when its task next starts)"))
        else:
            out["unchanged"].append(Action(op="unchanged", kind="source", name=d.name, what=d.dsn, line=line))

    taken = {(m.source, m.schema_name, m.table_name): m.name for m in reg_mirrors.values() if m.name not in removed}
    for d in f.mirrors:
        spec, line = d.spec, lines.get(f"mirror:{d.spec.name}")
        old = reg_mirrors.get(spec.name)
        if old is None:
            holder = taken.get((spec.source, spec.schema_name, spec.table_name))
            if holder is not None and holder not in want_mirrors:
                problems.append(f"{f.file}:{line or 1}: {spec.qualified} of source {spec.source} is mirrored as "
                                f"{holder!r}, which the file does not name: apply with --prune to replace it, or "
                                f"name this mirror {holder!r}")
            out["mirror+"].append(Action(op="create", kind="mirror", name=spec.name, what=_mirror_what(spec),
                                         line=line))
            continue
        changes = mirror_changes(old, spec)
        if changes:
            out["mirror~"].append(Action(op="update", kind="mirror", name=spec.name, what=_mirror_what(spec),
                                         line=line, changes=changes,
                                         how="rebuild: removed with its data, then added again (a new snapshot)"))
        else:
            out["unchanged"].append(Action(op="unchanged", kind="mirror", name=spec.name, what=_mirror_what(spec),
                                           line=line))

    moving = {d.spec.name for d in f.mirrors if d.spec.name in reg_mirrors}
    for name, src in sorted(reg_sources.items()):
        if name in want_sources:
            continue
        # with prune, every mirror of an undeclared source is removed or moves to a declared one
        users = sorted(m.name for m in reg_mirrors.values() if m.source == name and m.name not in removed
                       and m.name not in moving)
        if prune and not users:
            out["source-"].append(Action(op="remove", kind="source", name=name, what=src.dsn,
                                         how="not in the file (--prune)"))
        else:
            why = f"used by {', '.join(users)}" if users else "--prune removes it"
            out["kept"].append(Action(op="kept", kind="source", name=name, what=src.dsn,
                                      how=f"not in file, kept ({why})"))
    return Plan(file=f.file, prune=prune, actions=[a for group in out.values() for a in group], problems=problems)


# -- text ------------------------------------------------------------------------------------

def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    return json.dumps(v, ensure_ascii=False, default=str)


def format_plan(p: Plan, *, verbose: bool = False) -> str:
    """One line per action (+ create, ~ update with its field differences, - remove), the
    kept ones, the problems, and a summary line; unchanged ones only with verbose."""
    lines: list[str] = []
    for a in p.actions:
        if a.op == "unchanged" and not verbose:
            continue
        head = f"{SYMBOL[a.op]} {a.kind} {a.name}: {a.what}"
        lines.append(head + (f"  ({a.how})" if a.how and a.op != "update" else ""))
        if a.op == "update":
            lines.append(f"    how: {a.how}")
            lines += [f"    {c.field}: {_value(c.old)} -> {_value(c.new)}" for c in a.changes]
    lines += [f"problem: {why}" for why in p.problems]
    counts = [f"{p.count(op)} to {op}" for op in ("create", "update", "remove") if p.count(op)]
    tail = f"{p.count('unchanged')} unchanged" + (f", {p.count('kept')} kept (not in file)" if p.count("kept") else "")
    if p.applied:
        done = [f"{p.count(op)} {op}d" for op in ("create", "update", "remove") if p.count(op)]
        lines.append(f"applied: {', '.join(done) or 'nothing to change'}; {tail}")
    else:
        lines.append(f"plan: {', '.join(counts) if counts else 'no changes'}; {tail}")
    return "\n".join(lines)
