"""A classifier trained with gradient accumulation, as a script: `python train_script.py`.

Each window of `--accumulation-steps` batches applies the mean loss over the rows it holds:
every batch's summed loss is divided by the window's rows, and the epoch's last (short) window
is stepped too. Watched, unchanged: `python -m linreg watch train_script.py`.
"""

import argparse

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def data_and_model() -> tuple[DataLoader, nn.Module]:
    torch.manual_seed(0)
    features, labels = torch.randn(22, 4), torch.randint(0, 3, (22,))
    loader = DataLoader(TensorDataset(features, labels), batch_size=4, shuffle=True)
    return loader, nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accumulation-steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    loader, model = data_and_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    k, n, b = args.accumulation_steps, len(loader.dataset), loader.batch_size
    sizes = [min(b, n - i * b) for i in range(len(loader))]
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(loader):
            rows = sum(sizes[i - i % k : i - i % k + k])  # the rows of this batch's window
            (F.cross_entropy(model(x), y, reduction="sum") / rows).backward()
            if (i + 1) % k == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
        print(f"epoch {epoch} done")


if __name__ == "__main__":
    main()
