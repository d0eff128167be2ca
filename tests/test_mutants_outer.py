"""The outer-dynamics certificates can fail: mutants planted in models.outer (monkeypatched,
never by editing files) must make the matching certificate of certify/test_outer.py fail.

Each test calls the certificate as pytest would (hypothesis search included) and expects
its assertion to fire.
"""

from __future__ import annotations

import pytest
import torch

from certify import sut_outer as so
from certify import test_outer as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import outer

CPU64 = Backend("cpu", "float64")
_CACHED = (so.population_run, so.trajectory_run, so.lsq_online, so.rate_sweep)


@pytest.fixture(autouse=True)
def fresh_outer_caches():
    """certify.sut_outer caches SUT outputs: a mutant must recompute them (and must not
    leave its outputs behind for the certificates)."""
    for f in _CACHED:
        f.cache_clear()
    yield
    for f in _CACHED:
        f.cache_clear()


def rec(cid: str) -> Recorder:
    return Recorder(cid)


# --------------------------------------------------------------------------- #
# decoder.trajectory
# --------------------------------------------------------------------------- #
def test_step_size_off_by_1e3_fails_trajectory(monkeypatch):
    """The trainer steps with eta (1 + 1e-3) while reporting eta."""
    orig = outer.train_population

    def mutant(mom, eta, steps, P0, checkpoints=None):
        run = orig(mom, eta * (1 + 1e-3), steps, P0, checkpoints)
        run.eta = eta
        return run

    monkeypatch.setattr(outer, "train_population", mutant)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_decoder_trajectory(backend=CPU64, record=rec("decoder.trajectory"))


def test_step_size_over_K_fails_trajectory(monkeypatch):
    """lr = eta instead of eta K: the population step is eta/K (P C - B)."""
    monkeypatch.setattr(outer, "population_gradient", lambda P, mom: (P @ mom.C - mom.B) / mom.K**2)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_decoder_trajectory(backend=CPU64, record=rec("decoder.trajectory"))


def test_wrong_side_fails_trajectory(monkeypatch):
    """(I - eta C) multiplied on the wrong side: P_s - eta (C P_s - B)."""
    monkeypatch.setattr(outer, "population_gradient", lambda P, mom: (mom.C @ P - mom.B) / mom.K)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_decoder_trajectory(backend=CPU64, record=rec("decoder.trajectory"))


def test_regularized_inverse_oracle_fails_trajectory(monkeypatch):
    """P* computed with C instead of C^+: B (C + 1e-12 I)^{-1}, on a singular C."""

    def mutant(mom):
        eye = torch.eye(mom.K, dtype=mom.C.dtype, device=mom.C.device)
        return mom.B @ torch.linalg.inv(mom.C + 1e-12 * eye)

    monkeypatch.setattr(outer, "oracle", mutant)
    with pytest.raises(AssertionError, match="SUT oracle"):
        cert.test_decoder_trajectory(backend=CPU64, record=rec("decoder.trajectory"))


def test_wrong_side_fails_trajectory_figure(monkeypatch):
    monkeypatch.setattr(outer, "population_gradient", lambda P, mom: (mom.C @ P - mom.B) / mom.K)
    with pytest.raises(AssertionError, match="identity"):
        cert.test_decoder_trajectory_figure("full_rank_K8_kappa100", backend=CPU64,
                                            record=rec("decoder.trajectory"), golden=lambda *a, **k: None)


# --------------------------------------------------------------------------- #
# decoder.excess_risk_modes
# --------------------------------------------------------------------------- #
def test_risk_without_1_over_K_fails_modes(monkeypatch):
    """The trainer logs K R(P) instead of R(P) = K^{-1} E||P d - z*||^2."""
    orig = outer.population_risk
    monkeypatch.setattr(outer, "population_risk", lambda P, mom: orig(P, mom) * mom.K)
    with pytest.raises(AssertionError, match="logged excess"):
        cert.test_decoder_excess_risk_modes(backend=CPU64, record=rec("decoder.excess_risk_modes"))


def test_risk_ignoring_C_weighting_fails_modes(monkeypatch):
    """A risk that drops the covariance weighting of the quadratic term (Tr P P^T for Tr P C P^T)."""

    def mutant(P, mom):
        quad = (P * P).sum(dim=(-2, -1))
        lin = (P * mom.B).sum(dim=(-2, -1))
        return (quad - 2 * lin + torch.diagonal(mom.S).sum()) / mom.K

    monkeypatch.setattr(outer, "population_risk", mutant)
    with pytest.raises(AssertionError, match="logged excess"):
        cert.test_decoder_excess_risk_modes(backend=CPU64, record=rec("decoder.excess_risk_modes"))


# --------------------------------------------------------------------------- #
# decoder.online_matches_population
# --------------------------------------------------------------------------- #
def test_transposed_online_model_fails_mean_test(monkeypatch):
    """The online loss predicts P^T d (resid = d @ P - z): its SGD follows C P - B^T, whose
    mean leaves the population recursion."""

    def mutant(P, d, z):
        K, b = P.shape[-1], d.shape[-2]
        resid = d @ P - z
        return (resid * resid).sum() / (2 * K * b)

    monkeypatch.setattr(outer, "batch_loss", mutant)
    with pytest.raises(AssertionError, match="mean of online P_s"):
        cert.test_online_mean_matches_population(backend=CPU64, record=rec("decoder.online_matches_population"))


def test_biased_batch_normalization_fails_mean_test(monkeypatch):
    """Dividing the batch loss by b + 1 instead of b: the step is eta b/(b+1), biased."""

    def mutant(P, d, z):
        K, b = P.shape[-1], d.shape[-2]
        resid = d @ P.transpose(-1, -2) - z
        return (resid * resid).sum() / (2 * K * (b + 1))

    monkeypatch.setattr(outer, "batch_loss", mutant)
    with pytest.raises(AssertionError, match="mean of online P_s"):
        cert.test_online_mean_matches_population(backend=CPU64, record=rec("decoder.online_matches_population"))


def test_observed_risk_without_1_over_K_fails_eval_test(monkeypatch):
    orig = outer.observed_risk
    monkeypatch.setattr(outer, "observed_risk", lambda P, d, z: orig(P, d, z) * P.shape[-1])
    with pytest.raises(AssertionError, match="observed risk"):
        cert.test_online_mean_matches_population(backend=CPU64, record=rec("decoder.online_matches_population"))


# --------------------------------------------------------------------------- #
# finite_task.erm and finite_task.rate
# --------------------------------------------------------------------------- #
def test_silent_ridge_fails_erm(monkeypatch):
    """P_N = Z D^T (D D^T + 1e-8 I)^{-1}: a 'stabilizing' ridge instead of the pseudo-inverse."""

    def mutant(D, Z):
        eye = torch.eye(D.shape[-2], dtype=D.dtype, device=D.device)
        Dt = D.transpose(-1, -2)
        return Z @ Dt @ torch.linalg.inv(D @ Dt + 1e-8 * eye)

    monkeypatch.setattr(outer, "fit_finite", mutant)
    with pytest.raises(AssertionError, match="SUT P_N off"):
        cert.test_finite_task_erm(backend=CPU64, record=rec("finite_task.erm"))


def test_ridge_scaled_with_N_fails_rate(monkeypatch):
    """A ridge lambda N I with lambda = 1e-2 (shrinkage on C_N): a bias that does not vanish
    with N, so the excess flattens and the slope/constant checks fail."""

    def mutant(D, Z):
        N = D.shape[-1]
        eye = torch.eye(D.shape[-2], dtype=D.dtype, device=D.device)
        Dt = D.transpose(-1, -2)
        return Z @ Dt @ torch.linalg.inv(D @ Dt + 1e-2 * N * eye)

    monkeypatch.setattr(outer, "fit_finite", mutant)
    with pytest.raises(AssertionError, match="excludes"):
        cert.test_finite_task_rate("full_rank_K6", backend=CPU64, record=rec("finite_task.rate"),
                                   golden=lambda *a, **k: None)


def test_half_the_tasks_fails_rate_constant(monkeypatch):
    """A fit that silently uses only the first N/2 tasks: same slope, constant doubled."""
    orig = outer.fit_finite
    monkeypatch.setattr(outer, "fit_finite", lambda D, Z: orig(D[..., : D.shape[-1] // 2], Z[..., : Z.shape[-1] // 2]))
    with pytest.raises(AssertionError, match="excludes"):
        cert.test_finite_task_rate("rank3_K8", backend=CPU64, record=rec("finite_task.rate"),
                                   golden=lambda *a, **k: None)
