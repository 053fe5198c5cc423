"""A loss whose targets are rows a mask picked of a fetched batch (a detector's boxes at its
positive anchors, `boxes[positive]`, beside a classification over every anchor) is a term of
the batch's: its weight is judged, under the count its code divides by (the elements, the
positive anchors, or the batch's images), where before it was a term "on targets of no batch"
whose weight nothing judged, and its sum left undivided passed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.report import Report
from linreg.audit.watcher import watch
from linreg.kinds.watched.batch_values import Picked, picked

IMAGES, ANCHORS, BATCH = 203, 8, 32  # 7 batches an epoch, the last of 11 images


def _failures(reports: list[Report]) -> list[str]:
    """Return the pitfalls a watched run failed, where it judged (no error)."""
    assert not reports[0].error, str(reports[0])
    return [r.pitfall for r in reports[0].failures]


def _detector(boxes_by: str, stored: torch.dtype = torch.float32) -> list[str]:
    """Train a detector's two heads over 8 anchors an image, one in ten positive: the
    anchors' binary cross-entropy mean, plus the positive anchors' box regression reduced as
    `boxes_by` says, its boxes stored in `stored` (float64: collated from numpy's arrays)
    and cast to the model's float32 by the code; return the pitfalls the watch failed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(IMAGES, 10, generator=gen)
    labels = (torch.rand(IMAGES, ANCHORS, generator=gen) < 0.1).float()
    boxes = torch.randn(IMAGES, ANCHORS, 4, generator=gen).to(stored)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk, classify, regress = nn.Linear(10, 32), nn.Linear(32, ANCHORS), nn.Linear(32, 32)
    params = [p for m in (trunk, classify, regress) for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    data = TensorDataset(x, labels, boxes)
    with watch() as reports:
        for _ in range(2):
            for xb, yb, bb in DataLoader(data, batch_size=BATCH, shuffle=True, generator=gen):
                bb = bb.float()
                h = torch.relu(trunk(xb))
                predicted = regress(h).view(-1, ANCHORS, 4)
                positive = yb.bool()
                summed = F.smooth_l1_loss(predicted[positive], bb[positive], reduction="sum")
                looped = sum(  # (a loss per image added up: each image's own positives)
                    F.smooth_l1_loss(p[k], b[k], reduction="sum")
                    for p, b, k in zip(predicted, bb, positive, strict=True)
                    if k.any()
                )
                flat = positive.unsqueeze(-1).expand_as(bb)  # (masked_select's: each element)
                selected = F.smooth_l1_loss(
                    predicted.masked_select(flat), bb.masked_select(flat), reduction="sum"
                )
                box = {
                    "selected per positive": selected / positive.sum().clamp(min=1),
                    "selected sum": selected,
                    "looped per image": looped / len(xb),
                    "mean": F.smooth_l1_loss(predicted[positive], bb[positive]),
                    "per positive": summed / positive.sum().clamp(min=1),
                    "per image": summed / len(xb),
                    "sum": summed,
                    "nominal": summed / BATCH,
                }[boxes_by]
                loss = F.binary_cross_entropy_with_logits(classify(h), yb) + box
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return _failures(reports)


@pytest.mark.parametrize("boxes_by", ["mean", "per positive", "per image", "looped per image"])
def test_a_box_term_at_the_positive_anchors_passes_averaged_as_detectors_do(
    boxes_by: str,
) -> None:
    """Correct: the positives' elements' mean, their sum over the positives (RetinaNet's
    num_pos), or over the batch's images (each image's boxes summed; or a loss per image
    added up, each call on the batch's rows: their images counted once, not once a call, as
    a fresh review found them, a false alarm)."""
    assert _detector(boxes_by) == []


def test_a_box_term_at_the_positive_anchors_summed_undivided_fails_mean_vs_sum() -> None:
    """Its sum undivided grows with the batch (review rv73's a08: "not judged" before, its
    targets of no batch the watch had seen fetched)."""
    assert _detector("sum") == ["mean-vs-sum"]


@pytest.mark.parametrize("boxes_by", ["per positive", "sum"])
def test_a_box_term_on_boxes_stored_in_float64_is_judged_as_on_float32s(boxes_by: str) -> None:
    """Boxes collated from numpy's float64 arrays, cast by the code (`bb.float()`) before the
    mask picks them: their rows are the fetched tensor's, rounded as the cast rounds them; the
    sum undivided fails as on float32 boxes (review rv74: a miss, not judged)."""
    assert _detector(boxes_by, torch.float64) == ([] if boxes_by != "sum" else ["mean-vs-sum"])


@pytest.mark.parametrize("boxes_by", ["selected per positive", "selected sum"])
def test_a_box_term_on_boxes_taken_by_masked_select_is_judged_as_on_rows_picked(
    boxes_by: str,
) -> None:
    """`masked_select` with the positives' mask over each box's 4 values flattens the rows a
    mask picked, in their order: their sum over the positives passes, undivided it fails as
    on rows picked (review rv74: a miss, not judged)."""
    assert _detector(boxes_by) == ([] if boxes_by != "selected sum" else ["mean-vs-sum"])


def test_a_box_term_divided_by_a_nominal_batch_fails_short_last_batch_alone() -> None:
    """Each image's boxes summed, divided by the full batch's 32 images: the mean over the
    images on a full batch, a nominal divisor on the short last one (11 images)."""
    assert _detector("nominal") == ["short-last-batch"]


def _rows(found: Picked | None, fetched: torch.Tensor) -> int | None:
    """Return the rows picked where they were picked of that fetched tensor, else None."""
    return found.rows if found is not None and found.fetched is fetched else None


def test_rows_a_mask_picked_of_a_fetched_tensor_are_found_in_order_alone() -> None:
    """The rows a mask picked, in their order, are the fetched tensor's, flattened by
    masked_select too; rows that are not (a teacher's boxes, the picked rows out of order),
    labels of one element each (too easily one of another's; values, most distinct, are
    told) and a row equal to another of the batch that breaks their order
    (a background's zeros) are not; rows equal to one another (an object's anchors) are taken
    in turn. Telling them draws nothing from torch's global generator."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.randn(4, 8, 4, generator=gen)
    mask = torch.rand(4, 8, generator=gen) < 0.3
    chosen = boxes[mask]
    assert len(chosen) >= 2
    state = torch.random.get_rng_state()
    assert _rows(picked(chosen, [torch.zeros(3), boxes]), boxes) == len(chosen)
    assert torch.equal(torch.random.get_rng_state(), state)  # (the code's stream, untouched)
    assert picked(chosen.flip(0), [boxes]) is None
    assert picked(torch.randn(chosen.shape, generator=gen), [boxes]) is None
    labels = torch.randint(0, 3, (4, 8), generator=gen)  # a label an anchor: none told
    assert picked(labels[mask].unsqueeze(1), [labels.unsqueeze(-1)]) is None
    assert picked(labels[mask], [labels]) is None
    values = boxes[..., 0]  # a value an anchor (a depth a pixel): told, one row each
    column = values.unsqueeze(-1)
    assert _rows(picked(values[mask].unsqueeze(1), [column]), column) == len(chosen)
    assert _rows(picked(values[mask], [values]), values) == len(chosen)
    flat = mask.unsqueeze(-1).expand_as(boxes)  # masked_select's: each box's values
    assert _rows(picked(boxes.masked_select(flat), [boxes]), boxes) == len(chosen)
    shared = boxes.clone()  # the anchors of one object, its box each: taken in turn
    first, *_, last = mask.nonzero().tolist()
    shared[tuple(last)] = shared[tuple(first)]
    assert _rows(picked(shared[mask], [shared]), shared) == len(chosen)
    zeros = boxes.clone()
    zeros[~mask] = 0.0
    zeros[tuple(last)] = 0.0  # a picked row equal to a background's before the others picked
    assert not mask[0, 0] and picked(zeros[mask], [zeros]) is None


@pytest.mark.parametrize("function", ["l1_loss", "cross_entropy"])
@pytest.mark.parametrize("divided", [True, False])
def test_one_function_on_two_loaders_batches_reduced_unlike_is_a_term_each(
    function: str, divided: bool
) -> None:
    """Semi-supervised (FixMatch's normalization): a labelled batch's mean, plus, on a second
    loader's batch, the loss at its confident stored pseudo-labels summed and divided by that
    batch's rows. One function's calls on two datasets' batches, reduced unlike, are a term
    each: the second read over its batch's samples, passes (review rv74's c44 and c60, a
    false alarm and an error: both calls one term, its count the confident rows' changing);
    left undivided, it fails mean-vs-sum (their twins: not judged before)."""
    gen = torch.Generator().manual_seed(0)
    n, classes = 203, 5
    x, u = torch.randn(n, 10, generator=gen), torch.randn(n, 10, generator=gen)
    if function == "l1_loss":
        labels, pseudo = torch.rand(n, 4, generator=gen), torch.rand(n, 4, generator=gen)
    else:
        labels = torch.randint(0, classes, (n,), generator=gen)
        pseudo = torch.softmax(2 * torch.randn(n, classes, generator=gen), -1)
    confidence = torch.rand(n, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, pseudo.shape[1]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    labelled = DataLoader(TensorDataset(x, labels), batch_size=24, shuffle=True, generator=gen)
    unlabelled = DataLoader(
        TensorDataset(u, pseudo, confidence), batch_size=24, shuffle=True, generator=gen
    )
    with watch() as reports:
        for (xb, yb), (ub, pb, cb) in zip(labelled, unlabelled, strict=True):
            loss = getattr(F, function)  # (looked up as the code calls it: watched)
            keep = cb > 0.5
            summed = loss(model(ub)[keep], pb[keep], reduction="sum")
            unsupervised = summed / (len(ub) * pb.shape[1]) if divided else summed
            optimizer.zero_grad()
            (loss(model(xb), yb) + unsupervised).backward()
            optimizer.step()
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == ([] if divided else ["mean-vs-sum"]), report
    if not divided:
        # (the datasets numbered as the update met their calls: the unlabelled one's first)
        assert f"its {function} (dataset 1) term" in report.failures[0].message, str(report)


def _depth(reduced_by: str) -> list[str]:
    """Train a depth regressor on pixels of which some hold no measure (0: invalid), its L1
    loss on the valid pixels (`pred[valid]`, `depth[valid]`: one value a row) reduced as
    `reduced_by` says; return the pitfalls the watch failed."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(90, 3, 8, 8, generator=gen)  # 6 batches, the last of 10 images
    depth = images.mean(1, keepdim=True).abs() * 3 + 0.5
    depth[torch.rand(depth.shape, generator=gen) < 0.3] = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = DataLoader(TensorDataset(images, depth), batch_size=16, shuffle=True, generator=gen)
    with watch() as reports:
        for x, d in data:
            predicted, valid = net(x), d > 0
            summed = F.l1_loss(predicted[valid], d[valid], reduction="sum")
            loss = {"per image": summed / len(x), "sum": summed}[reduced_by]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return _failures(reports)


def test_a_loss_on_the_valid_pixels_summed_per_image_passes_as_its_masked_twin_does() -> None:
    """The valid pixels' loss summed and divided by the batch's images (each image's sum, as
    `(l * valid).sum() / len(x)` passes): their values, picked one a row, are the batch's.
    Before, not told the batch's, it failed both mean-vs-sum and short-last-batch ("matches
    no known mistake"): a false alarm, named twice."""
    assert _depth("per image") == []


def test_a_loss_on_the_valid_pixels_summed_undivided_fails_mean_vs_sum() -> None:
    assert _depth("sum") == ["mean-vs-sum"]
