"""Fine-tune a tiny causal LM with transformers' Trainer, as its example scripts do:
`python hf_trainer_lm.py --output-dir out --gradient-accumulation-steps 2`. Sequences of
different lengths are padded by the collator (labels -100 past each one's end), so the
micro-batches of a window hold different numbers of target tokens; the Trainer passes
`num_items_in_batch` to the model, whose loss divides its summed token loss by it."""

import argparse
import random

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)

TEXT = "the quick brown fox jumps over the lazy dog and runs back home again before dark"
VOCAB = sorted(set(TEXT))


def build_model(name: str) -> torch.nn.Module:
    if name == "gpt2":
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(VOCAB), n_positions=32)
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(VOCAB),
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)


def make_dataset(rows: int, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    ids = [VOCAB.index(c) for c in TEXT]
    out = []
    for _ in range(rows):
        start, length = rng.randrange(len(ids) - 16), rng.randint(4, 16)
        out.append({"input_ids": ids[start : start + length]})
    return out


def collate(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    longest = max(len(f["input_ids"]) for f in features)
    input_ids = torch.zeros(len(features), longest, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        attention_mask[i, :n] = 1
        labels[i, :n] = input_ids[i, :n]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--per-device-train-batch-size", type=int, default=2)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.model)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.epochs,
        learning_rate=5e-4,
        weight_decay=0.01,
        max_grad_norm=args.max_grad_norm,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=make_dataset(args.rows, seed=0),
        data_collator=collate,
    )
    trainer.train()


if __name__ == "__main__":
    main()
