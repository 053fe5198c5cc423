"""Training loops in the styles real projects write them, each beside a twin with one bug.

Written for these tests (none is copied): a GPT-style trainer, a trainer that builds its own
DataLoader and runs for max_iters, an image trainer with a loss scaler, a class-based Trainer,
an epoch loop with a device and a StepLR, a manual-optimization step, a script body, a dict-batch
loop, and a conv net with BatchNorm. Each correct loop is audited with the adapter lines the
README shows (0-3 for a function, a `def` around a script body); each twin differs from its
loop by one realistic mistake, named in its docstring.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

# --- models ----------------------------------------------------------------------------------

VOCAB, BLOCK = 11, 4


class TinyGPT(nn.Module):
    """A token model that returns (logits, loss) when given targets, as GPT trainers expect."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, VOCAB, bias=False)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = self.head(self.ln(self.wte(idx)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))
        return logits, loss


def gpt_example() -> tuple[Tensor, Tensor]:
    """One (x, y) pair of token ids: y is x shifted by one."""
    seq = torch.tensor([3, 1, 4, 1, 5])
    return seq[:-1], seq[1:]


class SmallConvBN(nn.Module):
    """An image classifier with BatchNorm, as every ResNet-style model has."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.classifier = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def image_example() -> tuple[Tensor, Tensor]:
    return torch.linspace(-1, 1, 36).reshape(1, 6, 6), torch.tensor(2)


class LogSoftmaxNet(nn.Module):
    """An MNIST-example-style net: log-probabilities out, trained with nll_loss."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 16)
        self.dropout = nn.Dropout(0.25)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.fc2(self.dropout(F.relu(self.fc1(x)))), dim=1)


def vector_example() -> tuple[Tensor, Tensor]:
    return torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5]), torch.tensor(1)


class Output(dict[str, Tensor]):
    """A model output with attribute access, as transformers' ModelOutput has."""

    __getattr__ = dict.__getitem__


class TinyClassifier(nn.Module):
    """A model for dict batches: forward(input_ids, attention_mask, labels) -> .loss, .logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Output:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.emb(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.out(pooled)
        return Output(loss=F.cross_entropy(logits, labels), logits=logits)


def dict_example() -> dict[str, Tensor]:
    return {
        "input_ids": torch.tensor([2, 7, 1, 8]),
        "attention_mask": torch.tensor([1, 1, 1, 0]),
        "labels": torch.tensor(1),
    }


class LitStyleModule(nn.Module):
    """A module in the style of manual optimization: training_step steps its own optimizer."""

    accumulate = 2

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
        self._optimizer: torch.optim.Optimizer | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def optimizers(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self.configure_optimizers()
        return self._optimizer

    def manual_backward(self, loss: Tensor) -> None:
        loss.backward()  # type: ignore[no-untyped-call]


class D2LStyleModel(nn.Module):
    """A model of a class-based trainer: it names its loss and builds its optimizer."""

    def __init__(self, lr: float = 0.03) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.LazyLinear(1)

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(y_hat, y.reshape(y_hat.shape))

    def training_step(self, batch: Any) -> Tensor:
        *inputs, y = batch
        return self.loss(self(*inputs), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), self.lr)


def regression_example() -> tuple[Tensor, Tensor]:
    return torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.7])


# --- 1. a GPT-style trainer: step budget, accumulation, scaler, clipping, AdamW groups ---------


def adamw_groups(model: nn.Module, weight_decay: float = 0.1, lr: float = 6e-4) -> Any:
    """AdamW over two param groups, built from the named parameters: decay the matrices only."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _lr_at(it: int, warmup: int = 2, max_lr: float = 6e-4) -> float:
    return max_lr * (it + 1) / warmup if it < warmup else max_lr


def gpt_train(
    model: nn.Module,
    get_batch: Callable[[str], tuple[Tensor, Tensor]],
    max_iters: int,
    gradient_accumulation_steps: int = 2,
    grad_clip: float = 1.0,
    device: str = "cpu",
    divide: bool = True,
) -> None:
    """Runs max_iters optimizer steps of gradient_accumulation_steps micro-batches each."""
    optimizer = adamw_groups(model)
    scaler = torch.amp.GradScaler(device, enabled=True)
    X, Y = get_batch("train")  # prefetch the first batch
    for it in range(max_iters):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(it)
        for _ in range(gradient_accumulation_steps):
            _, loss = model(X, Y)
            if divide:
                loss = loss / gradient_accumulation_steps
            X, Y = get_batch("train")  # prefetch the next while this one's backward runs
            scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)


def gpt_train_undivided(model: nn.Module, get_batch: Any, max_iters: int, **kw: Any) -> None:
    """Twin: forgets to divide each micro-batch's loss by gradient_accumulation_steps."""
    gpt_train(model, get_batch, max_iters, divide=False, **kw)


# --- 2. a trainer that builds its own DataLoader and runs for max_iters ------------------------


def iters_train(
    model: nn.Module,
    dataset: Dataset[Any],
    max_iters: int,
    batch_size: int = 4,
    zero_after_backward: bool = False,
) -> None:
    """Samples batches forever from its own DataLoader, stops after max_iters steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    loader = DataLoader(
        dataset,
        sampler=RandomSampler(dataset, replacement=True, num_samples=10**9),
        batch_size=batch_size,
    )
    model.train()
    data_iter = iter(loader)
    for _ in range(max_iters):
        x, y = next(data_iter)
        _, loss = model(x, y)
        if zero_after_backward:
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
            loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def iters_train_zero_late(model: nn.Module, dataset: Any, max_iters: int, batch_size: int) -> None:
    """Twin: zero_grad moved to after backward(), so every step sees zero gradients."""
    iters_train(model, dataset, max_iters, batch_size, zero_after_backward=True)


# --- 3. an image trainer: accumulation, a last-window fix, a scaler, clipping, drop_last -------


def image_train(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    accum_steps: int = 2,
    clip: float | None = 5.0,
    bypass_scaler: bool = False,
    zero: bool = True,
    amp: bool = True,
) -> None:
    """Accumulates accum_steps batches; the epoch's last window is divided by its own length."""
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cpu", enabled=amp)
    n = len(loader)  # type: ignore[arg-type]
    last_full = n - n % accum_steps
    for _ in range(num_epochs):
        model.train()
        for i, (images, target) in enumerate(loader):
            window = accum_steps if i < last_full else n - last_full
            loss = criterion(model(images), target) / window
            scaler.scale(loss).backward()
            if (i + 1) % accum_steps == 0 or i + 1 == n:
                if bypass_scaler:
                    optimizer.step()
                else:
                    if clip is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), clip)
                    scaler.step(optimizer)
                    scaler.update()
                if zero:
                    optimizer.zero_grad()


def image_train_bypassed(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: optimizer.step() after scaler.scale(loss).backward(): the scale is never undone."""
    image_train(model, loader, optimizer, num_epochs, bypass_scaler=True)


def image_train_unzeroed(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: never zeroes the grads; the active clipping gives every step the same norm.

    Without a loss scaler: a scaler's in-place unscale_ divides the stale gradients by its scale
    at every step, which makes them negligible (under 1e-7 of the new ones here).
    """
    image_train(model, loader, optimizer, num_epochs, clip=1e-2, zero=False, amp=False)


# --- 4. a class-based Trainer with configure_optimizers ----------------------------------------


class Trainer:
    """d2l-style: fit(model, data) asks the model for its optimizer and its loss."""

    def __init__(self, max_epochs: int, summed: bool = False) -> None:
        self.max_epochs = max_epochs
        self.summed = summed

    def fit(self, model: Any, train_dataloader: Iterable[Any]) -> None:
        self.optim = model.configure_optimizers()
        self.model = model
        for self.epoch in range(self.max_epochs):  # noqa: B020 - as d2l writes it
            self.fit_epoch(train_dataloader)

    def fit_epoch(self, train_dataloader: Iterable[Any]) -> None:
        self.model.train()
        for batch in train_dataloader:
            loss = self.model.training_step(batch)
            if self.summed:  # the per-example losses summed, at the mean's lr
                loss = F.mse_loss(self.model(batch[0]), batch[1], reduction="sum")
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()


def trainer_fit(model: Any, loader: Any, num_epochs: int) -> None:
    """The adapter: one line around the class."""
    Trainer(max_epochs=num_epochs).fit(model, loader)


def trainer_fit_summed(model: Any, loader: Any, num_epochs: int) -> None:
    """Twin: the loss summed over the batch (reduction='sum') at the mean's learning rate."""
    Trainer(max_epochs=num_epochs, summed=True).fit(model, loader)


# --- 5. an epoch loop with a device argument and a StepLR --------------------------------------


def _train_epoch(model: nn.Module, device: Any, batches: Iterable[Any], optimizer: Any) -> None:
    model.train()
    for data, target in batches:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()


def mnist_style(
    model: nn.Module, device: Any, train_loader: Any, optimizer: Any, epochs: int
) -> None:
    """One call to _train_epoch per epoch, then scheduler.step()."""
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for _ in range(1, epochs + 1):
        _train_epoch(model, device, train_loader, optimizer)
        scheduler.step()


def mnist_style_stored(
    model: nn.Module, device: Any, train_loader: Any, optimizer: Any, epochs: int
) -> None:
    """Twin: the batches made once, as a generator, before the epochs: used up after one."""
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    batches = ((x, y) for x, y in train_loader)
    for _ in range(1, epochs + 1):
        _train_epoch(model, device, batches, optimizer)
        scheduler.step()


# --- 6. a manual-optimization training_step (Lightning style) ----------------------------------


def manual_step(module: Any, batch: Any, batch_idx: int, last: bool, flush: bool) -> None:
    """training_step with automatic optimization off: step every `accumulate` batches."""
    opt = module.optimizers()
    x, y = batch
    loss = F.cross_entropy(module(x), y)
    n = module.accumulate
    module.manual_backward(loss / n)
    if (batch_idx + 1) % n == 0 or (flush and last):
        if flush and last and (batch_idx + 1) % n:
            for p in module.parameters():  # the short window: rescale to its own length
                if p.grad is not None:
                    p.grad *= n / ((batch_idx + 1) % n)
        opt.step()
        opt.zero_grad()


def manual_fit(model: Any, loader: Any, num_epochs: int, flush: bool = True) -> None:
    """What a framework does for manual optimization: call training_step on every batch."""
    for _ in range(num_epochs):
        batches = list(loader)
        for i, batch in enumerate(batches):
            manual_step(model, batch, i, i == len(batches) - 1, flush)


def manual_fit_unflushed(model: Any, loader: Any, num_epochs: int) -> None:
    """Twin: steps only every `accumulate` batches; an epoch's left-over window is never stepped."""
    manual_fit(model, loader, num_epochs, flush=False)


# --- 7. a script body, a `def` around it -------------------------------------------------------


def script(net: nn.Module, trainloader: Any, epochs: int, late_zero: bool = False) -> None:
    """The tutorial script: its globals (net, trainloader, epochs) became parameters."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    for epoch in range(epochs):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            if not late_zero:
                optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            if late_zero:
                optimizer.zero_grad()
            optimizer.step()
            running_loss += loss.item()
            if i % 2000 == 1999:
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}")
                running_loss = 0.0


def script_late_zero(net: nn.Module, trainloader: Any, epochs: int) -> None:
    """Twin: zero_grad() between backward() and step()."""
    script(net, trainloader, epochs, late_zero=True)


# --- 8. a dict-batch loop (model(**batch).loss) ------------------------------------------------


def dict_train(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    device: Any = "cpu",
    nominal: bool = False,
) -> None:
    """Accumulates over dict batches; the epoch's last window divided by its own length."""
    model.train()
    steps = len(train_dataloader)
    for _ in range(num_epochs):
        for step, batch in enumerate(train_dataloader):
            batch = batch.to(device)
            remaining = steps - (step - step % gradient_accumulation_steps)
            window = min(gradient_accumulation_steps, remaining)
            if nominal:
                window = gradient_accumulation_steps
            loss = model(**batch).loss / window
            loss.backward()
            if (step + 1) % gradient_accumulation_steps == 0 or step + 1 == steps:
                optimizer.step()
                optimizer.zero_grad()


def dict_train_nominal(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: the short last window divided by the nominal gradient_accumulation_steps."""
    dict_train(
        model, train_dataloader, optimizer, num_epochs, gradient_accumulation_steps, nominal=True
    )


# --- 9. a plain loop on a conv net with BatchNorm ----------------------------------------------


def bn_train(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    criterion = nn.CrossEntropyLoss(label_smoothing=0.0)
    for _ in range(num_epochs):
        model.train()
        for images, target in loader:
            output = model(images)
            loss = criterion(output, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def bn_train_micro_means(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: each batch split in two, the halves' mean losses averaged (a mean of means)."""
    criterion = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        model.train()
        for images, target in loader:
            optimizer.zero_grad()
            half = math.ceil(len(images) / 2)
            halves = list(zip(images.split(half), target.split(half), strict=True))
            for xs, ys in halves:
                (criterion(model(xs), ys) / len(halves)).backward()
            optimizer.step()


# --- 10. an accumulation loop over a plain iterator, steps counted by itertools -----------------


def chunked_train(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Each step's micro-batches taken with islice; every loss summed, / the step's rows."""
    total = nn.CrossEntropyLoss(reduction="sum")
    for _ in range(num_epochs):
        it = iter(loader)
        while chunk := list(itertools.islice(it, accumulation_steps)):
            rows = sum(len(x) for x, _ in chunk)
            for x, y in chunk:
                (total(model(x), y) / rows).backward()
            optimizer.step()
            optimizer.zero_grad()


# --- 11. token-weighted accumulation over dict batches with -100 labels -------------------------


class TinyCausalLM(nn.Module):
    """A causal LM as transformers writes one: it shifts its labels, ignores -100, and with
    num_items_in_batch divides its summed token loss by that count instead of taking a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.mix = nn.Linear(12, 6)
        self.head = nn.Linear(6, VOCAB)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Output:
        h = self.emb(input_ids)
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        logits = self.head(torch.tanh(self.mix(torch.cat([h, previous], dim=-1))))
        if labels is None:
            return Output(logits=logits)
        shift_logits, shift_labels = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        if num_items_in_batch is None:
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        else:
            summed = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
            loss = summed / num_items_in_batch
        return Output(loss=loss, logits=logits)


def token_example() -> dict[str, Tensor]:
    ids = torch.tensor([4, 7, 1, 9, 2])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor([4, 7, -100, 9, 2]),  # one target masked, as padding is
    }


def token_train(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    count: str = "shifted",
) -> None:
    """Counts the window's targets first, then divides each micro-batch's summed loss by it."""
    for _ in range(num_epochs):
        batches = iter(train_dataloader)
        while window := list(itertools.islice(batches, gradient_accumulation_steps)):
            if count == "shifted":  # the targets the model's loss counts, after its shift
                num_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
            else:  # the labels as given, the first position included
                num_items = sum(int((b["labels"] != -100).sum()) for b in window)
            for batch in window:
                if count == "mean of means":
                    loss = model(**batch).loss / len(window)
                else:
                    loss = model(**batch, num_items_in_batch=num_items).loss
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def token_train_mean_of_means(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: each micro-batch's mean token loss / the micro-batches (the 2024 accumulation bug)."""
    token_train(
        model, train_dataloader, optimizer, num_epochs, gradient_accumulation_steps, "mean of means"
    )


def token_train_unshifted_count(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: the targets counted before the model's causal shift (the first position counted)."""
    token_train(
        model, train_dataloader, optimizer, num_epochs, gradient_accumulation_steps, "unshifted"
    )


# --- 12. a loss computed outside the model: the labels popped from the batch first -------------


class LogitsOnlyLM(TinyCausalLM):
    """The same causal LM with a forward that takes no labels (it returns logits alone)."""

    def forward(  # type: ignore[override]
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> Output:
        return super().forward(input_ids, attention_mask)


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The next-token loss summed over the targets that count (-100 is ignored)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )


def popped_train(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    per_batch_mean: bool = False,
) -> None:
    """Pops the labels (the model returns logits only), then divides the window's summed token
    loss by the window's count of targets, as transformers' Trainer does with num_items_in_batch."""
    model.train()
    for _ in range(num_epochs):
        batches = list(train_dataloader)
        for start in range(0, len(batches), gradient_accumulation_steps):
            window = batches[start : start + gradient_accumulation_steps]
            n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
            for batch in window:
                labels = batch.pop("labels")
                logits = model(**batch).logits
                if per_batch_mean:
                    own = max(1, int((labels[:, 1:] != -100).sum()))
                    loss = next_token_loss(logits, labels) / own / len(window)
                else:
                    loss = next_token_loss(logits, labels) / n_targets
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def popped_train_mean_of_means(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: each micro-batch's mean over its own targets, divided by the window's batches."""
    popped_train(model, train_dataloader, optimizer, num_epochs, gradient_accumulation_steps, True)


def shifted_token_loss(output: Output, labels: Tensor) -> Tensor:
    """The causal LM's loss on labels, as a user names it with loss=: the mean over the targets
    that count after the shift."""
    return next_token_loss(output.logits, labels) / (labels[:, 1:] != -100).sum()


def positional_train(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    per_batch_mean: bool = False,
) -> None:
    """Leaves the labels in the batch and feeds the model its input ids alone, positionally
    (`model(batch["input_ids"])`, as nanoGPT-style scripts on dict batches do), then divides
    the window's summed token loss by the window's count of targets."""
    for _ in range(num_epochs):
        batches = list(loader)
        for start in range(0, len(batches), gradient_accumulation_steps):
            window = batches[start : start + gradient_accumulation_steps]
            n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
            for b in window:
                loss = next_token_loss(model(b["input_ids"]).logits, b["labels"])
                if per_batch_mean:
                    own = max(1, int((b["labels"][:, 1:] != -100).sum()))
                    loss = loss / own / len(window)
                else:
                    loss = loss / n_targets
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def positional_train_mean_of_means(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: each micro-batch's mean over its own targets, divided by the window's batches."""
    positional_train(model, loader, optimizer, num_epochs, gradient_accumulation_steps, True)


# --- 13. a loop that weighs rows in a way no known mistake does ---------------------------------


def front_weighted(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Weighs the first half of each batch twice (a curriculum gone wrong): each step applies
    a weighted mean of its rows' gradients, not their mean, and matches no known mistake."""
    for _ in range(num_epochs):
        for x, y in loader:
            per_row = F.cross_entropy(model(x), y, reduction="none")
            weight = torch.ones_like(per_row)
            weight[: (len(per_row) + 1) // 2] = 2.0
            ((per_row * weight).sum() / weight.sum()).backward()
            optimizer.step()
            optimizer.zero_grad()


# --- 14. a linear probe: the head's params alone in the optimizer, the backbone not frozen -----


def probe_train(model: nn.Module, loader: Any, num_epochs: int, zero_once: bool = False) -> None:
    """Fine-tunes the classifier alone, as transfer-learning tutorials do: its optimizer holds
    model.classifier's params; the features, not frozen, still get a .grad at each backward()
    that no optimizer applies or zeroes."""
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        model.train()
        running_loss, running_corrects = 0.0, 0
        if zero_once:
            optimizer.zero_grad()
        for inputs, labels in loader:
            if not zero_once:
                optimizer.zero_grad()
            with torch.set_grad_enabled(True):
                outputs = model(inputs)
                _, preds = torch.max(outputs, 1)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            running_corrects += int(torch.sum(preds == labels))
        scheduler.step()


def probe_train_zeroed_once(model: nn.Module, loader: Any, num_epochs: int) -> None:
    """Twin: optimizer.zero_grad() once an epoch, before its batches."""
    probe_train(model, loader, num_epochs, zero_once=True)


# --- 15. a bfloat16 autocast loop, as reference scripts run AMP on a CPU -----------------------


def amp_train(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, nominal: bool = False
) -> None:
    """The forward and loss under torch.autocast in bfloat16 (`--amp` of a reference script),
    backward and step outside it: the gradients carry bfloat16's rounding, about 1e-2."""
    criterion = nn.CrossEntropyLoss(reduction="sum" if nominal else "mean")
    for _ in range(num_epochs):
        model.train()
        for image, target in loader:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                output = model(image)
                loss = criterion(output, target)
                if nominal:
                    loss = loss / loader.batch_size
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def amp_train_nominal(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: each batch's summed loss over the nominal batch_size."""
    amp_train(model, loader, optimizer, num_epochs, nominal=True)


# --- 16. a validation pass each epoch, written without torch.no_grad() --------------------------

VALIDATION = (torch.linspace(-1, 1, 4 * 36).reshape(4, 1, 6, 6), torch.tensor([0, 1, 2, 1]))


def validated_train(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, nominal: bool = False
) -> list[float]:
    """Validates after each epoch in grad mode (the forward keeps a graph no backward() uses:
    wasteful, as eval-no-grad says, but no update's gradient changes)."""
    history = []
    for _ in range(num_epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            if nominal:
                loss = F.cross_entropy(model(x), y, reduction="sum") / loader.batch_size
            else:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        images, labels = VALIDATION
        history.append(F.cross_entropy(model(images), labels).item())
    return history


def validated_train_nominal(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: each batch's summed loss over the nominal batch_size."""
    validated_train(model, loader, optimizer, num_epochs, nominal=True)


# --- 17. a fine-tuning recipe that scales .grad itself before each step (torchtune's shape) -----


def scale_grads(model: nn.Module, scaler: Tensor | float) -> None:
    """Multiplies every gradient the model holds by scaler, in place."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(scaler)


def recipe_train(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    rescale: bool = True,
) -> None:
    """Pops the labels, weighs each micro-batch's mean token loss by its targets, then scales
    the window's gradients by 1 / its targets and clips their norm before the step (the
    division is in .grad, not in the loss); the epoch's last, partial window is stepped too."""
    model.train()
    for _ in range(num_epochs):
        num_tokens = torch.tensor(0)
        for idx, batch in enumerate(train_dataloader):
            labels = batch.pop("labels")
            logits = model(**batch).logits
            targets = labels[..., 1:]
            current = (targets != -100).sum()
            num_tokens += current
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100
            )
            (loss * current).backward()
            if (idx + 1) % gradient_accumulation_steps == 0 or idx + 1 == len(train_dataloader):
                if rescale:
                    scale_grads(model, 1 / num_tokens)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                num_tokens = torch.tensor(0)


def recipe_train_unscaled(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
) -> None:
    """Twin: the scaling dropped, so each step applies the window's summed token loss."""
    recipe_train(model, train_dataloader, optimizer, num_epochs, gradient_accumulation_steps, False)
