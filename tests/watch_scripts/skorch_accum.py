"""skorch with gradient accumulation, in the style of its FAQ: `python skorch_accum.py --rows 48`.
The loss is divided by the accumulation count and the optimizer stepped every acc_steps batches
counted over the whole fit, so a window may cross an epoch's end."""

import argparse

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn


class Module(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, X):
        return self.net(X)


class GradAccNet(NeuralNetClassifier):
    def __init__(self, *args, acc_steps=2, **kwargs):
        super().__init__(*args, **kwargs)
        self.acc_steps = acc_steps
        self.batches_seen = 0

    def get_loss(self, *args, **kwargs):
        return super().get_loss(*args, **kwargs) / self.acc_steps

    def train_step(self, batch, **fit_params):
        step = self.train_step_single(batch, **fit_params)
        self.batches_seen += 1
        if self.batches_seen % self.acc_steps == 0:
            self.optimizer_.step()
            self.optimizer_.zero_grad()
        return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=args.rows).astype(np.int64)
    torch.manual_seed(0)
    net = GradAccNet(
        Module,
        criterion=nn.CrossEntropyLoss,
        max_epochs=3,
        lr=0.1,
        batch_size=8,
        train_split=None,
        iterator_train__shuffle=True,
        acc_steps=2,
        verbose=0,
    )
    net.fit(X, y)


if __name__ == "__main__":
    main()
