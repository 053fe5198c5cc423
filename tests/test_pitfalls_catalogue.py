"""Every property of the catalogue: it holds for linreg's own code and is refuted for each wrong
variant it names. These tests are written once, over the catalogue; a pitfall's own test file
holds only what is particular to it."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linreg.pitfalls
from linreg import audit
from linreg.pitfalls import (
    CATALOGUE,
    PROPERTIES,
    VARIANTS,
    Options,
    Property,
    Target,
    Variant,
)
from tests.refute import refutes

HOLDS = [(prop, target) for prop in PROPERTIES for target in prop.holds_for]
OWN = [(prop, target) for prop, target in HOLDS if not target.oracle]
ORACLE = [(prop, target) for prop, target in HOLDS if target.oracle]
REFUTED = [(prop, variant) for prop in PROPERTIES for variant in prop.refuted_by]


def ident(case: Any) -> str:
    prop, who = case
    return f"{prop.pitfall}: {prop.name} [{who.name if isinstance(who, Variant) else who}]"


def marks(prop: Property) -> list[pytest.MarkDecorator]:
    # properties whose examples start processes are the distributed ones (the process group
    # starts once a session: tests/conftest.py)
    if prop.kind == "ddp-worker":
        return [pytest.mark.distributed, pytest.mark.heavy]
    return []


def applicable(prop: Property, target: Target) -> None:
    reason = prop.applies(target.options)
    if reason is not None:
        pytest.skip(reason)


@functools.cache
def examples(prop: Property, options: Options) -> st.SearchStrategy[Any]:
    """Build each property's strategy once, not once per example."""
    return prop.examples(options)


@pytest.mark.parametrize("case", [pytest.param(c, marks=marks(c[0]), id=ident(c)) for c in OWN])
@given(data=st.data())
def test_pitfalls_property_holds_for_linreg(case: tuple[Property, Target], data: Any) -> None:
    prop, target = case
    applicable(prop, target)
    prop.check(target, data.draw(examples(prop, target.options), label="example"))


# torch's own code (DataLoader, optim.SGD, nn.MSELoss, the concise loop) checks the property
# itself: a third of the examples is plenty for a sanity check of the statement
@pytest.mark.parametrize("case", [pytest.param(c, id=ident(c)) for c in ORACLE])
@settings(max_examples=max(10, settings.default.max_examples // 3))
@given(data=st.data())
def test_pitfalls_property_holds_for_torchs_own_code(
    case: tuple[Property, Target], data: Any
) -> None:
    prop, target = case
    applicable(prop, target)
    prop.check(target, data.draw(examples(prop, target.options), label="example"))


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=marks(c[0]), id=ident(c)) for c in HOLDS if c[0].book is not None],
)
def test_pitfalls_property_holds_on_the_books_example(case: tuple[Property, Target]) -> None:
    prop, target = case
    applicable(prop, target)
    assert prop.book is not None
    prop.check(target, prop.book())


@pytest.mark.parametrize("case", [pytest.param(c, marks=marks(c[0]), id=ident(c)) for c in REFUTED])
def test_pitfalls_property_is_refuted_by_the_wrong_variant(case: tuple[Property, Variant]) -> None:
    prop, variant = case
    target = variant.target
    applicable(prop, target)
    refutes(prop.examples(target.options), lambda example: prop.check(target, example))


def test_pitfalls_every_property_holds_somewhere_and_has_teeth() -> None:
    for prop in PROPERTIES:
        assert prop.holds_for, f"{prop.pitfall}: {prop.name} holds for nothing of linreg's"
        assert prop.refuted_by, f"{prop.pitfall}: {prop.name} has no variant to refute"
        for variant in prop.refuted_by:
            assert variant.kind == prop.kind, (prop.name, variant.name)
        for target in prop.holds_for:
            assert target.kind == prop.kind, (prop.name, str(target))


def test_pitfalls_every_property_target_and_variant_is_of_a_registered_kind() -> None:
    from linreg.kinds import INTERNAL_KINDS, KINDS

    assert not set(KINDS) & set(INTERNAL_KINDS)
    for prop in PROPERTIES:
        kinds = {prop.kind} | {t.kind for t in prop.holds_for} | {v.kind for v in prop.refuted_by}
        assert kinds <= set(KINDS) | set(INTERNAL_KINDS), (prop.pitfall, prop.name, kinds)
    used = {prop.kind for prop in PROPERTIES}
    assert set(INTERNAL_KINDS) <= used, "an internal kind no property uses"


def test_pitfalls_every_pitfall_has_a_property_and_a_variant() -> None:
    assert len({p.id for p in CATALOGUE}) == len(CATALOGUE)
    for pitfall in CATALOGUE:
        assert pitfall.properties and pitfall.variants, pitfall.id
        assert all(prop.pitfall == pitfall.id for prop in pitfall.properties)


def test_pitfalls_every_wrong_variant_is_importable_by_name() -> None:
    for name, variant in VARIANTS.items():
        assert getattr(linreg.pitfalls, name) is variant.func
        assert variant.mistake, f"{name} has no docstring quoting its mistake"
    assert linreg.pitfalls.sgd_rebinding is VARIANTS["sgd_rebinding"].func  # the example


# --- the audit runs the same properties ---------------------------------------------------------

AUDITED = [(prop, v) for prop, v in REFUTED if prop.kind in audit.KINDS]


@pytest.mark.parametrize(
    "variant",
    # each variant once, with the pitfall of the first property that refutes it
    [pytest.param((p, v), id=v.name) for p, v in {v.name: (p, v) for p, v in AUDITED}.values()],
)
def test_pitfalls_audit_fails_each_wrong_variant_naming_its_pitfall(
    variant: tuple[Property, Variant],
) -> None:
    prop, v = variant
    report = audit.run(v.target, max_examples=10, shrink=False)
    assert not report.ok
    assert prop.pitfall in {r.pitfall for r in report.failures}, str(report)
    with pytest.raises(linreg.checks.CheckFailed, match=prop.pitfall):
        report.raise_for_failures()


@pytest.mark.parametrize("kind", audit.KINDS)
def test_pitfalls_audit_passes_every_own_target_of_each_kind(kind: str) -> None:
    targets = {str(t): t for prop in PROPERTIES if prop.kind == kind for t in prop.holds_for}
    for target in targets.values():
        report = audit.run(target, max_examples=5)
        assert report.ok, str(report)
        assert {r.verdict for r in report.results} <= {"pass", "skip"}
