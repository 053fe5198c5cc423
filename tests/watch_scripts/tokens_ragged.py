"""Token classification over padded sequences of different lengths (-100 marks padding), with
gradient accumulation weighted by tokens: each window's summed loss over the tokens it counts."""

import torch
from torch import nn
from torch.nn import functional as F


def batches(gen: torch.Generator, count: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(count):
        lengths = torch.randint(2, 7, (2,), generator=gen)
        ids = torch.randint(1, vocab, (2, 6), generator=gen)
        labels = torch.where(torch.arange(6) < lengths[:, None], ids.roll(-1, 1), -100)
        out.append({"input_ids": ids, "labels": labels})
    return out


def main(steps: int = 3, accumulation: int = 3, vocab: int = 11) -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Embedding(vocab, 8), nn.Linear(8, vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = batches(gen, steps * accumulation, vocab)
    for step in range(steps):
        window = data[step * accumulation : (step + 1) * accumulation]
        num_items = sum(int((b["labels"] != -100).sum()) for b in window)
        for batch in window:
            logits = model(batch["input_ids"])
            loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="sum")
            (loss / num_items).backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: {num_items} tokens")


if __name__ == "__main__":
    main()
