"""Train a classifier with an Ignite engine: `python ignite_accum.py --accumulation-steps 2`.
`create_supervised_trainer` accumulates over `engine.state.iteration`, which runs on across
epochs: windows cross an epoch's end, and are right while every batch holds the same rows."""

import argparse

import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation-steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(args.rows, 8), torch.randint(0, 4, (args.rows,)))
    train_loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(data, batch_size=16)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    trainer = create_supervised_trainer(
        model, optimizer, criterion, gradient_accumulation_steps=args.accumulation_steps
    )
    evaluator = create_supervised_evaluator(
        model, metrics={"accuracy": Accuracy(), "loss": Loss(criterion)}
    )

    @trainer.on(Events.EPOCH_COMPLETED)
    def log_validation(engine):
        evaluator.run(val_loader)
        accuracy, loss = evaluator.state.metrics["accuracy"], evaluator.state.metrics["loss"]
        print(f"epoch {engine.state.epoch}: accuracy {accuracy:.3f} loss {loss:.4f}")

    trainer.run(train_loader, max_epochs=args.epochs)


if __name__ == "__main__":
    main()
