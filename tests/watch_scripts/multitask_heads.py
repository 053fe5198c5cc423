"""Two tasks on one trunk, from a saved table: a price (regression) and a kind (3 classes), the
loss a weighted sum of each task's own criterion, as multi-task recipes write it:
`python multitask_heads.py table.pt [--epochs N] [--batch-size B]`."""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LOSS_WEIGHTS = {"price": 1.0, "kind": 0.3}


class TwoHeads(nn.Module):
    def __init__(self, features: int, kinds: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(features, 16), nn.ReLU())
        self.price = nn.Linear(16, 1)
        self.kind = nn.Linear(16, kinds)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"price": self.price(h).squeeze(-1), "kind": self.kind(h)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("table")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    features, price, kind = torch.load(args.table)
    loader = DataLoader(
        TensorDataset(features, price, kind), batch_size=args.batch_size, shuffle=True
    )
    model = TwoHeads(features.shape[1], int(kind.max()) + 1)
    criteria = {"price": nn.SmoothL1Loss(), "kind": nn.CrossEntropyLoss()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        totals = dict.fromkeys(criteria, 0.0)
        for x, y_price, y_kind in loader:
            out = model(x)
            losses = {
                "price": criteria["price"](out["price"], y_price),
                "kind": criteria["kind"](out["kind"], y_kind),
            }
            loss = sum(LOSS_WEIGHTS[task] * value for task, value in losses.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for task, value in losses.items():
                totals[task] += value.item()
        print(
            f"epoch {epoch}: " + ", ".join(f"{t} {v / len(loader):.3f}" for t, v in totals.items())
        )


if __name__ == "__main__":
    main()
