"""The watch on correct code that moves its params, zeroes or rescales its own gradients, or
skips a step: none of it is an update by hand, a dropped window or a scale. SAM's first pass,
an adversarial attack's passes, a pruning pass that reshapes the params, rows renormalised by
an embedding's max_norm, a step skipped on a large gradient, a summed loss divided on the
gradients before clipping, two optimizers stepped as one update. And the mistakes that look
alike still fail: zero_grad inside the accumulation loop, an epoch's left-over window zeroed
at the next epoch's first step, one of two optimizers never zeroed."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref
from pathlib import Path

import torch
from torch.nn import functional as F

from linreg.audit.watcher import watch, watch_script
from linreg.kinds.watched import Enough

HEAD = """
import itertools

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
data = TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,)))
loader = DataLoader(data, batch_size=8, shuffle=True)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
"""

SHARPNESS_AWARE = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(2):
    for x, y in loader:
        F.cross_entropy(model(x), y).backward()  # the first pass: climb to w + e(w)
        with torch.no_grad():
            norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
            climbs = [0.05 * p.grad / norm for p in model.parameters()]
            for p, e in zip(model.parameters(), climbs):
                p.add_(e)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()  # the second pass, at w + e(w)
        with torch.no_grad():
            for p, e in zip(model.parameters(), climbs):
                p.sub_(e)
        optimizer.step()
        optimizer.zero_grad()
"""

ATTACKED = """
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(2):
    for x, y in loader:
        delta = torch.zeros_like(x, requires_grad=True)
        for _ in range(3):  # projected gradient ascent on the input
            F.cross_entropy(model(x + delta), y).backward()
            delta.data = (delta + 0.01 * delta.grad.sign()).clamp(-0.05, 0.05)
            delta.grad.zero_()
        optimizer.zero_grad()
        F.cross_entropy(model(x + delta.detach()), y).backward()
        optimizer.step()
"""

PRUNED = """
first, last = model[0], model[2]
for x, y in loader:  # score the hidden units by |w * grad|, over one epoch
    F.cross_entropy(model(x), y).backward()
with torch.no_grad():
    keep = (first.weight * first.weight.grad).abs().sum(1).argsort(descending=True)[:8]
    first.weight.data, first.bias.data = first.weight.data[keep], first.bias.data[keep]
    last.weight.data = last.weight.data[:, keep]
model.zero_grad(set_to_none=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""

MAX_NORM = """
emb = nn.Embedding(20, 6, max_norm=1.0)  # rows looked up are renormalised in place
tokens = torch.randint(0, 20, (48,))
optimizer = torch.optim.SGD(list(model.parameters()) + list(emb.parameters()), lr=0.1)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        idx = tokens[i * 8 : i * 8 + 8]
        (F.cross_entropy(model(emb(idx) + x), y) / 2).backward()
        if i % 2 == 1:
            optimizer.step()
            optimizer.zero_grad()
"""

ZEROED_EACH = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()  # inside the window: only its last batch is ever applied
        (F.cross_entropy(model(x), y) / 2).backward()
        if i % 2 == 1:
            optimizer.step()
"""

LEFT_OVER_ZEROED = """
loader = DataLoader(data, batch_size=16)  # 3 batches an epoch, windows of 2
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for i, (x, y) in enumerate(loader):
        if i % 2 == 0:
            optimizer.zero_grad()  # at the next epoch's start: the left-over batch is lost
        (F.cross_entropy(model(x), y) / 2).backward()
        if i % 2 == 1:
            optimizer.step()
"""


SKIPS_LARGE = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
        if i == 2 or not torch.isfinite(norm):  # a step skipped now and then, on purpose
            continue
        optimizer.step()
"""

DIVIDED_THEN_CLIPPED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y, reduction="sum").backward()
        for p in model.parameters():  # the summed loss divided on the gradients, then clipped
            p.grad.mul_(1 / len(y))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
"""

TWO_OPTIMIZERS = """
body, head = model[0], model[2]
first = torch.optim.SGD(body.parameters(), lr=0.1)
second = torch.optim.Adam(head.parameters(), lr=1e-3)
for epoch in range(2):
    for x, y in loader:
        F.cross_entropy(model(x), y).backward()
        first.step()
        second.step()
        first.zero_grad()
        second.zero_grad()
"""


TWO_TASKS = """
trunk, head_a, head_b = model[0], nn.Linear(16, 3), nn.Linear(16, 2)
params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
optimizer = torch.optim.SGD(params, lr=0.1)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        h = torch.relu(trunk(x))  # each task's mean loss its own backward() on one forward
        F.cross_entropy(head_a(h), y).backward(retain_graph=True)
        F.cross_entropy(head_b(h), y % 2).backward()
        optimizer.step()
"""

PER_EXAMPLE_CLIPPED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        summed = [torch.zeros_like(p) for p in model.parameters()]
        for i in range(len(x)):  # DP-SGD by hand: each example's gradient clipped, then summed
            model.zero_grad()
            F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
            norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
            for s, p in zip(summed, model.parameters()):
                s += p.grad * min(1.0, 0.5 / float(norm))
        for s, p in zip(summed, model.parameters()):
            p.grad = s / len(x)
        optimizer.step()
"""

VALIDATION_NORMS = """
val = DataLoader(TensorDataset(torch.randn(16, 6), torch.randint(0, 3, (16,))), batch_size=8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for x, y in val:  # each validation batch's gradient norm, for a plot: no step
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
"""

PROBED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
probe = next(iter(loader))  # a fixed batch whose gradient norm is tracked
norms = []
for epoch in range(2):
    for x, y in loader:
        F.cross_entropy(model(probe[0]), probe[1]).backward()
        norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""

PROBED_WEIGHTED = PROBED.replace(  # the training loss weighed 0.5 on purpose (code review cr20)
    "F.cross_entropy(model(x), y).backward()", "(0.5 * F.cross_entropy(model(x), y)).backward()"
)

PROBED_FRESH = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        px, py = next(iter(loader))  # a fresh iterator's first batch each time
        F.cross_entropy(model(px), py).backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""

PROBED_BY_HAND = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
probe = next(iter(loader))
for step in range(14):
    x, y = next(iter(loader))  # a random batch a step, the probe's norm read first
    F.cross_entropy(model(probe[0]), probe[1]).backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    for p in model.parameters():
        p.grad.data.zero_()  # the old idiom: it leaves the tensor's version as it was
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
"""

DEAD_ROWS = """
live = torch.linspace(-1.0, 0.0, 4)[:, None]
dead = torch.full((4, 1), 1.0)  # past the ReLU's hinge: every row's output and gradient 0
rows = TensorDataset(torch.cat([dead, live, dead, live, dead, dead]), torch.rand(24, 1))
model = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
with torch.no_grad():
    model[0].weight.fill_(-5.0)
    model[0].bias.fill_(1.0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for i, (xb, yb) in enumerate(DataLoader(rows, batch_size=4)):
        (F.mse_loss(model(xb), yb) / 2).backward()  # a window of 2: the first batch all dead
        if (i + 1) % 2 == 0:
            optimizer.step()
            optimizer.zero_grad()
"""

FRESH_EACH_ZEROED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(12):
    for micro in range(2):  # a batch from a fresh iterator each micro-batch, zeroed inside
        x, y = next(iter(loader))
        optimizer.zero_grad()
        (F.cross_entropy(model(x), y) / 2).backward()
    optimizer.step()
"""

CROSSING_ZEROED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
micro_step = 0
for epoch in range(3):
    for x, y in loader:  # windows of 4 counted over the run: they cross each epoch's end
        optimizer.zero_grad()  # inside every window, not once a window
        (F.cross_entropy(model(x), y) / 4).backward()
        micro_step += 1
        if micro_step % 4 == 0:
            optimizer.step()
"""

GATED_ZEROED = """
gate = nn.Linear(6, 3)  # a second head gated off: its gradient is all 0 at every backward()
optimizer = torch.optim.SGD([*model.parameters(), *gate.parameters()], lr=0.1)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad(set_to_none=False)  # inside the window of 2
        (F.cross_entropy(model(x) + 0.0 * gate(x), y) / 2).backward()
        if i % 2 == 1:
            optimizer.step()
"""

ZIPPED_ZEROED = """
second = DataLoader(TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,))), 8, shuffle=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for (x1, y1), (x2, y2) in zip(loader, second):  # a batch of each a window, zeroed inside
        optimizer.zero_grad()
        (F.cross_entropy(model(x1), y1) / 2).backward()
        optimizer.zero_grad()
        (F.cross_entropy(model(x2), y2) / 2).backward()
        optimizer.step()
"""

PROBE_LEAKED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
probe = next(iter(loader))
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()  # before the probe, not after: its gradient joins the step
        F.cross_entropy(model(probe[0]), probe[1]).backward()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""

ZIPPED = """
unlabelled = DataLoader(TensorDataset(torch.randn(48, 6)), batch_size=8, shuffle=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for i, ((x, y), (u,)) in enumerate(zip(loader, unlabelled)):
        loss = F.cross_entropy(model(x), y, reduction="sum") / 16  # windows of 2 batches
        (loss + 0.0 * model(u).sum()).backward()
        if i % 2 == 1:
            optimizer.step()
            optimizer.zero_grad()
"""

CHUNK_ZEROED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        for xc, yc in zip(x.chunk(2), y.chunk(2)):  # in chunks for memory
            optimizer.zero_grad()  # inside the chunk loop: only the last chunk is applied
            (F.cross_entropy(model(xc), yc) / 2).backward()
        optimizer.step()
"""

PER_STEP = """
rnn, out = nn.GRUCell(6, 8), nn.Linear(8, 3)
optimizer = torch.optim.Adam([*rnn.parameters(), *out.parameters()], lr=1e-3)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        h, loss = torch.zeros(len(x), 8), 0.0
        for t in range(100):  # a loss at each of 100 steps, one backward()
            h = rnn(x, h)
            loss = loss + F.cross_entropy(out(h), y)
        (loss / 100).backward()
        optimizer.step()
"""


RETAINED_BY_HABIT = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        F.cross_entropy(model(x), y).backward(retain_graph=True)  # not divided by the window
        if i % 2 == 1:
            optimizer.step()
            optimizer.zero_grad()
"""

TWO_MODELS = """
other = nn.Linear(6, 3)
first = torch.optim.SGD(model.parameters(), lr=0.1)
second = torch.optim.SGD(other.parameters(), lr=0.1)
for epoch in range(2):
    for x, y in loader:
        loss_a = F.cross_entropy(model(x), y)  # both losses first, then each model's step
        loss_b = F.cross_entropy(other(x), y, reduction="sum")
        first.zero_grad()
        loss_a.backward()
        first.step()
        second.zero_grad()
        loss_b.backward()
        second.step()
"""

ZEROED_WITH_PENALTY = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()  # inside the window, beside a penalty on the params
        penalty = 1e-3 * sum((p**2).sum() for p in model.parameters())
        ((F.cross_entropy(model(x), y) + penalty) / 2).backward()
        if i % 2 == 1:
            optimizer.step()
"""

ROUND_ROBIN = """
tasks = [loader, DataLoader(TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,))), 8)]
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    streams = [iter(task) for task in tasks]
    for step in range(len(loader)):
        for stream in streams:  # a batch of each task a window, zero_grad inside it
            x, y = next(stream)
            optimizer.zero_grad()
            (F.cross_entropy(model(x), y) / 2).backward()
        optimizer.step()
"""


LISTED_GAN = """
batches = list(loader)  # the data listed up front: no DataLoader fetch during training
generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6))
critic = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
opt_d = torch.optim.Adam(critic.parameters(), lr=1e-3)
for epoch in range(2):
    for x, _ in batches:
        fake = generator(torch.randn(len(x), 4))
        opt_d.zero_grad()  # the real term and the fake one, each its own backward()
        F.binary_cross_entropy_with_logits(critic(x), torch.ones(len(x), 1)).backward()
        F.binary_cross_entropy_with_logits(critic(fake.detach()), torch.zeros(len(x), 1)).backward()
        opt_d.step()
        opt_g.zero_grad()
        F.binary_cross_entropy_with_logits(critic(fake), torch.ones(len(x), 1)).backward()
        opt_g.step()
"""


PROBED_PASSES = """
probe = DataLoader(TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,))), batch_size=4)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
norms = []
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        if i % 2 == 0:  # a gradient norm over a probe loader's whole pass, every 2 steps
            for xp, yp in probe:
                optimizer.zero_grad()
                F.cross_entropy(model(xp), yp).backward()
                norms.append(float(model[0].weight.grad.norm()))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""


SECOND_STREAM_ZEROED = """
other = DataLoader(TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,))), batch_size=8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    stream = iter(other)
    for x, y in loader:
        x2, y2 = next(stream)  # a second task's batch, each step: its gradient zeroed away
        optimizer.zero_grad()
        F.cross_entropy(model(x2), y2).backward()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
"""


CYCLED_ZEROED = (  # a second task's 3 batches, its pass over and replayed: no probe's
    SECOND_STREAM_ZEROED.replace("    stream = iter(other)\n", "")
    .replace("for epoch in range(2):", "stream = itertools.cycle(other)\nfor epoch in range(2):")
    .replace("(48", "(24")
)


CURRICULUM_TAIL = """
hard = DataLoader(TensorDataset(torch.randn(16, 6), torch.randint(0, 3, (16,))), batch_size=8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
k, seen = 3, 0
for stage in (loader, hard):  # 6 batches, then 2: the last 2 never stepped
    for x, y in stage:
        (F.cross_entropy(model(x), y) / k).backward()
        seen += 1
        if seen % k == 0:
            optimizer.step()
            optimizer.zero_grad()
"""


PROBED_NOMINAL = (  # 50 rows: a last batch of 2, its summed loss divided by a nominal 8
    PROBED_PASSES.replace(
        "F.cross_entropy(model(x), y).backward()",
        'F.cross_entropy(model(x), y, reduction="sum").div(8).backward()',
    ).replace(
        "norms = []",
        "data = TensorDataset(torch.randn(50, 6), torch.randint(0, 3, (50,)))\n"
        "loader = DataLoader(data, batch_size=8)\nnorms = []",
    )
)


PROBED_OWN_ROWS = PROBED_PASSES.replace(  # the probe over the training set's first 8 rows
    "probe = DataLoader(TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,))), batch_size=4)",
    "probe = DataLoader(data, batch_size=4, sampler=range(8))",
)
PROBED_REBUILT = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
norms = []
for epoch in range(3):
    # a gradient norm over the training set's first rows, its DataLoader made anew, zeroed
    for xp, yp in DataLoader(data, batch_size=4, sampler=range(8)):
        optimizer.zero_grad()
        F.cross_entropy(model(xp), yp).backward()
        norms.append(float(model[0].weight.grad.norm()))
    epoch_loader = DataLoader(data, batch_size=8, shuffle=True)  # made anew each epoch
    for x, y in epoch_loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    del epoch_loader  # (CPython hands its sampler's memory to the next probe's)
"""
PROBED_OWN_NOMINAL = PROBED_NOMINAL.replace(  # (its own data: 50 rows, the last batch of 2)
    "probe = DataLoader(TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,))), batch_size=4)",
    "probe = DataLoader(data, batch_size=4, sampler=range(8))",
)


def _watched(tmp: Path, body: str) -> str:
    path = tmp / "train.py"
    path.write_text(HEAD + body)
    return str(path)


def test_moves_and_passes_of_the_codes_own_are_neither_updates_by_hand_nor_left_overs(
    tmp_path: Path,
) -> None:
    for body in (
        SHARPNESS_AWARE, ATTACKED, PRUNED, MAX_NORM, SKIPS_LARGE, DIVIDED_THEN_CLIPPED,
        TWO_TASKS, PER_EXAMPLE_CLIPPED, VALIDATION_NORMS, ZIPPED, PER_STEP, LISTED_GAN,
        PROBED, PROBED_FRESH, DEAD_ROWS, PROBED_BY_HAND, PROBED_WEIGHTED, PROBED_PASSES,
        PROBED_OWN_ROWS, PROBED_REBUILT,
    ):  # fmt: skip
        report = watch_script(_watched(tmp_path, body))
        assert report.ok and not report.error, str(report)
        assert any(r.verdict == "pass" for r in report.results), str(report)


def test_passes_zeroed_before_training_or_on_the_same_rows_again_are_said_in_the_note(
    tmp_path: Path,
) -> None:
    # 6 batches an epoch, watched to the first update of the next: 7 updates
    for body, passes in ((SHARPNESS_AWARE, 7), (ATTACKED, 7 * 3), (PRUNED, 6), (PROBED, 7)):
        report = watch_script(_watched(tmp_path, body))
        note = report.note or ""
        assert f"{passes} backward() call(s) had their gradients zeroed by the code" in note, note


def test_a_window_zeroed_inside_or_lost_at_an_epochs_start_still_fails(tmp_path: Path) -> None:
    by_hand = ZEROED_EACH.replace(  # .data.zero_() leaves no version (code review cr18)
        "optimizer.zero_grad()",
        "[p.grad.data.zero_() for p in model.parameters() if p.grad is not None]",
    )
    for body in (ZEROED_EACH, by_hand):
        report = watch_script(_watched(tmp_path, body))
        assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
        assert "zero_grad inside the accumulation loop" in report.failures[0].message
    report = watch_script(_watched(tmp_path, LEFT_OVER_ZEROED))
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "an epoch's left-over window dropped" in report.failures[0].message
    # a second loader's last window, never stepped, though no update applied its batches
    # (its end was no epoch's for a while: code review cr24)
    report = watch_script(_watched(tmp_path, CURRICULUM_TAIL))
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    # a probe loader's end, between two steps, ends no watch: the epoch's short last batch,
    # under a nominal divisor, is still seen (code review cr25: it ended the watch first)
    # (a probe loader over the training set's own rows is another loader: stop 53's note, a
    # false short-last-batch where its pass's end was the training data's)
    for body in (PROBED_NOMINAL, PROBED_OWN_NOMINAL):
        report = watch_script(_watched(tmp_path, body))
        assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
        assert "it divides by a full update's 8 where it took 2" in str(report), str(report)


def test_a_watched_block_that_reshapes_its_params_ends_without_raising_into_the_code() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    with watch() as reports:
        F.mse_loss(torch.randn(5, 3) @ w.T, torch.randn(5, 4)).backward()
        w.data = w.data[:2]  # cut by hand; no optimizer ever steps
        w.grad = None
        F.mse_loss(torch.randn(5, 3) @ w.T, torch.randn(5, 2)).backward()
    assert w.shape == (2, 3)  # left as the code made it: a snapshot of another shape is not put
    assert reports[0].error, str(reports[0])


def test_the_watchs_end_of_run_signal_copies_and_pickles_with_its_message() -> None:
    for again in (copy.copy(Enough()), pickle.loads(pickle.dumps(Enough()))):
        assert isinstance(again, Enough) and "linreg watch" in str(again)


def test_a_step_skipped_now_and_then_is_said_in_the_note(tmp_path: Path) -> None:
    report = watch_script(_watched(tmp_path, SKIPS_LARGE))
    assert "a step the code skipped" in (report.note or ""), str(report)


def test_two_optimizers_are_one_update_and_the_one_never_zeroed_is_named(
    tmp_path: Path,
) -> None:
    report = watch_script(_watched(tmp_path, TWO_OPTIMIZERS))
    assert report.ok and not report.error, str(report)
    for unzeroed in ("        first.zero_grad()\n", "        second.zero_grad()\n"):
        report = watch_script(_watched(tmp_path, TWO_OPTIMIZERS.replace(unzeroed, "")))
        assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)


def test_chunks_of_one_batch_zeroed_inside_the_loop_still_fail(tmp_path: Path) -> None:
    report = watch_script(_watched(tmp_path, CHUNK_ZEROED))  # views of one batch: other rows
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)


def test_a_hundred_losses_one_backward_reaches_are_all_read(tmp_path: Path) -> None:
    # undivided: every update applies 100 times its mean, read only if all 100 losses are (on
    # equal batches a constant the loss's own could be: noted, not judged)
    report = watch_script(_watched(tmp_path, PER_STEP.replace("(loss / 100)", "loss")))
    assert "every full update applies 100 times the mean" in (report.note or ""), str(report)


def test_names_kept_from_a_watched_block_pass_straight_through_after_it() -> None:
    with watch():
        kept_loss, kept_clip = F.cross_entropy, torch.nn.utils.clip_grad_norm_
    assert torch.nn.utils.clip_grad_norm_ is not kept_clip  # the module's own again
    w = torch.nn.Parameter(torch.randn(3, 2))
    h = torch.randn(4, 2, requires_grad=True) * 1.0  # saved by the matmul's graph
    alive = weakref.ref(h)
    loss = kept_loss(h @ w.T, torch.tensor([0, 1, 2, 0]))
    del h, loss  # a wrapper still watching would hold the loss's graph, and h with it
    gc.collect()
    assert alive() is None
    kept_clip([w], 1.0)  # and clips as the original does


def test_what_looks_like_the_codes_own_still_shows_the_bugs_it_holds(tmp_path: Path) -> None:
    report = watch_script(_watched(tmp_path, RETAINED_BY_HABIT))  # one forward a backward()
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    report = watch_script(_watched(tmp_path, TWO_MODELS))  # its loss read before the step
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    report = watch_script(_watched(tmp_path, ROUND_ROBIN))  # another loader, every window
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
    # a probe batch read and zeroed before each step passes (PROBED: it was grad-zeroing's, a
    # false alarm); zeroed before the probe instead, its gradient joins every step
    report = watch_script(_watched(tmp_path, PROBE_LEAKED))
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    # every micro-batch from a fresh iterator, or a second loader's beside the first: no
    # probe's (code review cr17: a false pass, and short-last-batch beside grad-zeroing)
    # and zeroing inside every window whose windows cross epochs is no left-over window
    # zeroed at an epoch's start (review 27: short-last-batch)
    # a gradient left 0 on some params (a head gated off) hides no zeroing of the others
    # (code review cr19: short-last-batch)
    # a whole pass over a probe loader between two steps is set aside (code review cr22: it
    # ended the watch as an epoch's end and failed short-last-batch as a left-over window),
    # but a second stream's batch zeroed each step, from a pass still going, is no probe's
    # (nor one whose pass is over and replayed: itertools.cycle, code review cr24)
    for body in (
        FRESH_EACH_ZEROED, ZIPPED_ZEROED, CROSSING_ZEROED, GATED_ZEROED, SECOND_STREAM_ZEROED,
        CYCLED_ZEROED,
    ):  # fmt: skip
        report = watch_script(_watched(tmp_path, body))
        assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)
    # the penalty on the params read apart (it could not be told apart: grad-zeroing was not
    # judged, never passed): the zeroed micro-batch is on other data
    report = watch_script(_watched(tmp_path, ZEROED_WITH_PENALTY))
    assert [r.pitfall for r in report.failures] == ["grad-zeroing"], str(report)


ADVERSARIAL_HALVES = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    for x, y in loader:
        x = x.clone().requires_grad_(True)  # FGSM: the input's gradient, then a step along it
        F.cross_entropy(model(x), y).backward()
        adversarial = (x + 0.1 * x.grad.sign()).detach()
        optimizer.zero_grad()
        clean = ALPHA * F.cross_entropy(model(x.detach()), y)
        attacked = (1 - ALPHA) * F.cross_entropy(model(adversarial), y)
        BACKWARD
        optimizer.step()
"""
APART = "clean.backward()\n        attacked.backward()"  # each half's graph freed first
TOGETHER = "(clean + attacked).backward()"


def test_a_batchs_adversarial_half_backwarded_apart_is_a_term_not_a_micro_batch(
    tmp_path: Path,
) -> None:
    """Clean and adversarial losses on one batch's targets, each its own backward(), one step:
    one objective on the batch's rows, weighed 0.3 : 0.7 as the code chose, read as in one
    backward() (the same verdicts), never as two micro-batches of a window (stop 61's hunt:
    micro-batch-accumulation failed it, "[0.3, 0.7] where a correct update weighs them
    [0.5, 0.5]"). At 0.5 : 0.5 it is the batch's mean and passes."""
    for alpha in ("0.3", "0.5"):
        body = ADVERSARIAL_HALVES.replace("ALPHA", alpha)
        apart = watch_script(_watched(tmp_path, body.replace("BACKWARD", APART)))
        one = watch_script(_watched(tmp_path, body.replace("BACKWARD", TOGETHER)))
        assert not apart.failures, str(apart)
        assert [(r.pitfall, r.verdict) for r in apart.results] == [
            (r.pitfall, r.verdict) for r in one.results
        ], f"{apart}\n{one}"
        assert apart.ok == (alpha == "0.5"), str(apart)


ENSEMBLE_ON_AN_INPUT_WITH_GRAD = """
second = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD([*model.parameters(), *second.parameters()], lr=0.05)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        x = x.clone().requires_grad_(True)  # (an attack or a saliency map reads its gradient)
        for member in (model, second):  # each member's mean, on the batch: right
            F.cross_entropy(member(x), y).backward()
        optimizer.step()
"""


def test_an_ensembles_members_on_one_batch_share_no_param_and_stay_apart(
    tmp_path: Path,
) -> None:
    """Two members, one optimizer, each member's loss on the batch backward()ed apart, the
    input requiring grad: the input is a leaf both reach, but no stepped param (code review
    cr54: ec8d7f9 joined them as one objective's terms, and judged nothing)."""
    report = watch_script(_watched(tmp_path, ENSEMBLE_ON_AN_INPUT_WITH_GRAD))
    assert report.ok and not report.error, str(report)
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert verdicts["mean-vs-sum"] == verdicts["grad-zeroing"] == "pass", str(report)


def test_a_batch_backwarded_twice_now_and_then_still_fails(tmp_path: Path) -> None:
    """Its look-alike mistake: a backward() to log the gradient's norm on every third step,
    never zeroed, so those updates apply twice the batch's mean and the others once."""
    body = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
step = 0
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        if step % 3 == 0:
            F.cross_entropy(model(x), y).backward()
            norm = sum(p.grad.norm() ** 2 for p in model.parameters()) ** 0.5
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        step += 1
"""
    report = watch_script(_watched(tmp_path, body))
    assert report.failures and "applied 2 times the mean" in report.failures[0].message, str(report)


STAGED_CHUNKS = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
staged_x, staged_y = torch.empty(4, 6), torch.empty(4, dtype=torch.long)  # one chunk's room
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        for x_chunk, y_chunk in zip(x.chunk(2), y.chunk(2)):
            staged_x.copy_(x_chunk)
            staged_y.copy_(y_chunk)
            F.cross_entropy(model(staged_x), staged_y).backward()  # a bug: not / 2
        optimizer.step()
"""

SAM_NEVER_ZEROED = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():  # SAM's ascent step, its gradient left in .grad (a bug)
            moved = [0.05 * p.grad / (p.grad.norm() + 1e-12) for p in model.parameters()]
            for p, e in zip(model.parameters(), moved):
                p.add_(e)
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, e in zip(model.parameters(), moved):
                p.sub_(e)
        optimizer.step()
"""


ONE_LABEL_TENSOR = """
data = TensorDataset(torch.randn(48, 6), torch.zeros(48, dtype=torch.long))  # unlabelled
loader = DataLoader(data, batch_size=8, shuffle=True)
queue = F.normalize(torch.randn(16, 3), dim=1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
positives = torch.zeros(8, dtype=torch.long)  # the positive key is column 0: made once
for epoch in range(2):
    for i, (x, _) in enumerate(loader):
        q = F.normalize(model(x + 0.1 * torch.randn_like(x)), dim=1)
        with torch.no_grad():
            k = F.normalize(model(x + 0.1 * torch.randn_like(x)), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
        F.cross_entropy(logits, positives).backward()  # a bug: 2 batches a step, not / 2
        if i % 2:
            optimizer.step()
            optimizer.zero_grad()
"""


def test_chunks_refilled_into_one_buffer_and_sams_second_pass_unzeroed_still_fail(
    tmp_path: Path,
) -> None:
    """Not the same targets again: a buffer the code refills in place with each chunk (the
    same tensor, at the same address, other rows: its version tells them apart); SAM's
    second pass on the batch at params it moved, in place or through .data (which keeps
    their versions: their sums tell), its first pass's gradient never zeroed; one label
    tensor made once for every batch of a contrastive loss (another fetch). Code reviews
    cr53 and cr54: 0de330b and ec8d7f9 joined each into one micro-batch, and passed them."""
    sam_through_data = SAM_NEVER_ZEROED.replace("p.add_(e)", "p.data.add_(e)").replace(
        "p.sub_(e)", "p.data.sub_(e)"
    )
    assert sam_through_data != SAM_NEVER_ZEROED
    for body in (STAGED_CHUNKS, SAM_NEVER_ZEROED, sam_through_data, ONE_LABEL_TENSOR):
        report = watch_script(_watched(tmp_path, body))
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
        assert "adds up its 2 micro-batches' mean losses" in report.failures[0].message
