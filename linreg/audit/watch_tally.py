"""What the judging of a watched run holds so far (watch_verdicts.py): each pitfall's first
failure and the updates it names, the updates each property judged, and what was read but
not judged (constants of a loss's own, coefficients of the code's, updates unread)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from linreg.audit.watch_ratios import framework_divides, near


@dataclass(frozen=True)
class Constant:
    """A scale on every full update of a term that no known mistake names: the loss's own."""

    term: str  # "" where each backward() reached one loss
    scale: float
    full: float  # a full update's count
    unconfirmed: bool  # no shorter update told it from a sum: mean-vs-sum not judged
    shared: bool = False  # a shorter update showed it growing with the rows as another
    # term's nominal divisor shrank that one: the divisor, or a sum besides (not judged)
    # the framework and its count where the scale is 1 / that count (2: a halved loss, or one
    # divided again by the count written as a product), else ""
    framework: str = ""
    short: bool = False  # shorter updates were read, and told nothing of it
    other: bool = False  # one of them applied another multiple: neither it nor one grown with
    # its rows, which no known mistake names (a sum divided by each window's micro-batches)


class Grown(NamedTuple):
    """A term's shorter update whose scale grows with the rows on top of the coefficient its
    full updates keep (Verdicts.grown_on names it, or not)."""

    term: str
    j: int  # the update
    ratio: float  # its scale over the full ones': its share of their count
    kappa: float  # the full ones' scale
    full: float  # their count
    message: str


class Shortfall(NamedTuple):
    """A term's shorter update that applies the full ones' coefficient times its share of
    them: a fixed coefficient per micro-batch (watch_terms.name_shortfalls names it)."""

    kind: str  # "nominal": the full ones apply the mean; "undivided": it does; else "either"
    j: int  # the update
    at: str  # where, in words
    ratio: float  # its share of the full ones' coefficient
    what: str  # the count it was divided by, beside the count it took
    coefficient: float  # the full ones' coefficient


@dataclass
class Verdicts:
    failed: dict[str, str] = field(default_factory=dict)  # the first failure of each pitfall
    judged: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # updates
    failing: dict[str, list[int]] = field(default_factory=dict)  # the updates each names
    ratios: dict[int, float | None] = field(default_factory=dict)  # per update: one scale
    at: int | None = None  # the update being judged
    unread: set[int] = field(default_factory=set)  # updates whose weights could not be read
    terms: int = 0  # updates whose micro-batches are terms of one objective: weights not judged
    # terms a number weighed on their way to a backward()'s root in some update, or something
    # else stood there (Column.plain): a count that is 1 in one update is one's in another
    weighed: set[str] = field(default_factory=set)
    let_go: int = 0  # backward() calls the code zeroed before a step, on its own account
    skipped: int = 0  # backward() calls of steps the code skipped now and then
    recombined: int = 0  # updates whose .grad the code rebuilt from passes it had zeroed
    blind_clipped: int = 0  # updates right only up to a clip by hand that clipped every one
    penalized: set[int] = field(default_factory=set)  # updates read beside a penalty on the
    # params (L2 or L1 in the loss), its weight the code's
    changed: set[int] = field(default_factory=set)  # updates read as backward() left .grad,
    # which the code projected after (gradient centralization)
    # per term (one loss: ""): a scale on its full updates taken as the loss's own, their
    # count, and whether no shorter update told it from a sum (mean-vs-sum not judged there)
    constants: list[Constant] = field(default_factory=list)
    no_batch: set[int] = field(default_factory=set)  # updates of several terms, none of whose
    # targets was a fetched batch's (fetched ahead, or made by the code): weights not judged
    free: list[str] = field(default_factory=list)  # terms whose weights are coefficients of the
    # code's, update by update: their functions reduced as meant (mean-vs-sum not judged there);
    # "": the one loss's, whose full updates each applied a multiple of their own (changing:
    # the least and the most)
    changing: tuple[float, float] | None = None
    within: bool = False  # changing: each micro-batch's multiple, not each full update's
    # shorter updates so near a full one's count that a nominal divisor there is within the
    # run's precision of the mean (63 of 64 at bfloat16's): their count, the full one's and
    # the tolerance they were read to; short-last-batch not judged on them
    indistinct: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    # the one loss's full updates before (or after) the others, each applying a multiple of
    # its own that no known mistake names: a weight the code ramps (a warm-up), not judged
    ramped: set[int] = field(default_factory=set)
    # another count than the one read (counted) under which the updates apply one multiple too,
    # every element's one of the two (watch_counts.meant): mean-vs-sum not judged
    either: str = ""
    # per such term, the shorter updates judged against its full ones' one coefficient
    shorter: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    # such a term's shorter updates that apply a fixed coefficient per micro-batch, named once
    shortfalls: list[Shortfall] = field(default_factory=list)
    partial: set[int] = field(default_factory=set)  # updates with a term no batch's targets
    # fed (a teacher's outputs, a penalty): its weight never judged
    meant: str = "mean"  # what a correct update applies of its rows' gradients: or "sum"
    counted: str = ""  # the count a loss the code reduced itself divides by, where not its
    # targets (watch_counts.meant)
    # per other count ("": torch's), the updates read under it, where they applied the mean
    # there alone (two objectives in turn, each averaged over a count of its own)
    counted_alone: dict[str, int] = field(default_factory=dict)
    # the terms of several read under another count their calls divide by (terms_meant)
    terms_counted: dict[str, str] = field(default_factory=dict)
    # updates of unequal micro-batches whose weights another pitfall named (their means added
    # up undivided: mean-vs-sum, whose fix divides by the update's count): not judged here
    taken: set[int] = field(default_factory=set)
    # per update, the ratios at which a term that applies the mean on its full updates
    # applies it there (a nominal divisor, short-last-batch); and each term's scale that grows
    # with the rows on top of a coefficient of the code's, named mean-vs-sum after every term
    # is read unless such a divisor, at its ratio on the same update, explains it (grown_on)
    nominal_at: dict[int, list[float]] = field(default_factory=dict)
    grown: list[Grown] = field(default_factory=list)
    # per update, each term whose function took the mean itself: its name, its scale over
    # the mean of its rows (its coefficient) and its micro-batches (undivided)
    coefficients: dict[int, list[tuple[str, float, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    # per update, each term the code divided by a framework's count too (Reading.again): its
    # name, micro-batches and the framework with its count
    again: dict[int, list[tuple[str, int, tuple[str, int]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def divided_again(self, updates: int) -> None:
        """Name the first update of k micro-batches whose every term the code divided by the
        count k a framework's backward() divides it by too (the division seen twice on its way
        to the root: (ce + kl) / k inside accelerate's accumulate(), from k = 3, Observer's):
        the terms' scale is the code's coefficient, so it does not tell, but the division
        itself is seen (a distillation's KL term beside its cross-entropy hid it)."""
        for j, terms in sorted(self.again.items()):
            if len(terms) < len(self.coefficients.get(j, [])):
                continue  # a term of the update not divided again
            if all(g > 1 and k == g for _, k, (_, g) in terms):
                by, g = terms[0][2]
                self.at = j
                names = ", ".join(dict.fromkeys(t for t, _, _ in terms))
                self.fail(
                    "mean-vs-sum",
                    f"update {j + 1} of {updates} ({g} micro-batches, its "
                    f"{'terms' if len(terms) > 1 else 'term'} {names}): it "
                    f"divides each micro-batch's loss by the accumulation count {g} itself, "
                    f"where {framework_divides(by, g)} already: each term applies 1 / {g} of "
                    "what the code weighs it by",
                )
                return

    def undivided(self, updates: int) -> None:
        """Name the first update whose terms, 2 or more, each apply k times the mean of its
        rows over its k micro-batches (k >= 2), where another update's terms each do so over
        another count of micro-batches (a short window): each term's micro-batches' means
        added up undivided (an accumulation window never divided by its count). On windows
        of one count alone, k may be the code's own weight on each term (task weights of 2 at
        k = 2, a loss summed over 2 views): not named."""
        counts = {
            j: terms[0][2]
            for j, terms in self.coefficients.items()
            if len(terms) > 1 and len({k for _, _, k in terms}) == 1
            and all(near(s, k) for _, s, k in terms)
        }  # fmt: skip
        for j, k in sorted(counts.items()):
            if k > 1 and any(other != k for other in counts.values()):
                self.at = j
                names = ", ".join(dict.fromkeys(t for t, _, _ in self.coefficients[j]))
                self.fail(
                    "mean-vs-sum",
                    f"update {j + 1} of {updates}: each of its terms ({names}) applies {k} "
                    f"times the mean of its rows over its {k} micro-batches, and the updates of "
                    "another count of micro-batches as many times as they hold: it adds up its "
                    "micro-batches' mean losses without dividing (divide each by the window's "
                    "count of micro-batches)",
                )
                return

    def grown_on(self) -> None:
        """Name each term's growth with the rows (grown) that no other term's nominal
        divisor, at the same ratio on the same update, explains: 0.3 * ce_sum / batch_size
        beside mse_sum / batch_size is one divisor, the nominal one, as likely as a sum times
        0.3 / batch_size (the same numbers): mean-vs-sum not judged on that term, then."""
        for term, grown in itertools.groupby(self.grown, key=lambda g: g.term):
            named = False
            for g in grown:
                if not any(near(g.ratio, x) for x in self.nominal_at.get(g.j, [])):
                    self.at, named = g.j, True
                    self.fail("mean-vs-sum", g.message)
            if not named:
                self.constants.append(Constant(term, g.kappa, g.full, True, shared=True))
        self.grown = []

    def fail(self, pitfall: str, message: str) -> None:
        self.failed.setdefault(pitfall, message)
        if self.at is not None:
            self.failing.setdefault(pitfall, []).append(self.at)
