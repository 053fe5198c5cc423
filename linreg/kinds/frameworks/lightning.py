"""A LightningModule, trained by Lightning's own Trainer, judged as any training loop is.

The audit builds a fresh module from the user's factory, hands Lightning's `Trainer` (CPU, one
device, no logger, no checkpoints, no validation) a DataLoader over the audit's rows, and
watches every optimizer step as `linreg.kinds.training_loop` does; what each step consumed is
what `training_step` was fed (a module may call a submodule, not itself, in it). Automatic
optimization runs with `accumulate_grad_batches`; a manually optimized module steps itself, and
the window it accumulates is read from its first run. Works with `lightning` or
`pytorch_lightning` installed (`pip install 'linreg-pitfalls[lightning]'`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import nn

from linreg import _kind_names as names
from linreg import _validate
from linreg.kinds import training_loop
from linreg.kinds.base import TargetError
from linreg.kinds.frameworks.framework import Fit, Framework
from linreg.kinds.options import Options, option, timeout_option
from linreg.kinds.training_loop import Watch


def _clip(name: str, value: object) -> float | None:
    return None if value is None else _validate.positive_finite(name, value)


@dataclass(frozen=True)
class LightningOptions(Options):
    """How Lightning's Trainer runs the module, and the sample its rows copy."""

    example: training_loop.Example = training_loop.example_option()
    accumulate_grad_batches: int = option(
        1,
        "Trainer(accumulate_grad_batches=k); a manual optimization's window is read from the run",
        flag="--accumulate-grad-batches",
        check=_validate.positive_int,
    )
    gradient_clip_val: float | None = option(
        None,
        "Trainer(gradient_clip_val=...), automatic optimization only (default: no clipping)",
        flag="--gradient-clip-val",
        check=_clip,
    )
    drop_last: bool = option(
        False, "the DataLoader drops each epoch's short last batch", flag="--drop-last"
    )
    timeout: float | None = timeout_option("one run of the Trainer")


@contextlib.contextmanager
def _quiet(pl: ModuleType) -> Iterator[None]:
    """Hold Lightning's own logging (its banners and tips) at ERROR while it runs."""
    logger = logging.getLogger(pl.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def fit_with(pl: ModuleType, options: LightningOptions, automatic: bool) -> Callable[..., None]:
    """Return fit(model, loader, num_epochs): Lightning's Trainer on the CPU, quiet."""

    def fit(model: nn.Module, loader: Any, num_epochs: int) -> None:
        with tempfile.TemporaryDirectory(prefix="linreg-lightning-") as root, _quiet(pl):
            trainer = pl.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=num_epochs,
                accumulate_grad_batches=options.accumulate_grad_batches if automatic else 1,
                gradient_clip_val=options.gradient_clip_val if automatic else None,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                default_root_dir=root,
            )
            trainer.fit(model, train_dataloaders=loader)

    return fit


def fit(pl: ModuleType, fn: Callable[..., Any], options: LightningOptions) -> Fit:
    """Return how Lightning's Trainer trains the factory's modules, watched at training_step."""
    try:
        module = fn()
    except Exception as e:
        raise TargetError(f"the module factory raised {type(e).__name__}: {e}") from None
    if not isinstance(module, pl.LightningModule):
        raise TargetError(
            f"the module factory returned {type(module).__name__}, not a LightningModule"
        )
    automatic = bool(module.automatic_optimization)
    # what each step consumed is what training_step was fed; a manual one steps itself
    watch = Watch("training_step", replayable=automatic)
    return Fit(fit_with(pl, options, automatic), options.accumulate_grad_batches, watch)


FRAMEWORK = Framework(
    name=names.LIGHTNING,
    modules=("lightning.pytorch", "pytorch_lightning"),
    extra="lightning",
    signature="fn() -> a LightningModule",
    summary="a LightningModule, trained by Lightning's own Trainer on CPU",
    options=LightningOptions,
    fit=fit,
    doc=(
        "module is a zero-argument factory of a LightningModule (torch is seeded before each "
        "call); example one sample, unbatched, as its dataset holds it: (x, y), or a dict of "
        "tensors. The audit runs Lightning's Trainer (CPU, one device, no logger, checkpoints "
        "or validation) over a DataLoader of copies of the sample and of a contrast row, holds "
        "every step's lr at 0, and judges each step as the training-loop audit does, from "
        "what training_step was fed. accumulate_grad_batches=k is passed to the Trainer under "
        "automatic optimization; the window a manually optimized module accumulates itself is read "
        "from its first run."
    ),
)
