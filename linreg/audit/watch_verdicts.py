"""Judge watched training code from what it did: each update read as weights on the gradients of
the micro-batches it consumed (`linreg.kinds.watched`), against a correct update's (each
micro-batch weighed by its count of rows or targets over the update's: the mean, as
watch_readings.py reads it; or, where the code sums its loss on purpose, by its count: the
sum). A pattern of weights is named as the catalogue names it: one scale on every full update
(mean-vs-sum), another on a short one (short-last-batch), micro-batches weighed alike over
unequal counts (micro-batch-accumulation), what .grad held before the update, or a step fed
nothing (grad-zeroing), an update with nothing to apply (non-leaf-params). Here: what .grad
held and what a step was fed; the weights of each loss or term, in watch_weights.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from linreg.audit.watch_clips import by_hand
from linreg.audit.watch_counts import meant, terms_meant
from linreg.audit.watch_ratios import judged_to, with_dropped
from linreg.audit.watch_readings import Reading, Under, read, read_terms, read_terms_under
from linreg.audit.watch_tally import Verdicts
from linreg.audit.watch_terms import name_shortfalls
from linreg.audit.watch_weights import weigh
from linreg.kinds.watched import Update, Watched

# each pitfall the watcher judges, and what it states of every update it saw
PROPERTIES = {
    "short-last-batch": "a short update applies the mean of its rows as a full one does; no "
    "micro-batch is left unstepped",
    "mean-vs-sum": "a full update applies the mean of its rows' gradients, not a multiple",
    "grad-zeroing": "an update applies its own micro-batches alone, and once",
    "label-shape": "no loss the code trains on broadcasts predictions against labels of another "
    "shape",
    "micro-batch-accumulation": "an update weighs its micro-batches by their counts of rows or "
    "targets",
    "non-leaf-params": "every update after a backward() has a gradient to apply",
    "clip-before-unscale": "a loss scaler unscales the gradients backward() left: nothing clips "
    "them before",
}
# an update whose params' .grad held a gradient as its first backward() began
CARRIED = (
    "found a gradient in .grad before its first backward(): the update before left it there "
    "(no zero_grad), and this one applies both"
)
SUMMED = {  # where the code means the sum (reduction="sum": a loss summed on purpose)
    **PROPERTIES,
    "short-last-batch": "a short update applies the sum of its rows as a full one does; no "
    "micro-batch is left unstepped",
    "mean-vs-sum": "a full update applies the sum of its rows' gradients, not a multiple",
}


def judge(seen: Watched, summed: bool = False) -> Verdicts:
    """Return the verdicts on every update seen: against the mean of each update's rows'
    gradients, or (summed) their sum; their weights told apart at the loosest of the updates'
    tolerances (a forward under autocast in bfloat16 reads them to its precision)."""
    with judged_to(max((u.tol for u in seen.updates), default=0.0)):
        return _judge(seen, summed)


def _judge(seen: Watched, summed: bool) -> Verdicts:
    v = Verdicts(meant="sum" if summed else "mean")
    if not summed:  # each loss's count, as its code divided it
        updates, v.counted, v.counted_alone, v.either = meant(seen.updates)
        seen = replace(seen, updates=updates)
        unmasked = v.counted == "unmasked" or "unmasked" in v.counted_alone
        if unmasked and not v.either:  # read so, and named
            n = len(updates) if v.counted == "unmasked" else v.counted_alone["unmasked"]
            v.fail(
                "mean-vs-sum",
                f"{n} update(s) applied the mean over every element of their loss, those its "
                "mask drops (missing labels, padding) too, each a multiple of the mean over "
                "the elements it keeps ((l * mask).mean(), (l * mask).sum() / mask.numel()): "
                "divide the masked sum by mask.sum()",
            )
    # per set of optimizers (a GAN's D and G updates each weigh their own rows, each scale its
    # own) and term ("": one loss)
    readings: dict[tuple[int, str], list[Reading]] = defaultdict(list)
    # each term's readings under another count its calls may divide by, aligned with those
    alternatives: dict[tuple[int, str], dict[str, list[Reading]]] = defaultdict(
        lambda: defaultdict(list)
    )
    # micro-batches on other data zeroed unstepped, in the updates after the first: in at most
    # half of them (rare), steps the code skipped on purpose (zero_grad inside every window
    # drops some in each); each: as many as a later update zeroes
    later = Counter(
        u.dropped for u in seen.updates[1:] if u.dropped and not u.redone and not u.crossed
    )
    rare = 2 * later.total() <= len(seen.updates) - 1
    each = later.most_common(1)[0][0] if later else 0
    for j, u in enumerate(by_hand(seen.updates)):
        v.at, v.ratios[j] = j, None
        lost = False  # micro-batches of its own zeroed before its step: grad-zeroing's
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
            own = None if u.blind or u.terms else _read(j, u, summed)
            # a pass before training (the first update's, where later ones drop none or its
            # last micro-batches do not explain it), the same targets again, now and then
            # another loader's
            unexplained = own is None or own.relative is None or own.unread
            if (j == 0 and (rare or unexplained)) or u.redone or (u.foreign and rare):
                v.let_go += u.dropped
            elif unexplained:
                v.recombined += 1  # what it applied is not its last micro-batches' alone: the
                continue  # code rebuilt .grad from them (DP-SGD), or a term is unread: either
                # way grad-zeroing is not judged on this run (never passed: see report_of)
            elif u.crossed:
                v.fail(
                    "short-last-batch",
                    f"{at}: {u.dropped} micro-batch(es) went through backward() before an "
                    "epoch's end and were zeroed before any step (an epoch's left-over window "
                    "dropped): step when the data ends too",
                )
            elif not rare:
                lost = True
                v.fail(
                    "grad-zeroing",
                    f"{at}: .grad was zeroed between its micro-batches, so {u.dropped} of them, "
                    "on other data, went through backward() and were never applied (zero_grad "
                    "inside the accumulation loop: zero once a window, after the step)",
                )
            else:  # now and then: a step the code chose to skip (a gradient too large, inf)
                v.skipped += u.dropped
        if u.scaled_clip:
            v.fail(
                "clip-before-unscale",
                f"{at} clipped its gradients while a loss scaler still held them scaled, so "
                "the clip's bound held the scaled gradient (a loss scaler's scale, 2^16 at its "
                "start, makes nearly every update a clip, then divided by the scale): call "
                "scaler.unscale_(optimizer) before clip_grad_norm_",
            )
        elif u.unscaled:
            v.judged["clip-before-unscale"].add(j)
        if u.blind:  # a backward() reached no loss the watcher read: its weights are not
            if u.carried:  # judged, but what .grad held before its first backward() is
                v.fail("grad-zeroing", f"{at} {CARRIED}")
            continue
        if u.elsewhere:
            v.fail(
                "non-leaf-params",
                f"{at} stepped an optimizer whose params no backward() of it reached, none with "
                "a gradient: an optimizer built over another model (the model made again after "
                "it, or a copy), so the model trained never moves",
            )
            continue
        if not u.applied_any and u.counts and not sum(u.counts) and not u.bb:
            continue  # every target of its losses ignored (-100): nothing to apply, and none
            # left by its backward() (a loss not read, a reconstruction by hand, left some)
        if u.zeros:  # a gradient reached them, all 0 (a loss weighed by 0): nothing to apply
            continue
        if not u.applied_any:
            v.fail(
                "non-leaf-params",
                f"{at} followed a backward() yet had no gradient to apply"
                + (  # (backward() left a gradient on its params, none of it reached the step)
                    ": the code zeroed the gradients backward() left before the step "
                    "(optimizer.zero_grad() between loss.backward() and optimizer.step())"
                    if u.zeroed and not (u.norm_clipped or u.clipped or u.hand)
                    else ""
                ),
            )
            continue
        v.judged["non-leaf-params"].add(j)
        if u.carried:
            v.fail("grad-zeroing", f"{at} {CARRIED}")
        else:
            v.judged["grad-zeroing"].add(j)
        # terms of one objective: their weights are the objective's, not judged (two models'
        # losses: each its own objective's, each part told on its own)
        parts = [part for part in u.parts or (u,) if not part.terms]
        v.terms += len(parts) < len(u.parts or (u,))
        for part in parts:
            terms: Sequence[tuple[str, Reading | None]]
            others: Under = {}  # (each term under another count: watch_counts.terms_meant)
            if part.columns:
                terms, others = read_terms_under(j, part, summed)
            else:
                terms = [("", read(j, part, summed))]
            if not all(col.from_batch for col in part.columns):
                v.partial.add(j)
            if not terms:  # no term's targets a fetched batch's: weights not judged
                v.no_batch.add(j)
            for term, r in terms:
                if r is not None:
                    if lost and not term:  # weighed against every row it consumed, those it
                        # zeroed too (grad-zeroing's alone); the first update's as many as a
                        # later one zeroes (a pass before training zeroed first is none of its)
                        r = with_dropped(
                            r, u.dropped_counts[-each:] if j == 0 else u.dropped_counts, summed
                        )
                    r.tol, r.before_end = u.tol, part.before_end
                    r.calls = r.calls if term else part.calls
                    key = (hash((u.optimizers, part.group)) if u.parts else u.optimizers, term)
                    readings[key].append(r)
                    for k, read_so in others.items():  # (a term under another count: aligned)
                        alt = read_so.get(term) or r
                        alt.tol, alt.before_end, alt.calls = r.tol, r.before_end, r.calls
                        alternatives[key][k].append(alt)
                    v.blind_clipped += r.blind
                    if r.penalized:
                        v.penalized.add(j)
                    if r.changed:
                        v.changed.add(j)
    v.weighed = {col.term for u in seen.updates for col in u.columns if not col.plain}
    terms_meant(readings, alternatives, v)
    for (_, term), rs in readings.items():
        weigh(rs, len(seen.updates), v, term)
    v.undivided(len(seen.updates))
    v.divided_again(len(seen.updates))
    for x in v.shortfalls:
        if x.kind == "nominal":
            v.nominal_at.setdefault(x.j, []).append(x.ratio)
    v.grown_on()
    name_shortfalls(v)
    # a term not told from a sum, one whose scale is the code's, or a count not told from
    # every element's: no pass on the others' alone
    if any(c.unconfirmed for c in v.constants) or v.free or v.either:
        v.judged["mean-vs-sum"] = set()
    if v.free:  # judged where each such term's full updates judged it
        shorts = set.intersection(*(v.shorter[term] for term in v.free)) - v.partial
        if any(term not in v.free for _, term in readings):
            shorts &= v.judged["short-last-batch"]
        v.judged["short-last-batch"] = shorts
    v.at = None
    if seen.leftover and seen.updates and not seen.ended and seen.ran_out:
        v.fail(
            "short-last-batch",
            f"after its last update, {len(seen.leftover)} micro-batch(es) went through "
            "backward(), the data ran out, and no optimizer.step() used them: step when the "
            "data ends too",
        )
    if seen.unreached and not seen.strays:
        v.fail(
            "short-last-batch",
            f"{seen.unreached} loss(es) computed on an epoch's last batches after its last "
            "backward() were let go: the next backward(), after the data ran out, did not "
            "reach them, so their rows were never applied (an epoch's left-over window "
            "dropped): backward and step when the data ends too",
        )
    v.let_go += seen.probed  # zeroed by the code, before each update: a probe's batch
    return v


def _read(j: int, u: Update, summed: bool) -> Reading | None:
    """Return an update's one reading: its one loss's, or where its backward() calls reached
    several, one unexplained (not one combination) or its first judged term's."""
    if not u.columns:
        return read(j, u, summed)
    return next((r for _, r in read_terms(j, u, summed)), None)
