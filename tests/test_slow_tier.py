"""The slow tier: tests marked `slow` are skipped, with the reason saying how to run them,
unless --slow (or CERTIFY_SLOW=1) asks for them."""

from __future__ import annotations

import pytest

SLOW_MODULE = """
import pytest

@pytest.mark.slow
def test_heavy():
    pass

def test_light():
    pass
"""


@pytest.fixture
def slow_module(pytester):
    pytester.makepyfile(test_tiers=SLOW_MODULE)
    return pytester


def test_slow_tests_skipped_by_default(slow_module, monkeypatch):
    monkeypatch.delenv("CERTIFY_SLOW", raising=False)
    res = slow_module.runpytest_inprocess("-p", "certify.plugin", "-rs")
    res.assert_outcomes(passed=1, skipped=1)
    res.stdout.fnmatch_lines(["*slow tier: run with python -m certify --slow*"])


@pytest.mark.parametrize("how", ["option", "env"])
def test_slow_tier_runs_when_asked(slow_module, monkeypatch, how):
    args = ["-p", "certify.plugin"]
    if how == "option":
        monkeypatch.delenv("CERTIFY_SLOW", raising=False)
        args.append("--slow")
    else:
        monkeypatch.setenv("CERTIFY_SLOW", "1")
    slow_module.runpytest_inprocess(*args).assert_outcomes(passed=2)
