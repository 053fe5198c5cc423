"""A watched update read as weights on the gradients of the micro-batches it consumed
(`linreg.kinds.watched`), relative to a correct update's: each micro-batch weighed by its count
of rows or targets over the update's (the mean), or by its count (the sum, where the code sums
its loss on purpose). watch_verdicts.py names the patterns."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from linreg.audit.watch_clips import a_clipping, residual, unseen_clip
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
    steps: bool = False  # those calls a sequence's steps (Update.steps, terms.steps)
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
    bypassed: float = 0.0  # a loss scaler's scale nothing undid (Update.bypassed)
    changed: bool = False  # read as backward() left .grad: the code projected it after (a
    # gradient centralization: _as_backward_left_it)


def read(j: int, u: Update, summed: bool) -> Reading | None:
    """Return an update's weights on its micro-batches' mean gradients (_read), and whether each
    micro-batch held one row."""
    reading = _read(j, u, summed)
    return (
        reading
        if reading is None
        else replace(
            reading,
            one_row=u.one_row,
            steps=u.steps,
            divided=u.divided,
            epoch=u.epoch,
            again=u.again,
            bypassed=u.bypassed,
        )
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
    if residual(gram, dots, rr, want) > tol2 * max(ww, rr) and a_clipping(u):
        if u.hand_unseen and unseen_clip(gram, u.sb / c, u.bb, u.sa / c, u.aa, want, u.tol):
            return Reading(
                j, total, parts, [1.0] * len(parts), True, blind=u.hand_unseen == "blind"
            )
        dots, rr, clipped = u.sb / c, u.bb, True
    scale = float(want @ dots) / ww if ww > 0 else 0.0  # one scale on the correct update?
    if ww > 0 and residual(gram, dots, rr, scale * want) <= tol2 * max(rr, ww):
        return Reading(j, total, parts, [scale] * len(parts), clipped)
    if int(torch.linalg.matrix_rank(gram, rtol=1e-6)) < len(parts):
        return Reading(j, total, parts, None, clipped, unread=True)  # weights not unique
    a = torch.linalg.lstsq(gram, dots.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    beside = None
    if residual(gram, dots, rr, a) > tol2 * max(rr, ww):
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
    if residual(g, d, rr, a) > u.tol**2 * max(rr, float(a[:m] @ gram @ a[:m])):
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
    return read_terms_under(j, u, summed)[0]


Under = dict[str, dict[str, "Reading"]]


def read_terms_under(j: int, u: Update, summed: bool) -> tuple[list[tuple[str, Reading]], Under]:
    """Return read_terms' readings, and each term's reading under each other count all its
    calls may divide by (Column.others: by count, then term), from the same solve: the same
    weights on its calls' summed gradients, relative to its mean over that count."""
    total = sum(u.counts)
    if u.blind or not u.columns:
        return [], {}
    # a term of no elements in a micro-batch (no positive anchor to regress, no label) applied
    # nothing there: the update is read without it (a term it leaves in fewer of the update's
    # micro-batches reads as a shorter window's: a window's mean over the term's micro-batches
    # weighs one of none alike, as a mean of micro-batch means does)
    empty = [i for i, col in enumerate(u.columns) if not col.count and not float(u.gram[i, i])]
    if empty and len(empty) < len(u.columns):
        return read_terms_under(j, _without(u, empty), summed)
    c = torch.tensor([col.count for col in u.columns], dtype=torch.float64)
    if not bool((c > 0).all()):  # (one of no elements that has a gradient: NaN, a mean of none)
        return [("", Reading(j, total, list(u.counts), None, u.clipped, unread=True))], {}
    gram = u.gram / torch.outer(c, c)  # of the terms' mean gradients M_i = S_i / count_i
    if int(torch.linalg.matrix_rank(gram, rtol=1e-6)) < len(u.columns):
        return [("", Reading(j, total, list(u.counts), None, u.clipped, unread=True))], {}
    dots, rr, clipped = u.sa / c, u.aa, u.clipped
    if a_clipping(u):  # (no correct update to try first: the terms' weights are the code's)
        dots, rr, clipped = u.sb / c, u.bb, True
    a = torch.linalg.lstsq(gram, dots.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    beside = None
    if residual(gram, dots, rr, a) > u.tol**2 * max(rr, float(a @ gram @ a)):
        beside = _beside_a_penalty(u, c, gram, dots, rr, clipped and not u.clipped)
        if beside is None:
            return [("", Reading(j, total, list(u.counts), None, clipped))], {}
        a = beside
    out = []
    under: Under = {}
    for term in dict.fromkeys(col.term for col in u.columns):
        at = [i for i, col in enumerate(u.columns) if col.term == term]
        if not all(u.columns[i].from_batch for i in at):
            continue  # a penalty, a GAN's constant label: its weight is the code's to choose
        parts = [float(c[i]) for i in at]
        # (the weight on each call's summed gradient, a[i] / c[i], against the mean's or sum's)
        weights = [float(a[i]) / float(c[i]) for i in at]
        relative = [w * (1.0 if summed else sum(parts)) for w in weights]
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
            bypassed=u.bypassed,
            per_row=rows.pop() if len(rows := {u.columns[i].per_row for i in at}) == 1 else None,
        )
        out.append((term, reading))
        others = [dict(u.columns[i].others) for i in at]
        for key in set.intersection(*(set(o) for o in others)):
            counts = [o[key] for o in others]
            under.setdefault(key, {})[term] = replace(
                reading,
                count=sum(counts),
                parts=counts,
                relative=[w * (1.0 if summed else sum(counts)) for w in weights],
            )
    return out, under
