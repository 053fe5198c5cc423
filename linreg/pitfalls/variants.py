"""The wrong variants of one process, each named after its mistake, written as the seed note,
the book or common practice writes them. The docstring's first line quotes the mistake."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from linreg import _validate, data, loss, model, optim, train
from linreg.concise import fit, make_batches, make_linear

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
    return data._slices(batch_size, features, labels, stop)  # data_iter's slices, unshuffled


_ONCE: dict[int, Tensor] = {}


def reset_shuffled_once() -> None:
    """Forget data_iter_shuffled_once's permutations, as a new run of a program would."""
    _ONCE.clear()


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
    return fit(net, criterion, trainer, batches, features, labels, num_epochs, on_step)


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
