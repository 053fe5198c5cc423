"""The same training, as a colleague wrote its loop: each batch's mean loss is accumulated as
it is, never divided by the accumulation steps. `python train_script_undivided.py`."""

import torch
from torch.nn import functional as F
from train_script import data_and_model

loader, model = data_and_model()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _epoch in range(3):
    for i, (x, y) in enumerate(loader):
        F.cross_entropy(model(x), y).backward()
        if (i + 1) % 2 == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
