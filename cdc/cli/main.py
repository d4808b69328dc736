"""`cdc` command line. Thin: parse arguments, call a service function, print, exit code.

Errors from the cdc.core.errors tree become one readable message and exit code 1 (2 for
usage errors, as argparse does); no tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from cdc.core.settings import get_settings
from cdc.core.errors import CdcError

Handler = Callable[[argparse.Namespace], int]


def _human_bytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def cmd_stack_up(args: argparse.Namespace) -> int:
    from cdc.stack import manager
    st = manager.up(get_settings())
    _print_status(st)
    return 0 if st["healthy"] else 1


def cmd_stack_down(args: argparse.Namespace) -> int:
    from cdc.stack import manager
    stopped = manager.down(get_settings(), clean=args.clean)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    from cdc.stack import manager
    st = manager.status(get_settings())
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
    return 0 if st["healthy"] else 1


def cmd_stack_logs(args: argparse.Namespace) -> int:
    from cdc.stack import manager
    from cdc.stack.process import tail
    path = manager.service_log(get_settings(), args.component)
    if args.path:
        print(path)
    else:
        print(tail(path, args.lines))
    return 0


def _print_status(st: dict) -> None:
    rows = [("NAME", "VERSION", "PID", "PORTS", "HEALTH", "RSS")]
    for p in st["processes"]:
        ports = ",".join(str(v) for v in p["ports"].values())
        rows.append((p["name"], p["version"], str(p["pid"] or "-"), ports,
                     "healthy" if p["healthy"] else f"DOWN: {p['reason']}", _human_bytes(p["rss_bytes"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    for u in st["unavailable"]:
        print(f"{u['name']}: UNAVAILABLE ({'required' if u['required'] else 'optional'}): {u['reason']}")
    print(f"total RSS: {_human_bytes(st['total_rss_bytes'])}")
    for k, v in st["endpoints"].items():
        print(f"{k}: {v}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc", description="Live Apache Pinot mirrors of PostgreSQL tables.")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="run the real local stack (Postgres, Kafka, Connect, Flink, Pinot)")
    ss = stack.add_subparsers(dest="stack_command", required=True)
    p = ss.add_parser("up", help="provision (once) and start every component; idempotent")
    p.set_defaults(func=cmd_stack_up)
    p = ss.add_parser("down", help="stop the processes `up` started")
    p.add_argument("--clean", action="store_true", help="also delete all data (topics, tables, registry)")
    p.set_defaults(func=cmd_stack_down)
    p = ss.add_parser("status", help="per process: version, pid, ports, health, RSS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stack_status)
    p = ss.add_parser("logs", help="show the end of a component's log")
    p.add_argument("component")
    p.add_argument("-n", "--lines", type=int, default=40)
    p.add_argument("--path", action="store_true", help="print the log file's path only")
    p.set_defaults(func=cmd_stack_logs)

    # Each command family lives in its own module with a register(subparsers) function.
    from cdc.cli import apply, mirror, serve
    mirror.register(sub)
    apply.register(sub)
    serve.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from cdc.observe.logs import setup_logging
        st = get_settings()
        setup_logging(st.log_format, st.log_level)
        return int(args.func(args))
    except CdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
