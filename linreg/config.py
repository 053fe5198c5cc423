"""One checked training configuration, and the training signature written once.

`TrainConfig` holds what every training loop here takes (lr, batch_size, num_epochs, the
generator, drop_last, on_step), with the book's defaults, checked once when it is built: the
loops then never check inside. The wrong variants that mirror a loop take its signature with
`mirrors` instead of writing it out again, and `bind` reads their arguments by it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor

from linreg import _validate
from linreg._book import BATCH_SIZE, LR, NUM_EPOCHS

StepCallback = Callable[[int, Tensor, Tensor], None]  # (step, w, b) after each step
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings: the book's defaults unless given, checked when built."""

    lr: float = LR
    batch_size: int = BATCH_SIZE
    num_epochs: int = NUM_EPOCHS
    generator: torch.Generator | None = None
    drop_last: bool = False
    on_step: StepCallback | None = None

    def __post_init__(self) -> None:
        # the numbers are stored as converted (an int lr becomes a float, a numpy int an int);
        # the generator, drop_last and on_step are checked and kept as they are
        object.__setattr__(self, "lr", _validate.positive_finite("lr", self.lr))
        object.__setattr__(
            self, "batch_size", _validate.positive_int("batch_size", self.batch_size)
        )
        object.__setattr__(
            self, "num_epochs", _validate.non_negative_int("num_epochs", self.num_epochs)
        )
        _validate.generator(self.generator)
        _validate.flag("drop_last", self.drop_last)
        _validate.callback("on_step", self.on_step)

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> TrainConfig:
        """Build the config from a loop's arguments (those it takes; the rest by default)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})


def mirrors(model: Callable[P, R], **defaults: Any) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Give a wrong variant the signature of the loop it mirrors (some defaults changed).

    The variant takes `*args, **kwargs` and reads them with `bind`; inspect (the audit, the
    command line) and type checkers see model's parameters.
    """
    signature = inspect.signature(model)
    if defaults:
        signature = signature.replace(
            parameters=[
                p.replace(default=defaults[p.name]) if p.name in defaults else p
                for p in signature.parameters.values()
            ]
        )

    def give(variant: Callable[..., R]) -> Callable[P, R]:
        variant.__signature__ = signature  # type: ignore[attr-defined]
        return variant

    return give


def bind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return fn's arguments by name, its defaults filled in, as its signature reads them."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)
