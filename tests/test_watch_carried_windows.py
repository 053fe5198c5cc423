"""An epoch's last accumulation window never stepped: its micro-batches' gradients stay in
.grad and the next epoch's first window applies them beside its own, each at 1 / the window's
count. That update took more micro-batches and rows than a full one: named short-last-batch as
micro-batches carried into it, where before (its micro-batches all weighed alike) it was named
a nominal divisor that "divides by a full update's 640 where it took 960" (review rv72's b13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch

ACCUM = 4


@pytest.mark.parametrize("by_hand", [False, True])
@pytest.mark.parametrize("flushed", [True, False])
def test_a_last_window_carried_into_the_next_epoch_is_named_as_carried(
    by_hand: bool, flushed: bool
) -> None:
    """An autoencoder, 80 rows in batches of 8 (10 an epoch), windows of 4: flushed at the
    epoch's end it passes; unflushed, the next epoch's first update holds 6 micro-batches."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(80, 20, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(12)
        model = nn.Sequential(nn.Linear(20, 6), nn.Tanh(), nn.Linear(6, 20))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x), batch_size=8, shuffle=True, generator=gen)
    with watch(steps=4) as reports:
        for _ in range(2):
            for i, (xb,) in enumerate(loader):
                start = i - i % ACCUM
                k = min(ACCUM, len(loader) - start) if flushed else ACCUM
                recon = model(xb)
                loss = torch.mean((recon - xb) ** 2) if by_hand else F.mse_loss(recon, xb)
                (loss / k).backward()
                if (i + 1) % ACCUM == 0 or (flushed and i + 1 == len(loader)):
                    optimizer.step()
                    optimizer.zero_grad()
    report = reports[0]
    assert not report.error, str(report)
    if flushed:
        assert not report.failures, str(report)
        return
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    said = report.failures[0].message
    assert "6 micro-batch(es), 960 counted" in said and "were carried into it" in said, said
