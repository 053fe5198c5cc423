"""Regenerate the README's generated parts: the tables of kinds and pitfalls, the audits' output.

`python -m tests.regen_readme` (from the repository root) rewrites README.md in place; the
tests in test_cli.py check that what it holds is what the code gives.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from linreg.cli import main
from linreg.pitfalls._render import catalogue_markdown, kinds_markdown

ROOT = Path(__file__).parent.parent
KINDS_TABLE = re.compile(r"\| kind \| your function \|.*?\n(?=\n)", re.S)
PITFALLS_TABLE = re.compile(r"\| id \| pitfall \| wrong variants \|.*?\n(?=\n)", re.S)
AUDIT_BLOCK = re.compile(r"```console\n(\$ python -m linreg (?:audit|watch) .*?)```", re.S)


def quiet(command: str) -> list[str]:
    """Return a README command's arguments with -q (watch: before the script, whose own the
    arguments after it are)."""
    name, *rest = command.removeprefix("$ python -m linreg ").split()
    return [name, "-q", *rest] if name == "watch" else [name, *rest, "-q"]


def _audit_output(block: str) -> str:
    out = []
    for text in re.split(r"\n(?=\$ )", block.strip()):
        command = text.splitlines()[0]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
            main(quiet(command))
        out.append(command + "\n" + buffer.getvalue().rstrip("\n"))
    return "```console\n" + "\n\n".join(out) + "\n```"


def regenerate() -> None:
    """Rewrite README.md's generated parts from the code."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    text = KINDS_TABLE.sub(lambda _: kinds_markdown() + "\n", text, count=1)
    text = PITFALLS_TABLE.sub(lambda _: catalogue_markdown() + "\n", text, count=1)
    here = os.getcwd()
    os.chdir(ROOT / "examples")
    try:
        text = AUDIT_BLOCK.sub(lambda m: _audit_output(m.group(1)), text)
    finally:
        os.chdir(here)
    readme.write_text(text)


if __name__ == "__main__":
    regenerate()
