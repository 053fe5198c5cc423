"""One update as weights on its rows' own gradients: the ledger's coefficients.

The audit's rows are copies of two rows (the example and its contrast row), so an update's
applied gradient is read as a combination of their own gradients at the parameters the loop
holds: a weight on each distinct row, summed over its copies. A correct loop puts on each the
share of the update's rows (or counted targets) that it holds: 3 copies of one row and 1 of the
other, under a mean, weigh 0.75 and 0.25. A mean of two micro-batch means weighs 0.5 and 0.5;
a k-fold scale multiplies both. Not read: a step whose gradient also holds the step before's
rows (no zero_grad), and one that is no combination of its rows' gradients (a clip: None).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.kinds.training_loop.ledger import Step
from linreg.kinds.training_loop.row_gradients import Reference


@dataclass(frozen=True)
class Weights:
    """An update's weight on each distinct row's own gradient, beside a correct loop's."""

    rows: list[int]  # copies of each distinct row the update consumed, in order of first use
    applied: list[float]
    correct: list[float]

    def __str__(self) -> str:
        def shown(values: list[float]) -> str:
            return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"

        return (
            f"as weights on its distinct rows' own gradients ({' and '.join(map(str, self.rows))} "
            f"copies) it applied {shown(self.applied)} where a correct loop applies "
            f"{shown(self.correct)}"
        )


def weights_of(step: Step, ref: Reference, summed: bool, reading: Tensor | None) -> Weights | None:
    """Return the step's reading as weights on its distinct rows' own gradients, beside the
    correct ones; None where the rows' gradients are not independent or the reading is no
    combination of them."""
    keys = step.row_keys
    if reading is None or not keys or any(key not in ref.grads for key in keys):
        return None
    distinct = list(dict.fromkeys(keys))
    copies = [keys.count(key) for key in distinct]
    counted = [c * ref.weight(k) for k, c in zip(distinct, copies, strict=True)]
    total = sum(counted)
    correct = counted if summed else [c / max(total, 1e-12) for c in counted]
    grads = torch.stack([ref.grads[key] for key in distinct], dim=1)  # (params, rows)
    if step.live is not None:  # the params frozen at the step trained nothing there
        grads = grads * step.live.reshape(-1, 1)
    target = reading.to(grads.dtype).reshape(-1, 1)
    # float32 models: gradients parallel but for rounding count as dependent
    if int(torch.linalg.matrix_rank(grads, rtol=1e-5)) < len(distinct):
        return None
    solved = torch.linalg.lstsq(grads, target).solution
    if float((grads @ solved - target).norm()) > 1e-4 * max(float(target.norm()), 1e-12):
        return None
    return Weights(copies, [float(w) for w in solved.reshape(-1)], correct)
