"""One run of a loop at lr 0: the model built from the factory, the loop called with what it
asks for, watched within its time limit (within an audit, once: `shared`), and what it raised
told as LoopRaised.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from linreg.checks import CheckFailed, LoopRaised, where
from linreg.kinds.base import Target
from linreg.kinds.guards import Aborted, Overran, TimeUp, seeded, silenced, time_limit, user_fn
from linreg.kinds.training_loop import contract as contracts
from linreg.kinds.training_loop.batching import Batching, count_of, expected_steps
from linreg.kinds.training_loop.fetches import ShortFetches
from linreg.kinds.training_loop.held import held_still
from linreg.kinds.training_loop.hooks import Watch, watching
from linreg.kinds.training_loop.known import asks_of, limit_of, trained_of
from linreg.kinds.training_loop.ledger import Observed, Step, not_finite
from linreg.kinds.training_loop.rows import Example, firsts, rows_of
from linreg.kinds.training_loop.settings import default_optimizer, options_of
from linreg.kinds.training_loop.shared import kept
from linreg.kinds.training_loop.sources import drew


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


def run_at_zero_lr(
    target: Target,
    batching: Batching,
    enough: Callable[[Observed], bool] | None = None,
    *,
    masks: bool = True,
) -> tuple[nn.Module, Observed]:
    """Run the loop at lr = 0 on a batching; return its model and what it did (within an
    audit, once: `shared`). enough(seen), asked after each update, True: the loop is ended
    there (the probe's run of a slow loop, a reference's one update), and that shorter run is
    not shared. masks=False: its steps keep the params no optimizer stepped (a reference's
    run: each run it is the reference of masks it as its own)."""
    if enough is not None or not masks:
        return _run_at_zero_lr(target, batching, enough, masks)
    return kept("run", target, batching, lambda: _run_at_zero_lr(target, batching))


def _run_at_zero_lr(
    target: Target,
    batching: Batching,
    enough: Callable[[Observed], bool] | None = None,
    masks: bool = True,
) -> tuple[nn.Module, Observed]:
    c = options_of(target)
    asks = asks_of(target.fn)
    with seeded(batching.seed):
        model = build_model(c.model, c.example)
        optimizer = None
        if asks.has("optimizer"):
            optimizer = (c.optimizer or default_optimizer)(model.parameters())
    k = count_of(c, batching)
    seen = Observed()  # watching()'s, once the run is watched (drew_rows reads the name)

    def drew_rows(rows: int, batch: bool, value: Any) -> None:  # its dataset's or get_batch's
        drew(seen, rows, batch, value)

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
        drew=drew_rows,
    )
    short = ShortFetches(batching) if asks.data == "loader" else None
    if short is not None:  # told each batch the audit's loader makes (drop_last: no short one)
        data = kwargs[asks.names["loader"]]
        data.collate_fn = short.collating(data.collate_fn)
    watch = target.watch or Watch()
    limit = limit_of(target)  # from the start, and anew after each update: the loop's progress
    # more updates than four for each row it was handed (or step it was asked for): a loop on
    # a budget of its own; ended there, what it did is judged (each update needs a row fed: a
    # correct loop comes near only with four optimizers each stepping on its own rows of one)
    most = 4 * max(expected_steps(batching, k, c.drop_last), batching.num_epochs * batching.n)

    def stepped() -> None:  # after each update: its time limit anew, and the budget's end
        anew()
        if len(seen.steps) >= most + 8:
            seen.overran = True
            raise Overran
        if enough is not None and enough(seen):
            raise Overran

    try:
        with (
            time_limit(limit) as anew,
            watching(
                model,
                watch.method,
                watch.replayable,
                stepped,
                trained_of(target),
                masks,
                data=distinct_rows(c.example, batching),
            ) as seen,
            seeded(batching.seed),
            warnings.catch_warnings(),
            silenced(),
        ):
            warnings.simplefilter("ignore")  # the loop's warnings are not verdicts
            if short is not None:
                short.seen = seen
            seen.handed = batching.n
            target.fn(**kwargs)
            if short is not None:  # returned: its last pass's rows, if it trained
                short.finish()
    except (CheckFailed, LoopRaised):
        raise
    except Overran:
        pass  # ended by the audit: past its budget (seen.overran), or seen enough
    except TimeUp:
        raise Aborted(LoopRaised(_no_progress(limit, len(seen.steps)))) from None
    except Exception as e:
        raise raised(e, target.fn) from e
    infinite = not_finite(seen)
    if infinite:
        raise LoopRaised(infinite)
    return model, seen


def distinct_rows(example: Example, batching: Batching) -> list[torch.Tensor] | None:
    """Return the first tensor of each distinct row of a run's data (the example's, the
    contrast row's where the run mixes them; None: a row holds none)."""
    return firsts(example, sorted(set(batching.rows)))


def raised(e: BaseException, fn: Callable[..., Any]) -> LoopRaised:
    """Return the loop's exception as LoopRaised: its type, message and the frame it came from."""
    fn = user_fn(fn)
    source = getattr(getattr(fn, "func", fn), "__code__", None)  # a partial: its function's
    file = source.co_filename if source is not None else None
    at = where(e, file=file, outside=("/torch/", "/linreg/kinds/"))
    message = str(e) or "(no message)"
    hint = ""
    if "backward through the graph a second time" in message:
        hint = " (backward-twice: a graph kept across steps? detach what you keep)"
    return LoopRaised(f"the loop raised {type(e).__name__}: {message}{at}{hint}")


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


def full_step_rows(steps: Sequence[Step]) -> int:
    """Return the rows of a full update, as the run shows it: the most common count of rows a
    step consumed (the smaller on a tie), not what the loop was declared to accumulate."""
    counts = Counter(step.rows for step in steps)
    return max(counts, key=lambda rows: (counts[rows], -rows), default=0)
