"""The cuda tier's prompt-size rows of richardson.norm_bound (certify.sut.prompt_scale_row,
certify/test_richardson.py::test_contraction_vs_prompt_size), exercised here on CPU at a tiny
size: the pipeline runs and its check passes, and a runaway iteration planted in the SUT fails it."""

from __future__ import annotations

import pytest

from certify import sut
from certify import test_richardson as cert_r
from certify.backend import Backend
from certify.plugin import Recorder
from models import richardson as rich_mod

CPU64 = Backend("cpu", "float64")


def tiny_rows(cls: str = "free_linear") -> list[dict]:
    return [sut.prompt_scale_row(sut.prompt_scale_config(cls, M, CPU64, K=4, kappa=10.0, steps=40), n=64)
            for M in (16, 64)]


def test_rows_pass_and_are_recorded() -> None:
    rec = Recorder("richardson.norm_bound")
    rows = tiny_rows()
    cert_r.check_prompt_scale_rows("free_linear", rows, rec)
    assert [r["M"] for r in rows] == [16, 64] and all(0 < r["mean_contraction"] < 1 for r in rows)
    assert rec.examples == 128


def test_runaway_iteration_fails_the_rows(monkeypatch) -> None:
    rows_ok = tiny_rows()  # trained by clean code first (the mutant acts when the decoder runs)
    assert all(r["violations"] == 0 for r in rows_ok)
    monkeypatch.setattr(rich_mod, "residual",
                        lambda z, H, d: (H @ z.unsqueeze(-1)).squeeze(-1) - d)  # x <- x - P(d - Hx)
    with pytest.raises(AssertionError, match="violate the norm bound"):
        cert_r.check_prompt_scale_rows("free_linear", tiny_rows(), Recorder("richardson.norm_bound"))


def test_cpu_skips_the_seed_scale_rows() -> None:
    with pytest.raises(pytest.skip.Exception, match="cuda tier"):
        cert_r.test_contraction_vs_prompt_size("free_linear", CPU64, Recorder("richardson.norm_bound"))
