"""The finite-NTK and global-theory certificates can fail: mutants planted in models.ntk and
models.finite_set (monkeypatched, never by editing files) must make the matching certificate of
certify/test_ntk.py or certify/test_global_theory.py raise AssertionError."""

from __future__ import annotations

import copy

import pytest
import torch

from certify import test_global_theory as cert_g
from certify import test_ntk as cert
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models import adjoint as adj
from models import finite_set as fs
from models import ntk
from properties.ntk import FreePCase, NTKCase

CPU64 = Backend("cpu", "float64")


@pytest.fixture(autouse=True)
def fresh_measured_cache():
    """certify.test_ntk caches its measured runs: a mutant must recompute them (and leave none behind)."""
    cert.measured.cache_clear()
    yield
    cert.measured.cache_clear()


def rec(cid: str) -> Recorder:
    return Recorder(cid)


def no_golden(*args, **kwargs) -> None:
    return None


def _measured(match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        cert.test_ntk_measured_curves(backend=CPU64, record=rec("flexformer.ntk_local"), golden=no_golden)


# --------------------------------------------------------------------------- #
# the NTK and its curve (models.ntk)
# --------------------------------------------------------------------------- #
def test_ntk_transposed_product_fails(monkeypatch):
    """Theta = J^T J / m (the parameter-space Gram matrix) instead of J J^T / m."""
    monkeypatch.setattr(ntk, "ntk_matrix", lambda J: J.T @ J / J.shape[0])
    _measured("NTK has shape")


def test_ntk_without_1_over_m_fails(monkeypatch):
    monkeypatch.setattr(ntk, "ntk_matrix", lambda J: J @ J.T)
    _measured(r"Theta_0 differs from J_0 J_0\^T / m")


def test_ntk_curve_one_step_ahead_fails(monkeypatch):
    """r_s^NTK = (I - eta Theta)^(s+1) r_0: the curve is off by one step."""
    orig = ntk.linearized_residuals

    def ahead(Theta, r0, eta, steps):
        return orig(Theta, r0, eta, steps + 1)[1:]

    monkeypatch.setattr(ntk, "linearized_residuals", ahead)
    _measured("NTK curve differs")


def _jacobian_after_a_step(eta: float):
    """ntk.jacobian taken at the parameters after one eq-24 step of size eta instead of at theta_0."""
    orig = ntk.jacobian

    def moved(precond, tasks, L):
        pc = copy.deepcopy(precond)
        fs.gd_step(pc, tasks, L, eta)
        return orig(pc, tasks, L)

    return moved


def test_jacobian_after_a_step_fails(monkeypatch):
    monkeypatch.setattr(ntk, "jacobian", _jacobian_after_a_step(0.05))
    _measured("J_0 is not the Jacobian")


def test_jacobian_after_a_step_fails_gp(monkeypatch):
    monkeypatch.setattr(ntk, "jacobian", _jacobian_after_a_step(1.0))
    with pytest.raises(AssertionError, match="J_0 is not the Jacobian"):
        cert.test_gp_ntk_measured_curve(backend=CPU64, record=rec("gp.ntk_local"), golden=no_golden)


# --------------------------------------------------------------------------- #
# the trainer (models.finite_set): caught by the order check
# --------------------------------------------------------------------------- #
def _step_scaled(factor):
    def step(precond, tasks, L, eta):
        adj.train_step(precond, tasks.H, tasks.d, tasks.xstar, L, factor(tasks) * eta)
    return step


def test_update_wrong_sign_fails_order(monkeypatch):
    """theta <- theta + eta DP^*[grad_P]: the deviation from the NTK curve becomes O(eta)."""
    monkeypatch.setattr(fs, "gd_step", _step_scaled(lambda t: -1.0))
    with pytest.raises(AssertionError, match="second order|unresolved"):
        cert.test_ntk_order_fit(backend=CPU64, record=rec("flexformer.ntk_local"))


# One drawn example of each hypothesis property (its inner test, so no shrinking is timed here).
LSQ_CASE = NTKCase("lsq", K=3, N=2, L=3, width=2, kernel="rbf", frac=0.05, steps=3, seed=7)
GP_CASE = NTKCase("gp", K=4, N=3, L=2, width=4, kernel="exp", frac=0.02, steps=4, seed=8, n_prompt=64)


@pytest.mark.parametrize("family", ("lsq", "gp"))
def test_update_wrong_sign_fails_property(monkeypatch, family):
    """The hypothesis properties catch it too."""
    monkeypatch.setattr(fs, "gd_step", _step_scaled(lambda t: -1.0))
    test, case, cid = ((cert.test_ntk_local_property, LSQ_CASE, "flexformer.ntk_local") if family == "lsq"
                       else (cert.test_gp_ntk_local_property, GP_CASE, "gp.ntk_local"))
    with pytest.raises(AssertionError, match="second order|unresolved"):
        test.hypothesis.inner_test(case=case, backend=CPU64, record=rec(cid))


def test_jacobian_after_a_step_fails_property(monkeypatch):
    monkeypatch.setattr(ntk, "jacobian", _jacobian_after_a_step(0.05))
    with pytest.raises(AssertionError, match="J_0 is not the Jacobian"):
        cert.test_ntk_local_property.hypothesis.inner_test(case=LSQ_CASE, backend=CPU64,
                                                           record=rec("flexformer.ntk_local"))


def test_update_missing_1_over_m_fails_order(monkeypatch):
    """The step uses the gradient of ||r||^2 / 2 instead of ||r||^2 / (2m): eta is m times too large."""
    monkeypatch.setattr(fs, "gd_step", _step_scaled(lambda t: float(t.d.numel())))
    with pytest.raises(AssertionError, match="second order|unresolved"):
        cert.test_ntk_order_fit(backend=CPU64, record=rec("flexformer.ntk_local"))


def test_update_missing_1_over_m_fails_gp_order(monkeypatch):
    monkeypatch.setattr(fs, "gd_step", _step_scaled(lambda t: float(t.d.numel())))
    with pytest.raises(AssertionError, match="second order|unresolved"):
        cert.test_gp_ntk_order_fit(backend=CPU64, record=rec("gp.ntk_local"))


def test_heldout_mse_against_truth_drifts_golden(monkeypatch):
    """The held-out posterior-mean MSE measured against the drawn latent instead of z_post."""
    orig = ntk.posterior_mean_mse

    def swapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        return {**out, "posterior_mean_mse": out["exact_posterior_mse"]}

    monkeypatch.setattr(ntk, "posterior_mean_mse", swapped)
    store = GoldenStore(GOLDEN_DIR, CPU64.name)

    def golden(family, metrics, rtol, atol=0.0, seeds=None, seed=None):
        store.check(family, metrics, rtol, atol, seeds)

    with pytest.raises(GoldenDrift, match="gp.heldout_posterior_mean_mse"):
        cert.test_gp_ntk_measured_curve(backend=CPU64, record=rec("gp.ntk_local"), golden=golden)


# --------------------------------------------------------------------------- #
# the global theory's positive control (models.finite_set, depth 1)
# --------------------------------------------------------------------------- #
def _positive_control(match: str) -> None:
    """The hypothesis property (its search included) fails with `match`."""
    with pytest.raises(AssertionError, match=match):
        cert_g.test_free_P_positive_control(backend=CPU64, record=rec("flexformer.global_theory"))


def test_closed_form_exponent_s_plus_1_fails(monkeypatch):
    """P_s = P* + (P_0 - P*) M^(s+1)."""
    orig = fs.quadratic_free_P

    def shifted(P0, tasks, eta, steps):
        pred = orig(P0, tasks, eta, steps + 1)
        pred.P, pred.losses = pred.P[1:], pred.losses[1:]
        return pred

    monkeypatch.setattr(fs, "quadratic_free_P", shifted)
    with pytest.raises(AssertionError, match="closed form P_s differs"):
        cert_g.test_free_P_positive_control.hypothesis.inner_test(
            case=FreePCase(K=3, N=5, frac=0.7, steps=20, seed=3), backend=CPU64,
            record=rec("flexformer.global_theory"))


def test_closed_form_wrong_sign_fails(monkeypatch):
    """M = I + (eta/K) C_N."""
    monkeypatch.setattr(fs, "free_P_contraction",
                        lambda C, eta, K: torch.eye(C.shape[0], dtype=C.dtype) + (eta / K) * C)
    _positive_control("closed form P_s differs")


def test_closed_form_wrong_sign_fails_gap_setup(monkeypatch):
    monkeypatch.setattr(fs, "free_P_contraction",
                        lambda C, eta, K: torch.eye(C.shape[0], dtype=C.dtype) + (eta / K) * C)
    with pytest.raises(AssertionError, match="closed form P_s differs"):
        cert_g.test_global_theory_gap(1, backend=CPU64, record=rec("flexformer.global_theory"), golden=no_golden)


def test_trainer_missing_1_over_NK_fails_positive_control(monkeypatch):
    """The adjoint terminal (z_L - z*) without 1/(NK): free-P training leaves the exact closed form."""
    monkeypatch.setattr(adj, "terminal", lambda zL, zstar: zL - zstar)
    _positive_control("free-P training by train_step leaves the closed form")
