"""An update whose loss the watch does not read (a triplet margin, a gradient penalty taken by
autograd.grad) has weights it cannot judge; what its params' .grad held as its first
backward() began is read all the same: a gradient the update before left there (its
optimizer's zero_grad forgotten) fails grad-zeroing, as on an update whose loss is read.
Before, such an update was passed over whole, and a WGAN-GP critic never zeroed passed every
property judged on its generator's updates (review rv75's b40; its b11 and b27, a triplet
network and REINFORCE never zeroed, were "not judged"). A critic's terms written by hand, each
backward()ed apart on one batch, are one objective's, not a window's micro-batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch


def _triplets(zeroed: bool) -> list[str]:
    """Train an embedding on (anchor, positive, negative) triplets with torch's triplet margin
    loss, which the watch does not read; return the pitfalls it failed (ERROR: none)."""
    gen = torch.Generator().manual_seed(0)
    anchor = torch.randn(48, 6, generator=gen)
    positive = anchor + 0.1 * torch.randn(48, 6, generator=gen)
    negative = torch.randn(48, 6, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embed = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.Adam(embed.parameters(), lr=1e-3)
    data = DataLoader(TensorDataset(anchor, positive, negative), batch_size=8, generator=gen)
    criterion = nn.TripletMarginLoss(margin=1.0)
    with watch() as reports:
        for a, p, n in data:
            if zeroed:
                optimizer.zero_grad()
            criterion(embed(a), embed(p), embed(n)).backward()
            optimizer.step()
    report = reports[0]
    assert zeroed == bool(report.error), str(report)
    return [r.pitfall for r in report.failures]


@pytest.mark.parametrize("zeroed", [True, False])
def test_an_unread_loss_never_zeroed_fails_grad_zeroing_and_zeroed_is_not_judged(
    zeroed: bool,
) -> None:
    assert _triplets(zeroed) == ([] if zeroed else ["grad-zeroing"])


def _gan() -> tuple[torch.Generator, DataLoader[tuple[torch.Tensor, ...]], nn.Module, nn.Module]:
    """Return a generator of random numbers, batches of 16 of 96 points near (2, 2), a
    critic and a generator of points from 3 numbers."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(96, 2, generator=gen) + 2.0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
        generator = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
    data = DataLoader(TensorDataset(real), batch_size=16, shuffle=True, generator=gen)
    return gen, data, critic, generator


def _wgan_gp(critic_zeroed: bool) -> tuple[list[str], list[float]]:
    """A WGAN-GP: the critic steps on every batch, on its scores and a gradient penalty (the
    critic's input gradient, by autograd.grad with create_graph), the generator on every
    second batch on a loss the watch reads (its scores' mean against a constant: a mean of
    squares); return the pitfalls the watch failed, and the norm of what the critic's .grad
    held as each of its backward() calls began (measured directly: 0 where none)."""
    gen, data, critic, generator = _gan()
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
    held = []
    with watch() as reports:
        for i, (x,) in enumerate(data):
            fake = generator(torch.randn(len(x), 3, generator=gen)).detach()
            mix = torch.rand(len(x), 1, generator=gen)
            between = (mix * x + (1 - mix) * fake).requires_grad_(True)
            (slope,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
            penalty = ((slope.norm(2, dim=1) - 1) ** 2).mean()
            if critic_zeroed:
                opt_c.zero_grad()
            grads = [p.grad for p in critic.parameters() if p.grad is not None]
            held.append(float(torch.stack([g.norm() for g in grads]).norm()) if grads else 0.0)
            (critic(fake).mean() - critic(x).mean() + 10 * penalty).backward()
            opt_c.step()
            if i % 2:
                opt_g.zero_grad()
                scores = critic(generator(torch.randn(len(x), 3, generator=gen)))
                F.mse_loss(scores, torch.full_like(scores, 3.0)).backward()
                opt_g.step()
    return [r.pitfall for r in reports[0].failures], held


@pytest.mark.parametrize("critic_zeroed", [True, False])
def test_a_critic_on_a_gradient_penalty_never_zeroed_fails_grad_zeroing(
    critic_zeroed: bool,
) -> None:
    """The critic's .grad as its backward() begins holds the updates before's gradients where
    it is never zeroed (measured), and nothing where it is."""
    failed, held = _wgan_gp(critic_zeroed)
    assert (max(held) > 0) != critic_zeroed
    assert failed == ([] if critic_zeroed else ["grad-zeroing"])


@pytest.mark.parametrize("zeroed", [True, False])
def test_a_critics_terms_by_hand_each_backwarded_on_one_batch_are_one_objective(
    zeroed: bool,
) -> None:
    """A WGAN-GP critic as widely copied: its real scores' mean backward()ed with -1, the
    fake's with +1, the gradient penalty apart, all on one fetched batch at the same params:
    one objective's terms, not three micro-batches of an accumulation window (weighed
    [1, 1, 0.1], they failed micro-batch-accumulation: a false alarm, review rv76's c08).
    Its weights are the code's, not judged; never zeroed, it fails grad-zeroing."""
    gen, data, critic, generator = _gan()
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4)
    one, minus_one = torch.tensor(1.0), torch.tensor(-1.0)
    with watch() as reports:
        for (real,) in data:
            if zeroed:
                critic.zero_grad()
            critic(real).mean().backward(minus_one)
            fake = generator(torch.randn(len(real), 3, generator=gen)).detach()
            critic(fake).mean().backward(one)
            mix = torch.rand(len(real), 1, generator=gen)
            between = (mix * real + (1 - mix) * fake).requires_grad_(True)
            (slope,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
            (0.1 * ((slope.norm(2, dim=1) - 1) ** 2).mean()).backward()
            opt_c.step()
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ([] if zeroed else ["grad-zeroing"]), str(report)
