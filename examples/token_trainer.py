"""A small language-model trainer, written as GPT-style trainers are: a step budget.

Audited in the README with `python -m linreg audit training-loop` (run from this folder). The
loop builds its own AdamW from the model's named parameters (weight decay on the matrices
only), reads batches from `get_batch(split)` (prefetching the next one before backward), runs
`max_iters` optimizer steps of `gradient_accumulation_steps` micro-batches each, with a loss
scaler and gradient clipping. `train_undivided` is the same loop without the division of each
micro-batch's loss by `gradient_accumulation_steps`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

VOCAB = 16


class TinyLM(nn.Module):
    """Embedding, one MLP block and a head; forward(idx, targets) -> (logits, loss)."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, VOCAB)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.tok(idx)
        logits = self.head(h + self.block(h))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def sample() -> tuple[Tensor, Tensor]:
    """One (x, y) of the data: 6 tokens and the same 6 shifted by one."""
    text = torch.tensor([5, 3, 9, 3, 1, 14, 2])
    return text[:-1], text[1:]


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "tok" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )


def train(
    model: nn.Module,
    get_batch: Callable[[str], tuple[Tensor, Tensor]],
    max_iters: int,
    gradient_accumulation_steps: int = 4,
    device: str = "cpu",
    lr: float = 1e-3,
    grad_clip: float = 1.0,
    divide: bool = True,
) -> None:
    model.to(device)
    optimizer = configure_optimizer(model, lr, weight_decay=0.1)
    scaler = torch.amp.GradScaler(device)
    X, Y = get_batch("train")
    for _ in range(max_iters):
        for _ in range(gradient_accumulation_steps):
            _, loss = model(X, Y)
            if divide:
                loss = loss / gradient_accumulation_steps
            X, Y = get_batch("train")
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)


def train_undivided(
    model: nn.Module,
    get_batch: Callable[[str], tuple[Tensor, Tensor]],
    max_iters: int,
    gradient_accumulation_steps: int = 4,
) -> None:
    train(model, get_batch, max_iters, gradient_accumulation_steps, divide=False)
