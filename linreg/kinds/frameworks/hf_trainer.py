"""A model trained by transformers' own Trainer, judged as any training loop is.

The audit builds a fresh model from the user's factory (a `PreTrainedModel` from a config, or any
nn.Module whose forward takes the example's keys and returns a loss), completes the
`TrainingArguments` (a temporary output folder, the CPU, no reporting, no saving, no
evaluation, a constant schedule; `max_grad_norm` as the user sets it, transformers' 1.0 by
default), and runs `Trainer.train()` over a dataset of copies of the sample and of a contrast
row that counts fewer targets, watching every optimizer step as `linreg.kinds.training_loop`
does. Nothing is downloaded. Needs transformers (`pip install 'linreg-pitfalls[transformers]'`).
"""

from __future__ import annotations

import gc
import logging
import tempfile
from collections.abc import Callable
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
from linreg.kinds.training_loop import contract


def _norm(name: str, value: object) -> float | None:
    return None if value is None else _validate.non_negative_finite(name, value)


@dataclass(frozen=True)
class HFTrainerOptions(Options):
    """The TrainingArguments the user sets, and the sample the audit's rows copy."""

    example: training_loop.Example = training_loop.example_option()
    gradient_accumulation_steps: int = option(
        1,
        "TrainingArguments(gradient_accumulation_steps=k)",
        flag="--gradient-accumulation-steps",
        check=_validate.positive_int,
    )
    max_grad_norm: float | None = option(
        1.0,
        "TrainingArguments(max_grad_norm=...): transformers' default clips at 1.0; 0 turns it off",
        flag="--max-grad-norm",
        check=_norm,
    )
    drop_last: bool = option(
        False, "TrainingArguments(dataloader_drop_last=True)", flag="--drop-last"
    )
    timeout: float | None = timeout_option("one run of the Trainer")


def fit_with(hf: ModuleType, options: HFTrainerOptions) -> Callable[..., None]:
    """Return fit(model, dataset, num_epochs, batch_size): transformers' Trainer, on the CPU."""

    def fit(model: nn.Module, dataset: Any, num_epochs: int, batch_size: int) -> None:
        logger = logging.getLogger("transformers")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            with tempfile.TemporaryDirectory(prefix="linreg-hf-") as out:
                args = hf.TrainingArguments(
                    output_dir=out,
                    per_device_train_batch_size=batch_size,
                    num_train_epochs=num_epochs,
                    gradient_accumulation_steps=options.gradient_accumulation_steps,
                    max_grad_norm=options.max_grad_norm or 0.0,
                    dataloader_drop_last=options.drop_last,
                    learning_rate=1e-3,  # held at 0 at every step by the audit
                    lr_scheduler_type="constant",
                    use_cpu=True,
                    report_to=[],
                    save_strategy="no",
                    logging_strategy="no",
                    eval_strategy="no",
                    disable_tqdm=True,
                    remove_unused_columns=False,
                    dataloader_num_workers=0,
                )
                trainer = hf.Trainer(
                    model=model, args=args, train_dataset=dataset, data_collator=contract.collate
                )
                gc.freeze()  # train() ends in gc.collect(): let it scan the run's objects alone
                try:
                    trainer.train()
                finally:
                    gc.unfreeze()
        finally:
            logger.setLevel(level)

    return fit


def fit(hf: ModuleType, fn: Callable[..., Any], options: HFTrainerOptions) -> Fit:
    """Return how transformers' Trainer trains the factory's models (a dict example only)."""
    if not isinstance(options.example, dict):
        raise TargetError("the hf-trainer example must be a dict of tensors, as its dataset holds")
    return Fit(fit_with(hf, options), options.gradient_accumulation_steps)


FRAMEWORK = Framework(
    name=names.HF_TRAINER,
    modules=("transformers",),
    extra="transformers",
    signature="fn() -> a PreTrainedModel, or an nn.Module whose output has a loss",
    summary="a model trained by transformers' own Trainer on CPU",
    options=HFTrainerOptions,
    fit=fit,
    doc=(
        "model is a zero-argument factory (a PreTrainedModel built from a config, or any "
        "nn.Module whose forward takes the example's keys and returns an output with a loss); "
        "example one sample as a dict of tensors (input_ids, labels with -100 where a target "
        "is not counted, attention_mask, ...). The audit completes the TrainingArguments (a "
        "temporary output folder, CPU, no reporting, saving or evaluation, a constant "
        "schedule), runs Trainer.train() over copies of the sample and of a contrast row that "
        "counts fewer targets, holds every step's lr at 0, and judges each step as the "
        "training-loop audit does: the mean over every target the step consumed. "
        "max_grad_norm as you set it (transformers clips at 1.0 by default)."
    ),
)
