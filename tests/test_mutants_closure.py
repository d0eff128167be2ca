"""The closure and overlap certificates can fail: mutants planted in the SUT or the
certificate code (monkeypatched, never by editing files) must make them fail.

Each test calls the certificate as pytest would (the hypothesis search included).
"""

from __future__ import annotations

import math

import pytest
import torch

import models
from certify import sut_overlap
from certify import test_closure as cert_c
from certify import test_overlap as cert_o
from certify.backend import Backend
from certify.plugin import Recorder
from models import closure as closure_mod
from models import overlap as overlap_mod
from models.train import train
from properties import closure as prop_c

CPU64 = Backend("cpu", "float64")


def rec(cid: str) -> Recorder:
    return Recorder(cid)


def no_golden(*args, **kwargs) -> None:
    return None


@pytest.fixture
def fresh_trajectories():
    """The logged trajectories are cached per process: a mutant must retrain them."""
    sut_overlap.trajectory.cache_clear()
    yield
    sut_overlap.trajectory.cache_clear()


# --- closure.scalar_state -------------------------------------------------------------------

def _wrong_eta_step(P, C, B, eta):
    return P - (eta + eta / 100) * closure_mod.population_gradient(P, C, B)  # eta 1% too large


def test_wrong_eta_fails_scalar_counterexample(monkeypatch):
    monkeypatch.setattr(closure_mod, "outer_step", _wrong_eta_step)
    with pytest.raises(AssertionError, match="exact R_1"):
        cert_c.test_scalar_state_counterexample(backend=CPU64, record=rec("closure.scalar_state"), golden=no_golden)


def test_float32_gradient_leak_fails_scalar_backend_run(monkeypatch):
    """Only the backend (torch) path is mutated: the exact run still reproduces the numbers,
    the float64 run must miss its derived tolerance."""
    orig = closure_mod.population_gradient

    def leaky(P, C, B):
        if isinstance(P, torch.Tensor):
            return (P.float() @ C.float() - B.float()).to(P.dtype)
        return orig(P, C, B)

    monkeypatch.setattr(closure_mod, "population_gradient", leaky)
    with pytest.raises(AssertionError, match="error/tolerance"):
        cert_c.test_scalar_state_counterexample(backend=CPU64, record=rec("closure.scalar_state"), golden=no_golden)


# --- closure.scalar_state_modes -------------------------------------------------------------

def test_left_multiplied_gradient_fails_modes(monkeypatch):
    monkeypatch.setattr(closure_mod, "population_gradient", lambda P, C, B: C @ P - B)
    with pytest.raises(AssertionError, match="modal formula|R_0"):
        cert_c.test_scalar_state_modes(backend=CPU64, record=rec("closure.scalar_state_modes"))


def test_wrong_eta_fails_modes(monkeypatch):
    monkeypatch.setattr(closure_mod, "outer_step", _wrong_eta_step)
    with pytest.raises(AssertionError, match="modal formula"):
        cert_c.test_scalar_state_modes(backend=CPU64, record=rec("closure.scalar_state_modes"))


# --- closure.spectra_only -------------------------------------------------------------------

def _perturbed_conjugate(X, perm, signs):
    """Pi (X + 1e-3 I_00) Pi^T: P_B built with one eigenvalue moved (spectra no longer equal)."""
    Y = X.clone()
    Y[0, 0] += 1e-3 * X.abs().max()
    return _ORIG_CONJ(Y, perm, signs)


_ORIG_CONJ = closure_mod.conjugate_by_signed_permutation


def test_eigenvalue_perturbation_fails_construction_check(monkeypatch):
    monkeypatch.setattr(closure_mod, "conjugate_by_signed_permutation", _perturbed_conjugate)
    with pytest.raises(AssertionError, match="spectra not certified equal"):
        cert_c.test_spectra_only_pairs(backend=CPU64, record=rec("closure.spectra_only"))


def test_eigenvalue_perturbation_fails_enclosure_check(monkeypatch):
    """With the exact construction check cheated, the arb enclosures must still see it."""
    monkeypatch.setattr(closure_mod, "conjugate_by_signed_permutation", _perturbed_conjugate)
    monkeypatch.setattr(prop_c, "signed_permutation_similar", lambda *a: True)
    with pytest.raises(AssertionError, match="enclosures of P_A and P_B are disjoint"):
        cert_c.test_spectra_only_pairs(backend=CPU64, record=rec("closure.spectra_only"))


def test_aligned_pair_fails_risk_separation(monkeypatch):
    """Pi = I (no misalignment): equal spectra and equal risks -- no counterexample."""
    monkeypatch.setattr(closure_mod, "signed_permutation", lambda K, seed: (list(range(K)), [1.0] * K))
    with pytest.raises(AssertionError, match="not certified different"):
        cert_c.test_spectra_only_canonical(backend=CPU64, record=rec("closure.spectra_only"), golden=no_golden)


# --- overlap.reconstruction -----------------------------------------------------------------

def _transposed_power_vectors(P, H, x, L):
    PT = P.transpose(-1, -2)
    return _ORIG_POWERS(PT, H, x, L)


_ORIG_POWERS = overlap_mod.power_vectors


def test_order_parameters_with_P_transposed_fail_trajectory(monkeypatch, fresh_trajectories):
    monkeypatch.setattr(overlap_mod, "power_vectors", _transposed_power_vectors)
    with pytest.raises(AssertionError, match="logged Omega"):
        cert_o.test_overlap_trajectory("lsq", 0, "free_linear", backend=CPU64, record=rec("overlap.reconstruction"),
                                       golden=no_golden)


def test_order_parameters_with_P_transposed_fail_any_decoder(monkeypatch):
    monkeypatch.setattr(overlap_mod, "power_vectors", _transposed_power_vectors)
    with pytest.raises(AssertionError, match="logged Omega"):
        cert_o.test_overlap_any_decoder(backend=CPU64, record=rec("overlap.reconstruction"))


def test_wrong_binomial_sign_fails(monkeypatch, fresh_trajectories):
    monkeypatch.setattr(overlap_mod, "binomial_weights", lambda l: [math.comb(l, a) for a in range(l + 1)])
    with pytest.raises(AssertionError, match="reconstruction|reconstructed"):
        cert_o.test_overlap_trajectory("lsq", 0, "diagonal", backend=CPU64, record=rec("overlap.reconstruction"),
                                       golden=no_golden)


def test_dropped_cross_terms_fail(monkeypatch):
    def diagonal_only(omega, l):
        w = torch.tensor(overlap_mod.binomial_weights(l), dtype=omega.dtype, device=omega.device)
        return (w * w * torch.diagonal(omega)[: l + 1]).sum()

    monkeypatch.setattr(overlap_mod, "reconstruct_risk", diagonal_only)
    with pytest.raises(AssertionError, match="reconstruction|reconstructed"):
        cert_o.test_overlap_any_decoder(backend=CPU64, record=rec("overlap.reconstruction"))


def test_eq17_check_sees_a_dropped_cross_term(monkeypatch):
    def no_cross(omega, l):
        w = torch.tensor(overlap_mod.binomial_weights(l), dtype=omega.dtype, device=omega.device)
        om = omega[: l + 1, : l + 1].clone()
        if l >= 2:
            om[1, 2] = om[2, 1] = 0.0  # forget Omega_12: R_2 then depends on the triple only
        return w @ om @ w

    monkeypatch.setattr(overlap_mod, "reconstruct_risk", no_cross)
    with pytest.raises(AssertionError, match="reconstructed R_2"):
        cert_o.test_eq17_triple_does_not_determine_RL(backend=CPU64, record=rec("overlap.reconstruction"))


# --- the logging trainer trains like models.train.train -------------------------------------

@pytest.mark.parametrize("cls", ["free_linear", "softmax"])
def test_logged_trainer_trains_like_train(cls):
    cfg = models.TrainConfig(cls=cls, task=models.TaskConfig(K=4, M=16), L=3, steps=7, batch=16)
    tasks = models.LeastSquaresPrompts(cfg.task).sample(8, 123)
    run = overlap_mod.train_logged(cfg, tasks, every=3)
    dec, history = train(cfg)
    assert [r.step for r in run.rows] == [0, 3, 6, 7]
    assert run.history == history
    for k, v in dec.state_dict().items():
        assert torch.equal(v, run.decoder.state_dict()[k]), k
        assert torch.equal(v, run.rows[-1].state[k]), k
