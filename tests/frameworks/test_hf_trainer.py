"""transformers' Trainer, measured directly and then audited (audit.hf_trainer).

Measured (transformers 5.24, gradient_accumulation_steps=2, one row per micro-batch, rows
with 3 and 1 targets after the causal shift, no clipping):
- a forward without **kwargs that returns its mean token loss: each micro-batch's mean / 2, a
  mean of micro-batch means (cosine below 1 with the correct token-weighted gradient);
- a forward that takes **kwargs but drops num_items_in_batch: nothing divides, 2.0 x;
- a forward that divides its summed token loss by num_items_in_batch: exact when the Trainer
  counts the targets the loss counts (a model whose loss_type maps to ForCausalLMLoss, or one
  that does not shift); 0.75 x for GPT2LMHeadModel, whose loss shifts its labels but whose
  loss_type is None, so the Trainer counts labels.ne(-100) before the shift (8, not 6).
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from linreg import audit
from linreg.kinds.training_loop.contract import Rows, collate
from tests import loops_as_written as L
from tests.frameworks.measure import applied_gradients, correct_gradient, cosine, ratio

hf = pytest.importorskip("transformers")


class NoKwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lm = L.TinyCausalLM()

    def forward(self, input_ids: Tensor, attention_mask: Any = None, labels: Any = None) -> Any:
        return self.lm(input_ids, attention_mask, labels)


class DropsCount(NoKwargs):
    def forward(  # type: ignore[override]
        self, input_ids: Tensor, attention_mask: Any = None, labels: Any = None, **kwargs: Any
    ) -> Any:
        return self.lm(input_ids, attention_mask, labels)


class TokenTagger(nn.Module):
    """No shift: label i is position i's target; divides by num_items_in_batch when given."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(L.VOCAB, 6)
        self.head = nn.Linear(6, 3)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Any = None,
        labels: Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> L.Output:
        logits = self.head(torch.tanh(self.emb(input_ids)))
        if labels is None:
            return L.Output(logits=logits)
        flat, targets = logits.flatten(0, 1), labels.flatten()
        if num_items_in_batch is None:
            loss = F.cross_entropy(flat, targets, ignore_index=-100)
        else:
            loss = F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")
            loss = loss / num_items_in_batch
        return L.Output(loss=loss, logits=logits)


def tag_example() -> dict[str, Tensor]:
    return {
        "input_ids": torch.tensor([4, 7, 1, 9]),
        "attention_mask": torch.ones(4, dtype=torch.long),
        "labels": torch.tensor([0, 2, -100, 1]),
    }


def llama() -> nn.Module:
    config = hf.LlamaConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=L.VOCAB,
        max_position_embeddings=8,
    )
    return hf.LlamaForCausalLM(config)


def gpt2() -> nn.Module:
    config = hf.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=L.VOCAB, n_positions=8, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return hf.GPT2LMHeadModel(config)


def rows(example: dict[str, Tensor], mixed: bool) -> list[dict[str, Tensor]]:
    """The example twice, or beside the same row with one target left (uneven counts)."""
    kept = torch.full_like(example["labels"], -100)
    kept[-1] = example["labels"][-1]
    return [example, {**example, "labels": kept} if mixed else example]


def measured(
    factory: Any, example: dict[str, Tensor], shifts: bool, mixed: bool = False
) -> tuple[float, float]:
    """One window of two one-row micro-batches: (ratio, cosine) of the applied gradient."""
    torch.manual_seed(0)
    model = factory()
    data = rows(example, mixed)
    with tempfile.TemporaryDirectory() as out, applied_gradients(model) as seen:
        args = hf.TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, gradient_accumulation_steps=2,
            num_train_epochs=1, max_grad_norm=0.0, use_cpu=True, report_to=[],
            save_strategy="no", logging_strategy="no", disable_tqdm=True,
            remove_unused_columns=False, lr_scheduler_type="constant",
        )  # fmt: skip
        hf.Trainer(model=model, args=args, train_dataset=Rows(data), data_collator=collate).train()
    both = collate(data)

    def loss(m: nn.Module) -> Tensor:  # one mean over every target of the window
        out = m(input_ids=both["input_ids"], attention_mask=both["attention_mask"])
        logits = out.logits if hasattr(out, "logits") else out["logits"]
        labels = both["labels"][:, 1:] if shifts else both["labels"]
        logits = logits[:, :-1] if shifts else logits
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    (applied,) = seen
    correct = correct_gradient(model, loss)
    return round(ratio(applied, correct), 6), round(cosine(applied, correct), 6)


def audited(factory: Any, example: Any, **options: Any) -> audit.Report:
    given = {"gradient_accumulation_steps": 2, "max_grad_norm": 0.0, "max_examples": 15}
    return audit.hf_trainer(factory, example=example, **{**given, **options})


def test_hf_trainer_a_forward_without_kwargs_is_a_mean_of_micro_batch_means() -> None:
    _, cos = measured(NoKwargs, L.token_example(), shifts=True, mixed=True)
    assert cos < 0.99
    report = audited(NoKwargs, L.token_example)
    assert [r.pitfall for r in report.failures] == ["micro-batch-accumulation"], str(report)
    assert "whose counts of targets differ" in report.failures[0].message


def test_hf_trainer_kwargs_that_drop_the_count_apply_twice_the_gradient() -> None:
    assert measured(DropsCount, L.token_example(), shifts=True)[0] == pytest.approx(2.0)
    for clip in (0.0, 1.0):  # transformers' default clipping hides neither
        report = audited(DropsCount, L.token_example, max_grad_norm=clip)
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
        assert "2 times the gradient" in report.failures[0].message


def test_hf_trainer_a_forward_that_divides_by_the_count_passes() -> None:
    for mixed in (False, True):
        assert measured(TokenTagger, tag_example(), False, mixed) == (
            pytest.approx(1.0),
            pytest.approx(1.0),
        )
    assert audited(TokenTagger, tag_example).ok
    assert measured(llama, L.token_example(), True, mixed=True) == (
        pytest.approx(1.0),
        pytest.approx(1.0),
    )
    report = audited(llama, L.token_example)
    assert report.ok, str(report)


def test_hf_trainer_gpt2_counts_its_targets_before_the_shift() -> None:
    """A finding, measured: GPT2LMHeadModel's loss shifts its labels, but its loss_type is None,
    so the Trainer counts every label that is not -100: 4 + 4 = 8 here, where the loss counts
    3 + 3 = 6 after its shift."""
    assert gpt2().loss_type is None
    assert measured(gpt2, L.token_example(), shifts=True)[0] == pytest.approx(0.75)
    report = audited(gpt2, L.token_example)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "counted before the model's causal shift" in report.failures[0].message


def test_hf_trainer_refuses_an_example_that_is_not_a_dict() -> None:
    with pytest.raises(audit.TargetError, match="must be a dict of tensors"):
        audit.hf_trainer(NoKwargs, example=(torch.zeros(3), torch.tensor(1)))


def test_hf_trainer_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from linreg.cli import main

    argv = ["audit", "hf-trainer", "tests.frameworks.test_hf_trainer:DropsCount"]
    argv += ["--example", "tests.loops_as_written:token_example", "--max-examples", "10"]
    assert main([*argv, "--gradient-accumulation-steps", "2", "--json", "-q"]) == 1
    import json

    out = json.loads(capsys.readouterr().out)
    assert [r["pitfall"] for r in out["results"] if r["verdict"] == "fail"] == ["mean-vs-sum"]
    assert out["kind"] == "hf-trainer"  # the kind asked for, not training-loop's


class DividedAgain(hf.Trainer):  # type: ignore[misc]
    """A custom compute_loss that divides by the accumulation count, as the Trainer does too."""

    def compute_loss(
        self, model: nn.Module, inputs: Any, return_outputs: bool = False, **_: Any
    ) -> Any:
        loss = F.mse_loss(model(inputs["x"]), inputs["y"]) / self.args.gradient_accumulation_steps
        return (loss, None) if return_outputs else loss


@pytest.mark.parametrize("k", [2, 3])
def test_hf_trainer_a_compute_loss_divided_by_the_count_applies_one_kth_of_the_mean(k: int) -> None:
    """Measured directly: the Trainer divides the loss by the window's count itself (in
    training_step), so one window of k one-row micro-batches applies 1 / k of their mean."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(k, 3, generator=gen), torch.randn(k, 1, generator=gen)
    data = [{"x": x[i], "y": y[i]} for i in range(k)]
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    with tempfile.TemporaryDirectory() as out, applied_gradients(model) as seen:
        args = hf.TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, gradient_accumulation_steps=k,
            num_train_epochs=1, max_grad_norm=0.0, use_cpu=True, report_to=[],
            save_strategy="no", logging_strategy="no", disable_tqdm=True,
            remove_unused_columns=False, lr_scheduler_type="constant",
        )  # fmt: skip
        DividedAgain(model=model, args=args, train_dataset=data).train()
    (applied,) = seen
    correct = correct_gradient(model, lambda m: F.mse_loss(m(x), y))
    assert ratio(applied, correct) == pytest.approx(1 / k)
    assert cosine(applied, correct) == pytest.approx(1.0)
