"""Gradient accumulation with Lightning Fabric: `python fabric_accum.py --accumulation-steps 2`.
Fabric's `no_backward_sync` skips the gradient sync while a window fills; windows are counted
from the first batch, each batch's mean loss is divided by the k batches of a window, and k
divides the epoch's 8 batches (2 or 4: a left-over would be carried into the next epoch)."""

import argparse

import lightning_fabric as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accumulation-steps", type=int, default=2)
    args = parser.parse_args()
    fabric = L.Fabric(accelerator="cpu", devices=1)
    fabric.seed_everything(0)
    data = TensorDataset(torch.randn(16, 6), torch.randint(0, 3, (16,)))
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(DataLoader(data, batch_size=2, shuffle=True))
    k = args.accumulation_steps
    for epoch in range(2):
        for iteration, (inputs, target) in enumerate(loader):
            is_accumulating = (iteration + 1) % k != 0
            with fabric.no_backward_sync(model, enabled=is_accumulating):
                loss = F.cross_entropy(model(inputs), target)
                fabric.backward(loss / k)
            if not is_accumulating:
                optimizer.step()
                optimizer.zero_grad()
        fabric.print(f"epoch {epoch}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
