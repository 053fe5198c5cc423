"""The catalogue of training-loop pitfalls, each with its wrong variants written out.

Each wrong variant is a small function named after its mistake, written as the seed note, the
book or common practice writes it; its docstring quotes the mistake. Where a variant can stand
in for one of linreg's own functions (same signature), `Variant.replaces` names that function,
and `swap` puts it there, so the whole suite can be run against the wrong code. The tests, the
docs and the command line all read `CATALOGUE`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from linreg.pitfalls.catalogue import (
    BY_ID,
    CATALOGUE,
    DISTRIBUTED,
    SINGLE_PROCESS,
    VARIANTS,
    Pitfall,
    Variant,
)
from linreg.pitfalls.scale import ddp_trajectory_sum_unscaled, sampler_epochs_without_set_epoch
from linreg.pitfalls.variants import (
    accumulate_grad_mean_of_means,
    accumulate_losses_seed,
    data_iter_never_shuffled,
    data_iter_shuffled_once,
    full_loss_with_grad,
    reset_shuffled_once,
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


__all__ = [
    "BY_ID",
    "CATALOGUE",
    "DISTRIBUTED",
    "SINGLE_PROCESS",
    "VARIANTS",
    "Pitfall",
    "Variant",
    "accumulate_grad_mean_of_means",
    "accumulate_losses_seed",
    "data_iter_never_shuffled",
    "data_iter_shuffled_once",
    "ddp_trajectory_sum_unscaled",
    "full_loss_with_grad",
    "reset_shuffled_once",
    "sampler_epochs_without_set_epoch",
    "sgd_out_of_place_in_grad_mode",
    "sgd_rebinding",
    "sgd_without_no_grad",
    "sgd_without_zero_grad",
    "squared_loss_no_reshape",
    "swap",
    "train_concat_backward_every_batch",
    "train_concise_sum_nominal_lr",
    "train_nominal_batch_size",
    "train_once_per_epoch_seed",
]
