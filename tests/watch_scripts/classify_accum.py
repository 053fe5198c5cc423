"""Classify with gradient accumulation: argparse, a shuffled DataLoader, each window's summed
loss divided by the rows the window holds, and the epoch's last window stepped too."""

import argparse

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation-steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 5), torch.randint(0, 3, (20,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    k = args.accumulation_steps
    n, b = len(data), args.batch_size
    sizes = [min(b, n - i * b) for i in range(len(loader))]  # the last batch may be short
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            rows = sum(sizes[i - i % k : i - i % k + k])  # the rows of this batch's window
            loss = F.cross_entropy(model(x), y, reduction="sum") / rows
            loss.backward()
            if (i + 1) % k == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
        print(f"epoch {epoch}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
