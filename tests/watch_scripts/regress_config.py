"""Regression from a config file and a CSV: `python regress_config.py config.json`."""

import csv
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def load(path: Path) -> TensorDataset:
    with path.open(newline="") as f:
        rows = [[float(v) for v in row] for row in csv.reader(f)]
    table = torch.tensor(rows)
    return TensorDataset(table[:, :-1], table[:, -1:])


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    data = load(Path(config_path).parent / config["data"])
    loader = DataLoader(data, batch_size=config["batch_size"], shuffle=True)
    model = nn.Linear(data.tensors[0].shape[1], 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    for epoch in range(config["epochs"]):
        for features, target in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(features), target)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: mse {loss.item():.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
