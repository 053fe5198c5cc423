"""Zero initialisation: fine for linear regression (a myth, not a bug), not with a hidden layer."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from linreg import accumulate, data, model
from linreg._book import NUM_EXAMPLES
from linreg.kinds.guards import seeded
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS
from linreg.kinds.twin_rows import TwinRows, follows_the_closed_form
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

HIDDEN = 4

# --- the counterexample: a hidden layer ------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


class HiddenLayer(nn.Module):
    """d -> 4 hidden units -> 1: every weight and bias zero, or torch's random init (seeded)."""

    def __init__(self, d: int, *, zero: bool, activation: nn.Module | None = None) -> None:
        super().__init__()
        with seeded(0):  # torch's init draws from the global RNG: seed it, restore it after
            self.first, self.last = nn.Linear(d, HIDDEN), nn.Linear(HIDDEN, 1)
        self.activation = activation or nn.Identity()
        if zero:
            for p in self.parameters():
                nn.init.zeros_(p)

    def forward(self, X: Tensor) -> Tensor:
        """Return the predictions (n, 1)."""
        out: Tensor = self.last(self.activation(self.first(X)))
        return out


def train_hidden_zero_init(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> list[Tensor]:
    """Mistake (with a hidden layer): every weight zero: no weight ever gets a gradient."""
    net = HiddenLayer(features.shape[1], zero=True).to(features.dtype)
    with torch.no_grad():
        net.last.bias.copy_(params[1])  # from where the linear model starts
    trainer = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(num_epochs):
        for X, y in data.data_iter(batch_size, features, labels):
            ((net(X) - y) ** 2 / 2).mean().backward()
            trainer.step()
            trainer.zero_grad()
    with torch.no_grad():  # the linear map the two layers compose to
        w = (net.last.weight @ net.first.weight).T
        b = net.last.weight @ net.first.bias + net.last.bias
    return [w, b]


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def _from_zero(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    # full batches alone: a short last batch's step is short-last-batch's to judge
    sizes = sts.sizes(max_n=8, uneven=False)
    cases = sts.twin_rows(sizes=sizes, num_epochs=st.integers(1, 2), nonzero=True)
    return cases.map(lambda c: dataclasses.replace(c, w0=(0.0,) * len(c.x), b0=0.0))


def _book() -> TwinRows:
    return TwinRows.book()


PROPERTIES = (
    Property(
        name="from w = 0 and b = 0 the loop trains as from any start (the loss is convex)",
        kind="loop",
        check=follows_the_closed_form,
        examples=_from_zero,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_hidden_zero_init, None, "loop"),),
        book=_book,
        requires=("backward-twice", "rebinding"),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Fit the book's data from zero and from random init; then a hidden layer from zero."""
    X, y = _kit.book(NUM_EXAMPLES)
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    fit = torch.linalg.lstsq(A, y).solution.reshape(-1)
    dist = {}
    for name, start in (
        ("zero", (torch.zeros(2, 1, dtype=X.dtype), torch.zeros(1, dtype=X.dtype))),
        ("random", model.init_params(2, generator=_kit.gen(1), dtype=X.dtype)),
    ):
        w, b = (p.detach().clone().requires_grad_() for p in start)
        result = accumulate.train_full_batch(
            X, y, lr=1.0, batch_size=len(X), num_epochs=100, params=(w, b)
        )
        dist[name] = float(
            (torch.cat([result.w.detach().reshape(-1), result.b.detach()]) - fit).norm()
        )
    units = {}
    for zero in (True, False):
        net = HiddenLayer(2, zero=zero, activation=nn.Tanh()).to(X.dtype)
        trainer = torch.optim.SGD(net.parameters(), lr=0.03)
        for _ in range(200):
            ((net(X) - y) ** 2 / 2).mean().backward()
            trainer.step()
            trainer.zero_grad()
        rows = net.first.weight.detach()
        units["zero" if zero else "random"] = (
            len(torch.unique(rows, dim=0)),
            float(((net(X) - y) ** 2 / 2).mean().detach()),
        )
    ok = max(dist.values()) < 1e-6 and units["zero"][0] == 1 < units["random"][0]
    ok = ok and units["zero"][1] > 10 * units["random"][1]
    return Evidence(
        id="zero-init",
        expected=(
            "a myth for linear regression: from w = 0 full-batch GD reaches the same least-squares "
            f"fit as from the book's random init; with a hidden layer of {HIDDEN} tanh units, zero "
            "init keeps every unit identical and the loss stays >= 10x random init's"
        ),
        observed=(
            f"distance to lstsq after 100 epochs: from zero {dist['zero']:.1e}, from random "
            f"{dist['random']:.1e}; hidden layer after 200 steps: distinct units "
            f"{units['zero'][0]} (zero init) vs {units['random'][0]} (random), loss "
            f"{units['zero'][1]:.3g} vs {units['random'][1]:.3g}"
        ),
        ok=ok,
        figures={"distance_to_lstsq": dist, "hidden_units": units},
    )


PITFALL = Pitfall(
    id="zero-init",
    title="Zero initialisation is fine here (a myth, not a bug)",
    explanation=(
        "For linear regression the loss is convex (a quadratic in w and b): from w = 0 gradient "
        "descent reaches the same least-squares fit as from the book's N(0, 0.01) init, so "
        "zero init is no mistake here. With a hidden layer it is one: every unit gets the same "
        "gradient, so units that start equal stay equal, and all-zero weights get no gradient at "
        "all. The catalogue keeps it as a myth: the property holds for linreg, and the hidden "
        "layer is its counterexample."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=20,
)
