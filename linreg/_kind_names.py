"""The kinds' names, in the registry's order: `linreg.kinds.KINDS` is built from the kinds'
modules and checked against them. Read without importing torch: the pytest plugin, loaded by
every pytest run where linreg is installed, lists them in its help."""

from __future__ import annotations

ITERATOR = "iterator"
UPDATE_STEP = "update-step"
LOSS = "loss"
LOOP = "loop"
EPOCH_LOSS = "epoch-loss"
TRAINING_LOOP = "training-loop"
HF_TRAINER = "hf-trainer"
LIGHTNING = "lightning"

NAMES = (ITERATOR, UPDATE_STEP, LOSS, LOOP, EPOCH_LOSS, TRAINING_LOOP, HF_TRAINER, LIGHTNING)
