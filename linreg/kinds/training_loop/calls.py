"""One forward pass with grad enabled, as the ledger keeps it (a Call): what the model was
fed, copied as it was then, cut to one row and replayed, and what its first batched tensor tells
(its memory and version: the same batch fed again, or a view of one); the tensors found inside
lists, tuples and dicts too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

import torch
from torch import Tensor, nn

STEP_COUNT = "num_items_in_batch"


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


@dataclass(frozen=True)
class Call:
    """One forward pass with grad enabled: what the model was fed, and its batch's rows."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    rows: int
    method: str = "forward"  # what was called: the model, or a method of it (training_step)
    replayable: bool = True  # False: calling it again has effects (it steps an optimizer)
    # labels its rows held that the loop took out before the forward (batch.pop("labels")),
    # never part of a row's key: fed to a replay where the model's forward takes them
    given: dict[str, Any] = field(default_factory=dict)
    feeds_given: bool = False
    # the device type and dtype torch.autocast ran the forward in (None: not under autocast)
    autocast: tuple[str, torch.dtype] | None = None
    # the rows of the audit's data drawn when it was fed (from its loader, get_batch() or
    # dataset; 0: none, or none counted): the forwards after one draw and before the next
    # make that draw's group
    drawn: int = 0
    clock: int = 0  # when it was fed, in the run's order (Observed.clock)
    # where the loop made it: the functions of its frames, as sites.site() reads them
    site: tuple[CodeType, ...] = ()
    # args and kwargs hold what it was fed as it was then (a copy: a static input buffer the
    # loop refills in place is rewritten); `first` is its first batched tensor itself, whose
    # memory tells a batch fed again or a view of one, and `version` that tensor's version
    # counter as the forward left it (settle(): a buffer refilled in place holds a new batch
    # in the same memory; a model that clamps its input in place does not make one)
    first: Tensor | None = None
    version: int = 0
    # of its rows, those the loop made to fill a short batch up to a full one's (a pad value,
    # masked out of its loss: rows.padding): none of the data's, so none counted in its rows
    padded: int = 0

    def settle(self) -> None:
        """Take the version its first tensor has as the forward ends: a model that changes
        its input in place (x.clamp_()) made that change, not the loop."""
        if self.first is not None:
            object.__setattr__(self, "version", version_of(self.first))  # frozen but for this

    def replay(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call what was called, on other arguments (one row's), under the autocast it ran
        under; a method without logging."""
        device, dtype = self.autocast or ("cpu", None)
        with torch.autocast(device, dtype=dtype, enabled=self.autocast is not None):
            if self.method == "forward":
                return model(*args, **kwargs)
            quiet = {name: _no_log for name in ("log", "log_dict") if hasattr(model, name)}
            model.__dict__.update(quiet)  # a framework's self.log() needs its loop running
            try:
                return getattr(model, self.method)(*args, **kwargs)
            finally:
                for name in quiet:
                    model.__dict__.pop(name, None)

    def row(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the call's arguments for its row i alone (a batch of one).

        Without `num_items_in_batch` (transformers' count of a whole step's targets, which a
        model divides its summed loss by): on one row alone the model's loss is its mean.
        """
        fed = {**self.kwargs, **self.given} if self.feeds_given else self.kwargs
        return _row(self.args, i, self.rows), {
            k: _row(v, i, self.rows) for k, v in fed.items() if k != STEP_COUNT
        }

    def held(self, i: int) -> dict[str, Any]:
        """Return the labels row i held that the loop did not feed (see given)."""
        return {k: _row(v, i, self.rows) for k, v in self.given.items()}

    @functools.cached_property
    def row_keys(self) -> list[bytes]:
        """Return a key per row: the bytes of everything the row was fed (computed once)."""
        batched = [t for t in tensors_in(self.args, self.kwargs) if t.shape[:1] == (self.rows,)]
        return [
            b"|".join(t[i].detach().contiguous().numpy().tobytes() for t in batched)
            for i in range(self.rows)
        ]


def autocast_now() -> tuple[str, torch.dtype] | None:
    """Return the device type and dtype torch.autocast runs a forward in now, or None."""
    for device in ("cuda", "cpu"):
        try:
            if torch.is_autocast_enabled(device):
                return device, torch.get_autocast_dtype(device)
        except (TypeError, AttributeError):  # torch < 2.4: a function per device
            on = torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled()
            if on:
                dtype = getattr(torch, f"get_autocast_{'cpu' if device == 'cpu' else 'gpu'}_dtype")
                return device, dtype()
    return None


def first_input(call: Call) -> Tensor | None:
    """Return the first batched tensor (ndim > 0) a forward was fed, itself where the hooks
    kept it (Call.first; else as copied), or None."""
    return call.first if call.first is not None else first_value(call)


def first_value(call: Call) -> Tensor | None:
    """Return the values of the first batched tensor a forward was fed, as they were then."""
    return next((t for t in tensors_in(call.args, call.kwargs) if t.ndim > 0), None)


def version_of(t: Tensor) -> int:
    """Return a tensor's version counter (-1: an inference tensor keeps none)."""
    try:
        return int(t._version)
    except RuntimeError:
        return -1


def memory_of(call: Call) -> int | None:
    """Return the storage address of the first batched tensor a forward was fed (None: none
    to tell by): the batch's, for the batch and its views alike."""
    first = first_input(call)
    return None if first is None else storage_of(first)


def storage_of(t: Tensor) -> int | None:
    """Return the address of a non-empty strided tensor's storage (its views share it), or
    None (an empty or sparse tensor has none to tell by)."""
    if not t.numel() or t.layout != torch.strided:
        return None
    return int(t.untyped_storage().data_ptr())


def tensors_in(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    """Return the tensors fed, in order, inside lists, tuples and dicts too (a batch [X, y])."""
    out = []
    for v in [*args, *kwargs.values()]:
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, Mapping):
            out += tensors_in([], v)
        elif isinstance(v, (list, tuple)):
            out += tensors_in(v, {})
    return out


def _mapped(v: Any, f: Callable[[Tensor], Tensor]) -> Any:
    """Return v with f applied to every tensor in it, inside lists, tuples and dicts too."""
    if isinstance(v, Tensor):
        return f(v)
    if isinstance(v, Mapping):
        return type(v)({k: _mapped(t, f) for k, t in v.items()})  # type: ignore[call-arg]
    if isinstance(v, (list, tuple)):
        return type(v)(_mapped(t, f) for t in v)
    return v


def _row(v: Any, i: int, rows: int) -> Any:
    """Return v with each tensor of the batch's rows cut to its row i (others as they are)."""
    return _mapped(v, lambda t: t[i : i + 1] if t.ndim > 0 and t.shape[0] == rows else t)


def copied(v: Any) -> Any:
    """Return v with each tensor in it detached and copied (its values as they are now)."""
    return _mapped(v, lambda t: t.detach().clone())


def same_batch(call: Call, t: Tensor) -> bool:
    """Return True if t is the tensor call was first fed, unchanged since (the same memory,
    shape and version: a static buffer refilled in place holds another batch)."""
    first = first_input(call)
    return (
        first is not None
        and first.shape == t.shape
        and first.data_ptr() == t.data_ptr()
        and version_of(t) == call.version
    )


def input_key(call: Call) -> tuple[int, torch.Size, int] | None:
    """Return the memory, shape and version of a call's first tensor as it was fed (None:
    none, or empty)."""
    first = first_input(call)
    if first is None or storage_of(first) is None:
        return None
    return first.data_ptr(), first.shape, call.version


def _rows_of_one(call: Call, other: Call) -> tuple[Tensor, Tensor, int] | None:
    """Return call's and other's first tensors and the row of other's that call's begins at
    (counted from other's first), where both are views of one tensor, unchanged between the
    two, whose rows they lay out alike (None: not)."""
    u, v = first_input(call), first_input(other)
    if u is None or v is None or u.shape[1:] != v.shape[1:] or u.stride()[1:] != v.stride()[1:]:
        return None
    if call.version != other.version:
        return None
    if storage_of(u) is None or storage_of(u) != storage_of(v):
        return None
    row = v.stride(0) * v.element_size()  # bytes from one of other's rows to the next
    offset = u.data_ptr() - v.data_ptr()
    if row <= 0 or offset % row:
        return None
    return u, v, offset // row


def apart(call: Call, other: Call) -> bool:
    """Return True if call and other were fed rows of one tensor that neither shares (X[:2]
    and X[2:4], chunks of a batch run one by one), the tensor unchanged between the two."""
    found = _rows_of_one(call, other)
    if found is None or found[0].stride(0) != found[1].stride(0):
        return False
    u, v, first = found
    return first >= v.shape[0] or first + u.shape[0] <= 0


def within(call: Call, other: Call) -> bool:
    """Return True if call was fed rows of other's batch: its first tensor a view of rows
    of other's (X[:1], X[-1:], a peek at a prediction), whose rows other's pass applies, and
    unchanged between the two (a static buffer refilled in place holds another batch)."""
    found = _rows_of_one(call, other)
    if found is None:
        return False
    u, v, first = found
    step = 1
    if u.shape[0] > 1:  # its rows every `step` rows of other's (X[::2] of X)
        step, left = divmod(u.stride(0), v.stride(0))
        if step <= 0 or left:
            return False
    return first >= 0 and first + step * (u.shape[0] - 1) < v.shape[0]
