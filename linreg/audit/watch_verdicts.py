"""Judge watched training code from what it did: each update read as weights on the gradients of
the micro-batches it consumed (`linreg.kinds.watched`), against a correct update's (each
micro-batch weighed by its count of rows or targets over the update's: the mean, as
watch_readings.py reads it; or, where the code sums its loss on purpose, by its count: the
sum). A pattern of weights is named as the catalogue names it: one scale on every full update
(mean-vs-sum), another on a short one (short-last-batch), micro-batches weighed alike over
unequal counts (micro-batch-accumulation), what .grad held before the update, or a step fed
nothing (grad-zeroing), an update with nothing to apply (non-leaf-params).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from linreg.audit.watch_counts import meant
from linreg.audit.watch_readings import (
    Reading,
    alike,
    by_hand,
    carried,
    first_applied,
    framework_divides,
    full_window,
    near,
    never_applied,
    over_counted,
    read,
    read_terms,
    shown,
)
from linreg.audit.watch_tally import Constant, Grown, Verdicts
from linreg.audit.watch_terms import coefficients, name_shortfalls
from linreg.kinds.training_loop import NO_KNOWN
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
SUMMED = {  # where the code means the sum (reduction="sum": a loss summed on purpose)
    **PROPERTIES,
    "short-last-batch": "a short update applies the sum of its rows as a full one does; no "
    "micro-batch is left unstepped",
    "mean-vs-sum": "a full update applies the sum of its rows' gradients, not a multiple",
}


def judge(seen: Watched, summed: bool = False) -> Verdicts:
    """Return the verdicts on every update seen: against the mean of each update's rows'
    gradients, or (summed) their sum."""
    v = Verdicts(meant="sum" if summed else "mean")
    if not summed:  # each loss's count, as its code divided it
        updates, v.counted, v.counted_alone = meant(seen.updates)
        seen = replace(seen, updates=updates)
    # per set of optimizers (a GAN's D and G updates each weigh their own rows, each scale its
    # own) and term ("": one loss)
    readings: dict[tuple[int, str], list[Reading]] = defaultdict(list)
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
        if u.blind:  # a backward() reached no loss the watcher read: nothing here is judged
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
        if not u.applied_any:
            v.fail("non-leaf-params", f"{at} followed a backward() yet had no gradient to apply")
            continue
        v.judged["non-leaf-params"].add(j)
        if u.carried:
            v.fail(
                "grad-zeroing",
                f"{at} found a gradient in .grad before its first backward(): the update before "
                "left it there (no zero_grad), and this one applies both",
            )
        else:
            v.judged["grad-zeroing"].add(j)
        # terms of one objective: their weights are the objective's, not judged (two models'
        # losses: each its own objective's, each part told on its own)
        parts = [part for part in u.parts or (u,) if not part.terms]
        v.terms += len(parts) < len(u.parts or (u,))
        for part in parts:
            terms = read_terms(j, part, summed) if part.columns else [("", read(j, part, summed))]
            if not all(col.from_batch for col in part.columns):
                v.partial.add(j)
            if not terms:  # no term's targets a fetched batch's: weights not judged
                v.no_batch.add(j)
            for term, r in terms:
                if r is not None:
                    if lost and not term:  # weighed against every row it consumed, those it
                        # zeroed too (grad-zeroing's alone); the first update's as many as a
                        # later one zeroes (a pass before training zeroed first is none of its)
                        r = _with_dropped(
                            r, u.dropped_counts[-each:] if j == 0 else u.dropped_counts, summed
                        )
                    r.tol, r.before_end = u.tol, part.before_end
                    r.calls = r.calls if term else part.calls
                    readings[
                        hash((u.optimizers, part.group)) if u.parts else u.optimizers, term
                    ].append(r)
                    v.blind_clipped += r.blind
                    if r.penalized:
                        v.penalized.add(j)
                    if r.changed:
                        v.changed.add(j)
    v.weighed = {col.term for u in seen.updates for col in u.columns if not col.plain}
    for (_, term), rs in readings.items():
        _weights(rs, len(seen.updates), v, term)
    v.undivided(len(seen.updates))
    v.divided_again(len(seen.updates))
    for x in v.shortfalls:
        if x.kind == "nominal":
            v.nominal_at.setdefault(x.j, []).append(x.ratio)
    v.grown_on()
    name_shortfalls(v)
    if any(c.unconfirmed for c in v.constants) or v.free:  # a term not told from a sum, or
        v.judged["mean-vs-sum"] = set()  # one whose scale is the code's: no pass on the
    if v.free:  # others' alone: judged where each such term's full updates judged it
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


def _weights(readings: list[Reading], updates: int, v: Verdicts, term: str = "") -> None:
    """Name each update's weights as the catalogue names them: one loss's, or one term's of
    a loss made of several (term: its function). A term's scale on its full updates is read as
    a single loss's is, but named only where a known mistake shows (a sum over its rows, or a
    nominal divisor on a shorter update): another may be a coefficient of the code's."""
    for r in readings if term and v.meant == "mean" else []:  # (Verdicts.undivided)
        if not r.unread and r.relative and alike(r.relative):
            v.coefficients[r.j].append((term, r.relative[0], len(r.parts)))
            if r.again:  # (Verdicts.divided_again)
                v.again[r.j].append((term, len(r.parts), r.divided))
    if term and readings and all(r.native for r in readings):
        coefficients(readings, updates, v, term)
        return
    of_term = f", its {term} term" if term else ""
    over = over_counted(readings) if v.meant == "mean" else []  # a mean's divisor
    for n, (r, extra) in enumerate(over):  # named once, then read as if divided right
        assert r.relative is not None
        s = r.relative[0]
        if not n:
            v.at = r.j
            v.fail(
                "mean-vs-sum",
                f"update {r.j + 1} of {updates}{of_term} applied {s:.4g} times the mean of its "
                f"{r.count:g} counted: it divides by {r.count + extra:g}, {extra} more than its "
                "loss counts, and every update is over-counted by a whole number: targets "
                "its loss never counts were counted (each sequence's first label, before the "
                "causal shift drops it, as transformers' Trainer counts them for a model whose "
                "loss_type is None, GPT2LMHeadModel; or padding)",
            )
        r.relative = [x / s for x in r.relative]
    full, windows = full_window(readings)  # a full update's count, and its micro-batches
    fulls = [r for r in readings if r.count == full and r.relative and alike(r.relative)]
    s_full = fulls[0].relative[0] if fulls and fulls[0].relative else 1.0
    parts_full = len(fulls[0].parts) if fulls else 1
    if term and fulls:  # (fulls: each alike, so its scale is its relative[0])
        scales = [r.relative[0] for r in fulls if r.relative]
        s_full = max(scales, key=lambda s: sum(near(s, t) for t in scales))
        by_rows = len({r.per_row for r in readings}) == 1 and readings[0].per_row is not None
        if 3 * sum(near(s_full, t) for t in scales) < 2 * len(scales) and not by_rows:
            # full updates mostly each of a scale of its own (the classes' sum divided by the
            # positive anchors' count, as SSD's box sum is: count / num_pos): a coefficient of
            # the code's that changes, read as a function's own mean's is (watch_terms); not a
            # sum divided by each batch's rows (by_rows), whose rows change the full scales
            coefficients(readings, updates, v, term)
            return
        fulls = [r for r in fulls if r.relative and near(r.relative[0], s_full)]
    # one scale on the full updates that no known mistake names (0.5 * F.mse_loss, a sum over
    # features over the batch): the loss's own constant; every update is read relative to it
    # (a term's scale is named only where a shorter update shows it growing with the rows: on
    # its full updates alone, a sum and a coefficient of the code's look the same; but not a
    # sum the code weighed by no number in any update, which applies the full count:
    # 16 * ce_sum / len(y) is a weight of 16 on the mean, and box_sum / num_pos the mean over
    # the positives where there is one, ce_sum alone the sum; a row's elements summed, one row
    # a micro-batch, are a sum over a row's features too: not named)
    summed_at_one = (
        bool(term)
        and v.meant == "mean"
        and near(s_full, full)
        and not near(full, 1)
        and term not in v.weighed
        and not any(r.one_row for r in fulls)
    )
    unnamed = fulls and (
        (term and not summed_at_one) or _why(s_full, fulls[0], v.meant) == NO_KNOWN
    )
    kappa = s_full if unnamed and s_full > 0 else 1.0
    unconfirmed = False
    if not near(kappa, 1):  # a constant is the same on a shorter update; a sum grows with rows
        shorts = [r for r in readings if r.count < full and r.relative and alike(r.relative)]
        # (where the sum was meant, a mean shrinks as the rows grow)

        def of(count: float) -> float:
            return count / full if v.meant == "mean" else full / count

        grows = [  # (a count a full one's to the tolerance tells nothing)
            r
            for r in shorts
            if r.relative
            and near(r.relative[0], kappa * of(r.count))
            and not near(of(r.count), 1)
            and not (_framework_short(r, kappa) and not near(kappa, full / parts_full))
        ]
        # each micro-batch's loss a sum, divided by its window's micro-batches: full/k on the
        # full updates, count/k' on a shorter window of another k' (of the same k, a sum grown)
        per_window = [
            r
            for r in shorts
            if v.meant == "mean"
            and r.relative
            and len(r.parts) != parts_full
            and near(kappa, full / parts_full)
            and near(r.relative[0], r.count / len(r.parts))
            and not near(r.relative[0], kappa)
        ]
        if grows:
            how = (
                "grows with the rows (a loss summed over them, or multiplied by the batch size)"
                if v.meant == "mean"
                else "shrinks as the rows grow (a mean over them, times a constant)"
            )
            # a term's on top of a coefficient of the code's (not its full count: a sum at
            # 1), where the mean is meant, is named after every term is read: another's
            # nominal divisor may explain it
            later = bool(term) and v.meant == "mean" and not near(kappa, full)
            for r in grows if later else grows[:1]:
                said = (
                    f"every full update{of_term} applies {kappa:.4g} times the {v.meant} of "
                    f"its {full:g} counted, and update {r.j + 1} ({r.count:g} counted) applies "
                    f"{kappa * of(r.count):.4g} times its own: a factor that {how} where a "
                    f"{v.meant} was meant"
                )
                if later:
                    v.grown.append(Grown(term, r.j, of(r.count), kappa, full, said))
                else:
                    v.at = r.j
                    v.fail("mean-vs-sum", said)
            kappa = 1.0
        elif per_window:
            r = per_window[0]
            assert r.relative is not None
            v.at = r.j
            v.fail(
                "mean-vs-sum",
                f"every full update{of_term} applies {kappa:.4g} times the mean of its {full:g} "
                f"counted over {parts_full} micro-batches, and update {r.j + 1} ({r.count:g} "
                f"counted over {len(r.parts)}) applies {r.relative[0]:.4g} times its own: each "
                "micro-batch's loss summed over its rows (reduction='sum') and divided by the "
                "window's micro-batches, where a mean was meant",
            )
            kappa = 1.0
        else:  # no shorter update tells a constant from a sum: mean-vs-sum is not judged
            shorter = any(  # (a count a full one's to the tolerance tells nothing)
                r.relative and near(r.relative[0], kappa) and not near(of(r.count), 1)
                for r in shorts
            )
            other = any(  # neither the constant nor grown: another multiple
                r.relative
                and not near(r.relative[0], kappa)
                and not near(of(r.count), 1)
                and not _framework_short(r, kappa)
                for r in shorts
            )
            unconfirmed = not shorter
            by, g = fulls[0].divided
            framework = (
                ""
                if g < 2 or not near(kappa, 1 / g)
                else f"gradient_accumulation_steps={g} ({by})"
                if not by.startswith("Lightning")
                else f"{by}={g}"
            )
            v.constants.append(
                Constant(
                    term,
                    kappa,
                    full,
                    unconfirmed,
                    framework=framework,
                    short=bool(shorts),
                    other=other,
                )
            )
            s_full = 1.0
    # the full ones' scale the code's own division by a framework's count, again (1 / k on k
    # micro-batches): a shorter update is read with it undone, as what the framework applies
    g = fulls[0].divided[1] if fulls and not term and v.meant == "mean" else 1
    again = g > 1 and near(s_full, 1 / g) and len(fulls[0].parts) == g
    for r in readings:
        v.at = r.j
        at = (
            f"update {r.j + 1} of {updates}{of_term} ({len(r.parts)} micro-batch(es), "
            f"{r.count:g} counted)"
        )
        rel = None if r.relative is None else [x / kappa for x in r.relative]
        if rel is not None and alike(rel) and not term:
            v.ratios[r.j] = rel[0]
        if r.unread or rel is None:  # dependent gradients, or no combination of them (a
            v.unread.add(r.j)  # term the watcher does not read: a penalty, a hand-written loss)
            continue
        unequal = len(set(r.parts)) > 1
        if alike(rel):
            s = rel[0]
            if r.count == full:
                why = _why(s, r, v.meant)
                if term and why == NO_KNOWN and not near(s, 1):
                    continue  # another coefficient of the code's, this update (not judged)
                if not unconfirmed:
                    v.judged["mean-vs-sum"].add(r.j)
                if not near(s, 1):
                    v.fail("mean-vs-sum", f"{at} applied {s:.4g} times the {v.meant}: {why}")
            else:  # an update of another size: right, or the full ones' scale is its cause
                base = s_full
                if again:
                    s, base = s / s_full, 1.0
                    at += ", its own division by the count again undone,"
                theirs = [base, base * r.count / full, base * len(r.parts) / parts_full]
                if v.meant == "sum":  # a mean where the sum was meant: of the update's count,
                    theirs.append(base * full / r.count)  # or each micro-batch's own
                    theirs.append(base * full * len(r.parts) / (r.count * parts_full))
                wrong = not near(s, 1) and (near(base, 1) or not any(near(s, t) for t in theirs))
                nominal = v.meant == "mean" and near(s, r.count / full)
                if term and wrong and not nominal:
                    continue  # another coefficient of the code's, this update (not judged)
                # its own numbers name a scale's cause (its micro-batches' means added up
                # undivided, a sum, a loss scaler's scale): mean-vs-sum's, however its count
                # stands to the full one's (a masking collator gives each window its own)
                why = "" if nominal or not wrong else _why(s, r, v.meant, full=False)
                if why and why != NO_KNOWN and not term:
                    v.judged["mean-vs-sum"].add(r.j)
                    v.fail("mean-vs-sum", f"{at} applied {s:.4g} times the {v.meant}: {why}")
                    wrong = False
                v.judged["short-last-batch"].add(r.j)
                if wrong:
                    if nominal:
                        v.nominal_at.setdefault(r.j, []).append(s)
                    v.fail("short-last-batch", _short(at, s, r, full, v.meant, parts_full))
            if unequal:
                v.judged["micro-batch-accumulation"].add(r.j)
            continue
        if r.count != full or not unconfirmed:  # its micro-batches weighed unlike: judged
            v.judged["mean-vs-sum" if r.count == full else "short-last-batch"].add(r.j)
        if unequal:
            v.judged["micro-batch-accumulation"].add(r.j)
        weights = [x * c / r.count for x, c in zip(rel, r.parts, strict=True)]
        if full and r.count > full and len(r.parts) > windows:  # more micro-batches too
            v.fail(*carried(at, r, weights, full))
            continue
        dropped = first_applied(rel)
        if dropped is not None:
            v.fail(*never_applied(at, dropped, r.before_end))
            continue
        if unequal and alike(weights):
            each = weights[0]
            if v.meant == "sum":
                v.fail(
                    "micro-batch-accumulation",
                    f"{at} weighs its {len(r.parts)} micro-batches alike over counts "
                    f"{shown(r.parts)} (each {each:.3g} of the update): add up each one's "
                    "summed loss (reduction='sum'), as the sum of the update's rows was meant",
                )
            elif near(each, 1.0):
                v.judged["micro-batch-accumulation"].discard(r.j)  # its weights named there
                v.taken.add(r.j)
                v.fail(
                    "mean-vs-sum",
                    f"{at} adds up its {len(r.parts)} micro-batches' mean losses without "
                    f"dividing, over counts {shown(r.parts)}: divide each one's summed loss by "
                    "the update's count",
                )
            else:
                v.fail(
                    "micro-batch-accumulation",
                    f"{at} takes the mean of its {len(r.parts)} micro-batches' mean losses over "
                    f"counts {shown(r.parts)} (weights {shown(weights)}): divide each one's "
                    "summed loss by the update's count",
                )
            continue
        v.fail(
            "micro-batch-accumulation",
            f"{at} weighs its micro-batches {shown(weights)} where a correct update weighs "
            f"them {shown([c / r.count for c in r.parts])}: it {NO_KNOWN}",
        )


def _with_dropped(r: Reading, dropped: Sequence[float], summed: bool) -> Reading:
    """Return an update's reading against the mean of every row it consumed, the counts of
    its micro-batches zeroed before the step (dropped, of its own loader) included: a window's
    loss / k whose first micro-batches were zeroed applies its last one at the window's
    weight, right beside grad-zeroing (where it was read against that micro-batch's own mean,
    a scale of k)."""
    more = sum(dropped)
    if summed or r.relative is None or not more:
        return r
    grown = (r.count + more) / r.count
    return replace(r, count=r.count + more, relative=[x * grown for x in r.relative])


def _framework_short(r: Reading, kappa: float) -> bool:
    """Return whether a shorter update applies kappa times its share of a framework's count
    (accelerate's or Lightning's nominal count on an epoch's short last window, each loss
    divided by it), which a loss's constant of the code's (a halved loss) keeps too; not
    where that constant is a full micro-batch's rows (a sum at 1: the caller's test)."""
    g, k = r.divided[1], len(r.parts)
    return g > 1 and k < g and r.relative is not None and near(r.relative[0], kappa * k / g)


def _short(
    at: str, s: float, r: Reading, full: float, meant: str = "mean", parts_full: int = 0
) -> str:
    if meant == "mean" and near(s, r.count / full):
        return (
            f"{at} applied {s:.4g} times the mean: it divides by a full update's {full:g} where "
            f"it took {r.count:g} (a nominal batch size or accumulation count)"
        )
    if meant == "mean" and len(r.parts) < parts_full and near(s, len(r.parts) / parts_full):
        return (
            f"{at} applied {s:.4g} times the mean: it divides by a full update's "
            f"{parts_full} micro-batches where it took {len(r.parts)} (a nominal accumulation "
            "count)"
        )
    return f"{at} applied {s:.4g} times the {meant}, unlike a full update: it {NO_KNOWN}"


def _why(s: float, r: Reading, meant: str = "mean", full: bool = True) -> str:
    """Return the known mistake an update's scale s (over the mean, or the sum meant) shows,
    else NO_KNOWN; full: an update of the most common count (a shorter one's accumulation
    window is short on its own account: accelerate divides it by the whole count too)."""
    if s >= 1024 and near(math.log2(s), round(math.log2(s))):
        return "it steps with a loss scaler's scaled gradients (call scaler.step, or unscale_)"
    if meant == "sum":
        if near(s, 1 / r.count):
            return (
                "it takes the mean over the update's rows or targets (reduction='mean') where "
                "their sum was meant"
            )
        if len(r.parts) > 1 and near(s, 1 / len(r.parts)):
            return (
                f"it averages its {len(r.parts)} micro-batches' summed losses where their sum "
                "was meant"
            )
        if len(r.parts) > 1 and near(s, len(r.parts) / r.count):
            return (
                f"it adds up its {len(r.parts)} micro-batches' mean losses (reduction='mean') "
                "where the sum of their rows was meant"
            )
        return NO_KNOWN
    k = len(r.parts)  # (micro-batches of several calls each: their means added, or averaged)
    by, g = r.divided if full else ("", 1)  # a framework's backward() divides by its count
    accelerate = by.startswith("accelerate")
    # (an epoch of fewer batches than the count cuts every window short: accelerate's own
    # nominal count there, not a step outside accumulate(), where it took them all)
    outside = g > 1 and k < min(g, r.epoch or g) and accelerate
    if outside and (near(s, 1 / g) or (r.again and near(s, 1 / g**2))):
        return (
            f"accelerate's backward() divides each loss by gradient_accumulation_steps={g}, "
            f"yet the update stepped after {k} micro-batch(es): the loop steps outside `with "
            "accelerator.accumulate(model):`, which skips the steps before a window's last"
            + (", and divides each loss by the count again itself" if near(s, 1 / g**2) else "")
        )
    # (at 2, 1 / k is a halved loss's too, 0.5 * F.mse_loss, the code's own constant: named
    # where the code's own division by the count is seen, loss / k before the framework's)
    if (g > 2 or (g == 2 and r.again)) and near(s, 1 / g) and k == g:
        return (
            "it divides each micro-batch's loss by the accumulation count itself, where "
            f"{framework_divides(by, g)} already"
            + (  # (the ½ of a squared error written as a division reads the same)
                " (a loss halved on purpose as loss / 2 applies the same 0.5: write 0.5 * loss, "
                "which is read as the loss's own constant)"
                if g == 2
                else ""
            )
        )
    if k > 1 and r.calls > 1 and near(s, k * r.calls):  # (heads' or zipped domains' means)
        return (
            f"it adds up its {k} micro-batches' losses without dividing, each of them "
            f"{r.calls} mean losses added ({k * r.calls} means in all)"
        )
    if k > 1 and k != r.calls and near(s, k):
        return f"it adds up its {k} micro-batches' mean losses without dividing"
    if near(s, r.count):
        return (
            "it sums the loss over the update's rows or targets (reduction='sum', or a mean "
            "loss per row or step added up) where a mean was meant"
        )
    if k > 1 and not r.one_row and r.count > k and near(s, r.count / k):
        return (
            f"it sums each micro-batch's loss over its rows or targets (reduction='sum') and "
            f"divides by the {k} micro-batches (as accelerate and Lightning divide each "
            "micro-batch's loss by the accumulation count) where a mean was meant"
        )
    return NO_KNOWN
