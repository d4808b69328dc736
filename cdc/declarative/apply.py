"""Carry out an apply file: observe the registry, plan (cdc.declarative.plan), then run each
action through the service functions the CLI and REST already use (add_source, add_mirror,
remove_mirror ...), in the plan's order.

Each action is what `cdc source add`, `cdc mirror add` or `cdc mirror remove` would do, so a
failure stops the run with the actions before it done and the rest not started: applying
the same file again plans only what remains. Nothing starts while the plan has problems,
or while a password the file points at cannot be read.

Every mirror to create or rebuild goes through `cdc mirror plan`'s checks while planning
(lifecycle.plan_mirror: preflight, then the rules through Flink's planner and Pinot's
validation), on a read-only context, so a rule that cannot work is a problem of the plan and
nothing changes. A rebuild is checked again right before its mirror is removed: a mirror is
never removed for a definition that cannot be added back. Mirrors of a source the same run
registers or changes are checked when applied (add_mirror's own checks, before it creates
anything), since their source cannot be read before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from cdc.core import names
from cdc.core.errors import CdcError, ConflictError, TransientRemoteError, UnreachableError
from cdc.declarative import plan as planning
from cdc.declarative.file import ApplyFile, FileError, MirrorDecl, Problem, SourceDecl
from cdc.mirrors import service, sources
from cdc.postgres import catalog

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _digest(password: str | None) -> str | None:
    """Passwords are compared by digest, so the plan never holds one."""
    return None if password is None else hashlib.sha256(password.encode("utf-8")).hexdigest()


def read_passwords(f: ApplyFile) -> dict[str, str]:
    """source -> the password its password_env / password_file gives; every miss is named."""
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for i, d in enumerate(f.sources):
        if d.password_env:
            if d.password_env in os.environ:
                out[d.name] = os.environ[d.password_env]
            else:
                problems.append(Problem(d.password_line, ("sources", i, "password_env"),
                                        f"environment variable {d.password_env} is not set"))
        elif d.password_file:
            try:
                out[d.name] = Path(d.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                problems.append(Problem(d.password_line, ("sources", i, "password_file"),
                                        f"cannot read {d.password_file}: {why}"))
    if problems:
        raise FileError(f.file, problems)
    return out


def observe(ctx: service.Context) -> planning.Observed:
    """What the registry holds. A read-only context (a plan) writes nothing: the default
    source is computed as it would be registered, not registered."""
    if ctx.read_only:
        default = sources.default_source(ctx.settings)
        regs = [default] + [s for s in ctx.registry.list_sources() if s.name != names.DEFAULT_SOURCE]
    else:
        service.ensure_default_source(ctx)
        regs = ctx.registry.list_sources()
    return planning.Observed(
        sources=regs, mirrors=[m.spec for m in ctx.registry.list_mirrors()],
        password_digests={s.name: _digest(sources.read_password(ctx.settings, s.name)) for s in regs})


def plan_file(ctx: service.Context, f: ApplyFile, *, prune: bool = False,
              local: bool = True) -> planning.Plan:
    """What applying `f` would change; changes nothing. local: see _plan."""
    return _plan(ctx, f, prune, local, applying=False)[0]


def _plan(ctx: service.Context, f: ApplyFile, prune: bool, local: bool,
          applying: bool) -> tuple[planning.Plan, dict[str, str]]:
    """local=True (the CLI): the file comes from whoever runs this process, so its
    password_env / password_file are read here (and a changed password is planned). Over the
    API (local=False) the caller is not this process's user: it never makes the server read its
    own environment or files for a host the caller chose (same rule as POST /sources), so a new
    or changed source that needs them is a problem, and stored passwords are not compared; a
    registered source the file lists without a password keeps its stored one (_keep_passwords).
    applying=False: nothing is written, not even the default source (a read-only context)."""
    passwords = read_passwords(f) if local else {}
    looking = dataclasses.replace(ctx, read_only=True)
    observed = observe(ctx if applying else looking)
    kept: set[str] = set()
    if not local:
        f, kept = _keep_passwords(f, observed)
    p = planning.plan(f, observed, prune=prune,
                      password_digests={k: _digest(v) or "" for k, v in passwords.items()})
    if not local:
        p.problems += _server_file_problems(f, p, kept)
    p.problems += _check_mirrors(looking, f, p)
    return p, passwords


def _keep_passwords(f: ApplyFile, observed: planning.Observed) -> tuple[ApplyFile, set[str]]:
    """Over the API a file cannot name a password (password_env / password_file are refused),
    so a registered source it lists without one keeps the password stored for it, instead of
    being re-registered without it. -> the file as planned, the sources that keep theirs."""
    registered = {s.name: s for s in observed.sources if s.name != names.DEFAULT_SOURCE}
    kept: set[str] = set()
    decls = []
    for d in f.sources:
        old = registered.get(d.name)
        if old is not None and old.has_password and not (d.password_env or d.password_file or d.source.has_password):
            d = dataclasses.replace(d, source=d.source.model_copy(update={"has_password": True}))
            kept.add(d.name)
        decls.append(d)
    return dataclasses.replace(f, sources=tuple(decls)), kept


def _check_mirrors(ctx: service.Context, f: ApplyFile, p: planning.Plan) -> list[str]:
    """`cdc mirror plan`'s checks of every mirror to create or rebuild (module docstring); a
    failure is a problem of the plan. A system that does not answer is an error, not a
    problem of the file."""
    pending = {a.name: "registered" if a.op == "create" else "updated"
               for a in p.actions if a.kind == "source" and a.op in ("create", "update")}
    out = []
    for a in p.actions:
        if a.kind != "mirror" or a.op not in ("create", "update"):
            continue
        d = next(m for m in f.mirrors if m.spec.name == a.name)
        if d.spec.source in pending:
            later = f"rules checked when applied: source {d.spec.source} is {pending[d.spec.source]} first"
            a.how = later if a.op == "create" else f"{a.how}; {later}, before the mirror is removed"
            continue
        try:
            _check(ctx, d)
        except (UnreachableError, TransientRemoteError) as exc:
            exc.message = f"checking mirror {a.name}: {exc.message}"
            raise
        except CdcError as exc:
            out.append(f"{f.file}:{a.line or 1}: mirror {a.name}: {exc.message}"
                       + (f" (hint: {exc.hint})" if exc.hint else ""))
    return out


def _check(ctx: service.Context, d: MirrorDecl) -> None:
    """What add_mirror checks before it creates anything (lifecycle.plan_mirror)."""
    spec = d.spec
    service.plan_mirror(ctx, spec.schema_name, spec.table_name, source=spec.source, name=spec.name,
                        key=spec.key_columns, replica_identity_full=d.replica_identity_full, rules=spec.rules)


def _server_file_problems(f: ApplyFile, p: planning.Plan, kept: set[str]) -> list[str]:
    out = []
    for a in p.actions:
        d = f.source(a.name) if a.kind == "source" and a.op in ("create", "update") else None
        if d is None:
            continue
        if d.name in kept:
            out.append(f"{f.file}:{d.line or 1}: source {d.name} has a stored password, which a file sent over "
                       f"the API keeps; changing the source ({', '.join(c.field for c in a.changes)}) would send "
                       "that password to the new definition, or drop it: not over the API; remove the source "
                       f"(DELETE /sources/{d.name}) and register the new one with POST /sources, or run "
                       "`cdc apply -f FILE` on the server")
            continue
        try:
            parts = conninfo_to_dict(d.dsn)
        except Exception:
            parts = {}
        named = [k for k in ("passfile", "service", "servicefile") if parts.get(k)]
        named += ["password_env"] * bool(d.password_env) + ["password_file"] * bool(d.password_file)
        if named:
            out.append(f"{f.file}:{d.line or 1}: source {d.name}: {', '.join(named)} would make the server read "
                       "its own environment or files for this new or changed source: not over the API; run "
                       "`cdc apply -f FILE` on the server, or register the source with POST /sources")
    return out


def apply_file(ctx: service.Context, f: ApplyFile, *, prune: bool = False, drop_data: bool = False,
               local: bool = True, progress: Progress = _say) -> planning.Plan:
    """Bring the registry to the file. drop_data: mirrors removed by --prune also lose their
    Pinot table and topics (a rebuilt mirror always does: see cdc.declarative.plan)."""
    p, passwords = _plan(ctx, f, prune, local, applying=True)
    if p.problems:
        raise ConflictError("the file cannot be applied as it is:\n" + "\n".join(p.problems),
                            hint="`cdc apply -f FILE --plan` shows the whole plan")
    todo = [a for a in p.actions if a.op in planning.CHANGING]
    for done, action in enumerate(todo):
        progress(f"{planning.SYMBOL[action.op]} {action.describe()}: {action.what}")
        try:
            _carry_out(ctx, f, action, passwords, drop_data, progress)
        except CdcError as exc:
            exc.message = f"{action.describe()} ({action.op}): {exc.message}"
            exc.hint = ((exc.hint + "; ") if exc.hint else "") + (
                f"{done} of {len(todo)} changes were applied before this one; fix the cause and apply the file "
                "again (--plan shows what remains)")
            raise
    p.applied = True
    return p


def _carry_out(ctx: service.Context, f: ApplyFile, a: planning.Action, passwords: dict[str, str],
               drop_data: bool, progress: Progress) -> None:
    if a.kind == "source":
        decl = f.source(a.name)
        if a.op == "remove":
            service.remove_source(ctx, a.name)
        elif a.op == "create":
            assert decl is not None
            _add_source(ctx, decl, passwords)
        elif a.changes and all(c.field == "password" for c in a.changes):
            assert decl is not None
            _rewrite_password(ctx, decl, passwords[a.name])
        else:
            assert decl is not None
            _replace_source(ctx, decl, passwords)
        return
    mirror = next((d for d in f.mirrors if d.spec.name == a.name), None)
    if a.op == "remove":
        service.remove_mirror(ctx, a.name, drop_data=drop_data, progress=progress)
        return
    assert mirror is not None
    if a.op == "update":
        try:
            _check(ctx, mirror)            # again, now: never remove for a definition that cannot come back
        except CdcError as exc:
            exc.message = f"the mirror was not removed: checking its new definition failed: {exc.message}"
            raise
        service.remove_mirror(ctx, a.name, drop_data=True, progress=progress)
    _add_mirror(ctx, mirror, progress)


def _add_source(ctx: service.Context, d: SourceDecl, passwords: dict[str, str]) -> None:
    service.add_source(ctx, d.name, d.dsn, password=passwords.get(d.name), publication=d.source.publication)


def _replace_source(ctx: service.Context, d: SourceDecl, passwords: dict[str, str]) -> None:
    """Remove and register again (the plan allows it only without mirrors); the old source
    and its stored password come back if the new one is refused."""
    old = ctx.registry.get_source(d.name)
    old_password = sources.read_password(ctx.settings, d.name)
    service.remove_source(ctx, d.name)
    try:
        _add_source(ctx, d, passwords)
    except BaseException:
        if old is not None:
            ctx.registry.put_source(old)
            if old_password is not None:
                sources.write_password(ctx.settings, d.name, old_password)
        raise


def _rewrite_password(ctx: service.Context, d: SourceDecl, password: str) -> None:
    """Store another password for a source, once a connection with it works."""
    with catalog.connect(sources.with_password(d.dsn, password)) as conn:
        conn.execute("select 1")
    sources.write_password(ctx.settings, d.name, password)


def _add_mirror(ctx: service.Context, d: MirrorDecl, progress: Progress) -> None:
    spec = d.spec
    service.add_mirror(ctx, spec.schema_name, spec.table_name, source=spec.source, name=spec.name,
                       key=spec.key_columns, replica_identity_full=d.replica_identity_full, rules=spec.rules,
                       progress=progress)
