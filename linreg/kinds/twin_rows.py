"""Loop examples on n identical rows, whose result a closed form predicts (`TwinRows`).

Every batch's mean gradient is then the one row's, so a correct loop's result depends only on
its number of steps; a wrong one's often matches one of the known mistakes, which the failure
message names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg import checks
from linreg._book import BATCH_SIZE
from linreg.checks import CheckFailed, compared
from linreg.kinds.base import Target
from linreg.kinds.guards import seeded
from linreg.kinds.loop import LoopOptions, ObjectiveOptions, curvature, train_loop


def batch_sizes(n: int, batch_size: int, drop_last: bool) -> list[int]:
    """Return one epoch's batch sizes: full batches, then the short one unless dropped."""
    sizes = [batch_size] * (n // batch_size)
    return [*sizes, n % batch_size] if n % batch_size and not drop_last else sizes


@dataclass(frozen=True)
class TwinRows:
    """A loop example on n identical rows: the result does not depend on the batch order.

    Every batch's mean gradient is then the one row's, so a correct loop's result depends only
    on its number of steps, each shrinking the residual r = x.w + b - y by (1 - rate): a
    closed form predicts it. `residual` is r at the start (never 0), `rate` is lr times the
    objective's curvature along the row.
    """

    n: int
    batch_size: int
    num_epochs: int
    x: tuple[float, ...]
    w0: tuple[float, ...]
    b0: float
    residual: float
    rate: float
    seed: int

    def tensors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Return features (n, d), labels (n, 1) and leaf params [w (d, 1), b (1,)] in dtype."""
        x = torch.tensor(self.x, dtype=dtype)
        w = torch.tensor(self.w0, dtype=dtype).reshape(-1, 1)
        b = torch.tensor([self.b0], dtype=dtype)
        y = float((x.double() @ w.double().reshape(-1) + b.double()).item()) - self.residual
        features = x.expand(self.n, -1).clone()
        labels = torch.full((self.n, 1), y, dtype=dtype)
        return features, labels, [w.requires_grad_(), b.requires_grad_()]

    def lr(self, options: ObjectiveOptions) -> float:
        """Return the learning rate that makes each correct step shrink r by (1 - rate)."""
        x = torch.tensor(self.x, dtype=options.dtype).double()
        return self.rate / (curvature(options) * (float(x @ x) + 1.0))

    def batch_size_for(self, options: LoopOptions) -> int:
        """Return the batch size the loop is given: n for a full-batch loop."""
        return self.n if options.full_batch else self.batch_size

    @classmethod
    def book(cls, n: int = 20, batch_size: int = BATCH_SIZE, num_epochs: int = 1) -> TwinRows:
        """Return the demonstrations' case: the row (1, -0.5) from w = 0, b = 0, r = -4.2."""
        return cls(n, batch_size, num_epochs, (1.0, -0.5), (0.0, 0.0), 0.0, -4.2, 0.2, 0)


@dataclass(frozen=True)
class _Line:
    """A TwinRows case in the closed form's terms: the row [x, 1], theta0, r0 and the rate a."""

    row: Tensor  # (d + 1,) float64
    theta0: Tensor  # (d + 1,) float64
    r0: float  # the residual at the start
    a: float  # each correct step multiplies the residual by (1 - a)

    @staticmethod
    def of(case: TwinRows, options: ObjectiveOptions) -> _Line:
        features, labels, (w, b) = case.tensors(options.dtype)
        row = torch.cat([features[0].double(), torch.ones(1, dtype=torch.float64)])
        theta0 = torch.cat([w.detach().double().reshape(-1), b.detach().double()])
        a = case.lr(options) * curvature(options) * float(row @ row)
        return _Line(row, theta0, float(row @ theta0) - float(labels[0, 0]), a)

    def after(self, scales: Sequence[float], accumulate: bool = False) -> Tensor:
        """Return [w, b] after steps of the given sizes (1 = a correct mean step).

        With accumulate, each step uses the sum of all gradients so far (grads never zeroed).
        """
        r, total = self.r0, 0.0
        for s in scales:
            total = total + r * s if accumulate else r * s
            r -= self.a * total
        return self.theta0 - (self.r0 - r) / float(self.row @ self.row) * self.row

    def step_factor(self, theta: Tensor, k: int) -> float | None:
        """Return s such that k steps, each s times a correct one, explain theta, if one does."""
        shrink = (float(self.row @ (theta - self.theta0)) + self.r0) / self.r0  # (1 - a s)^k
        if k != 1 and shrink < 0:
            return None
        factor = (1 - (shrink if k == 1 else shrink ** (1 / k))) / self.a
        return factor if factor > 0 else None


def expected_params(
    case: TwinRows, options: ObjectiveOptions, scales: Sequence[float], accumulate: bool = False
) -> Tensor:
    """Return [w, b] in float64 after steps of the given sizes (1 = a correct mean step)."""
    return _Line.of(case, options).after(scales, accumulate)


def check_twin_rows(case: TwinRows, options: LoopOptions, got: list[Tensor]) -> None:
    """Check a loop's result on a TwinRows case against the closed form; name a likely mistake."""
    line = _Line.of(case, options)
    sizes = batch_sizes(case.n, case.batch_size_for(options), options.drop_last)
    steps = [1.0] * len(sizes) * case.num_epochs
    want = line.after(steps)
    theta = torch.cat(got)
    tol = checks.tolerance(options.dtype, steps=True)
    scale = max(1.0, float(want.abs().max()), float(theta.abs().max()))
    if float((theta - want).abs().max()) <= tol * scale:
        return
    b = case.batch_size_for(options)
    guesses: list[tuple[str, Tensor]] = [
        ("did not move the params", line.theta0),
        (
            "divides the short last batch's step by the nominal batch size "
            "(or sums its loss at lr / B_nominal)",
            line.after([s / b for s in sizes] * case.num_epochs),
        ),
        (
            "sums the loss where the mean's lr was given: each step is B times too big",
            line.after([float(s) for s in sizes] * case.num_epochs),
        ),
        (
            "never zeroes the grads: each step adds up all the gradients so far",
            line.after(steps, accumulate=True),
        ),
    ]
    guesses += [
        (f"took {k} steps where {len(steps)} were expected", line.after([1.0] * k))
        for k in range(1, 2 * len(steps) + 1)
        if k != len(steps)
    ]
    factor = line.step_factor(theta, len(steps))
    if factor is not None:
        objective = "r^2 / 2" if options.objective == "book" else "r^2"
        guesses.append(
            (
                f"takes steps {factor:.4g} times those of the declared objective (objective="
                f"{options.objective!r}: the mean of {objective})",
                line.after([factor] * len(steps)),
            )
        )
    why = next(
        (what for what, p in guesses if float((theta - p).abs().max()) <= tol * scale),
        "matches none of the known mistakes",
    )
    raise CheckFailed(
        f"on {case.n} identical rows with batch_size={case.batch_size_for(options)} "
        f"({case.num_epochs} epoch(s) of batches {sizes}) the loop trained [w, b] to "
        f"{_fmt(theta)}, expected {_fmt(want)}: it {why}",
        compared("[w, b] after training, against the closed form", theta, want),
    )


def run_twin_rows(target: Target, case: TwinRows) -> list[Tensor]:
    """Run a loop target on a TwinRows case, its RNGs seeded; return the params it trained."""
    options = target.options
    features, labels, params = case.tensors(options.dtype)
    with seeded(case.seed):
        return train_loop(
            target,
            features,
            labels,
            params,
            lr=case.lr(options),
            batch_size=case.batch_size_for(options),
            num_epochs=case.num_epochs,
        )


def follows_the_closed_form(target: Target, case: TwinRows) -> None:
    """The loop's result on identical rows equals its number of steps of the objective's."""
    check_twin_rows(case, target.options, run_twin_rows(target, case))


def _fmt(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in t.tolist()) + "]"
