"""The watch on terms whose weight is the code's (a distillation's labels term beside its KL
term), on targets the model stacks from the samples' own tensors (detectron2's list of dicts),
and on a loss scaler's gradients clipped before they are unscaled: each judged, and each
one-line twin failing under its own name (review 22's held-out scripts)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch


def _distil(nominal: bool, applied: list[torch.Tensor] | None = None) -> Any:
    """Distillation with accumulation over 2 batches, each window's loss divided by the batches
    it holds (nominal: by 2, the last window of 1 batch too); 26 rows in batches of 4, so each
    epoch's last window holds one batch of 2 rows."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(26, 6, generator=gen), torch.randint(0, 3, (26,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with torch.random.fork_rng():  # the same models for both versions
        torch.manual_seed(0)
        teacher = nn.Linear(6, 3).requires_grad_(False)
        student = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0 if applied is not None else 0.1)
    if applied is not None:
        optimizer.register_step_pre_hook(
            lambda *_: applied.append(torch.cat([p.grad.flatten() for p in student.parameters()]))
        )
    n, k, t = len(loader), 2, 2.0
    for _ in range(2):
        for i, (xb, yb) in enumerate(loader):
            logits = student(xb)
            soft = F.kl_div(
                F.log_softmax(logits / t, -1), F.softmax(teacher(xb) / t, -1), reduction="batchmean"
            )
            loss = 0.5 * soft * t * t + 0.5 * F.cross_entropy(logits, yb)
            (loss / (k if nominal else min(k, n - (i - i % k)))).backward()
            if (i + 1) % k == 0 or i + 1 == n:
                optimizer.step()
                optimizer.zero_grad()


@pytest.mark.parametrize("nominal", [False, True], ids=["right", "nominal"])
def test_a_terms_coefficient_kept_on_full_updates_judges_the_short_one(nominal: bool) -> None:
    """The labels term's weight is the code's coefficient (0.5 here), so a short update was
    never judged against the full ones, and the twin that divides the epoch's last window by
    the nominal 2 exited 0. A coefficient every full update keeps applies on the short one
    too: the twin fails short-last-batch alone. The right script does not pass it: the KL
    term's weight, on a teacher's outputs, is never judged (the code review's)."""
    with watch() as reports:
        _distil(nominal)
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == (["short-last-batch"] if nominal else [])
    (short,) = [r for r in report.results if r.pitfall == "short-last-batch"]
    assert short.verdict == ("fail" if nominal else "skip"), str(report)
    if nominal:
        assert "applies 0.5 times the coefficient every full update" in short.message


def test_the_nominal_distillation_window_is_measured_directly_at_half() -> None:
    right: list[torch.Tensor] = []
    nominal: list[torch.Tensor] = []
    _distil(False, right)
    _distil(True, nominal)
    torch.testing.assert_close(nominal[0], right[0])  # a full window: the same
    torch.testing.assert_close(nominal[3], right[3] / 2)  # the epoch's last: half


class Detector(nn.Module):
    """A detector as detectron2 writes one: fed a list of dicts, it stacks each sample's
    tensors itself and returns its losses in training mode (smooth L1 on the boxes, summed
    and divided by the instances, as fast_rcnn does)."""

    def __init__(self, per_instance: bool) -> None:
        super().__init__()
        self.per_instance = per_instance
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.cls_score, self.bbox_pred = nn.Linear(16, 3), nn.Linear(16, 4)

    def forward(self, batched: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([d["image"] for d in batched])
        classes = torch.tensor([d["gt_class"] for d in batched])
        boxes = torch.stack([d["gt_box"] for d in batched])
        feats = self.backbone(images)
        box = F.smooth_l1_loss(self.bbox_pred(feats), boxes, beta=0.0, reduction="sum")
        return {
            "loss_cls": F.cross_entropy(self.cls_score(feats), classes),
            "loss_box_reg": box / len(batched) if self.per_instance else box,
        }


@pytest.mark.parametrize("per_instance", [True, False], ids=["normalized", "summed"])
def test_box_targets_the_model_stacks_from_each_samples_dict_are_the_batchs(
    per_instance: bool,
) -> None:
    """Every loss's targets were made by the model, none a fetched batch's: no weight was
    judged, and the summed box term exited 0. Targets whose rows are the samples' own tensors
    are the batch's: the normalized box term passes, the summed one fails mean-vs-sum."""
    gen = torch.Generator().manual_seed(0)
    samples = [
        {
            "image": torch.randn(6, generator=gen),
            "gt_class": int(torch.randint(0, 3, (), generator=gen)),
            "gt_box": torch.randn(4, generator=gen),
        }
        for _ in range(30)
    ]
    loader = DataLoader(samples, batch_size=8, collate_fn=lambda batch: batch)  # type: ignore[arg-type,var-annotated]
    model = Detector(per_instance)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch() as reports:
        for _ in range(2):
            for batched in loader:
                losses = model(batched)
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == ([] if per_instance else ["mean-vs-sum"])
    (scale,) = [r for r in report.results if r.pitfall == "mean-vs-sum"]
    assert scale.verdict == ("pass" if per_instance else "fail"), str(report)


def _scaled(
    clip_first: bool, norms: list[float] | None = None, extra: str = "", reduction: str = "mean"
) -> None:
    """A loss scaler's loop (timm's NativeScaler) with clip_grad_norm_ at 0.5, after unscale_
    or (clip_first) before it, on the still-scaled gradient; extra: "log" logs the scaled
    norm first (a clip at an infinite bound, which changes nothing), "after" clips again
    after the step, before zero_grad (no clip of the next update's), "value" clips each
    element to 0.01 instead of the norm; reduction: the cross-entropy's."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    if norms is not None:
        optimizer.register_step_pre_hook(
            lambda *_: norms.append(
                float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
            )
        )
    scaler = torch.amp.GradScaler("cpu")
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8):
        optimizer.zero_grad()
        scaler.scale(F.cross_entropy(model(xb), yb, reduction=reduction)).backward()
        if extra == "log":
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        if not clip_first:
            scaler.unscale_(optimizer)
        if extra == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.01)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        if extra == "after":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)


@pytest.mark.parametrize("clip_first", [False, True], ids=["unscaled", "clipped-first"])
def test_a_clip_of_the_still_scaled_gradient_fails_clip_before_unscale_alone(
    clip_first: bool,
) -> None:
    """The watch had no clip-before-unscale: the twin was named mean-vs-sum, "6.554e+04
    times the mean", where it applies about 1e-5 of it (the clip's bound over the scale)."""
    with watch() as reports:
        _scaled(clip_first)
    report = reports[0]
    assert [r.pitfall for r in report.failures] == (["clip-before-unscale"] if clip_first else [])
    (clip,) = [r for r in report.results if r.pitfall == "clip-before-unscale"]
    assert clip.verdict == ("fail" if clip_first else "pass"), str(report)


@pytest.mark.parametrize("extra", ["", "value"], ids=["norm", "value"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_clip_of_the_still_scaled_gradient_hides_no_second_bug(
    extra: str, reduction: str
) -> None:
    """The updates that clipped before unscale_ left the weights unread, every weighed
    property "not judged": a summed loss beside the clip went unnamed (stop 49's list, code
    review cr10's two-bug loop). What the clip kept is read over the loss scaler's scale, as
    backward() left the unscaled loss's, so each bug is named once."""
    with watch() as reports:
        _scaled(True, extra=extra, reduction=reduction)
    report = reports[0]
    assert not report.error, str(report)
    named = ["mean-vs-sum"] if reduction == "sum" else []
    assert [r.pitfall for r in report.failures] == [*named, "clip-before-unscale"], str(report)
    (scale,) = [r for r in report.results if r.pitfall == "mean-vs-sum"]
    assert scale.verdict == ("fail" if named else "pass"), str(report)


def test_a_last_window_of_one_short_batch_divided_by_the_count_is_named_a_nominal_count() -> None:
    """50 rows in batches of 8, windows of 2: the last window is one batch of 2 rows, and a
    loop that always divides by 2 applies half its mean there, a share that is no rows'
    ratio (2 of 16): it was "a factor that matches no known mistake"."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch() as reports:
        for i, (xb, yb) in enumerate(loader):
            (F.cross_entropy(model(xb), yb) / 2).backward()
            if i % 2 == 1 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "full update's 2 micro-batches where it took 1" in str(report), str(report)


def test_a_clip_before_unscale_is_measured_directly_to_apply_the_bound_over_the_scale() -> None:
    norms: list[float] = []
    _scaled(True, norms)
    assert norms[0] == pytest.approx(0.5 / 65536.0, rel=1e-3)


@pytest.mark.parametrize("flush", [True, False], ids=["flushed", "carried"])
def test_a_window_flushed_after_its_epochs_end_crosses_no_end(flush: bool) -> None:
    """A left-over window stepped after the loader's pass ran out (a callback's on_epoch_end)
    held micro-batches from before the end alone, yet the note said it crossed. Carried into
    the next epoch (no flush), a window does cross, and the note says so."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(28, 5, generator=gen), torch.randint(0, 3, (28,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 7 batches: a window of 1 left
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch() as reports:
        held = 0
        for _ in range(3):
            for xb, yb in loader:
                F.cross_entropy(model(xb), yb, reduction="sum").backward()
                held += len(yb)
                if held == 8:
                    for p in model.parameters():
                        p.grad.div_(held)
                    optimizer.step()
                    optimizer.zero_grad()
                    held = 0
            if flush and held:
                for p in model.parameters():
                    p.grad.div_(held)
                optimizer.step()
                optimizer.zero_grad()
                held = 0
    report = reports[0]
    assert report.ok and not report.error, str(report)
    assert ("both sides of an epoch's end" in (report.note or "")) == (not flush), str(report)
    # carried over epochs, the run's last window shows only at its end, which the watch did
    # not reach: short-last-batch is not passed on the windows it saw (review 22's W5b)
    (short,) = [r for r in report.results if r.pitfall == "short-last-batch"]
    assert short.verdict == ("pass" if flush else "skip"), str(report)


@pytest.mark.parametrize("extra", ["log", "after"])
def test_a_clip_that_changes_nothing_or_is_no_updates_is_no_clip_before_unscale(
    extra: str,
) -> None:
    """A scaled norm logged by clip_grad_norm_ at an infinite bound before unscale_ changes no
    gradient, and a clip after the step is none of the next update's: both failed
    clip-before-unscale (the code review's false alarms, exit 1 on correct code)."""
    with watch() as reports:
        _scaled(False, extra=extra)
    assert reports[0].ok and not reports[0].error, str(reports[0])


def _two_terms(mode: str) -> Any:
    """mse beside 0.3 * cross-entropy, windows of 2 over 7 batches (an epoch's last window of
    one); mode "right": each divided by its window's batches, "undivided": never divided,
    "some": the mse term on three batches of four alone (the others carry no values),
    divided right."""
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(28, 5, generator=gen), torch.randn(28, 2, generator=gen)
    c = torch.randint(0, 3, (28,), generator=gen)
    loader = DataLoader(TensorDataset(x, v, c), batch_size=4)
    trunk, values, classes = nn.Linear(5, 8), nn.Linear(8, 2), nn.Linear(8, 3)
    params = [*trunk.parameters(), *values.parameters(), *classes.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1)
    n = len(loader)
    with watch() as reports:
        for _ in range(2):
            for i, (xb, vb, cb) in enumerate(loader):
                h = torch.tanh(trunk(xb))
                loss = 0.3 * F.cross_entropy(classes(h), cb)
                if mode != "some" or i % 4 != 3:
                    loss = loss + F.mse_loss(values(h), vb)
                window = 1 if mode == "undivided" else min(2, n - (i - i % 2))
                (loss / window).backward()
                if (i + 1) % 2 == 0 or i + 1 == n:
                    optimizer.step()
                    optimizer.zero_grad()
    return reports[0]


@pytest.mark.parametrize(
    "mode, failures",
    [("right", []), ("some", []), ("undivided", ["mean-vs-sum"])],
)
def test_a_fixed_coefficient_per_micro_batch_is_named_by_the_term_that_tells(
    mode: str, failures: list[str]
) -> None:
    """Means added up undivided: the full windows apply 2 times each term's mean and the
    window of one its mean, which a nominal divisor on the short window would show too (the
    full ones at the mean, the short one at half); the mse term's mean on the short one tells
    it is the full ones' (mean-vs-sum, as for one loss), where it was named short-last-batch.
    A term on some micro-batches alone is judged by none of its shares (a false alarm
    before)."""
    report = _two_terms(mode)
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == failures, str(report)


def _rows_one_by_one(zero_inside: bool, divide: bool, chunk: int) -> Any:
    """Each shuffled batch of 5 (23 rows: a last batch of 3) run in chunks of `chunk` rows,
    each chunk's summed loss over the batch's rows (divide) or not; zero_inside: .grad zeroed
    before each chunk's backward(), not once a batch."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(23, 6, generator=gen), torch.randint(0, 2, (23,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True, generator=gen)
    with watch() as reports:
        for _ in range(3):
            for xb, yb in loader:
                if not zero_inside:
                    optimizer.zero_grad()
                for xc, yc in zip(xb.split(chunk), yb.split(chunk), strict=True):
                    if zero_inside:
                        optimizer.zero_grad()
                    loss = F.cross_entropy(model(xc), yc, reduction="sum")
                    (loss / len(xb) if divide else loss).backward()
                optimizer.step()
    return reports[0]


@pytest.mark.parametrize("chunk", [1, 2], ids=["rows", "chunks"])
@pytest.mark.parametrize("divide", [True, False], ids=["divided", "summed"])
@pytest.mark.parametrize("zero_inside", [False, True], ids=["zeroed-once", "zeroed-inside"])
def test_zeroing_between_a_batchs_own_chunks_is_grad_zeroing_and_its_weight_the_windows(
    zero_inside: bool, divide: bool, chunk: int
) -> None:
    """Review 25's W7: zeroed before each row's backward(), every update applies its last row
    alone at 1/5, which was read against that row's own mean: grad-zeroing beside a
    mean-vs-sum "1.667 times the mean" for one cause, and the first update's zeroed rows let
    go as a pass before training. Read against every row the update consumed, the divided
    twin is grad-zeroing alone, and the summed one gets both names."""
    report = _rows_one_by_one(zero_inside, divide, chunk)
    assert not report.error, str(report)
    named = ([] if divide else ["mean-vs-sum"]) + (["grad-zeroing"] if zero_inside else [])
    assert [r.pitfall for r in report.failures] == named, str(report)


@pytest.mark.parametrize("extra", ["", "value"], ids=["norm", "value"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_clip_before_unscale_under_two_optimizers_of_one_scaler_names_each_bug_once(
    extra: str, reduction: str
) -> None:
    """Code review cr14's A: one clip of every param before any unscale_, then the scaler
    steps the first layer's optimizer and the second's. The second's unscale_ overwrote what
    the clip had kept of its params, and its bounds by value were never taken over the scale:
    mean-vs-sum, short-last-batch or an error beside clip-before-unscale, on a right mean."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    first = torch.optim.SGD(model[0].parameters(), lr=0.05)
    second = torch.optim.SGD(model[2].parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    with watch() as reports:
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8):
            first.zero_grad()
            second.zero_grad()
            scaler.scale(F.cross_entropy(model(xb), yb, reduction=reduction)).backward()
            if extra == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.01)
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(first)
            scaler.step(second)
            scaler.update()
    report = reports[0]
    assert not report.error, str(report)
    named = ["mean-vs-sum"] if reduction == "sum" else []
    assert [r.pitfall for r in report.failures] == [*named, "clip-before-unscale"], str(report)


def _zeroed_passes(probe: bool, validation: bool, zero_inside: bool, k: int, n: int) -> Any:
    """Batches of 4 over n rows, windows of k each divided by k; probe: a batch's backward()
    before training, zeroed; validation: each batch first a validation batch's backward()
    (a gradient norm), zeroed; zero_inside: zero_grad() before each batch's backward()."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    held_out = DataLoader(TensorDataset(x[:16] + 1, y[:16]), batch_size=4)
    with watch() as reports:
        if probe:
            xb, yb = next(iter(loader))
            F.cross_entropy(model(xb), yb).backward()
            optimizer.zero_grad()
        for _ in range(2):
            checks = iter(held_out)
            for i, (xb, yb) in enumerate(loader):
                if validation:
                    vx, vy = next(checks, (None, None))
                    if vx is None:
                        checks = iter(held_out)
                        vx, vy = next(checks)
                    F.cross_entropy(model(vx), vy).backward()
                    optimizer.zero_grad()
                if zero_inside:
                    optimizer.zero_grad()
                (F.cross_entropy(model(xb), yb) / k).backward()
                if (i + 1) % k == 0 or i + 1 == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
    return reports[0]


def test_passes_zeroed_before_training_or_on_another_loader_are_no_rows_of_an_update() -> None:
    """Code review cr14's B and C: the rows of a probe's pass before training, or of a
    validation batch's pass before each step, were counted as the update's own where it
    zeroed its micro-batches: short-last-batch beside grad-zeroing for the probe, and beside
    each right step for the validation passes."""
    report = _zeroed_passes(probe=True, validation=False, zero_inside=True, k=4, n=32)
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
    report = _zeroed_passes(probe=False, validation=True, zero_inside=False, k=1, n=42)
    assert not {"short-last-batch", "mean-vs-sum"} & {r.pitfall for r in report.failures}
    report = _zeroed_passes(probe=True, validation=False, zero_inside=False, k=4, n=32)
    assert report.ok and not report.error, str(report)
