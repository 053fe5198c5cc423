"""A loss the code sums itself (reduction="sum" or "none") and divides by a count of its own is
the mean over that count: its targets, their class weights' sum (torch's own mean of a
class-weighted loss), or its batch's rows, each a sum over its elements (fairseq's
--sentence-avg). The count meant is read from the run; a nominal divisor on a short batch is
named against it, and a sum divided by nothing still fails mean-vs-sum."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from linreg.audit.report import Report
from linreg.audit.watcher import watch
from tests.test_watch import fetched_ahead

WEIGHTS = torch.tensor([1.0, 2.0, 0.5])


def _passed_with_a_short_update(report: Report) -> None:
    """Assert the report passed, its short last update judged (a nominal divisor would show)."""
    assert report.ok and not report.error, str(report)
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert verdicts["short-last-batch"] == verdicts["mean-vs-sum"] == "pass", str(report)


def _class_weighted(divide: str, ignored: bool = False, window: int = 1) -> Report:
    """A classifier of 3 unbalanced classes, weighted, over 90 rows in shuffled batches of 8
    (the last one of 2), its loss summed and divided as `divide` says, `window` batches a
    step (the last window short)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 6, generator=gen), torch.randint(0, 3, (90,), generator=gen)
    if ignored:
        y[torch.rand(90, generator=gen) < 0.2] = -100
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    sizes = [min(8, 90 - 8 * i) for i in range(len(loader))]
    with watch() as reports:
        for i, (xb, yb) in enumerate(loader):
            out, kept = model(xb), yb != -100
            summed = F.cross_entropy(out, yb, weight=WEIGHTS, reduction="sum")
            if divide == "targets":
                loss = summed / max(1, int(kept.sum()))
            elif divide == "module":
                loss = nn.CrossEntropyLoss(weight=WEIGHTS, reduction="sum")(out, yb) / len(yb)
            elif divide == "each":  # reduction="none", reduced by the code
                each = F.cross_entropy(out, yb, weight=WEIGHTS, reduction="none")
                loss = each.sum() / max(1, int(kept.sum()))
            elif divide == "weights":
                loss = summed / WEIGHTS[yb[kept]].sum()
            elif divide == "window":
                first = i - i % window
                loss = summed / sum(sizes[first : first + window])
            elif divide == "nominal":
                loss = summed / 8
            else:
                loss = summed
            loss.backward()
            if (i + 1) % window == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    return reports[0]


@pytest.mark.parametrize(
    ("divide", "ignored", "window"),
    [
        ("targets", False, 1),
        ("module", False, 1),
        ("each", False, 1),
        ("weights", False, 1),
        ("window", False, 2),
        ("targets", True, 1),
        ("weights", True, 1),
    ],
)
def test_a_class_weighted_sum_divided_by_its_targets_or_their_weights_passes(
    divide: str, ignored: bool, window: int
) -> None:
    """Correct, each a mean of its own: the weighted losses' mean over the targets (sum /
    len(y), a window's sum over its rows), or over their weights' sum (torch's own mean, by
    hand). Code review cr47: the targets' forms failed mean-vs-sum, read against the weights'
    sum alone (a factor that grows with the rows)."""
    _passed_with_a_short_update(_class_weighted(divide, ignored, window))


@pytest.mark.parametrize(
    ("divide", "pitfall"), [("nominal", "short-last-batch"), ("sum", "mean-vs-sum")]
)
def test_a_class_weighted_sum_divided_by_a_nominal_count_or_by_nothing_is_named(
    divide: str, pitfall: str
) -> None:
    """Its twins: / 8 on every batch, the last one of 2 rows (0.25 times its mean there);
    the sum divided by nothing (8 times the mean of a full batch)."""
    report = _class_weighted(divide)
    assert [r.pitfall for r in report.failures] == [pitfall], str(report)


PAD, VOCAB = 0, 20


def _sentences(
    normalize: str, window: int = 1, time_major: bool = False, prefetch: bool = False
) -> Report:
    """A word-level language model over 60 sentences of 3 to 11 tokens, padded to each batch's
    longest (8 a batch: the last of 4), in a fairseq criterion's style: the tokens' losses
    summed (padding ignored) and divided by the sample size, `window` batches a step; its
    batches (time steps, sentences) where time_major, as torchtext's were; fetched a batch
    ahead where prefetch (as timm's PrefetchLoader and apex's data_prefetcher fetch too)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 12, (60,), generator=gen).tolist()
    sentences = [torch.randint(1, VOCAB, (n,), generator=gen) for n in lengths]

    def collate(batch: list[torch.Tensor]) -> dict[str, object]:
        tokens = nn.utils.rnn.pad_sequence(batch, batch_first=not time_major, padding_value=PAD)
        if time_major:
            return {"net_input": tokens[:-1], "target": tokens[1:], "nsentences": len(batch)}
        return {"net_input": tokens[:, :-1], "target": tokens[:, 1:], "nsentences": len(batch)}

    with torch.random.fork_rng():
        torch.manual_seed(0)
        embed, rnn, out = (
            nn.Embedding(VOCAB, 16),
            nn.GRU(16, 16, batch_first=not time_major),
            nn.Linear(16, VOCAB),
        )
    params = [p for m in (embed, rnn, out) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loader = DataLoader(sentences, batch_size=8, shuffle=True, collate_fn=collate, generator=gen)
    sizes = [min(8, 60 - 8 * i) for i in range(len(loader))]
    with watch() as reports:
        for i, sample in enumerate(fetched_ahead(loader) if prefetch else loader):
            hidden, _ = rnn(embed(sample["net_input"]))
            target = sample["target"]
            summed = F.cross_entropy(
                out(hidden).reshape(-1, VOCAB),
                target.reshape(-1),
                ignore_index=PAD,
                reduction="sum",
            )
            first = i - i % window
            size = {
                "tokens": int((target != PAD).sum()),
                "sentences": sample["nsentences"],
                "window": sum(sizes[first : first + window]),
                "nominal": 8,
                "nothing": 1,
                "first-dim": target.size(0),  # a bug where time-major: its time steps
                # two objectives in turn, one over the sentences (odd batches: the short last
                # one too), one over the tokens; and the first's nominal twin
                "in-turn": sample["nsentences"] if i % 2 else int((target != PAD).sum()),
                "in-turn-nominal": 8 if i % 2 else int((target != PAD).sum()),
            }[normalize]
            (summed / size).backward()
            if (i + 1) % window == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    return reports[0]


@pytest.mark.parametrize(
    ("normalize", "window", "prefetch"),
    [("tokens", 1, False), ("sentences", 1, False), ("window", 2, False), ("sentences", 1, True)],
)
def test_a_sum_over_tokens_divided_by_its_tokens_or_its_sentences_passes(
    normalize: str, window: int, prefetch: bool
) -> None:
    """Correct, each a mean of its own: over the tokens, or (--sentence-avg) over the
    sentences of the batch or of an accumulation window, each sentence's tokens summed; from
    a loader that fetches a batch ahead too. Code review cr47: the sentences' form failed
    mean-vs-sum, its tokens a count that grows with the rows; cr48: each loss was read with
    its loader's latest batch's sentences, the next one's where fetched ahead."""
    report = _sentences(normalize, window, prefetch=prefetch)
    _passed_with_a_short_update(report)
    if normalize != "tokens":
        assert "a mean over their batch's samples" in report.note, report.note


@pytest.mark.parametrize(
    ("normalize", "pitfall"), [("nominal", "short-last-batch"), ("nothing", "mean-vs-sum")]
)
def test_a_sum_over_tokens_divided_by_a_nominal_count_or_by_nothing_is_named(
    normalize: str, pitfall: str
) -> None:
    """Its twins: the sentences' sum divided by the batch size asked for, 8, on the last batch
    of 4 too (half its mean there); the tokens' sum divided by nothing."""
    report = _sentences(normalize)
    assert [r.pitfall for r in report.failures] == [pitfall], str(report)


def test_two_objectives_in_turn_each_a_mean_over_a_count_of_its_own_pass() -> None:
    """Correct: the tokens' sum over the tokens on even batches, over the sentences on odd ones
    (the short last batch among them). Read over one count for the whole run (code review
    cr48's mixed.py), the half of the updates over the other failed mean-vs-sum."""
    report = _sentences("in-turn")
    _passed_with_a_short_update(report)
    assert "4 update(s) read as a mean over their batch's samples" in report.note, report.note


def test_its_twin_with_a_nominal_divisor_in_turn_fails_on_its_short_batch() -> None:
    """Its twin: the odd batches' sum divided by the batch size asked for, 8, so the last batch
    of 4 applies half its mean over the sentences, and no mean over any count of its own."""
    report = _sentences("in-turn-nominal")
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "update 8 of 8" in report.failures[0].message, str(report)


@pytest.mark.parametrize("divide", ["samples", "nominal"])
def test_a_nominal_divisor_equal_to_a_short_batchs_elements_is_still_named(divide: str) -> None:
    """A box regression, 4 coordinates a sample, its smooth-L1 summed and averaged over the
    samples (correct), or divided by the batch size asked for, 32, where the last batch holds
    8 samples: 32 elements, so it applies exactly torch's mean there by chance (code review
    cr52: read under torch's count on that update alone, ff2e13c passed it)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(72, 10, generator=gen), torch.randn(72, 4, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen)
    with watch() as reports:
        for xb, yb in loader:
            summed = F.smooth_l1_loss(model(xb), yb, reduction="sum")
            loss = summed / (len(xb) if divide == "samples" else 32)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    report = reports[0]
    if divide == "samples":
        _passed_with_a_short_update(report)
        return
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "update 3 of 3" in report.failures[0].message, str(report)
    assert "update(s) read as a mean" not in report.note, report.note


def test_a_time_major_sum_divided_by_its_time_steps_is_no_mean_over_the_sentences() -> None:
    """A bug: batches (time steps, sentences), the tokens' sum divided by the first dim,
    meant as the batch size: its time steps, some batches' as many as their sentences (code
    review cr48: read as a mean over each batch's first dim, it passed)."""
    report = _sentences("first-dim", time_major=True)
    assert "mean-vs-sum" in [r.pitfall for r in report.failures], str(report)
    assert "samples" not in report.note, report.note


@pytest.mark.parametrize("window", [1, 3])
def test_class_weighted_means_added_up_in_a_window_read_as_torchs_means(window: int) -> None:
    """A class-weighted sum divided by its weights' sum in each batch (torch's own mean, by
    hand), `window` batches a step: right alone, added up undivided over 3 (code review cr48:
    where no update was right under either count, their targets' was taken, and the
    undivided window matched no known mistake)."""
    report = _class_weighted("weights", window=window)
    if window == 1:
        _passed_with_a_short_update(report)
    else:
        failure = next(r for r in report.failures if r.pitfall == "mean-vs-sum")
        assert "without dividing" in failure.message, str(report)


class _Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows read as a stream: its sampler gives batch_size indices for the short last batch
    too."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(zip(self.x, self.y, strict=True))


@pytest.mark.parametrize("loader", ["stream", "persistent-cut-short"])
@pytest.mark.parametrize("nominal", [False, True])
def test_a_regression_summed_over_its_outputs_is_read_on_the_samples_its_batch_holds(
    loader: str, nominal: bool
) -> None:
    """A regression of 3 outputs, each row's squared errors summed and averaged over the
    batch's rows (correct), or divided by the batch size asked for, 8 (a bug on the short last
    batch of 4, named): from an IterableDataset, and from a loader whose persistent worker is reset
    for each epoch, the first epoch cut short after 3 batches. Code review cr49: each batch was
    given the samples its sampler asked for, the stream's short one 8, and after the cut the
    samples of batches asked ahead and never yielded: correct code named, the bug passed."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=gen), torch.randn(60, 3, generator=gen)
    if loader == "stream":
        batches = DataLoader(_Stream(x, y), batch_size=8)
    else:
        batches = DataLoader(
            TensorDataset(x, y), batch_size=8, num_workers=1, persistent_workers=True
        )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(steps=20) as reports:
        for epoch in range(3):
            for i, (xb, yb) in enumerate(batches):
                summed = F.mse_loss(model(xb), yb, reduction="sum")
                (summed / (8 if nominal else len(xb))).backward()
                optimizer.step()
                optimizer.zero_grad()
                if loader != "stream" and epoch == 0 and i == 2:
                    break
    report = reports[0]
    if nominal:  # (a stream's samples are not known: the sum read on its elements)
        named = "mean-vs-sum" if loader == "stream" else "short-last-batch"
        assert [r.pitfall for r in report.failures] == [named], str(report)
    else:
        _passed_with_a_short_update(report)


def test_a_sum_over_batches_made_ahead_a_sample_each_is_named() -> None:
    """A bug: a dataset of batches made ahead (bucketed offline), loaded a sample at a time and
    squeezed, its squared errors summed and divided by nothing. Each sample's sum is its mean
    over the one sample, a count that tells nothing (code review cr50: read as a mean over the
    samples, it passed)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=gen), torch.randn(60, 3, generator=gen)
    made = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 60, 8)]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch() as reports:
        for xb, yb in DataLoader(made, batch_size=1):
            F.mse_loss(model(xb.squeeze(0)), yb.squeeze(0), reduction="sum").backward()
            optimizer.step()
            optimizer.zero_grad()
    assert [r.pitfall for r in reports[0].failures] == ["mean-vs-sum"], str(reports[0])


class _Frames(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Utterances of 8 frames, 3 to 8 of them labelled (the rest -100), one unreadable where
    `broken`."""

    def __init__(self, broken: bool = True) -> None:
        self.broken = broken
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(60, 8, 3, generator=gen)
        self.y = torch.randint(0, 6, (60, 8), generator=gen)
        for i, n in enumerate(torch.randint(3, 9, (60,), generator=gen).tolist()):
            self.y[i, n:] = -100

    def __len__(self) -> int:
        return 60

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i == 3 and self.broken:
            raise OSError("a corrupt utterance")
        return self.x[i], self.y[i]


def test_a_batch_that_failed_to_load_lends_the_next_its_samples_never() -> None:
    """Correct: each frame's cross-entropy summed and divided by the batch's utterances, a
    batch that fails to load skipped by the code. Code review cr50: the failed batch's count
    stayed queued, each later batch read with the one before's, the short last one named."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch() as reports:
        batches = iter(DataLoader(_Frames(), batch_size=8))
        while True:
            try:
                xb, yb = next(batches)
            except OSError:
                continue
            except StopIteration:
                break
            summed = F.cross_entropy(model(xb).reshape(-1, 6), yb.reshape(-1), reduction="sum")
            (summed / len(xb)).backward()
            optimizer.step()
            optimizer.zero_grad()
    _passed_with_a_short_update(reports[0])


@dataclasses.dataclass
class _Utterances:
    """A batch as a collate that returns a dataclass gives it."""

    frames: torch.Tensor
    labels: torch.Tensor


@pytest.mark.parametrize("with_ids", [False, True])
def test_a_batch_collated_into_a_dataclass_is_read_on_its_samples(with_ids: bool) -> None:
    """Correct: each frame's cross-entropy summed and divided by the batch's utterances, each
    batch a dataclass, alone or beside the utterances' ids (code review cr50: its fields'
    tensors were not taken as the batch's, and the sum failed mean-vs-sum; cr51: nor inside a
    tuple)."""

    def collate(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> object:
        batch = _Utterances(*(torch.stack(column) for column in zip(*rows, strict=True)))
        return (batch, [f"utt{i}" for i in range(len(rows))]) if with_ids else batch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch() as reports:
        for fetched in DataLoader(_Frames(broken=False), batch_size=8, collate_fn=collate):
            batch = fetched[0] if with_ids else fetched
            logits = model(batch.frames).reshape(-1, 6)
            summed = F.cross_entropy(logits, batch.labels.reshape(-1), reduction="sum")
            (summed / len(batch.frames)).backward()
            optimizer.step()
            optimizer.zero_grad()
    _passed_with_a_short_update(reports[0])


def _tagged(divided_by: str) -> Report:
    """A tagger over 20 sentences of 2 to 8 tokens (padded with -100), batches of 4, 2 a
    window (the epoch's last alone), each batch's token mean divided by the window's tokens
    it holds ("tokens": right) or by the count 2 ("count": a mean of means, and on the last,
    lone batch a nominal count)."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 9, (20,), generator=gen).tolist()
    tokens = torch.full((20, 8), 0)
    tags = torch.full((20, 8), -100)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(1, 30, (n,), generator=gen)
        tags[i, :n] = tokens[i, :n] % 5
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embed, out = nn.Embedding(30, 8), nn.Linear(8, 5)
    optimizer = torch.optim.AdamW([*embed.parameters(), *out.parameters()], lr=3e-4)
    with watch() as reports:
        for _ in range(2):
            loader = DataLoader(
                TensorDataset(tokens, tags), batch_size=4, shuffle=True, generator=gen
            )
            batches = list(loader)
            for start in range(0, len(batches), 2):
                window = batches[start : start + 2]
                counted = sum(int((y != -100).sum()) for _, y in window)
                for x, y in window:
                    loss = F.cross_entropy(out(embed(x)).view(-1, 5), y.view(-1))
                    if divided_by == "count":
                        (loss / 2).backward()
                    else:
                        (loss * int((y != -100).sum()) / counted).backward()
                optimizer.step()
                optimizer.zero_grad()
    return reports[0]


def test_a_mean_of_token_means_names_its_short_windows_nominal_count() -> None:
    """No full window weighs its batches alike (their tokens differ), so none showed the
    window's micro-batches: the last, lone batch's 0.5 matched no known mistake (stop 63's
    hunt). It is the count 2 where the window took 1, and the full windows' mean of means
    fails too."""
    assert _tagged("tokens").ok
    report = _tagged("count")
    failures = {r.pitfall: r.message for r in report.failures}
    assert set(failures) == {"short-last-batch", "micro-batch-accumulation"}, str(report)
    assert failures["short-last-batch"].endswith(
        "applied 0.5 times the mean: it divides by a full update's 2 micro-batches where it "
        "took 1 (a nominal accumulation count)"
    ), str(report)


def test_elements_the_code_weighs_unlike_beside_a_mask_are_still_not_read() -> None:
    """A weight of the code's own on a reduction="none" loss's elements (here each label's
    column weighed 1, 2 and 3, beside a mask of ones) is not read, and no update is judged
    (never a pass)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 5, generator=gen), torch.randn(24, 3, generator=gen)
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    weights = torch.tensor([1.0, 2.0, 3.0])
    with watch() as reports:
        for _ in range(2):
            for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8):
                mask = (yb > -1).float()
                per = F.mse_loss(model(xb), yb, reduction="none")
                ((per * mask * weights).sum() / mask.sum()).backward()
                optimizer.step()
                optimizer.zero_grad()
    report = reports[0]
    assert not report.ok and report.error.startswith("no update could be judged"), str(report)
