"""A LightningModule with manual optimization that accumulates its own windows of 2 batches,
each batch's summed loss divided by the rows its window holds, and steps the epoch's last
window too: `python lightning_manual.py --rows 10`."""

import argparse
import tempfile

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class ManualClassifier(pl.LightningModule):
    def __init__(self, window: int = 2, batch_size: int = 2) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
        self.window, self.batch_size = window, batch_size

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        opt = self.optimizers()
        batches = self.trainer.num_training_batches
        start = batch_idx - batch_idx % self.window
        held = min(self.window, batches - start)  # batches in this window
        rows = sum(
            min(self.batch_size, self.rows - b * self.batch_size)
            for b in range(start, start + held)
        )
        loss = F.cross_entropy(self.net(x), y, reduction="sum") / rows
        self.manual_backward(loss)
        if (batch_idx + 1) % self.window == 0 or batch_idx + 1 == batches:
            opt.step()
            opt.zero_grad()
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    data = TensorDataset(torch.randn(args.rows, 5), torch.randint(0, 4, (args.rows,)))
    module = ManualClassifier()
    module.rows = args.rows
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        trainer.fit(module, DataLoader(data, batch_size=2))


if __name__ == "__main__":
    main()
