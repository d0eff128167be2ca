"""The encoder / subspace / prompt certificates can fail: mutants planted in the SUT or the
certificate code (monkeypatched, never by editing files) must make the matching certificate
fail.  Each test calls the certificate as pytest would (the hypothesis search included).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from certify import sut_encoder as S
from certify import test_encoder as cert_e
from certify import test_prompt as cert_p
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models import encoder as enc
from models import gaussian_prompts as gp
from properties import encoder as prop_e
from properties import prompt as prop_p

CPU64 = Backend("cpu", "float64")


def rec(cid: str) -> Recorder:
    return Recorder(cid)


@pytest.fixture(autouse=True)
def fresh_caches():
    """certify.sut_encoder caches SUT outputs: every mutant must recompute them."""
    S.clear_caches()
    yield
    S.clear_caches()


# --------------------------------------------------------------------------- encoder.trajectory
def test_wrong_step_size_fails_trajectory(monkeypatch):
    orig = enc.gd_step
    monkeypatch.setattr(enc, "gd_step", lambda G, Sz, Sbz, eta: orig(G, Sz, Sbz, eta * 1.001))
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert_e.test_encoder_trajectory(backend=CPU64, record=rec("encoder.trajectory"))


def test_contraction_on_the_wrong_side_fails_trajectory(monkeypatch):
    """The gradient with Sigma_z applied from the left (possible when K = r): G - eta (Sz G - Sbz)."""
    orig = enc.gd_step

    def left(G, Sz, Sbz, eta):
        if G.shape[-1] == G.shape[-2]:
            return G - eta * (Sz @ G - Sbz)
        return orig(G, Sz, Sbz, eta)

    monkeypatch.setattr(enc, "gd_step", left)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert_e.test_encoder_trajectory(backend=CPU64, record=rec("encoder.trajectory"))


def test_sigma2_dropped_fails_trajectory_risk(monkeypatch):
    """The SUT's E[b b^T] without the noise sigma^2 I_K: its population risk loses the floor."""
    def sigma_bb_without_noise(self):
        return self._t(self.G_star64 @ self.Sigma_z64 @ self.G_star64.T)

    monkeypatch.setattr(enc.EncoderProblem, "Sigma_bb", property(sigma_bb_without_noise))
    with pytest.raises(AssertionError, match="R_enc"):
        cert_e.test_encoder_trajectory(backend=CPU64, record=rec("encoder.trajectory"))


def test_risk_normalized_by_latent_dim_fails_trajectory_risk(monkeypatch):
    """The dimension convention: normalizing by dim z (r) instead of dim b (K)."""
    orig = enc.population_risk
    monkeypatch.setattr(enc, "population_risk", lambda p, G: orig(p, G) * p.K / p.r)
    with pytest.raises(AssertionError, match="R_enc"):
        cert_e.test_encoder_trajectory(backend=CPU64, record=rec("encoder.trajectory"))


# --------------------------------------------------------------------------- encoder.contraction_bound
def test_plain_float_norm_fails_contraction_bound(monkeypatch):
    def float_rho(Sigma_z, eta):
        return float(np.linalg.norm(np.eye(Sigma_z.shape[0]) - eta * np.asarray(Sigma_z, np.float64), 2))

    monkeypatch.setattr(prop_e, "contraction_upper", float_rho)
    with pytest.raises(AssertionError, match="below a rigorous lower bound"):
        cert_e.test_encoder_contraction_bound(backend=CPU64, record=rec("encoder.contraction_bound"))


def test_one_step_short_fails_contraction_bound(monkeypatch):
    """A trainer that logs G_{s-1} as G_s: on the slowest mode the excess exceeds rho^{2s}."""
    orig = enc.train

    def short(problem, eta, steps, **kw):
        traj = orig(problem, eta, steps, **kw)
        return torch.cat([traj[:1], traj[:-1]]) if steps > 0 else traj

    monkeypatch.setattr(enc, "train", short)
    with pytest.raises(AssertionError, match="exceeds the bound"):
        cert_e.test_encoder_contraction_bound(backend=CPU64, record=rec("encoder.contraction_bound"))


# --------------------------------------------------------------------------- encoder.heldout_matches_population
def test_heldout_on_training_data_fails_statistical(monkeypatch):
    """The held-out risk computed on the finite trainer's own training set (overfit: biased low)."""
    monkeypatch.setattr(enc, "heldout_sample",
                        lambda problem, n, seed: enc.training_set(problem, S.FINITE_N, 0))
    with pytest.raises(AssertionError, match="outside the acceptance band"):
        cert_e.test_encoder_heldout_statistical("finite", "finite", 0, backend=CPU64,
                                                record=rec("encoder.heldout_matches_population"))


def test_heldout_risk_per_latent_coordinate_fails_statistical(monkeypatch):
    orig = enc.heldout_risk

    def per_r(problem, G, n, seed, per_sample=False):
        v, m = orig(problem, G, n, seed, per_sample)
        return v * problem.K / problem.r, m

    monkeypatch.setattr(enc, "heldout_risk", per_r)
    with pytest.raises(AssertionError, match="outside the acceptance band"):
        cert_e.test_encoder_heldout_statistical("population", "table1", 0, backend=CPU64,
                                                record=rec("encoder.heldout_matches_population"))


def test_wrong_step_size_drifts_table1_golden(monkeypatch):
    orig = enc.gd_step
    monkeypatch.setattr(enc, "gd_step", lambda G, Sz, Sbz, eta: orig(G, Sz, Sbz, eta * 0.9))
    store = GoldenStore(GOLDEN_DIR, CPU64.name)

    def golden(family, metrics, rtol, atol=0.0, seeds=None, seed=None):
        store.check(family, metrics, rtol, atol, seeds)

    with pytest.raises(GoldenDrift):
        cert_e.test_encoder_table1(backend=CPU64, record=rec("encoder.heldout_matches_population"),
                                   golden=golden)


# --------------------------------------------------------------------------- subspace.davis_kahan
def _wrong_end(S_, r):
    _, V = torch.linalg.eigh(S_)
    return V[..., :r]


def test_top_r_from_the_wrong_end_fails_sut_estimates(monkeypatch):
    monkeypatch.setattr(enc, "top_r", _wrong_end)
    with pytest.raises(AssertionError, match="not the top-r eigenspace"):
        cert_e.test_davis_kahan_sut_estimates(backend=CPU64, record=rec("subspace.davis_kahan"))


def test_factor_two_in_search_loses_the_counterexample(monkeypatch):
    """Searching the corrected (factor 2) form instead of the seed's finds no violation."""
    orig = prop_e.dk_seed_ratio_float
    monkeypatch.setattr(prop_e, "dk_seed_ratio_float", lambda lam, E, r: orig(lam, E, r) / 2)
    with pytest.raises(AssertionError, match="no counterexample"):
        cert_e.test_davis_kahan_as_stated_counterexample(backend=CPU64, record=rec("subspace.davis_kahan"))


def test_condition_ignored_fails_conditional(monkeypatch):
    """Asserting the seed's form without the one-sided-gap condition: hypothesis finds a violation."""
    monkeypatch.setattr(prop_e.DKQuantities, "one_sided_gap", property(lambda self: True))
    with pytest.raises(AssertionError, match="fails under the one-sided gap"):
        cert_e.test_davis_kahan_under_one_sided_gap(record=rec("subspace.davis_kahan"))


# --------------------------------------------------------------------------- subspace.davis_kahan_yws
def test_factor_two_dropped_fails_yws(monkeypatch):
    monkeypatch.setattr(prop_e.DKQuantities, "yws_ratio", property(lambda self: self.seed_ratio))
    with pytest.raises(AssertionError, match="exceeds 2"):
        cert_e.test_yws_drawn_perturbations(record=rec("subspace.davis_kahan_yws"))


def test_top_r_from_the_wrong_end_fails_yws_sut(monkeypatch):
    monkeypatch.setattr(enc, "top_r", _wrong_end)
    with pytest.raises(AssertionError, match="not the top-r eigenspace"):
        cert_e.test_yws_sut_estimates(backend=CPU64, record=rec("subspace.davis_kahan_yws"))


def test_subspace_of_the_wrong_matrix_fails_yws_sut(monkeypatch):
    """A SUT whose U_N comes from a perturbed copy of S_N (a stale or shifted matrix): no longer
    the top-r eigenspace of the S_N it reports."""
    orig = enc.top_r

    def stale(S_, r):
        return orig(S_ + 0.5 * torch.diag(torch.linspace(0, 1, S_.shape[-1], dtype=S_.dtype)), r)

    monkeypatch.setattr(enc, "top_r", stale)
    with pytest.raises(AssertionError, match="not the top-r eigenspace"):
        cert_e.test_yws_sut_estimates(backend=CPU64, record=rec("subspace.davis_kahan_yws"))


# --------------------------------------------------------------------------- prompt.mp_window
def test_corrected_window_in_search_loses_the_counterexample(monkeypatch):
    monkeypatch.setattr(prop_p, "seed_window", prop_p.corrected_window)
    with pytest.raises(AssertionError, match="rejects the seed's MP window"):
        cert_p.test_mp_window_as_stated_counterexample(backend=CPU64, record=rec("prompt.mp_window"))


# --------------------------------------------------------------------------- prompt.mp_window_vershynin
def test_non_whitened_covariance_fails_mp_window(monkeypatch):
    def unwhitened(self, X):
        M = X.shape[-2]
        return gp.symmetrize(X.transpose(-1, -2) @ X) / M

    monkeypatch.setattr(gp.GaussianPrompts, "whitened", unwhitened)
    with pytest.raises(AssertionError, match="whitened spectra outside"):
        cert_p.test_mp_window_corrected(backend=CPU64, record=rec("prompt.mp_window_vershynin"))


def test_seed_window_fails_corrected_mp_window(monkeypatch):
    """The seed's (unclipped) window in the corrected certificate: rejected where 1-sqrt(g)-t < 0."""
    monkeypatch.setattr(prop_p, "corrected_window", prop_p.seed_window)
    with pytest.raises(AssertionError, match="whitened spectra outside"):
        cert_p.test_mp_window_corrected(backend=CPU64, record=rec("prompt.mp_window_vershynin"))


# --------------------------------------------------------------------------- prompt.resolvent
def test_sign_flip_fails_resolvent_identity(monkeypatch):
    monkeypatch.setattr(prop_p, "rhs_sign", lambda: -1)
    with pytest.raises(AssertionError, match="second-order expansion differ"):
        cert_p.test_resolvent(backend=CPU64, record=rec("prompt.resolvent"))


def test_bound_without_denominator_fails_resolvent(monkeypatch):
    """a^2 d without 1/(1 - a d): too small whenever the second-order term matters."""
    monkeypatch.setattr(prop_p, "neumann_bound", lambda a, d: a * a * d)
    with pytest.raises(AssertionError, match="exceeds the bound"):
        cert_p.test_resolvent(backend=CPU64, record=rec("prompt.resolvent"))
