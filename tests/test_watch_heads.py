"""A loss's head and the piece of its output it read (linreg.kinds.watched.heads): columns of
one Linear are two tasks' heads only where each task's batches come from a dataset of their
own; the columns of one batch's output (a regression of several targets, each target's loss
added) stay one objective, whose summed loss is named as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch
from linreg.kinds.watched.heads import piece

_OUT = (4, 5)  # an output of 4 rows and 5 columns

PIECES: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], object]] = [
    ("columns", lambda out: out[:, 1:3], (1, 5, frozenset({1, 2}))),
    ("last column", lambda out: out[:, -1:], (1, 5, frozenset({4}))),
    ("narrowed", lambda out: out.narrow(1, 2, 2), (1, 5, frozenset({2, 3}))),
    ("selected", lambda out: out[:, 0], (1, 5, frozenset({0}))),
    ("selected from the end", lambda out: out[..., -2], (1, 5, frozenset({3}))),
    ("unbound", lambda out: out.unbind(1)[3], (1, -1, frozenset({3}))),
    ("chunked", lambda out: out.chunk(3, dim=-1)[2], (1, 5, frozenset({4}))),
    ("split by sizes", lambda out: out.split([2, 3], dim=1)[1], (1, 5, frozenset({2, 3, 4}))),
    ("selected then reshaped", lambda out: out[:, 2].view(-1, 1), (1, 5, frozenset({2}))),
    ("rows: the first dim", lambda out: out[:2], None),
    ("the whole output", lambda out: out, None),
    ("a slice of a slice", lambda out: out[:, 1:][:, 0], None),
    ("columns by a list", lambda out: out[:, [0, 1]], None),
    ("rows by a mask", lambda out: out[out[:, 0] > 0], None),
]


@pytest.mark.parametrize(
    ("how", "read"), [(p[1], p[2]) for p in PIECES], ids=[p[0] for p in PIECES]
)
def test_the_piece_a_loss_read_is_a_fixed_slice_of_its_outputs_columns_or_none(
    how: Callable[[torch.Tensor], torch.Tensor], read: object
) -> None:
    """The dim, the output's size there and the indices, read from autograd's graph; None
    where the input is not one fixed slice of an output along a dim other than the rows."""
    out = nn.Linear(3, _OUT[1])(torch.randn(_OUT[0], 3))
    assert piece(how(out)) == read
    assert piece(how(out).detach()) is None


def _targets(bug: str = "", rows: int = 48, unlabelled: bool = False) -> None:
    """A regression of three targets from one DataLoader, batches of 8, the three columns of
    one Linear's output each the mean of its own target's loss, added (a weighting of the
    targets); the third target a count, stored as integers and cast per batch. unlabelled:
    zipped with a loader of unlabelled rows, fetched after the labelled batch and watched
    under no_grad (its predictions' mean logged). bug "summed": each target's loss a sum."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 6, generator=gen)
    counts = (x[:, 5].abs() * 3).long()
    data = TensorDataset(x, x[:, :2] * 2 - x[:, 3:5], counts)
    unlabelled_rows = DataLoader(TensorDataset(torch.randn(rows, 6, generator=gen)), batch_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    reduction = "sum" if bug == "summed" else "mean"
    drift = []
    for _ in range(2):
        labelled = DataLoader(data, batch_size=8, shuffle=True, generator=gen)
        fetched = zip(labelled, unlabelled_rows, strict=True) if unlabelled else labelled
        for batch in fetched:
            (xb, yb, count), u = batch if unlabelled else (batch, None)
            out = model(xb)
            loss = F.mse_loss(out[:, 0], yb[:, 0], reduction=reduction)
            loss = loss + F.mse_loss(out[:, 1], yb[:, 1], reduction=reduction)
            loss = loss + F.mse_loss(out[:, 2], count.float(), reduction=reduction)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if u is not None:
                with torch.no_grad():
                    drift.append(float(model(u[0]).mean()))


@pytest.mark.parametrize(
    ("rows", "unlabelled"),
    [(48, False), (50, False), (48, True)],
    ids=["full-batches", "a-short-batch", "beside-an-unlabelled-loader"],
)
def test_columns_of_one_batchs_output_stay_one_objective_and_a_summed_loss_fails(
    rows: int, unlabelled: bool
) -> None:
    """Each target a column of one output, every column's loss on the same batch: one head,
    as before columns told tasks apart. Read as three tasks instead, a loss summed over every
    batch of full ones alone could be a weight of the code's, and exited 0. A target cast
    per batch is its batch's, whichever loader fetched last (code review cr38: the count's
    column was put on the unlabelled loader's dataset, a task of its own, and the summed loss
    exited 0; read apart, its 8 targets were named, not the update's 24)."""
    with watch(steps=12) as reports:
        _targets(rows=rows, unlabelled=unlabelled)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch(steps=12) as reports:
        _targets("summed", rows=rows, unlabelled=unlabelled)
    assert [r.pitfall for r in reports[0].failures] == ["mean-vs-sum"], str(reports[0])
    assert "(1 micro-batch(es), 24 counted)" in reports[0].failures[0].message  # every target


class _TwoColumns(nn.Module):
    """A trunk and one Linear whose output's columns are two tasks' predictions."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 12), nn.Tanh())
        self.out = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        out = self.out(self.trunk(x))
        return out if task is None else out[:, task : task + 1]


def _column_tasks(
    bug: str = "",
    stored: torch.dtype = torch.float32,
    validate: bool = False,
    standardized: bool = False,
) -> None:
    """Two regressions, each a column of one output, each task's 50 rows from a loader of its
    own (batches of 8, zipped), each task's loss its own backward(), one step: the sum of the
    tasks' means. stored: the rows' dtype, each batch cast to float32 (float64 tables, as
    tabular code casts them). validate: after each epoch, both tasks' losses on a validation
    loader with grad on (the model in eval mode alone). standardized: each task's batch
    fetched in its turn, just before its loss, and its targets standardized by the task's
    mean and spread (a target no batch holds). bug "summed": task b's loss a sum."""
    gen = torch.Generator().manual_seed(0)
    tasks = [torch.randn(50, 6, generator=gen, dtype=torch.float64) for _ in range(2)]
    loaders = [
        DataLoader(TensorDataset(x.to(stored), x[:, t : t + 1].to(stored) * 2), batch_size=8)
        for t, x in enumerate(tasks)
    ]
    checked = DataLoader(TensorDataset(torch.randn(16, 6), torch.randn(16, 2)), batch_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _TwoColumns()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        model.train()
        turns = [iter(loader) for loader in loaders]
        for _ in range(len(loaders[0])):
            for task, batches in enumerate(turns):
                x, y = (t.float() for t in next(batches))
                if standardized:
                    y = (y - 0.1 * task) / 2.0
                summed = bug == "summed" and task == 1
                F.mse_loss(model(x, task), y, reduction="sum" if summed else "mean").backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        for xv, yv in checked if validate else ():
            seen = F.mse_loss(model(xv, 0), yv[:, :1]) + F.mse_loss(model(xv, 1), yv[:, 1:])
            assert seen.requires_grad


@pytest.mark.parametrize(
    ("stored", "validate", "standardized"),
    [
        (torch.float32, False, False),
        (torch.float64, False, False),
        (torch.float32, True, False),
        (torch.float32, False, True),
    ],
    ids=["float32", "float64-cast-per-batch", "a-validation-with-grad-on", "standardized"],
)
def test_column_tasks_stay_apart_through_a_cast_and_an_evaluation(
    stored: torch.dtype, validate: bool, standardized: bool
) -> None:
    """Column tasks from loaders of their own pass, and task b's summed loss fails naming its
    head. A target cast per batch (float64 rows to float32, as .to(device) makes a new
    storage too) is still its loader's; losses no backward() reaches (a validation with grad
    on) number no head, so they join none (code review cr38: both read the tasks as one
    objective again, and the correct loop failed mean-vs-sum). A target no batch holds is
    the last loader's to fetch (code review cr39: read as no loader's, one objective, the
    correct loop failed); its terms' weights are not judged."""
    with watch(steps=14) as reports:
        _column_tasks(stored=stored, validate=validate, standardized=standardized)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch(steps=14) as reports:
        _column_tasks("summed", stored=stored, validate=validate, standardized=standardized)
    report = reports[0]
    if standardized:  # terms on targets no batch holds: their weights not judged, no pass
        verdict = next(r for r in report.results if r.pitfall == "mean-vs-sum")
        assert verdict.verdict == "skip", str(report)
        return
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "its mse_loss (head 2)" in report.failures[0].message, str(report)


class _CharLM(nn.Module):
    """A character GRU whose decoder is its embedding (tied, no bias) and whose first state is
    learned: the first character's logits come from that state alone."""

    def __init__(self, vocab: int = 11, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.cell = nn.GRUCell(width, width)
        self.first = nn.Parameter(torch.zeros(width))
        self.decode = nn.Linear(width, vocab, bias=False)
        self.decode.weight = self.embed.weight

    def losses(self, chars: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        """The mean over the steps of each step's cross-entropy on the next character."""
        state = self.first.expand(len(chars), -1)
        total = torch.zeros(())
        for step in range(chars.shape[1]):
            total = total + F.cross_entropy(self.decode(state), following[:, step])
            state = self.cell(self.embed(chars[:, step]), state)
        return total / chars.shape[1]


def _char_lm(bug: str = "") -> None:
    """50 sequences of 6 characters in batches of 8 (7 an epoch, the last of 2), windows of 2
    micro-batches (the epoch's last of 1), each loss divided by its window's; bug "undivided"
    (never divided) or "nominal" (divided by 2, the short window too)."""
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(0, 11, (50, 7), generator=gen)
    data = TensorDataset(text[:, :-1], text[:, 1:])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _CharLM()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = 7
    for _ in range(2):
        for i, (chars, following) in enumerate(DataLoader(data, batch_size=8, generator=gen)):
            window = min(2, batches - (i - i % 2))
            div = {"undivided": 1, "nominal": 2}.get(bug, window)
            (model.losses(chars, following) / div).backward()
            if (i + 1) % 2 == 0 or i + 1 == batches:
                optimizer.step()
                optimizer.zero_grad()


def test_a_tied_decoder_reached_beside_a_learned_first_state_is_one_head() -> None:
    """The first step's logits reach the tied decoder and the learned first state (both the
    nearest params), the later steps' the decoder alone: one head, as a head that shares a
    param with one met before is that one. Read as two heads (code review cr37h), an
    accumulation window never divided and a nominal divisor on the short window were read as
    tasks' weights."""
    with watch(steps=8) as reports:
        _char_lm()
    assert reports[0].ok and not reports[0].error, str(reports[0])
    for bug, pitfall in (("undivided", "mean-vs-sum"), ("nominal", "short-last-batch")):
        with watch(steps=8) as reports:
            _char_lm(bug)
        assert [r.pitfall for r in reports[0].failures] == [pitfall], str(reports[0])
