"""Hypothesis profiles; LINREG_SWAP (run the suite against a wrong variant); the heavy tests
first; the catalogue's DDP runs once a session."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from typing import Any

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
    # the installed version, not torch imported: under xdist the controller runs no test, and
    # importing torch there (over a second) would hold back the workers' start
    torch = importlib.metadata.version("torch")
    swap = os.environ.get("LINREG_SWAP")
    return f"torch {torch}, hypothesis profile {settings.default._current_profile}" + (
        f", LINREG_SWAP={swap}" if swap else ""
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the heavy tests first: a worker that starts one last would end the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def slow_at_5_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop is slow from 4 ms an update, and no time is left past the fewest examples."""
    from linreg.audit import budget
    from linreg.kinds.training_loop import probe

    monkeypatch.setattr(budget, "BUDGET", 0.0)
    monkeypatch.setattr(probe, "SLOW", 0.004)


@pytest.fixture(scope="session", autouse=True)
def ddp_ranks_from_a_forkserver() -> None:
    """Fork the DDP ranks of this session's process groups from one forkserver that imports
    torch once, instead of spawning each rank to import it again (about 2.3 CPU-s a group
    after the first), where the tests collected imported the catalogue (a session that did
    not starts no group, and pays no import for it). test_pitfalls_ddp_ranks_spawned_as_in_a_
    notebook_* keeps one group on the spawn that a notebook's ranks get."""
    spawn = sys.modules.get("linreg.pitfalls._spawn")
    if spawn is not None:
        spawn.serve_from_a_forkserver("tests.ddp_support")


@pytest.fixture(scope="session", autouse=True)
def ddp_results_once_a_session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Start the catalogue's DDP process group once for all workers, not once in each.

    The first worker that needs `ddp_sum.ddp_results()` runs it and saves the results where
    every worker of the session looks (xdist's workers share the base temp folder's parent);
    one that needs them meanwhile waits on the lock. Without xdist, its cache already runs it
    once.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    import fcntl

    import torch

    from linreg.pitfalls import ddp_sum

    saved = tmp_path_factory.getbasetemp().parent / "ddp_results.pt"
    compute = ddp_sum.ddp_results

    @functools.cache
    def shared() -> Any:
        with open(saved.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if saved.exists():
                return torch.load(saved, weights_only=False)
            results = compute()
            partial = saved.with_suffix(".partial")
            torch.save(results, partial)
            partial.replace(saved)  # whole or absent: a worker killed mid-write leaves no file
            return results

    ddp_sum.ddp_results = shared  # type: ignore[assignment]
    yield
    ddp_sum.ddp_results = compute  # type: ignore[assignment]
