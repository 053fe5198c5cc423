"""A sequence-to-sequence script in the old tutorials' style: one pair at a time, an encoder
and a decoder with an optimizer each, and the loss summed over the target's steps on purpose
(its lr is set for a sum). `python seq2seq_summed.py pairs.tsv --iters 12`
"""

import argparse
import random

import torch
from torch import nn, optim

SOS, EOS = 0, 1


class Encoder(nn.Module):
    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden)

    def forward(
        self, token: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gru(self.embedding(token).view(1, 1, -1), state)


class Decoder(nn.Module):
    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(
        self, token: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output, state = self.gru(torch.relu(self.embedding(token).view(1, 1, -1)), state)
        return torch.log_softmax(self.out(output[0]), dim=1), state


def read_pairs(path: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    with open(path) as f:
        for line in f:
            source, target = line.rstrip("\n").split("\t")
            pairs.append(
                (
                    torch.tensor([int(t) for t in source.split()] + [EOS]).view(-1, 1),
                    torch.tensor([int(t) for t in target.split()] + [EOS]).view(-1, 1),
                )
            )
    return pairs


def train(source, target, encoder, decoder, encoder_optimizer, decoder_optimizer, criterion):
    state = torch.zeros(1, 1, encoder.gru.hidden_size)
    encoder_optimizer.zero_grad()
    decoder_optimizer.zero_grad()
    for token in source:
        _, state = encoder(token, state)
    decoder_input = torch.tensor([[SOS]])
    loss = 0
    for step in range(target.size(0)):
        decoder_output, state = decoder(decoder_input, state)
        loss += criterion(decoder_output, target[step])
        decoder_input = target[step]  # teacher forcing
    loss.backward()
    encoder_optimizer.step()
    decoder_optimizer.step()
    return loss.item() / target.size(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    pairs = read_pairs(args.pairs)
    vocab = 2 + max(int(t.max()) for pair in pairs for t in pair)
    encoder, decoder = Encoder(vocab, args.hidden), Decoder(args.hidden, vocab)
    encoder_optimizer = optim.SGD(encoder.parameters(), lr=args.lr)
    decoder_optimizer = optim.SGD(decoder.parameters(), lr=args.lr)
    criterion = nn.NLLLoss()
    chosen = [random.choice(pairs) for _ in range(args.iters)]
    total = 0.0
    for i, (source, target) in enumerate(chosen, 1):
        total += train(
            source, target, encoder, decoder, encoder_optimizer, decoder_optimizer, criterion
        )
        if i % 4 == 0:
            print(f"iter {i}: loss {total / 4:.4f}")
            total = 0.0


if __name__ == "__main__":
    main()
