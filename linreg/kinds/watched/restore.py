"""What the watcher puts back after the watched code (PutBack, the Observer's): each
optimizer's state and lrs, each scheduler's and loss scaler's state, each param's .grad as it
was found, and params an update made by hand moved. The state it reads is the Observer's
(observed.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.kept import Watched


class PutBack:
    """The Observer's putting back; the attributes it reads are the Observer's (set in
    Observed.__init__, observed.py)."""

    seen: Watched
    states: list[tuple[torch.optim.Optimizer, dict[str, Any]]]
    lr_values: dict[int, list[Any]]
    kept: dict[int, tuple[Any, dict[str, Any]]]
    scalers: dict[int, torch.amp.GradScaler]
    found: dict[int, tuple[Tensor, Tensor | None]]
    first: dict[int, tuple[Tensor, Tensor]]

    def put_back(self) -> None:
        """Put back what the watched steps changed: each optimizer's state, param groups (those
        the code added dropped) and lrs (a tensor lr, filled with 0 in place: the user's own
        object, with its value), each scheduler's
        and loss scaler's state (a scaler ended between unscale_ and update() too), each
        param's .grad as it was found; params an update made by hand moved (no optimizer
        stepped), as they were at the first backward()."""
        for opt, state in self.states:
            with self.attempt(f"{type(opt).__name__}'s state and lrs"):
                # the param groups the code added while watched (add_param_group: a backbone
                # unfrozen at an epoch) go with the rest of what the run did
                del opt.param_groups[len(state["param_groups"]) :]
                opt.load_state_dict(state)
                for group, lr, value in zip(
                    opt.param_groups, self.seen.lrs[id(opt)], self.lr_values[id(opt)], strict=False
                ):
                    if isinstance(lr, Tensor) and isinstance(value, Tensor):
                        lr.copy_(value)
                    if "lr" in group:  # (a group of none: the code's optimizer names it so)
                        group["lr"] = lr
        for thing, state in self.kept.values():
            with self.attempt(f"{type(thing).__name__}'s state"):
                thing.load_state_dict(state)
        for scaler in self.scalers.values():  # no unscale_ left pending
            scaler._per_optimizer_states.clear()
        for p, grad in self.found.values():
            with self.attempt("a param's .grad"):
                p.grad = grad
        if not self.seen.updates and self.moved():  # by hand: put back as first seen
            for p, value in self.first.values():
                if _same_kind(p, value):  # a param the code reshaped is left as it is
                    p.detach().copy_(value)

    @contextmanager
    def attempt(self, what: str) -> Iterator[None]:
        """Put one thing back; if it cannot be (the code changed it past restoring), say so
        in the report and go on to the next."""
        try:
            yield
        except Exception as e:
            self.seen.unrestored.append(f"{what} ({type(e).__name__}: {e})")

    def moved(self) -> bool:
        """Return whether a param moved since the first backward() (read while no optimizer
        has stepped: after one, the lrs are held at 0)."""
        try:
            self.seen.moved = self.seen.moved or any(
                not _same(p.detach(), value) for p, value in self.first.values()
            )
        except Exception:  # a param that cannot be compared (meta, offloaded): not read
            return False
        return self.seen.moved

    def keep_grads(self, params: list[Tensor]) -> None:
        """Keep each param's .grad as the watch found it (the first time a loss it reads
        reaches it), to put back after."""
        for p in params:
            if id(p) not in self.found:
                self.found[id(p)] = (p, None if p.grad is None else p.grad.detach().clone())

    def keep(self, thing: Any) -> None:
        """Keep a scheduler's or scaler's state as the watch found it, to put back after."""
        if id(thing) not in self.kept:
            self.kept[id(thing)] = (thing, copy.deepcopy(thing.state_dict()))


def _same_kind(t: Tensor, u: Tensor) -> bool:
    return t.shape == u.shape and t.dtype == u.dtype and t.device == u.device


def _same(t: Tensor, u: Tensor) -> bool:
    return _same_kind(t, u) and torch.equal(t, u)
