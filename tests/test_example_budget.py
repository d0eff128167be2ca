"""Every hypothesis property of the certificates runs at least 100 examples under the ci profile
(issue 6: speed comes from caching and cheaper SUT calls, never from fewer examples)."""

from __future__ import annotations

import importlib
import inspect
import pathlib

from certify import profiles

MIN_EXAMPLES = 100
CERTIFY = pathlib.Path(__file__).resolve().parent.parent / "certify"


def hypothesis_properties() -> list[tuple[str, object]]:
    profiles.load("ci")
    found = []
    for path in sorted(CERTIFY.glob("test_*.py")):
        module = importlib.import_module(f"certify.{path.stem}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if getattr(fn, "is_hypothesis_test", False) and fn.__module__ == module.__name__:
                found.append((f"{path.stem}::{name}", fn))
    return found


def test_ci_profile_budget() -> None:
    from hypothesis import settings

    profiles.load("ci")
    assert settings.default.max_examples >= MIN_EXAMPLES


def below_budget(props: list[tuple[str, object]]) -> dict[str, int]:
    return {name: fn._hypothesis_internal_use_settings.max_examples for name, fn in props
            if fn._hypothesis_internal_use_settings.max_examples < MIN_EXAMPLES}


def test_every_property_runs_the_budget() -> None:
    props = hypothesis_properties()
    assert len(props) >= 40, f"only {len(props)} hypothesis properties found under {CERTIFY}"
    low = below_budget(props)
    assert not low, f"properties below {MIN_EXAMPLES} examples under the ci profile: {low}"


def test_budget_check_can_fail() -> None:
    """A per-test @settings that lowers the budget is caught."""
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=MIN_EXAMPLES - 1)
    @given(st.integers())
    def lowered(i: int) -> None:
        pass

    assert below_budget(hypothesis_properties() + [("planted::lowered", lowered)]) == {
        "planted::lowered": MIN_EXAMPLES - 1}
