"""A watched update read as weights on the gradients of the micro-batches it consumed
(`linreg.kinds.watched`), relative to a correct update's: each micro-batch weighed by its count
of rows or targets over the update's (the mean), or by its count (the sum, where the code sums
its loss on purpose). watch_verdicts.py names the patterns."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from linreg.kinds.training_loop.measure import NAMED, norm_width, one_norm, shows_a_clip
from linreg.kinds.watched import Update, scaled_by


@dataclass
class Reading:
    """One update's weights: each micro-batch's, relative to a correct update's (1: right)."""

    j: int
    count: float  # rows or targets the update consumed
    parts: list[float]  # each micro-batch's count
    relative: list[float] | None  # None: not a combination of its micro-batches' gradients
    clipped: bool
    unread: bool = False  # its micro-batches' gradients are dependent: no weights are unique
    tol: float = 1e-4  # the relative tolerance of its params' dtype
    calls: int = 1  # the most loss calls of its term a micro-batch held (heads' means added)
    native: bool = False  # one term of several, whose function reduced as meant itself (took
    # the mean, or the sum where the sum is meant): its weight is a coefficient of the code's
    blind: bool = False  # right only up to a clip by hand that clipped every update of its
    # params: their scale before it never showed (Update.hand_unseen)
    one_row: bool = False  # each micro-batch one row: its count one row's (Update.one_row)
    divided: tuple[str, int] = ("", 1)  # a framework's backward()'s count (Update.divided)
    again: bool = False  # the code divided by it too (Update.again)
    epoch: int | None = None  # the batches an epoch of its pass holds (Update.epoch)
    before_end: int = 0  # its micro-batches fed before an epoch's end (Update.before_end)
    micro: int = 0  # the update's micro-batches (a term's reading: those it is in may be fewer)
    per_row: float | None = None  # its term's weights times its rows, one number (Column)
    penalized: bool = False  # read beside a penalty on the params (Update.penalty)
    changed: bool = False  # read as backward() left .grad: the code projected it after (a
    # gradient centralization: _as_backward_left_it)


def read(j: int, u: Update, summed: bool) -> Reading | None:
    """Return an update's weights on its micro-batches' mean gradients (_read), and whether each
    micro-batch held one row."""
    reading = _read(j, u, summed)
    return (
        reading
        if reading is None
        else replace(reading, one_row=u.one_row, divided=u.divided, epoch=u.epoch, again=u.again)
    )


def _read(j: int, u: Update, summed: bool) -> Reading | None:
    """Return an update's weights on its micro-batches' mean gradients M_i = S_i / count_i, from
    its inner products alone, or None where a backward() reached no loss the watcher read.

    What it applied beyond what .grad held is read as it is when right, else before clipping
    where it is a clipping of that (a factor in (0, 1]); least squares gives the weights, and an
    update they do not explain (to the tolerance, relative) is no combination of its own."""
    if u.blind or not u.counts:
        return None
    if u.right:  # it applied its rows' mean (read as the watcher closed it): 1 / count a sum
        total = sum(u.counts)  # (its counts another's: that mean times this count over its)
        by = u.right_total or total
        each = 1 / by if summed else total / by
        return Reading(j, total, list(u.counts), [each] * len(u.counts), u.clipped)
    c = torch.tensor(u.counts, dtype=torch.float64)
    gram = u.gram / torch.outer(c, c)
    want = c if summed else c / c.sum()  # a correct update: sum (or mean) of its rows'
    ww, tol2 = float(want @ gram @ want), u.tol**2
    dots, rr, clipped = u.sa / c, u.aa, u.clipped  # (by value: read before it, in close)
    parts, total = list(u.counts), float(c.sum())
    if _residual(gram, dots, rr, want) > tol2 * max(ww, rr) and _a_clipping(u):
        if u.hand_unseen and _unseen_clip(gram, u.sb / c, u.bb, u.sa / c, u.aa, want, u.tol):
            return Reading(
                j, total, parts, [1.0] * len(parts), True, blind=u.hand_unseen == "blind"
            )
        dots, rr, clipped = u.sb / c, u.bb, True
    scale = float(want @ dots) / ww if ww > 0 else 0.0  # one scale on the correct update?
    if ww > 0 and _residual(gram, dots, rr, scale * want) <= tol2 * max(rr, ww):
        return Reading(j, total, parts, [scale] * len(parts), clipped)
    if int(torch.linalg.matrix_rank(gram, rtol=1e-6)) < len(parts):
        return Reading(j, total, parts, None, clipped, unread=True)  # weights not unique
    a = torch.linalg.lstsq(gram, dots.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    beside = None
    if _residual(gram, dots, rr, a) > tol2 * max(rr, ww):
        beside = _beside_a_penalty(u, c, gram, dots, rr, clipped and not u.clipped)
        if beside is None:
            left = None if clipped else _as_backward_left_it(j, u, summed)
            return left or Reading(j, total, parts, None, clipped)
        a = beside
    relative = [float(x) for x in a / want]
    return Reading(j, total, parts, relative, clipped, penalized=beside is not None)


PROJECTED = 1e-3  # how far <A, B> may lie from |A|^2, relative, for A to be a projection of B


def _as_backward_left_it(j: int, u: Update, summed: bool) -> Reading | None:
    """Return the reading of what backward() left in .grad (B), where the update applied what
    its losses do not explain (A) and the code projected .grad between its backward() and the
    step (gradient centralization: A = P B, P an orthogonal projection, so <A, B> = |A|^2):
    that change is the code's, as a clip is. None where A is B, or a factor of it, or no
    projection of it (a division by hand after a clip by value, noise, a per-layer scale:
    <A, B> != |A|^2), or one that zeroed a whole param's gradient (a misplaced zero_grad() of
    a part, or a freeze: the two read alike), or B too is unexplained."""
    s, same = scaled_by(u.aa, u.bb, u.ab, u.tol)
    if same or s is not None or u.bb <= 0 or abs(u.ab - u.aa) > PROJECTED * u.aa or u.zeroed:
        return None
    penalty = u.penalty and (u.penalty[0], u.penalty[1], u.penalty[3], u.penalty[3])
    left = _read(j, replace(u, sa=u.sb, aa=u.bb, ab=u.bb, penalty=penalty), summed)
    if left is None or left.relative is None:
        return None
    return replace(left, changed=True)


def _beside_a_penalty(
    u: Update, c: torch.Tensor, gram: torch.Tensor, dots: torch.Tensor, rr: float, before: bool
) -> torch.Tensor | None:
    """Return the weights on an update's micro-batches' mean gradients where a penalty on the
    params (L2, L1: Update.penalty) beside them explains the rest of what it applied (before
    a clip: before), its own weight the code's; None where it does not."""
    if u.penalty is None:
        return None
    qq, sq, qa, qb = u.penalty
    held = [k for k in range(len(qq)) if float(qq[k, k]) > 0]
    if not held:
        return None
    m = len(dots)
    side = sq[:, held] / c.unsqueeze(1)
    g = torch.cat([torch.cat([gram, side], 1), torch.cat([side.T, qq[held][:, held]], 1)])
    d = torch.cat([dots, (qb if before else qa)[held]])
    if int(torch.linalg.matrix_rank(g, rtol=1e-6)) < len(d):
        return None  # a penalty's gradient among the losses': the weights are not unique
    a: torch.Tensor = torch.linalg.lstsq(g, d.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    if _residual(g, d, rr, a) > u.tol**2 * max(rr, float(a[:m] @ gram @ a[:m])):
        return None
    return a[:m]


def _without(u: Update, empty: list[int]) -> Update:
    """Return an update read as terms without the terms at those columns (each of no
    elements, and no gradient)."""
    keep = [i for i in range(len(u.columns)) if i not in empty]
    penalty = None if u.penalty is None else (u.penalty[0], u.penalty[1][keep], *u.penalty[2:])
    return replace(
        u,
        gram=u.gram[keep][:, keep],
        sa=u.sa[keep],
        sb=u.sb[keep],
        columns=tuple(u.columns[i] for i in keep),
        penalty=penalty,
    )


def read_terms(j: int, u: Update, summed: bool) -> list[tuple[str, Reading]]:
    """Return the readings of an update whose backward() calls reached losses of several
    functions (a multi-task loss, mse + 0.5 * cross_entropy): its weights on each micro-batch's
    terms' mean gradients, one Reading per term (its function) whose targets are a batch's,
    relative to the mean (or sum) of that term's own rows. Where the terms do not explain the
    update, or their gradients are dependent, one unexplained Reading (weights not judged)."""
    total = sum(u.counts)
    if u.blind or not u.columns:
        return []
    # a term of no elements in a micro-batch (no positive anchor to regress, no label) applied
    # nothing there: the update is read without it (a term it leaves in fewer of the update's
    # micro-batches reads as a shorter window's: a window's mean over the term's micro-batches
    # weighs one of none alike, as a mean of micro-batch means does)
    empty = [i for i, col in enumerate(u.columns) if not col.count and not float(u.gram[i, i])]
    if empty and len(empty) < len(u.columns):
        return read_terms(j, _without(u, empty), summed)
    c = torch.tensor([col.count for col in u.columns], dtype=torch.float64)
    if not bool((c > 0).all()):  # (one of no elements that has a gradient: NaN, a mean of none)
        return [("", Reading(j, total, list(u.counts), None, u.clipped, unread=True))]
    gram = u.gram / torch.outer(c, c)  # of the terms' mean gradients M_i = S_i / count_i
    if int(torch.linalg.matrix_rank(gram, rtol=1e-6)) < len(u.columns):
        return [("", Reading(j, total, list(u.counts), None, u.clipped, unread=True))]
    dots, rr, clipped = u.sa / c, u.aa, u.clipped
    if _a_clipping(u):  # (no correct update to try first: the terms' weights are the code's)
        dots, rr, clipped = u.sb / c, u.bb, True
    a = torch.linalg.lstsq(gram, dots.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    beside = None
    if _residual(gram, dots, rr, a) > u.tol**2 * max(rr, float(a @ gram @ a)):
        beside = _beside_a_penalty(u, c, gram, dots, rr, clipped and not u.clipped)
        if beside is None:
            return [("", Reading(j, total, list(u.counts), None, clipped))]
        a = beside
    out = []
    for term in dict.fromkeys(col.term for col in u.columns):
        at = [i for i, col in enumerate(u.columns) if col.term == term]
        if not all(u.columns[i].from_batch for i in at):
            continue  # a penalty, a GAN's constant label: its weight is the code's to choose
        parts = [float(c[i]) for i in at]
        want = parts if summed else [x / sum(parts) for x in parts]
        relative = [float(a[i]) / w for i, w in zip(at, want, strict=True)]
        own = all(u.columns[i].reduction == ("sum" if summed else "mean") for i in at)
        calls = max(u.columns[i].calls for i in at)
        reading = Reading(
            j,
            sum(parts),
            parts,
            relative,
            clipped,
            tol=u.tol,
            calls=calls,
            native=own,
            micro=len(u.counts),
            penalized=beside is not None,
            divided=u.divided,
            again=u.again,
            one_row=u.one_row,
            per_row=rows.pop() if len(rows := {u.columns[i].per_row for i in at}) == 1 else None,
        )
        out.append((term, reading))
    return out


def by_hand(updates: Sequence[Update]) -> list[Update]:
    """Return the updates, each a clip of the norm by hand explains marked so (hand_ok: read
    before it): the updates of one set of params that applied a factor below 1 of what they
    held before with no clip_grad_norm_ called all land on one norm, none of theirs let through
    as it was is longer, and the run shows it is a clip: one let through, or befores of
    different norms brought to the same (a framework's own clip, DeepSpeed's). A mean's
    gradient divided again by its rows is no such clip: its norm goes with the rows."""
    out = list(updates)
    for group in {u.group for u in updates if u.hand > 0}:
        mine = [j for j, u in enumerate(updates) if u.group == group]
        hand = [j for j in mine if updates[j].hand > 0]
        width = norm_width(max(updates[j].tol for j in hand))
        through = [updates[j].norm for j in mine if updates[j].norm > 0]
        befores = [updates[j].hand_before for j in hand]
        if shows_a_clip(befores, bool(through), width) and one_norm(
            [updates[j].hand for j in hand], befores, through, width
        ):
            # a division of .grad before the clip is unseen: a clip of the correct update is
            # right where the run let a right update through, or clipped every one (no scale
            # showed through it; the report says so)
            let = [  # (over one row or target, a sum is the mean: no scale shows)
                updates[j] for j in mine if updates[j].norm > 0 and sum(updates[j].counts) != 1
            ]
            let_right = any(u.right and not u.clipped for u in let)
            unseen = "shown" if let_right else "" if let else "blind"
            for j in hand:
                out[j] = replace(updates[j], hand_ok=True, hand_unseen=unseen)
    return out


def _unseen_clip(
    gram: torch.Tensor,
    b_dots: torch.Tensor,
    bb: float,
    a_dots: torch.Tensor,
    aa: float,
    want: torch.Tensor,
    tol: float,
) -> bool:
    """Return whether a clip by hand applied a factor below 1 of the correct update (A = s W,
    0 < s < 1) while what backward() left was not the correct update (B != W): a division of
    .grad between the two, unseen, made it right before the clip."""
    ww = float(want @ gram @ want)
    if ww <= 0:
        return False
    tol2 = tol**2
    if _residual(gram, b_dots, bb, want) <= tol2 * max(ww, bb):
        return False  # right before the clip as backward() left it: read there
    s = float(want @ a_dots) / ww
    return 0 < s < 1 - tol and _residual(gram, a_dots, aa, s * want) <= tol2 * max(aa, ww)


def _residual(gram: torch.Tensor, dots: torch.Tensor, rr: float, w: torch.Tensor) -> float:
    """Return |R - sum w_i M_i|^2 from the inner products: <M_i, M_j>, <M_i, R> and |R|^2."""
    return float(rr - 2 * (w @ dots) + w @ gram @ w)


def _a_clipping(u: Update) -> bool:
    """Return whether what an update applied (A) is a clipping of what .grad held before it
    (B): s times B for one s in (0, 1], and not B itself; below 1 only where clip_grad_norm_
    was called in it (else the factor is the code's own division of .grad, read as applied)."""
    s, same = scaled_by(u.aa, u.bb, u.ab, u.tol)
    if s is None or same or not 0 < s <= 1 + u.tol:
        return False
    return s >= 1 - u.tol or u.norm_clipped or u.hand_ok


def over_counted(readings: list[Reading]) -> list[tuple[Reading, int]]:
    """Return each update with the whole number its divisor exceeds its count by, where every
    update applies count / (count + m) of the mean with m a whole number >= 1 and the scales
    differ (one scale on all is a constant of the loss's own); else []."""
    uniform = [r for r in readings if r.relative and alike(r.relative)]
    out = []
    for r in uniform:
        assert r.relative is not None
        s = r.relative[0]
        extra = r.count * (1 / s - 1) if 0 < s < 1 else 0.0
        if not (1 - 0.02 <= extra < r.count) or abs(extra - round(extra)) > 0.02:
            return []
        if r.count * r.tol > 0.02:  # the dtype cannot tell a whole number from another
            return []
        out.append((r, round(extra)))
    scales = [r.relative[0] for r, _ in out if r.relative]
    return out if len(out) > 1 and not alike(scales) else []


# the relative tolerance ratios are told apart at while a run is judged (judged_to): NAMED,
# or its updates' loosest (a forward under autocast reads weights to bfloat16's precision)
_TOLERANCE: contextvars.ContextVar[float] = contextvars.ContextVar("tolerance", default=NAMED)


@contextlib.contextmanager
def judged_to(tol: float) -> Iterator[None]:
    """Tell ratios apart (near, alike) at tol, where it is looser than NAMED, inside."""
    token = _TOLERANCE.set(max(NAMED, tol))
    try:
        yield
    finally:
        _TOLERANCE.reset(token)


def alike(xs: list[float]) -> bool:
    return all(near(x, xs[0]) for x in xs)


def near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOLERANCE.get(), abs_tol=1e-6)


def shown(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


def first_applied(rel: list[float]) -> int | None:
    """Return how many micro-batches an update applied none of before the rest, all alike
    (an epoch's left-over window zeroed before any step); None where it is not so."""
    dropped = next((i for i, x in enumerate(rel) if not near(x, 0)), len(rel))
    return dropped if 0 < dropped < len(rel) and alike(rel[dropped:]) else None


def framework_divides(by: str, g: int) -> str:
    """Return, in words, that a framework's backward() divides each loss by its count g."""
    if by.startswith("Lightning"):
        return f"{by}={g} divides it"
    return f"{by} divides it by gradient_accumulation_steps={g}"


def full_window(readings: list[Reading]) -> tuple[float, int]:
    """Return a full update's count (the most common among the readings that are a combination
    of their micro-batches, the larger of a tie) and the most micro-batches one of that count
    held (its window)."""
    counts = Counter(r.count for r in readings if r.relative is not None)
    full = max(counts, key=lambda c: (counts[c], c), default=0.0)
    return full, max((len(r.parts) for r in readings if r.count == full), default=1)


def carried(at: str, r: Reading, weights: list[float], full: float) -> tuple[str, str]:
    """Return the pitfall, and what it says, of an update that took more micro-batches and
    rows than a full one, weighed unlike: an epoch's last window, never stepped, carried in."""
    return "short-last-batch", (
        f"{at} took more than a full update's {full:g}, and weighs its micro-batches "
        f"{shown(weights)} where a correct update weighs them "
        f"{shown([c / r.count for c in r.parts])}: micro-batches left over from "
        "before (an epoch's last window, never stepped) were carried into it"
    )


def never_applied(at: str, dropped: int, before_end: int) -> tuple[str, str]:
    """Return the pitfall, and what it says, of an update whose first micro-batches' gradient
    was zeroed before its step: an epoch's left-over window dropped where they were all fed
    before an epoch's end that came while it was open (before_end of them were: short-last-
    batch), else zeroing inside the window (grad-zeroing: one model's optimizer zeroed each
    micro-batch, the other's not, so the watch saw no zero_grad)."""
    if dropped <= before_end:
        return "short-last-batch", (
            f"{at}: its first {dropped} micro-batch(es) went through backward() and were never "
            "applied (their gradient zeroed before any step: an epoch's left-over window "
            "dropped): step when the data ends too"
        )
    return "grad-zeroing", (
        f"{at}: its first {dropped} micro-batch(es) went through backward() and were never "
        "applied: their gradient was zeroed before the step, inside the update (zero_grad "
        "inside the accumulation loop: zero once a window, after the step)"
    )
