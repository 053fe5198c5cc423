"""Fit a small regressor with transformers' Trainer, its loss computed in a Trainer subclass
(`compute_loss` overridden, as the Trainer's docs show for a custom loss):
`python hf_trainer_regress.py --output-dir out --gradient-accumulation-steps 3`."""

import argparse

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Trainer, TrainingArguments


class Regressor(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class Table(torch.utils.data.Dataset):
    def __init__(self, rows: int, features: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(rows, features, generator=gen)
        self.y = self.x @ torch.linspace(-1, 1, features) + 0.1 * torch.randn(rows, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class RegressionTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pred = model(inputs["x"])
        loss = F.mse_loss(pred, inputs["y"])
        return (loss, pred) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args()
    torch.manual_seed(0)
    training = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=2,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    data = Table(args.rows, 5)
    RegressionTrainer(model=Regressor(5), args=training, train_dataset=data).train()


if __name__ == "__main__":
    main()
