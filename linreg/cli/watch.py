"""`python -m linreg watch [--steps N] [--reduction sum] [--json] [--plot FILE.png] SCRIPT
[ARGS...]` (or
`-m MODULE [ARGS...]`): your training script, unchanged, run as `python SCRIPT ARGS` would and
judged update by update.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any

from linreg.cli import arguments

HELP = "run your training script unchanged and judge every update it makes"


def add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "watch",
        help=HELP,
        description=(
            "Run SCRIPT with ARGS (or -m MODULE with ARGS) as python would: its __main__, "
            "argv, imports and working directory. Every loss it computes with a torch loss "
            "function, every backward() and every optimizer update is watched, with every lr "
            "held at 0 (the params do not move); each update is judged against the mean of the "
            "rows it consumed (their sum with --reduction sum). The script is ended after the "
            "first update that follows an epoch's end (a DataLoader running out), or after 64 "
            "updates if no epoch of a known length up to 2048 batches is under way, or after "
            "--steps updates. What the script prints goes to stderr, the report to stdout. "
            "Exit 0 when no pitfall is found, 1 when one is or the script failed, 2 for a usage "
            "error."
        ),
    )
    a.add_argument(
        "--steps",
        type=arguments.positive_int,
        default=None,
        help="end the script after this many updates (default: the first after an epoch's "
        "end; the 64th if no epoch of a known length up to 2048 batches is under way)",
    )
    a.add_argument(
        "--reduction",
        choices=("mean", "sum"),
        default="mean",
        help="what a correct update applies of its rows' gradients: their mean (default), or "
        "their sum, for a script that sums its loss on purpose with its lr scaled to it",
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw each failing property's scale per update into FILE.png (needs matplotlib)",
    )
    a.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    a.add_argument(
        "-m",
        dest="module",
        nargs=argparse.REMAINDER,
        metavar="MODULE [ARGS]",
        help="run a module, as python -m does, with the arguments after it",
    )
    a.add_argument(
        "script",
        nargs=argparse.REMAINDER,
        metavar="SCRIPT [ARGS]",
        help="the training script, and its own arguments",
    )
    a.set_defaults(subparser=a)


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Watch the script the arguments name, print the report, and return the exit code."""
    module = bool(args.module)
    given = args.module if module else args.script
    if not given:
        parser.error("give a SCRIPT, or -m MODULE, to watch")
    name, rest = given[0], given[1:]
    if module and not _module_exists(name):
        parser.error(f"no module named {name!r}")
    if not module and os.path.isdir(name):  # python runs a folder's __main__.py
        if not os.path.isfile(os.path.join(name, "__main__.py")):
            parser.error(f"{name!r} is a folder with no __main__.py, not a script")
    elif not module and not os.path.isfile(name):
        parser.error(f"no such script: {name!r}")
    if args.plot:
        arguments.check_plot(args.plot, parser)
    try:
        from linreg.audit.watcher import watch_script
    except ImportError as e:
        parser.error(str(e))
    if not args.quiet:
        print(f"watching {name} ...", file=sys.stderr, flush=True)
    report = watch_script(name, rest, module=module, steps=args.steps, reduction=args.reduction)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report)
    code = 0 if report.ok else 1
    if args.plot:
        return arguments.plot(report, args.plot, code, quiet=args.quiet)
    return code


def _module_exists(name: str) -> bool:
    """Return whether python -m could find the module (its parent packages are imported, as
    python -m imports them)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
