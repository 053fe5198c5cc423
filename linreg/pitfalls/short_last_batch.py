"""The short last batch's step: sgd must divide by the ACTUAL size of each batch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.optim import Optimizer

from linreg import checks, concise, loss, model, optim, train
from linreg._book import BATCH_SIZE, UNEVEN_NUM_EXAMPLES
from linreg.checks import CheckFailed
from linreg.config import TrainConfig, bind, mirrors
from linreg.kinds.late import late
from linreg.kinds.loop import LOOPS, LoopOptions
from linreg.kinds.runs import book_run, trajectory
from linreg.kinds.training_loop import (
    LINEAR,
    NO_KNOWN,
    TRAINING_LOOPS,
    Batching,
    Judged,
    Step,
    Wanted,
    beside_a_sum,
    close,
    compare,
    count_of,
    crosses,
    describe,
    dropped_shorts,
    full_rows,
    loss_of,
    near,
    options_of,
    skipped_own_shorts,
    summed_means,
    undecided,
    unequal_weights,
    unfed_short,
    unjudged_beside_a_sum,
    unscaled,
)
from linreg.kinds.twin_rows import TwinRows, follows_the_closed_form
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

JUDGED = "a shorter step"  # what the property judges (its not-judged reason)

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


@mirrors(train.train)
def train_nominal_batch_size(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: the book's `sgd([w, b], lr, batch_size)`: a short last batch's step shrinks."""
    a = bind(train_nominal_batch_size, *args, **kwargs)
    return train.fit(a["features"], a["labels"], TrainConfig.of(a), _nominal_step, a["params"])


def _nominal_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, config: TrainConfig) -> None:
    loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
    optim.sgd([w, b], config.lr, config.batch_size)  # nominal, not X.shape[0]


def loop_nominal_batch_size(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: `loss.sum() / loader.batch_size`: the short last batch's step shrinks."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            (loss_of(model(X), y, "sum") / loader.batch_size).backward()  # type: ignore[attr-defined]
            optimizer.step()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def follows_the_oracle(target: Target, run: dict[str, Any]) -> None:
    """The loop equals nn.Linear + nn.MSELoss() + optim.SGD at lr / 2, fed the same batches."""
    ours = trajectory(target, run)
    theirs = trajectory(Target(concise.train_concise, "train"), run, lr=run["lr"] / 2)
    checks.check_same_trajectory(ours, theirs)


def _short_batches(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    # k full batches of b rows, then r < b: one epoch, one short batch at its end
    sizes = st.integers(2, 6).flatmap(
        lambda b: st.tuples(st.integers(0, 2), st.integers(1, b - 1)).map(
            lambda kr: (kr[0] * b + kr[1], b)
        )
    )
    return sts.twin_rows(sizes=sizes)


def _book_short() -> TwinRows:
    return TwinRows.book(13)


def _has_a_short_batch(options: LoopOptions) -> str | None:
    if options.full_batch:
        return "a full-batch loop has no short last batch"
    if options.drop_last:
        return "a loop that drops the left-over samples has no short last batch"
    return None


def short_step_applies_the_mean(target: Target, batching: Batching) -> None:
    """An epoch's short last step applies the mean of its rows' gradients as a full one does
    (on identical rows, the same gradient), and the epoch's left-over micro-batches are
    stepped, neither dropped nor carried over with the wrong weight. A full step's rows are
    read from the run, not from what was declared.

    Judged on its own: full steps are mean-vs-sum's and grad-zeroing's, so only a step of
    another size, or one across an epoch's end, is judged here, relative to the full steps'
    scale; a short step that applies that scale per row (a summed loss: fewer rows, less
    gradient), or that adds its own rows rightly to what it found in .grad, is theirs."""
    options = options_of(target)
    k = count_of(options, batching)
    nominal = batching.batch_size * k

    def judged(j: int, steps: list[Step]) -> bool:
        if undecided(target, batching, steps):  # one step, fewer than k micro-batches: a
            return False  # short first window, or a loop that never gathers k (unknown here)
        full = full_rows(target, batching, steps)
        return steps[j].rows != full or crosses(batching, options.drop_last, steps, j)

    over_k: set[int] = set()  # steps that divide their micro-batches' means by the nominal k

    def excused(j: int, verdicts: Sequence[Judged | None], run: Wanted, by: float | None) -> bool:
        v, steps = verdicts[j], run.seen.steps
        assert v is not None
        full = full_rows(target, batching, steps)
        parts = next((len(s.sizes) for s in steps if s.rows == full), 1)
        # right; or, where the full steps carry a scale (mean-vs-sum's), that scale taken per
        # row (a summed loss) or per micro-batch (summed means), or none at all (right as is)
        shares = [1.0] + ([steps[j].rows / full, len(steps[j].sizes) / parts, 1 / by] if by else [])
        if not by and full == 1:  # a full step of one row shows no sum's scale: a step taking
            shares.append(steps[j].rows)  # its rows' sum is a summed loss's (mean-vs-sum's on
            # wider full steps) as much as a divisor of one row's

        def fits(s: float | None) -> bool:
            return s is not None and any(near(s, t, v.tol) for t in shares)

        # on two kinds of rows, a window of uneven micro-batches divided by their count reads
        # as no multiple at all: micro-batch-accumulation's (on identical rows, a nominal
        # count shows here as its ratio)
        if fits(v.ratio) or v.stale or (v.carried and fits(v.own)):
            return True
        if not v.carried and unscaled(target, batching, run, verdicts):
            # the full steps apply no multiple of theirs (a term summed beside a mean:
            # mean-vs-sum's): no scale of theirs to judge this one's against; not judged
            beside_a_sum(batching, JUDGED)
            return True
        crossing = crosses(batching, options.drop_last, steps, j)
        if (
            steps[j].unreached  # micro-batches no backward() reached: micro-batch-accumulation's
            and steps[j].rows <= full  # (the steps it judges)
            and not (crossing and v.carried)
            and (explain(j, v, steps) == NO_KNOWN or crossing)
        ):
            return True
        if not unequal_weights(v, batching):
            return False
        # a short window's micro-batch means over the nominal count, where the full windows
        # are right: a mean of means, and a nominal divisor too, named here once (on
        # identical rows it reads as a scale); means added up, a scale of every window, are
        # mean-vs-sum's
        step = steps[j]
        means = summed_means(step, run.ref) if run.ref is not None and k > 1 else None
        if means is not None and by is None and len(step.sizes) < k:
            reading = v.reading
            if close(reading, means / k, run.tol, run.scale):
                over_k.add(j)
                return False
        return True

    def explain(j: int, v: Judged, steps: list[Step]) -> str:
        step = steps[j]
        s = v.ratio
        rows, batches = step.rows, len(step.sizes)
        if crosses(batching, options.drop_last, steps, j):
            return (
                f"took {rows} rows across the epoch's end: the epoch's left-over micro-batches "
                "were carried into it, unzeroed, and weighed wrong (step them when the data "
                "ends, or divide the window by all its rows)"
            )
        if j in over_k:
            return (
                f"divides its {batches} micro-batches' mean losses by the nominal "
                f"accumulation_steps={k} where step {j + 1} took {batches} batch(es)"
            )
        if s is not None and k > 1 and near(s * k, batches, v.tol):
            return (
                f"divides by the nominal accumulation_steps={k} where step {j + 1} took "
                f"{batches} batch(es)"
            )
        if s is not None and near(s * nominal, rows, v.tol):
            return (
                f"divides the short step's summed loss by the nominal {nominal} rows "
                f"({'batch_size' if k == 1 else 'batch_size * accumulation_steps'}) where it "
                f"took {rows}"
            )
        return NO_KNOWN

    seen = compare(
        target, batching, judged, explain, relative=True, excused=excused, needs_scale=True
    )
    if seen.leftover:
        raise CheckFailed(
            f"on {describe(batching, options)}, after its last step, {len(seen.leftover)} "
            "micro-batch(es) went through the model and backward() but no optimizer.step() "
            "used them: the loop never steps an epoch's left-over micro-batches (step when the "
            f"data ends too{f', not only every {k} micro-batches' if k > 1 else ''})"
        )
    dropped = dropped_shorts(seen)
    if dropped:
        raise CheckFailed(
            f"on {describe(batching, options)}, an epoch's short last batch "
            f"({batching.n % batching.batch_size} row(s)) went through the model and no "
            f"backward() reached it (seen {dropped} time(s), before an update that followed): "
            "its rows are never applied (a batch smaller than batch_size skipped after its "
            "forward: step on it too; where it is dropped on purpose, say so: drop_last=True, "
            "--drop-last)"
        )
    own = skipped_own_shorts(seen) if not seen.shorts else 0
    if own:
        raise CheckFailed(
            f"on {describe(batching, options)}, a DataLoader the loop made itself made a "
            f"short last batch and the loop never passed it through the model, in {own} "
            "epoch(s) it trained on after: its rows are never applied (an epoch of "
            "len(dataset) // batch_size steps: step on the short batch too; where it is "
            "dropped on purpose, say so: drop_last=True, --drop-last)"
        )
    # (rows carried over are fed; a short batch fetched ahead, fed later, was fed)
    if seen.skipped_short and 0 < seen.fed < seen.train_rows and unfed_short(seen):
        short = batching.n % batching.batch_size
        unfed = seen.train_rows - seen.fed
        why = (
            f"{unfed} fetched rows in all never fed: an epoch's left-over window, fewer than "
            f"{k} batches, or its short batch: feed and step them too, when the data ends"
            if k > 1
            else "a batch smaller than batch_size skipped before its forward: step on it too; "
            "where it is dropped on purpose, say so: drop_last=True, --drop-last"
            if unfed <= short * batching.num_epochs
            else f"{unfed} fetched rows in all never fed"
        )
        # (counted where the loop trained on after it: the run's last epoch ends there)
        raise CheckFailed(
            f"on {describe(batching, options)}, the loop fetched an epoch's short last batch "
            f"({short} row(s)) and never passed it through the model, then trained on, in "
            f"{seen.skipped_short} epoch(s): its rows are never applied ({why})"
        )


PROPERTIES = (
    Property(
        name="the loop follows nn.MSELoss() + optim.SGD at lr / 2 step for step",
        kind="train",
        check=follows_the_oracle,
        examples=_kit.drawn("runs"),
        holds_for=(Target(late("train.train"), "train", name="train"),),
        refuted_by=(Variant(train_nominal_batch_size, "train.train", "train"),),
        book=lambda: book_run(103, BATCH_SIZE),  # uneven like 1003, a tenth of the cost
    ),
    Property(
        name="on identical rows, a short last batch takes the same step as a full one",
        kind="loop",
        check=follows_the_closed_form,
        examples=_short_batches,
        holds_for=LOOPS,
        refuted_by=(Variant(train_nominal_batch_size, "train.train", "loop"),),
        book=_book_short,
        applies=_has_a_short_batch,
        requires=("backward-twice", "rebinding", "mean-vs-sum", "grad-zeroing"),
    ),
    Property(
        name="the short last step applies a full one's gradient; no rows are left unstepped",
        kind="training-loop",
        check=short_step_applies_the_mean,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_nominal_batch_size, None, "training-loop", LINEAR),),
        book=lambda: Batching((0,) * 13, BATCH_SIZE, 1, 0),
        requires=("non-leaf-params",),
        unjudged=unjudged_beside_a_sum(JUDGED),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Measure the last step's size and each loop's gap to the torch oracle."""
    n, b = UNEVEN_NUM_EXAMPLES, BATCH_SIZE
    X, y = _kit.book(n)
    oracle = _kit.trajectory(concise.train_concise, X, y, 0.015)  # MSELoss mean at lr / 2
    ours = _kit.trajectory(train.train, X, y, 0.03)
    book = _kit.trajectory(train_nominal_batch_size, X, y, 0.03)
    # the last step's size, relative to the one with the right divisor
    last = [float((s[-1][0] - s[-2][0]).norm()) for s in (book, ours)]
    ratio = last[0] / last[1]
    gaps = {"train": _kit.gap(ours, oracle), "train_nominal_batch_size": _kit.gap(book, oracle)}
    ok = (
        math.isclose(ratio, (n % b) / b, rel_tol=1e-9)
        and gaps["train"] < 1e-12 < gaps["train_nominal_batch_size"]
    )
    return Evidence(
        id="short-last-batch",
        expected=(
            f"n={n}, b={b}: the nominal divisor makes the last step {n % b}/{b} of its size; train "
            "matches MSELoss + optim.SGD at lr/2 to 1e-12, the book's loop does not"
        ),
        observed=(
            f"last step ratio {ratio:.6f}; largest gap to the oracle: train {gaps['train']:.1e}, "
            f"nominal {gaps['train_nominal_batch_size']:.1e}"
        ),
        ok=ok,
        figures={"last_step_ratio": ratio, "gap_to_oracle": gaps},
    )


PITFALL = Pitfall(
    id="short-last-batch",
    title="The short last batch's step: divide by the actual batch size",
    explanation=(
        "squared_loss is summed over the batch, so sgd divides the gradient by the batch size. "
        "The book passes the NOMINAL batch_size, so the short last batch of an uneven epoch takes "
        "a step (n % b) / b times too small. Fix: pass X.shape[0]; the loop then equals "
        "nn.MSELoss() + optim.SGD at lr / 2 step for step."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=2,
)
