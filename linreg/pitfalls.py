"""The catalogue of training-loop pitfalls, each with its wrong variants written out.

Each wrong variant is a small function named after its mistake, written as the seed note, the
book or common practice writes it; its docstring quotes the mistake. Where a variant can stand
in for one of linreg's own functions (same signature), `Variant.replaces` names that function,
and `swap` puts it there, so the whole suite can be run against the wrong code. The tests, the
docs and the command line all read `CATALOGUE`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from linreg import _validate, data, loss, model, optim, train
from linreg.concise import make_batches, make_linear

# --- 1. uneven batches -------------------------------------------------------------------------


def data_iter_never_shuffled(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `for i in range(0, n - n % b, b)` in index order: the same tail is never seen."""
    del shuffle, generator
    stop = len(features) - len(features) % batch_size if drop_last else len(features)
    for i in range(0, stop, batch_size):
        yield features[i : min(i + batch_size, stop)], labels[i : min(i + batch_size, stop)]


_ONCE: dict[int, Tensor] = {}


def data_iter_shuffled_once(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `indices` shuffled once, before the epoch loop: every epoch drops the same ones."""
    n = len(features)
    if n not in _ONCE:  # the first epoch's permutation is kept for all later epochs
        _ONCE[n] = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = _ONCE[n]
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        j = order[i : min(i + batch_size, stop)]
        yield features[j], labels[j]


# --- 2. the short last batch's step ------------------------------------------------------------


def train_nominal_batch_size(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = 0.03,
    batch_size: int = 10,
    num_epochs: int = 3,
    generator: torch.Generator | None = None,
    grad: Literal["autograd", "analytic"] = "autograd",
    drop_last: bool = False,
    params: tuple[Tensor, Tensor] | None = None,
    on_step: train.StepCallback | None = None,
) -> train.TrainResult:
    """Mistake: the book's `sgd([w, b], lr, batch_size)`: a short last batch's step shrinks."""
    del grad
    w, b = train.prepare(features, labels, params, generator, leaves=True)
    result = train.TrainResult(w, b)
    for _ in range(num_epochs):
        for X, y in data.data_iter(
            batch_size, features, labels, drop_last=drop_last, generator=generator
        ):
            l = loss.squared_loss(model.linreg(X, w, b), y)
            l.sum().backward()  # type: ignore[no-untyped-call]
            optim.sgd([w, b], lr, batch_size)  # nominal, not X.shape[0]
            result.num_steps += 1
            if on_step is not None:
                on_step(result.num_steps, w, b)
        result.losses.append(train.epoch_loss(features, labels, w, b))
    return result


# --- 3. in place vs rebinding, 4. no_grad, 6. grad zeroing -----------------------------------


def sgd_rebinding(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: `param = param - lr * param.grad / batch_size` rebinds a local name."""
    with torch.no_grad():
        for param in params:
            param = param - lr * param.grad / batch_size  # type: ignore[operator]  # a new tensor
            param.grad.zero_()  # type: ignore[union-attr]  # None: AttributeError


def sgd_without_no_grad(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: the update without `with torch.no_grad():`: in-place on a leaf in grad mode."""
    for param in params:
        param -= lr * param.grad / batch_size  # type: ignore[operator]
        param.grad.zero_()  # type: ignore[union-attr]


def sgd_out_of_place_in_grad_mode(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: `params[i] = param - lr * param.grad / batch_size` in grad mode: a graph grows."""
    for i, param in enumerate(params):
        params[i] = param - lr * param.grad / batch_size  # type: ignore[operator]


def sgd_without_zero_grad(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: no `param.grad.zero_()`: the next backward adds to this batch's gradient."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size  # type: ignore[operator]


# --- 5. mean vs sum ----------------------------------------------------------------------------


def train_concise_sum_nominal_lr(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = 0.03,
    batch_size: int = 10,
    num_epochs: int = 3,
    generator: torch.Generator | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    drop_last: bool = False,
    params: tuple[Tensor, Tensor] | None = None,
    on_step: train.StepCallback | None = None,
    loader: Literal["data_iter", "DataLoader"] = "data_iter",
) -> train.TrainResult:
    """Mistake: `MSELoss(reduction='sum')` with `SGD(lr=lr / batch_size)`: nominal, not actual."""
    features, labels = _validate.dataset(features, labels)
    labels = labels.reshape(-1, 1)
    net = make_linear(features, params, generator)
    criterion = nn.MSELoss(reduction=reduction)
    scale = batch_size if reduction == "sum" else 1
    trainer = torch.optim.SGD(net.parameters(), lr=lr / scale)
    batches = make_batches(features, labels, batch_size, drop_last, generator, loader)
    result = train.TrainResult(net.weight.detach().T, net.bias.detach())
    for _ in range(num_epochs):
        for X, y in batches():
            l = criterion(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
            result.num_steps += 1
            if on_step is not None:
                on_step(result.num_steps, result.w, result.b)
        with torch.no_grad():
            result.losses.append(float(criterion(net(features), labels)))
    return result


# --- 7. backward twice, 8. the seed's once-per-epoch update ------------------------------------


def train_concat_backward_every_batch(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = 0.03,
    batch_size: int = 10,
    num_epochs: int = 1,
    generator: torch.Generator | None = None,
) -> train.TrainResult:
    """Mistake: the seed's 2nd attempt: backward every batch through a loss kept from the 1st."""
    w, b = train.prepare(features, labels, None, generator, leaves=True)
    result = train.TrainResult(w, b)
    for _ in range(num_epochs):
        count = 1
        l = None
        for X, y in data.data_iter(batch_size, features, labels, generator=generator):
            count += 1
            if l is None:
                l = loss.squared_loss(model.linreg(X, w, b), y)
            else:
                torch.cat((l, loss.squared_loss(model.linreg(X, w, b), y)), dim=0)
            l.sum().backward()  # type: ignore[no-untyped-call]  # the 2nd time through the 1st batch's freed graph: RuntimeError
            optim.sgd([w, b], lr, batch_size * count)
            result.num_steps += 1
    return result


def accumulate_losses_seed(
    batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
    w: Tensor,
    b: Tensor,
) -> tuple[Tensor, int]:
    """Mistake: the seed's `torch.cat((l, ...))` result is discarded and `count` starts at 1."""
    count = 1
    l: Tensor | None = None
    for X, y in batches:
        count += 1
        if l is None:
            l = loss.squared_loss(model.linreg(X, w, b), y)
        else:
            torch.cat((l, loss.squared_loss(model.linreg(X, w, b), y)), dim=0)
    if l is None:
        raise ValueError("batches is empty")
    return l, count


def train_once_per_epoch_seed(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = 0.03,
    batch_size: int = 10,
    num_epochs: int = 300,
    generator: torch.Generator | None = None,
    params: tuple[Tensor, Tensor] | None = None,
) -> train.TrainResult:
    """Mistake: the seed's 1st attempt: one step per epoch on the 1st batch, divided by b*count."""
    w, b = train.prepare(features, labels, params, generator, leaves=True)
    result = train.TrainResult(w, b)
    for _ in range(num_epochs):
        batches = data.data_iter(batch_size, features, labels, generator=generator)
        l, count = accumulate_losses_seed(batches, w, b)
        l.sum().backward()  # type: ignore[no-untyped-call]
        optim.sgd([w, b], lr, batch_size * count)
        result.num_steps += 1
        result.losses.append(train.epoch_loss(features, labels, w, b))
    return result


# --- 9. label shape, 10. evaluation under no_grad, 11. uneven micro-batches -------------------


def squared_loss_no_reshape(y_hat: Tensor, y: Tensor) -> Tensor:
    """Mistake: `(y_hat - y) ** 2 / 2` without the reshape: (n, 1) - (n,) broadcasts to (n, n)."""
    return (y_hat - y) ** 2 / 2


def full_loss_with_grad(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Mistake: evaluating the full-data loss in grad mode: it keeps a graph and its residual."""
    return loss.squared_loss(model.linreg(features, w, b), labels).mean()


def accumulate_grad_mean_of_means(
    micro_batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
    w: Tensor,
    b: Tensor,
) -> int:
    """Mistake: `loss = mean(l_i.mean() for each micro-batch)`: short micro-batches weigh more."""
    means = [loss.squared_loss(model.linreg(X, w, b), y).mean() for X, y in micro_batches]
    (sum(means) / len(means)).backward()  # type: ignore[union-attr]
    return len(means)


# --- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A wrong variant, and the linreg function ("module.name") it can stand in for."""

    func: Callable[..., Any]
    replaces: str | None = None

    @property
    def name(self) -> str:
        """Return the variant's function name, which names its mistake."""
        return self.func.__name__

    @property
    def mistake(self) -> str:
        """Return the first line of the variant's docstring."""
        return (self.func.__doc__ or "").strip().splitlines()[0].removeprefix("Mistake: ")


@dataclass(frozen=True)
class Pitfall:
    """One pitfall: an id, a title, what goes wrong and the fix, and its wrong variants."""

    id: str
    title: str
    explanation: str
    variants: tuple[Variant, ...]


SINGLE_PROCESS: tuple[Pitfall, ...] = (
    Pitfall(
        "uneven-batches",
        "Uneven batches: n not divisible by batch_size",
        "When n % batch_size != 0 the last batch is short, or, with drop_last, n % batch_size "
        "samples are left out of the epoch. If the order is never reshuffled (or shuffled only "
        "once, before the epoch loop), the SAME samples are left out every epoch and the model "
        "never sees them. Fix: draw a new permutation every epoch, as data_iter and "
        "DataLoader(shuffle=True) do; then every sample is seen within a few epochs.",
        (
            Variant(data_iter_never_shuffled, "data.data_iter"),
            Variant(data_iter_shuffled_once, "data.data_iter"),
        ),
    ),
    Pitfall(
        "short-last-batch",
        "The short last batch's step: divide by the actual batch size",
        "squared_loss is summed over the batch, so sgd divides the gradient by the batch size. "
        "The book passes the NOMINAL batch_size, so the short last batch of an uneven epoch takes "
        "a step (n % b) / b times too small. Fix: pass X.shape[0]; the loop then equals "
        "nn.MSELoss() + optim.SGD at lr / 2 step for step.",
        (Variant(train_nominal_batch_size, "train.train"),),
    ),
    Pitfall(
        "rebinding",
        "In place (-=) versus rebinding (param = param - ...)",
        "`param -= ...` calls Tensor.__isub__, which changes the tensor the caller holds. "
        "`param = param - ...` builds a new tensor and rebinds the loop's local name: the caller's "
        "w never changes, and the new tensor has no .grad, so the book's next line "
        "`param.grad.zero_()` raises AttributeError. Python ints behave the other way: `-=` on "
        "an int rebinds, because ints are immutable.",
        (Variant(sgd_rebinding, "optim.sgd"),),
    ),
    Pitfall(
        "no-grad-update",
        "The update needs torch.no_grad()",
        "w and b are leaves that require grad. In grad mode, an in-place update of a leaf raises "
        "'a leaf Variable that requires grad is being used in an in-place operation', and an "
        "out-of-place update records the update in the graph, so the params stop being leaves "
        "and the graph grows with every step. Fix: update under torch.no_grad(); the params "
        "stay leaves with no grad_fn after any number of steps.",
        (
            Variant(sgd_without_no_grad, "optim.sgd"),
            Variant(sgd_out_of_place_in_grad_mode, "optim.sgd"),
        ),
    ),
    Pitfall(
        "mean-vs-sum",
        "MSELoss(reduction='sum') needs lr / B, with B the actual batch size",
        "The gradient of a summed loss is B times the gradient of the mean, so SGD on the sum "
        "at lr / B follows exactly the trajectory of SGD on the mean at lr; B must be the ACTUAL "
        "size of each batch, or the short last batch steps too far. The full-data loss reported "
        "with sum is n times the mean (the seed's '1000x' for n = 1000). Unscaled, the sum "
        "diverges for large batches.",
        (Variant(train_concise_sum_nominal_lr, "concise.train_concise"),),
    ),
    Pitfall(
        "grad-zeroing",
        "Forgetting grad.zero_()",
        "backward() ADDS to .grad. Without zeroing, the gradient used at step k is the sum of the "
        "gradients of all k batches so far, and training follows a different, wrong trajectory. "
        "Fix: zero after the update (sgd does), or call optimizer.zero_grad(), which sets the "
        "grads to None since torch 2.0.",
        (Variant(sgd_without_zero_grad, "optim.sgd"),),
    ),
    Pitfall(
        "backward-twice",
        "Calling backward twice through one graph",
        "backward() frees the tensors the graph saved. A second backward through the same "
        "graph raises 'Trying to backward through the graph a second time' when it needs a freed "
        "saved tensor, as the squared loss does; with retain_graph=True it succeeds and the grads "
        "double; a graph that saves nothing ((w + 1).sum()) never raises and just accumulates. "
        "The seed's second attempt keeps the first batch's loss across batches and calls "
        "backward every batch: it raises at the second batch.",
        (Variant(train_concat_backward_every_batch),),
    ),
    Pitfall(
        "once-per-epoch",
        "The seed's once-per-epoch update",
        "The seed tries one update per epoch by concatenating batch losses, but discards "
        "torch.cat's result and starts count at 1: the loss it backpropagates holds only the "
        "first batch, divided by b * (batches + 1). After 300 epochs it is still far from the "
        "least-squares solution. Fix: keep the concatenation (or sum the losses) and divide by n: "
        "that is full-batch gradient descent, which converges at the rate its curvature allows.",
        (
            Variant(accumulate_losses_seed, "accumulate.accumulate_losses"),
            Variant(train_once_per_epoch_seed, "accumulate.train_full_batch"),
        ),
    ),
    Pitfall(
        "label-shape",
        "Labels of shape (n,) against predictions of shape (n, 1)",
        "(y_hat - y) with y_hat (n, 1) and y (n,) broadcasts silently to an (n, n) matrix: every "
        "prediction is compared with every label and training converges to a wrong answer. "
        "squared_loss reshapes y to y_hat's shape first; nn.MSELoss warns instead.",
        (Variant(squared_loss_no_reshape, "loss.squared_loss"),),
    ),
    Pitfall(
        "eval-no-grad",
        "Evaluate under torch.no_grad()",
        "A loss computed in grad mode records a graph and keeps the tensors its backward would "
        "need: for the full-data loss, X (the input itself) and the (n, 1) residual, 4n bytes in "
        "float32, held until the result is freed. Under no_grad the result has no grad_fn and "
        "nothing is saved.",
        (Variant(full_loss_with_grad, "train.full_loss"),),
    ),
    Pitfall(
        "micro-batch-accumulation",
        "Gradient accumulation over uneven micro-batches",
        "Accumulating gradients over micro-batches of different sizes, the mean of the "
        "per-micro-batch mean losses weighs the examples of a short micro-batch more than the "
        "others, so the gradient is not the full batch's. Fix: sum the per-example losses and "
        "divide once by the total count (the loss-normalisation bug fixed in Hugging Face "
        "transformers in 2024).",
        (Variant(accumulate_grad_mean_of_means, "accumulate.accumulate_grad"),),
    ),
)


@contextmanager
def swap(target: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Put replacement in place of linreg's `module.name` target while the block runs."""
    module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(f"linreg.{module_name}")
    original = getattr(module, attr)
    setattr(module, attr, replacement)
    try:
        yield
    finally:
        setattr(module, attr, original)


# --- at scale: torch.distributed -----------------------------------------------------------------


def sampler_epochs_without_set_epoch(sampler: Any, epochs: int) -> list[list[int]]:
    """Mistake: no `sampler.set_epoch(epoch)`: DistributedSampler repeats epoch 0's order."""
    return [list(sampler) for _ in range(epochs)]


def ddp_trajectory_sum_unscaled(rank: int, world_size: int, case: dict[str, Any]) -> Any:
    """Mistake: MSELoss(reduction='sum') under DDP at the single-process lr: steps shrink by R."""
    from linreg.distributed import ddp_trajectory

    return ddp_trajectory(rank, world_size, case, scale_sum_lr=False)


DISTRIBUTED: tuple[Pitfall, ...] = (
    Pitfall(
        "distributed-sampler",
        "DistributedSampler pads uneven data and needs set_epoch",
        "DistributedSampler gives every rank the same number of samples: when n % R != 0 it "
        "repeats the first total_size - n indices of the epoch's permutation, so those samples "
        "count twice. Its order is seeded by seed + epoch: without sampler.set_epoch(epoch) "
        "every epoch repeats the first one's order. Fix: call set_epoch every epoch; shard "
        "without padding (linreg.distributed.shard_iter) when double counting matters.",
        (Variant(sampler_epochs_without_set_epoch, "distributed.sampler_epochs"),),
    ),
    Pitfall(
        "ddp-sum",
        "DDP averages gradients: a summed loss's step shrinks by the world size",
        "DistributedDataParallel all-reduces the gradients and divides by the world size R. "
        "With MSELoss(mean) on equal shards that is exactly the gradient of the union batch; "
        "with MSELoss(reduction='sum') it is the union's summed gradient divided by R, so at "
        "the single-process lr every step is R times too small. Fix: multiply the lr by R "
        "(or use the mean).",
        (Variant(ddp_trajectory_sum_unscaled),),
    ),
)

CATALOGUE: tuple[Pitfall, ...] = SINGLE_PROCESS + DISTRIBUTED
BY_ID: dict[str, Pitfall] = {p.id: p for p in CATALOGUE}
VARIANTS: dict[str, Variant] = {v.name: v for p in CATALOGUE for v in p.variants}
