"""A run depends on its arguments and its generator, nothing else; the defaults are the book's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from linreg import accumulate, checks, concise, data, model, train
from linreg.testing import strategies as sts

runs = sts.runs


def same_run(a: train.TrainResult, b: train.TrainResult) -> bool:
    return (
        torch.equal(a.w, b.w)
        and torch.equal(a.b, b.b)
        and a.losses == b.losses
        and a.num_steps == b.num_steps
    )


def g0() -> torch.Generator:
    return torch.Generator().manual_seed(0)


BOOK = {"lr": 0.03, "batch_size": 10, "num_epochs": 3, "drop_last": False}


def test_the_training_defaults_are_the_books() -> None:
    X, y = data.book_data(1003)  # uneven, so that drop_last shows
    assert same_run(
        train.train(X, y, generator=g0()),
        train.train(X, y, **BOOK, grad="autograd", generator=g0()),
    )
    assert same_run(
        concise.train_concise(X, y, generator=g0()),
        concise.train_concise(X, y, **BOOK, reduction="mean", loader="data_iter", generator=g0()),
    )
    X, y = data.book_data(25)  # the seed note's full-batch loop runs 300 epochs
    assert same_run(
        accumulate.train_full_batch(X, y, generator=g0()),
        accumulate.train_full_batch(X, y, lr=0.03, batch_size=10, num_epochs=300, generator=g0()),
    )


def test_the_data_defaults_are_the_books() -> None:
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            data.book_data(), data.book_data(1000, seed=0, dtype=torch.float32), strict=True
        )
    )
    X, y = data.synthetic_data([2, -3.4], 4.2, 13, generator=g0())
    want = data.synthetic_data([2, -3.4], 4.2, 13, noise=0.01, generator=g0())
    assert torch.equal(X, want[0]) and torch.equal(y, want[1])
    batches = list(data.data_iter(3, X, y, generator=g0()))
    explicit = list(data.data_iter(3, X, y, shuffle=True, drop_last=False, generator=g0()))
    assert [torch.equal(a[0], b[0]) for a, b in zip(batches, explicit, strict=True)] == [True] * 5
    w, b = model.init_params(3, generator=g0())
    assert w.dtype == b.dtype == torch.float32
    assert torch.equal(w, model.init_params(3, generator=g0(), dtype=torch.float32)[0])


@given(
    sts.seeds,
    st.integers(1, 4),
    st.integers(1, 50),
    st.floats(0, 1),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_synthetic_data_is_the_books_recipe_drawn_from_the_generator(
    seed: int, d: int, n: int, noise: float, dtype: torch.dtype
) -> None:
    # The oracle: X ~ N(0, 1), then y = Xw + b + noise * N(0, 1), both from the one generator.
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=dtype)
    b = float(torch.randn((), generator=g))
    X, y = data.synthetic_data(w, torch.tensor([b]), n, noise=noise, generator=g)
    oracle = torch.Generator().manual_seed(seed)
    torch.randn(d, generator=oracle, dtype=dtype), torch.randn((), generator=oracle)
    want_X = torch.randn(n, d, generator=oracle, dtype=dtype)
    eps = torch.randn(n, generator=oracle, dtype=dtype)
    assert X.dtype == y.dtype == dtype and y.shape == (n, 1)
    assert torch.equal(X, want_X)
    torch.testing.assert_close(y, (want_X @ w + b + noise * eps).reshape(-1, 1))


def test_book_data_is_synthetic_data_from_its_seed() -> None:
    for dtype in (torch.float32, torch.float64):
        X, y = data.book_data(57, seed=3, dtype=dtype)
        want = data.synthetic_data(
            torch.tensor(data.TRUE_W, dtype=dtype),
            data.TRUE_B,
            57,
            generator=torch.Generator().manual_seed(3),
        )
        assert torch.equal(X, want[0]) and torch.equal(y, want[1]) and X.dtype == dtype
    assert not torch.equal(data.book_data(57, seed=4)[0], data.book_data(57, seed=3)[0])


def test_a_list_of_weights_gives_the_books_float32() -> None:
    X, y = data.synthetic_data([2, -3.4], 4.2, 5)  # ints and floats, as the book writes them
    assert X.dtype == y.dtype == torch.float32


def test_a_default_device_set_elsewhere_does_not_move_the_data() -> None:
    w = torch.tensor([1.0, 2.0])
    X, y = data.synthetic_data(w, 0.5, 9, generator=torch.Generator().manual_seed(0))
    params = model.init_params(2, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):  # as torch.set_default_device("cuda") would, for new tensors
        X2, y2 = data.synthetic_data(w, 0.5, 9, generator=torch.Generator().manual_seed(0))
        for g in (None, torch.Generator().manual_seed(0)):
            batches = list(data.data_iter(4, X, y, generator=g))
            assert all(Xb.device.type == "cpu" for Xb, _ in batches)
        for p in (None, params):
            net = concise.train_concise(X, y, num_epochs=1, params=p)
            assert net.w.device.type == net.b.device.type == "cpu"
    assert torch.equal(X, X2) and torch.equal(y, y2)


@given(runs(), st.sampled_from(["train", "concise", "full batch"]))
def test_default_params_and_batches_come_from_the_generator(run: dict[str, Any], fn: str) -> None:
    def once() -> train.TrainResult:
        g = torch.Generator().manual_seed(run["seed"])
        kwargs = {"lr": run["lr"], "batch_size": run["batch_size"], "generator": g}
        if fn == "train":
            return train.train(run["features"], run["labels"], num_epochs=2, **kwargs)
        if fn == "concise":
            return concise.train_concise(run["features"], run["labels"], num_epochs=2, **kwargs)
        return accumulate.train_full_batch(run["features"], run["labels"], num_epochs=3, **kwargs)

    first = once()
    torch.randn(7)  # the global generator moves on; a run must not depend on it
    second = once()
    assert torch.equal(first.w, second.w) and torch.equal(first.b, second.b)
    assert first.losses == second.losses


@given(runs())
def test_full_batch_training_takes_one_step_per_epoch_on_the_given_params(
    run: dict[str, Any],
) -> None:
    params = sts.copy_params(run["params"])
    result = accumulate.train_full_batch(
        run["features"], run["labels"], **sts.run_kwargs(run, params=params)
    )
    assert result.w is params[0] and result.b is params[1]
    assert result.num_steps == run["num_epochs"] == len(result.losses)
    assert result.losses[-1] == train.epoch_loss(run["features"], run["labels"], *params)
    # each step is full-batch gradient descent: one step from the start, by hand
    w0, b0 = sts.copy_params(run["params"])
    one = accumulate.train_full_batch(
        run["features"], run["labels"], lr=run["lr"], num_epochs=1, params=(w0, b0)
    )
    w0, b0 = run["params"]
    X, y = run["features"], run["labels"]
    r = X @ w0.detach() + b0.detach() - y
    want = (w0.detach() - run["lr"] * X.T @ r / len(X), b0.detach() - run["lr"] * r.mean(0))
    checks.check_converges([one.w, one.b], want, bound=1e-9)


def test_concise_init_is_the_books_from_the_generator() -> None:
    X = torch.zeros(4, 20000)
    y = torch.zeros(4, 1)
    nets = [
        concise.train_concise(X, y, num_epochs=0, generator=torch.Generator().manual_seed(1))
        for _ in range(2)
    ]
    assert torch.equal(nets[0].w, nets[1].w)
    assert abs(float(nets[0].w.std()) - 0.01) < 5e-4 and abs(float(nets[0].w.mean())) < 5e-4
    assert float(nets[0].b.abs().max()) == 0.0


@given(runs(), st.booleans(), st.sampled_from(["DataLoader", "data_iter"]))
def test_concise_runs_on_the_batches_of_its_loader(
    run: dict[str, Any], drop_last: bool, loader: str
) -> None:
    X, y = run["features"], run["labels"]
    got = checks.Trajectory()
    concise.train_concise(
        X, y, **sts.run_kwargs(run, drop_last=drop_last, on_step=got, loader=loader)
    )
    # The oracle: the analytic step of the mean loss on each batch that torch's DataLoader,
    # or data_iter, gives from the same generator.
    g = torch.Generator().manual_seed(run["seed"])
    dl = DataLoader(
        TensorDataset(X, y), run["batch_size"], shuffle=True, drop_last=drop_last, generator=g
    )

    def epoch() -> Any:
        if loader == "DataLoader":
            return dl
        return data.data_iter(run["batch_size"], X, y, drop_last=drop_last, generator=g)

    w, b = (p.detach().clone() for p in run["params"])
    want: list[tuple[torch.Tensor, torch.Tensor]] = []
    for _ in range(run["num_epochs"]):
        for Xb, yb in epoch():
            r = Xb @ w + b - yb
            w, b = w - run["lr"] * 2 * Xb.T @ r / len(Xb), b - run["lr"] * 2 * r.mean(0)
            want.append((w.reshape(-1), b.reshape(-1)))
    checks.check_same_trajectory(got.steps, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fn", [train.train, concise.train_concise])
def test_on_step_counts_every_step_from_one(fn: Callable[..., train.TrainResult]) -> None:
    X, y = data.book_data(23)
    seen: list[int] = []
    fn(X, y, batch_size=5, num_epochs=2, on_step=lambda k, *_: seen.append(k))
    assert seen == list(range(1, 2 * 5 + 1))


@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_the_trajectory_keeps_float64_copies_not_views(
    dtypes: tuple[torch.dtype, torch.dtype],
) -> None:
    w = torch.ones(2, 1, dtype=dtypes[0])
    b = torch.ones(1, 1, dtype=dtypes[1])
    t = checks.Trajectory()
    t(1, w, b)
    w += 1
    b += 1
    [(tw, tb)] = t.steps
    assert tw.tolist() == [1.0, 1.0] and tb.tolist() == [1.0]
    assert tw.dtype == tb.dtype == torch.float64 and tw.shape == (2,) and tb.shape == (1,)


def test_mirrors_gives_a_variant_the_loops_signature_with_the_defaults_it_changes() -> None:
    import inspect

    from linreg import concise
    from linreg.config import mirrors

    def variant(*args: object, **kwargs: object) -> None: ...

    theirs = inspect.signature(concise.train_concise)
    ours = inspect.signature(mirrors(concise.train_concise, reduction="sum")(variant))
    assert list(ours.parameters) == list(theirs.parameters)
    for name, p in ours.parameters.items():
        want = "sum" if name == "reduction" else theirs.parameters[name].default
        assert p.default == want, name
    assert inspect.signature(mirrors(concise.train_concise)(variant)) == theirs


def test_train_config_stores_its_numbers_converted() -> None:
    import numpy

    from linreg.config import TrainConfig

    config = TrainConfig(lr=1, batch_size=numpy.int64(4), num_epochs=numpy.int64(2))
    assert (type(config.lr), type(config.batch_size), type(config.num_epochs)) == (float, int, int)
