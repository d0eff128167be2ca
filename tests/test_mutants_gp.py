"""The gp.primal_dual certificate can fail: mutants planted in the SUT (monkeypatched,
never by editing files) must make it fail.  Each test calls the certificate as pytest
would, the hypothesis search included.
"""

from __future__ import annotations

import re

import pytest
import torch

from certify import test_gp as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import gp as gp_mod

CPU64 = Backend("cpu", "float64")


def _run() -> None:
    cert.test_gp_primal_dual(backend=CPU64, record=Recorder("gp.primal_dual"))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _must_fail(match: str) -> None:
    """The certificate fails, and every distinct failure hypothesis found is an
    AssertionError whose message matches `match` (several appear as an ExceptionGroup)."""
    try:
        _run()
    except (AssertionError, BaseExceptionGroup) as exc:
        leaves = _leaves(exc)
        assert all(isinstance(e, AssertionError) and re.search(match, str(e)) for e in leaves), leaves
    else:
        pytest.fail("the certificate passed on a mutant")


def test_dual_without_noise_fails(monkeypatch):
    """sigma^2 dropped from the dual form: K instead of K + s^2 I."""
    monkeypatch.setattr(gp_mod.FiniteRankGP, "dual_system", lambda self, K: K)
    _must_fail("mean_dual|Cholesky failed")


def test_prior_not_inverted_fails(monkeypatch):
    """Lambda^{-1} replaced by Lambda in A."""
    def primal_system(self, Phi, y):
        s2 = self.noise_var()
        return torch.diag(self.lam) + (Phi.T @ Phi) / s2, (Phi.T @ y) / s2

    monkeypatch.setattr(gp_mod.FiniteRankGP, "primal_system", primal_system)
    _must_fail("mean_primal")


def test_dual_covariance_sign_fails(monkeypatch):
    """Covariance mutant: k(q,q) + k_q^T M^-1 k_q instead of the difference."""
    monkeypatch.setattr(gp_mod.FiniteRankGP, "dual_cov", lambda self, kqq, kq, W: kqq + kq @ W)
    _must_fail("cov_dual")


def test_primal_covariance_prior_only_fails(monkeypatch):
    """Covariance mutant: the prior covariance Phi_q Lambda Phi_q^T in place of the posterior's."""
    monkeypatch.setattr(gp_mod.FiniteRankGP, "primal_cov", lambda self, Phiq, W: (Phiq * self.lam) @ Phiq.T)
    _must_fail("cov_primal")
