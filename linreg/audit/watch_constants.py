"""The one scale on a run's full updates that no known mistake names (0.5 * F.mse_loss, a sum
over a row's features): the loss's own constant, every update read relative to it, unless a
shorter update shows it growing with the rows (a sum: mean-vs-sum) or its micro-batches each
summed and divided by the window's count; where no shorter update tells, mean-vs-sum is not
judged (Verdicts.constants). watch_weights.py reads the updates relative to what it returns."""

from __future__ import annotations

from linreg.audit.watch_ratios import alike, near
from linreg.audit.watch_readings import Reading
from linreg.audit.watch_scales import framework_short
from linreg.audit.watch_tally import Constant, Grown, Verdicts

__all__ = ["constant_of"]


def constant_of(
    readings: list[Reading],
    fulls: list[Reading],
    window: tuple[float, int],
    kappa: float,
    s_full: float,
    v: Verdicts,
    term: str,
) -> tuple[float, float, bool]:
    """Return the scale each update is read relative to (kappa: the full updates' own where
    it stands, 1 where a shorter update named it a sum), the full ones' scale left to read
    (s_full, 1 once taken as a constant), and whether no shorter update told it from a sum."""
    full, parts_full = window  # a full update's count, and the first full one's micro-batches
    of_term = f", its {term} term" if term else ""
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
            and not (framework_short(r, kappa) and not near(kappa, full / parts_full))
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
                and not framework_short(r, kappa)
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
    return kappa, s_full, unconfirmed
