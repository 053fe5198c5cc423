"""A LightningModule trained by Lightning's Trainer with accumulate_grad_batches:
`python lightning_accum.py --rows 8`. With --rows not a multiple of batch_size * accumulation
the epoch's last window is short, and Lightning steps it with every loss divided by the nominal
count (measured in tests/frameworks/test_lightning.py)."""

import argparse
import tempfile

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--accumulate-grad-batches", type=int, default=2)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    data = TensorDataset(torch.randn(args.rows, 5), torch.randint(0, 4, (args.rows,)))
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,
            accumulate_grad_batches=args.accumulate_grad_batches,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        trainer.fit(Classifier(), DataLoader(data, batch_size=2))


if __name__ == "__main__":
    main()
