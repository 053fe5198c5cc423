"""DDP averages gradients over the ranks: a summed loss's step shrinks by the world size."""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from linreg import checks
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.pitfalls import _ddp, _kit, _spawn
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

WORLD = 2

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def ddp_trajectory_sum_unscaled(rank: int, world_size: int, run: _ddp.Setup) -> _ddp.Steps:
    """Mistake: MSELoss(reduction='sum') under DDP at the single-process lr: steps shrink by R."""
    return _ddp.ddp_trajectory(rank, world_size, run, scale_sum_lr=False)


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def generated_runs() -> tuple[_ddp.Setup, ...]:
    """Runs drawn from a seeded RNG: sizes, batch sizes, lr, epochs, data seeds, reductions."""
    rng = random.Random(0)
    runs = []
    for k in range(4):
        mean = _ddp.Setup(
            n=WORLD * rng.randint(3, 30),  # equal shards
            d=rng.randint(1, 3),
            batch_size=rng.randint(1, 8),
            lr=rng.uniform(0.005, 0.05),
            num_epochs=rng.randint(1, 2),
            seed=k,
        )
        runs += [mean, dataclasses.replace(mean, reduction="sum")]
    return tuple(runs)


_MEAN = _ddp.Setup(NUM_EXAMPLES, 2, BATCH_SIZE // 2, 0.03, 1, 0)  # the book's data, batch 5 a rank
_SUM = dataclasses.replace(_MEAN, reduction="sum")
_STARTED: dict[str, Future[Any]] = {}


def padded_runs() -> tuple[_ddp.Setup, ...]:
    """The generated mean runs with n + 1 examples: n odd, so the sampler pads one sample."""
    return tuple(
        dataclasses.replace(r, n=r.n + 1) for r in generated_runs() if r.reduction == "mean"
    )


Results = dict[Callable[..., Any], list[Any]]
_RESULTS: list[Results] = []  # ddp_results' cache


def ddp_results() -> Results:
    """Run every DDP job the suite and the report check, in ONE process group of 2 ranks.

    linreg's worker and the wrong variant on the generated runs and on the demo's, and the
    whole-shard gradient on the padded runs. Cached: processes are slow to start. DDP keeps the
    ranks' params identical: rank 0's results are the runs'.
    """
    return _RESULTS[0] if _RESULTS else _kept(_start(fork=False))


_JOBS = {
    _ddp.ddp_trajectory: lambda: (*generated_runs(), _MEAN, _SUM),
    ddp_trajectory_sum_unscaled: lambda: (*generated_runs(), _SUM),
    _ddp.ddp_full_shard_gradient: padded_runs,
}


def _start(*, fork: bool) -> tuple[_spawn.Started, dict[Callable[..., Any], int]]:
    runs = {worker: made() for worker, made in _JOBS.items()}
    pairs = [(worker, run) for worker, each in runs.items() for run in each]
    return _spawn.start(_ddp.jobs, WORLD, pairs, fork=fork), {w: len(r) for w, r in runs.items()}


def _kept(started: tuple[_spawn.Started, dict[Callable[..., Any], int]]) -> Results:
    """Wait for the started ranks; keep rank 0's results, by worker, as ddp_results' cache."""
    ranks, counts = started
    results = iter(ranks.join(timeout=120)[0])
    _RESULTS.append({worker: [next(results) for _ in range(n)] for worker, n in counts.items()})
    return _RESULTS[0]


def follows_one_process(target: Target, runs: tuple[_ddp.Setup, ...]) -> None:
    """DDP over 2 ranks follows one process on the union of the ranks' batches, step for step."""
    cached = ddp_results() if runs == generated_runs() else {}
    results = (
        cached[target.fn][: len(runs)]
        if target.fn in cached
        else _spawn.spawn(_ddp.jobs, WORLD, [(target.fn, r) for r in runs], timeout=120)[0]
    )
    for run, steps in zip(runs, results, strict=True):
        try:
            checks.check_same_trajectory(steps, _ddp.single_process_trajectory(run, WORLD))
        except checks.CheckFailed as e:
            raise checks.CheckFailed(f"{run}: {e}") from e


def _runs(options: Options) -> SearchStrategy[tuple[_ddp.Setup, ...]]:
    from hypothesis import strategies as st

    return st.just(generated_runs())


def _needs_gloo(options: Options) -> str | None:
    return None if _spawn.gloo_available() else "torch.distributed gloo is unavailable"


PROPERTIES = (
    Property(
        name="DDP (mean at lr, sum at lr x R) follows one process on the union of the shards",
        kind="ddp-worker",
        check=follows_one_process,
        examples=_runs,
        holds_for=(Target(_ddp.ddp_trajectory, "ddp-worker", name="ddp_trajectory"),),
        refuted_by=(Variant(ddp_trajectory_sum_unscaled, None, "ddp-worker"),),
        applies=_needs_gloo,
        max_examples=1,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def start_early() -> None:
    """Start the process group in the background: it runs while the other demos do.

    In `python -m linreg`, before its first demo and with no other thread, the ranks are forked
    from it once it has imported DDP: they need not import torch again (about 2.4 s of CPU
    each, on the cores the demos run on). Elsewhere (a test, a notebook, any process that may
    have run torch's thread pool, which a forked child cannot use) they are spawned.
    """
    if not _spawn.gloo_available() or "demo" in _STARTED:
        return
    if _in_the_command() and not _RESULTS:
        import torch.nn.parallel  # noqa: F401  (and DDP's own imports: the ranks inherit them)

        work: Callable[[], Results] = functools.partial(_kept, _start(fork=True))
    else:
        work = ddp_results
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-ddp")
    _STARTED["demo"] = pool.submit(work)
    pool.shutdown(wait=False)


def _in_the_command() -> bool:
    """Return whether this process is `python -m linreg`, running no other thread."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return name == "linreg.__main__" and threading.active_count() == 1


def demo() -> Evidence:
    """Run DDP with mean, sum at lr x 2 and sum at lr beside one process on the union."""
    if not _spawn.gloo_available():
        return Evidence(
            id="ddp-sum",
            expected="",
            observed="",
            ok=True,
            skipped="torch.distributed gloo is unavailable",
        )
    start_early()
    results = _STARTED.pop("demo").result()
    got_mean, got_sum = results[_ddp.ddp_trajectory][-2:]
    got_unscaled = results[ddp_trajectory_sum_unscaled][-1]
    one = {r.reduction: _ddp.single_process_trajectory(r, WORLD) for r in (_MEAN, _SUM)}
    half = _ddp.single_process_trajectory(dataclasses.replace(_SUM, lr=0.015), WORLD)
    w0 = _MEAN.linear().weight.detach().reshape(-1)  # every run's start
    ratio = float((got_unscaled[0][0] - w0).norm() / (one["sum"][0][0] - w0).norm())
    gaps = {
        "mean": _kit.gap(got_mean, one["mean"]),
        "sum at lr*R": _kit.gap(got_sum, one["sum"]),
        "sum at lr vs lr/R": _kit.gap(got_unscaled, half),
    }
    ok = max(gaps.values()) < 1e-12 and math.isclose(ratio, 0.5, rel_tol=1e-9)
    return Evidence(
        id="ddp-sum",
        expected=(
            "2 ranks, book data, batch 5 per rank: DDP with mean follows one process on the union; "
            "sum at the same lr takes steps 1/2 the size; sum at lr * 2 matches"
        ),
        observed=f"first step ratio (sum at lr, DDP / one process) {ratio:.6f}; largest gaps: "
        + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()),
        ok=ok,
        figures={"first_step_ratio": ratio, "gaps": gaps},
    )


PITFALL = Pitfall(
    id="ddp-sum",
    title="DDP averages gradients: a summed loss's step shrinks by the world size",
    explanation=(
        "DistributedDataParallel all-reduces the gradients and divides by the world size R. "
        "With MSELoss(mean) on equal shards that is exactly the gradient of the union batch; "
        "with MSELoss(reduction='sum') it is the union's summed gradient divided by R, so at "
        "the single-process lr every step is R times too small. Fix: multiply the lr by R "
        "(or use the mean)."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=13,
    start_early=start_early,
)
