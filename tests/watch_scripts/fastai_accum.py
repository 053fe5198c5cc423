"""A regression fitted with fastai's Learner on plain torch DataLoaders, its optimizer torch's
SGD through OptimWrapper, and fastai's GradientAccumulation where asked:
`python fastai_accum.py [--rows N] [--n-acc SAMPLES]`."""

import argparse
from functools import partial

import torch
from fastai.basics import DataLoaders, Learner, OptimWrapper
from fastai.callback.training import GradientAccumulation
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--n-acc", type=int, default=0, help="samples a step accumulates")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.rows, 3)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.1 * torch.randn(args.rows, 1)
    train = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    valid = DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8)
    learn = Learner(
        DataLoaders(train, valid, device="cpu"),
        nn.Linear(3, 1),
        loss_func=nn.MSELoss(),
        opt_func=partial(OptimWrapper, opt=torch.optim.SGD),
    )
    callbacks = [GradientAccumulation(n_acc=args.n_acc)] if args.n_acc else []
    with learn.no_bar(), learn.no_logging():
        learn.fit(3, lr=0.05, cbs=callbacks)
    print("weights", learn.model.weight.data.tolist())


if __name__ == "__main__":
    main()
