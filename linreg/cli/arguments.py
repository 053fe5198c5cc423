"""What the commands share: the parser that errs in one line, value conversions, --plot's check
and its drawing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from linreg import _validate

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the usage block: "see --help" says where the rest is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def converter(parse: Callable[[str], T], check: Callable[[str, object], T]) -> Callable[[str], T]:
    """Return an argparse type: parse the text, then _validate's check, one line if not."""
    expected = _validate.EXPECTED[check]

    def convert(text: str) -> T:
        try:
            return check("value", parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


positive_int = converter(int, _validate.positive_int)
non_negative_int = converter(int, _validate.non_negative_int)
positive_float = converter(float, _validate.positive_finite)
seed = converter(int, _validate.seed)


def check_plot(path: str, parser: argparse.ArgumentParser) -> None:
    """Refuse a --plot that cannot be written, before any work."""
    if not path.lower().endswith(".png"):
        parser.error(f"--plot writes a PNG: give a FILE.png, got {path!r}")
    folder = Path(path).parent
    if not folder.is_dir():
        parser.error(f"--plot: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        parser.error(f"--plot: the folder {str(folder)!r} is not writable")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--plot needs matplotlib: pip install 'linreg-pitfalls[plot]'")


def plot(report: Any, path: str, code: int, *, quiet: bool) -> int:
    """Draw what the report measured into path; say why not in one line, keeping the verdict's
    exit code (a pitfall's 1 is never hidden); a picture that cannot be written is exit 2."""
    try:
        report.plot(path)
    except ValueError as e:  # nothing measured to draw: a note, not an error
        print(f"--plot: {e}; no picture written", file=sys.stderr)
        return code
    except OSError as e:
        print(f"--plot: could not write {path}: {e.strerror or e}", file=sys.stderr)
        return code or 2
    if not quiet:
        print(f"wrote the failing steps' picture to {path}", file=sys.stderr)
    return code
