"""The note of a watched run's Report (`note_of`): how the run was watched and read where it
differs from the plain case, each thing once: the updates watched and why the watch ended,
the counts read, the updates not judged and why, what was set aside or read apart.
"""

from __future__ import annotations

from linreg.audit.watch_counts import SAID, TORCHS
from linreg.audit.watch_ratios import near
from linreg.audit.watch_tally import Verdicts
from linreg.kinds.watched import Watched
from linreg.kinds.watched.steps import MOST_CAUGHT


def note_of(seen: Watched, v: Verdicts) -> str:
    """Return the note of a watched run's Report, judged as v."""
    unreadable = sum(1 for u in seen.updates if u.unreadable and not u.nonfinite)
    nonfinite = sum(1 for u in seen.updates if u.nonfinite)
    blind = sum(1 for u in seen.updates if u.blind and not u.unreadable)
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
    for term, key in sorted(v.terms_counted.items()):
        note += f"; its {term} term read as a mean over {SAID[key]}"
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
    if v.ramped:
        note += (
            f"; {len(v.ramped)} full update(s), before or after every other, applied a "
            "multiple of the mean of their own that no known mistake names: a weight the code "
            "ramps (a warm-up of the loss, an epoch's weight), not judged"
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
    if nonfinite:
        note += (
            f"; {nonfinite} update(s) applied gradients that are not finite (NaN or inf: a "
            "label left NaN, a mean over no element): not judged"
        )
    if blind:
        note += (
            f"; {blind} reached backward() through no loss the watcher could read (one written "
            "by hand it does not read: two whole sums reached, a mask's 0s, another length "
            "than the batch's, a penalty beside a torch loss; one whose rows the code weighs "
            "itself, a torch loss it does not read, "
            "F.triplet_margin_loss or F.ctc_loss, or a graph that allows no second pass): not "
            "judged"
        )
    return note


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
