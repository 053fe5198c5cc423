"""Run `pytest -k pitfalls` once per wrong variant, swapped in for the function it replaces.

Every variant must make the suite fail; this prints which tests caught each one and exits 1
if any variant got through. Usage: `python -m tests.teeth [pytest args]` (tox -e teeth).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from linreg import pitfalls


def failing_tests(variant: str, extra: list[str]) -> tuple[list[str], float]:
    """Return the pitfalls tests that fail with variant swapped in, and the run's seconds."""
    env = {**os.environ, "LINREG_SWAP": variant}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-k",
        "pitfalls",
        "-n",
        "auto",
        "--dist",
        "worksteal",
        "-q",
        "-rf",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"pytest exited {proc.returncode} for {variant}:\n{proc.stdout}{proc.stderr}")
    return re.findall(r"^FAILED \S+::(\S+)", proc.stdout, flags=re.M), seconds


def main(argv: list[str]) -> int:
    """Swap in each variant in turn and report which tests caught it."""
    escaped = []
    for name, variant in pitfalls.VARIANTS.items():
        if variant.replaces is None:
            print(f"{name}: replaces no linreg function; refuted directly by its own test")
            continue
        failed, seconds = failing_tests(name, argv)
        print(
            f"{name} (in place of {variant.replaces}): {len(failed)} tests fail [{seconds:.1f} s]"
        )
        for test in sorted(set(failed)):
            print(f"    {test}")
        if not failed:
            escaped.append(name)
    if escaped:
        print(f"NO TEETH against: {', '.join(escaped)}")
        return 1
    print("every variant that replaces a linreg function is caught by pytest -k pitfalls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
