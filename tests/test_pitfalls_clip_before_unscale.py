"""Clipping with a GradScaler: clip_grad_norm_ on the scaled gradients is a clip `scale` times too
strong, measured directly with torch; the audit names it on AMP loops written as people write
them, and passes the same loops that unscale first, that do not clip, or whose scaler is off."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from linreg import audit

SAMPLE = (torch.tensor([1.0, -0.5]), torch.tensor([4.2]))


def linear() -> nn.Module:
    return nn.Linear(2, 1)


def clipped_norm(
    unscale_first: bool, scale: float, max_norm: float, seed: int
) -> tuple[float, float]:
    """Return the true gradient's norm and the applied one's after one scaled step, read by
    torch's own optimizer pre-step hook (the gradient the step applies)."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    X, y = torch.randn(8, 3), torch.randn(8, 1)
    true = torch.cat(
        [
            g.reshape(-1)
            for g in torch.autograd.grad(F.mse_loss(model(X), y), list(model.parameters()))
        ]
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen: list[torch.Tensor] = []
    optimizer.register_step_pre_hook(
        lambda *_: seen.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaler.scale(F.mse_loss(model(X), y)).backward()
    if unscale_first:
        scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    return float(true.norm()), float(seen[0].norm())


@given(
    st.sampled_from([2.0**8, 2.0**12, 2.0**16]),
    st.floats(0.01, 10.0),
    st.integers(0, 1000),
)
def test_pitfalls_clipping_the_scaled_gradient_applies_max_norm_over_the_scale(
    scale: float, max_norm: float, seed: int
) -> None:
    true, right = clipped_norm(True, scale, max_norm, seed)
    _, wrong = clipped_norm(False, scale, max_norm, seed)
    assert right == pytest.approx(min(true, max_norm), rel=1e-4)
    if true * scale > max_norm:  # the scaled norm exceeds max_norm: the wrong clip fires
        assert wrong == pytest.approx(max_norm / scale, rel=1e-4)


# --- AMP loops as people write them, each beside its twin -------------------------------------


def train_amp(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    num_epochs: int,
    accumulation_steps: int = 2,
) -> None:
    """The PyTorch AMP recipe with accumulation (each window's summed loss over its rows):
    unscale_ at each update, then clip."""
    scaler = torch.amp.GradScaler("cpu")
    for _epoch in range(num_epochs):
        batches = list(loader)
        for i, (X, y) in enumerate(batches):
            start = i - i % accumulation_steps  # the window's rows: the last may be short
            rows = sum(len(b[0]) for b in batches[start : start + accumulation_steps])
            with torch.autocast("cpu", enabled=False):
                loss = F.mse_loss(model(X), y, reduction="sum") / rows
            scaler.scale(loss).backward()
            if (i + 1) % accumulation_steps == 0 or i + 1 == len(batches):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)


def train_amp_clip_first(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    num_epochs: int,
    accumulation_steps: int = 2,
) -> None:
    """Twin: the clip comes before the scaler has unscaled."""
    scaler = torch.amp.GradScaler("cpu")
    for _epoch in range(num_epochs):
        batches = list(loader)
        for i, (X, y) in enumerate(batches):
            start = i - i % accumulation_steps
            rows = sum(len(b[0]) for b in batches[start : start + accumulation_steps])
            loss = F.mse_loss(model(X), y, reduction="sum") / rows
            scaler.scale(loss).backward()
            if (i + 1) % accumulation_steps == 0 or i + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)


class Config:
    use_amp = False
    grad_clip = 0.5


def train_amp_flag(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """A config that turns AMP off: the scaler is disabled, so clipping first is harmless."""
    scaler = torch.amp.GradScaler("cpu", enabled=Config.use_amp)
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.mse_loss(model(X), y)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), Config.grad_clip)
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()


def train_amp_no_clip(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """AMP without clipping: the scaler unscales inside step."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.mse_loss(model(X), y)).backward()
            scaler.step(optimizer)
            scaler.update()


@pytest.mark.parametrize(
    ("loop", "options"),
    [
        (train_amp, {"accumulation_steps": 2}),
        (train_amp_flag, {}),
        (train_amp_no_clip, {}),
    ],
)
def test_an_amp_loop_that_unscales_first_or_does_not_clip_passes_every_property(
    loop: Any, options: dict[str, Any]
) -> None:
    report = audit.training_loop(loop, model=linear, example=SAMPLE, **options)
    assert report.ok, report.describe(only_failures=True)
    assert {r.pitfall for r in report.results if r.verdict == "pass"} >= {"clip-before-unscale"}


def test_an_amp_loop_that_clips_before_unscaling_fails_naming_that_alone() -> None:
    report = audit.training_loop(
        train_amp_clip_first, model=linear, example=SAMPLE, accumulation_steps=2
    )
    assert [r.pitfall for r in report.failures] == ["clip-before-unscale"]
    assert "scaler.unscale_(optimizer) before clipping" in report.failures[0].message


def train_amp_divide_in_place(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """Summed loss, the still-scaled gradients divided by the batch's rows in place, then
    unscale_ and clip: a change before unscale_ that is no clip, and right."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.mse_loss(model(X), y, reduction="sum")).backward()
            for p in model.parameters():
                p.grad /= len(X)
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()


class TwoPart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(2, 3), nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def train_amp_two_optimizers(model: TwoPart, loader: Iterable[Any], *, num_epochs: int) -> None:
    """PyTorch's AMP recipe with two optimizers: one scaler, each optimizer unscaled before the
    clip of every parameter, a step for each, one update."""
    opt0 = torch.optim.SGD(model.body.parameters(), lr=0.1)
    opt1 = torch.optim.SGD(model.head.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for X, y in loader:
            opt0.zero_grad()
            opt1.zero_grad()
            scaler.scale(F.mse_loss(model(X), y)).backward()
            scaler.unscale_(opt0)
            scaler.unscale_(opt1)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt0)
            scaler.step(opt1)
            scaler.update()


@pytest.mark.parametrize(
    ("loop", "model"), [(train_amp_divide_in_place, linear), (train_amp_two_optimizers, TwoPart)]
)
def test_a_right_change_before_unscale_and_two_optimizers_with_one_scaler_pass(
    loop: Any, model: Any
) -> None:
    report = audit.training_loop(loop, model=model, example=SAMPLE)
    assert report.ok, report.describe(only_failures=True)
