"""`python -m linreg pitfalls`: every pitfall shown live, as a table, JSON, Markdown or a PNG."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from linreg.cli import arguments

HELP = "run every pitfall's wrong variant beside the correct code and show the evidence"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pitfalls",
        help=HELP,
        description=(
            "Run each pitfall's demonstration on the book's data (n = 1000, batch 10, and an "
            "uneven n = 1003 where that is the point) and print what was expected, what was "
            "observed and whether they agree. Exit 0 when every pitfall behaved as documented, "
            "1 otherwise: a compatibility check for the installed torch."
        ),
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument(
        "--markdown",
        action="store_true",
        help="print Markdown: the catalogue, then each pitfall with its evidence",
    )
    fmt.add_argument(
        "--list", action="store_true", help="list the pitfalls (id and title) and run nothing"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="ID",
        help="run only this pitfall (repeatable); see --list for the ids",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the loss curves of correct vs wrong variants (needs matplotlib)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(subparser=p)  # its errors name the command: "python -m linreg pitfalls"


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the chosen demonstrations, print the report, and return the exit code."""
    from linreg.pitfalls import BY_ID, CATALOGUE

    if args.list:
        for pitfall in CATALOGUE:
            print(f"{pitfall.id:<26} {pitfall.title}")
        return 0
    unknown = [i for i in args.only or [] if i not in BY_ID]
    if unknown:
        parser.error(f"unknown pitfall id {unknown[0]!r}; choose from {', '.join(BY_ID)}")
    if args.plot:
        chosen = args.only or [p.id for p in CATALOGUE]
        if not any(BY_ID[i].plots for i in chosen):
            drawn = ", ".join(p.id for p in CATALOGUE if p.plots)
            parser.error(
                f"--plot: none of the chosen pitfalls draws loss curves (those that do: {drawn})"
            )
        arguments.check_plot(args.plot, parser)

    from linreg.pitfalls import _live, _render

    ids = args.only or [p.id for p in CATALOGUE]

    def progress(k: int, pitfall_id: str) -> None:
        if not args.quiet:
            print(f"[{k}/{len(ids)}] {pitfall_id} ...", file=sys.stderr, flush=True)

    runs = _live.show(ids, progress)
    if args.json:
        print(json.dumps(_render.to_json(runs), indent=2, allow_nan=False))
    elif args.markdown:
        print(_render.markdown(runs), end="")
    else:
        print(_render.table(runs, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    if args.plot:
        panels = _render.plot(runs, args.plot)
        what = "panel" if panels == 1 else "panels"
        print(f"wrote {panels} {what} of loss curves to {args.plot}", file=sys.stderr)
    return 0 if all(r.evidence.ok for r in runs) else 1
