"""The command line, one module per command: `python -m linreg pitfalls` shows every pitfall
live; `train` runs the book's experiment; `audit` checks your own iterator, update step, loss or
loop. torch is imported when a command runs, not to parse its arguments (audit's options come
from the registry of kinds, which imports it)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from linreg.cli import arguments, audit, pitfalls, train

COMMANDS = {"train": train, "pitfalls": pitfalls, "audit": audit}  # each: add_parser, command


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for `python -m linreg`."""
    parser = arguments.Parser(
        prog="python -m linreg",
        description="Linear regression from scratch (d2l), and its training-loop pitfalls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    code: int = COMMANDS[args.command].command(args, args.subparser)
    return code
