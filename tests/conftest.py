"""Hypothesis profiles, and LINREG_SWAP: run the suite against a wrong variant."""

from __future__ import annotations

import os

import pytest
from hypothesis import Phase, settings

# torch's first call in a process is slow (lazy init), so no profile has a deadline.
settings.register_profile("dev", max_examples=15, deadline=None)
settings.register_profile(
    "ci", max_examples=30, derandomize=True, deadline=None, print_blob=True, database=None
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
# tox -e mutation: the ci profile without shrinking. A mutant is killed by the first failing
# example; making it minimal would only spend the run's time (most of it, measured).
settings.register_profile(
    "mutation",
    parent=settings.get_profile("ci"),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

# tests/frameworks/ needs Lightning, transformers and accelerate: `tox -e frameworks` installs
# them and sets LINREG_FRAMEWORKS; the other environments leave the folder out.
collect_ignore = [] if os.environ.get("LINREG_FRAMEWORKS") else ["frameworks"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one core each: torch's threads would compete
        import torch

        torch.set_num_threads(1)
    # LINREG_SWAP=<variant name> puts a wrong variant from the catalogue in place of the linreg
    # function it replaces, for the whole run: the pitfalls suite must then fail (tox -e teeth).
    name = os.environ.get("LINREG_SWAP")
    if name:
        from linreg import pitfalls

        variant = pitfalls.VARIANTS[name]
        if variant.replaces is None:
            raise pytest.UsageError(f"{name} replaces no linreg function")
        swap = pitfalls.swap(variant.replaces, variant.func)
        swap.__enter__()
        config.add_cleanup(lambda: swap.__exit__(None, None, None))


def pytest_report_header() -> str:
    import torch

    swap = os.environ.get("LINREG_SWAP")
    return f"torch {torch.__version__}, hypothesis profile {settings.default._current_profile}" + (
        f", LINREG_SWAP={swap}" if swap else ""
    )
