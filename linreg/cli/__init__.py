"""The command line, one module per command: `python -m linreg pitfalls` shows every pitfall
live; `train` runs the book's experiment; `audit` checks your own iterator, update step, loss or
loop; `watch` runs your training script unchanged and judges its updates. Only the command
given is built in full (audit's options come from the registry of kinds, which imports torch):
a usage error or `--help` answers at once, and torch is imported when a command runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from linreg.cli import arguments, audit, pitfalls, train, watch

COMMANDS = {
    "train": train,
    "pitfalls": pitfalls,
    "audit": audit,
    "watch": watch,
}  # each: add_parser, command


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the parser for `python -m linreg`: every command in full, or only the command
    `only` (the others by name and help alone; "" for none)."""
    parser = arguments.Parser(
        prog="python -m linreg",
        description="Linear regression from scratch (d2l), and its training-loop pitfalls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if only is None or name == only:
            command.add_parser(sub)
        else:
            sub.add_parser(name, help=command.HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(given[0] if given and given[0] in COMMANDS else "")
    args, extra = parser.parse_known_args(given)
    if extra:  # the command's own error, as every other usage error of a command is
        getattr(args, "subparser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    stdout = sys.stdout
    with contextlib.ExitStack() as stack:
        # stdout closed (>&-, sys.stdout None): what the command prints goes nowhere
        stream = stdout or stack.enter_context(open(os.devnull, "w"))
        sys.stdout = reader = _Reader(stream)
        try:
            code: int = COMMANDS[args.command].command(args, args.subparser)
            reader.flush()
        finally:
            sys.stdout = stdout
    return code


class _Reader:
    """stdout, whose reader may leave (`| head -1`): what is left to print is then dropped and
    the command goes on, its picture written and its exit code its own, with no traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._gone = stream, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._leave()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._leave()

    def _leave(self) -> None:
        """Send the rest, and what the interpreter flushes as it exits, nowhere."""
        self._gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
