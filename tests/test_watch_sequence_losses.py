"""A sequence model's loss taken at every time step and added up (a char-RNN's, a decoder's
teacher-forced steps): each step's loss is read, and one backward() reaches them all. Their
gradients are read in one pass of autograd a function and head (loss_gradients.take), not a
pass each through the steps below it, and the verdicts are those of the loss over the whole
sequence at once."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch
from linreg.kinds.watched.batch_values import shifted
from linreg.kinds.watched.graphs import Leaves, graph, leaves
from linreg.kinds.watched.loss_gradients import deferred

VOCAB, HIDDEN, STEPS = 12, 16, 20


def _next_token(form: str) -> None:
    """A GRU cell predicts each next token of 60 sequences of 20, in batches of 8 (the last
    of 4), Adam. form: each step's cross-entropy divided by the steps ("per step"), the whole
    sequence's at once ("flat"), each step's beside a squared error on a value head of its
    own ("two heads"), or a bug: each step's summed over the batch's rows ("summed"), each
    step's mean added up, never divided by the steps ("added")."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (60, STEPS + 1), generator=gen)
    data = TensorDataset(tokens[:, :-1], tokens[:, 1:])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embed, cell = nn.Embedding(VOCAB, 8), nn.GRUCell(8, HIDDEN)
        logits, value = nn.Linear(HIDDEN, VOCAB), nn.Linear(HIDDEN, 1)
    params = [p for m in (embed, cell, logits, value) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(2):
        for x, y in DataLoader(data, batch_size=8, shuffle=True, generator=gen):
            h = torch.zeros(len(x), HIDDEN)
            states, loss = [], torch.zeros(())
            for t in range(STEPS):
                h = cell(embed(x[:, t]), h)
                states.append(h)
                if form == "per step":
                    loss = loss + F.cross_entropy(logits(h), y[:, t]) / STEPS
                elif form == "added":
                    loss = loss + F.cross_entropy(logits(h), y[:, t])
                elif form == "summed":
                    loss = loss + F.cross_entropy(logits(h), y[:, t], reduction="sum") / STEPS
                elif form == "two heads":
                    fraction = y[:, t : t + 1].float() / VOCAB
                    step = F.cross_entropy(logits(h), y[:, t]) + F.mse_loss(value(h), fraction)
                    loss = loss + step / STEPS
            if form == "flat":
                out = logits(torch.stack(states, 1))
                loss = F.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("form", ["per step", "two heads"])
def test_a_loss_per_step_is_read_in_one_pass_a_backward_and_a_head(
    form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each backward() reaches 20 losses (40: two functions on two heads): their gradients are
    taken in one pass of autograd each function and head (20 or 40, one a loss, before: the
    watch of a sequence cost the square of its length)."""
    passes = []
    grad = torch.autograd.grad

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    with watch(steps=4) as reports:
        _next_token(form)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    assert len(passes) == 4 * (1 if form == "per step" else 2)


def test_a_loss_per_step_is_judged_as_the_whole_sequences_loss() -> None:
    """The mean of each step's mean is the sequence's mean: it passes as the flat loss does,
    on full batches and on the short last one; each step's loss summed over the rows fails
    mean-vs-sum (8 times the mean on a full batch, 4 on the last)."""
    for form in ("flat", "per step", "two heads"):
        with watch() as reports:
            _next_token(form)
        report = reports[0]
        assert report.ok and not report.error, f"{form}: {report}"
        assert "short-last-batch" in {r.pitfall for r in report.results if r.verdict == "pass"}, (
            str(report)
        )
    with watch() as reports:
        _next_token("summed")
    assert [r.pitfall for r in reports[0].failures] == ["mean-vs-sum"], str(reports[0])
    assert "applies 8 times the mean" in reports[0].failures[0].message


def test_each_steps_mean_added_up_undivided_fails_mean_vs_sum_naming_the_steps() -> None:
    """A decoder's 20 steps' means added up and never divided by the steps (the old
    seq2seq tutorials' `loss += criterion(...)`, on batches): 20 times the mean over the
    sequence's targets on every update, the short last batch's too. Before, that one
    constant was taken as the loss's own, and every property passed (review rv75's b07)."""
    with watch() as reports:
        _next_token("added")
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "adds up its 20 mean losses, one a step" in report.failures[0].message


@pytest.mark.parametrize("added", ["two views", "columns", "deep supervision"])
def test_means_added_on_one_target_or_on_columns_of_one_output_stay_the_losss_constant(
    added: str,
) -> None:
    """Two augmented views of each input, each view's mean on the same labels, added: one
    target twice; or each of 2 label columns' mean on its column of one head's output
    (`out[:, k]` on `y[:, k]`), added: one prediction's pieces; or one head's outputs at two
    depths (deep supervision) on the target and the target reshaped: the same elements.
    None is a sequence's steps, so the 2 stays the loss's own constant (review rv76's c31,
    c38 and c88: named steps, false alarms, before each step needed a prediction of its own
    and other elements of the target)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 6, generator=gen), torch.randn(60, 2, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch() as reports:
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen):
            if added == "two views":
                noisy = xb + 0.1 * torch.randn(xb.shape, generator=gen)
                loss = F.mse_loss(model(xb), yb) + F.mse_loss(model(noisy), yb)
            elif added == "columns":
                out = model(xb)
                loss = sum(F.mse_loss(out[:, k], yb[:, k]) for k in range(2))
            else:  # one head on two depths' features, the target once reshaped
                hidden = torch.relu(model[0](xb))
                shallow, deep = model[2](hidden), model[2](torch.relu(hidden))
                loss = F.mse_loss(shallow, yb) + F.mse_loss(deep.view(-1), yb.view(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    report = reports[0]
    assert report.ok and not report.error, str(report)
    assert "2 times the mean of its rows" in report.note, str(report)


def test_the_leaves_under_each_loss_are_the_whole_walks_and_separate_graphs_are_not_held() -> None:
    """graphs.Leaves gives each loss the leaves a whole walk of its graph gives (graphs.leaves),
    for losses a step of a sequence on two heads, past the first Leaves.MANY; an evaluation's
    losses after, each on a graph of its own, leave only the last one's nodes held."""
    torch.manual_seed(0)
    embed, cell = nn.Embedding(VOCAB, 4), nn.GRUCell(4, HIDDEN)
    logits, value, probe = nn.Linear(HIDDEN, VOCAB), nn.Linear(HIDDEN, 1), nn.Linear(3, HIDDEN)
    kept = Leaves()
    h = torch.zeros(2, HIDDEN)
    for _ in range(STEPS):
        h = cell(embed(torch.randint(0, VOCAB, (2,))), h)
        tokens = F.cross_entropy(logits(h), torch.randint(0, VOCAB, (2,)), reduction="none")
        guess = F.mse_loss(value(h), torch.randn(2, 1), reduction="none")
        for loss in (tokens, guess):
            assert set(map(id, kept(loss.grad_fn))) == set(map(id, leaves(loss.grad_fn)))
    assert kept.walks > Leaves.MANY
    for _ in range(5):
        loss = F.mse_loss(value(torch.relu(probe(torch.randn(2, 3)))), torch.randn(2, 1))
        assert set(map(id, kept(loss.grad_fn))) == set(map(id, leaves(loss.grad_fn)))
    assert set(kept.memo) <= graph([loss.grad_fn])


def test_a_loss_of_logits_larger_than_its_models_gradients_is_read_at_once() -> None:
    """Holding a loss's per-element loss till its backward() holds the watch's own call's
    saved tensors (a cross-entropy's log-probabilities, the logits' size): a vocabulary's
    logits on a small model would hold more than the gradients taken at once (code review
    cr44: 1.4 GB -> 2.0 GB); a small output on the same model is deferred."""
    embed, cell = nn.Embedding(20000, 16), nn.GRUCell(16, 16)
    params = [*embed.parameters(), *cell.parameters()]
    assert not deferred(torch.zeros(256, 20000), params)
    assert deferred(torch.zeros(4, 20), params)


def test_a_param_frozen_between_the_loss_and_its_backward_leaves_the_loss_read() -> None:
    """A GAN's generator loss, the discriminator frozen (requires_grad_(False)) after the loss
    and before its backward(): the gradients are taken by the params still trained, as the
    code's own backward() takes them (code review cr44: taking them by every param under the
    loss raised, and the loss was left unread: its sum over the rows went unnamed)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(60, 4))
    make, judge = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4)), nn.Linear(4, 1)
    make_step = torch.optim.Adam(make.parameters(), 1e-3)
    judge_step = torch.optim.Adam(judge.parameters(), 1e-3)
    with watch() as reports:
        for _ in range(2):
            for (x,) in DataLoader(data, batch_size=8, shuffle=True):
                fake = make(torch.randn(len(x), 2))
                real_loss = F.binary_cross_entropy_with_logits(judge(x), torch.ones(len(x), 1))
                fake_loss = F.binary_cross_entropy_with_logits(
                    judge(fake.detach()), torch.zeros(len(x), 1)
                )
                judge_step.zero_grad()
                ((real_loss + fake_loss) / 2).backward()
                judge_step.step()
                fooled = F.binary_cross_entropy_with_logits(
                    judge(fake), torch.ones(len(x), 1), reduction="sum"
                )
                judge.requires_grad_(False)
                make_step.zero_grad()
                fooled.backward()
                make_step.step()
                judge.requires_grad_(True)
    assert [r.pitfall for r in reports[0].failures] == ["mean-vs-sum"], str(reports[0])


def _two_offsets(skip: str) -> None:
    """A GRU language model of two heads, the next token's and the one after's, on 44
    sequences of 9 tokens in batches of 8 (the last of 4), AdamW: each head's cross-entropy
    on the batch's own tokens shifted in the loop (ids[:, 1:].reshape(-1): a copy, of no
    storage the batch's), the second's weighed 0.5; skip "sum": the second summed over its
    targets (a bug)."""
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(0, VOCAB, (44, 9), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embed, rnn = nn.Embedding(VOCAB, 16), nn.GRU(16, HIDDEN, batch_first=True)
        heads = nn.ModuleList(nn.Linear(HIDDEN, VOCAB) for _ in range(2))
    params = [p for m in (embed, rnn, heads) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(2):
        for ids in DataLoader(sequences, batch_size=8, shuffle=True, generator=gen):
            h, _ = rnn(embed(ids))
            losses = [
                F.cross_entropy(
                    head(h[:, :-k]).reshape(-1, VOCAB),
                    ids[:, k:].reshape(-1),
                    reduction=skip if k == 2 and skip else "mean",
                )
                for k, head in ((1, heads[0]), (2, heads[1]))
            ]
            optimizer.zero_grad()
            (losses[0] + 0.5 * losses[1]).backward()
            optimizer.step()


def test_two_heads_losses_on_the_batchs_tokens_shifted_by_the_loop_are_each_judged() -> None:
    """A target shifted and flattened by the loop is a copy, yet the batch's tokens
    (batch_values.shifted): each head's loss is a term on a fetched batch, judged (before, the
    two-head LM of code review cr52 was "none on targets of a batch the watch saw fetched",
    its weights not judged, and the summed twin passed the rest): the short last batch is
    judged, and the term summed over its targets fails mean-vs-sum."""
    with watch() as reports:
        _two_offsets("")
    report = reports[0]
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert report.ok and verdicts["short-last-batch"] == "pass", str(report)
    assert "none on targets of a batch" not in report.note, str(report)
    with watch() as reports:
        _two_offsets("sum")
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "its cross_entropy (head 2) term applies 28 times the mean" in str(report), report


def test_a_target_is_a_batchs_tokens_shifted_only_where_it_holds_two_or_more_of_each() -> None:
    """batch_values.shifted: a copy of each sample's tokens past the first (or before the last),
    flattened or not; never a float target (a GAN's labels of 0 beside binary images whose
    first pixel is 0) nor one integer a sample (a class label equal to each text's first
    token)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (8, 9), generator=gen)
    assert shifted(ids[:, 1:].reshape(-1), [ids]) and shifted(ids[:, :-2].contiguous(), [ids])
    assert not shifted(torch.randint(0, VOCAB, (8 * 8,), generator=gen), [ids])
    images = torch.zeros(8, 1, 4, 4)
    assert not shifted(torch.zeros(8), [images]) and not shifted(torch.zeros(8 * 15), [images])
    assert not shifted(ids[:, 0].clone(), [ids])
    masks = torch.zeros(8, 16, 16, dtype=torch.long)  # empty: their corners downsampled match
    assert not shifted(masks[:, :4, :4].reshape(-1), [masks.reshape(8, -1)])
