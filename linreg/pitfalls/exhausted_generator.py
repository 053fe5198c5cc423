"""An exhausted generator: a data source made once and iterated every epoch trains one epoch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from linreg import checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES, UNEVEN_NUM_EXAMPLES
from linreg.checks import CheckFailed
from linreg.kinds.guards import guarded, seeded
from linreg.kinds.iterator import IteratorOptions, loader
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS
from linreg.kinds.training_loop import (
    CLASSIFIER,
    NO_KNOWN,
    TRAINING_LOOPS,
    Batching,
    asks_of,
    count_of,
    describe,
    expected_steps,
    loss_of,
    observe,
    options_of,
)
from linreg.kinds.twin_rows import TwinRows, follows_the_closed_form
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def data_iter_generator(
    batch_size: int, features: Tensor, labels: Tensor
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: a generator function whose result the trainer keeps: empty after one epoch."""
    order = torch.randperm(len(features))
    for i in range(0, len(features), batch_size):
        j = order[i : i + batch_size]
        yield features[j], labels[j]


def train_stored_batches(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Mistake: `batches = data_iter(...)` made once, looped over every epoch: one epoch runs."""
    w, b = params
    batches = data.data_iter(batch_size, features, labels)  # a generator, made once
    for _ in range(num_epochs):
        for X, y in batches:  # empty from the second epoch on
            loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
            optim.sgd([w, b], lr, len(X))


def loop_stored_generator(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: `batches = (b for b in loader)` made once, then iterated in every epoch."""
    batches = (batch for batch in loader)
    for _ in range(num_epochs):
        for X, y in batches:
            optimizer.zero_grad()
            loss_of(model(X), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def iterates_again(target: Target, case: dict[str, int]) -> None:
    """What the iterator returns, iterated a second time, yields a whole epoch again."""
    n, b = case["n"], case["batch_size"]
    once: list[Any] = []

    def made_once(batch_size: int, features: Tensor, labels: Tensor) -> Any:
        if not once:  # the trainer's mistake, or its design: one object for every epoch
            with guarded("the iterator"):
                once.append(target.fn(batch_size, features, labels))
        return once[0]

    with seeded(case["seed"]):
        first = checks.epoch_indices(made_once, n, b, pairs=False)
        second = checks.epoch_indices(made_once, n, b, pairs=False)
    if sum(map(len, second)) < sum(map(len, first)):
        raise checks.CheckFailed(
            f"iterated a second time it yielded {len(second)} batches of {sum(map(len, second))}"
            f" samples, the first time {len(first)} of {sum(map(len, first))}: a generator is "
            "exhausted after one epoch; call the iterator every epoch, or return a DataLoader"
        )


def _several_epochs(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    # full batches alone: a short last batch's step is short-last-batch's to judge
    sizes = sts.sizes(max_n=8, uneven=False)
    return sts.twin_rows(sizes=sizes, num_epochs=st.integers(2, 3))


def _reused(options: IteratorOptions) -> str | None:
    return None if options.reused else "reused=False: the iterator is called every epoch"


def _book_loop() -> TwinRows:
    return TwinRows.book(num_epochs=3)


REUSED = IteratorOptions(reused=True)


def takes_every_step(target: Target, batching: Batching) -> None:
    """E epochs feed the model E times one epoch's rows; a step budget of S takes at least S
    steps (a budget that counts inclusively takes S + 1: each step is judged on its own).

    Epochs are judged by the rows that went through the model and by the steps: a loop whose
    accumulation windows cross the epoch boundary steps a different number of times per epoch
    and feeds every epoch; one with a pass of its own over the data feeds more and steps every
    epoch; one whose data is used up after a pass does neither after the first.
    """
    options = options_of(target)
    seen = observe(target, batching)
    if asks_of(target.fn).by_steps:
        got = len(seen.steps)
        want = max(1, expected_steps(batching, count_of(options, batching), options.drop_last))
        if want <= got <= want + 1:  # used up, the data would give fewer
            return
        went_on = " and went on (the audit ended it there)" if seen.overran else ""
        raise CheckFailed(
            f"on {describe(batching, options)} the loop took {got} optimizer steps{went_on}, "
            f"expected {want} (a budget of max steps={want}): it {NO_KNOWN}"
        )
    if seen.overran:  # ended by the audit: no run stops there when its epochs are done
        raise CheckFailed(
            f"on {describe(batching, options)} the loop took {len(seen.steps)} optimizer steps, "
            f"more than four for each of the {batching.num_epochs * batching.n} rows it was "
            "handed, and went on (the audit ended it there): it does not stop when its "
            f"{batching.num_epochs} epoch(s) are done (a budget of its own?)"
        )
    if batching.num_epochs == 1:
        return
    once = observe(target, replace(batching, num_epochs=1))
    epochs = batching.num_epochs
    if seen.fed == once.fed * epochs or len(seen.steps) == len(once.steps) * epochs:
        return  # every epoch fed the model its rows, or took its steps
    handed = batching.n - (batching.n % batching.batch_size if options.drop_last else 0)
    why = NO_KNOWN
    if seen.fed == once.fed and len(seen.steps) == len(once.steps):
        why = (
            "fed rows and stepped in the first epoch only: what it iterates is used up after "
            "one pass (a generator or iter(loader) made once?)"
            if once.fed <= handed
            else f"fed as many when asked for 1 epoch ({once.fed} rows, {once.fed / handed:g} "
            "epochs' worth): it runs epochs of its own, not num_epochs"
        )
    raise CheckFailed(
        f"on {describe(batching, options)} {seen.fed} rows went through the model in "
        f"{len(seen.steps)} optimizer steps, expected {once.fed * epochs} rows or "
        f"{len(once.steps) * epochs} steps ({epochs} epochs of {once.fed} rows, "
        f"{len(once.steps)} steps): it {why}"
    )


PROPERTIES = (
    Property(
        name="what it returns, iterated a second time, yields a whole epoch again",
        kind="iterator",
        check=iterates_again,
        examples=_kit.drawn("epoch_cases"),
        holds_for=(
            Target(loader(False), "iterator", REUSED, "DataLoader(shuffle=True)", oracle=True),
        ),
        refuted_by=(Variant(data_iter_generator, None, "iterator", REUSED),),
        book=lambda: {"n": UNEVEN_NUM_EXAMPLES, "batch_size": BATCH_SIZE, "seed": 0},
        applies=_reused,
    ),
    Property(
        name="E epochs take E * ceil(n / B) steps (E * floor(n / B) with drop_last)",
        kind="loop",
        check=follows_the_closed_form,
        examples=_several_epochs,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_stored_batches, None, "loop"),),
        book=_book_loop,
        requires=("backward-twice", "rebinding", "mean-vs-sum", "grad-zeroing"),
    ),
    Property(
        name="E epochs feed E times one epoch's rows; a budget of S steps takes at least S",
        kind="training-loop",
        check=takes_every_step,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_stored_generator, None, "training-loop", CLASSIFIER),),
        book=lambda: Batching((0,) * 5, 2, 3, 0),
        requires=("non-leaf-params",),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Train 3 epochs with the generator kept; compare with 1 and 3 epochs of the right loop."""
    X, y = _kit.book(NUM_EXAMPLES)

    def run(fn: Any, epochs: int) -> list[Tensor]:
        params = list(model.init_params(2, generator=_kit.gen(1), dtype=X.dtype))
        with seeded(0):
            fn(X, y, params, lr=0.03, batch_size=BATCH_SIZE, num_epochs=epochs)
        return params

    def right(features: Tensor, labels: Tensor, params: list[Tensor], **kw: Any) -> Any:
        return train.train(features, labels, params=(params[0], params[1]), **kw)

    stored = run(train_stored_batches, 3)
    once, thrice = run(right, 1), run(right, 3)
    same_as_one = all(torch.equal(a, b) for a, b in zip(stored, once, strict=True))
    losses = {
        k: train.epoch_loss(X, y, *p)
        for k, p in (
            ("stored, 3 epochs", stored),
            ("right, 1 epoch", once),
            ("right, 3 epochs", thrice),
        )
    }
    ok = same_as_one and losses["right, 3 epochs"] < losses["stored, 3 epochs"]
    return Evidence(
        id="exhausted-generator",
        expected=(
            "a generator kept across epochs is empty after the first: 3 epochs of the loop equal "
            "1 epoch of the right one, bit for bit"
        ),
        observed=f"stored generator, 3 epochs == right loop, 1 epoch: {same_as_one}; losses: "
        + ", ".join(f"{k} {v:.3g}" for k, v in losses.items()),
        ok=ok,
        figures={"equal_to_one_epoch": same_as_one, "loss": losses},
    )


PITFALL = Pitfall(
    id="exhausted-generator",
    title="An exhausted generator: one epoch of data for every epoch",
    explanation=(
        "A data source written as a generator function and called once (a trainer that stores "
        "data.get_dataloader(True) and loops over it every epoch) yields nothing after the first "
        "epoch: the loop silently trains one epoch, however many it was asked for. Fix: call the "
        "iterator every epoch, or keep a re-iterable object such as a DataLoader."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=15,
)
