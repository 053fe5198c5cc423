"""Argument checks shared by the public functions: clear errors that name the argument."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # torch only where a tensor is checked: the command line's numbers need none
    import torch
    from torch import Tensor

T = TypeVar("T")


def positive_int(name: str, value: object) -> int:
    """Return value if it is an int >= 1, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: object) -> int:
    """Return value if it is an int >= 0, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def positive_finite(name: str, value: object) -> float:
    """Return value as a float if it is a finite real > 0, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number > 0, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative_finite(name: str, value: object) -> float:
    """Return value as a float if it is a finite real >= 0, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a finite number >= 0, got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def flag(name: str, value: object) -> bool:
    """Return value if it is a bool, else raise naming the argument (no truthy strings)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def choice(name: str, value: T, options: tuple[T, ...]) -> T:
    """Return value if it is one of options, else raise naming the argument."""
    if value not in options:
        expected = " or ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def generator(value: object) -> torch.Generator | None:
    """Return value if it is None or a torch.Generator, else raise."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(value).__name__}")
    return value


def function(name: str, value: T) -> T:
    """Return value if it is callable, else raise naming the argument."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def callback(name: str, value: T) -> T:
    """Return value if it is None or callable, else raise naming the argument."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def floating_tensor(name: str, value: object) -> Tensor:
    """Return value if it is a floating-point tensor with finite entries, else raise."""
    from torch import Tensor

    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor: it has no data to compute with")
    return value


def dataset(features: object, labels: object) -> tuple[Tensor, Tensor]:
    """Check features (n, d) and labels (n,) or (n, 1) of one floating dtype, n >= 1."""
    import torch

    X = floating_tensor("features", features)
    y = floating_tensor("labels", labels)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {tuple(X.shape)}")
    n = X.shape[0]
    if n == 0:
        raise ValueError("features is empty: the dataset needs at least one example")
    if y.shape[0] != n:
        raise ValueError(
            f"features and labels have different lengths: {n} examples vs {y.shape[0]} labels"
        )
    if y.shape not in ((n,), (n, 1)):
        raise ValueError(f"labels must have shape ({n},) or ({n}, 1), got {tuple(y.shape)}")
    if X.dtype != y.dtype:
        raise TypeError(f"features and labels must share a dtype, got {X.dtype} and {y.dtype}")
    if X.device != y.device:
        raise ValueError(f"features and labels are on different devices: {X.device}, {y.device}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError("features contains NaN or inf")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("labels contains NaN or inf")
    return X, y


def params_for(features: Tensor, w: object, b: object) -> tuple[Tensor, Tensor]:
    """Check w (d, 1) and b (1,) match features (n, d) in dtype and device."""
    w = floating_tensor("w", w)
    b = floating_tensor("b", b)
    d = features.shape[1]
    if w.shape != (d, 1):
        raise ValueError(
            f"w must have shape ({d}, 1) for features with {d} columns, got {tuple(w.shape)}"
        )
    if b.numel() != 1:
        raise ValueError(f"b must hold one element, got shape {tuple(b.shape)}")
    for name, p in (("w", w), ("b", b)):
        if p.dtype != features.dtype:
            raise TypeError(f"{name} has dtype {p.dtype} but features has {features.dtype}")
        if p.device != features.device:
            raise ValueError(f"{name} is on {p.device} but features is on {features.device}")
    return w, b


# What each number check accepts, in words: for a value given as text (the command line, the
# pytest plugin), "expected a positive int, got '0'".
SEED_MAX = 2**64 - 2  # torch seeds its generators with seed and seed + 1, each below 2**64


def seed(name: str, value: object) -> int:
    """Return value if it is an int from 0 to SEED_MAX (a torch generator's seed), else raise."""
    value = non_negative_int(name, value)
    if value > SEED_MAX:
        raise ValueError(f"{name} must be an int from 0 to 2**64 - 2, got {value!r}")
    return value


def positive_int_or_none(name: str, value: object) -> int | None:
    """Return value if it is None or an int >= 1, else raise naming the argument."""
    return None if value is None else positive_int(name, value)


def positive_finite_or_none(name: str, value: object) -> float | None:
    """Return value if it is None or a finite number > 0 (a time limit: None, derived), else
    raise naming the argument."""
    return None if value is None else positive_finite(name, value)


EXPECTED: dict[Callable[[str, object], object], str] = {
    positive_int: "a positive int",
    positive_int_or_none: "a positive int",
    non_negative_int: "an int >= 0",
    positive_finite: "a finite number > 0",
    positive_finite_or_none: "a finite number > 0",
    seed: "an int from 0 to 2**64 - 2",
}
