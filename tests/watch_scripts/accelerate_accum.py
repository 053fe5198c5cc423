"""accelerate's documented accumulation loop, as a script: `python accelerate_accum.py --rows 8`.

With --rows a multiple of batch_size * accumulation steps every window is full; otherwise the
epoch's last window is short, and accelerate steps it with every loss divided by the nominal
count (measured in tests/frameworks/test_accelerate.py)."""

import argparse

import torch
from accelerate import Accelerator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=2)
    args = parser.parse_args()
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, cpu=True
    )
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(args.rows, 5), torch.randint(0, 4, (args.rows,)))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=2, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for epoch in range(2):
        for inputs, targets in loader:
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        accelerator.print(f"epoch {epoch}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
