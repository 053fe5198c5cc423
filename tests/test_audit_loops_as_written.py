"""linreg.audit.training_loop on loops as real projects write them (tests/loops_as_written.py).

Every correct loop passes, every twin fails naming its pitfall; the k-fold scale under
accumulation, clipping over a scale error or a missing zero_grad, a crash, and left-over
micro-batches never stepped each have a test; the audit's one true finding on a loop written to
look correct is confirmed by a direct measurement.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from tests import loops_as_written as L

# examples per property: a third of the profile's (ci: 10), at most 50 (thorough)
EXAMPLES = min(settings.default.max_examples, 150) // 3

# no window declared: a loop that takes a count is run at drawn ones, a window is read from
# the run (tests/test_audit_updates.py covers a declared count)
GPT = {"model": L.TinyGPT, "example": L.gpt_example}
IMAGE = {"model": L.SmallConvBN, "example": L.image_example}
VECTOR = {"model": L.LogSoftmaxNet, "example": L.vector_example}

# (the loop, its twin, the pitfall the twin must fail, the audit's options)
CASES: list[tuple[Any, Any, str, dict[str, Any]]] = [
    (L.gpt_train, L.gpt_train_undivided, "mean-vs-sum", GPT),
    (
        L.iters_train,
        L.iters_train_zero_late,
        "non-leaf-params",
        {"model": L.TinyGPT, "example": L.gpt_example},
    ),
    (L.image_train, L.image_train_bypassed, "mean-vs-sum", {**IMAGE, "drop_last": True}),
    (L.image_train, L.image_train_unzeroed, "grad-zeroing", {**IMAGE, "drop_last": True}),
    (
        L.trainer_fit,
        L.trainer_fit_summed,
        "mean-vs-sum",
        {"model": L.D2LStyleModel, "example": L.regression_example},
    ),
    (L.mnist_style, L.mnist_style_stored, "exhausted-generator", VECTOR),
    (
        L.manual_fit,
        L.manual_fit_unflushed,
        "short-last-batch",
        {**VECTOR, "model": L.LitStyleModule, "drop_last": True},
    ),
    (L.script, L.script_late_zero, "non-leaf-params", VECTOR),
    (
        L.dict_train,
        L.dict_train_nominal,
        "short-last-batch",
        {
            "model": L.TinyClassifier,
            "example": L.dict_example,
            "drop_last": True,
        },
    ),
    (
        L.bn_train,
        L.bn_train_micro_means,
        "micro-batch-accumulation",
        {"model": L.SmallConvBN, "example": L.image_example},
    ),
    (L.chunked_train, None, "", IMAGE),
    (L.probe_train, L.probe_train_zeroed_once, "grad-zeroing", IMAGE),
    (L.amp_train, L.amp_train_nominal, "short-last-batch", IMAGE),
    (L.validated_train, L.validated_train_nominal, "short-last-batch", IMAGE),
    (
        L.recipe_train,
        L.recipe_train_unscaled,
        "mean-vs-sum",
        {"model": L.LogitsOnlyLM, "example": L.token_example},
    ),
]


def _id(case: tuple[Any, ...]) -> str:
    return f"{case[0].__name__}-vs-{case[1].__name__ if case[1] else 'none'}"


@pytest.mark.parametrize("loop, options", [pytest.param(c[0], c[3], id=_id(c)) for c in CASES])
def test_loops_as_written_a_correct_loop_passes(loop: Any, options: dict[str, Any]) -> None:
    report = audit.training_loop(loop, max_examples=EXAMPLES, **options)
    assert report.ok, str(report)
    assert {r.verdict for r in report.results} == {"pass"}, str(report)


@pytest.mark.parametrize(
    "twin, pitfall, options", [pytest.param(*c[1:], id=_id(c)) for c in CASES if c[1]]
)
def test_loops_as_written_a_twin_fails_naming_its_pitfall(
    twin: Any, pitfall: str, options: dict[str, Any]
) -> None:
    report = audit.training_loop(twin, max_examples=15, shrink=False, **options)
    assert [r.pitfall for r in report.failures] == [pitfall], str(report)
    assert "matches no known mistake" not in str(report), str(report)


# --- the k-fold scale, and what clipping must not hide ------------------------------------------


def test_loops_as_written_a_k_fold_scale_under_accumulation_fails_mean_vs_sum() -> None:
    for clip in (0.0, 1e-3):  # clipping off, then active on every step
        twin = partial(L.gpt_train, divide=False, grad_clip=clip)
        report = audit.training_loop(twin, max_examples=10, **{**GPT, "accumulation_steps": 3})
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
        assert "3 times the gradient" in report.failures[0].message, str(report)
        assert "without dividing by their number" in report.failures[0].message


def _applied(loop: Any, model: nn.Module, batches: list[Any], **kwargs: Any) -> list[Tensor]:
    """The gradients each step applied, read in a pre-hook of the loop's own optimizer."""
    seen: list[Tensor] = []

    def read(opt: torch.optim.Optimizer, *_: Any) -> None:
        seen.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
        for group in opt.param_groups:
            group["lr"] = 0.0

    hook = register_optimizer_step_pre_hook(read)
    try:
        loop(model, batches, **kwargs)
    finally:
        hook.remove()
    return seen


def test_loops_as_written_clipping_hides_the_bug_from_the_applied_gradient_alone() -> None:
    """What the audit is up against: with active clipping the applied gradients of the right
    loop and of the two twins are the same vector; only what backward() left tells them apart."""
    torch.manual_seed(0)
    X, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    batches = list(DataLoader(TensorDataset(X, y), batch_size=2))

    def run(**kw: Any) -> list[Tensor]:
        torch.manual_seed(1)
        model = L.SmallConvBN()
        model.eval()  # the batch norms' statistics fixed, as the audit holds them
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        return _applied(
            partial(L.image_train, optimizer=optimizer, num_epochs=1, amp=False, clip=1e-3, **kw),
            model,
            batches,
        )

    right, unzeroed = run(), run(zero=False)
    assert len(right) == len(unzeroed) == 2
    # the mask is real: both steps are clipped to the same norm, and to 1% the same vector
    assert torch.isclose(right[1].norm(), unzeroed[1].norm(), rtol=1e-5)
    assert torch.allclose(right[1], unzeroed[1], rtol=1e-2, atol=1e-7)
    report = audit.training_loop(
        partial(L.image_train, clip=1e-3, zero=False, amp=False),
        max_examples=10,
        **{**IMAGE, "drop_last": True},
    )
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
    assert "before clipping" in report.failures[0].message


# --- a crash, left-overs never stepped ---------------------------------------------------------


def logs_past_warm_up(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Right, but its log line skips the first batch's loss: an epoch of one batch crashes it."""
    for epoch in range(num_epochs):
        losses = []
        for X, y in loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(X), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        print(f"epoch {epoch}: {torch.stack(losses[1:]).mean():.3f}")


def test_loops_as_written_a_loop_that_raises_is_reported_as_raising_not_as_a_pitfall() -> None:
    report = audit.training_loop(logs_past_warm_up, max_examples=10, **VECTOR)
    assert not report.ok
    assert report.failures == (), str(report)
    assert report.error.startswith("the loop raised RuntimeError: stack expects"), report.error
    assert f"{__file__}:" in report.error and "in logs_past_warm_up" in report.error
    assert "torch.stack(losses[1:])" in report.error  # the line itself
    assert report.error_example["batch_size"] >= len(report.error_example["rows"])
    assert report.to_dict()["error"] == report.error
    assert "ERROR the loop raised RuntimeError" in str(report)
    assert all(r.verdict in ("pass", "skip") for r in report.results)
    assert any(r.message.startswith("not judged: the target raised") for r in report.results)


def test_loops_as_written_a_loop_that_raises_at_once_is_refused_naming_the_line() -> None:
    def typo(model: nn.Module, loader: Any, num_epochs: int) -> None:
        for X, _ in loader:
            model(X).sum().backwards()  # type: ignore[attr-defined]

    with pytest.raises(audit.TargetError, match=r"the loop raised AttributeError: .*backwards"):
        audit.training_loop(typo, **VECTOR)


def test_loops_as_written_left_overs_never_stepped_are_named() -> None:
    report = audit.training_loop(
        L.manual_fit_unflushed,
        max_examples=15,
        **{**VECTOR, "model": L.LitStyleModule},
    )
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "never steps an epoch's left-over micro-batches" in report.failures[0].message


# --- a true finding on a loop that looks right ------------------------------------------------


def test_loops_as_written_a_short_last_batch_in_a_window_is_a_mean_of_means_measured() -> None:
    """manual_fit divides every batch's mean loss by the window's length: right when the batches
    are the same size (drop_last), a mean of micro-batch means when the last one is short. The
    audit says so; here is the direct measurement on 3 rows in batches of 2 (one window)."""
    report = audit.training_loop(
        L.manual_fit,
        max_examples=30,
        **{**VECTOR, "model": L.LitStyleModule},
    )
    assert [r.pitfall for r in report.failures] == ["micro-batch-accumulation"], str(report)

    torch.manual_seed(0)
    X, y = torch.randn(3, 5), torch.tensor([0, 3, 1])
    module = L.LitStyleModule()
    module._optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
    batches = list(DataLoader(TensorDataset(X, y), batch_size=2))
    (applied,) = _applied(lambda m, b: L.manual_fit(m, b, num_epochs=1), module, batches)
    params = list(module.parameters())
    rows = torch.autograd.grad(F.cross_entropy(module(X), y), params)
    means = [
        torch.autograd.grad(F.cross_entropy(module(X[s]), y[s]), params)
        for s in (slice(0, 2), slice(2, 3))
    ]
    correct = torch.cat([g.reshape(-1) for g in rows])
    mean_of_means = torch.cat([(a + b).reshape(-1) / 2 for a, b in zip(*means, strict=True)])
    assert not torch.allclose(applied, correct, rtol=1e-3)
    assert torch.allclose(applied, mean_of_means, rtol=1e-5, atol=1e-7)


# --- the contract, by name; the reference, absolute where it can be ---------------------------


def test_loops_as_written_a_loop_that_needs_what_the_audit_cannot_pass_is_refused() -> None:
    def needs_a_logger(model: nn.Module, loader: Any, num_epochs: int, logger: Any) -> None: ...

    def no_data(model: nn.Module, num_epochs: int) -> None: ...

    with pytest.raises(audit.TargetError, match="it needs logger, which the audit cannot pass"):
        audit.training_loop(needs_a_logger, **VECTOR)
    with pytest.raises(audit.TargetError, match="no parameter for its data"):
        audit.training_loop(no_data, **VECTOR)


def l1_loop(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, k: int = 1) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            (F.l1_loss(model(X), y) * k).backward()
            optimizer.step()


REGRESSION = {"model": lambda: nn.Linear(3, 1), "example": L.regression_example}


def test_loops_as_written_a_loss_the_audit_cannot_guess_is_judged_against_the_loop() -> None:
    report = audit.training_loop(l1_loop, max_examples=EXAMPLES, **REGRESSION)
    assert report.ok, str(report)
    # a scale every row shares is not judged then, and the report says so
    assert "reference was the loop's own gradient on that row alone: its loss is not MSE" in (
        report.note
    ), str(report)
    named = audit.training_loop(
        partial(l1_loop, k=2), max_examples=10, loss=F.l1_loss, **REGRESSION
    )
    assert [r.pitfall for r in named.failures] == ["mean-vs-sum"], str(named)
    assert "2 times the gradient" in named.failures[0].message
    assert "the named loss 'l1_loss'" in named.failures[0].message


def logs_the_norm_by_a_backward_of_its_own(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> list[float]:
    """A gradient-norm logger that calls backward(retain_graph=True) on the loss itself, then
    the loop's own backward(): every step applies twice the gradient (backward twice through
    one graph, its RuntimeError silenced by retain_graph)."""

    def grad_norm(loss: torch.Tensor) -> float:
        loss.backward(retain_graph=True)
        return float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())

    norms = []
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(X), y)
            norms.append(grad_norm(loss))
            loss.backward()
            optimizer.step()
    return norms


def test_loops_as_written_backward_twice_through_one_graph_is_named_in_the_note() -> None:
    # twice on every row: a scale the loop's own one-row gradient shares, so only a named
    # loss judges it; unnamed, the note says what the one-row run measured
    report = audit.training_loop(logs_the_norm_by_a_backward_of_its_own, **REGRESSION)
    assert "on one row 2 times its gradient (backward() called 2 times through one graph" in (
        report.note
    ), str(report)
    named = audit.training_loop(
        logs_the_norm_by_a_backward_of_its_own, loss=F.mse_loss, **REGRESSION
    )
    assert [r.pitfall for r in named.failures] == ["mean-vs-sum"], str(named)
    assert "2 times the gradient" in named.failures[0].message


def regresses_on_flat_targets(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, squeeze: bool = True
) -> None:
    """A regression fit on a dataset of 1-D targets, shape (n,): the predictions squeezed to
    (n,) before nn.MSELoss. Twin (squeeze=False): predictions (n, 1) against targets (n,)."""
    criterion = nn.MSELoss()
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            prediction = model(X)
            loss = criterion(prediction.squeeze(-1) if squeeze else prediction, y)
            loss.backward()
            optimizer.step()


FLAT_TARGETS = {"model": lambda: nn.Linear(3, 1), "example": (torch.tensor([1.0, -2.0, 0.5]), 0.7)}


def test_loops_as_written_predictions_against_flat_targets_fail_label_shape_measured() -> None:
    # directly: on rows of different targets the broadcast loss's gradient is not the mean
    # squared error's (on the audit's rows, of one target, the two agree: the loss calls show it)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    X, y = torch.randn(4, 3), torch.tensor([0.7, -1.0, 2.0, 0.1])
    with pytest.warns(UserWarning, match="different to the input size"):
        broadcast = torch.autograd.grad(F.mse_loss(model(X), y), list(model.parameters()))
    right = torch.autograd.grad(F.mse_loss(model(X).squeeze(-1), y), list(model.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(broadcast, right, strict=True)) > 0.1
    report = audit.training_loop(regresses_on_flat_targets, **FLAT_TARGETS)
    assert report.ok, str(report)
    twin = audit.training_loop(partial(regresses_on_flat_targets, squeeze=False), **FLAT_TARGETS)
    (failure,) = twin.failures
    assert failure.pitfall == "label-shape", str(twin)
    assert "compared tensors of shapes (2, 1) and (2,)" in failure.message


class TwoHeads(nn.Module):
    """A class head and a value head, returned as a plain tuple: no loss in the output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.logits = nn.Linear(4, 2)
        self.value = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.body(x))
        return self.logits(h), self.value(h)


def trains_two_heads(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, zero: bool = True
) -> None:
    """A multi-task fit: each row's labels hold its class and its value; cross-entropy on one
    head plus half the squared error on the other, both means over the batch."""
    for _ in range(num_epochs):
        for x, y in loader:
            logits, value = model(x)
            loss = F.cross_entropy(logits, y[:, 0].long()) + 0.5 * F.mse_loss(value, y[:, 1:])
            if zero:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def test_loops_as_written_a_model_of_two_heads_with_no_loss_in_its_output_is_judged() -> None:
    # the labels' usual loss (MSE on float labels) fits no tuple: the guess is dropped, not
    # raised, and each row's reference is the loop's own gradient on it
    example = (torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.0, 0.7]))
    report = audit.training_loop(trains_two_heads, model=TwoHeads, example=example)
    assert report.ok, str(report)
    assert "each row's reference was the loop's own gradient on that row alone" in str(report)
    twin = audit.training_loop(
        partial(trains_two_heads, zero=False), model=TwoHeads, example=example
    )
    assert [r.pitfall for r in twin.failures] == ["grad-zeroing"], str(twin)


def compares_flat_targets(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, how: str
) -> None:
    """A regression fit on 1-D targets (n,), its loss written one way or another."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            prediction = model(X)
            if how == "reversed":  # the labels first: (n,) against (n, 1) broadcasts as well
                loss = F.mse_loss(y, prediction)
            elif how == "logged":  # trains on like shapes; a metric logged with grad does not
                loss = F.mse_loss(prediction.squeeze(-1), y)
                F.l1_loss(prediction, y)
            elif how == "pairwise":  # every prediction against every target, on purpose
                loss = F.mse_loss(prediction, y[None, :].expand(len(y), -1))
            else:  # written by hand: not read
                loss = ((prediction - y) ** 2).mean()
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize(
    "how, verdict",
    [("reversed", "fail"), ("logged", "pass"), ("pairwise", "pass"), ("by hand", "skip")],
)
def test_loops_as_written_label_shape_reads_the_losses_a_backward_reaches(
    how: str, verdict: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own, on the broadcast
        report = audit.training_loop(partial(compares_flat_targets, how=how), **FLAT_TARGETS)
    (shape,) = [r for r in report.results if r.pitfall == "label-shape"]
    assert shape.verdict == verdict, str(report)
    assert verdict != "skip" or "squared error written by hand" in shape.message, str(report)


def test_loops_as_written_batch_norm_statistics_stay_as_they_started() -> None:
    report = audit.training_loop(
        L.bn_train, max_examples=10, model=L.SmallConvBN, example=L.image_example
    )
    assert report.ok, str(report)
    model = L.SmallConvBN()
    from linreg.kinds.training_loop import build_model

    held = build_model(lambda: model)
    held.train()
    bn = held.features[1]
    assert not bn.training
    held(torch.randn(4, 1, 6, 6))
    assert torch.equal(bn.running_mean, torch.zeros(4))  # held: eval mode uses, never updates


# --- token-weighted accumulation: dict batches with -100 labels --------------------------------

TOKENS = {"model": L.TinyCausalLM, "example": L.token_example}


def test_loops_as_written_a_step_that_divides_by_its_count_of_targets_passes() -> None:
    report = audit.training_loop(L.token_train, max_examples=EXAMPLES, **TOKENS)
    assert report.ok, str(report)
    assert "weighed by the targets it counts" not in str(report)  # passes say nothing more


@pytest.mark.parametrize(
    "twin, pitfall, words",
    [
        (
            L.token_train_mean_of_means,
            "micro-batch-accumulation",
            "micro-batches' mean losses, whose counts of targets differ",
        ),
        (L.token_train_unshifted_count, "mean-vs-sum", "counted before the model's causal shift"),
    ],
    ids=["mean-of-means", "unshifted-count"],
)
def test_loops_as_written_a_miscount_of_targets_fails_naming_it(
    twin: Any, pitfall: str, words: str
) -> None:
    report = audit.training_loop(twin, max_examples=15, shrink=False, **TOKENS)
    assert [r.pitfall for r in report.failures] == [pitfall], str(report)
    assert words in report.failures[0].message, str(report)


@pytest.mark.parametrize(
    "model", [L.TinyCausalLM, L.LogitsOnlyLM], ids=["takes-labels", "logits-only"]
)
def test_loops_as_written_labels_popped_before_the_forward_are_the_rows_own(model: Any) -> None:
    # the loop computes its loss outside the model: each row's labels are read from the batch
    # the audit built, not taken as the example's (the contrast row counts 1 target, not 3)
    options = {**TOKENS, "model": model}
    report = audit.training_loop(L.popped_train, max_examples=EXAMPLES, **options)
    assert report.ok, str(report)
    twin = audit.training_loop(L.popped_train_mean_of_means, max_examples=15, **options)
    assert [r.pitfall for r in twin.failures] == ["micro-batch-accumulation"], str(twin)
    assert "micro-batches' mean losses, whose counts of targets differ ([3, 1])" in str(twin)


def test_loops_as_written_labels_left_in_the_batch_beside_a_positional_input_are_the_rows_own():
    # model(batch["input_ids"]): the forward is fed no labels by name; each row's are read from
    # the batch the audit built, as where the loop pops them (the contrast row counts 1 target)
    options = {**TOKENS, "model": L.LogitsOnlyLM}
    report = audit.training_loop(L.positional_train, max_examples=EXAMPLES, **options)
    assert report.ok, str(report)
    twin = audit.training_loop(L.positional_train_mean_of_means, max_examples=15, **options)
    assert [r.pitfall for r in twin.failures] == ["micro-batch-accumulation"], str(twin)
    assert "micro-batches' mean losses, whose counts of targets differ ([3, 1])" in str(twin)
    # naming the loss reads each row's labels the same way: the contrast row's are its own
    named = audit.training_loop(
        L.positional_train, max_examples=EXAMPLES, loss=L.shifted_token_loss, **options
    )
    assert named.ok, str(named)


def test_loops_as_written_the_mean_of_means_over_uneven_token_counts_measured() -> None:
    """Directly: two micro-batches of one row, with 3 and 1 targets after the shift. The mean of
    their means is not the mean over the step's 4 targets; dividing by the count is."""
    torch.manual_seed(0)
    model = L.TinyCausalLM()
    a = L.token_example()
    b = {**a, "labels": torch.tensor([-100, -100, -100, -100, 2])}
    batches = [{k: v.unsqueeze(0) for k, v in row.items()} for row in (a, b)]
    params = list(model.parameters())

    def grad(loss: Tensor) -> Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    together = {k: torch.cat([batches[0][k], batches[1][k]]) for k in a}
    correct = grad(model(**together).loss)  # one mean over the 4 targets
    mean_of_means = grad(sum(model(**m).loss for m in batches) / 2)
    by_count = grad(sum(model(**m, num_items_in_batch=4).loss for m in batches))
    assert torch.allclose(by_count, correct, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(mean_of_means, correct, rtol=1e-2)


# --- d2l's own loops: weights initialized inside the loop, a state-carrying RNN, nothing done --


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, kernel_size=3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(32, 3)
    )


LENET = {"model": lenet, "example": (torch.linspace(-1, 1, 16).reshape(1, 4, 4), torch.tensor(2))}


def train_ch6(
    net: nn.Module, train_iter: Any, num_epochs: int, device: str, zero: bool = True
) -> None:
    """d2l's train_ch6: it initializes the weights itself (Xavier), then trains."""

    def init_weights(m: nn.Module) -> None:
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)  # type: ignore[arg-type]

    net.apply(init_weights)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.9)
    loss = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        net.train()
        for X, y in train_iter:
            if zero:
                optimizer.zero_grad()
            loss(net(X.to(device)), y.to(device)).backward()
            optimizer.step()


def reinitializes_each_epoch(
    net: nn.Module, train_iter: Any, num_epochs: int, seeded: bool = False
) -> None:
    """Draws new weights at every epoch's start (seeded: the same ones each time, which at
    lr 0 change nothing): the params are written between steps."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.9)
    for _ in range(num_epochs):
        if seeded:
            torch.manual_seed(0)
        nn.init.xavier_uniform_(net[-1].weight)  # type: ignore[index]
        for X, y in train_iter:
            optimizer.zero_grad()
            F.cross_entropy(net(X), y).backward()
            optimizer.step()


def test_loops_as_written_weights_the_loop_initializes_before_it_trains_are_its_own() -> None:
    # net.apply(init_weights) before the first step was refused as "it updates them outside
    # optimizer.step()": the book's train_ch6 could not be audited
    report = audit.training_loop(train_ch6, **LENET)
    assert report.ok, str(report)
    twin = audit.training_loop(partial(train_ch6, zero=False), **LENET)
    assert [r.pitfall for r in twin.failures] == ["grad-zeroing"], str(twin)
    with pytest.raises(audit.TargetError, match=r"outside optimizer\.step\(\)"):
        audit.training_loop(reinitializes_each_epoch, **LENET)
    # the same values written again each epoch (a seeded init, a checkpoint loaded again) are
    # no change at lr 0, but a write outside a step all the same: it never trains past one
    with pytest.raises(audit.TargetError, match=r"outside optimizer\.step\(\)"):
        audit.training_loop(partial(reinitializes_each_epoch, seeded=True), **LENET)


class StatefulRNN(nn.Module):
    """d2l's RNNModel: it takes the state the loop carries, (layers, batch, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.rnn = nn.RNN(4, 8, batch_first=True)
        self.out = nn.Linear(8, 5)

    def forward(self, X: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        Y, state = self.rnn(self.embed(X), state)
        return self.out(Y).reshape(-1, 5), state


def carries_a_state(net: nn.Module, train_iter: Any, num_epochs: int) -> None:
    """d2l's train_epoch_ch8 with random sampling: a fresh state each batch, passed in."""
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    for _ in range(num_epochs):
        for X, Y in train_iter:
            state = torch.zeros(1, X.shape[0], 8)
            y_hat, _ = net(X, state)
            optimizer.zero_grad()
            F.cross_entropy(y_hat, Y.reshape(-1)).backward()
            optimizer.step()


def test_loops_as_written_a_forward_that_cannot_take_one_row_alone_is_an_error_not_a_crash() -> (
    None
):
    # the state is batch-sized: one row alone is refused by the RNN; that raised out of the audit
    example = (torch.tensor([1, 2, 3, 4]), torch.tensor([2, 3, 4, 0]))
    report = audit.training_loop(carries_a_state, model=StatefulRNN, example=example)
    assert not report.ok and "cannot be split into rows" in report.error, str(report)


def does_nothing(net: nn.Module, train_iter: Any, num_epochs: int) -> None:
    """Never calls the model, never steps: a loop that trains a scratch model of its own."""
    w = torch.zeros(3, requires_grad=True)
    for _ in range(num_epochs):
        for _batch in train_iter:
            w.sum().backward()


def test_loops_as_written_a_loop_that_neither_feeds_the_model_nor_steps_is_refused() -> None:
    # it passed every property, on nothing (exit 0 without judging)
    with pytest.raises(audit.TargetError, match="nothing to judge"):
        audit.training_loop(does_nothing, **LENET)


def train_epoch_ch3(
    net: nn.Module, train_iter: Any, num_epochs: int, updater: Any, summed: bool = False
) -> None:
    """d2l's train_epoch_ch3 with a torch optimizer as its updater: the per-row losses of
    nn.CrossEntropyLoss(reduction='none'), averaged (l.mean()), or summed at the mean's lr."""
    loss = nn.CrossEntropyLoss(reduction="none")
    for _ in range(num_epochs):
        net.train()
        for X, y in train_iter:
            l = loss(net(X), y)
            if isinstance(updater, torch.optim.Optimizer):
                updater.zero_grad()
                (l.sum() if summed else l.mean()).backward()
                updater.step()


def test_loops_as_written_d2ls_updater_is_the_optimizer() -> None:
    # `updater` (and `trainer`) name the optimizer, as the book names it
    report = audit.training_loop(train_epoch_ch3, **LENET)
    assert report.ok, str(report)
    twin = audit.training_loop(partial(train_epoch_ch3, summed=True), **LENET)
    assert [r.pitfall for r in twin.failures] == ["mean-vs-sum"], str(twin)


def decays_tokens(
    model: nn.Module, train_dataloader: Any, optimizer: Any, num_epochs: int, per_row: bool = False
) -> None:
    """Each batch's summed token loss over its count of targets, then weight decay added to
    .grad by hand; or (per_row) the mean of each row's own token mean, a mean of means."""
    for _ in range(num_epochs):
        for batch in train_dataloader:
            labels = batch.pop("labels")
            logits = model(**batch).logits
            if per_row:
                loss = torch.stack(
                    [
                        L.next_token_loss(logits[i : i + 1], labels[i : i + 1])
                        / (labels[i, 1:] != -100).sum()
                        for i in range(len(labels))
                    ]
                ).mean()
            else:
                loss = L.next_token_loss(logits, labels) / (labels[:, 1:] != -100).sum()
            optimizer.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.grad.add_(p, alpha=1e-2)  # type: ignore[union-attr]
            optimizer.step()


def test_loops_as_written_weight_decay_by_hand_keeps_each_rows_count_of_targets() -> None:
    # the references beside the decay are the token loss's own, weighed by each row's targets
    # (3 and 1): the loop's own steps alone weighed them alike, a false alarm on the right
    # loop and a pass of the mean of means
    options = {**TOKENS, "model": L.LogitsOnlyLM}
    report = audit.training_loop(decays_tokens, max_examples=EXAMPLES, **options)
    assert report.ok, str(report)
    twin = audit.training_loop(partial(decays_tokens, per_row=True), max_examples=15, **options)
    assert [r.pitfall for r in twin.failures] == ["micro-batch-accumulation"], str(twin)


def regresses_on_a_dict(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, zero: bool = True
) -> None:
    """Batches as dicts whose value to predict is under a name of the loop's own ("price")."""
    for _ in range(num_epochs):
        for batch in loader:
            if zero:
                optimizer.zero_grad()
            F.mse_loss(model(batch["x"]), batch["price"]).backward()
            optimizer.step()


def test_loops_as_written_a_dict_example_that_names_no_labels_is_judged_on_the_loops_own() -> None:
    # no label key to guess a loss by: it raised the audit's own AssertionError
    options = {
        "model": lambda: nn.Linear(3, 1),
        "example": {"x": torch.tensor([1.0, -2.0, 0.5]), "price": torch.tensor([0.7])},
    }
    report = audit.training_loop(regresses_on_a_dict, **options)
    assert report.ok, str(report)
    assert "its example names no labels" in str(report)
    twin = audit.training_loop(partial(regresses_on_a_dict, zero=False), **options)
    assert [r.pitfall for r in twin.failures] == ["grad-zeroing"], str(twin)


def feeds_labels_by_position(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    per_batch_mean: bool = False,
) -> None:
    """The model's own loss, its labels fed by position (`model(ids, mask, labels)`); each
    window's micro-batches weighed by their counts of targets (num_items_in_batch), or (the
    twin) each micro-batch's mean divided by the window's batches."""
    for _ in range(num_epochs):
        batches = list(loader)
        for start in range(0, len(batches), gradient_accumulation_steps):
            window = batches[start : start + gradient_accumulation_steps]
            count = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
            for b in window:
                if per_batch_mean:
                    loss = model(b["input_ids"], b["attention_mask"], b["labels"]).loss
                    loss = loss / len(window)
                else:
                    loss = model(b["input_ids"], b["attention_mask"], b["labels"], count).loss
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def test_loops_as_written_labels_fed_by_position_are_each_rows_own() -> None:
    # they were read as the example's for every row (the contrast row counts 1 target, not
    # 3): a false alarm on the right loop (micro-batch-accumulation), and, before b8bfa69, a
    # TypeError out of the audit
    report = audit.training_loop(feeds_labels_by_position, max_examples=EXAMPLES, **TOKENS)
    assert report.ok, str(report)
    twin = audit.training_loop(
        partial(feeds_labels_by_position, per_batch_mean=True), max_examples=15, **TOKENS
    )
    assert [r.pitfall for r in twin.failures] == ["micro-batch-accumulation"], str(twin)
    assert "micro-batches' mean losses, whose counts of targets differ ([3, 1])" in str(twin)


def multiplies_grads(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    nominal: bool = False,
    shifted: bool = False,
    smoothing: float = 0.0,
) -> None:
    """fairseq's way: each batch's token loss summed, then .grad multiplied by 1 / the targets
    it counted (optimizer.multiply_grads), then a clip; or (nominal) by 1 / a full batch's
    targets, too small a step on a short last batch. shifted: it scores every position's
    next token but the last's, and counts those. smoothing: fairseq's label-smoothed
    cross-entropy, which no guessed loss is."""
    for _ in range(num_epochs):
        for src, tgt in loader:
            optimizer.zero_grad()
            logits, _ = model(src)
            if shifted:
                logits, tgt = logits[:, :-1], tgt[:, 1:]
            flat = logits.flatten(0, 1)
            loss = F.cross_entropy(flat, tgt.flatten(), reduction="sum", label_smoothing=smoothing)
            loss.backward()
            sample_size = loader.batch_size * tgt.shape[1] if nominal else tgt.numel()
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(1.0 / sample_size)
            nn.utils.clip_grad_norm_(model.parameters(), 25.0)
            optimizer.step()


def averages_over_a_world_size(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, world_size: int = 2
) -> None:
    """Twin: an L1 loss's mean, then each .grad divided by a world size of 2 in a single
    process (DDP's average written by hand where DDP already averages, or no DDP runs): every
    step half the mean. Correct at world_size=1."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            F.l1_loss(model(X), y).backward()
            for p in model.parameters():
                if p.grad is not None:
                    p.grad /= world_size
            optimizer.step()


def test_loops_as_written_grads_multiplied_by_one_over_the_targets_are_the_mean() -> None:
    """A review's false alarm: with a loss no guess is (label-smoothed), each row's reference
    is the loop's own gradient on one row, which was read as backward() left it (summed over
    the row's tokens, before the loop's division): a correct loop failed mean-vs-sum at 1 /
    its tokens. It is read as the loop handed it on, divided. (Plain cross-entropy on the
    tags fed apart from the ids is token cross-entropy's, guessed and confirmed.)"""
    plain = audit.training_loop(multiplies_grads, **GPT)
    assert plain.ok and "the loop's own gradient" not in plain.note, str(plain)
    smoothed = partial(multiplies_grads, smoothing=0.1)
    report = audit.training_loop(smoothed, **GPT)
    assert report.ok, str(report)
    assert "the loop's own gradient on that row" in report.note, report.note
    # its targets counted after a shift (3 of each row's 4): the second code review's false
    # alarm, at 1 / 3 of the row's labels
    shifted = audit.training_loop(partial(smoothed, shifted=True), **GPT)
    assert shifted.ok, str(shifted)
    twin = audit.training_loop(partial(smoothed, nominal=True), **GPT)
    assert "short-last-batch" in [r.pitfall for r in twin.failures], str(twin)
    # a division by another number than the step's targets (a world size in one process) is
    # the loop's scale, as backward() left it, not its rows': the code review's false pass
    regression = {"model": L.D2LStyleModel, "example": L.regression_example}
    right = audit.training_loop(partial(averages_over_a_world_size, world_size=1), **regression)
    assert right.ok, str(right)
    halved = audit.training_loop(averages_over_a_world_size, **regression)
    assert [r.pitfall for r in halved.failures] == ["mean-vs-sum"], str(halved)
