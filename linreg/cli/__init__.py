"""The command line, one module per command: `python -m linreg pitfalls` shows every pitfall
live; `train` runs the book's experiment; `audit` checks your own iterator, update step, loss or
loop. torch is imported when a command runs, not to parse its arguments (audit's options come
from the registry of kinds, which imports it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from linreg.cli import arguments, audit, pitfalls, train

COMMANDS: dict[str, Callable[[argparse.Namespace, argparse.ArgumentParser], int]] = {
    "train": train.command,
    "pitfalls": pitfalls.command,
    "audit": audit.command,
}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for `python -m linreg`."""
    parser = arguments.Parser(
        prog="python -m linreg",
        description="Linear regression from scratch (d2l), and its training-loop pitfalls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, pitfalls, audit):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args, args.subparser)
