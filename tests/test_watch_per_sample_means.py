"""Each sample's mean of the elements a mask keeps, then the mean over the samples: a
sequence-level average (`((l * m).sum(1) / m.sum(1)).mean()`), each sentence weighing alike
whatever its length, as speech and RL-from-feedback code average. Before, the elements of one
update were weighed unlike (1 / (B * len_i)), no known reading explained them, every update
was unread and a correct run ended in an error (no update could be judged). Now the loss is
read as the sum over the samples of each one's mean, its count the samples that kept one,
and the mistakes on top of it fail by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.report import Report
from linreg.audit.watcher import watch

N, T, V = 90, 12, 20  # sentences, padded length, vocabulary


def _tagger() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(V, 16), nn.Tanh(), nn.Linear(16, V))


def _sentences(seed: int = 0, empty: bool = False) -> TensorDataset:
    """Token ids, a tag per token and the padding mask (1 on each sentence's 4 to 12 tokens),
    as a collator hands them over; empty: one sentence in 8 of none (all padding)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (N, T), generator=gen)
    lengths = torch.randint(4, T + 1, (N,), generator=gen)
    if empty:
        lengths[::8] = 0
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    tags = torch.randint(0, V, (N, T), generator=gen)
    return TensorDataset(tokens, tags, mask, lengths)


def _per_sentence(mistake: str = "", accumulate: int = 1, empty: bool = False) -> Report:
    """Each sentence's mean tag loss over its tokens, averaged over the batch's sentences, in
    shuffled batches of 16 (the last holds 10). The twins: "summed" (over the sentences),
    "padded" (each sentence over the padded length T: the mean over every element),
    "nominal" (summed, over a batch of 16 whatever it holds), "lengths" (correct: divided by
    the batch's own lengths), "clamped" (correct: the mask's sum clamped at 1), "off-by-one"
    (divided by each sentence's count plus one: no count of its kept), "over-kept" (correct:
    clamped, summed over the sentences and divided by those that kept a token)."""
    gen = torch.Generator().manual_seed(1)
    model = _tagger()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(_sentences(empty=empty), batch_size=16, shuffle=True, generator=gen)
    with watch() as reports:
        for _ in range(2):
            for i, (tokens, tags, mask, lengths) in enumerate(loader):
                token_loss = F.cross_entropy(model(tokens).transpose(1, 2), tags, reduction="none")
                summed = (token_loss * mask).sum(1)
                if mistake == "padded":
                    loss = (summed / T).mean()
                elif mistake == "lengths":
                    loss = (summed / lengths).mean()
                elif mistake == "clamped":
                    loss = (summed / mask.sum(1).clamp(min=1)).mean()
                elif mistake == "over-kept":
                    kept = (mask.sum(1) > 0).sum()
                    loss = (summed / mask.sum(1).clamp(min=1)).sum() / kept
                elif mistake == "off-by-one":
                    loss = (summed / (mask.sum(1) + 1)).mean()
                else:
                    each = summed / mask.sum(1)
                    loss = {"summed": each.sum(), "nominal": each.sum() / 16}.get(
                        mistake, each.mean()
                    )
                (loss / accumulate).backward()
                if (i + 1) % accumulate == 0 or i + 1 == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
    return reports[0]


def test_a_mean_of_sentence_means_weighs_each_token_by_its_sentences_length() -> None:
    """The direct measurement: the gradient of the mean over B sentences of each one's mean
    over its kept tokens is the sum of each token's gradient over B times its sentence's
    count, not the mean over every kept token (the sentences differ in length)."""
    model = _tagger()
    tokens, tags, mask, _ = _sentences()[:16]
    token_loss = F.cross_entropy(model(tokens).transpose(1, 2), tags, reduction="none")
    params = list(model.parameters())
    loss = ((token_loss * mask).sum(1) / mask.sum(1)).mean()
    applied = torch.autograd.grad(loss, params, retain_graph=True)
    weights = mask / (mask.sum(1, keepdim=True) * len(mask))
    expected = torch.autograd.grad(token_loss, params, grad_outputs=weights, retain_graph=True)
    token_mean = torch.autograd.grad((token_loss * mask).sum() / mask.sum(), params)
    for a, e in zip(applied, expected, strict=True):
        torch.testing.assert_close(a, e)
    assert not all(torch.allclose(a, m) for a, m in zip(applied, token_mean, strict=True))


@pytest.mark.parametrize("how", ["", "lengths", "clamped"], ids=["mask-sum", "lengths", "clamped"])
def test_a_mean_of_sentence_means_is_judged_and_passes(how: str) -> None:
    """Read as the mean over the sentences: mean-vs-sum and short-last-batch are judged, and
    pass (before: every update unread, the run an error)."""
    report = _per_sentence(how)
    assert not report.error and not report.failures, str(report)
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert verdicts["mean-vs-sum"] == verdicts["short-last-batch"] == "pass", str(report)


@pytest.mark.parametrize("how", ["clamped", "over-kept"])
def test_sentences_of_no_token_count_in_a_mean_over_the_batch_or_not(how: str) -> None:
    """One sentence in 8 all padding, its count clamped at 1: `.mean()` counts it among the
    sentences, a sum over those that kept a token does not; each is a mean of its own, read
    so, and passes (review rv69's d20, d25: the first failed mean-vs-sum, read over the
    sentences that kept a token)."""
    report = _per_sentence(how, empty=True)
    assert not report.error and not report.failures, str(report)
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert verdicts["mean-vs-sum"] == "pass", str(report)


@pytest.mark.parametrize(
    ("mistake", "pitfall", "said"),
    [
        ("summed", "mean-vs-sum", "sums the loss over the update's rows or targets"),
        ("padded", "mean-vs-sum", "the mean over every element of their loss"),
        ("nominal", "short-last-batch", "a nominal batch size"),
    ],
)
def test_its_one_bug_twin_fails_by_name(mistake: str, pitfall: str, said: str) -> None:
    """A sum over the sentences, each sentence over the padded length (the mean over every
    element, padding too), and a nominal divisor on the short last batch, each named."""
    report = _per_sentence(mistake)
    assert [f.pitfall for f in report.failures] == [pitfall], str(report)
    assert said in report.failures[0].message, str(report)


def test_accumulated_sentence_means_over_unequal_windows_are_a_mean_of_means() -> None:
    """Two micro-batches a window, each's mean of sentence means halved: the last window holds
    16 and 10 sentences, weighed alike: a mean of micro-batch means, named."""
    report = _per_sentence(accumulate=2)
    assert [f.pitfall for f in report.failures] == ["micro-batch-accumulation"], str(report)
    assert "over counts [16, 10]" in report.failures[0].message


def test_a_per_sentence_divisor_that_is_no_count_of_its_tokens_stays_unread() -> None:
    """Each sentence over its count plus one weighs its tokens by a number of the code's: no
    mean of the kept, not read (an error: no update could be judged), as before."""
    report = _per_sentence("off-by-one")
    assert report.error and "no update could be judged" in report.error, str(report)
    assert not report.failures, str(report)
