"""How each kind of target is called and observed, and the data the properties give it.

A target's own exceptions become `CheckFailed` saying what raised (`guarded`); its use of
torch's and Python's global RNGs is seeded per example and restored after (`seeded`). Loops
are observed only through what they are given and what they return (`train_loop`), on data
whose result does not depend on the order of the batches (`TwinRows`): n identical rows.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from linreg import checks, data
from linreg._book import BATCH_SIZE
from linreg.checks import CheckFailed
from linreg.pitfalls._base import Contract, Target, late


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn an exception a target raises into a CheckFailed that says what raised it.

    The target's warnings are ignored: a warning filter set to "error" (pytest's, say) must
    not turn `float(loss)` in a logging line into a verdict.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except CheckFailed:
        raise
    except Exception as e:
        raise CheckFailed(f"{what} raised {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global RNGs while a target runs; restore them afterwards."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA: slow
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


# --- iterators -----------------------------------------------------------------------------------


def epoch(target: Target, n: int, batch_size: int, *, pairs: bool = False) -> list[list[int]]:
    """Run one epoch of an iterator target on the index dataset; return each batch's indices.

    With pairs, each batch's labels must be its features' own (the shuffled-apart property).
    """
    with guarded("the iterator"):
        return checks.epoch_indices(target.fn, n, batch_size, pairs=pairs)


def loader(drop_last: bool) -> Callable[..., Any]:
    """Return an iterator that wraps the data in DataLoader(shuffle=True), torch's."""

    def iterate(b: int, X: Tensor, y: Tensor) -> DataLoader[Any]:
        return DataLoader(TensorDataset(X, y), batch_size=b, shuffle=True, drop_last=drop_last)

    iterate.__name__ = f"DataLoader(shuffle=True, drop_last={drop_last})"
    return iterate


def iterators(drop_last: bool) -> tuple[Target, ...]:
    """Return linreg's data_iter and torch's DataLoader (the oracle) as iterator targets."""
    contract = Contract(drop_last=drop_last)
    return (
        Target(
            partial(late("data.data_iter"), drop_last=drop_last),
            "iterator",
            contract,
            f"data_iter(drop_last={drop_last})",
        ),
        Target(loader(drop_last), "iterator", contract, oracle=True),
    )


# --- update steps --------------------------------------------------------------------------------


class Update(NamedTuple):
    """An update step's arguments: leaf params with grads set, the lr and the batch size."""

    params: list[Tensor]
    lr: float
    batch_size: int


def fresh(update: Update) -> Update:
    """Return a copy of an update whose params (and their grads) are new tensors."""
    params = []
    for p in update.params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        params.append(q)
    return Update(params, update.lr, update.batch_size)


# --- runs of linreg's own signature ------------------------------------------------------------


def params_like(features: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Return the book's initial (w, b) for features, from seed: leaves that require grad."""
    w = 0.01 * torch.randn(
        features.shape[1], 1, generator=torch.Generator().manual_seed(seed), dtype=features.dtype
    )
    return w.requires_grad_(), torch.zeros(1, dtype=features.dtype, requires_grad=True)


def copy_params(params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Return fresh leaf copies of (w, b), so two runs start from the same point."""
    w, b = params
    return w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()


def book_run(n: int, batch_size: int) -> dict[str, Any]:
    """Return a run on the book's data (float64): lr 0.03, one epoch, the book's init from 0."""
    X, y = data.book_data(n, dtype=torch.float64)
    return {
        "features": X,
        "labels": y,
        "batch_size": batch_size,
        "lr": 0.03,
        "num_epochs": 1,
        "seed": 0,
        "params": params_like(X, 0),
    }


def run_kwargs(run: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Return a run's training arguments: a fresh generator from its seed, fresh params."""
    return {
        "lr": run["lr"],
        "batch_size": run["batch_size"],
        "num_epochs": run["num_epochs"],
        "generator": torch.Generator().manual_seed(run["seed"]),
        "params": copy_params(run["params"]),
        **overrides,
    }


def trajectory(
    target: Target, run: dict[str, Any], **overrides: Any
) -> list[tuple[Tensor, Tensor]]:
    """Run a target of linreg's training signature and return (w, b) after every step."""
    steps = checks.Trajectory()
    with guarded("the loop"):
        target.fn(run["features"], run["labels"], **run_kwargs(run, on_step=steps, **overrides))
    return steps.steps


# --- linreg's own targets, and torch's, by kind -----------------------------------------------


def sgd_via_optim_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Take the step with torch's optim.SGD at lr / B, then optimizer.zero_grad() (to None)."""
    trainer = torch.optim.SGD(params, lr=lr / batch_size)
    trainer.step()
    trainer.zero_grad()


STEPS = (
    Target(late("optim.sgd"), "update-step", name="sgd"),
    Target(sgd_via_optim_sgd, "update-step", oracle=True),  # torch's
)
# linreg's loop, and torch's (the oracle: nn.Linear + nn.MSELoss + optim.SGD); the summed
# variant of the oracle is checked step for step against the mean by mean-vs-sum's property.
LOOPS = (
    Target(late("train.train"), "loop", name="train"),
    Target(
        late("concise.train_concise"),
        "loop",
        Contract(objective="mse"),
        "train_concise",
        oracle=True,
    ),
)
EPOCHS = (Target(late("train.train_epoch"), "epoch-loss", name="train_epoch"),)
FULL_BATCH_LOOPS = (
    Target(
        late("accumulate.train_full_batch"), "loop", Contract(full_batch=True), "train_full_batch"
    ),
    Target(
        late("concise.train_concise"),
        "loop",
        Contract(objective="mse", full_batch=True),
        "train_concise(batch_size=n)",
        oracle=True,
    ),
)


# --- loops ---------------------------------------------------------------------------------------

LOOP_SIGNATURE = "fn(features, labels, params, *, lr, batch_size, num_epochs)"
EPOCH_SIGNATURE = "fn(features, labels, params, *, lr, batch_size)"


def check_loop_signature(fn: Callable[..., object], *, epochs: bool = True) -> None:
    """Raise TypeError if fn cannot be called as a loop (params positional or by keyword).

    epochs=False: the one-epoch signature, without num_epochs.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: judged when called
        return
    kwargs = {"lr": 0, "batch_size": 0, **({"num_epochs": 0} if epochs else {})}
    try:
        if _params_by_keyword(fn):
            sig.bind(0, 0, params=0, **kwargs)
        else:
            sig.bind(0, 0, 0, **kwargs)
    except TypeError as e:
        signature = LOOP_SIGNATURE if epochs else EPOCH_SIGNATURE
        raise TypeError(f"must take {signature}: {e}") from None


def _params_by_keyword(fn: Callable[..., object]) -> bool:
    try:
        p = inspect.signature(fn).parameters.get("params")
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY


def call_with_params(
    fn: Callable[..., Any], features: Tensor, labels: Tensor, params: list[Tensor], **kwargs: Any
) -> Any:
    """Call fn(features, labels, params, **kwargs), params by keyword if fn takes it so."""
    if _params_by_keyword(fn):
        return fn(features, labels, params=params, **kwargs)
    return fn(features, labels, params, **kwargs)


def train_loop(
    target: Target,
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> list[Tensor]:
    """Run a loop target and return the params it trained: float64 copies of w (d,) and b (1,).

    The loop may train `params` in place and return None, return new [w, b], return the model
    (an nn.Module whose parameters are a weight and a bias), or return an object with .w and
    .b (linreg's TrainResult); nn.Linear's (1, d) weight is flattened.
    """
    kwargs = {"lr": lr, "batch_size": batch_size, "num_epochs": num_epochs}
    with guarded("the loop"):
        out = call_with_params(target.fn, features, labels, params, **kwargs)
    if out is None:
        got: list[object] = list(params)
    elif isinstance(out, torch.nn.Module):  # a model with one weight and one bias
        got = list(out.parameters())
    elif hasattr(out, "w") and hasattr(out, "b"):
        got = [out.w, out.b]
    elif isinstance(out, Tensor) or not hasattr(out, "__iter__"):
        got = [out]
    else:
        got = list(out)
    d = features.shape[1]
    tensors = [t for t in got if isinstance(t, Tensor)]
    if len(got) != 2 or len(tensors) != 2 or [t.numel() for t in tensors] != [d, 1]:
        raise CheckFailed(
            f"the loop returned {type(out).__name__}: expected None (params trained in place), "
            f"[w, b] with {d} and 1 elements, a model with such parameters, or an object with "
            ".w and .b"
        )
    return [t.detach().reshape(-1).to(torch.float64, copy=True) for t in tensors]


def loop_tolerance(dtype: torch.dtype) -> float:
    """Return the relative tolerance for a loop's result in dtype, over a dozen steps."""
    return {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 2e-2)


def curvature(contract: Contract) -> float:
    """Return c in the objective's gradient c * r * x: 1 for the book's r^2 / 2, 2 for r^2."""
    return 1.0 if contract.objective == "book" else 2.0


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

    def lr(self, contract: Contract) -> float:
        """Return the learning rate that makes each correct step shrink r by (1 - rate)."""
        x = torch.tensor(self.x, dtype=contract.dtype).double()
        return self.rate / (curvature(contract) * (float(x @ x) + 1.0))

    def batch_size_for(self, contract: Contract) -> int:
        """Return the batch size the loop is given: n for a full-batch loop."""
        return self.n if contract.full_batch else self.batch_size

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
    def of(case: TwinRows, contract: Contract) -> _Line:
        features, labels, (w, b) = case.tensors(contract.dtype)
        row = torch.cat([features[0].double(), torch.ones(1, dtype=torch.float64)])
        theta0 = torch.cat([w.detach().double().reshape(-1), b.detach().double()])
        a = case.lr(contract) * curvature(contract) * float(row @ row)
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
    case: TwinRows, contract: Contract, scales: Sequence[float], accumulate: bool = False
) -> Tensor:
    """Return [w, b] in float64 after steps of the given sizes (1 = a correct mean step)."""
    return _Line.of(case, contract).after(scales, accumulate)


def check_twin_rows(case: TwinRows, contract: Contract, got: list[Tensor]) -> None:
    """Check a loop's result on a TwinRows case against the closed form; name a likely mistake."""
    line = _Line.of(case, contract)
    sizes = batch_sizes(case.n, case.batch_size_for(contract), contract.drop_last)
    steps = [1.0] * len(sizes) * case.num_epochs
    want = line.after(steps)
    theta = torch.cat(got)
    tol = loop_tolerance(contract.dtype)
    scale = max(1.0, float(want.abs().max()), float(theta.abs().max()))
    if float((theta - want).abs().max()) <= tol * scale:
        return
    b = case.batch_size_for(contract)
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
        objective = "r^2 / 2" if contract.objective == "book" else "r^2"
        guesses.append(
            (
                f"takes steps {factor:.4g} times those of the declared objective (objective="
                f"{contract.objective!r}: the mean of {objective})",
                line.after([factor] * len(steps)),
            )
        )
    why = next(
        (what for what, p in guesses if float((theta - p).abs().max()) <= tol * scale),
        "matches none of the known mistakes",
    )
    raise CheckFailed(
        f"on {case.n} identical rows with batch_size={case.batch_size_for(contract)} "
        f"({case.num_epochs} epoch(s) of batches {sizes}) the loop trained [w, b] to "
        f"{_fmt(theta)}, expected {_fmt(want)}: it {why}"
    )


def run_epoch(target: Target, run: dict[str, Any]) -> Any:
    """Run one epoch of an epoch-loss target on a drawn run, RNGs seeded; return its report."""
    with seeded(run["seed"]), guarded("the epoch"):
        reported = call_with_params(
            target.fn,
            run["features"],
            run["labels"],
            list(copy_params(run["params"])),
            lr=run["lr"],
            batch_size=run["batch_size"],
        )
    if isinstance(reported, Tensor) and reported.numel() == 1:
        return reported
    if isinstance(reported, (int, float)) and not isinstance(reported, bool):
        return float(reported)
    raise CheckFailed(
        f"the epoch returned {type(reported).__name__}: expected the loss it reports, a float or "
        "a one-element tensor"
    )


def run_twin_rows(target: Target, case: TwinRows) -> list[Tensor]:
    """Run a loop target on a TwinRows case, its RNGs seeded; return the params it trained."""
    contract = target.contract
    features, labels, params = case.tensors(contract.dtype)
    with seeded(case.seed):
        return train_loop(
            target,
            features,
            labels,
            params,
            lr=case.lr(contract),
            batch_size=case.batch_size_for(contract),
            num_epochs=case.num_epochs,
        )


def run_loop(target: Target, run: dict[str, Any]) -> list[Tensor]:
    """Run a loop target on a drawn run (linreg.testing.strategies.loop_runs), RNGs seeded."""
    features = run["features"]
    batch_size = len(features) if target.contract.full_batch else run["batch_size"]
    with seeded(run["seed"]):
        return train_loop(
            target,
            features,
            run["labels"],
            list(copy_params(run["params"])),
            lr=run["lr"],
            batch_size=batch_size,
            num_epochs=run["num_epochs"],
        )


def follows_the_closed_form(target: Target, case: TwinRows) -> None:
    """The loop's result on identical rows equals its number of steps of the objective's."""
    check_twin_rows(case, target.contract, run_twin_rows(target, case))


def _fmt(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in t.tolist()) + "]"
