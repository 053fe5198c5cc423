"""Judge watched training code from what it did: each update read as weights on the gradients of
the micro-batches it consumed (`linreg.kinds.watched`), against a correct update's (each
micro-batch weighed by its count of rows or targets over the update's: the mean); `report_of`
makes the Report. A pattern of weights is named as the catalogue names it: one scale on every
full update (mean-vs-sum), another on a short one (short-last-batch), micro-batches weighed
alike over unequal counts (micro-batch-accumulation), what .grad held before the update, or a
step fed nothing (grad-zeroing), an update with nothing to apply (non-leaf-params).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

from linreg.audit.report import Report, Result
from linreg.kinds.training_loop import NO_KNOWN
from linreg.kinds.watched import Update, Watched

# each pitfall the watcher judges, and what it states of every update it saw
PROPERTIES = {
    "short-last-batch": "a short update applies the mean of its rows as a full one does; no "
    "micro-batch is left unstepped",
    "mean-vs-sum": "a full update applies the mean of its rows' gradients, not a multiple",
    "grad-zeroing": "an update applies its own micro-batches alone, and once",
    "micro-batch-accumulation": "an update weighs its micro-batches by their counts of rows or "
    "targets",
    "non-leaf-params": "every update after a backward() has a gradient to apply",
}


@dataclass
class _Reading:
    """One update's weights: each micro-batch's, relative to a correct update's (1: right)."""

    j: int
    count: float  # rows or targets the update consumed
    parts: list[float]  # each micro-batch's count
    relative: list[float] | None  # None: not a combination of its micro-batches' gradients
    clipped: bool
    unread: bool = False  # its micro-batches' gradients are dependent: no weights are unique
    tol: float = 1e-4  # the relative tolerance of its params' dtype


@dataclass
class _Verdicts:
    failed: dict[str, str] = field(default_factory=dict)  # the first failure of each pitfall
    judged: Counter[str] = field(default_factory=Counter)
    failing: dict[str, list[int]] = field(default_factory=dict)  # the updates each names
    ratios: dict[int, float | None] = field(default_factory=dict)  # per update: one scale
    at: int | None = None  # the update being judged
    unread: int = 0  # updates whose weights could not be read
    terms: int = 0  # updates whose micro-batches are terms of one objective: weights not judged
    let_go: int = 0  # backward() calls the code zeroed before a step, on its own account
    skipped: int = 0  # backward() calls of steps the code skipped now and then
    constant: float | None = None  # a scale taken as the loss's own
    full: float = 0.0  # a full update's count
    unconfirmed: float | None = None  # that scale, where no shorter update told it from a sum

    def fail(self, pitfall: str, message: str) -> None:
        self.failed.setdefault(pitfall, message)
        if self.at is not None:
            self.failing.setdefault(pitfall, []).append(self.at)


def read(j: int, u: Update, summed: bool) -> _Reading | None:
    """Return an update's weights on its micro-batches' mean gradients M_i = S_i / count_i, from
    its inner products alone, or None where a backward() reached no loss the watcher read.

    What it applied beyond what .grad held is read as it is when right, else before clipping
    where it is a clipping of that (a factor in (0, 1]); least squares gives the weights, and an
    update they do not explain (to the tolerance, relative) is no combination of its own."""
    if u.blind or not u.counts:
        return None
    if u.right:
        return _Reading(j, sum(u.counts), list(u.counts), [1.0] * len(u.counts), u.clipped)
    c = torch.tensor(u.counts, dtype=torch.float64)
    gram = u.gram / torch.outer(c, c)
    want = c if summed else c / c.sum()  # a correct update: sum (or mean) of its rows'

    def residual(dots: torch.Tensor, rr: float, w: torch.Tensor) -> float:
        return float(rr - 2 * (w @ dots) + w @ gram @ w)  # |R - sum w_i M_i|^2

    ww, tol2 = float(want @ gram @ want), u.tol**2
    dots, rr, clipped = u.sa / c, u.aa, False
    if residual(dots, rr, want) > tol2 * max(ww, rr) and u.bb > 0:
        s = u.ab / u.bb
        scaled = u.aa - 2 * s * u.ab + s * s * u.bb  # |A - s B|^2: A is s times B
        same = u.aa - 2 * u.ab + u.bb  # |A - B|^2
        if 0 < s <= 1 + u.tol and scaled <= tol2 * u.aa and same > tol2 * u.aa:
            dots, rr, clipped = u.sb / c, u.bb, True
    parts, total = list(u.counts), float(c.sum())
    scale = float(want @ dots) / ww if ww > 0 else 0.0  # one scale on the correct update?
    if ww > 0 and residual(dots, rr, scale * want) <= tol2 * max(rr, ww):
        return _Reading(j, total, parts, [scale] * len(parts), clipped)
    if int(torch.linalg.matrix_rank(gram, rtol=1e-6)) < len(parts):
        return _Reading(j, total, parts, None, clipped, unread=True)  # weights not unique
    a = torch.linalg.lstsq(gram, dots.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    if residual(dots, rr, a) > tol2 * max(rr, ww):
        return _Reading(j, total, parts, None, clipped)
    return _Reading(j, total, parts, [float(x) for x in a / want], clipped)


def judge(seen: Watched, summed: bool = False) -> _Verdicts:
    """Return the verdicts on every update seen."""
    v = _Verdicts()
    readings: list[_Reading] = []
    for j, u in enumerate(seen.updates):
        v.at, v.ratios[j] = j, None
        at = f"update {j + 1} of {len(seen.updates)}"
        if not u.fed:  # after a fed update: its micro-batches applied twice; else no backward()
            if j and seen.updates[j - 1].fed:  # at all (gradients set by hand): not judged
                v.fail(
                    "grad-zeroing",
                    f"{at} was fed no backward() since the update before, yet applied a "
                    "gradient again: the same micro-batches moved the params twice (a second "
                    "optimizer.step() after scaler.step(optimizer)?)",
                )
            continue
        if u.dropped:  # the code zeroed .grad between the update's backward() calls
            if j == 0 or u.redone:  # a pass before training, or the same targets again: the
                v.let_go += u.dropped  # code's own (SAM's two passes, an attack, a closure)
            elif u.crossed:
                v.fail(
                    "short-last-batch",
                    f"{at}: {u.dropped} micro-batch(es) went through backward() before an "
                    "epoch's end and were zeroed before any step (an epoch's left-over window "
                    "dropped): step when the data ends too",
                )
            elif not _now_and_then(seen.updates):
                v.fail(
                    "grad-zeroing",
                    f"{at}: .grad was zeroed between its micro-batches, so {u.dropped} of them, "
                    "on other data, went through backward() and were never applied (zero_grad "
                    "inside the accumulation loop: zero once a window, after the step)",
                )
            else:  # now and then: a step the code chose to skip (a gradient too large, inf)
                v.skipped += u.dropped
        if u.blind:  # a backward() reached no loss the watcher read: nothing here is judged
            continue
        if not u.applied_any:
            v.fail("non-leaf-params", f"{at} followed a backward() yet had no gradient to apply")
            continue
        v.judged["non-leaf-params"] += 1
        if u.carried:
            v.fail(
                "grad-zeroing",
                f"{at} found a gradient in .grad before its first backward(): the update before "
                "left it there (no zero_grad), and this one applies both",
            )
        else:
            v.judged["grad-zeroing"] += 1
        if u.terms:  # terms of one objective: their weights are the objective's, not judged
            v.terms += 1
            continue
        r = read(j, u, summed)
        if r is not None:
            r.tol = u.tol
            readings.append(r)
    _weights(readings, len(seen.updates), v)
    v.at = None
    if seen.leftover and seen.updates and not seen.ended and seen.ran_out:
        v.fail(
            "short-last-batch",
            f"after its last update, {len(seen.leftover)} micro-batch(es) went through "
            "backward(), the data ran out, and no optimizer.step() used them: step when the "
            "data ends too",
        )
    return v


def _weights(readings: list[_Reading], updates: int, v: _Verdicts) -> None:
    """Name each update's weights as the catalogue names them."""
    over = _over_counted(readings)
    for n, (r, extra) in enumerate(over):  # named once, then read as if divided right
        assert r.relative is not None
        s = r.relative[0]
        if not n:
            v.at = r.j
            v.fail(
                "mean-vs-sum",
                f"update {r.j + 1} of {updates} applied {s:.4g} times the mean of its "
                f"{r.count:g} counted: it divides by {r.count + extra:g}, {extra} more than its "
                "loss counts, and every update is over-counted by a whole number: targets "
                "its loss never counts were counted (each sequence's first label, before the "
                "causal shift drops it, as transformers' Trainer counts them for a model whose "
                "loss_type is None, GPT2LMHeadModel; or padding)",
            )
        r.relative = [x / s for x in r.relative]
    counts = Counter(r.count for r in readings if r.relative is not None)
    full = max(counts, key=lambda c: (counts[c], c), default=0.0)
    fulls = [r for r in readings if r.count == full and r.relative and _alike(r.relative)]
    s_full = fulls[0].relative[0] if fulls and fulls[0].relative else 1.0
    parts_full = len(fulls[0].parts) if fulls else 1
    # one scale on the full updates that no known mistake names (0.5 * F.mse_loss, a sum over
    # features over the batch): the loss's own constant; every update is read relative to it
    kappa = s_full if fulls and s_full > 0 and _why(s_full, fulls[0]) == NO_KNOWN else 1.0
    if not _near(kappa, 1):  # a constant is the same on a shorter update; a sum grows with rows
        shorts = [r for r in readings if r.count < full and r.relative and _alike(r.relative)]
        grows = [r for r in shorts if r.relative and _near(r.relative[0], kappa * r.count / full)]
        if grows:
            r = grows[0]
            v.at = r.j
            v.fail(
                "mean-vs-sum",
                f"every full update applies {kappa:.4g} times the mean of its {full:g} counted, "
                f"and update {r.j + 1} of {r.count:g} applies {kappa * r.count / full:.4g} times "
                "its own: a factor that grows with the rows (a loss summed over them, or "
                "multiplied by the batch size) where a mean was meant",
            )
            kappa = 1.0
        elif any(r.relative and _near(r.relative[0], kappa) for r in shorts):
            v.constant, s_full = kappa, 1.0
        else:  # no shorter update tells a constant from a sum: mean-vs-sum is not judged
            v.constant, s_full, v.unconfirmed = kappa, 1.0, kappa
        v.full = full
    for r in readings:
        v.at = r.j
        at = f"update {r.j + 1} of {updates} ({len(r.parts)} micro-batch(es), {r.count:g} counted)"
        rel = None if r.relative is None else [x / kappa for x in r.relative]
        if rel is not None and _alike(rel):
            v.ratios[r.j] = rel[0]
        if r.unread or rel is None:  # dependent gradients, or no combination of them (a
            v.unread += 1  # term the watcher does not read: a penalty, a hand-written loss)
            continue
        unequal = len(set(r.parts)) > 1
        if r.count != full or v.unconfirmed is None:
            v.judged["mean-vs-sum" if r.count == full else "short-last-batch"] += 1
        v.judged["micro-batch-accumulation"] += unequal
        if _alike(rel):
            s = rel[0]
            if r.count == full:
                if not _near(s, 1):
                    v.fail("mean-vs-sum", f"{at} applied {s:.4g} times the mean: {_why(s, r)}")
            else:  # an update of another size: right, or the full ones' scale is its cause
                theirs = [s_full, s_full * r.count / full, s_full * len(r.parts) / parts_full]
                if not _near(s, 1) and (_near(s_full, 1) or not any(_near(s, t) for t in theirs)):
                    v.fail("short-last-batch", _short(at, s, r, full))
            continue
        weights = [x * c / r.count for x, c in zip(rel, r.parts, strict=True)]
        if full and r.count > full:
            v.fail(
                "short-last-batch",
                f"{at} took more than a full update's {full:g}, and weighs its micro-batches "
                f"{_shown(weights)} where a correct update weighs them "
                f"{_shown([c / r.count for c in r.parts])}: micro-batches left over from "
                "before (an epoch's last window, never stepped) were carried into it",
            )
            continue
        dropped = next((i for i, x in enumerate(rel) if not _near(x, 0)), len(rel))
        if 0 < dropped < len(rel) and _alike(rel[dropped:]):
            v.fail(
                "short-last-batch",
                f"{at}: its first {dropped} micro-batch(es) went through backward() and were "
                "never applied (their gradient zeroed before any step: an epoch's left-over "
                "window dropped): step when the data ends too",
            )
            continue
        if unequal and _alike(weights):
            each = weights[0]
            if _near(each, 1.0):
                v.fail(
                    "mean-vs-sum",
                    f"{at} adds up its {len(r.parts)} micro-batches' mean losses without "
                    f"dividing, over counts {_shown(r.parts)}: divide each one's summed loss by "
                    "the update's count",
                )
            else:
                v.fail(
                    "micro-batch-accumulation",
                    f"{at} takes the mean of its {len(r.parts)} micro-batches' mean losses over "
                    f"counts {_shown(r.parts)} (weights {_shown(weights)}): divide each one's "
                    "summed loss by the update's count",
                )
            continue
        v.fail(
            "micro-batch-accumulation",
            f"{at} weighs its micro-batches {_shown(weights)} where a correct update weighs "
            f"them {_shown([c / r.count for c in r.parts])}: it {NO_KNOWN}",
        )


def _over_counted(readings: list[_Reading]) -> list[tuple[_Reading, int]]:
    """Return each update with the whole number its divisor exceeds its count by, where every
    update applies count / (count + m) of the mean with m a whole number >= 1 and the scales
    differ (one scale on all is a constant of the loss's own); else []."""
    uniform = [r for r in readings if r.relative and _alike(r.relative)]
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
    return out if len(out) > 1 and not _alike(scales) else []


def _now_and_then(updates: list[Update]) -> bool:
    """Return whether micro-batches on other data were zeroed unstepped in at most half the
    updates after the first: steps the code skipped on purpose (zero_grad inside every window
    drops some in each)."""
    dropping = sum(1 for u in updates[1:] if u.dropped and not u.redone and not u.crossed)
    return 2 * dropping <= len(updates) - 1


def _short(at: str, s: float, r: _Reading, full: float) -> str:
    if _near(s, r.count / full):
        return (
            f"{at} applied {s:.4g} times the mean: it divides by a full update's {full:g} where "
            f"it took {r.count:g} (a nominal batch size or accumulation count)"
        )
    return f"{at} applied {s:.4g} times the mean, unlike a full update: it {NO_KNOWN}"


def _why(s: float, r: _Reading) -> str:
    if s >= 1024 and _near(math.log2(s), round(math.log2(s))):
        return "it steps with a loss scaler's scaled gradients (call scaler.step, or unscale_)"
    if len(r.parts) > 1 and _near(s, len(r.parts)):
        return f"it adds up its {len(r.parts)} micro-batches' mean losses without dividing"
    if _near(s, r.count):
        return (
            "it sums the loss over the update's rows or targets (reduction='sum', or a mean "
            "loss per row or step added up) where a mean was meant"
        )
    return NO_KNOWN


def _alike(xs: list[float]) -> bool:
    return all(_near(x, xs[0]) for x in xs)


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)


def _shown(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


def report_of(seen: Watched, target: str, seconds: float, error: str = "") -> Report:
    """Return the Report of a watched run: a verdict per pitfall, "not judged" where the run
    showed nothing the property reads."""
    v = judge(seen)
    results = []
    for pitfall, statement in PROPERTIES.items():
        if pitfall in v.failed:
            measured = {
                "ratios": [v.ratios.get(j) for j in range(len(seen.updates))],
                "failing": v.failing.get(pitfall, []),
                "batching": f"the {len(seen.updates)} updates watched, each read on its own rows",
            }
            results.append(
                Result(
                    pitfall,
                    statement,
                    "fail",
                    v.failed[pitfall],
                    examples=v.judged[pitfall],
                    measured=measured,
                )
            )
        elif v.judged[pitfall]:
            results.append(Result(pitfall, statement, "pass", examples=v.judged[pitfall]))
        else:
            results.append(Result(pitfall, statement, "skip", _unjudged(pitfall, seen)))
    if not seen.updates and not error and seen.moved:
        error = (
            "the params moved, yet no torch optimizer stepped: an update made by hand (p.data."
            "add_, param -= lr * param.grad) or by an optimizer that is not a torch.optim."
            "Optimizer cannot be watched; audit the update itself: linreg.audit.update_step"
        )
    elif not seen.updates and not error:
        error = "the code made no optimizer update: nothing to judge"
    elif not error and not any(r.verdict != "skip" for r in results):
        error = (
            "no update could be judged: every backward() reached no loss the watcher could read "
            "(it reads the scalar a torch loss function returns, F.cross_entropy, nn.MSELoss, "
            "...: not a loss written by hand, nor one called with reduction='none' and reduced "
            "by the code, nor a graph that allows no second pass)"
        )
    blind = sum(1 for u in seen.updates if u.blind)
    note = f"watched {len(seen.updates)} update(s)" + (
        " (then ended the code)" if seen.ended else ""
    )
    if seen.capped:
        note += (
            f"; no epoch ended within {len(seen.updates)} updates, the most watched unless "
            "--steps asks (an epoch's end shows its last, short update: --steps N watches N)"
        )
    if v.unread:
        note += (
            f"; {v.unread} update(s) applied what their micro-batches' read losses do not "
            "explain (a term the watcher does not read: a penalty, a part written by hand), or "
            "had micro-batches whose gradients are dependent: not judged"
        )
    if v.constant is not None:
        note += (
            f"; every full update applies {v.constant:.4g} times the mean of its rows, which no "
            "known mistake names: taken as the loss's own constant, each update read relative "
            "to it"
            + (
                " (no shorter update showed whether it grows with the rows: mean-vs-sum not judged)"
                if v.unconfirmed is not None
                else " (a shorter update applies it too)"
            )
        )
        extra = v.full * (1 / v.constant - 1) if 0 < v.constant < 1 else 0.0
        if v.unconfirmed is not None and 1 <= round(extra) < v.full and _near(extra, round(extra)):
            note += (  # a hint, not a verdict: a constant of the loss's own looks the same
                f"; it is {v.full:g} / ({v.full:g} + {round(extra)}): if the loop divides by "
                "its labels counted before a causal shift drops each sequence's first, that "
                "is mean-vs-sum (rows of unequal lengths would tell)"
            )
    if v.skipped:
        note += (
            f"; {v.skipped} backward() call(s) on other data were zeroed with no step, now and "
            "then (a step the code skipped: a gradient too large or not finite): not judged"
        )
    if v.let_go:
        note += (
            f"; {v.let_go} backward() call(s) had their gradients zeroed by the code before a "
            "step, before training began or on the same targets again (a scoring pass, SAM's "
            "first pass, an attack, a closure): not part of an update"
        )
    if v.terms:
        note += (
            f"; {v.terms} update(s) held more backward() calls than DataLoader batches, on "
            "targets no batch held (terms of one objective, as a GAN's real and fake): their "
            "weights not judged"
        )
    if seen.leftover and seen.updates and not seen.ended and not seen.ran_out:
        note += (
            f"; {len(seen.leftover)} backward() call(s) after the last update, no data run out "
            "after them, were never stepped (a diagnostic backward, a closure called to log "
            "its loss, or a last window of batches drawn without a DataLoader): not judged"
        )
    if seen.unrestored:
        note += "; could not put back, as the code left them: " + "; ".join(seen.unrestored)
    if seen.crossed:
        note += (
            f"; {seen.crossed} update(s) held micro-batches from both sides of an epoch's end "
            "(a window that crosses it: each judged by the weights it applied)"
        )
    if seen.skipped:
        note += f"; the loss scaler skipped {seen.skipped} step(s) (inf or nan): not judged"
    if blind:
        note += (
            f"; {blind} reached backward() through no loss the watcher could read (one written "
            "by hand, or a graph that allows no second pass): not judged"
        )
    return Report(target, "watch", {}, tuple(results), seconds, error, note=note)


def _unjudged(pitfall: str, seen: Watched) -> str:
    why = {
        "short-last-batch": "no update took fewer rows than a full one",
        "mean-vs-sum": "no full update could be read",
        "micro-batch-accumulation": "no update held micro-batches of unequal counts",
    }.get(pitfall, "no update could be read")
    more = " (the watch ended first: --steps watches more)" if seen.ended else ""
    return f"not judged: {why}{more}"
