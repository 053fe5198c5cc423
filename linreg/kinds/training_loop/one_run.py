"""One run of a loop at lr 0, and the kind: the model built from the factory, the loop called
with what it asks for, watched within its time limit; the probe that checks a loop once
(`build`), and the kind a framework's Trainer is judged as (`framework_target`).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from linreg.checks import CheckFailed, LoopRaised
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.guards import Aborted, TimeUp, seeded, silenced, time_limit, user_fn
from linreg.kinds.options import name_of
from linreg.kinds.training_loop import contract as contracts
from linreg.kinds.training_loop.held import held_still, models_restored
from linreg.kinds.training_loop.hooks import Watch, raised, watching
from linreg.kinds.training_loop.ledger import Observed, Step, not_finite
from linreg.kinds.training_loop.rows import Example, rows_of
from linreg.kinds.training_loop.settings import (
    FLOOR,
    MOST_DRAWN,
    SIGNATURE,
    Batching,
    TrainingLoopOptions,
    count_of,
    default_optimizer,
    describe,
    expected_steps,
    options_of,
)
from linreg.kinds.training_loop.shared import kept

_LIMITS: dict[int, tuple[Callable[..., Any], float]] = {}  # each loop's derived time limit


def limit_of(target: Target) -> float:
    """Return the seconds one run of the target's loop may take."""
    given = options_of(target).timeout
    if given is not None:
        return given
    fn = user_fn(target.fn)  # as _checked saw it, before the target wrapped it
    hit = _LIMITS.get(id(fn))
    return hit[1] if hit is not None and hit[0] is fn else FLOOR


def build_model(factory: Callable[[], nn.Module], example: Example | None = None) -> nn.Module:
    """Return a fresh model from the factory, Dropout at p = 0, batch norms held in eval mode.

    A lazy module (nn.LazyLinear, as d2l builds its models) is initialized by a forward pass on
    the example, batched as one row, so its parameters exist before the loop runs.
    """
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    lazy = any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    if lazy and example is not None:
        with torch.no_grad():
            if isinstance(example, tuple):
                model(example[0].unsqueeze(0))
            else:
                model(**{k: v.unsqueeze(0) for k, v in example.items()})
    return held_still(model)


_CONTRACTS: dict[int, tuple[Callable[..., Any], contracts.Contract]] = {}


def asks_of(fn: Callable[..., Any]) -> contracts.Contract:
    """Return what the loop asks for, read once per function."""
    hit = _CONTRACTS.get(id(fn))
    if hit is None or hit[0] is not fn:
        hit = (fn, contracts.contract_of(fn))
        _CONTRACTS[id(fn)] = hit
    return hit[1]


def run_at_zero_lr(target: Target, batching: Batching) -> tuple[nn.Module, Observed]:
    """Run the loop at lr = 0 on a batching; return its model and what it did (within an
    audit, once: `shared`)."""
    return kept("run", target, batching, lambda: _run_at_zero_lr(target, batching))


def _run_at_zero_lr(target: Target, batching: Batching) -> tuple[nn.Module, Observed]:
    c = options_of(target)
    asks = asks_of(target.fn)
    with seeded(batching.seed):
        model = build_model(c.model, c.example)
        optimizer = None
        if asks.has("optimizer"):
            optimizer = (c.optimizer or default_optimizer)(model.parameters())
    k = count_of(c, batching)
    kwargs = contracts.arguments(
        asks,
        model=model,
        rows=rows_of(c.example, batching.rows),
        batch_size=batching.batch_size,
        drop_last=c.drop_last,
        optimizer=optimizer,
        num_epochs=batching.num_epochs,
        steps=max(1, expected_steps(batching, k, c.drop_last)),
        accumulation_steps=k,
    )
    watch = target.watch or Watch()
    limit = limit_of(target)  # from the start, and anew after each update: the loop's progress
    seen = Observed()
    try:
        with (
            time_limit(limit) as anew,
            watching(model, watch.method, watch.replayable, anew) as seen,
            seeded(batching.seed),
            warnings.catch_warnings(),
            silenced(),
        ):
            warnings.simplefilter("ignore")  # the loop's warnings are not verdicts
            target.fn(**kwargs)
    except (CheckFailed, LoopRaised):
        raise
    except TimeUp:
        raise Aborted(LoopRaised(_no_progress(limit, len(seen.steps)))) from None
    except Exception as e:
        raise raised(e, target.fn) from e
    infinite = not_finite(seen)
    if infinite:
        raise LoopRaised(infinite)
    return model, seen


def _no_progress(limit: float, updates: int) -> str:
    if not updates:
        return (
            f"the loop did not return within {limit:g} s and made no update: an endless loop, "
            "or a step budget it never reaches? (timeout= sets the limit)"
        )
    return (
        f"the loop did not return within {limit:g} s of its update {updates}, and made no "
        "other: an endless loop, or a step budget it never reaches? (timeout= sets the limit)"
    )


def observe(target: Target, batching: Batching) -> Observed:
    """Run the loop at lr = 0 on a batching; return what it did."""
    return run_at_zero_lr(target, batching)[1]


def build(
    fn: Callable[..., Any], options: TrainingLoopOptions
) -> tuple[Callable[..., Any], TrainingLoopOptions]:
    """Return fn once it says what it takes, its model can be judged and it steps the
    optimizer, with the options its first run showed: its accumulation window read from that
    run where it was not declared."""
    with models_restored():
        checked, seen, ran = _checked(fn, options)
        if options.accumulation_steps is None:
            if asks_of(fn).has("accumulation"):  # drawn for each example
                options = replace(options, draws_count=True)
            else:  # read from the run
                options = replace(options, accumulation_steps=window_of(seen))
        least = least_batches(Target(fn, "training-loop", options), ran)
    return checked, replace(options, least_batches=least)


PROBE = Batching((0, 1) * 4 + (0,), 2, 2, 0)  # 5 batches an epoch: a window of up to 5 shows
# the first run, then larger ones (9 and 17 batches an epoch) where the loop raised on less
PROBES = (PROBE, Batching((0, 1) * 8 + (0,), 2, 2, 0), Batching((0, 1) * 16 + (0,), 2, 2, 0))


def least_batches(target: Target, ran: Batching) -> int:
    """Return the fewest batches an epoch, up to one window (k, or the largest drawn) or those
    of `ran` (it ran there), that the loop runs on without raising: a recipe that sizes its
    schedule by len(loader) // k raises on an epoch shorter than its window. A loop that
    raises on more data than that is the report's error. A run that hangs or ends in a
    pitfall's symptom counts as running: the properties meet it on their own examples."""
    options = options_of(target)
    k = MOST_DRAWN if options.draws_count else count_of(options)
    most = min(ran.batches, k)
    for b in range(1, most):
        try:
            observe(target, Batching((0,) * b, 1, 1, 0, k if options.draws_count else None))
        except LoopRaised:
            continue
        except (CheckFailed, Aborted):
            pass  # it ran
        return b
    return most


def window_of(seen: Observed) -> int:
    """Return the micro-batches a full update consumed in a run: the most common count of
    forward passes an update was fed (the larger on a tie: an epoch's short last window)."""
    counts = Counter(len(step.calls) for step in seen.steps if step.calls)
    return max(counts, key=lambda k: (counts[k], k), default=1)


def windowed(target: Target) -> Target:
    """Return the target with its window read again from a run of its own, watched (a
    framework's module that steps itself, fed through a method of its own: the probe saw it
    unwatched)."""
    try:
        with models_restored():
            seen = observe(target, PROBE)
    except (LoopRaised, Aborted):
        return target  # the properties meet it on their own examples, and report it
    return replace(target, options=replace(options_of(target), accumulation_steps=window_of(seen)))


def _checked(
    fn: Callable[..., Any], options: TrainingLoopOptions
) -> tuple[Callable[..., Any], Observed, Batching]:
    asks_of(fn)
    try:
        with seeded(0):  # the user's RNG is left as it was
            probe = build_model(options.model, options.example)
        if options.optimizer is not None:
            built = options.optimizer(probe.parameters())
            if not isinstance(built, torch.optim.Optimizer):
                raise TypeError(
                    f"the optimizer factory returned {type(built).__name__}, not a "
                    "torch.optim.Optimizer"
                )
    except TypeError as e:
        raise TargetError(str(e)) from None
    from linreg.kinds.training_loop.references import check_model  # it imports this module

    target = Target(fn, "training-loop", options)
    first = ""  # what it raised on the first probe: the refusal's reason
    for batching in PROBES:  # larger data where the loop raised on less: it may need more
        start = time.perf_counter()
        try:
            model, seen = run_at_zero_lr(target, batching)
            break
        except LoopRaised as e:
            first = first or f"on {describe(batching, options)}, {e}"
        except Aborted as e:
            raise TargetError(
                f"{name_of(fn)}: on {describe(batching, options)}, {e.args[0]}"
            ) from None
    else:
        tried = "; ".join(f"{b.batches} batches an epoch" for b in PROBES)
        raise TargetError(f"{name_of(fn)}: {first} (it raised on each of: {tried})")
    _LIMITS[id(fn)] = (fn, max(FLOOR, 50 * (time.perf_counter() - start)))
    if seen.moved:
        raise TargetError(
            f"{name_of(fn)}: with the optimizer's lr held at 0 the loop still changed the "
            "model's parameters: it updates them outside optimizer.step(), and the audit "
            "judges only a loop that steps an optimizer"
        )
    try:
        check_model(model, seen.calls)
    except TypeError as e:
        raise TargetError(str(e)) from None
    return fn, seen, batching


def full_step_rows(steps: Sequence[Step]) -> int:
    """Return the rows of a full update, as the run shows it: the most common count of rows a
    step consumed (the smaller on a tie), not what the loop was declared to accumulate."""
    counts = Counter(step.rows for step in steps)
    return max(counts, key=lambda rows: (counts[rows], -rows), default=0)


def framework_target(
    loop: Callable[..., Any],
    framework: str,
    factory: Callable[[], nn.Module],
    watch: Watch | None = None,
    **options: Any,
) -> Target:
    """Return the training-loop target that judges a framework's Trainer, run by loop, on the
    models factory makes, watched as `watch` says; named framework(MODULE:NAME) after the
    factory alone."""
    loop.__name__ = loop.__qualname__ = f"{framework}({name_of(factory)})"
    loop.__module__ = ""
    target = replace(KIND.target(loop, model=factory, **options), watch=watch)
    # a module that steps itself (manual optimization) and is fed through a method of its own
    # was probed without its watch: its window, where the framework was told none, is read
    # again, watched
    told = options.get("accumulation_steps") is not None
    return target if watch is None or watch.replayable or told else windowed(target)


KIND = Kind(
    name="training-loop",
    signature=SIGNATURE,
    summary="any PyTorch training loop, as written, judged step by step on copies of one sample",
    options=TrainingLoopOptions,
    build=build,
    calls="the loop",
    times_itself=True,
    doc=(
        "The loop asks for what it needs by name: model (or net); loader, dataset or get_batch; "
        "num_epochs or a step count (max_steps, max_iters, ...); optionally optimizer, device, "
        "batch_size and an accumulation count (accumulation_steps, ...). model is a "
        "zero-argument factory of a fresh nn.Module (torch is seeded before each call); "
        "example one sample, unbatched, as the dataset holds it: (x, y), or a dict of tensors "
        "(or a zero-argument function returning one); optimizer a factory params -> "
        "torch.optim.Optimizer for a loop that takes one (default: plain SGD); a loop may "
        "build its own. The audit holds every step's lr at 0 and reads, after each "
        "optimizer.step(), the gradients it applied, and which rows were fed to the model for "
        "it: a correct loop applies the mean of those rows' own gradients (their sum for "
        "reduction=\"sum\"), each from the loss (loss=, the model's own, or the labels' "
        "usual loss confirmed against the loop). accumulation_steps=k says the loop steps "
        "once per k batches, windows that cross an epoch's end judged by their weights (given "
        "none: drawn for each example, 1 to 4, for a loop that takes a count; read from its "
        "first run for one that takes none); drop_last=True "
        "that the audit's DataLoader drops the short last batch. Dropout is set to p = 0 and "
        "batch norms held in eval mode; a model still random, or whose rows still interact, "
        "is refused, as is a loop that moves the parameters outside optimizer.step()."
    ),
)
