"""Bad input to every public function: a clear error of the right type, naming the argument.

The command-line options have their own table in tests/test_cli.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from linreg import accumulate, concise, data, distributed, loss, model, optim, train

# (case, call, exception, the whole message): every message names the argument it is about.

X, Y = data.book_data(10)
W, B = model.init_params(2)
BAD: list[tuple[str, Any, type[Exception], str]] = [
    (
        "batch_size 0",
        lambda: data.data_iter(0, X, Y),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "batch_size float",
        lambda: data.data_iter(2.5, X, Y),
        TypeError,
        "batch_size must be a positive int, got float 2.5",
    ),
    (
        "batch_size bool",
        lambda: data.data_iter(True, X, Y),
        TypeError,
        "batch_size must be a positive int, got bool True",
    ),
    (
        "lengths differ",
        lambda: data.data_iter(2, X, Y[:9]),
        ValueError,
        "features and labels have different lengths: 10 examples vs 9 labels",
    ),
    (
        "empty dataset",
        lambda: data.data_iter(2, X[:0], Y[:0]),
        ValueError,
        "features is empty: the dataset needs at least one example",
    ),
    (
        "labels (n, 2)",
        lambda: data.data_iter(2, X, torch.cat([Y, Y], 1)),
        ValueError,
        "labels must have shape (10,) or (10, 1), got (10, 2)",
    ),
    (
        "features 1-D",
        lambda: data.data_iter(2, X[:, 0], Y),
        ValueError,
        "features must have shape (n, d), got (10,)",
    ),
    (
        "int features",
        lambda: data.data_iter(2, X.long(), Y),
        TypeError,
        "features must have a floating dtype, got torch.int64",
    ),
    (
        "not a tensor",
        lambda: data.data_iter(2, X.tolist(), Y),
        TypeError,
        "features must be a torch.Tensor, got list",
    ),
    (
        "NaN features",
        lambda: train.train(X * math.nan, Y),
        ValueError,
        "features contains NaN or inf",
    ),
    ("inf labels", lambda: train.train(X, Y * math.inf), ValueError, "labels contains NaN or inf"),
    (
        "meta tensor",
        lambda: train.train(X.to("meta"), Y),
        ValueError,
        "features is a meta tensor: it has no data to compute with",
    ),
    (
        "dtypes differ",
        lambda: train.train(X, Y.double()),
        TypeError,
        "features and labels must share a dtype, got torch.float32 and torch.float64",
    ),
    ("lr 0", lambda: train.train(X, Y, lr=0), ValueError, "lr must be a finite number > 0, got 0"),
    (
        "lr -1",
        lambda: train.train(X, Y, lr=-1.0),
        ValueError,
        "lr must be a finite number > 0, got -1.0",
    ),
    (
        "lr nan",
        lambda: train.train(X, Y, lr=math.nan),
        ValueError,
        "lr must be a finite number > 0, got nan",
    ),
    (
        "lr inf",
        lambda: train.train(X, Y, lr=math.inf),
        ValueError,
        "lr must be a finite number > 0, got inf",
    ),
    (
        "lr str",
        lambda: train.train(X, Y, lr="0.1"),
        TypeError,
        "lr must be a finite number > 0, got str '0.1'",
    ),
    (
        "epochs -1",
        lambda: train.train(X, Y, num_epochs=-1),
        ValueError,
        "num_epochs must be a non-negative int, got -1",
    ),
    (
        "grad mode",
        lambda: train.train(X, Y, grad="numeric"),
        ValueError,
        "grad must be 'autograd' or 'analytic', got 'numeric'",
    ),
    (
        "w shape",
        lambda: train.train(X, Y, params=(torch.zeros(3, 1), B)),
        ValueError,
        "w must have shape (2, 1) for features with 2 columns, got (3, 1)",
    ),
    (
        "w 1-D",
        lambda: train.train(X, Y, params=(torch.zeros(2), B)),
        ValueError,
        "w must have shape (2, 1) for features with 2 columns, got (2,)",
    ),
    (
        "params int",
        lambda: train.train(X, Y, params=(W.long(), B)),
        TypeError,
        "w must have a floating dtype, got torch.int64",
    ),
    (
        "params not leaves",
        lambda: train.train(X, Y, params=(W * 2, B)),
        ValueError,
        'params must be leaves that require grad for grad="autograd"',
    ),
    (
        "params one",
        lambda: train.train(X, Y, params=(W,)),
        TypeError,
        "params must be a pair (w, b)",
    ),
    (
        "linreg w shape",
        lambda: model.linreg(X, torch.zeros(3, 1), B),
        ValueError,
        "w must have shape (2, 1) for X of shape (10, 2), got (3, 1)",
    ),
    (
        "init 0 inputs",
        lambda: model.init_params(0),
        ValueError,
        "num_inputs must be a positive int, got 0",
    ),
    (
        "init int dtype",
        lambda: model.init_params(2, dtype=torch.int64),
        TypeError,
        "dtype must be a floating dtype, got torch.int64",
    ),
    (
        "loss sizes",
        lambda: loss.squared_loss(torch.zeros(3, 1), torch.zeros(4)),
        ValueError,
        "y has 4 elements but y_hat has 3: shapes (4,) and (3, 1)",
    ),
    (
        "sgd no grad",
        lambda: optim.sgd([torch.zeros(2, requires_grad=True)], 0.1, 1),
        ValueError,
        "params[0].grad is None: call backward() first",
    ),
    ("sgd lr", lambda: optim.sgd([], 0, 1), ValueError, "lr must be a finite number > 0, got 0"),
    (
        "sgd batch",
        lambda: optim.sgd([], 0.1, 0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "synthetic n 0",
        lambda: data.synthetic_data([1.0], 0.0, 0),
        ValueError,
        "num_examples must be a positive int, got 0",
    ),
    (
        "synthetic noise",
        lambda: data.synthetic_data([1.0], 0.0, 3, noise=-1),
        ValueError,
        "noise must be a finite number >= 0, got -1",
    ),
    (
        "synthetic w int",
        lambda: data.synthetic_data(torch.tensor([1]), 0.0, 3),
        TypeError,
        "w must have a floating dtype, got torch.int64",
    ),
    (
        "synthetic w 2-D",
        lambda: data.synthetic_data(torch.zeros(2, 2), 0.0, 3),
        ValueError,
        "w must have shape (d,) or (d, 1) with d >= 1, got (2, 2)",
    ),
    (
        "accumulate empty",
        lambda: accumulate.accumulate_grad([], W, B),
        ValueError,
        "micro_batches is empty: there is nothing to accumulate",
    ),
    (
        "full batch lr",
        lambda: accumulate.train_full_batch(X, Y, lr=0),
        ValueError,
        "lr must be a finite number > 0, got 0",
    ),
    (
        "concise batch",
        lambda: concise.train_concise(X, Y, batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "NaN labels",
        lambda: data.data_iter(2, X, Y * math.nan),
        ValueError,
        "labels contains NaN or inf",
    ),
    (
        "meta labels",
        lambda: data.data_iter(2, X, Y.to("meta")),
        ValueError,
        "labels is a meta tensor: it has no data to compute with",
    ),
    (
        "shard rank",
        lambda: distributed.shard_indices(10, rank=2, world_size=2, epoch=0),
        ValueError,
        "rank must be in [0, 2), got 2",
    ),
    (
        "shard world",
        lambda: distributed.shard_indices(10, rank=0, world_size=0, epoch=0),
        ValueError,
        "world_size must be a positive int, got 0",
    ),
    (
        "shard epoch",
        lambda: distributed.shard_indices(10, rank=0, world_size=1, epoch=-1),
        ValueError,
        "epoch must be a non-negative int, got -1",
    ),
    (
        "shard batch",
        lambda: distributed.shard_iter(0, X, Y, rank=0, world_size=1, epoch=0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "full batch epochs",
        lambda: accumulate.train_full_batch(X, Y, num_epochs=-1),
        ValueError,
        "num_epochs must be a non-negative int, got -1",
    ),
    (
        "accumulate losses empty",
        lambda: accumulate.accumulate_losses([], W, B),
        ValueError,
        "batches is empty: there is nothing to accumulate",
    ),
    (
        "batch_size str",
        lambda: train.train(X, Y, batch_size="10"),
        TypeError,
        "batch_size must be a positive int, got str '10'",
    ),
    (
        "train batch_size 0",
        lambda: train.train(X, Y, batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "epochs float",
        lambda: train.train(X, Y, num_epochs=1.5),
        TypeError,
        "num_epochs must be a non-negative int, got float 1.5",
    ),
    (
        "lr bool",
        lambda: train.train(X, Y, lr=True),
        TypeError,
        "lr must be a finite number > 0, got bool True",
    ),
    (
        "generator int",
        lambda: train.train(X, Y, generator=0),
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    (
        "drop_last str",
        lambda: train.train(X, Y, drop_last="yes"),
        TypeError,
        "drop_last must be True or False, got str 'yes'",
    ),
    (
        "on_step int",
        lambda: train.train(X, Y, on_step=1),
        TypeError,
        "on_step must be callable or None, got int",
    ),
    (
        "b 2 elements",
        lambda: train.train(X, Y, params=(W, torch.zeros(2))),
        ValueError,
        "b must hold one element, got shape (2,)",
    ),
    (
        "b not a tensor",
        lambda: train.train(X, Y, params=(W, 0.0)),
        TypeError,
        "b must be a torch.Tensor, got float",
    ),
    (
        "b int",
        lambda: train.train(X, Y, params=(W, B.long())),
        TypeError,
        "b must have a floating dtype, got torch.int64",
    ),
    (
        "w float64",
        lambda: train.train(X, Y, params=(W.double(), B)),
        TypeError,
        "w has dtype torch.float64 but features has torch.float32",
    ),
    (
        "b float64",
        lambda: train.train(X, Y, params=(W, B.double())),
        TypeError,
        "b has dtype torch.float64 but features has torch.float32",
    ),
    (
        "w meta",
        lambda: train.train(X, Y, params=(W.to("meta"), B)),
        ValueError,
        "w is a meta tensor: it has no data to compute with",
    ),
    (
        "linreg w 1-D",
        lambda: model.linreg(X, torch.zeros(2), B),
        ValueError,
        "w must have shape (2, 1) for X of shape (10, 2), got (2,)",
    ),
    (
        "linreg X 3-D",
        lambda: model.linreg(X.reshape(5, 2, 2), W, B),
        ValueError,
        "X must have shape (n, d), got (5, 2, 2)",
    ),
    (
        "init bool",
        lambda: model.init_params(True),
        TypeError,
        "num_inputs must be a positive int, got bool True",
    ),
    (
        "init generator",
        lambda: model.init_params(2, generator=1),
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    (
        "shuffle int",
        lambda: data.data_iter(2, X, Y, shuffle=1),
        TypeError,
        "shuffle must be True or False, got int 1",
    ),
    (
        "drop_last None",
        lambda: data.data_iter(2, X, Y, drop_last=None),
        TypeError,
        "drop_last must be True or False, got NoneType None",
    ),
    (
        "iter generator",
        lambda: data.data_iter(2, X, Y, generator="0"),
        TypeError,
        "generator must be a torch.Generator or None, got str",
    ),
    (
        "synthetic noise str",
        lambda: data.synthetic_data([1.0], 0, 3, noise="0"),
        TypeError,
        "noise must be a finite number >= 0, got str '0'",
    ),
    (
        "synthetic noise nan",
        lambda: data.synthetic_data([1.0], 0, 3, noise=math.nan),
        ValueError,
        "noise must be a finite number >= 0, got nan",
    ),
    (
        "synthetic w empty",
        lambda: data.synthetic_data([], 0.0, 3),
        ValueError,
        "w must have shape (d,) or (d, 1) with d >= 1, got (0,)",
    ),
    (
        "synthetic w meta",
        lambda: data.synthetic_data(torch.zeros(2, device="meta"), 0, 3),
        ValueError,
        "w is a meta tensor: it has no data to compute with",
    ),
    (
        "synthetic b 2",
        lambda: data.synthetic_data([1.0], torch.zeros(2), 3),
        ValueError,
        "b must hold one element, got shape (2,)",
    ),
    (
        "synthetic generator",
        lambda: data.synthetic_data([1.0], 0, 3, generator=5),
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    (
        "concise lr",
        lambda: concise.train_concise(X, Y, lr=-0.1),
        ValueError,
        "lr must be a finite number > 0, got -0.1",
    ),
    (
        "concise epochs",
        lambda: concise.train_concise(X, Y, num_epochs=-2),
        ValueError,
        "num_epochs must be a non-negative int, got -2",
    ),
    (
        "concise reduction",
        lambda: concise.train_concise(X, Y, reduction="avg"),
        ValueError,
        "reduction must be 'mean' or 'sum', got 'avg'",
    ),
    (
        "concise loader",
        lambda: concise.train_concise(X, Y, loader="dataloader"),
        ValueError,
        "loader must be 'data_iter' or 'DataLoader', got 'dataloader'",
    ),
    (
        "concise drop_last",
        lambda: concise.train_concise(X, Y, drop_last=0),
        TypeError,
        "drop_last must be True or False, got int 0",
    ),
    (
        "concise on_step",
        lambda: concise.train_concise(X, Y, on_step="x"),
        TypeError,
        "on_step must be callable or None, got str",
    ),
    (
        "concise generator",
        lambda: concise.train_concise(X, Y, generator=1),
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    (
        "concise w shape",
        lambda: concise.train_concise(X, Y, params=(W.T, B)),
        ValueError,
        "w must have shape (2, 1) for features with 2 columns, got (1, 2)",
    ),
    (
        "full batch size",
        lambda: accumulate.train_full_batch(X, Y, batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "full batch generator",
        lambda: accumulate.train_full_batch(X, Y, generator=2),
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    (
        "full batch NaN",
        lambda: accumulate.train_full_batch(X * math.nan, Y),
        ValueError,
        "features contains NaN or inf",
    ),
    (
        "sgd lr str",
        lambda: optim.sgd([], "0.1", 1),
        TypeError,
        "lr must be a finite number > 0, got str '0.1'",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_gets_a_clear_error_naming_the_argument(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error
    assert str(info.value) == message
