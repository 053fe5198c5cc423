"""The Report of a watched run: a verdict per pitfall from watch_verdicts.py, "not judged"
where the run showed nothing a property reads, and a note of what was seen and let go."""

from __future__ import annotations

from linreg.audit.report import Report, Result
from linreg.audit.watch_counts import SAID
from linreg.audit.watch_note import note_of
from linreg.audit.watch_tally import Verdicts
from linreg.audit.watch_verdicts import PROPERTIES, SUMMED, judge
from linreg.kinds.watched import Watched
from linreg.pitfalls.label_shape import PULLED

# where no update's weights were judged (what .grad alone tells may be, apart: a gradient
# left in it, grad-zeroing's; none to apply, non-leaf-params')
UNJUDGED = "no update could be judged on its weights: "


def report_of(
    seen: Watched, target: str, seconds: float, error: str = "", reduction: str = "mean"
) -> Report:
    """Return the Report of a watched run: a verdict per pitfall, "not judged" where the run
    showed nothing the property reads; each update judged against the mean of its rows'
    gradients, or their sum (reduction="sum": a loss summed on purpose). An error of the
    watch's own while judging is no verdict: every property not judged, the error said."""
    summed = reduction == "sum"
    try:
        return _report_of(seen, target, seconds, error, summed)
    except Exception as e:  # (a bug of linreg's: never raised into the code, never a pass)
        why = f"the watch failed while judging the run ({type(e).__name__}: {e})"
        results = tuple(
            Result(p, s, "skip", f"not judged: {why}")
            for p, s in (SUMMED if summed else PROPERTIES).items()
        )
        said = f"{why}: an error of linreg's own, not of the code; please report it"
        options = {"reduction": "sum"} if summed else {}
        return Report(target, "watch", options, results, seconds, error or said)


def _report_of(seen: Watched, target: str, seconds: float, error: str, summed: bool) -> Report:
    """report_of's, where nothing raises."""
    v = judge(seen, summed)
    results = []
    if seen.broadcast:  # read from the loss calls, not the updates' weights
        v.failed["label-shape"] = f"{seen.broadcast}; {PULLED}"
    elif seen.values:  # the updates whose losses were read: those of values broadcast none
        v.judged["label-shape"] = set(range(len(seen.updates)))
    for pitfall, statement in (SUMMED if summed else PROPERTIES).items():
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
                    examples=len(v.judged[pitfall]),
                    measured=measured,
                )
            )
        elif pitfall == "grad-zeroing" and v.recombined:  # some updates could not be told
            why = (  # from zero_grad inside the window: no pass on the others alone
                f"not judged: {v.recombined} update(s) zeroed passes on other data and applied "
                "what their last micro-batches alone do not explain (a gradient the code "
                "rebuilt from those passes, or a term the watcher does not read)"
            )
            results.append(Result(pitfall, statement, "skip", why))
        elif pitfall == "short-last-batch" and seen.crossed and seen.ended:
            why = (  # its windows run on over epochs: what is left at the run's end unseen
                f"not judged: {seen.crossed} update(s) held micro-batches from both sides of an "
                "epoch's end, so whether the run's last window is ever stepped shows only at "
                "the run's end, which the watch did not reach (--steps N to the run's end)"
            )
            results.append(Result(pitfall, statement, "skip", why))
        elif v.judged[pitfall]:
            results.append(Result(pitfall, statement, "pass", examples=len(v.judged[pitfall])))
        else:
            results.append(Result(pitfall, statement, "skip", _unjudged(pitfall, seen, v)))
    if not seen.updates and not error and seen.moved:
        error = (
            "the params moved, yet no torch optimizer stepped: an update made by hand (p.data."
            "add_, param -= lr * param.grad) or by an optimizer that is not a torch.optim."
            "Optimizer cannot be watched; audit the update itself: linreg.audit.update_step"
        )
    elif not seen.updates and not error:
        error = "the code made no optimizer update: nothing to judge"
    elif not error and not any(u.fed for u in seen.updates):
        error = (
            "no update could be judged: no backward() fed any of them, the code set .grad "
            "itself (torch.func's grad and vmap, or gradients taken by hand), which the watch "
            "does not read (audit the per-row loss with linreg.audit.loss)"
        )
    elif not error and (
        all(r.verdict == "skip" or r.pitfall == "label-shape" for r in results)
        # every update unread: what passed (grad-zeroing, non-leaf-params, read from .grad
        # itself) judged none of the weights the watch exists to judge
        or len(v.unread) == len(seen.updates)
    ):
        # (label-shape reads the loss calls, not the updates: no update judged is still none)
        some = any(u.counts for u in seen.updates)  # a read loss reached by some backward()
        error = (
            UNJUDGED
            + (
                "every update held a backward() that reached no loss the watcher could read "
                if some
                else "every backward() reached no loss the watcher could read "
            )
            + "(it reads a torch loss function's, F.cross_entropy, nn.MSELoss, ..., and one called "
            "with reduction='none' whose elements the code weighs alike, or those a mask of "
            "0s and 1s keeps, and one written by hand as one whole sum or mean of the batch's "
            "rows, none 0, in a run on no torch loss: not a masked one by hand, nor rows the "
            "code weighs itself, "
            "weights of its own, nor a torch loss of pairs, triplets or sequences it does not "
            "read, F.triplet_margin_loss or F.ctc_loss, nor a graph that allows no second pass)"
            + (
                f"; {seen.unbatched} backward() call(s) reached a loss written by hand on rows "
                "no DataLoader fetched (a generator of the code's own, d2l's data_iter, or "
                "slices X[i : i + n]): such a loss is read on a DataLoader's batches"
                if seen.unbatched
                else ""
            )
            if not v.unread and not any(u.unreadable for u in seen.updates)
            else UNJUDGED + "see the note"
        )
    note = note_of(seen, v)
    options = {"reduction": "sum"} if summed else {}
    return Report(target, "watch", options, tuple(results), seconds, error, note=note)


def _unjudged(pitfall: str, seen: Watched, v: Verdicts) -> str:
    unsure = [c for c in v.constants if c.unconfirmed]
    if pitfall == "mean-vs-sum" and unsure:
        c = unsure[0]
        of = f"its {c.term} term" if c.term else "every full update"
        if c.shared:
            return (
                f"not judged: {of} applies {c.scale:.4g} times the {v.meant} of its rows, and "
                "grows with them on a shorter update as far as another term's nominal divisor "
                "shrinks that one: one divisor on both, or a sum besides (the same numbers)"
            )
        return (
            f"not judged: {of} applies {c.scale:.4g} times the {v.meant} of its rows, and no "
            "shorter update showed whether that changes with the rows (a constant of the "
            "loss's own, or a sum): "
            + (
                "the shorter ones read apply neither that multiple nor one grown with their "
                "rows, but another, which no known mistake names (a sum divided by each "
                "window's micro-batches reads so)"
                if c.other
                else "the shorter ones read tell nothing of it (a framework's own count on an "
                "epoch's short window, which it divides by the full count too, or a count a "
                "full one's to the tolerance)"
                if c.short
                else "data whose size is no multiple of the batch size would tell"
            )
        )
    if pitfall == "short-last-batch" and v.free and v.partial:
        return (
            f"not judged: {len(v.partial)} update(s) held a term on targets of no batch the "
            "watch saw fetched (a teacher's outputs, a penalty, or a batch fetched before the "
            "watch began), whose weight is never judged, so the other terms alone do not pass "
            "a shorter update"
        )
    if pitfall == "mean-vs-sum" and v.either:
        counts = sorted((SAID[v.counted], SAID[v.either]))
        return (
            f"not judged: every update applied one multiple of the mean over {counts[0]}, and "
            f"one over {counts[1]}, with a weight of the code's: the same numbers where every "
            "sample has as many elements, the one a known mistake (the mask's drops counted), "
            "the other a mean of its own"
        )
    weights = ("mean-vs-sum", "short-last-batch", "micro-batch-accumulation")
    if v.within and v.changing and pitfall in weights:
        low, high = v.changing
        return (
            "not judged: the micro-batches of the full updates each applied a multiple of "
            f"its own of the {v.meant} of its rows ({low:.4g} to {high:.4g}), changing inside "
            "a window and from window to window, which no known mistake names: a coefficient "
            "of the code's per micro-batch (a root of each one's mean, or its sum divided by "
            "its own positive labels), which a multiple or a weight by counts cannot be told from"
        )
    if pitfall in ("mean-vs-sum", "short-last-batch") and v.changing:
        low, high = v.changing
        return (
            f"not judged: every full update applied a multiple of its own of the {v.meant} of "
            f"its rows ({low:.4g} to {high:.4g}), which no known mistake names: a coefficient "
            "of the code's that changes (a root of the mean, or a sum divided by a count of "
            "the code's own, a batch's positive labels), which a multiple cannot be told from"
        )
    if pitfall in ("mean-vs-sum", "short-last-batch") and v.free:
        free = ", ".join(dict.fromkeys(v.free))  # (each model's cross_entropy: named once)
        return (
            f"not judged: the weight on each term ({free}) is a coefficient of the "
            f"code's, each term's function having taken the {v.meant} itself, or the code "
            "having divided its sum by a count of its own that changes (a batch's positive "
            "anchors): a multiple of it cannot be told from a coefficient"
        )
    if pitfall == "micro-batch-accumulation" and v.taken:
        return (
            f"not judged: the {len(v.taken)} update(s) of micro-batches of unequal counts add "
            "up their mean losses undivided, named mean-vs-sum, whose fix (each one's summed "
            "loss divided by the update's count) weighs them by their counts too"
        )
    if pitfall == "short-last-batch" and v.indistinct:
        count, full, tol = next(iter(v.indistinct.values()))
        return (
            f"not judged: the {len(v.indistinct)} update(s) shorter than a full one took "
            f"{count:g} of its {full:g} counted, so near that a nominal divisor there applies "
            f"{count / full:.4g} times the mean, within the run's precision of it (a relative "
            f"{tol:.2g}" + (": a forward in bfloat16 or float16)" if tol > 1e-3 else ")")
        )
    why = {
        "label-shape": "the code called no loss of values (F.mse_loss, F.l1_loss, "
        "F.smooth_l1_loss, F.huber_loss), the losses that broadcast",
        "short-last-batch": "no update took fewer rows than a full one",
        "mean-vs-sum": "no full update could be read",
        "micro-batch-accumulation": "no update held micro-batches of unequal counts",
        "clip-before-unscale": "no loss scaler (GradScaler) unscaled the gradients",
    }.get(pitfall, "no update could be read")
    if pitfall == "label-shape" and seen.by_hand:  # (its labels: in the code's own difference)
        why += (
            "; the loss written by hand it read is no difference of predictions and labels "
            "it could see"
        )
    own = pitfall in ("label-shape", "clip-before-unscale")  # read apart from the gradients
    if pitfall == "clip-before-unscale" and not any(u.unscaled for u in seen.updates):
        return f"not judged: {why}"  # (not that other updates were unread)
    if pitfall != "label-shape" and seen.updates and not any(u.fed for u in seen.updates):
        return "not judged: no backward() fed any update (the code set .grad itself)"
    unread = len(v.unread)
    if unread and pitfall != "label-shape":  # its evidence is in updates that were not read
        read = len(seen.updates) - unread
        return (
            f"not judged: {unread} of the {len(seen.updates)} updates applied what their "
            "micro-batches' read losses do not explain (see the note)"
            + (f", and the {read} read showed nothing for it" if read else "")
        )
    if not own and seen.updates and all(u.unreadable or u.blind for u in seen.updates):
        return "not judged: no update's gradients could be read (see the note)"
    if not own and seen.updates and not any(u.applied_any for u in seen.updates):
        return "not judged: no update had a gradient to apply (non-leaf-params says why)"
    # (a loss the code never calls, more updates would not show; nor would more epochs
    # an update of fewer rows, or of unequal micro-batches, where a whole one showed none)
    epochs = pitfall in ("short-last-batch", "micro-batch-accumulation") and seen.whole
    ended = "after an epoch's end, as it does by default" if epochs else "first"
    more = (
        f" (the watch ended {ended}: --steps watches more)"
        if seen.ended and seen.updates and not own
        else ""
    )

    return f"not judged: {why}{more}"
