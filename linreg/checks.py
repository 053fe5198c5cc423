"""The pitfall properties as plain check functions: point them at your own code.

Each `check_*` returns quietly when the property holds and raises `CheckFailed` (an
AssertionError) saying what it saw when it does not. They need no test framework: the test
suite drives them with Hypothesis; `python -m linreg pitfalls` runs them on the book's data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from math import ceil

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, SequentialSampler

Batches = Iterable[tuple[Tensor, Tensor]]
Iterate = Callable[[int, Tensor, Tensor], Batches]  # (batch_size, features, labels) -> batches


class CheckFailed(AssertionError):
    """A property did not hold."""


def _fail(message: str) -> CheckFailed:
    return CheckFailed(message)


# --- batches -----------------------------------------------------------------------------------


def epoch_indices(iterate: Iterate, n: int, batch_size: int) -> list[list[int]]:
    """Run one epoch of iterate on an index dataset and return each batch's sample indices."""
    features = torch.arange(n, dtype=torch.float64).reshape(n, 1)  # row i holds i
    labels = -features  # pairs must stay together
    out: list[list[int]] = []
    for X, y in iterate(batch_size, features, labels):
        if not torch.equal(y, -X):
            raise _fail("a batch's labels do not belong to its features")
        out.append([int(i) for i in X.reshape(-1).tolist()])
    return out


def check_epoch_partition(
    batches: Sequence[Sequence[int]], n: int, batch_size: int, drop_last: bool
) -> None:
    """Check one epoch's batches: a partition of range(n), or all full batches with drop_last."""
    sizes = [len(bt) for bt in batches]
    seen = [i for bt in batches for i in bt]
    if len(set(seen)) != len(seen):
        raise _fail(f"a sample appears twice in one epoch: sizes {sizes}")
    if not set(seen) <= set(range(n)):
        raise _fail("a batch holds an index outside range(n)")
    # With no sample twice and every index in range(n), the sizes settle the rest: all n
    # samples without drop_last, all but the last n % batch_size with it.
    if drop_last:
        if sizes != [batch_size] * (n // batch_size):
            raise _fail(f"drop_last: expected {n // batch_size} full batches, got sizes {sizes}")
    else:
        last = n - batch_size * ((n - 1) // batch_size)
        expected = [batch_size] * (ceil(n / batch_size) - 1) + [last]
        if sizes != expected:
            raise _fail(f"expected batch sizes {expected}, got {sizes}")


def batch_sampler_sizes(n: int, batch_size: int, drop_last: bool) -> list[int]:
    """Return the batch sizes torch's BatchSampler gives for n samples (the oracle)."""
    sampler = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)
    return [len(bt) for bt in sampler]


def check_sizes_match_batch_sampler(
    batches: Sequence[Sequence[int]], n: int, batch_size: int, drop_last: bool
) -> None:
    """Check the batch sizes equal BatchSampler's for the same n, batch_size and drop_last."""
    ours = [len(bt) for bt in batches]
    theirs = batch_sampler_sizes(n, batch_size, drop_last)
    if ours != theirs:
        raise _fail(f"batch sizes {ours} differ from BatchSampler's {theirs}")


def check_every_sample_seen(
    epochs: Callable[[], Sequence[Sequence[int]]], n: int, max_epochs: int
) -> int:
    """Check that calling epochs() repeatedly sees every sample within max_epochs; return when."""
    unseen = set(range(n))
    for epoch in range(1, max_epochs + 1):
        for bt in epochs():
            unseen.difference_update(bt)
        if not unseen:
            return epoch
    raise _fail(
        f"{len(unseen)} of {n} samples never seen in {max_epochs} epochs, e.g. {sorted(unseen)[:5]}"
    )


# --- trajectories -----------------------------------------------------------------------------


@dataclass
class Trajectory:
    """An on_step callback that records (w, b) after every step, as float64 copies."""

    steps: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def __call__(self, step: int, w: Tensor, b: Tensor) -> None:
        """Record the params after this step."""
        del step
        self.steps.append(
            (
                w.detach().flatten().to(torch.float64, copy=True),
                b.detach().flatten().to(torch.float64, copy=True),
            )
        )


def check_same_trajectory(
    a: Sequence[tuple[Tensor, Tensor]],
    b: Sequence[tuple[Tensor, Tensor]],
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> None:
    """Check two runs took the same number of steps and agree on (w, b) after each one."""
    if len(a) != len(b):
        raise _fail(f"the runs took {len(a)} and {len(b)} steps")
    pairs = zip(a, b, strict=True)  # pragma: no mutate  (lengths checked above)
    for k, (pa, pb) in enumerate(pairs, 1):
        for name, x, y in (("w", pa[0], pb[0]), ("b", pa[1], pb[1])):
            if not torch.allclose(x, y, rtol=rtol, atol=atol):
                gap = float((x - y).abs().max())
                raise _fail(f"step {k}: {name} differs by {gap:.3g} ({x.tolist()} vs {y.tolist()})")


# --- the update step --------------------------------------------------------------------------

UpdateStep = Callable[[list[Tensor], float, int], None]


def check_update_in_place(
    step: UpdateStep,
    params: list[Tensor],
    lr: float,
    batch_size: int,
    *,
    rtol: float = 1e-12,
    atol: float = 0.0,
) -> None:
    """Check step changes each param in place to p - lr*grad/B, keeping it a leaf, zeroing grad.

    params must be leaves that require grad, with .grad set.
    """
    objects = list(params)
    ptrs = [p.data_ptr() for p in params]
    with torch.no_grad():
        expected = [p - lr * p.grad / batch_size for p in params]  # type: ignore[operator]
    try:
        step(params, lr, batch_size)
    except Exception as e:
        raise _fail(f"the update step raised {type(e).__name__}: {e}") from e
    if len(params) != len(objects):
        raise _fail(f"the update step changed params from {len(objects)} to {len(params)} tensors")
    rows = zip(params, objects, ptrs, expected, strict=True)  # pragma: no mutate  (as above)
    for i, (p, obj, ptr, want) in enumerate(rows):
        if p is not obj:
            raise _fail(f"params[{i}] was replaced by another tensor")
        if p.data_ptr() != ptr:
            raise _fail(f"params[{i}] now lives in other memory")
        if not torch.allclose(p.detach(), want, rtol=rtol, atol=atol):
            raise _fail(f"params[{i}] is {p.tolist()}, expected p - lr*grad/B = {want.tolist()}")
        if p.grad is None or bool(p.grad.any()):
            raise _fail(f"params[{i}].grad was not zeroed: {p.grad}")
    check_params_are_leaves(params)


def check_params_are_leaves(params: Sequence[Tensor]) -> None:
    """Check each param is a leaf that requires grad and has no grad_fn."""
    for i, p in enumerate(params):
        if not p.is_leaf:  # a tensor with a grad_fn is never a leaf
            raise _fail(f"params[{i}] is not a leaf: grad_fn {p.grad_fn}")
        if not p.requires_grad:
            raise _fail(f"params[{i}] no longer requires grad")


# --- losses and gradients ---------------------------------------------------------------------


def check_loss_per_example(
    loss_fn: Callable[[Tensor, Tensor], Tensor], y_hat: Tensor, y: Tensor
) -> None:
    """Check loss_fn(y_hat, y) has y_hat's shape and equals nn.MSELoss('none') / 2 per example."""
    got = loss_fn(y_hat, y)
    if got.shape != y_hat.shape:
        raise _fail(f"loss has shape {tuple(got.shape)}, expected {tuple(y_hat.shape)}")
    want = torch.nn.functional.mse_loss(y_hat, y.reshape(y_hat.shape), reduction="none") / 2
    if not torch.allclose(got, want, rtol=1e-12, atol=0):
        raise _fail("loss differs from nn.MSELoss(reduction='none') / 2")


def check_grads_close(
    got: Sequence[Tensor | None],
    want: Sequence[Tensor],
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> None:
    """Check each gradient in got is close to its counterpart in want."""
    if len(got) != len(want):
        raise _fail(f"{len(got)} gradients, expected {len(want)}")
    pairs = zip(got, want, strict=True)  # pragma: no mutate  (lengths checked above)
    for i, (g, e) in enumerate(pairs):
        if g is None:
            raise _fail(f"grad {i} is None")
        if not torch.allclose(g, e, rtol=rtol, atol=atol):
            raise _fail(f"grad {i} differs by {float((g - e).abs().max()):.3g}")


@dataclass(frozen=True)
class Saved:
    """What autograd saved for backward while a function ran."""

    count: int  # tensors saved
    nbytes: int  # their bytes in all
    new_nbytes: int  # bytes of saved tensors that share no storage with the inputs


def saved_for_backward(fn: Callable[[], Tensor], inputs: Iterable[Tensor]) -> tuple[Tensor, Saved]:
    """Run fn and count the tensors autograd saves for backward, and their bytes."""
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    distinct = {
        t.untyped_storage().data_ptr(): t for t in saved
    }  # a tensor saved twice counts once
    new = [t for ptr, t in distinct.items() if ptr not in input_storages]
    return out, Saved(
        count=len(saved),
        nbytes=sum(t.untyped_storage().nbytes() for t in distinct.values()),
        new_nbytes=sum(t.untyped_storage().nbytes() for t in new),
    )


def check_no_graph(fn: Callable[[], Tensor], inputs: Iterable[Tensor]) -> None:
    """Check fn's result has no grad_fn and autograd saved nothing while it ran."""
    out, saved = saved_for_backward(fn, inputs)
    if out.grad_fn is not None or saved.count:
        raise _fail(
            f"the evaluation built a graph ({out.grad_fn}) holding {saved.count} saved "
            f"tensors, {saved.new_nbytes} bytes beyond its inputs"
        )


def check_converges(got: Sequence[Tensor], target: Sequence[Tensor], *, bound: float) -> None:
    """Check the distance from got to target (all entries, Euclidean) is at most bound."""
    if len(got) != len(target):
        raise _fail(f"{len(got)} tensors to compare with {len(target)}")
    pairs = zip(got, target, strict=True)  # pragma: no mutate  (lengths checked above)
    gap = torch.cat([(g.detach().double() - t.double()).reshape(-1) for g, t in pairs])
    dist = float(gap.norm())
    if not dist <= bound:
        raise _fail(f"distance to the target {dist:.3g} exceeds the bound {bound:.3g}")
