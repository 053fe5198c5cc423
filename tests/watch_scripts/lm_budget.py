"""A tiny language model trained for a budget of iterations, nanoGPT-style: batches sampled from
a token file, the next batch fetched while the model works, micro-steps of gradient
accumulation, clipping. `python lm_budget.py tokens.pt --max-iters 4`."""

import argparse

import torch
from torch import nn
from torch.nn import functional as F


class TinyLM(nn.Module):
    def __init__(self, vocab: int, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
        logits = self.head(torch.tanh(self.mix(self.embed(idx))))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tokens")
    parser.add_argument("--max-iters", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--grad-accum", type=int, default=2)
    args = parser.parse_args()

    data = torch.load(args.tokens)
    vocab = int(data.max()) + 1
    gen = torch.Generator().manual_seed(1)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - args.block_size - 1, (args.batch_size,), generator=gen)
        x = torch.stack([data[i : i + args.block_size] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + args.block_size] for i in ix])
        return x, y

    model = TinyLM(vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    x, y = get_batch()  # the first batch, fetched ahead
    for it in range(args.max_iters):
        for _ in range(args.grad_accum):
            _, loss = model(x, y)
            loss = loss / args.grad_accum
            x, y = get_batch()  # fetch the next batch while this one's backward runs
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"iter {it}: loss {loss.item() * args.grad_accum:.4f}")


if __name__ == "__main__":
    main()
