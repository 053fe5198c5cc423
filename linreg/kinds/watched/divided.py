"""The framework whose backward() divides a loss by its accumulation count, read from the
frame that called backward() (`divided_by`): accelerate's Accelerator.backward, transformers'
Trainer.training_step before it, Lightning's LightningModule.backward under automatic
optimization. The watch reads the loss as the code wrote it, the division as the framework's.
"""

from __future__ import annotations

import sys
from typing import Any


def divided_by(caller: Any) -> tuple[str, int]:
    """Return the framework whose backward() method called backward() and the accumulation
    count it divided the loss by: accelerate's Accelerator.backward (loss /
    gradient_accumulation_steps, on every call, inside accumulate() or not), or, where it
    divides by 1, transformers' Trainer.training_step that called it (loss / its window's
    count of batches, where neither the model nor a compute_loss_func scaled it); Lightning's
    LightningModule.backward under automatic optimization (its training step's loss divided
    by accumulate_grad_batches before it); else ("", 1)."""
    module = str(caller.f_globals.get("__name__", ""))
    if caller.f_code.co_name != "backward":
        return "", 1
    owner = caller.f_locals.get("self")
    lightning = [
        m.LightningModule
        for m in (sys.modules.get("pytorch_lightning"), sys.modules.get("lightning.pytorch"))
        if m is not None and hasattr(m, "LightningModule")
    ]  # (a module's own backward() override too: the loss reaches it divided)
    if module.startswith("accelerate.") and _trainer_divides(caller.f_back):
        trainer = caller.f_back.f_locals.get("self")
        name = "transformers' Trainer"
        steps = getattr(
            trainer,
            "current_gradient_accumulation_steps",
            getattr(getattr(trainer, "args", None), "gradient_accumulation_steps", 1),
        )
    elif module.startswith("accelerate."):
        name, steps = "accelerate's backward()", getattr(owner, "gradient_accumulation_steps", 1)
    elif isinstance(owner, tuple(lightning)) and getattr(owner, "automatic_optimization", False):
        trainer = getattr(owner, "_trainer", None)  # (its trainer property raises without one)
        name, steps = (
            "Lightning's accumulate_grad_batches",
            getattr(trainer, "accumulate_grad_batches", 1),
        )
    else:
        return "", 1
    return (name, steps) if isinstance(steps, int) and steps > 1 else ("", 1)


def _trainer_divides(frame: Any) -> bool:
    """Return whether a frame is transformers' Trainer.training_step dividing the loss by its
    window's count of batches before accelerate's backward() (which it sets to divide by 1):
    where neither the model (by num_items_in_batch) nor a compute_loss_func scaled it. Its
    own local says so (loss_is_scaled_for_ga); a Trainer older than that local tests the
    same of itself."""
    if frame is None or frame.f_code.co_name != "training_step":
        return False
    if not str(frame.f_globals.get("__name__", "")).startswith("transformers."):
        return False
    local = frame.f_locals
    if "loss_is_scaled_for_ga" in local:
        return local["loss_is_scaled_for_ga"] is False
    trainer = local.get("self")
    by_model = getattr(trainer, "model_accepts_loss_kwargs", False)
    by_model = by_model and local.get("num_items_in_batch") is not None
    return not by_model and getattr(trainer, "compute_loss_func", None) is None
