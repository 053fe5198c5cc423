"""Live demonstrations: each pitfall's wrong variant beside the correct code, on the book's data.

Each `demo_*` measures what happens and returns `Evidence`: what the catalogue says should
happen, what was observed, whether the two agree, the figures behind it, and loss curves where
there are some. `python -m linreg pitfalls` runs them all; its exit code is 1 if any disagrees,
so the command doubles as a compatibility check across torch versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from linreg import accumulate, checks, concise, data, model, optim, pitfalls, train
from linreg._book import TRUE_W

N, B, UNEVEN_N = 1000, 10, 1003  # the book's n and batch size; an n with n % B = 3


@dataclass
class Evidence:
    """What a demonstration expected, what it observed, and whether they agree."""

    id: str
    expected: str
    observed: str
    ok: bool
    figures: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None  # why it could not run here (then ok says nothing)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _book(n: int = N, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    return data.book_data(n, dtype=dtype)


def _gap(a: list[tuple[Tensor, Tensor]], b: list[tuple[Tensor, Tensor]]) -> float:
    return max(
        float((x - y).abs().max())
        for pa, pb in zip(a, b, strict=True)
        for x, y in zip(pa, pb, strict=True)
    )


def demo_uneven_batches() -> Evidence:
    def drop_last_epochs(iterate: Callable[..., Any]) -> Callable[[], list[list[int]]]:
        gen = _gen()
        return lambda: checks.epoch_indices(
            lambda b, f, l: iterate(b, f, l, drop_last=True, generator=gen), UNEVEN_N, B
        )

    skipped = UNEVEN_N - sum(len(bt) for bt in drop_last_epochs(data.data_iter)())
    epochs: dict[str, int | None] = {}
    for iterate in (
        data.data_iter,
        pitfalls.data_iter_never_shuffled,
        pitfalls.data_iter_shuffled_once,
    ):
        pitfalls.reset_shuffled_once()
        try:
            epochs[iterate.__name__] = checks.check_every_sample_seen(
                drop_last_epochs(iterate), UNEVEN_N, 100
            )
        except checks.CheckFailed:
            epochs[iterate.__name__] = None
    starved = [k for k, v in epochs.items() if v is None]
    ok = skipped == UNEVEN_N % B and starved == [
        "data_iter_never_shuffled",
        "data_iter_shuffled_once",
    ]
    return Evidence(
        "uneven-batches",
        f"a drop_last epoch of n={UNEVEN_N}, b={B} skips {UNEVEN_N % B} samples; reshuffled, all "
        "are seen within a few epochs; never shuffled or shuffled once, some never are",
        f"skipped {skipped} per epoch; all seen after {epochs['data_iter']} epochs with "
        f"data_iter; not within 100 epochs with {', '.join(starved) or 'none'}",
        ok,
        {"skipped_per_epoch": skipped, "epochs_to_see_all": epochs},
    )


def _trajectory(fn: Callable[..., Any], X: Tensor, y: Tensor, lr: float, **kw: Any) -> list[Any]:
    t = checks.Trajectory()
    w, b = model.init_params(X.shape[1], generator=_gen(1), dtype=X.dtype)
    fn(X, y, lr=lr, batch_size=B, num_epochs=1, generator=_gen(), params=(w, b), on_step=t, **kw)
    return t.steps


def demo_short_last_batch() -> Evidence:
    X, y = _book(UNEVEN_N)
    oracle = _trajectory(concise.train_concise, X, y, 0.015)  # MSELoss mean at lr / 2
    ours = _trajectory(train.train, X, y, 0.03)
    book = _trajectory(pitfalls.train_nominal_batch_size, X, y, 0.03)
    # the last step's size, relative to the one with the right divisor
    last = [float((s[-1][0] - s[-2][0]).norm()) for s in (book, ours)]
    ratio = last[0] / last[1]
    gaps = {"train": _gap(ours, oracle), "train_nominal_batch_size": _gap(book, oracle)}
    ok = (
        math.isclose(ratio, (UNEVEN_N % B) / B, rel_tol=1e-9)
        and gaps["train"] < 1e-12 < gaps["train_nominal_batch_size"]
    )
    return Evidence(
        "short-last-batch",
        f"n={UNEVEN_N}, b={B}: the nominal divisor makes the last step {UNEVEN_N % B}/{B} of its "
        "size; train matches MSELoss + optim.SGD at lr/2 to 1e-12, the book's loop does not",
        f"last step ratio {ratio:.6f}; largest gap to the oracle: train {gaps['train']:.1e}, "
        f"nominal {gaps['train_nominal_batch_size']:.1e}",
        ok,
        {"last_step_ratio": ratio, "gap_to_oracle": gaps},
    )


def _params_with_grads() -> list[Tensor]:
    w, b = model.init_params(2, generator=_gen())
    X, y = _book(B, torch.float32)
    ((X @ w + b - y) ** 2 / 2).sum().backward()  # type: ignore[no-untyped-call]
    return [w, b]


def demo_rebinding() -> Evidence:
    changed = {}
    error = ""
    for step in (optim.sgd, pitfalls.sgd_rebinding):
        params = _params_with_grads()
        before = params[0].detach().clone()
        try:
            step(params, 0.03, B)
        except AttributeError as e:
            error = str(e)
        changed[step.__name__] = not torch.equal(before, params[0].detach())
    ints, tensors = [1, 2], [torch.tensor(1), torch.tensor(2)]
    for p in ints:
        p -= 4
    for t in tensors:
        t -= 4
    ok = (
        changed == {"sgd": True, "sgd_rebinding": False}
        and "zero_" in error
        and ints == [1, 2]
        and [int(t) for t in tensors] == [-3, -2]
    )
    return Evidence(
        "rebinding",
        "sgd changes the caller's w; param = param - ... leaves it unchanged and the book's next "
        "line raises AttributeError; -= changes a list of tensors but not a list of ints",
        f"caller's w changed: sgd {changed['sgd']}, rebinding {changed['sgd_rebinding']}; "
        f"AttributeError: {error}; ints after -= 4: {ints}, tensors: {[int(t) for t in tensors]}",
        ok,
        {"changed": changed, "error": error},
    )


def demo_no_grad_update() -> Evidence:
    error = ""
    try:
        pitfalls.sgd_without_no_grad(_params_with_grads(), 0.03, B)
    except RuntimeError as e:
        error = str(e)
    X, y = _book(N, torch.float32)
    result = train.train(X, y, generator=_gen())
    leaves = all(p.is_leaf and p.grad_fn is None for p in (result.w, result.b))
    params = _params_with_grads()
    pitfalls.sgd_out_of_place_in_grad_mode(params, 0.03, B)
    grad_fn = type(params[0].grad_fn).__name__ if params[0].grad_fn is not None else None
    ok = "leaf Variable that requires grad" in error and leaves and grad_fn is not None
    return Evidence(
        "no-grad-update",
        "without no_grad the in-place update raises the leaf RuntimeError; with it the params "
        f"stay leaves after {result.num_steps} steps; out of place in grad mode they get a grad_fn",
        f"RuntimeError: {error.splitlines()[0] if error else 'none'}; leaves after "
        f"{result.num_steps} steps: {leaves}; out-of-place grad_fn: {grad_fn}",
        ok,
        {"error": error, "leaves_after_training": leaves, "out_of_place_grad_fn": grad_fn},
    )


def demo_mean_vs_sum() -> Evidence:
    X, y = _book(UNEVEN_N)
    mean = _trajectory(concise.train_concise, X, y, 0.03)
    summed = _trajectory(concise.train_concise, X, y, 0.03, reduction="sum")
    nominal = _trajectory(pitfalls.train_concise_sum_nominal_lr, X, y, 0.03, reduction="sum")
    gaps = {"lr/B_actual": _gap(summed, mean), "lr/B_nominal": _gap(nominal, mean)}
    Xn, yn = _book(N)
    ratio = float(
        torch.nn.functional.mse_loss(Xn[:, :1], yn, reduction="sum")
        / torch.nn.functional.mse_loss(Xn[:, :1], yn)
    )
    # The unscaled runs in float32, as the book trains: there the divergence reaches inf.
    X32, y32 = _book(N, torch.float32)
    unscaled: dict[str, list[float]] = {}
    first_inf: dict[str, int | None] = {}
    for batch in (10, 50, 100):
        key = f"sum, lr 0.03, B={batch}"
        first_inf[key] = None

        def watch(step: int, w: Tensor, b: Tensor, key: str = key) -> None:
            # the full-data sum loss after this step, in float32 as the book computes it
            if first_inf[key] is None and math.isinf(float(((X32 @ w + b - y32) ** 2).sum())):
                first_inf[key] = step

        # lr = 0.03 B divided by the nominal B = 1000 / 10, 50, 100 exactly: SGD at 0.03 on the sum
        unscaled[key] = pitfalls.train_concise_sum_nominal_lr(
            X32,
            y32,
            lr=0.03 * batch,
            batch_size=batch,
            generator=_gen(),
            reduction="sum",
            params=model.init_params(2, generator=_gen(1)),
            on_step=watch,
        ).losses
    scaled = concise.train_concise(
        X32,
        y32,
        batch_size=10,
        generator=_gen(),
        reduction="sum",
        params=model.init_params(2, generator=_gen(1)),
    ).losses
    finals = {k: v[-1] for k, v in unscaled.items()}
    ok = (
        gaps["lr/B_actual"] < 1e-12 < gaps["lr/B_nominal"]
        and math.isclose(ratio, N, rel_tol=1e-12)
        and all(not (v < 100 * scaled[-1]) for k, v in finals.items() if "B=10" not in k)
    )
    return Evidence(
        "mean-vs-sum",
        f"sum at lr/B_actual follows mean at lr to 1e-12 (n={UNEVEN_N}); at lr/B_nominal it does "
        f"not; sum loss = {N} x mean loss; unscaled sum ends >= 100x worse for B = 50, 100",
        f"gap to mean: lr/B_actual {gaps['lr/B_actual']:.1e}, lr/B_nominal "
        f"{gaps['lr/B_nominal']:.1e}; sum/mean = {ratio:.6f}; final sum losses: "
        + ", ".join(f"B={k.rsplit('=', 1)[1]} {v:.4g}" for k, v in finals.items())
        + f" (lr/B: {scaled[-1]:.4g}); the sum loss first overflows to inf at step: "
        + ", ".join(f"B={k.rsplit('=', 1)[1]} {v}" for k, v in first_inf.items()),
        ok,
        {
            "gap_to_mean": gaps,
            "sum_over_mean": ratio,
            "final_sum_loss_unscaled": finals,
            "final_sum_loss_scaled": scaled[-1],
            "first_non_finite_step": first_inf,
        },
        {**unscaled, "sum, lr 0.03 / B, B=10": scaled},
    )


def _train_losses(X: Tensor, y: Tensor, epochs: int = 3) -> list[float]:
    w, b = model.init_params(X.shape[1], generator=_gen(1), dtype=X.dtype)
    return train.train(X, y, num_epochs=epochs, generator=_gen(), params=(w, b)).losses


def demo_grad_zeroing() -> Evidence:
    X, y = _book(N)
    right = _train_losses(X, y)
    with pitfalls.swap("optim.sgd", pitfalls.sgd_without_zero_grad):
        wrong = _train_losses(X, y)
    ok = right[-1] < 1e-3 and not (wrong[-1] < 100 * right[-1])
    return Evidence(
        "grad-zeroing",
        "without grad.zero_() each step uses the sum of all gradients so far: after 3 epochs the "
        "loss is >= 100x the correct run's",
        f"loss after 3 epochs: with zeroing {right[-1]:.3g}, without {wrong[-1]:.3g}",
        ok,
        {"loss_with_zeroing": right[-1], "loss_without_zeroing": wrong[-1]},
        {"with grad.zero_()": right, "without grad.zero_()": wrong},
    )


def demo_backward_twice() -> Evidence:
    X, y = _book(N)
    w, b = model.init_params(2, generator=_gen(), dtype=X.dtype)
    l = ((X @ w + b - y) ** 2 / 2).sum()
    l.backward()  # type: ignore[no-untyped-call]
    error = ""
    try:
        l.backward()  # type: ignore[no-untyped-call]
    except RuntimeError as e:
        error = str(e)
    once = torch.autograd.grad(((X @ w + b - y) ** 2 / 2).sum(), w)[0]
    w.grad = None
    l = ((X @ w + b - y) ** 2 / 2).sum()
    l.backward(retain_graph=True)  # type: ignore[no-untyped-call]
    l.backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None
    doubled = float((w.grad / once).mean())
    v = torch.zeros(2, requires_grad=True)
    lin = (v + 1).sum()
    lin.backward()
    lin.backward()  # saves nothing: no error
    seed_error = ""
    try:
        pitfalls.train_concat_backward_every_batch(X, y, batch_size=B)
    except RuntimeError as e:
        seed_error = str(e)
    ok = (
        "second time" in error
        and math.isclose(doubled, 2.0, rel_tol=1e-12)
        and v.grad is not None
        and bool((v.grad == 2).all())
        and "second time" in seed_error
    )
    return Evidence(
        "backward-twice",
        "a second backward through the squared loss raises; with retain_graph the grads double; "
        "(w + 1).sum() backpropagates twice; the seed's 2nd attempt raises at batch 2",
        f"RuntimeError: {error.split('(')[0].strip()}; retain_graph grad ratio {doubled:.12g}; "
        f"(w + 1).sum() twice: grad {v.grad.tolist() if v.grad is not None else None}; seed's "
        f"loop: {'RuntimeError' if seed_error else 'no error'}",
        ok,
        {"error": error, "retain_graph_ratio": doubled},
    )


def demo_once_per_epoch() -> Evidence:
    X, y = _book(N)
    runs = {}
    for fn in (pitfalls.train_once_per_epoch_seed, accumulate.train_full_batch):
        w, b = model.init_params(2, generator=_gen(1), dtype=X.dtype)
        runs[fn.__name__] = fn(X, y, num_epochs=300, generator=_gen(), params=(w, b))
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], dim=1)
    theta = torch.linalg.lstsq(A, y).solution.reshape(-1)
    dist = {
        k: float((torch.cat([r.w.detach().reshape(-1), r.b.detach()]) - theta).norm())
        for k, r in runs.items()
    }
    l, count = pitfalls.accumulate_losses_seed(
        data.data_iter(B, X, y, generator=_gen()), *model.init_params(2, dtype=X.dtype)
    )
    seed_loss = runs["train_once_per_epoch_seed"].losses[-1]
    full_loss = runs["train_full_batch"].losses[-1]
    ok = (
        l.shape == (B, 1)
        and count == N // B + 1
        and dist["train_full_batch"] < 1e-2 < dist["train_once_per_epoch_seed"]
    )
    return Evidence(
        "once-per-epoch",
        "the seed's accumulated loss holds only the 1st batch (10 of 1000 rows, count 101); "
        "after 300 epochs it is far from lstsq, full-batch GD is within 1e-2",
        f"accumulated {l.shape[0]} rows, count {count}; after 300 epochs loss {seed_loss:.4g} "
        f"(seed) vs {full_loss:.3g} (full batch); distance to lstsq "
        f"{dist['train_once_per_epoch_seed']:.3g} vs {dist['train_full_batch']:.2g}",
        ok,
        {
            "accumulated_rows": l.shape[0],
            "count": count,
            "distance_to_lstsq": dist,
            "final_loss": {k: r.losses[-1] for k, r in runs.items()},
        },
        {
            "seed's once-per-epoch": runs["train_once_per_epoch_seed"].losses,
            "full-batch GD": runs["train_full_batch"].losses,
        },
    )


def demo_label_shape() -> Evidence:
    X, y = _book(N)
    flat = y.reshape(-1)  # (n,)
    shape = tuple(pitfalls.squared_loss_no_reshape(X[:, :1], flat).shape)
    right = train.train(X, flat, generator=_gen())
    with pitfalls.swap("loss.squared_loss", pitfalls.squared_loss_no_reshape):
        wrong = train.train(X, flat, generator=_gen())
    ws = {
        k: [round(v, 4) for v in r.w.detach().reshape(-1).tolist()]
        for k, r in (("with reshape", right), ("without reshape", wrong))
    }
    err = float((wrong.w.detach().reshape(-1) - torch.tensor(TRUE_W).double()).abs().max())
    ok = shape == (N, N) and err > 1.0 and right.losses[-1] < 1e-3
    return Evidence(
        "label-shape",
        f"(y_hat - y) with y_hat ({N}, 1) and y ({N},) is ({N}, {N}); training on it ends far "
        "from true_w = [2, -3.4]",
        f"shape {shape}; final w with reshape {ws['with reshape']}, "
        f"without {ws['without reshape']}",
        ok,
        {"broadcast_shape": list(shape), "final_w": ws},
        {"with reshape": right.losses, "without reshape": wrong.losses},
    )


def demo_eval_no_grad() -> Evidence:
    X, y = _book(N, torch.float32)
    w, b = model.init_params(2, generator=_gen())
    held = {}
    for fn in (pitfalls.full_loss_with_grad, train.full_loss):
        _, saved = checks.saved_for_backward(partial(fn, X, y, w, b), [X, y, w, b])
        held[fn.__name__] = {"saved_tensors": saved.count, "bytes_beyond_inputs": saved.new_nbytes}
    ok = held["full_loss_with_grad"] == {"saved_tensors": 2, "bytes_beyond_inputs": 4 * N} and held[
        "full_loss"
    ] == {"saved_tensors": 0, "bytes_beyond_inputs": 0}
    g, n = held["full_loss_with_grad"], held["full_loss"]
    return Evidence(
        "eval-no-grad",
        f"in grad mode the full-data loss saves X and the ({N}, 1) residual: {4 * N} bytes beyond "
        "the inputs in float32; under no_grad nothing",
        f"grad mode: {g['saved_tensors']} tensors saved, {g['bytes_beyond_inputs']} bytes; "
        f"no_grad: {n['saved_tensors']} tensors, {n['bytes_beyond_inputs']} bytes",
        ok,
        held,
    )


def demo_micro_batch_accumulation() -> Evidence:
    X, y = _book(2 * B + 3)
    sizes = [B, B, 3]
    errors = {}
    for fn in (accumulate.accumulate_grad, pitfalls.accumulate_grad_mean_of_means):
        w, b = model.init_params(2, generator=_gen(), dtype=X.dtype)
        want = torch.autograd.grad(((X @ w + b - y) ** 2 / 2).mean(), (w, b))
        fn(list(zip(torch.split(X, sizes), torch.split(y, sizes), strict=True)), w, b)
        errors[fn.__name__] = max(
            float((p.grad - g).abs().max())  # type: ignore[operator]
            for p, g in zip((w, b), want, strict=True)
        )
    ok = errors["accumulate_grad"] < 1e-12 < errors["accumulate_grad_mean_of_means"]
    return Evidence(
        "micro-batch-accumulation",
        f"over micro-batches of sizes {sizes}, sum / total count gives the full-batch gradient "
        "(1e-12); the mean of means does not",
        f"largest gradient error: sum / count {errors['accumulate_grad']:.1e}, mean of means "
        f"{errors['accumulate_grad_mean_of_means']:.3g}",
        ok,
        {"gradient_error": errors, "micro_batch_sizes": sizes},
    )


def demo_distributed_sampler() -> Evidence:
    from torch.utils.data import DistributedSampler

    from linreg import distributed

    world = 2

    def samplers() -> list[DistributedSampler[int]]:
        return [distributed.index_sampler(UNEVEN_N, world_size=world, rank=r) for r in range(world)]

    counts: dict[int, int] = {}
    for s in samplers():
        for i in s:
            counts[i] = counts.get(i, 0) + 1
    twice = sorted(i for i, c in counts.items() if c == 2)
    first = torch.randperm(UNEVEN_N, generator=_gen(0)).tolist()[: len(twice)]
    same = {}
    for name, epochs_of in (
        ("set_epoch", distributed.sampler_epochs),
        ("no set_epoch", pitfalls.sampler_epochs_without_set_epoch),
    ):
        orders = [epochs_of(s, 3) for s in samplers()]
        same[name] = all(o[0] == o[e] for o in orders for e in (1, 2))
    shards = [
        len(distributed.shard_indices(UNEVEN_N, rank=r, world_size=world, epoch=0))
        for r in range(world)
    ]
    ok = (
        twice == sorted(first)
        and len(twice) == 1
        and same == {"set_epoch": False, "no set_epoch": True}
    )
    return Evidence(
        "distributed-sampler",
        f"n={UNEVEN_N} over {world} ranks: the sampler repeats 1 sample (the permutation's "
        "first); without set_epoch 3 epochs share one order, with it they differ",
        f"repeated {twice} (first of the permutation: {first}); epochs identical without "
        f"set_epoch: {same['no set_epoch']}, with: {same['set_epoch']}; shard_iter shard "
        f"sizes {shards}, no repeats",
        ok,
        {"repeated": twice, "epochs_identical": same, "shard_sizes": shards},
    )


def demo_ddp_sum() -> Evidence:
    from linreg import distributed

    if not distributed.gloo_available():
        return Evidence("ddp-sum", "", "", True, skipped="torch.distributed gloo is unavailable")
    case = {"n": N, "d": 2, "batch_size": B // 2, "lr": 0.03, "num_epochs": 1, "seed": 0}
    cases = [
        {**case, "worker": "linreg.distributed:ddp_trajectory", "reduction": "mean"},
        {**case, "worker": "linreg.distributed:ddp_trajectory", "reduction": "sum"},
        {**case, "worker": "linreg.pitfalls:ddp_trajectory_sum_unscaled", "reduction": "sum"},
    ]
    mean, summed, unscaled = distributed.spawn(distributed.ddp_cases, 2, cases, timeout=120)[0]
    one = {
        r: distributed.single_process_trajectory({**case, "reduction": r}, 2)
        for r in ("mean", "sum")
    }
    half = distributed.single_process_trajectory({**case, "reduction": "sum", "lr": 0.015}, 2)
    w0 = distributed._linear(case).weight.detach().reshape(-1)  # every run's start
    ratio = float((unscaled[0][0] - w0).norm() / (one["sum"][0][0] - w0).norm())
    gaps = {
        "mean": _gap(mean, one["mean"]),
        "sum at lr*R": _gap(summed, one["sum"]),
        "sum at lr vs lr/R": _gap(unscaled, half),
    }
    ok = max(gaps.values()) < 1e-12 and math.isclose(ratio, 0.5, rel_tol=1e-9)
    return Evidence(
        "ddp-sum",
        "2 ranks, book data, batch 5 per rank: DDP with mean follows one process on the union; "
        "sum at the same lr takes steps 1/2 the size; sum at lr * 2 matches",
        f"first step ratio (sum at lr, DDP / one process) {ratio:.6f}; largest gaps: "
        + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()),
        ok,
        {"first_step_ratio": ratio, "gaps": gaps},
    )


DEMOS: dict[str, Callable[[], Evidence]] = {
    "uneven-batches": demo_uneven_batches,
    "short-last-batch": demo_short_last_batch,
    "rebinding": demo_rebinding,
    "no-grad-update": demo_no_grad_update,
    "mean-vs-sum": demo_mean_vs_sum,
    "grad-zeroing": demo_grad_zeroing,
    "backward-twice": demo_backward_twice,
    "once-per-epoch": demo_once_per_epoch,
    "label-shape": demo_label_shape,
    "eval-no-grad": demo_eval_no_grad,
    "micro-batch-accumulation": demo_micro_batch_accumulation,
    "distributed-sampler": demo_distributed_sampler,
    "ddp-sum": demo_ddp_sum,
}
