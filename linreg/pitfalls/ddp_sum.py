"""DDP averages gradients over the ranks: a summed loss's step shrinks by the world size."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from linreg import checks
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.pitfalls import _demo
from linreg.pitfalls._base import Contract, Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

WORLD = 2

# --- the wrong variant -----------------------------------------------------------------------


def ddp_trajectory_sum_unscaled(rank: int, world_size: int, case: dict[str, Any]) -> Any:
    """Mistake: MSELoss(reduction='sum') under DDP at the single-process lr: steps shrink by R."""
    from linreg.distributed import ddp_trajectory

    return ddp_trajectory(rank, world_size, case, scale_sum_lr=False)


# --- the property ----------------------------------------------------------------------------


def generated_cases() -> list[dict[str, Any]]:
    """Cases drawn from a seeded RNG: sizes, batch sizes, lr, epochs, data seeds, reductions."""
    rng = random.Random(0)
    cases = []
    for k in range(4):
        base = {
            "n": WORLD * rng.randint(3, 30),  # equal shards
            "d": rng.randint(1, 3),
            "batch_size": rng.randint(1, 8),
            "lr": rng.uniform(0.005, 0.05),
            "num_epochs": rng.randint(1, 2),
            "seed": k,
        }
        cases += [{**base, "reduction": "mean"}, {**base, "reduction": "sum"}]
    return cases


@functools.cache
def ddp_results(worker: Callable[..., Any]) -> list[Any]:
    """Run worker on every generated case in one process group of 2 ranks; rank 0's results.

    Cached: processes are slow to start, and DDP keeps the ranks' params identical.
    """
    from linreg import distributed

    return list(
        distributed.spawn(distributed.ddp_cases, WORLD, worker, generated_cases(), timeout=120)[0]
    )


def follows_one_process(target: Target, cases: list[dict[str, Any]]) -> None:
    """DDP over 2 ranks follows one process on the union of the ranks' batches, step for step."""
    from linreg import distributed

    results = (
        ddp_results(target.fn)
        if cases == generated_cases()
        else distributed.spawn(distributed.ddp_cases, WORLD, target.fn, cases, timeout=120)[0]
    )
    for case, steps in zip(cases, results, strict=True):
        try:
            checks.check_same_trajectory(steps, distributed.single_process_trajectory(case, WORLD))
        except checks.CheckFailed as e:
            raise checks.CheckFailed(f"{case['reduction']} case {case}: {e}") from e


def _cases(contract: Contract) -> SearchStrategy[list[dict[str, Any]]]:
    from hypothesis import strategies as st

    return st.just(generated_cases())


def _needs_gloo(contract: Contract) -> str | None:
    from linreg import distributed

    return None if distributed.gloo_available() else "torch.distributed gloo is unavailable"


def _own() -> tuple[Target, ...]:
    from linreg import distributed

    return (Target(distributed.ddp_trajectory, "ddp-worker", name="ddp_trajectory"),)


PROPERTIES = (
    Property(
        "DDP (mean at lr, sum at lr x R) follows one process on the union of the shards",
        "ddp-worker",
        follows_one_process,
        _cases,
        _own(),
        (Variant(ddp_trajectory_sum_unscaled, None, "ddp-worker"),),
        applies=_needs_gloo,
        max_examples=1,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Run DDP with mean, sum at lr x 2 and sum at lr beside one process on the union."""
    from linreg import distributed

    if not distributed.gloo_available():
        return Evidence("ddp-sum", "", "", True, skipped="torch.distributed gloo is unavailable")
    case = {
        "n": NUM_EXAMPLES,
        "d": 2,
        "batch_size": BATCH_SIZE // 2,
        "lr": 0.03,
        "num_epochs": 1,
        "seed": 0,
    }
    cases = [
        {**case, "worker": distributed.ddp_trajectory, "reduction": "mean"},
        {**case, "worker": distributed.ddp_trajectory, "reduction": "sum"},
        {**case, "worker": ddp_trajectory_sum_unscaled, "reduction": "sum"},
    ]
    mean, summed, unscaled = distributed.spawn(
        distributed.ddp_cases, WORLD, None, cases, timeout=120
    )[0]
    one = {
        r: distributed.single_process_trajectory({**case, "reduction": r}, WORLD)
        for r in ("mean", "sum")
    }
    half = distributed.single_process_trajectory({**case, "reduction": "sum", "lr": 0.015}, WORLD)
    w0 = distributed._linear(case).weight.detach().reshape(-1)  # every run's start
    ratio = float((unscaled[0][0] - w0).norm() / (one["sum"][0][0] - w0).norm())
    gaps = {
        "mean": _demo.gap(mean, one["mean"]),
        "sum at lr*R": _demo.gap(summed, one["sum"]),
        "sum at lr vs lr/R": _demo.gap(unscaled, half),
    }
    ok = max(gaps.values()) < 1e-12 and math.isclose(ratio, 0.5, rel_tol=1e-9)
    return Evidence(
        "ddp-sum",
        "2 ranks, book data, batch 5 per rank: DDP with mean follows one process on the union; "
        "sum at the same lr takes steps 1/2 the size; sum at lr * 2 matches",
        f"first step ratio (sum at lr, DDP / one process) {ratio:.6f}; largest gaps: "
        + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()),
        ok,
        {"first_step_ratio": ratio, "gaps": gaps},
    )


PITFALL = Pitfall(
    "ddp-sum",
    "DDP averages gradients: a summed loss's step shrinks by the world size",
    "DistributedDataParallel all-reduces the gradients and divides by the world size R. "
    "With MSELoss(mean) on equal shards that is exactly the gradient of the union batch; "
    "with MSELoss(reduction='sum') it is the union's summed gradient divided by R, so at "
    "the single-process lr every step is R times too small. Fix: multiply the lr by R "
    "(or use the mean).",
    PROPERTIES,
    demo,
    order=13,
)
