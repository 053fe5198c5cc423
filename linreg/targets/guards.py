"""How a target runs: its exceptions become verdicts, its RNGs are seeded and restored.

A target's own exceptions become `CheckFailed` saying what raised (`guarded`); its use of
torch's and Python's global RNGs is seeded per example and restored after (`seeded`); torch
computes on one thread while the audit runs, and on as many as before afterwards
(`one_thread`).
"""

from __future__ import annotations

import contextlib
import random
import sys
import warnings
from collections.abc import Iterator

import torch

from linreg.checks import CheckFailed, LoopRaised, is_symptom, where


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn an exception a target raises into a verdict: a CheckFailed when it is a pitfall's
    symptom (checks.SYMPTOMS), else LoopRaised, the target's own error, saying what raised it where.

    The target's warnings are ignored: a warning filter set to "error" (pytest's, say) must
    not turn `float(loss)` in a logging line into a verdict.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (CheckFailed, LoopRaised):
        raise
    except Exception as e:
        said = f"{what} raised {type(e).__name__}: {e}"
        if is_symptom(e):
            raise CheckFailed(said) from e
        raise LoopRaised(said + where(e)) from e


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global RNGs while a target runs; restore them, and numpy's
    (which a framework's set_seed draws), afterwards."""
    state = random.getstate()
    numpy = sys.modules.get("numpy")
    drawn = numpy.random.get_state() if numpy is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA: slow
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)
            if numpy is not None:
                numpy.random.set_state(drawn)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's intra-op work on one thread; restore the caller's thread count afterwards.

    An audit's tensors hold a few rows: threads only contend, and on a machine where another
    job runs (a test session, a notebook beside a training run) they made one audit 12x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ended_process(e: BaseException) -> str:
    """Name how the target tried to end the process: SystemExit(0), sys.exit(...)'s code."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}) (sys.exit or exit() in the audited code)"
    return f"{type(e).__name__}"
