"""`cdc apply -f FILE [--plan] [--prune] [--drop-data] [--json]`: thin over cdc.declarative.

Exit codes: apply 0 done, 1 error; --plan 0 nothing would change, 2 changes pending, 1 error
(a file error, or a plan with problems)."""

from __future__ import annotations

import argparse
import sys

from cdc.declarative import apply as applying
from cdc.declarative import file as apply_file
from cdc.declarative.plan import format_plan
from cdc.mirrors import service

EXIT_PENDING = 2


def cmd_apply(a: argparse.Namespace) -> int:
    f = apply_file.load(a.file)
    ctx = service.context()
    try:
        if a.plan:
            p = applying.plan_file(ctx, f, prune=a.prune)
        else:
            p = applying.apply_file(ctx, f, prune=a.prune, drop_data=a.drop_data,
                                    progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        ctx.close()
    print(p.model_dump_json(indent=2) if a.json else format_plan(p, verbose=a.verbose))
    if p.problems:
        return 1
    return EXIT_PENDING if a.plan and p.changed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="bring sources and mirrors to a YAML file's (create, rebuild, --prune remove)",
                       description="Apply a file of sources and mirrors (format: cdc/declarative/schema.json). "
                                   "A changed mirror is rebuilt: removed with its data and added again.")
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="YAML or JSON file; - reads standard input")
    p.add_argument("--plan", action="store_true",
                   help="print what would change and change nothing; exit 0 when nothing would, 2 when something would")
    p.add_argument("--prune", action="store_true",
                   help="also remove mirrors (then sources) the file does not name; without it they are kept")
    p.add_argument("--drop-data", action="store_true",
                   help="with --prune: removed mirrors also lose their Pinot table and Kafka topics")
    p.add_argument("--json", action="store_true", help="print the plan (or what was applied) as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="also list what is unchanged")
    p.set_defaults(func=cmd_apply)
    _usage_errors_exit_1(p)


def _usage_errors_exit_1(p: argparse.ArgumentParser) -> None:
    """--plan says "changes pending" with exit code 2, argparse's code for a usage error: here
    a usage error (a missing -f, a mistyped option) exits 1 like any other error."""
    def error(message: str) -> None:
        p.print_usage(sys.stderr)
        p.exit(1, f"{p.prog}: error: {message}\n")

    known = p.parse_known_args

    def parse_known_args(args: list[str] | None = None, namespace: argparse.Namespace | None = None) -> tuple:
        ns, extra = known(args, namespace)
        if extra:
            error(f"unrecognized arguments: {' '.join(extra)}")
        return ns, extra

    p.error = error                              # type: ignore[method-assign]
    p.parse_known_args = parse_known_args        # type: ignore[method-assign]
