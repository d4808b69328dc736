"""`cdc source ...`, `cdc mirror ...` and `cdc query`: thin wrappers over cdc.mirrors.service."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cdc.core import names
from cdc.mirrors import service


def _split_table(qualified: str) -> tuple[str, str]:
    """SCHEMA.TABLE, with "double quotes" for names containing dots; no schema = public."""
    return names.split_table(qualified)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [["NULL" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({len(rows)} rows)"


def _ctx() -> service.Context:
    return service.context()


def _password(a: argparse.Namespace) -> str | None:
    """The password from --password-env, --password-file or --password-prompt (never argv)."""
    import os
    import sys
    from pathlib import Path

    from cdc.core.errors import ConfigError
    if a.password_env:
        if a.password_env not in os.environ:
            raise ConfigError(f"environment variable {a.password_env} is not set", hint="export it, then retry")
        return os.environ[a.password_env]
    if a.password_file:
        try:
            return Path(a.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the password file {a.password_file}: {exc.strerror}",
                              hint="give a readable file holding only the password") from None
    if a.password_prompt:
        import getpass
        if not sys.stdin.isatty():
            return sys.stdin.readline().rstrip("\r\n")
        return getpass.getpass(f"password for source {a.name}: ")
    return None


def cmd_source_add(a: argparse.Namespace) -> int:
    src = service.add_source(_ctx(), a.name, a.dsn, password=_password(a), publication=a.publication)
    print(f"source {src.name}: {src.dsn}")
    return 0


def cmd_source_list(a: argparse.Namespace) -> int:
    ctx = _ctx()
    service.ensure_default_source(ctx)
    for s in ctx.registry.list_sources():
        print(f"{s.name}\t{s.dsn}")
    return 0


def _pairs(flag: str, items: list[str] | None, *, last: bool = True) -> dict[str, str]:
    """["a=x", "b=y"] -> {"a": "x", "b": "y"}; split at the last '=' (column names may hold one),
    or at the first (last=False: --compute NAME=EXPR, where the expression may hold them)."""
    from cdc.core.errors import ConfigError
    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.rpartition("=") if last else item.partition("=")
        if not sep or not k or not v.strip():
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE", hint=f"e.g. {flag} {_EXAMPLES[flag]}")
        out[k] = v.strip()
    return out


_EXAMPLES = {"--mask": "email=hash", "--compute": "total='qty * price'", "--index": "region=inverted,range",
             "--computed": "total='qty * price'"}


def _columns(values: list[str] | None) -> list[str]:
    return [c.strip() for v in values or [] for c in v.split(",") if c.strip()]


def _rules(a: argparse.Namespace) -> Any:
    """MirrorRules from --include/--exclude/--mask/--filter/--compute/--index (None: no rules)."""
    from pydantic import ValidationError

    from cdc.core.errors import ConfigError
    from cdc.core.models import MirrorRules
    try:
        rules = MirrorRules(include_columns=_columns(a.include) if a.include else None,
                            exclude_columns=_columns(a.exclude),
                            mask_columns=_pairs("--mask", a.mask), row_filter=a.filter,
                            computed_columns=_pairs("--compute", a.compute, last=False),
                            pinot_indexes={c: _columns([k]) for c, k in _pairs("--index", a.index).items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = {"mask_columns": "--mask", "pinot_indexes": "--index"}.get(str(err["loc"][0]), str(err["loc"][0]))
        raise ConfigError(f"{flag}: {err['msg']} (got {err.get('input')!r})",
                          hint="--mask COL=hash|redact; --index COL=inverted|range|json|text|no_dictionary[,...]"
                          ) from None
    return None if rules.is_empty() else rules


def cmd_mirror_plan(a: argparse.Namespace) -> int:
    from cdc.mapping.rules import redact_salt
    schema, table = _split_table(a.table)
    p = service.plan_mirror(_ctx(), schema, table, source=a.source, name=a.name, key=a.key, rules=_rules(a))
    p.connector = redact_salt(p.connector)           # shown, never the hash salt
    ctx = _ctx()
    pend = None
    if ctx.registry.get_mirror(p.spec.name) is not None:      # an existing mirror: what a change will do
        from cdc.mirrors import schema_change
        pend = schema_change.pending(ctx, p.spec.name)
    if a.json:
        print(json.dumps({"name": p.spec.name, "connector": p.connector, "flink_sql": p.flink_sql,
                          "pinot_schema": p.pinot_schema, "pinot_table": p.pinot_table, "pending": pend}, indent=2))
        return 0
    if pend:
        print(f"# PENDING for existing mirror {p.spec.name}: {pend['action']}: {pend['why']}\n"
              f"#   the reconciler will {pend['what_it_does']}\n#   columns before [{', '.join(pend['before'])}]"
              f"\n#   columns after  [{', '.join(pend['after'])}]\n")
    print(f"# mirror {p.spec.name}: {p.spec.qualified} of source {p.source.name}")
    print(f"# change topic {p.change_topic} -> flat topic {p.flat_topic} -> Pinot table {p.spec.name}\n")
    print(f"## Debezium connector {names.connector_name(p.source.name)} (PUT /connectors/NAME/config)")
    print(json.dumps(p.connector, indent=2))
    print("\n## Flink SQL job")
    print(";\n\n".join(p.flink_sql) + ";")
    print("\n## Pinot schema")
    print(json.dumps(p.pinot_schema, indent=2))
    print("\n## Pinot REALTIME table")
    print(json.dumps(p.pinot_table, indent=2))
    return 0


def cmd_mirror_add(a: argparse.Namespace) -> int:
    schema, table = _split_table(a.table)
    from cdc.cli.load_bar import LoadBar
    with LoadBar(sys.stderr) as bar:     # a bar on a terminal, plain periodic lines otherwise
        rec = service.add_mirror(_ctx(), schema, table, source=a.source, name=a.name, key=a.key,
                                 replica_identity_full=a.replica_identity_full, rules=_rules(a), load=a.load,
                                 progress=bar.say, on_load=bar.update if bar.tty else None)
    print(rec.name)
    return 0


def cmd_mirror_list(a: argparse.Namespace) -> int:
    mirrors = _ctx().registry.list_mirrors()
    if a.json:
        print(json.dumps([m.model_dump(mode="json") for m in mirrors], indent=2))
    else:
        print(_table(["NAME", "SOURCE", "TABLE", "STATE", "FLINK JOB"],
                     [[m.name, m.spec.source, m.spec.qualified, m.state, m.flink_job_id] for m in mirrors]))
    return 0


def _snapshot_line(snap: dict) -> str:
    if "error" in snap:
        return f"unknown ({snap['error']})"
    if snap.get("state") == "not_used":
        return f"not used: {snap.get('reason')}"
    rows = "?" if snap.get("rows") is None else f"{snap['rows']:,}"
    est = f" of ~{snap['estimate']:,}" if snap.get("estimate") is not None and snap.get("state") != "done" else ""
    why = f" ({snap['reason']})" if snap.get("reason") else ""
    return f"{snap.get('kind') or ''} {snap.get('state')}: {rows}{est} rows{why}".strip()


def cmd_mirror_status(a: argparse.Namespace) -> int:
    st = service.mirror_status(_ctx(), a.name)
    if a.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        conn = st.get("connector") or {}
        tasks = ",".join(f"{t['id']}:{t['state']}" for t in conn.get("tasks", []))
        print(f"mirror     {st['name']} ({st['table']} of {st['source']}): {st['state']}")
        print(f"snapshot   {_snapshot_line(st.get('snapshot') or {})}")
        if st.get("load"):
            from cdc.mirrors import load_progress
            print(f"load       {load_progress.line(load_progress.from_dict(st['load']))}"
                  + (f" ({st['load']['reason']})" if st["load"].get("reason") else ""))
        print(f"connector  {conn.get('name')} {conn.get('state', conn.get('error'))} tasks [{tasks}]")
        print(f"flink job  {st['flink_job'].get('id')} {st['flink_job'].get('state', st['flink_job'].get('error'))}")
        change = (st.get("schema") or {}).get("last_change")
        if change:
            print(f"schema     last change {change['ts']}: {change['reason']}")
        if rb := st.get("rebuild"):
            snap = rb.get("copy") or rb.get("snapshot") or {}
            how = "copy load" if rb.get("copy") else "snapshot"
            print(f"rebuild    generation {rb['serving_generation']} answers while {rb['generation']} fills "
                  f"({rb['elapsed_s']}s): {rb['reason']}\n           {how} {snap.get('state')} "
                  f"({snap.get('rows') or 0} rows read); job committed offset {rb.get('copied')} of {rb.get('change_topic_end')}")
        slot = st.get("slot") or {}
        if "error" in slot:
            print(f"slot       {slot.get('name', '')} {slot['error']}" + (f"\n           hint: {slot['hint']}"
                                                                      if slot.get("hint") else ""))
        else:
            warn = "  WARNING: over the threshold, is the connector running?" if slot.get("warning") else ""
            mib = (slot.get("wal_retained_bytes") or 0) / 2**20
            print(f"slot       {slot.get('name')} retains {mib:.1f} MiB of WAL "
                  f"(warn above {slot.get('warn_threshold_bytes', 0) / 2**20:.0f} MiB){warn}")
        if rep := slot.get("repair"):
            print(f"           lost-slot repair: {rep['state']} at {rep['ts']}: {rep['reason']}")
        dl = st.get("dead_letters") or {}
        if st.get("degraded"):
            latest = dl.get("latest") or {}
            print(f"DEGRADED   {dl['count']} dead letter(s) in {names.dead_letter_topic(st['name'])}; latest: key "
                  f"{latest.get('mirror_key')} {latest.get('reason')} (offset {latest.get('change_offset')})\n"
                  f"           hint: {dl.get('hint')}")
        elif "error" in dl:
            print(f"dead lttrs unknown: {dl['error']}")
        pinot = st["pinot"]
        if not pinot["enabled"]:
            print(f"pinot      disabled: {pinot['reason']} (data ends at topic {st['flat_topic']})")
        else:
            print(f"pinot      rows={pinot.get('rows')} {pinot.get('error', '')}")
    healthy = st["state"] == "running" and (st.get("connector") or {}).get("state") == "RUNNING" \
        and st["flink_job"].get("state") == "RUNNING" \
        and not (st.get("slot") or {}).get("lost") and not st.get("degraded")
    return 0 if healthy else 1


def cmd_mirror_remove(a: argparse.Namespace) -> int:
    service.remove_mirror(_ctx(), a.name, drop_data=a.drop_data)
    return 0


def cmd_mirror_verify(a: argparse.Namespace) -> int:
    from cdc.mirrors import verify
    report = verify.verify_mirror(_ctx(), a.name, chunk_rows=a.chunk_rows, settle_timeout=a.settle_timeout,
                                  progress=None if a.json else lambda m: print(m, file=__import__("sys").stderr),
                                  computed_sql=_pairs("--computed", a.computed, last=False))
    print(report.model_dump_json(indent=2) if a.json else verify.format_report(report))
    return report.exit_code


def _op(fn_name: str, a: argparse.Namespace) -> int:
    from cdc.mirrors import ops
    fn = getattr(ops, fn_name)
    if fn_name == "resync_and_wait":        # progress on stderr: stdout stays the result (--json)
        from cdc.cli.load_bar import LoadBar
        bar = LoadBar(sys.stderr)
        result = fn(_ctx(), a.name, progress=bar.say, on_load=bar.update if bar.tty else None)
    else:
        result = fn(_ctx(), a.name)
    print(json.dumps({"name": a.name, "action": a.mc, "result": result}, default=str) if a.json else
          f"mirror {a.name}: {a.mc} done{f' ({result})' if result else ''}")
    return 0


def cmd_source_remove(a: argparse.Namespace) -> int:
    removed = service.remove_source(_ctx(), a.name)
    print(json.dumps({"name": a.name, "removed": removed}) if a.json else
          f"source {a.name}: {'removed' if removed else 'was not registered'}")
    return 0


def cmd_query(a: argparse.Namespace) -> int:
    import sys
    ctx = _ctx()
    cols, rows = service.query(ctx, a.sql)
    print(json.dumps([dict(zip(cols, r)) for r in rows], default=str) if a.json else _table(cols, rows))
    print(f"(answered by {service.answered_by(ctx)})", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    src = sub.add_parser("source", help="Postgres databases to mirror from").add_subparsers(dest="sc", required=True)
    p = src.add_parser("add", help="register a database (one connector and one replication slot each)")
    p.add_argument("name")
    p.add_argument("--dsn", required=True,
                   help="postgresql://USER@HOST:PORT/DB (or key=value); a password here is visible in the "
                        "process list: prefer one of the --password-* options. TLS: add "
                        "?sslmode=verify-full&sslrootcert=/abs/ca.crt (and sslcert/sslkey for client certificates)")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    pw.add_argument("--password-file", metavar="FILE", help="read the password from this file (one line)")
    pw.add_argument("--password-prompt", action="store_true",
                    help="ask for the password (reads one line from stdin when it is not a terminal)")
    p.add_argument("--publication", metavar="NAME",
                   help="a publication your DBA created and maintains (managed Postgres, least privilege): cdc "
                        "never creates, alters or drops it, and checks that each mirrored table is in it")
    p.set_defaults(func=cmd_source_add)
    src.add_parser("list").set_defaults(func=cmd_source_list)
    p = src.add_parser("remove", help="forget a source and its stored password (refused while mirrors use it)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_source_remove)

    m = sub.add_parser("mirror", help="Pinot mirrors of Postgres tables").add_subparsers(dest="mc", required=True)
    for verb, fn, helptext in (("plan", cmd_mirror_plan, "print the three generated artifacts; change nothing"),
                               ("add", cmd_mirror_add, "create the mirror; prints its name")):
        p = m.add_parser(verb, help=helptext)
        p.add_argument("table", metavar="SCHEMA.TABLE")
        p.add_argument("--source", default=names.DEFAULT_SOURCE)
        p.add_argument("--name", help="mirror name (default: lowercase schema_table, see README)")
        p.add_argument("--key", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                       help="key columns for a table without a primary key (needs REPLICA IDENTITY FULL)")
        g = p.add_argument_group("column rules (README: Column rules)")
        g.add_argument("--include", action="append", metavar="COL[,COL]",
                       help="mirror only these columns (and the key)")
        g.add_argument("--exclude", action="append", metavar="COL[,COL]",
                       help="leave these columns out: they never reach Kafka")
        g.add_argument("--mask", action="append", metavar="COL=hash|redact",
                       help="hash (salted SHA-256, joinable) or redact (********) a text column before Kafka")
        g.add_argument("--filter", metavar="SQL", help="mirror only rows matching this Flink SQL predicate")
        g.add_argument("--compute", action="append", metavar="NAME=EXPR",
                       help="an extra mirror column computed by this Flink SQL expression over the row")
        g.add_argument("--index", action="append", metavar="COL=KIND[,KIND]",
                       help="Pinot index: inverted, range, json, text, no_dictionary")
        if verb == "plan":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("--replica-identity-full", action="store_true",
                           help="with --key on a table without primary key: run ALTER TABLE ... REPLICA "
                                "IDENTITY FULL so UPDATE/DELETE events carry the whole old row (more WAL)")
            p.add_argument("--load", choices=["copy", "debezium"], default=None,
                           help="how the existing rows are read: parallel COPY straight into the flat topic, or "
                                "Debezium's snapshot (default: CDC_INITIAL_LOAD, copy; README: Initial load)")
        p.set_defaults(func=fn)
    p = m.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mirror_list)
    p = m.add_parser("status")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mirror_status)
    p = m.add_parser("remove")
    p.add_argument("name")
    p.add_argument("--drop-data", action="store_true", help="also drop the Pinot table and the Kafka topics")
    p.set_defaults(func=cmd_mirror_remove)

    p = m.add_parser("verify", help="compare Postgres and the mirror row by row; exit 0 only when identical")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--settle-timeout", type=float, default=60.0,
                   help="seconds to re-check keys that differ while changes are in flight")
    p.add_argument("--computed", action="append", metavar="NAME=POSTGRES_SQL",
                   help="compare computed column NAME with this Postgres expression (else it is not compared)")
    p.set_defaults(func=cmd_mirror_verify)

    for verb, fn_name, helptext in (
            ("pause", "pause_mirror", "stop the Flink job with a savepoint; the change topic keeps filling"),
            ("resume", "resume_mirror", "restart the Flink job from its pause savepoint"),
            ("resync", "resync_and_wait", "rebuild the mirror from a fresh read of the table (the copy load, or "
                                          "Debezium's incremental snapshot, into a new generation, switched to when "
                                          "complete; no gap)"),
            ("restore", "restore_job", "restart a failed or missing Flink job from its newest checkpoint")):
        p = m.add_parser(verb, help=helptext)
        p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=lambda a, fn_name=fn_name: _op(fn_name, a))

    p = sub.add_parser("demo", help="stack up, a demo table, its mirror, a query before/after a live change")
    p.add_argument("--rows", type=int, default=1000)
    p.set_defaults(func=lambda a: __import__("cdc.cli.demo", fromlist=["run"]).run(a.rows))

    p = sub.add_parser("query", help="run SQL on Pinot and print a table")
    p.add_argument("sql")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_query)
