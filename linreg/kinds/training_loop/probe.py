"""The probe that checks a loop once, and the kind: the loop run on a first batching (a larger
one where it raised on less) to see that it says what it takes, steps an optimizer and has a
model that can be judged; its accumulation window and the fewest batches an epoch it runs on
read from that run; a framework's Trainer made a target of the kind.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from linreg import _kind_names as names
from linreg.checks import CheckFailed, LoopRaised
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.guards import Aborted, seeded
from linreg.kinds.options import name_of
from linreg.kinds.training_loop.batching import Batching, count_of, describe
from linreg.kinds.training_loop.held import models_restored
from linreg.kinds.training_loop.hooks import Watch
from linreg.kinds.training_loop.known import asks_of, limit_from, trained_from
from linreg.kinds.training_loop.ledger import Observed, blind_steps, flat_loss, one_update
from linreg.kinds.training_loop.one_run import build_model, observe, run_at_zero_lr
from linreg.kinds.training_loop.outputs import check_model
from linreg.kinds.training_loop.settings import (
    LONG,
    MOST_DRAWN,
    SIGNATURE,
    SLOW,
    TrainingLoopOptions,
    options_of,
)


def build(
    fn: Callable[..., Any], options: TrainingLoopOptions
) -> tuple[Callable[..., Any], TrainingLoopOptions]:
    """Return fn once it says what it takes, its model can be judged and it steps the
    optimizer, with the options its first run showed: its accumulation window read from that
    run where it was not declared, and whether it is slow (over SLOW s an update: work of its
    own after each step, an evaluation, a checkpoint)."""
    with models_restored():
        checked, seen, ran = _checked(fn, options)
        if per_update(seen) > SLOW:  # its examples hold fewer updates: the audit ends sooner
            options = replace(options, slow=True)
        if options.accumulation_steps is None:
            if asks_of(fn).has("accumulation"):  # drawn for each example
                options = replace(options, draws_count=True)
            else:  # read from the run
                options = replace(options, accumulation_steps=window_of(seen))
        least = least_batches(Target(fn, "training-loop", options), ran)
    return checked, replace(options, least_batches=least)


def per_update(seen: Observed) -> float:
    """Return the seconds from one update to the next in a run (their median: a first
    update's one-time costs, torch's lazy imports, are not the loop's); 0 with fewer than 2."""
    between = [b - a for a, b in zip(seen.stepped_at, seen.stepped_at[1:], strict=False)]
    return statistics.median(between) if between else 0.0


def shown_slow(seen: Observed) -> bool:
    """Return True once a run has shown a slow loop: its last two gaps between updates each
    over SLOW s (one long pause, a first update's imports or a logger made once, is not the
    loop's), or its first over LONG s (a wait of its own for another, as long, costs more than
    a loop mistaken for slow: its audit holds fewer examples). The probe ends it there, as the
    properties' runs of a slow loop hold fewer updates (a window of up to 5 batches still
    shows in 2 updates: a full one, the larger on a tie)."""
    at = seen.stepped_at
    if len(at) == 2:
        return at[1] - at[0] > LONG
    return len(at) >= 3 and min(at[-1] - at[-2], at[-2] - at[-3]) > SLOW


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
    # a slow loop's run ends at its first update (its work after it is not waited for): a
    # loop that needs more batches raises before, where it sizes its schedule
    enough = one_update if options.slow else None
    for b in range(1, most):
        batching = Batching((0,) * b, 1, 1, 0, k if options.draws_count else None)
        try:
            run_at_zero_lr(target, batching, enough)
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
    target = Target(fn, "training-loop", options)
    first = ""  # what it raised on the first probe: the refusal's reason
    for batching in PROBES:  # larger data where the loop raised on less: it may need more
        start = time.perf_counter()
        try:
            model, seen = run_at_zero_lr(target, batching, shown_slow)
            break
        except LoopRaised as e:
            first = first or f"on {describe(batching, options)}, {e}"
        except Aborted as e:
            raise TargetError(
                f"{name_of(fn)}: on {describe(batching, options)}, {e.args[0]}"
            ) from None
    else:
        tried = "; ".join(f"{b.batches} batches an epoch" for b in PROBES)
        raise TargetError(f"{name_of(fn)}: {first} (the same on each of: {tried})")
    limit_from(fn, time.perf_counter() - start)
    trained_from(fn, seen)
    if not seen.steps and not seen.fed and not blind_steps(seen):
        raise TargetError(
            f"{name_of(fn)}: on {describe(batching, options)} the loop neither fed the model a "
            "batch with grad on nor stepped an optimizer: nothing to judge (it trains tensors "
            "of its own, a scratch model's, by hand: audit.loop and audit.update_step judge "
            "those; or it did nothing on data this small)"
        )
    if seen.transformed and not any(step.calls for step in seen.steps):
        raise TargetError(
            f"{name_of(fn)}: on {describe(batching, options)} the loop fed the model under "
            "torch.func's transforms (vmap, grad) alone and set .grad itself: the audit "
            "judges the gradients backward() computes, row by row, and none reached these "
            "forwards (audit the per-row loss with audit.loss, or a loop that calls backward())"
        )
    if seen.steps and all(flat_loss(step) for step in seen.steps):
        raise TargetError(
            f"{name_of(fn)}: on {describe(batching, options)} every backward() reached the "
            "model's outputs and left every gradient 0, so no step can move the params: "
            "the loss has no gradient there, either by its making (torch.round or torch.sign "
            "on the output, a mask that drops every row: the loop never trains) or on the "
            "audit's rows alone, copies of the example that share its label (a loss that "
            "needs rows of two labels in a batch, as batch-hard triplet mining does; a "
            "margin the example already meets: give an example it has a gradient on)"
        )
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
    name=names.TRAINING_LOOP,
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
