"""certify.figures.render_all draws the same files in its process pool as serially."""

from __future__ import annotations

import numpy as np
import pytest

from certify import figures


class Res:
    def __init__(self, figs):
        self.figures = figs


def results():
    # median_error as a numpy array: the hand-off to the child processes must carry it exactly
    rich = {"cls": "free_linear", "K": 8, "n": 4, "median_error": np.array([1.0, 0.5, 0.2537]), "q10_error": [0.9, 0.4, 0.2],
            "q90_error": [1.1, 0.6, 0.3], "median_bound": [1.0, 0.7, 0.49]}
    eb = {"law": "bernoulli", "n": 64, "trials": 1000, "delta": [0.01, 0.1], "failure_rate": [0.0, 0.02],
          "upper_limit": [0.02, 0.15]}
    gap = {"L": 1, "steps": [0, 1, 2], "flexformer": [1.0, 0.5, 0.3], "free_P": [1.0, 0.6, 0.35],
           "free_P_label": "free P", "free_P_rescaled": [1.0, 0.55, 0.31], "best_c": 1.1, "gap": [0.0, 0.17, 0.14],
           "gap_rescaled": [0.0, 0.09, 0.03], "max_gap": 0.17, "best_gap": float("nan")}  # NaN must survive
    return {"richardson.norm_bound": Res([{"name": "richardson_error_vs_bound", "data": rich}]),
            "eb.coverage": Res([{"name": "eb_coverage", "data": eb}]),
            "flexformer.global_theory": Res([{"name": "global_theory_gap", "data": gap}])}  # a figs_* renderer


def differing(tmp_path) -> list[str]:
    """Names of the figures whose pooled PNG differs from the serial one."""
    serial = figures.render_all(results(), tmp_path / "serial", workers=1)
    pooled = figures.render_all(results(), tmp_path / "pool", workers=2)
    assert [p.name for p in serial] == [p.name for p in pooled] == [
        "eb_coverage.png", "global_theory_gap.png", "richardson_error_vs_bound.png"]
    return [a.name for a, b in zip(serial, pooled) if a.read_bytes() != b.read_bytes()]


def test_pool_and_serial_write_the_same_figures(tmp_path) -> None:
    assert differing(tmp_path) == []


def test_lossy_hand_off_is_caught(tmp_path, monkeypatch) -> None:
    """Mutant: the JSON hand-off rounds arrays to one decimal; the pooled figure then differs."""
    monkeypatch.setattr(figures, "_plain", lambda x: np.round(np.asarray(x, dtype=float), 1).tolist())
    assert differing(tmp_path) == ["richardson_error_vs_bound.png"]


def test_unknown_figure_is_an_error(tmp_path) -> None:
    with pytest.raises(KeyError, match="no renderer"):
        figures.render_all({"x": Res([{"name": "no_such_figure", "data": {}}])}, tmp_path, workers=2)
