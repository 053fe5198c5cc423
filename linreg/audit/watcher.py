"""`watch()` wraps any training code (a notebook cell, a test) and leaves its Report when the
block ends; `watch_script()` runs a script or module as `python` would, watched. The verdicts
are watch_verdicts.py's, the Report watch_report.py's.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from linreg import _validate, checks
from linreg.audit.report import Report
from linreg.audit.watch_report import report_of
from linreg.kinds.watched import watching

REDUCTIONS = ("mean", "sum")


def watch_script(
    script: str,
    args: Sequence[str] = (),
    *,
    module: bool = False,
    steps: int | None = None,
    reduction: str = "mean",
) -> Report:
    """Run a script (or, module=True, a module) as `python SCRIPT ARGS` would, watched, and
    return its Report: its __main__, argv, and its folder first on sys.path; what it prints goes
    to stderr. It is ended after `steps` updates (None: the first after an epoch's end). Each
    update is judged against the mean of its rows' gradients, or their sum (reduction="sum":
    the code sums its loss on purpose, its lr scaled to it)."""
    _validate.choice("reduction", reduction, REDUCTIONS)
    argv, path = sys.argv[:], sys.path[:]
    start = time.perf_counter()
    error = ""
    file = script if module else os.path.abspath(script)
    seen = None
    with contextlib.redirect_stdout(sys.stderr):
        try:
            with watching(steps) as seen:
                sys.argv = [script, *args]
                if module:
                    runpy.run_module(script, run_name="__main__", alter_sys=True)
                else:
                    sys.path.insert(0, os.path.dirname(file))
                    runpy.run_path(file, run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                error = f"the script exited with status {e.code}"
        except Exception as e:
            spot = checks.where(e, file=None if module else file, outside=("/torch/", "/linreg/"))
            error = f"the script raised {type(e).__name__}: {e}{spot}" + _in_a_step(e)
        finally:
            sys.argv, sys.path[:] = argv, path
    assert seen is not None
    return report_of(seen, script, time.perf_counter() - start, error, reduction)


def _in_a_step(e: BaseException) -> str:
    """Return, where an exception was raised inside a torch optimizer's step(), which one, and
    that the watch ran it with every lr held at 0 (its own doing, not the code's); else ""."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "step" and "/torch/optim/" in code.co_filename.replace(os.sep, "/"):
            name = type(tb.tb_frame.f_locals.get("self")).__name__
            return (
                f", inside {name}.step(), which the watch runs with every lr held at 0 (the "
                "params do not move): an optimizer that cannot step at lr 0 (LBFGS's "
                "strong-Wolfe line search divides by the step it tries) is one the watch "
                "cannot watch"
            )
        tb = tb.tb_next
    return ""


@contextmanager
def watch(steps: int | None = None, reduction: str = "mean") -> Iterator[list[Report]]:
    """Watch the training code the block runs; after it, the list holds its Report.

        with linreg.audit.watch() as reports:
            train(model, loader)
        print(reports[0])

    Every lr is held at 0 while the block runs (the params do not move) and put back after;
    after `steps` updates the block is ended where it stands. Each update is judged against
    the mean of its rows' gradients, or their sum (reduction="sum")."""
    _validate.choice("reduction", reduction, REDUCTIONS)
    out: list[Report] = []
    start = time.perf_counter()
    with watching(steps) as seen:
        yield out
    out.append(report_of(seen, "the watched block", time.perf_counter() - start, "", reduction))
