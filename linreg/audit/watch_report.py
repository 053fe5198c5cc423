"""The Report of a watched run: a verdict per pitfall from watch_verdicts.py, "not judged"
where the run showed nothing a property reads, and a note of what was seen and let go."""

from __future__ import annotations

from linreg.audit.report import Report, Result
from linreg.audit.watch_counts import SAID, TORCHS
from linreg.audit.watch_ratios import near
from linreg.audit.watch_tally import Verdicts
from linreg.audit.watch_verdicts import PROPERTIES, SUMMED, judge
from linreg.kinds.watched import Watched
from linreg.kinds.watched.steps import MOST_CAUGHT
from linreg.pitfalls.label_shape import PULLED


def report_of(
    seen: Watched, target: str, seconds: float, error: str = "", reduction: str = "mean"
) -> Report:
    """Return the Report of a watched run: a verdict per pitfall, "not judged" where the run
    showed nothing the property reads; each update judged against the mean of its rows'
    gradients, or their sum (reduction="sum": a loss summed on purpose)."""
    summed = reduction == "sum"
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
            "no update could be judged: "
            + (
                "every update held a backward() that reached no loss the watcher could read "
                if some
                else "every backward() reached no loss the watcher could read "
            )
            + "(it reads a torch loss function's, F.cross_entropy, nn.MSELoss, ..., and one called "
            "with reduction='none' whose elements the code weighs alike: not a loss written by "
            "hand, nor rows the code weighs itself, a mask or weights of its own, nor a graph "
            "that allows no second pass)"
            if not v.unread and not any(u.unreadable for u in seen.updates)
            else "no update could be judged: see the note"
        )
    unreadable = sum(1 for u in seen.updates if u.unreadable)
    blind = sum(1 for u in seen.updates if u.blind) - unreadable
    note = f"watched {len(seen.updates)} update(s)" + _ended(seen)
    if seen.capped and all(u.blind for u in seen.updates):  # (no loader fed a read update,
        note += (  # so no pass's end was counted an epoch's: a probe's may be one)
            f"; {len(seen.updates)} updates, the most watched unless --steps asks: an epoch's "
            "end is counted on the loaders that fed an update the watch read, and none did"
        )
    elif seen.capped:
        note += (
            f"; no epoch ended within {len(seen.updates)} updates, the most watched unless "
            "--steps asks (an epoch's end shows its last, short update: --steps N watches N)"
        )
    if v.counted:
        note += f"; each loss it sums itself read as a mean over {SAID[v.counted]}"
    for key, n in sorted(v.counted_alone.items()):
        over = SAID[key] if key else TORCHS
        note += (
            f"; {n} update(s) read as a mean over {over}, the one count they applied the mean of"
        )
    if v.unread:
        note += (
            f"; {len(v.unread)} update(s) applied what their micro-batches' read losses do not "
            "explain (a term the watcher does not read: a penalty, a part written by hand, or "
            "rows weighed by the code: a reduction='none' loss times weights of its own), or "
            "had micro-batches whose gradients are dependent: not judged"
        )
    for c in v.constants:
        of_term = f"its {c.term} term" if c.term else "every full update"
        note += (
            f"; {of_term} applies {c.scale:.4g} times the {v.meant} of its rows"
            + (" in every full update" if c.term else "")
            + (
                f", 1 / the count {c.framework} divides every loss by already: a loss halved "
                "by the code (0.5 * loss), or divided by the count again as a product, which "
                "give the same numbers (loss / k is read as the division it is and named)"
                if c.framework
                else ", which no known mistake names"
            )
            + ": taken as the loss's own constant, each update read relative to it"
            + (
                " (a shorter update showed it grow with the rows as far as another term's "
                "nominal divisor shrank that one there: the same divisor on both, or a sum "
                "besides, which give the same numbers: mean-vs-sum not judged)"
                if c.shared
                else " (no shorter update showed whether it changes with the rows: mean-vs-sum "
                "not judged)"
                if c.unconfirmed
                else " (a shorter update applies it too)"
            )
        )
        extra = c.full * (1 / c.scale - 1) if 0 < c.scale < 1 else 0.0
        if c.unconfirmed and 1 <= round(extra) < c.full and near(extra, round(extra)):
            note += (  # a hint, not a verdict: a constant of the loss's own looks the same
                f"; it is {c.full:g} / ({c.full:g} + {round(extra)}): if the loop divides by "
                "its labels counted before a causal shift drops each sequence's first, that "
                "is mean-vs-sum (rows of unequal lengths would tell)"
            )
    if v.blind_clipped:
        note += (
            f"; {v.blind_clipped} update(s) were clipped by hand (not by torch) to one norm, "
            "every update of their params, from a gradient other than backward()'s: each is "
            "right only up to the clip's factor, since a division of .grad before the clip (as "
            "fairseq's multiply_grads) is not seen, and without it (a loss summed where a mean "
            "is meant) they would read the same; a max_norm that lets some updates through "
            "judges their scale"
        )
    if v.penalized:
        note += (
            f"; {len(v.penalized)} update(s) held a penalty on the params beside their losses "
            "(L2 or L1, on the weights or on every param): read apart, its weight the code's"
        )
    if v.changed:
        note += (
            f"; {len(v.changed)} update(s) applied a .grad the code projected after backward() "
            "(as gradient centralization does: no clip, no factor): each read as backward() "
            "left it, the projection the code's"
        )
    if v.no_batch:
        note += (
            f"; {len(v.no_batch)} update(s) reached losses of several functions, none on targets "
            "of a batch the watch saw fetched (fetched ahead of the window, or made by the "
            "code): their weights not judged"
        )
    if v.recombined:
        note += (
            f"; {v.recombined} update(s) applied a gradient the code rebuilt from backward() "
            "passes it had zeroed (per-example clipping, gradient surgery): not judged"
        )
    if v.skipped:
        note += (
            f"; {v.skipped} backward() call(s) on other data were zeroed with no step, now and "
            "then (a step the code skipped: a gradient too large or not finite): not judged"
        )
    if v.let_go:
        note += (
            f"; {v.let_go} backward() call(s) had their gradients zeroed by the code before a "
            "step, before training began, on the same targets again or on a probe's batch (a "
            "scoring pass, SAM's first pass, an attack, a closure, a gradient norm tracked): "
            "not part of an update"
        )
    aside = sum(1 for u in seen.updates if u.aside)
    if aside:
        note += (
            f"; {aside} update(s) also moved params that no loss the watch read reached (a "
            "learnable weight of the losses, as Kendall's log-variances in exp(-s) * loss + s, "
            "or a term written by hand on params of its own): those params not judged, the "
            "rest read as the losses explain them"
        )
    if v.terms:
        note += (
            f"; {v.terms} update(s) held backward() calls that are terms of one objective "
            "(a GAN's real and fake losses on targets no batch held; each task's loss on one "
            "forward's retained graph): their weights not judged"
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
    if unreadable:
        note += (
            f"; {unreadable} update(s) applied gradients the watcher cannot take apart (sparse "
            "ones, as nn.Embedding(sparse=True) gives, or of another kind): not judged"
        )
    if blind:
        note += (
            f"; {blind} reached backward() through no loss the watcher could read (one written "
            "by hand, one whose rows the code weighs itself, or a graph that allows no second "
            "pass): not judged"
        )
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
    why = {
        "label-shape": "the code called no loss of values (F.mse_loss, F.l1_loss, "
        "F.smooth_l1_loss, F.huber_loss), the losses that broadcast",
        "short-last-batch": "no update took fewer rows than a full one",
        "mean-vs-sum": "no full update could be read",
        "micro-batch-accumulation": "no update held micro-batches of unequal counts",
        "clip-before-unscale": "no loss scaler (GradScaler) unscaled the gradients",
    }.get(pitfall, "no update could be read")
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


def _ended(seen: Watched) -> str:
    """Return how the watch ended the code ("": it ran to its end unended)."""
    if not seen.ended:
        return ""
    if seen.reached and not seen.caught:
        return " (then ended the code)"
    caught = "an except: that takes every exception, BaseException's too"
    if seen.reached:
        return (
            f" (then ended the code, which caught that end {seen.caught} time(s), {caught}, and "
            "was ended again at its next call the watch reads)"
        )
    # (each call after the end raised it again: none reached the watch, so each was caught)
    more = (
        f" more than {MOST_CAUGHT} times"
        if seen.caught >= MOST_CAUGHT
        else f" {seen.caught + 1} time(s)"
    )
    return (
        f" (then the code caught the watch's end{more}, {caught}, and went on unread, every "
        "lr held at 0)"
    )
