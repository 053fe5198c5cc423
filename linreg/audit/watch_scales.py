"""What an update's one scale over the mean (or the sum meant) names: a known mistake of the
catalogue's (a sum, means added undivided, a nominal divisor, a framework's count divided again,
a loss scaler's scale), else NO_KNOWN. watch_weights.py reads the scales; these name them."""

from __future__ import annotations

import math

from linreg.audit.watch_ratios import framework_divides, near
from linreg.audit.watch_readings import Reading
from linreg.kinds.training_loop import NO_KNOWN

__all__ = ["framework_short", "scale_named", "short_named"]


def framework_short(r: Reading, kappa: float) -> bool:
    """Return whether a shorter update applies kappa times its share of a framework's count
    (accelerate's or Lightning's nominal count on an epoch's short last window, each loss
    divided by it), which a loss's constant of the code's (a halved loss) keeps too; not
    where that constant is a full micro-batch's rows (a sum at 1: the caller's test)."""
    g, k = r.divided[1], len(r.parts)
    return g > 1 and k < g and r.relative is not None and near(r.relative[0], kappa * k / g)


def short_named(
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


def scale_named(s: float, r: Reading, meant: str = "mean", full: bool = True) -> str:
    """Return the known mistake an update's scale s (over the mean, or the sum meant) shows,
    else NO_KNOWN; full: an update of the most common count (a shorter one's accumulation
    window is short on its own account: accelerate divides it by the whole count too)."""
    # (a scale nothing undid: neither torch's unscale_ nor the code's own division, Update)
    if r.bypassed or (s >= 1024 and near(math.log2(s), round(math.log2(s)))):
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
    if k == 1 and r.steps and r.calls > 1 and near(s, r.calls):
        return (
            f"it adds up its {r.calls} mean losses, one a step of the batch's targets (loss += "
            "criterion(out, y[:, t])), without dividing by the steps, where a mean was meant"
        )
    if k > 1 and not r.one_row and r.count > k and near(s, r.count / k):
        return (
            f"it sums each micro-batch's loss over its rows or targets (reduction='sum') and "
            f"divides by the {k} micro-batches (as accelerate and Lightning divide each "
            "micro-batch's loss by the accumulation count) where a mean was meant"
        )
    return NO_KNOWN
