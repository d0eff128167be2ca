"""The eig.power_iteration_artifact certificate can fail: mutants planted in models.ep.eig
(monkeypatched, never by editing files) must make the matching check of certify/test_eig.py
raise AssertionError (or GoldenDrift, itself an AssertionError, for a pinned number)."""

from __future__ import annotations

import pytest
import torch

from certify import test_eig as cert
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models.ep import eig
from properties import eig as pe

CPU64 = Backend("cpu", "float64")
CLAIM = cert.CLAIM

BIG = pe.SymCase(32, 11, 0.8, 0.2, 0.05, 0)
# outlying extremes (wide end gaps) at n = 32: they converge early, after which plain Lanczos
# loses orthogonality (||Q^T Q - I|| ~ 0.6 measured) and k = n no longer gives the spectrum
OUTLIERS = pe.SymCase(32, 0, 0.5, 0.5, 0.4, 0)
NON_NORMAL = pe.NonNormalCase(16, 5, "pair", 0.2, 0.5, 0)


def rec() -> Recorder:
    return Recorder(CLAIM)


def no_golden(*args, **kwargs) -> None:
    return None


def golden_of(backend: Backend):
    store = GoldenStore(GOLDEN_DIR, backend.name)

    def golden(family, metrics, rtol, atol=0.0, seeds=None, seed=None, setup=None):
        store.check(family, metrics, rtol, atol, seeds, {}, setup)

    return golden


def _sym(case: pe.SymCase):
    return cert._sut_matrix(case.matrix(), CPU64)


def test_clean_sut_passes_the_checks_used_below():
    """The unmutated SUT passes every check the mutants below are expected to trip."""
    T, A = _sym(BIG)
    cert.check_plain_artifact(A, T, CPU64, rec(), BIG)
    cert.check_fixes(A, T, CPU64, rec(), BIG)
    T1, A1 = _sym(OUTLIERS)
    cert.check_fixes(A1, T1, CPU64, rec(), OUTLIERS)
    T2, A2 = cert._sut_matrix(NON_NORMAL.matrix(), CPU64)
    cert.check_arnoldi(A2, T2, CPU64, rec(), NON_NORMAL, NON_NORMAL.n)
    cert.check_arnoldi(A2, T2, CPU64, rec(), NON_NORMAL, 8)
    cert.test_ep_numerical_abscissa_sign(cert.JACOBIANS[0], backend=CPU64, record=rec(), golden=no_golden)


def test_shift_ignored_makes_shifted_power_iteration_plain(monkeypatch):
    """Shifted power iteration with the shift dropped is plain power iteration: it converges to
    lambda_min, which the fix check rejects."""
    monkeypatch.setattr(eig, "shifted_apply", lambda Av, v, shift: Av)
    with pytest.raises(AssertionError, match="shifted power iteration.*lambda_max"):
        cert.test_canonical_counterexample("sym8", backend=CPU64, record=rec(), golden=no_golden)


def test_zero_gershgorin_shift_fails(monkeypatch):
    """A Gershgorin shift of 0 (the dense wrapper's shift rule broken) is plain power iteration too."""
    monkeypatch.setattr(eig, "gershgorin_shift", lambda A: 0.0)
    T, A = _sym(pe.SymCase(8, 2, 0.5, 0.3, 0.2, 0))
    with pytest.raises(AssertionError, match=r"shifted power iteration \(shift 0\) .* of lambda_max"):
        cert.check_fixes(A, T, CPU64, rec(), "gershgorin-0", shift="gershgorin")


def test_lanczos_without_reorthogonalization_fails(monkeypatch):
    """Plain Lanczos (no reorthogonalization) at n = 32 with outlying extremes: once they converge
    the basis loses orthogonality and k = n no longer reproduces the spectrum (ghost copies)."""
    monkeypatch.setattr(eig, "reorthogonalize", lambda w, Q: w)
    T, A = _sym(OUTLIERS)
    with pytest.raises(AssertionError, match=r"Lanczos \(k = n\)"):
        cert.check_fixes(A, T, CPU64, rec(), OUTLIERS)


def test_lanczos_truncated_to_one_vector_fails(monkeypatch):
    """A Krylov space truncated to k = 1 returns the start vector's Rayleigh quotient."""
    real = eig.check_krylov_dim
    monkeypatch.setattr(eig, "check_krylov_dim", lambda k, n: real(1, n))
    with pytest.raises(AssertionError, match="Lanczos did not converge"):
        cert.test_canonical_counterexample("sym8", backend=CPU64, record=rec(), golden=no_golden)


def test_lanczos_reporting_the_wrong_end_fails(monkeypatch):
    """Ritz values returned in descending order: `lambda_max` reads the smallest one."""
    real = eig.tridiagonal_ritz

    def flipped(T):
        w, S = real(T)
        return w.flip(0), S.flip(1)

    monkeypatch.setattr(eig, "tridiagonal_ritz", flipped)
    with pytest.raises(AssertionError, match="Lanczos theta_max .* is not within"):
        cert.test_canonical_counterexample("rot2", backend=CPU64, record=rec(), golden=no_golden)


def test_arnoldi_returning_the_wrong_end_fails(monkeypatch):
    """Ritz values ordered smallest modulus first: the 'leading' Ritz value is the wrong end."""
    real = eig.ritz_order
    monkeypatch.setattr(eig, "ritz_order", lambda theta, which: real(theta, which).flip(0))
    T, A = cert._sut_matrix(NON_NORMAL.matrix(), CPU64)
    with pytest.raises(AssertionError, match="Arnoldi leading Ritz value"):
        cert.check_arnoldi(A, T, CPU64, rec(), NON_NORMAL, NON_NORMAL.n)


def test_arnoldi_dropped_projection_coefficients_fails(monkeypatch):
    """Gram-Schmidt that orthogonalizes but stores no projection coefficients in H (only the
    subdiagonal survives): the Ritz values are those of a shift-free bidiagonal, not of A."""
    def no_coefficients(w, V):
        h = V.mT @ w
        return w - V @ h, torch.zeros_like(h)

    monkeypatch.setattr(eig, "orthogonalize", no_coefficients)
    T, A = cert._sut_matrix(NON_NORMAL.matrix(), CPU64)
    with pytest.raises(AssertionError, match="Arnoldi .*did not converge|Arnoldi leading Ritz value|Ritz value .* matches no|misses eigenvalue"):
        cert.check_arnoldi(A, T, CPU64, rec(), NON_NORMAL, NON_NORMAL.n)


def test_map_operator_without_eps_fails(monkeypatch):
    """Arnoldi run on I + J instead of M = I + eps J: mu = (lambda - 1)/eps is off by 1/eps."""
    monkeypatch.setattr(eig, "map_operator", lambda jv, e: (lambda v: v + jv(v)))
    with pytest.raises(AssertionError, match="Arnoldi on M: leading"):
        cert.test_ep_numerical_abscissa_sign(cert.JACOBIANS[0], backend=CPU64, record=rec(), golden=no_golden)


def test_norm_estimate_instead_of_rayleigh_quotient_fails(monkeypatch):
    """The estimate ||A v|| / ||v|| (sign lost) instead of the Rayleigh quotient: plain power
    iteration then reports +|lambda_min|, which is neither end, so its residual never falls."""
    monkeypatch.setattr(eig, "rayleigh_quotient",
                        lambda v, Av: float(torch.linalg.vector_norm(Av) / torch.linalg.vector_norm(v)))
    with pytest.raises(AssertionError, match="plain power iteration did not meet its stopping rule"):
        cert.test_canonical_counterexample("rot2", backend=CPU64, record=rec(), golden=no_golden)


def test_under_reported_residual_fails(monkeypatch):
    """A residual reported 100 times too small (the stopping rule then fires early)."""
    real = eig.residual_norm
    monkeypatch.setattr(eig, "residual_norm", lambda v, Av, theta: real(v, Av, theta) / 100)
    with pytest.raises(AssertionError, match="reported residual"):
        cert.test_canonical_counterexample("sym8", backend=CPU64, record=rec(), golden=no_golden)


def test_extra_power_steps_fail_the_rate_bound(monkeypatch):
    """A stopping rule that demands 1000x the accuracy still converges to the right end, but
    takes more steps than the convergence rate guarantees for the requested tolerance."""
    real = eig.power_converged
    monkeypatch.setattr(eig, "power_converged", lambda r, scale, tol: real(r, scale, None if tol is None else tol / 1e3))
    with pytest.raises(AssertionError, match="convergence rate"):
        cert.test_canonical_counterexample("sym8", backend=CPU64, record=rec(), golden=no_golden)


def test_numerical_abscissa_dense_wrong_end_fails(monkeypatch):
    """The dense numerical abscissa reading eigvalsh's first (smallest) entry."""
    real = eig.dense_eigvalsh
    monkeypatch.setattr(eig, "dense_eigvalsh", lambda A: real(A).flip(0))
    with pytest.raises(AssertionError, match="dense eigvalsh omega"):
        cert.test_ep_numerical_abscissa_sign(cert.JACOBIANS[0], backend=CPU64, record=rec(), golden=no_golden)


def test_spectral_abscissa_as_numerical_abscissa_fails(monkeypatch):
    """spectral_abscissa computed from Sym(J) (omega) instead of J (alpha)."""
    real = eig.spectral_abscissa
    monkeypatch.setattr(eig, "spectral_abscissa", lambda A: real(eig.sym_part(A)))
    with pytest.raises(AssertionError, match="spectral_abscissa"):
        cert.test_ep_numerical_abscissa_sign(cert.JACOBIANS[0], backend=CPU64, record=rec(), golden=no_golden)


def test_sym_matvec_without_transpose_fails(monkeypatch):
    """Sym(J) v built as J v (the VJP dropped): power iteration then runs on J itself."""
    monkeypatch.setattr(eig, "sym_matvec", lambda jv, jtv: jv)
    with pytest.raises(AssertionError, match=r"plain power iteration on Sym\(J\) did not converge"):
        cert.test_ep_numerical_abscissa_sign(cert.JACOBIANS[0], backend=CPU64, record=rec(), golden=no_golden)


def test_doubled_gershgorin_shift_drifts_golden(monkeypatch):
    """A shift twice the Gershgorin bound is still a valid PSD shift: shifted power iteration
    still converges to lambda_max within its rate bound (computed for the shift it used), so only
    the pinned iteration count of the canonical counterexample sees the slower rate."""
    real = eig.gershgorin_shift
    monkeypatch.setattr(eig, "gershgorin_shift", lambda A: 2 * real(A))
    with pytest.raises(GoldenDrift, match="shifted_pi_iterations_gershgorin"):
        cert.test_canonical_counterexample("sym8", backend=CPU64, record=rec(), golden=golden_of(CPU64))
