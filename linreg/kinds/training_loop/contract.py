"""What a training loop asks for, read from its parameters' names, and what the audit passes.

A loop says what it needs by naming it: `model` (or `net`), its data as a `loader` (a
DataLoader), a `dataset` (map-style: the loop builds its own DataLoader) or a batch function
(`get_batch`, called for each batch), an `optimizer` (else the loop builds its own: the audit
sees it through torch's global step hooks), `num_epochs` or a step count (`max_steps`,
`max_iters`, ...), and optionally `device`, `batch_size` and an accumulation count. Parameters
with a default and no known name are left to the loop; one without a default that the audit
cannot fill is refused, naming it, before any work.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from linreg.kinds.base import TargetError
from linreg.kinds.options import name_of

MODEL = ("model", "net", "module")
LOADER = (
    "loader",
    "dataloader",
    "data_loader",
    "train_loader",
    "train_dataloader",
    "trainloader",
    "train_iter",
    "data_iter",
    "batches",
)
DATASET = ("dataset", "train_dataset", "train_data", "ds", "data")
BATCH_FN = ("get_batch", "batch_fn", "next_batch", "sample_batch")
OPTIMIZER = ("optimizer", "opt", "optim", "trainer", "updater")  # d2l: trainer, updater
EPOCHS = ("num_epochs", "epochs", "n_epochs", "max_epochs")
STEPS = (
    "max_steps",
    "max_iters",
    "num_steps",
    "num_iters",
    "steps",
    "iters",
    "total_steps",
    "train_steps",
)
DEVICE = ("device",)
BATCH_SIZE = ("batch_size", "bs")
ACCUMULATION = (
    "accumulation_steps",
    "gradient_accumulation_steps",
    "grad_accum_steps",
    "accum_steps",
    "grad_accum",
)
ROLES = {
    "model": MODEL,
    "loader": LOADER,
    "dataset": DATASET,
    "batch_fn": BATCH_FN,
    "optimizer": OPTIMIZER,
    "epochs": EPOCHS,
    "steps": STEPS,
    "device": DEVICE,
    "batch_size": BATCH_SIZE,
    "accumulation": ACCUMULATION,
}
WHAT = (
    "model (or net); loader, dataset or get_batch; num_epochs or a step count (max_steps, "
    "max_iters, ...); optionally optimizer, device, batch_size, accumulation_steps"
)


@dataclass(frozen=True)
class Contract:
    """Which parameter of the loop plays which role (None: the loop does not ask for it)."""

    names: Mapping[str, str]  # role -> the loop's parameter name

    def has(self, role: str) -> bool:
        """Return True if the loop asks for the role."""
        return role in self.names

    @property
    def data(self) -> str:
        """Return how the loop takes its data: "loader", "dataset" or "batch_fn"."""
        return next(r for r in ("loader", "dataset", "batch_fn") if r in self.names)

    @property
    def by_steps(self) -> bool:
        """Return True if the loop runs for a number of optimizer steps, not epochs."""
        return "steps" in self.names and "epochs" not in self.names


def contract_of(fn: Callable[..., Any]) -> Contract:
    """Return what fn asks for, by its parameters' names; raise TargetError if it cannot run."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise TargetError(
            f"{name_of(fn)} has no signature to read: the audit passes by name"
        ) from None
    names: dict[str, str] = {}
    unknown = []
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        role = next((r for r, spelled in ROLES.items() if name in spelled), None)
        if role is not None and role not in names and p.kind is not p.POSITIONAL_ONLY:
            names[role] = name
        elif p.default is p.empty:
            unknown.append(name)
    missing = [
        what
        for what, roles in (
            ("the model", ("model",)),
            ("its data (loader, dataset or get_batch)", ("loader", "dataset", "batch_fn")),
            ("num_epochs or a step count (max_steps, max_iters, ...)", ("epochs", "steps")),
        )
        if not any(r in names for r in roles)
    ]
    if unknown or missing:
        why = [f"it needs {', '.join(unknown)}, which the audit cannot pass"] if unknown else []
        why += [f"it takes no parameter for {m}" for m in missing]
        raise TargetError(
            f"{name_of(fn)}: {'; '.join(why)} (bind the others with functools.partial). The "
            f"audit passes by name: {WHAT}"
        )
    return Contract(names)


class Batch(dict[str, Any]):
    """A dict batch with `.to(device)`, as a tokenizer's batches have."""

    def to(self, *args: Any, **kwargs: Any) -> Batch:
        """Return the batch with each tensor moved (a no-op on the CPU)."""
        return Batch(
            {k: v.to(*args, **kwargs) if isinstance(v, Tensor) else v for k, v in self.items()}
        )


Drew = Callable[[int, bool, Any], None]  # told a draw: its rows, a batch or a row, what it drew


class Rows(Dataset[Any]):
    """A map-style dataset of rows: (x, y) pairs, or dicts of tensors; drew(1, False, row) is
    called on each row taken (not in a loader's worker process, where it is not this
    process's)."""

    def __init__(self, rows: list[Any], drew: Drew | None = None) -> None:
        self.rows, self.drew = rows, drew

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        row = self.rows[i]
        if self.drew is not None:
            self.drew(1, False, row)
        return row

    def __getstate__(self) -> dict[str, Any]:
        return {"rows": self.rows, "drew": None}


def collate(rows: list[Any]) -> Any:
    """Stack rows into a batch: [X, y] for pairs, a Batch for dicts."""
    if isinstance(rows[0], Mapping):
        return Batch({k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    return [torch.stack([r[i] for r in rows]) for i in range(len(rows[0]))]


def loader(rows: list[Any], batch_size: int, drop_last: bool) -> DataLoader[Any]:
    """Return a DataLoader over the rows, in order."""
    return DataLoader(Rows(rows), batch_size=batch_size, drop_last=drop_last, collate_fn=collate)


def batch_fn(rows: list[Any], batch_size: int, drew: Drew | None = None) -> Callable[..., Any]:
    """Return get_batch(*args): the next batch_size rows, in order, around the data forever;
    drew(batch_size, True, batch) is called on each batch for training (for_training: a call for
    get_batch("val") is the loop's own evaluation)."""
    stream = itertools.cycle(range(len(rows)))

    def get_batch(*args: Any, **kwargs: Any) -> Any:
        batch = collate([rows[next(stream)] for _ in range(batch_size)])
        if drew is not None and for_training(args, kwargs):
            drew(batch_size, True, batch)
        return batch

    return get_batch


_HELD_OUT = ("val", "eval", "test", "dev", "holdout", "held")  # how splits are named


def for_training(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Return True if a get_batch() call asks for training data: no string it was passed
    names a held-out split, and no keyword about training is False (get_batch("val"),
    get_batch(32, "val"), get_batch(mode="eval"), get_batch(train=False) ask for the loop's
    own evaluation; get_batch("train", "cuda") for training)."""
    words = [v.lower() for v in (*args, *kwargs.values()) if isinstance(v, str)]
    off = any(v is False for k, v in kwargs.items() if "train" in k.lower())
    return not off and not any(w.startswith(_HELD_OUT) for w in words)


def arguments(
    contract: Contract,
    *,
    model: torch.nn.Module,
    rows: list[Any],
    batch_size: int,
    drop_last: bool,
    optimizer: torch.optim.Optimizer | None,
    num_epochs: int,
    steps: int,
    accumulation_steps: int,
    drew: Drew | None = None,
) -> dict[str, Any]:
    """Return the keyword arguments the loop asks for; drew(rows, batch, value) is called on
    each draw of a dataset's row or a get_batch() batch (a loader's are told by its
    collate_fn)."""
    data: Any
    if contract.data == "loader":
        data = loader(rows, batch_size, drop_last)
    elif contract.data == "dataset":
        data = Rows(rows, drew)
    else:
        data = batch_fn(rows, batch_size, drew)
    values: dict[str, Any] = {
        "model": model,
        contract.data: data,
        "optimizer": optimizer,
        "epochs": num_epochs,
        "steps": steps,
        "device": "cpu",  # a str: what GradScaler(device) and `"cuda" in device` take
        "batch_size": batch_size,
        "accumulation": accumulation_steps,
    }
    out = {name: values[role] for role, name in contract.names.items() if role in values}
    if contract.has("epochs") and contract.has("steps"):
        del out[contract.names["steps"]]  # epochs say how long; the step count keeps its default
    return out
