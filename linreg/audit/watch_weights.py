"""Each update's weights on its micro-batches' gradients, named as the catalogue names them
(`weigh`): one scale on every full update (mean-vs-sum, or the loss's own constant, read
relative to it), another on a shorter one (short-last-batch), micro-batches weighed alike over
unequal counts (micro-batch-accumulation), a window carried over or never applied."""

from __future__ import annotations

from collections import Counter

from linreg.audit.watch_changing import changing, most_common, ramped, within
from linreg.audit.watch_constants import constant_of
from linreg.audit.watch_ratios import (
    alike,
    carried,
    first_applied,
    full_window,
    near,
    never_applied,
    over_counted,
    shown,
    tolerance,
    weights_of,
)
from linreg.audit.watch_readings import Reading
from linreg.audit.watch_scales import scale_named, short_named
from linreg.audit.watch_tally import Verdicts
from linreg.audit.watch_terms import coefficients
from linreg.kinds.training_loop import NO_KNOWN

__all__ = ["weigh"]


def weigh(readings: list[Reading], updates: int, v: Verdicts, term: str = "") -> None:
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
    s_full, held = most_common(fulls)
    if changing(readings, fulls, held, v, term) or within(readings, full, len(fulls), v):
        # a coefficient of the code's that changes, from update to update or micro-batch to
        # micro-batch
        coefficients(readings, updates, v, term)
        return
    parts_full = len(fulls[0].parts) if fulls else 1
    # the one loss's full updates of a weight the code ramps
    warm = ramped(fulls, s_full) if fulls and not term else set()
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
        (term and not summed_at_one) or scale_named(s_full, fulls[0], v.meant) == NO_KNOWN
    )
    kappa = s_full if unnamed and s_full > 0 else 1.0
    kappa, s_full, unconfirmed = constant_of(
        readings, fulls, (full, parts_full), kappa, s_full, v, term
    )
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
                why = scale_named(s, r, v.meant)
                if (term or r.j in warm) and why == NO_KNOWN and not near(s, 1):
                    v.ramped |= {r.j} & warm
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
                if near(r.count / full, 1) and near(s, base):  # (63 of 64 at bfloat16's
                    v.indistinct[r.j] = (r.count, full, tolerance())  # precision: a nominal
                    if unequal:  # divisor applies the mean too, to it; not judged) its
                        v.judged["micro-batch-accumulation"].add(r.j)  # micro-batches alike
                    continue
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
                why = "" if nominal or not wrong else scale_named(s, r, v.meant, full=False)
                if why and why != NO_KNOWN and not term:
                    v.judged["mean-vs-sum"].add(r.j)
                    v.fail("mean-vs-sum", f"{at} applied {s:.4g} times the {v.meant}: {why}")
                    wrong = False
                v.judged["short-last-batch"].add(r.j)
                if wrong:
                    if nominal:
                        v.nominal_at.setdefault(r.j, []).append(s)
                    # (no full update weighs its micro-batches alike, as a mean of means over
                    # unequal counts does: its window, the micro-batches most updates hold)
                    window = parts_full if fulls else _most_parts(readings)
                    if nominal and r.before_end and r.count > full and len(r.parts) > window:
                        # (longer: an epoch's left-over window in it, never stepped, each
                        # micro-batch at 1 / the window's)
                        v.fail(*carried(at, r, weights_of(r, rel), full))
                    else:
                        v.fail("short-last-batch", short_named(at, s, r, full, v.meant, window))
            if unequal:
                v.judged["micro-batch-accumulation"].add(r.j)
            continue
        if r.count != full or not unconfirmed:  # its micro-batches weighed unlike: judged
            v.judged["mean-vs-sum" if r.count == full else "short-last-batch"].add(r.j)
        if unequal:
            v.judged["micro-batch-accumulation"].add(r.j)
        weights = weights_of(r, rel)
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


def _most_parts(readings: list[Reading]) -> int:
    """Return the number of micro-batches most updates hold (the larger of a tie)."""
    held = Counter(len(r.parts) for r in readings)
    return max(held, key=lambda k: (held[k], k), default=1)
