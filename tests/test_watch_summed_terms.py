"""A term of a loss of several summed at 1 (reduction="sum", or the code's own `.sum()`,
weighed by no number on its way to backward()) applies its full count times its mean in every
full update: named mean-vs-sum on full batches alone. A sum the code divides by a count of its
own (positive anchors, rows) is that count's mean, even where the count is 1 in some update."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterable, Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch
from linreg.kinds.watched.ways import _scaled


def _detector(positives: float | None) -> None:
    """A one-stage detector's head over anchors (a row each, class 0 the background): the
    classes' cross-entropy mean, plus the positive anchors' box regression summed and divided
    by their number (at least 1: a batch of none regresses nothing), as RetinaNet and SSD
    normalize it; 96 anchors in batches of 8, a `positives` share of them positive (None: one
    in each batch, the first)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 10, generator=gen)
    drawn = torch.rand(96, generator=gen) < (positives or 0.0)
    kinds = (drawn if positives else torch.arange(96) % 8 == 0).long()
    kinds *= torch.randint(1, 3, (96,), generator=gen)
    anchors = TensorDataset(x, kinds, torch.randn(96, 4, generator=gen))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk, classify, regress = nn.Linear(10, 16), nn.Linear(16, 3), nn.Linear(16, 4)
    params = [p for m in (trunk, classify, regress) for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for _ in range(2):
        batches = DataLoader(anchors, batch_size=8, shuffle=bool(positives), generator=gen)
        for xb, kind, box in batches:
            h = torch.relu(trunk(xb))
            positive = kind > 0
            boxes = F.smooth_l1_loss(regress(h)[positive], box[positive], reduction="sum")
            loss = F.cross_entropy(classify(h), kind) + boxes / max(1, int(positive.sum()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("positives", [0.05, 0.12, 0.3, None])
def test_a_sum_divided_by_its_count_of_positives_is_their_mean_where_it_is_one(
    positives: float | None,
) -> None:
    """Correct: where one anchor is positive, its box loss is divided by 1, a sum at 1 in
    that update; the count is the code's, another in other updates (code review cr39: named
    a sum on the updates of one positive), or 1 in every one (code review cr40: named). A
    batch of no positive anchor regresses no element: a term of none, once a traceback
    (LinAlgError) in place of the report."""
    with watch(steps=12) as reports:
        _detector(positives)
    assert reports[0].ok and not reports[0].error, str(reports[0])


def _price_and_kind() -> tuple[
    torch.Generator, TensorDataset, tuple[nn.Linear, nn.Linear, nn.Linear], torch.optim.SGD
]:
    """48 rows of 6 features, each a price (3 times its first) and a kind (its second's
    sign); a trunk, a price head and a kind head; SGD over them; the generator that drew them,
    to shuffle the batches with."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=gen)
    data = TensorDataset(x, x[:, :1] * 3, (x[:, 1] > 0).long())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk, price, kind = nn.Linear(6, 12), nn.Linear(12, 1), nn.Linear(12, 2)
    params = [p for m in (trunk, price, kind) for p in m.parameters()]
    return gen, data, (trunk, price, kind), torch.optim.SGD(params, lr=0.02)


def _two_tasks(form: str, scale: float | None = None, scaled: str = "the loss") -> None:
    """A price regressed and a kind classified on one trunk, 48 rows in batches of 8 (full
    ones alone), the loss the two added. form: the price's squared error "mean", summed and
    "divided" by the batch's rows, its rows' sums "averaged" (.sum(1).mean()), the mean beside
    a "penalty" on the trunk's weights (.sum(dim=None)), or a bug: "summed"
    (reduction="sum"), "summed by hand" (reduction="none", then .sum()), "summed over its dims"
    (.sum(dim=(0, 1))), "summed, then squeezed" (keepdim=True) or "summed by rows"
    (.sum(1).sum(0)). scale: backward() through a GradScaler of that initial scale (CPU
    autocast's bfloat16 needs none; its scale is a power of two all the same); scaled: "the
    loss", "the terms stacked" (torch.stack([...]).sum()), "each term" (the two scaled
    products added, scaled one by one, in a nested list or drawn from a generator) or "one
    backward() a term" (both scaled at once, each product's backward() on its own)."""
    gen, data, (trunk, price, kind), optimizer = _price_and_kind()
    scaler = torch.amp.GradScaler("cpu", init_scale=scale or 1.0, enabled=scale is not None)
    for _ in range(2):
        for xb, yb, kb in DataLoader(data, batch_size=8, shuffle=True, generator=gen):
            h = torch.tanh(trunk(xb))
            if form == "mean":
                regression = F.mse_loss(price(h), yb)
            elif form == "divided":
                regression = F.mse_loss(price(h), yb, reduction="sum") / len(yb)
            elif form == "summed":
                regression = F.mse_loss(price(h), yb, reduction="sum")
            elif form == "penalty":
                decay = trunk.weight.pow(2).sum(dim=None)
                regression = F.mse_loss(price(h), yb) + 1e-4 * decay
            else:
                elements = F.mse_loss(price(h), yb, reduction="none")  # (8, 1)
                if form == "averaged":
                    regression = elements.sum(1).mean()
                elif form == "summed by hand":
                    regression = elements.sum()
                elif form == "summed over its dims":
                    regression = elements.sum(dim=(0, 1))
                elif form == "summed, then squeezed":
                    regression = elements.sum(dim=(0, 1), keepdim=True).squeeze()
                else:
                    regression = elements.sum(1).sum(0)
            classification = F.cross_entropy(kind(h), kb)
            optimizer.zero_grad()
            if scaled == "the loss":
                scaler.scale(regression + classification).backward()
            elif scaled == "the terms stacked":
                scaler.scale(torch.stack([regression, classification]).sum()).backward()
            elif scaled == "each term":
                (scaler.scale(regression) + scaler.scale(classification)).backward()
            elif scaled == "each term, in a nested list":
                (a,), b = scaler.scale([[regression], classification])
                (a + b).backward()
            elif scaled == "each term, from a generator":
                sum(scaler.scale(t for t in (regression, classification))).backward()
            else:
                first, second = scaler.scale([classification, regression])
                first.backward(retain_graph=True)
                second.backward()
            scaler.step(optimizer)
            scaler.update()


@pytest.mark.parametrize(
    ("scale", "scaled"),
    [
        (None, "the loss"),
        (2.0**12, "the loss"),
        (16.0, "the loss"),
        (None, "the terms stacked"),
        (16.0, "each term"),
        (16.0, "each term, in a nested list"),
        (16.0, "each term, from a generator"),
        (16.0, "one backward() a term"),
    ],
    ids=[
        "plain",
        "through-a-grad-scaler",
        "through-a-grad-scaler-at-16",
        "stacked",
        "each-term-through-a-grad-scaler-at-16",
        "each-term-in-a-nested-list-through-a-grad-scaler-at-16",
        "each-term-from-a-generator-through-a-grad-scaler-at-16",
        "a-backward-a-term-through-a-grad-scaler-at-16",
    ],
)
def test_a_term_summed_unweighted_fails_on_full_batches_by_function_or_by_hand(
    scale: float | None, scaled: str
) -> None:
    """Every batch full: the price's term summed applies 8 times its mean in every update,
    by its function's reduction or by the code's own .sum(), over all its dims at once (a
    reshape after) or its rows' sums summed, through a loss scaler too, on the loss, on each
    term, or on both at once with a backward() each (code review cr39: the scaler's scale at
    the root, and the .sum(), read as weights of the code's, and not named; cr40: a
    .sum(dim=...) and a scale below 1024, read so still; cr41: a scale on a term, or the
    second backward()'s; cr42: terms stacked, and scales on terms in a nested list or drawn
    from a generator); the mean, the sum divided by the rows and the mean of the rows' sums
    pass, and so does a penalty summed with dim=None beside the mean (cr41: a TypeError
    raised through the code's backward())."""
    for form in ("mean", "divided", "averaged", "penalty"):
        with watch(steps=10) as reports:
            _two_tasks(form, scale, scaled)
        assert reports[0].ok and not reports[0].error, f"{form}: {reports[0]}"
    bugs = ("summed", "summed by hand", "summed over its dims", "summed, then squeezed")
    for form in (*bugs, "summed by rows"):
        with watch(steps=10) as reports:
            _two_tasks(form, scale, scaled)
        report = reports[0]
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], f"{form}: {report}"
        assert "its mse_loss term (1 micro-batch(es), 8 counted) applied 8 times the mean" in (
            report.failures[0].message
        )


def _anchor_heads() -> tuple[tuple[nn.Linear, nn.Linear, nn.Linear], torch.optim.SGD]:
    """A detector's trunk over anchors of 10 features, its head of 2 classes (0 the
    background) and its head of 4 box coordinates, and SGD over them."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk, classify, regress = nn.Linear(10, 16), nn.Linear(16, 2), nn.Linear(16, 4)
    params = [p for m in (trunk, classify, regress) for p in m.parameters()]
    return (trunk, classify, regress), torch.optim.SGD(params, lr=0.01)


def _short_batch_of_no_positive(nominal: bool) -> None:
    """A detector's head as in _detector, over 92 anchors in batches of 8, in order: the last
    batch holds 4 anchors, none positive (its box term sums no element). Its classification
    term the mean, or (nominal) summed and divided by the batch size the code was given."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(92, 10, generator=gen)
    kinds = ((torch.arange(92) % 4 == 0) & (torch.arange(92) < 88)).long()
    anchors = TensorDataset(x, kinds, torch.randn(92, 4, generator=gen))
    (trunk, classify, regress), optimizer = _anchor_heads()
    batch_size = 8
    for _ in range(2):
        for xb, kind, box in DataLoader(anchors, batch_size=batch_size):
            h = torch.relu(trunk(xb))
            positive = kind > 0
            boxes = F.smooth_l1_loss(regress(h)[positive], box[positive], reduction="sum")
            if nominal:
                classes = F.cross_entropy(classify(h), kind, reduction="sum") / batch_size
            else:
                classes = F.cross_entropy(classify(h), kind)
            loss = classes + boxes / max(1, int(positive.sum()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def test_an_update_whose_term_sums_no_element_is_read_on_its_other_terms() -> None:
    """The short last batch has no positive anchor: its box term is a sum of no element,
    which applies nothing. The update is read on its classification term (once, the whole
    update was left unread: a nominal divisor on that short batch went unseen, code review
    cr40)."""
    with watch(steps=14) as reports:
        _short_batch_of_no_positive(nominal=False)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch(steps=14) as reports:
        _short_batch_of_no_positive(nominal=True)
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)


def test_a_division_by_a_count_of_none_is_no_traceback_through_the_codes_backward() -> None:
    """A detector's box sum divided by its count of positive anchors as a tensor, unclamped,
    under a GradScaler: a batch of none is 0 / 0, a NaN loss whose step the scaler skips. The
    division by 0 on the loss's way to backward() raised ZeroDivisionError through the code's
    backward() (code review cr42); it is no weight the watch can read, and the run goes on."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 10, generator=gen)
    kinds = (torch.arange(96) % 16 == 0).long()  # every other batch of 8: none positive
    anchors = TensorDataset(x, kinds, torch.randn(96, 4, generator=gen))
    (trunk, classify, regress), optimizer = _anchor_heads()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with watch(steps=6) as reports:
        for xb, kind, box in DataLoader(anchors, batch_size=8):
            h = torch.relu(trunk(xb))
            positive = kind > 0
            boxes = F.smooth_l1_loss(regress(h)[positive], box[positive], reduction="sum")
            loss = F.cross_entropy(classify(h), kind) + boxes / positive.sum()
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    assert reports[0].ok and not reports[0].error, str(reports[0])


def test_a_scaled_loss_never_backwarded_keeps_no_graph_alive() -> None:
    """A validation pass with grad on scales each batch's loss, written by hand, and never
    calls backward(): the watch holds none of those graphs (code review cr42: it held each
    scaled product's node, and so every activation below it, until the next update)."""
    gen = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen))
    held_out = TensorDataset(torch.randn(64, 6, generator=gen), torch.randn(64, 1, generator=gen))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    alive: list[weakref.ref[torch.Tensor]] = []
    with watch(steps=2) as reports:
        for xb, yb in DataLoader(train, batch_size=8):
            optimizer.zero_grad()
            scaler.scale(F.mse_loss(model(xb), yb)).backward()
            scaler.step(optimizer)
            scaler.update()
            for xv, yv in DataLoader(held_out, batch_size=16):  # grad left on
                h = model[1](model[0](xv))
                alive.append(weakref.ref(h))
                scaler.scale(((model[2](h) - yv) ** 2).mean())
                del h
            gc.collect()
            assert not [r for r in alive if r() is not None]
    assert reports[0].ok and not reports[0].error, str(reports[0])


def _ssd(positives: list[int]) -> None:
    """A detector's two terms, each summed and divided by the batch's positive anchors
    (max(1, num_pos): SSD's, RetinaNet's normalization), 8 anchors a batch, in order,
    `positives[i]` of batch i positive (the last batch 4 anchors)."""
    n = 8 * (len(positives) - 1) + 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=gen)
    kinds = torch.zeros(n, dtype=torch.long)
    for i, count in enumerate(positives):
        kinds[i * 8 : i * 8 + count] = 1
    anchors = TensorDataset(x, kinds, torch.randn(n, 4, generator=gen))
    (trunk, classify, regress), optimizer = _anchor_heads()
    for xb, kind, box in DataLoader(anchors, batch_size=8):
        h = torch.relu(trunk(xb))
        positive = kind > 0
        num_pos = max(1, int(positive.sum()))
        classes = F.cross_entropy(classify(h), kind, reduction="sum") / num_pos
        boxes = F.smooth_l1_loss(regress(h)[positive], box[positive], reduction="sum") / num_pos
        optimizer.zero_grad()
        (classes + boxes).backward()
        optimizer.step()


@pytest.mark.parametrize(
    "positives",
    [
        [1, 2, 3, 2, 2, 1, 2, 3, 2, 2, 1, 2, 0],
        [0, 2, 3, 2, 2, 1, 2, 3, 2, 2, 1, 2, 1],
        [1, 2, 3, 2, 2, 1, 2, 3, 2, 2, 1, 2, 1],
    ],
    ids=["last-batch-none-positive", "first-none", "last-one"],
)
def test_terms_divided_by_a_count_of_the_codes_that_changes_are_not_named(
    positives: list[int],
) -> None:
    """Both terms divided by the batch's positive anchors: each full update weighs the
    classes' term by count / num_pos, its own. A shorter update is not read against the first
    full one's scale (code review cr43: where its num_pos was 1, a short last batch of none
    positive, or of one, grew with the rows: mean-vs-sum)."""
    with watch(steps=16) as reports:
        _ssd(positives)
    assert reports[0].ok and not reports[0].error, str(reports[0])


def _semi_supervised(
    unlabelled: Iterable[int],
    batches: int = 12,
    nominal: bool = False,
    per_window: bool = False,
) -> None:
    """Windows of 2 batches of 8: a regression's mean beside a classification over the
    labelled rows (half of each batch's), each micro-batch's loss divided by the batches its
    window holds (nominal: by 2 in the last too, where it holds 1); the classification each
    micro-batch's mean over its labelled (sum / max(1, labelled)), or per_window: its sum over
    the window's labelled; the batches `unlabelled` hold no label (-100 throughout)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8 * batches, 6, generator=gen)
    labels = (x[:, 1] > 0).long()
    labels[torch.arange(8 * batches) % 2 == 1] = -100
    for b in unlabelled:
        labels[8 * b : 8 * b + 8] = -100
    data = iter(DataLoader(TensorDataset(x, x[:, :1] * 2, labels), batch_size=8))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk, value, kind = nn.Linear(6, 16), nn.Linear(16, 1), nn.Linear(16, 2)
    params = [p for m in (trunk, value, kind) for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    for start in range(0, batches, 2):
        window = [next(data) for _ in range(min(2, batches - start))]
        held = 2 if nominal else len(window)
        in_window = max(1, sum(int((lb != -100).sum()) for _, _, lb in window))
        for xb, yb, lb in window:
            h = torch.relu(trunk(xb))
            own = max(1, int((lb != -100).sum())) * held
            aux = F.cross_entropy(kind(h), lb, reduction="sum") / (in_window if per_window else own)
            (F.mse_loss(value(h), yb) / held + aux).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_a_mean_of_micro_batch_means_beside_a_micro_batch_of_no_label_is_named() -> None:
    """One batch's labels all ignored: its window's classification, each micro-batch's mean
    divided by the window's 2 micro-batches, applies the other's rows at half their mean (a
    mean of micro-batch means, one of none: named as the divisor it is, 2 where the term held
    1 micro-batch); divided by the window's labelled count, it passes (code review cr45:
    with that micro-batch's term left out, every window went unread)."""
    with watch() as reports:
        _semi_supervised([3])
    assert [r.pitfall for r in reports[0].failures] == ["short-last-batch"], str(reports[0])
    with watch() as reports:
        _semi_supervised([3], per_window=True)
    report = reports[0]
    assert report.ok and not report.error, str(report)
    assert "do not explain" not in str(report), str(report)


def test_a_nominal_divisor_beside_a_term_unlabelled_in_part_of_each_window_is_named() -> None:
    """Each window's first batch unlabelled, and 13 batches: the last window holds one,
    divided by the nominal 2 (a bug), or by the 1 it holds. The classification term is read
    in no window, the regression in each, and its last window's nominal divisor is named
    (code review cr45: every window was left unread, and the bug passed)."""
    with watch() as reports:
        _semi_supervised(range(0, 12, 2), batches=13)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch() as reports:
        _semi_supervised(range(0, 12, 2), batches=13, nominal=True)
    assert [r.pitfall for r in reports[0].failures] == ["short-last-batch"], str(reports[0])


@pytest.mark.parametrize(
    ("labelled", "rows"),
    [
        ([4, 4, 4, 2, 4, 3, 4, 4, 4, 4, 4, 4, 4, 4], [8] * 13 + [4]),
        ([4, 4, 4, 2, 4, 3, 4, 4, 4, 4, 4, 4, 4, 3], [8] * 13 + [4]),
        ([4, 3, 5, 2, 6, 1, 7, 4], [8] * 7 + [4]),
        ([2, 5, 5, 3, 5, 2, 2, 6, 8, 2, 6, 4, 6, 5, 4, 5], [9, 9, 6, 8, 10, 9, 9, 8] * 2),
    ],
    ids=["last-of-a-full-count", "last-of-3", "half-of-a-full-count", "batches-of-6-to-10"],
)
def test_a_sum_over_targets_divided_by_the_rows_is_named_whatever_the_rows(
    labelled: list[int], rows: list[int]
) -> None:
    """A second head's classification over each batch's labelled rows, summed and divided by
    the batch's rows, not its labelled (a bug: a sum over its targets). Full updates (of the
    most common labelled count) may differ in rows, so in scale: a short last batch of a full
    count, half the full ones of another size, batches of 6 to 10 rows; a count of the code's
    that changes would look so (code review cr45, cr46: the term was taken for the code's
    changing coefficient, and the sum passed). Divided by its labelled, it passes."""
    n = sum(rows)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=gen)
    first, second = (x[:, 0] > 0).long(), torch.full((n,), -100)
    starts = [sum(rows[:i]) for i in range(len(rows))]
    for start, count in zip(starts, labelled, strict=True):
        second[start : start + count] = (x[start : start + count, 1] > 0).long()
    batches = [list(range(start, start + r)) for start, r in zip(starts, rows, strict=True)]
    for bug in (True, False):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            trunk, one, two = nn.Linear(6, 16), nn.Linear(16, 2), nn.Linear(16, 2)
        params = [p for m in (trunk, one, two) for p in m.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.01)
        with watch(steps=len(rows)) as reports:
            data = TensorDataset(x, first, second)
            for xb, ya, yb in DataLoader(data, batch_sampler=batches):
                h = torch.relu(trunk(xb))
                second_sum = F.cross_entropy(two(h), yb, reduction="sum")
                by = len(yb) if bug else max(1, int((yb != -100).sum()))
                loss = F.cross_entropy(one(h), ya) + second_sum / by
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        report = reports[0]
        if bug:
            assert report.failures, str(report)
        else:
            assert report.ok and not report.error, str(report)


def test_a_zero_grad_before_the_step_is_named_where_every_read_target_is_ignored() -> None:
    """Every label ignored, beside a reconstruction written by hand that the watch does not
    read: zero_grad() between backward() and step() leaves nothing to apply of what backward()
    left (code review cr45: an update of ignored targets alone was let off non-leaf-params)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=gen)
    labels = torch.full((48,), -100)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encode, decode, classify = nn.Linear(6, 4), nn.Linear(4, 6), nn.Linear(4, 3)
    params = [p for m in (encode, decode, classify) for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    with watch() as reports:
        for xb, yb in DataLoader(TensorDataset(x, labels), batch_size=8):
            h = torch.tanh(encode(xb))
            rebuilt = ((decode(h) - xb) ** 2).mean()
            loss = rebuilt + torch.nan_to_num(F.cross_entropy(classify(h), yb))
            loss.backward()
            optimizer.zero_grad()
            optimizer.step()
    assert [r.pitfall for r in reports[0].failures] == ["non-leaf-params"], str(reports[0])


@pytest.mark.parametrize("shape", ["a generator", "a list of a generator"])
def test_a_grad_scalers_scale_on_terms_drawn_from_a_generator_is_no_weight(shape: str) -> None:
    """Each batch's loss, its price term summed (the bug), scaled by a GradScaler at 16 as a
    generator draws it, across updates, or inside a list (code review cr43: the scale noted in
    the first update's set alone, and a generator in a list not drawn through the watch)."""
    gen, data, (trunk, price, kind), optimizer = _price_and_kind()
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)

    def losses(batches: DataLoader[tuple[torch.Tensor, ...]]) -> Iterator[torch.Tensor]:
        for xb, yb, kb in batches:
            h = torch.tanh(trunk(xb))
            yield F.mse_loss(price(h), yb, reduction="sum") + F.cross_entropy(kind(h), kb)

    with watch(steps=6) as reports:
        batches = DataLoader(data, batch_size=8, generator=gen, shuffle=True)
        if shape == "a generator":
            scaled: Iterable[torch.Tensor] = scaler.scale(losses(batches))
        else:
            (scaled,) = scaler.scale([losses(batches)])
        for loss in scaled:
            optimizer.zero_grad()
            loss.backward()
            scaler.step(optimizer)
            scaler.update()
    assert [r.pitfall for r in reports[0].failures] == ["mean-vs-sum"], str(reports[0])


def test_a_storage_noted_for_a_scale_holds_the_scale_only_at_its_value() -> None:
    """A GradScaler's scale is known by its storage and value: a storage freed and reused by
    a number of the code's (1/16 where a scale copy of 16 was, seen under jemalloc, code
    review cr43) is that number, a weight."""
    x = torch.ones(3, requires_grad=True)
    weight = torch.tensor(0.0625)
    node = ((x * 2).sum() * weight).grad_fn
    address = weight.untyped_storage().data_ptr()
    assert not _scaled(node, {address: 16.0})
    assert _scaled(node, {address: 0.0625})


def test_an_update_whose_every_target_is_ignored_has_nothing_to_apply() -> None:
    """Token classification, a third of the labels ignored (-100) and one batch's all: its
    loss, the function's mean made 0 where it counts none (nan_to_num), gives a gradient of 0,
    which is all there is to apply (code review cr43: non-leaf-params named it 'no gradient
    to apply')."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=gen)
    labels = (x[:, 0] > 0).long()
    labels[torch.rand(96, generator=gen) < 0.3] = -100
    labels[24:32] = -100
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch() as reports:
        for xb, yb in DataLoader(TensorDataset(x, labels), batch_size=8):
            loss = torch.nan_to_num(F.cross_entropy(model(xb), yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert reports[0].ok and not reports[0].error, str(reports[0])


def _anchors(
    positives: list[int], last: int = 24
) -> tuple[TensorDataset, tuple[nn.Linear, nn.Linear, nn.Linear], torch.optim.Optimizer]:
    """Batches of 24 anchors in order (the last of `last`), the first `positives[i]` of batch i
    positive, each with a box of 2; a trunk, a classifier and a regressor under one SGD."""
    n = 24 * (len(positives) - 1) + last
    gen = torch.Generator().manual_seed(0)
    x, boxes = torch.randn(n, 10, generator=gen), torch.randn(n, 2, generator=gen)
    labels = torch.zeros(n)
    for i, count in enumerate(positives):
        labels[i * 24 : i * 24 + count] = 1.0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        heads = nn.Linear(10, 16), nn.Linear(16, 1), nn.Linear(16, 2)
    params = [p for m in heads for p in m.parameters()]
    return TensorDataset(x, labels, boxes), heads, torch.optim.SGD(params, lr=0.05)


@pytest.mark.parametrize(
    "divisor, failed",
    [
        ("positives", []),  # RetinaNet's: the sum over the batch's positives, at least 1
        ("none", ["mean-vs-sum"]),  # the sum undivided
        ("nominal", ["short-last-batch"]),  # the batch size the code was given
    ],
)
def test_a_binary_term_summed_over_rare_positives_beside_a_regression_mean(
    divisor: str, failed: list[str]
) -> None:
    """A binary classification summed and divided by the batch's positives (clamped at 1)
    beside a regression's mean, one backward() of both: the classification term is read as the
    mean over the positives, as a lone such loss is, where batches of 2 or 3 positives tell
    it from the sum (review rv69's a10: every full update failed mean-vs-sum, 48 times the
    mean); the sum undivided and a nominal divisor still fail. 9 batches of 24 in order, the
    last of 12, holding 0, 1, 2, 1, 0, 3, 1, 0 and 1 positives."""
    data, (trunk, classify, regress), optimizer = _anchors([0, 1, 2, 1, 0, 3, 1, 0, 1], 12)
    with watch() as reports:
        for xb, yb, bb in DataLoader(data, batch_size=24):
            h = torch.relu(trunk(xb))
            summed = F.binary_cross_entropy_with_logits(classify(h)[:, 0], yb, reduction="sum")
            by = {"positives": yb.sum().clamp(min=1), "none": 1.0, "nominal": 24.0}[divisor]
            optimizer.zero_grad()
            (summed / by + F.smooth_l1_loss(regress(h), bb)).backward()
            optimizer.step()
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == failed, str(report)


@pytest.mark.parametrize("over_every_element, failed", [(False, []), (True, ["mean-vs-sum"])])
def test_a_masked_term_over_every_element_beside_another_still_fails(
    over_every_element: bool, failed: list[str]
) -> None:
    """A regression masked by the batch's known targets beside a classification's mean: the
    mean over every element, those the mask drops too, is a known mistake's count, never one
    a term is read under (de03c13 read it so, and the mistake passed)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 6, generator=gen), torch.randn(100, 4, generator=gen)
    known = (torch.rand(100, 4, generator=gen) > 0.3).float()
    known[:, 0] = 1.0
    classes = torch.randint(0, 3, (100,), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        body, reg, cls = nn.Linear(6, 16), nn.Linear(16, 4), nn.Linear(16, 3)
    optimizer = torch.optim.SGD([*body.parameters(), *reg.parameters(), *cls.parameters()], lr=0.05)
    data = TensorDataset(x, y, known, classes)
    with watch() as reports:
        for xb, yb, mb, cb in DataLoader(data, batch_size=16):
            h = torch.relu(body(xb))
            l = F.mse_loss(reg(h), yb, reduction="none") * mb
            masked = l.mean() if over_every_element else l.sum() / mb.sum()
            optimizer.zero_grad()
            (masked + F.cross_entropy(cls(h), cb)).backward()
            optimizer.step()
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == failed, str(report)


@pytest.mark.parametrize(
    "each_own, zeroed, failed",
    [(False, True, []), (True, True, []), (True, False, ["grad-zeroing"])],
)
def test_a_binary_term_over_positives_accumulated_per_micro_batch_is_not_judged_as_alone(
    each_own: bool, zeroed: bool, failed: list[str]
) -> None:
    """Windows of 2 micro-batches, each a binary classification summed over its anchors beside
    a regression's mean: divided by the window's positives, the window's mean (passes); each
    divided by its own positives and by 2 (the recipe detectors accumulate with), a coefficient
    of the code's per micro-batch, not judged, as that loss alone is
    (test_watch_changing_within_windows.py): review rv73's a07b failed micro-batch-accumulation
    as "no known mistake", its weights read over every anchor. 8 batches of 24 in order
    holding 3, 1, 2, 4, 1, 1, 5 and 2 positives. Its twin never zeroed still fails by name."""
    data, (trunk, classify, regress), optimizer = _anchors([3, 1, 2, 4, 1, 1, 5, 2])
    batches = iter(DataLoader(data, batch_size=24))
    with watch() as reports:
        for window in zip(batches, batches, strict=True):
            in_window = sum(yb.sum() for _, yb, _ in window).clamp(min=1)
            if zeroed:
                optimizer.zero_grad()
            for xb, yb, bb in window:
                h = torch.relu(trunk(xb))
                summed = F.binary_cross_entropy_with_logits(classify(h)[:, 0], yb, reduction="sum")
                by = 2 * yb.sum().clamp(min=1) if each_own else in_window
                (summed / by + F.smooth_l1_loss(regress(h), bb) / 2).backward()
            optimizer.step()
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == failed, str(report)
    accumulation = next(r for r in report.results if r.pitfall == "micro-batch-accumulation")
    if each_own and zeroed:
        assert accumulation.verdict == "skip", str(report)
        assert "a coefficient of the code's per micro-batch" in accumulation.message
