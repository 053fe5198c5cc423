"""Whether a tensor holds a fetched batch's values (targets.py's readings of a loss's target):
its rows cast or moved (y.float(), y.to(device)), its samples' own tensors stacked, a token
batch shifted (y[:, 1:]), or rows a mask picked of it (b[m])."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor


def within(flat: Tensor, fetched: Tensor, samples: int) -> bool:
    """Return whether flat holds a fetched tensor's elements, flattened: all of them, or the
    first or last of each of its samples' (its rows, one a sample)."""
    if fetched.device != flat.device or flat.numel() > fetched.numel():
        return False
    if flat.numel() == fetched.numel():
        return torch.equal(fetched.reshape(-1).to(flat.dtype), flat)
    if fetched.ndim < 2 or fetched.shape[0] != samples or flat.numel() % samples:
        return False
    each, whole = flat.numel() // samples, fetched[0].numel()
    rows, mine = fetched.reshape(samples, whole).to(flat.dtype), flat.view(samples, each)
    return any(torch.equal(rows[:, o : o + each], mine) for o in (0, whole - each))


def shifted(t: Tensor, fetched: Iterable[Tensor]) -> bool:
    """Return whether t holds a fetched batch of tokens' samples, each shifted by the code
    (a copy, flattened or not: y[:, 1:].reshape(-1), labels[..., 1:].contiguous()): integers
    of a fetched tensor's dtype, the first or last two or more elements of each of its
    samples (within), on the target's device (ids.to(device)[:, 1:]: the batch as fetched,
    moved). Not a float target, nor one element a sample (a GAN's labels of all 0 may equal
    the first pixel of each of a batch's binary images), nor one value (an empty mask's)."""
    if t.is_floating_point() or t.dtype in (torch.bool, torch.uint8) or not t.numel():
        return False
    with torch.no_grad():
        flat = t.detach().reshape(-1)
        if bool((flat == flat[0]).all()):  # one value (an empty mask's): no sample told
            return False
        for f in fetched:
            if f.dtype != t.dtype or f.ndim < 2 or flat.numel() >= f.numel():
                continue
            samples = f.shape[0]
            if flat.numel() % samples or flat.numel() // samples < 2:
                continue
            if within(flat, f.detach().to(flat.device), samples):
                return True
    return False


def cast(t: Tensor, fetched: Tensor) -> bool:
    """Return whether t holds rows of a fetched tensor, cast or moved: the fetched rows at one
    of the offsets a split into chunks of len(t) rows starts at, equal to t in t's dtype and
    on its device, and t equal to them in theirs (a cast that loses nothing: 0.37 cast to an
    integer 0 is not the label 0; floats may be rounded to t's floats, float64 data cast to
    float32), each row reshaped alike too (y.float().unsqueeze(1), as a binary cross-entropy
    takes labels)."""
    rounded = t.is_floating_point() and fetched.is_floating_point()
    n, rows = (t.shape[0], fetched.shape[0]) if t.ndim and fetched.ndim else (0, 0)
    if not 0 < n <= rows or t.shape[1:].numel() != fetched.shape[1:].numel():
        return False
    if t.shape[1:] != fetched.shape[1:]:  # each row's elements in another shape
        t, fetched = t.reshape(n, -1), fetched.reshape(rows, -1)
    with torch.no_grad():
        values = fetched.detach().to(device=t.device, dtype=t.dtype)
        back = t.detach().to(device=fetched.device, dtype=fetched.dtype)
        starts = {*range(0, rows - n + 1, n), rows - n}
        return any(
            torch.equal(values[i : i + n], t) and (rounded or torch.equal(fetched[i : i + n], back))
            for i in starts
        )


class Picked(NamedTuple):
    """The fetched tensor whose rows a mask picked a target holds, and how many it picked."""

    fetched: Tensor
    rows: int


def picked(t: Tensor, fetched: Iterable[Tensor]) -> Picked | None:
    """Return whether t holds some of a fetched tensor's rows, in their order: those a mask
    over its leading dimensions kept (b[m], a detector's boxes at its positive anchors, m =
    labels > 0; masked_select's, flattened, with its mask across each row of the last
    dimension), or its elements a mask kept (depth[valid]), where one element a row is not a
    label's (a few classes, too easily one of another's): floats, most of them distinct.
    Rows equal to one another (the anchors of one object, its box each) are taken in turn,
    the first picked at the first place its values hold; where that breaks their order (a
    background's zeros among them), not read; one row alone, only where its values are
    nowhere else. Floats are compared in t's dtype, as a cast rounds them (float64 boxes
    collated from numpy's arrays, cast by the code, then picked). Return that fetched tensor
    (the newest) and the rows picked, else None; None too past PICKED_MOST elements, or where
    telling fails (never an error in the code's step). The code's random stream is left as
    it was."""
    if not t.ndim or not t.shape[0] or t.is_complex() or t.numel() > PICKED_MOST:
        return None
    try:
        if t.ndim == 1:  # masked_select's rows flattened, or elements a mask kept
            valued = _valued(t)
            return next(filter(None, (_flat(t, f, valued) for f in reversed(list(fetched)))), None)
        if t.shape[1:].numel() < 2 and not _valued(t):
            return None
        found = _picked(t, fetched)
        return None if found is None else Picked(found, t.shape[0])
    except Exception:
        return None


def _flat(t: Tensor, f: Tensor, valued: bool) -> Picked | None:
    """Return t's elements as rows of a fetched tensor's last dimension a mask picked
    (masked_select over a mask across each row), or as its elements a mask kept where they
    are values (_valued); else None."""
    width = f.shape[-1] if f.ndim >= 2 else 0
    if width >= 2 and not t.numel() % width and _picked(t.reshape(-1, width), [f]) is f:
        return Picked(f, t.numel() // width)
    if valued and _picked(t.reshape(-1, 1), [f.reshape(-1, 1)]) is not None:
        return Picked(f, t.numel())
    return None


def _valued(t: Tensor) -> bool:
    """Return whether t's elements are values, not labels: floats, most of them distinct."""
    return t.is_floating_point() and 2 * len(torch.unique(t.detach())) > t.numel()


PICKED_MOST = 1 << 22  # the most elements of a fetched tensor whose rows picked are told


def _picked(t: Tensor, fetched: Iterable[Tensor]) -> Tensor | None:
    each = t.shape[1:]
    with torch.no_grad():
        mine = t.detach().reshape(t.shape[0], -1)
        told: tuple[Tensor, Tensor, Tensor] | None = None  # its key, hashes, turns: once
        for f in reversed(list(fetched)):
            rounded = f.is_floating_point() and t.is_floating_point()  # (cast's rounding)
            if (f.dtype != t.dtype and not rounded) or f.numel() > PICKED_MOST:
                continue
            if f.ndim <= t.ndim - 1 or f.shape[f.ndim - len(each) :] != each:
                continue
            rows = f.detach().to(t.device, t.dtype).reshape(-1, mine.shape[1])
            if not t.shape[0] < rows.shape[0]:
                continue  # (as many: a view, a cast or a copy: cast's)
            if not bool((rows == mine[0]).all(1).any()):
                continue  # (its first row nowhere: told by one pass, not a sort)
            if told is None:
                drawn = torch.Generator().manual_seed(0)  # (the code's stream is the code's)
                key = torch.randint(1, 1 << 62, (mine.shape[1],), generator=drawn)
                key = key.to(t.device)
                wanted = _hashed(mine, key)
                told = key, wanted, _turns(wanted)
            key, wanted, turn = told
            theirs = _hashed(rows, key)
            order = torch.argsort(theirs, stable=True)
            ordered = theirs[order]
            first = torch.searchsorted(ordered, wanted)
            at = (first + turn).clamp(max=rows.shape[0] - 1)
            where = order[at]
            alone = t.shape[0] > 1 or int(
                torch.searchsorted(ordered, wanted, right=True)[0]
            ) == 1 + int(first[0])
            if alone and bool((where[1:] > where[:-1]).all()) and torch.equal(rows[where], mine):
                return f
    return None


def _turns(hashes: Tensor) -> Tensor:
    """Return each hash's turn among those equal to it before it (0 for the first)."""
    by = torch.argsort(hashes, stable=True)
    ordered = hashes[by]
    n = torch.arange(len(ordered), device=hashes.device)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = torch.cummax(torch.where(starts, n, torch.zeros_like(n)), 0).values
    turn = torch.empty_like(n)
    turn[by] = n - first
    return turn


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _hashed(rows: Tensor, key: Tensor) -> Tensor:
    """Return a hash of each row's bits by a key, exact (integers, wrapping: the same bits hash
    alike whatever the layout)."""
    bits = rows.contiguous().view(_BITS[rows.element_size()]).to(torch.int64)
    return (bits * key).sum(1)


def stacked(t: Tensor, fetched: Iterable[Tensor]) -> bool:
    """Return whether each row of t (rows of one or more elements: a label per sample is too
    easily equal to another's) is one of the fetched tensors, of its shape and dtype, by value:
    the samples' tensors stacked by the code (torch.stack([d["boxes"] for d in batch]))."""
    if t.ndim < 2 or not t.shape[0]:
        return False
    with torch.no_grad():
        own = [f for f in fetched if f.shape == t.shape[1:] and f.dtype == t.dtype]
        return len(own) >= t.shape[0] and all(
            any(torch.equal(row, f.to(row.device)) for f in own) for row in t.detach()
        )
