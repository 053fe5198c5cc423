"""Time one audit of each loop in tests/loops_as_written.py, a fresh process each, busy core beside.

    python -m benchmarks.audit_times [--threads N]

Each correct loop is audited in a new `python` process (the first run: imports, torch's lazy
initialisation and the audit itself), at the default examples, while another process keeps one
core busy, as a user's test session or notebook beside a training run would. `--threads N` sets
torch's thread count in that process before the audit (default: torch's own); the audit runs the
user's code on one thread whatever the caller set, and the caller's count is printed after.
Prints one line per loop (the audit's own seconds, as its Report says, and the process's wall
time) and the median and largest of each. A measurement, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

# the audit of one loop, in the child: its Report's seconds and the thread counts around it
CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
if {threads}:
    torch.set_num_threads({threads})
from linreg import audit
from tests import test_audit_loops_as_written as T
cases = {{c[0].__name__: c for c in T.CASES}}
cases["token_train"] = (T.L.token_train, None, "", T.TOKENS)
loop, _, _, options = cases[{name!r}]
before = torch.get_num_threads()
report = audit.training_loop(loop, **options)
print(json.dumps({{"ok": report.ok, "audit_s": report.seconds, "threads_before": before,
    "threads_after": torch.get_num_threads(), "wall_s": time.perf_counter() - start}}))
"""


def names() -> list[str]:
    from tests import test_audit_loops_as_written as T

    return [*dict.fromkeys(c[0].__name__ for c in T.CASES), "token_train"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads set before (0: torch's)"
    )
    args = parser.parse_args(argv)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows = []
    try:
        for name in names():
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD.format(threads=args.threads, name=name)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["process_s"] = time.perf_counter() - start
            rows.append(row)
            print(
                f"{name:16} ok={row['ok']!s:5} audit {row['audit_s']:5.2f} s, process "
                f"{row['process_s']:5.2f} s, threads {row['threads_before']} -> "
                f"{row['threads_after']}",
                flush=True,
            )
    finally:
        busy.kill()
        busy.wait()
    for key in ("audit_s", "process_s"):
        values = [r[key] for r in rows]
        print(f"{key}: median {statistics.median(values):.2f} s, largest {max(values):.2f} s")
    return 0 if all(r["ok"] and r["threads_after"] == r["threads_before"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
