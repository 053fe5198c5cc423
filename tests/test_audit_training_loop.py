"""linreg.audit.training_loop on loops written as practitioners write them: each gets its verdict.

The correct loops pass with every model and loss here (linear + MSE, an MLP with dropout +
cross-entropy, a small conv net + cross-entropy); each wrong loop fails naming its pitfall. The
loops take their loss as a keyword, so `partial(loop, loss_fn=...)` is the one adapter line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from linreg.kinds import training_loop as _partition

Loop = Callable[..., Any]
# examples per property: a third of the profile's (ci: 10), at most 50 (thorough); each loop
# runs on three models, and the catalogue's own tests run `fit` at the profile's full count
EXAMPLES = min(settings.default.max_examples, 150) // 3

# --- models, losses and examples ---------------------------------------------------------------


def linear() -> nn.Module:
    return nn.Linear(3, 1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 4)
    )


MODELS = {
    "linear+mse": (linear, (torch.tensor([0.5, -1.0, 2.0]), torch.tensor([3.0])), nn.MSELoss()),
    "mlp+ce": (mlp, (torch.tensor([1.0, 0.0, -2.0, 0.5]), 1), nn.CrossEntropyLoss()),
    "conv+ce": (conv, (torch.linspace(-1, 1, 25).reshape(1, 5, 5), 3), nn.CrossEntropyLoss()),
}

# --- the correct loops ---------------------------------------------------------------------------


def plain(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            optimizer.step()


def zero_grad_to_zeros(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    model.train()
    for _ in range(num_epochs):
        for X, y in loader:
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)


def _groups(loader: Iterable[Any], k: int) -> Iterable[list[Any]]:
    it = iter(loader)
    while group := list(itertools.islice(it, k)):
        yield group


def accumulate_by_samples(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: Any,
    *,
    num_epochs: int,
    loss_fn: nn.Module,
    k: int = 2,
) -> None:
    """Gradient accumulation over k batches: each summed loss / the rows of the whole step."""
    total = type(loss_fn)(reduction="sum")
    for _ in range(num_epochs):
        for group in _groups(loader, k):
            rows = sum(len(X) for X, _ in group)
            for X, y in group:
                (total(model(X), y) / rows).backward()
            optimizer.step()
            optimizer.zero_grad()


def clipped(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    """Gradient clipping, active (max_norm far below the gradients' norm)."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
            optimizer.step()


def scheduled(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    """A cyclic lr schedule, which sets the lr to absolute values at every step."""
    schedule = torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=0.01, max_lr=0.1, step_size_up=2, cycle_momentum=False
    )
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            optimizer.step()
            schedule.step()


def rescaled(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    """The summed loss, its gradients divided by the batch's rows before the step: a mean."""
    total = type(loss_fn)(reduction="sum")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            total(model(X), y).backward()
            for p in model.parameters():
                p.grad /= len(X)
            optimizer.step()


# --- the wrong loops ------------------------------------------------------------------------------


def accumulate_by_micro_batches(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: Any,
    *,
    num_epochs: int,
    loss_fn: nn.Module,
    k: int = 2,
) -> None:
    """Each batch's mean loss / the number of batches in the step: the 2024 transformers bug."""
    for _ in range(num_epochs):
        for group in _groups(loader, k):
            for X, y in group:
                (loss_fn(model(X), y) / len(group)).backward()
            optimizer.step()
            optimizer.zero_grad()


def accumulate_by_nominal_steps(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: Any,
    *,
    num_epochs: int,
    loss_fn: nn.Module,
    k: int = 2,
) -> None:
    """Each batch's mean loss / k, also when the epoch's last step has fewer than k batches."""
    for _ in range(num_epochs):
        for group in _groups(loader, k):
            for X, y in group:
                (loss_fn(model(X), y) / k).backward()
            optimizer.step()
            optimizer.zero_grad()


def summed(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_fn(model(X), y).sum().backward()  # reduction='none' summed, at a mean's lr
            optimizer.step()


def zero_grad_before_step(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            loss_fn(model(X), y).backward()
            optimizer.zero_grad()
            optimizer.step()


def stored_generator(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    batches = (batch for batch in loader)
    for _ in range(num_epochs):
        for X, y in batches:
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            optimizer.step()


def detached(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(X).detach(), y)
            loss.requires_grad = True  # "fixes" the RuntimeError backward() raised
            loss.backward()
            optimizer.step()


def never_zeroed(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, loss_fn: nn.Module
) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            loss_fn(model(X), y).backward()
            optimizer.step()


def _with(loss_fn: nn.Module, reduction: str) -> nn.Module:
    return type(loss_fn)(reduction=reduction)


def audit_of(loop: Loop, model: str, **options: Any) -> audit.Report:
    factory, example, loss_fn = MODELS[model]
    if loop is summed:
        loss_fn = _with(loss_fn, "none")
    return audit.training_loop(
        partial(loop, loss_fn=loss_fn), model=factory, example=example, **options
    )


CORRECT: list[tuple[Loop, dict[str, Any]]] = [
    (plain, {}),
    (zero_grad_to_zeros, {}),
    (accumulate_by_samples, {"accumulation_steps": 2}),
    (clipped, {}),
    (scheduled, {}),
    (rescaled, {}),
]
WRONG: list[tuple[Loop, dict[str, Any], str]] = [
    (accumulate_by_micro_batches, {"accumulation_steps": 2}, "micro-batch-accumulation"),
    (accumulate_by_nominal_steps, {"accumulation_steps": 2}, "short-last-batch"),
    (summed, {}, "mean-vs-sum"),
    (zero_grad_before_step, {}, "non-leaf-params"),
    (stored_generator, {}, "exhausted-generator"),
    (detached, {}, "non-leaf-params"),
    (never_zeroed, {}, "grad-zeroing"),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "loop, options", [pytest.param(lo, o, id=lo.__name__) for lo, o in CORRECT]
)
def test_pitfalls_training_loop_a_correct_loop_passes(
    loop: Loop, options: dict[str, Any], model: str
) -> None:
    report = audit_of(loop, model, max_examples=EXAMPLES, **options)
    assert report.ok, str(report)
    assert all(r.verdict == "pass" for r in report.results), str(report)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "loop, options, pitfall", [pytest.param(*w, id=w[0].__name__) for w in WRONG]
)
def test_pitfalls_training_loop_a_wrong_loop_fails_naming_its_pitfall(
    loop: Loop, options: dict[str, Any], pitfall: str, model: str
) -> None:
    report = audit_of(loop, model, max_examples=15, shrink=False, **options)
    assert [r.pitfall for r in report.failures] == [pitfall], str(report)


def test_pitfalls_training_loop_a_summed_loop_passes_when_it_says_so() -> None:
    assert audit_of(summed, "mlp+ce", reduction="sum", max_examples=EXAMPLES).ok
    assert not audit_of(plain, "mlp+ce", reduction="sum", max_examples=EXAMPLES).ok


# --- the same loops, as the linear kind sees them -------------------------------------------------


def as_linear_loop(loop: Loop) -> Loop:
    """Adapt a training loop to linreg.audit.loop's signature: nn.Linear + MSELoss + optim.SGD."""

    def fn(
        features: Tensor,
        labels: Tensor,
        params: list[Tensor],
        *,
        lr: float,
        batch_size: int,
        num_epochs: int,
    ) -> nn.Module:
        model = nn.Linear(features.shape[1], 1)
        with torch.no_grad():
            model.weight.copy_(params[0].reshape(1, -1))
            model.bias.copy_(params[1])
        loader = DataLoader(TensorDataset(features, labels), batch_size=batch_size, shuffle=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        mse = nn.MSELoss(reduction="none" if loop is summed else "mean")
        loop(model, loader, optimizer, num_epochs=num_epochs, loss_fn=mse)
        return model

    return fn


# Where the two kinds name a mistake differently: params that never move are the linear kind's
# rebinding property (one step must change the caller's params) and this kind's non-leaf-params.
SAME_MISTAKE = {"non-leaf-params": "rebinding"}


@pytest.mark.parametrize(
    "loop",
    [
        plain,
        zero_grad_to_zeros,
        summed,
        zero_grad_before_step,
        stored_generator,
        never_zeroed,
        detached,
    ],
    ids=lambda lo: lo.__name__,
)
def test_pitfalls_training_loop_agrees_with_the_linear_loop_audit(loop: Loop) -> None:
    ours = audit_of(loop, "linear+mse", max_examples=EXAMPLES)
    linear_kind = audit.loop(as_linear_loop(loop), objective="mse", max_examples=EXAMPLES)
    assert ours.ok == linear_kind.ok, f"{ours}\n{linear_kind}"
    if not ours.ok:
        first = ours.failures[0].pitfall
        named = {r.pitfall for r in linear_kind.failures}
        assert SAME_MISTAKE.get(first, first) in named, f"{ours}\n{linear_kind}"


# --- what cannot be audited is refused before any work ------------------------------------------

PLAIN_CE = partial(plain, loss_fn=nn.CrossEntropyLoss())


def test_pitfalls_training_loop_refuses_a_loop_that_updates_the_params_itself() -> None:
    def by_hand(model: nn.Module, loader: Any, optimizer: Any, *, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for X, y in loader:
                model.zero_grad()
                nn.functional.cross_entropy(model(X), y).backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.1 * p.grad
                optimizer.step()

    with pytest.raises(audit.TargetError, match=r"outside optimizer\.step"):
        audit.training_loop(by_hand, model=mlp, example=MODELS["mlp+ce"][1])


def test_pitfalls_training_loop_refuses_rows_that_interact() -> None:
    class Centred(nn.Module):  # subtracts the batch's mean: each row's output needs the others
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x - x.mean(0))

    with pytest.raises(audit.TargetError, match="depends on the other rows"):
        audit.training_loop(PLAIN_CE, model=Centred, example=MODELS["mlp+ce"][1])


def test_pitfalls_training_loop_refuses_a_random_forward() -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(nn.functional.dropout(x, 0.5, self.training))

    with pytest.raises(audit.TargetError, match="random in training mode"):
        audit.training_loop(PLAIN_CE, model=Noisy, example=MODELS["mlp+ce"][1])


class AttendsThenRecurs(nn.Module):
    """Torch's defaults that drop at random without a Dropout module: a Transformer layer's
    attention (0.1, kept as a number by nn.MultiheadAttention) and a 2-layer GRU's dropout
    between its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True)
        self.gru = nn.GRU(4, 4, num_layers=2, dropout=0.3, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gru(self.encoder(x.view(len(x), 2, 2).repeat(1, 1, 2)))[0][:, -1])


def test_attention_and_recurrent_dropout_kept_as_numbers_are_held_still_and_put_back() -> None:
    """Review 26's A1: a classifier on nn.TransformerEncoderLayer's defaults was refused as
    a random forward: its attention's dropout is a number, not a Dropout module."""
    made: list[nn.Module] = []

    def model() -> nn.Module:
        made.append(AttendsThenRecurs())
        return made[-1]

    report = audit.training_loop(PLAIN_CE, model=model, example=MODELS["mlp+ce"][1])
    assert report.ok and not report.error, str(report)
    attention = [m for m in made[0].modules() if isinstance(m, nn.MultiheadAttention)]
    assert [m.dropout for m in attention] == [0.1] and made[0].gru.dropout == 0.3


def margin_scorer() -> nn.Module:
    """A scorer whose margin the example (x = 0, score 0) misses and its contrast row (x + 1,
    score 5) meets: a batch of contrast rows alone has a hinge loss of 0, and no gradient."""
    scorer = nn.Linear(1, 1)
    with torch.no_grad():
        scorer.weight.fill_(5.0)
        scorer.bias.zero_()
    return scorer


def svm_epochs(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: Any,
    num_epochs: int,
    late: bool = False,
    warm: int = 0,
) -> None:
    """A linear SVM on +1/-1 labels: the hinge loss, written out. late: zero_grad() after
    backward(). warm: the loss is weighed 0 for that many epochs first (they train nothing)."""
    for epoch in range(num_epochs):
        weight = 0.0 if epoch < warm else 1.0
        for x, y in loader:
            if not late:
                optimizer.zero_grad()
            hinge = F.relu(1 - y * model(x).squeeze(1)).mean()
            (weight * hinge).backward()
            if late:
                optimizer.zero_grad()
            optimizer.step()


HINGE = {"model": margin_scorer, "example": (torch.tensor([0.0]), torch.tensor(1.0))}


def test_a_step_whose_rows_all_meet_the_margin_is_right_to_apply_nothing() -> None:
    """Such a step leaves every .grad 0 after a backward() that reached its rows, and its rows'
    own gradients are 0 too: non-leaf-params blamed the loop ("zero_grad() between backward()
    and step()?") and judged nothing else, a false alarm on correct code (reviews 25-26). The
    same loop summing its rows' hinge losses still fails mean-vs-sum alone."""
    report = audit.training_loop(svm_epochs, **HINGE)
    assert report.ok and not report.error, str(report)

    def summed(model: nn.Module, loader: Iterable[Any], optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for x, y in loader:
                optimizer.zero_grad()
                F.relu(1 - y * model(x).squeeze(1)).sum().backward()
                optimizer.step()

    report = audit.training_loop(summed, **HINGE)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    # the loss named: each row's reference is the hinge's, 0 on every row of such a step
    report = audit.training_loop(svm_epochs, loss=hinge_loss, **HINGE)
    assert report.ok and not report.error, str(report)


def hinge_loss(scores: Tensor, labels: Tensor) -> Tensor:
    return F.relu(1 - labels * scores.squeeze(-1)).mean()


def rate_head() -> nn.Module:
    """A regressor of a non-negative rate, its output through a ReLU, as built (a seed's init
    leaves the audit's rows below the ReLU's hinge, another's above)."""
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1), nn.ReLU())


def fit_rates(model: nn.Module, loader: Iterable[Any], optimizer: Any, num_epochs: int) -> None:
    criterion = nn.MSELoss()
    for _ in range(num_epochs):
        for x, y in loader:
            loss = criterion(model(x).squeeze(-1), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def test_rows_dead_under_a_seeds_init_are_right_to_apply_nothing() -> None:
    """On seeds whose init leaves both kinds of rows below the ReLU's hinge, MSE and the loop
    both give every row a gradient of 0: the guess was not confirmed, the loop's own
    references were all 0, and non-leaf-params failed the correct loop (review 27's a7)."""
    example = (torch.tensor([0.3, -0.8, 1.1, 0.2]), torch.tensor(2.0))
    report = audit.training_loop(fit_rates, model=rate_head, example=example)
    assert report.ok and not report.error, str(report)


def counts_head() -> nn.Module:
    """A regressor of counts, its output through a ReLU: dead (0) on the contrast row (x + 1),
    whose count is 0, so that row's gradient is 0 under MSE and the loop's alike."""
    head = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    with torch.no_grad():
        head[0].weight.fill_(-5.0)
        head[0].bias.fill_(1.0)
    return head


def scaled_fit(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, num_epochs: int, unscaled: bool = True
) -> None:
    """Mixed precision's loss scaling: scaler.step() unscales before it steps; the twin keeps
    its old optimizer.step(), which applies the gradients scaled."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.mse_loss(model(x), y)).backward()
            if unscaled:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()


def test_a_row_with_no_gradient_under_loss_and_loop_confirms_the_loss_by_the_other() -> None:
    """The one-row run on the dead row applied 0 where backward() left 0: read as a change of
    .grad after backward() (weight decay by hand?), so MSE was never confirmed, each row's
    reference was the loop's own and no scale was judged: a scaler's 65536 applied unscaled
    passed (code review cr16: once non-leaf-params no longer stopped it first)."""
    counts = {"model": counts_head, "example": (torch.tensor([0.0]), torch.tensor([0.0]))}
    report = audit.training_loop(scaled_fit, **counts)
    assert report.ok and not report.error, str(report)
    assert "loop's own gradient" not in report.note, report.note
    twin = audit.training_loop(partial(scaled_fit, unscaled=False), **counts)
    assert [r.pitfall for r in twin.failures] == ["mean-vs-sum"], str(twin)
    assert "65536 = the scaler's scale" in twin.failures[0].message, twin.failures[0].message


@pytest.mark.parametrize(
    "twin", [partial(svm_epochs, late=True), partial(svm_epochs, warm=1)], ids=["late", "warm"]
)
def test_a_zero_step_whose_rows_have_a_gradient_still_fails_non_leaf_params(twin: Any) -> None:
    """zero_grad() after backward() loses a gradient the rows have; a loss weighed 0 for the
    first epoch trains nothing there (measured: a real lr leaves the params as they were). Each
    fails non-leaf-params alone (code review cr15's F4: excusing every flat step gave the
    weighed loss two wrong names)."""
    report = audit.training_loop(twin, **HINGE)
    assert [r.pitfall for r in report.failures] == ["non-leaf-params"], str(report)
    rows = TensorDataset(torch.tensor([[0.0], [-1.0]]), torch.tensor([1.0, 1.0]))
    for loop, moves in ((svm_epochs, True), (twin, False)):
        model = margin_scorer()
        before = [p.detach().clone() for p in model.parameters()]
        loop(model, DataLoader(rows, batch_size=2), torch.optim.SGD(model.parameters(), 0.1), 1)
        same = [torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)]
        assert not all(same) if moves else all(same)


class PixelHead(nn.Module):
    """A 1x1 convolution that scores 4 classes at every pixel (a segmentation head)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(3, 4, kernel_size=1)

    def forward(self, image: Tensor) -> Tensor:
        return self.classifier(image)


def labelled_map() -> tuple[Tensor, Tensor]:
    """An image and its label map, whose first row of pixels is void (255: not counted)."""
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (5, 5), generator=generator)
    target[0] = 255
    return torch.randn(3, 5, 5, generator=generator), target


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: Any,
    data_loader: Iterable[Any],
    zero: bool = True,
) -> None:
    model.train()
    for image, target in data_loader:
        output = model(image)
        loss = criterion(output, target)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def segmentation(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, zero: bool = True
) -> None:
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    for _ in range(num_epochs):
        train_one_epoch(model, criterion, optimizer, loader, zero)


def test_a_label_map_whose_void_pixels_are_255_is_judged_under_cross_entropy_ignoring_them() -> (
    None
):
    """Cross-entropy told to ignore 255 did not match the audit's guess (cross-entropy), so
    each row's reference fell back to the loop's own gradient, whose scale is not judged, and
    the note said "its loss is not cross-entropy" (review 25's A5)."""
    report = audit.training_loop(segmentation, model=PixelHead, example=labelled_map)
    assert report.ok and not report.error, str(report)
    assert "loop's own gradient" not in report.note, report.note
    unzeroed = partial(segmentation, zero=False)
    report = audit.training_loop(unzeroed, model=PixelHead, example=labelled_map)
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
    assert "each from cross-entropy with ignore_index=255" in str(report), str(report)


def pairs_pushed_apart(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, num_epochs: int
) -> None:
    """Online pair mining (review 26's A7, a batch-hard triplet loss, in another form): every
    pair of rows of two labels pushed to a distance of 1; a batch of one label has none."""
    for _ in range(num_epochs):
        for x, y in loader:
            z = model(x)
            apart = (y[:, None] != y[None, :]).float()
            gap = torch.cdist(z, z)
            loss = (F.relu(1.0 - gap) * apart).sum() / apart.sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def test_a_loss_with_no_gradient_on_rows_of_one_label_is_refused_saying_so() -> None:
    """Every row the audit makes shares the example's label: the mined loss was 0 at every
    step, and both the loop and a twin that never zeroes failed non-leaf-params, blaming the
    loop's zeroing. The refusal names both causes a flat loss can have (code review cr15:
    torch.round on the output is the loop's own)."""
    flat = r"reached the model's outputs and left every gradient 0.*torch.round.*triplet"
    with pytest.raises(audit.TargetError, match=flat):
        audit.training_loop(pairs_pushed_apart, model=mlp, example=MODELS["mlp+ce"][1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": None}, "model must be a zero-argument factory"),
        ({"example": (1, 2, 3)}, "one \\(x, y\\) sample or a dict"),
        ({"example": ("x", 1)}, "tensors or numbers"),
        ({"optimizer": 0.1}, "optimizer must be a factory"),
        ({"optimizer": lambda params: list(params)}, "not a torch.optim.Optimizer"),
        ({"model": lambda: 3}, "not an nn.Module"),
        ({"example": (torch.zeros(5), 1)}, "raised RuntimeError"),
        ({"loss": int}, "loss must be a function \\(output, y\\) -> loss, got the class int"),
        ({"loss": nn.Linear}, "the loss class Linear cannot be made with its defaults"),
        # two heads' labels: a DataLoader collates them apart, one tensor would not (review 23)
        (
            {"example": (torch.zeros(4), (torch.tensor(0.7), torch.tensor(2)))},
            "y is a tuple of 2 parts holding tensors.* give a dict example that names each part",
        ),
    ],
)
def test_pitfalls_training_loop_names_what_is_wrong_with_its_arguments(
    kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"model": mlp, "example": MODELS["mlp+ce"][1], **kwargs}
    with pytest.raises(audit.TargetError, match=message):
        audit.training_loop(PLAIN_CE, **args)


def test_an_example_of_nested_numbers_is_one_tensor() -> None:
    """x = [[0.2, -1.3], [0.7, 2.0]], a grid as a JSON file holds it, is one tensor: it was
    refused as parts a DataLoader collates apart (code review cr12's R4)."""

    class Grid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    report = audit.training_loop(
        PLAIN_CE, model=Grid, example=([[0.2, -1.3], [0.7, 2.0]], 2), max_examples=5
    )
    assert report.ok, str(report)


def test_a_loss_modules_class_is_made_with_its_defaults() -> None:
    """`--loss torch.nn:CrossEntropyLoss` names the class: it was called as the loss, and the
    TypeError blamed the model's forward (review 24)."""
    report = audit.training_loop(
        PLAIN_CE, model=mlp, example=MODELS["mlp+ce"][1], loss=nn.CrossEntropyLoss
    )
    assert report.ok, str(report)
    assert report.options["loss"] == "torch.nn.modules.loss:CrossEntropyLoss", report.options


def test_pitfalls_training_loop_checks_the_loop_signature_and_options() -> None:
    def no_epochs(model: nn.Module, loader: Any, optimizer: Any) -> None: ...

    with pytest.raises(audit.TargetError, match="num_epochs"):
        audit.training_loop(no_epochs, model=mlp, example=MODELS["mlp+ce"][1])
    with pytest.raises(ValueError, match="reduction"):
        audit.training_loop(PLAIN_CE, model=mlp, example=MODELS["mlp+ce"][1], reduction="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accumulation_steps"):
        audit.training_loop(PLAIN_CE, model=mlp, example=MODELS["mlp+ce"][1], accumulation_steps=0)


def test_pitfalls_training_loop_contrast_row_differs_from_the_example() -> None:
    for x in (torch.zeros(3), torch.tensor([1.5, -2.0]), torch.tensor([0, 4]), torch.tensor(0)):
        assert not torch.equal(_partition.contrast(x), x)
