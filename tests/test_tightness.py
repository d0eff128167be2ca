"""The report's tolerance-tightness summary (certify.report.tolerance_tightness)."""

from __future__ import annotations

from certify.report import tightness_table, tolerance_tightness


def test_largest_ratio_and_band() -> None:
    ev = {"max_error_over_tolerance": 0.02, "gp.max_error_over_tolerance": 0.4, "max_bound_ratio": 0.9,
          "flag_over_tolerance": True, "reason": "x"}
    t = tolerance_tightness(ev)
    assert t == {"max_error_over_tolerance": 0.4, "metric": "gp.max_error_over_tolerance", "band": "tight", "ratios": 2}
    assert tolerance_tightness({"a_over_tolerance": 1e-5})["band"] == "loose"
    assert tolerance_tightness({"a_over_tolerance": 1e-2})["band"] == "moderate"


def test_claims_without_tolerances() -> None:
    assert tolerance_tightness({"max_sin_over_yws_bound": 0.5}) is None
    entries = [{"id": "a", "status": "verified", "tolerance_tightness": tolerance_tightness({"e_over_tolerance": 0.3})},
               {"id": "b", "status": "verified", "tolerance_tightness": None},
               {"id": "c", "status": "unchecked", "tolerance_tightness": None}]
    text = "\n".join(tightness_table(entries))
    assert "| a | 0.3 | tight |" in text and "| b |" not in text and "| c |" not in text
    assert text.endswith("statistical tests): b.")
