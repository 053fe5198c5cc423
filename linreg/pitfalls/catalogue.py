"""The catalogue: each pitfall's id, title, explanation (what goes wrong, why, the fix) and
its wrong variants. The tests, the docs and the command line all read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from linreg.pitfalls.scale import ddp_trajectory_sum_unscaled, sampler_epochs_without_set_epoch
from linreg.pitfalls.variants import (
    accumulate_grad_mean_of_means,
    accumulate_losses_seed,
    data_iter_never_shuffled,
    data_iter_shuffled_once,
    full_loss_with_grad,
    sgd_out_of_place_in_grad_mode,
    sgd_rebinding,
    sgd_without_no_grad,
    sgd_without_zero_grad,
    squared_loss_no_reshape,
    train_concat_backward_every_batch,
    train_concise_sum_nominal_lr,
    train_nominal_batch_size,
    train_once_per_epoch_seed,
)


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
