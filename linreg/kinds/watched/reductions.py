"""The whole sums and means the watched code takes (Tensor.sum, Tensor.mean, torch.sum,
torch.mean over every dim, with grad on): each one's input may be a loss written by hand
(by_hand.py). Their seams, put back after; torch.sum's and torch.mean's known to TorchScript
as the builtins they wrap while the watch runs (a model scripted then, whose forward calls
torch.mean, compiles as it would without the watch), and forgotten after."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# (owner, name) of each seam: the methods and torch's functions
SEAMS = ((Tensor, "sum"), (Tensor, "mean"), (torch, "sum"), (torch, "mean"))


def whole(
    fn: Callable[..., Tensor],
    watched: Callable[[], bool],
    note: Callable[[Any, Tensor], None],
) -> Callable[..., Tensor]:
    """Return fn, noting (note(input, out)) each call whose output is one element with grad
    while the watch reads the code (watched())."""

    @functools.wraps(fn)
    def reduce(*args: Any, **kwargs: Any) -> Tensor:
        out = fn(*args, **kwargs)
        if isinstance(out, Tensor) and out.ndim == 0 and out.grad_fn is not None and watched():
            note(args[0] if args else kwargs.get("input"), out)
        return out

    return reduce


def scriptable(seams: list[tuple[Any, Any]]) -> Callable[[], None]:
    """Register each seam (seam, the function it wraps) that replaces one of torch's functions
    TorchScript knows as a builtin (torch.sum, torch.mean) as that builtin too; return what
    forgets them. Where TorchScript's table cannot be read, nothing is registered."""
    try:
        from torch.jit import _builtins

        table: dict[int, str] = _builtins._get_builtin_table()  # type: ignore[no-untyped-call]
    except Exception:  # (another torch's: a script of them raises, as it would)
        return lambda: None
    added = []
    for seam, fn in seams:
        op = table.get(id(fn))
        if op is not None:
            table[id(seam)] = op
            added.append(id(seam))

    def forget() -> None:
        for key in added:
            table.pop(key, None)

    return forget
