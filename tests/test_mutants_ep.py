"""Mutants of the EP core (models.ep.estimators / references / blocks): each, planted by
monkeypatch (never by editing files), must make the matching certificate of ep.matches_implicit_
gradient, aep.identity, aep.exact_gradient, holo.exact_gradient or damping.* fail.  Certificates are
called as pytest would (hypothesis properties through their inner test on a fixed case, to keep the
mutants cheap, and the canonical ones directly)."""

from __future__ import annotations

import pytest
import torch

from certify import test_aep as cert_aep
from certify import test_damping as cert_damp
from certify import test_ep as cert_ep
from certify import test_holo as cert_holo
from certify.backend import Backend
from certify.plugin import Recorder
from models.ep import blocks
from models.ep import estimators as est
from models.ep import references as refs
from properties.ep import EPCase

CPU64 = Backend("cpu", "float64")
ENERGY = cert_ep.CANONICAL
TOY = cert_aep.TOY


@pytest.fixture(autouse=True)
def no_target(monkeypatch):
    """hypothesis.target() outside a hypothesis run: a no-op for the inner tests called here."""
    for mod in (cert_ep, cert_aep, cert_holo, cert_damp):
        monkeypatch.setattr(mod, "target", lambda *a, **k: None, raising=False)


def inner(test):
    return test.hypothesis.inner_test


# --- ep.matches_implicit_gradient -------------------------------------------------------------

def test_nudged_phase_from_zero_fails_the_seed_protocol(monkeypatch):
    monkeypatch.setattr(est, "nudge_start", lambda z0, beta: torch.zeros_like(z0, dtype=torch.result_type(
        z0, torch.tensor(beta))))
    with pytest.raises(AssertionError, match="T2 = 20 Euler nudged phases"):
        inner(cert_ep.test_ep_matches_implicit_gradient)(case=ENERGY, backend=CPU64,
                                                         record=Recorder("ep.matches_implicit_gradient"))


def test_free_phase_stopped_early_fails(monkeypatch):
    """The free phase stopped after 3 Euler steps (and reported as converged)."""
    orig = est.free_phase

    def early(block, x, **kw):
        kw.update(solver="euler", steps=3, eps=0.2, require=False)
        kw.pop("z_init", None)
        return orig(block, x, **kw)

    monkeypatch.setattr(est, "free_phase", early)
    with pytest.raises(AssertionError):
        inner(cert_ep.test_ep_matches_implicit_gradient)(case=ENERGY, backend=CPU64,
                                                         record=Recorder("ep.matches_implicit_gradient"))


def test_hopfield_force_sign_fails_the_mpmath_limit(monkeypatch):
    """The SUT's force with the memory term's sign flipped (no longer -dE/dz of its own energy)."""
    orig = blocks.EnergyBlock.force

    def flipped(self, z, x):
        Xi = blocks.like(self.Xi, z)
        return orig(self, z, x) - 2 * self.lam_hop * torch.tanh(z @ Xi.mT) @ Xi

    monkeypatch.setattr(blocks.EnergyBlock, "force", flipped)
    with pytest.raises(AssertionError, match="50-digit|from the exact one"):
        cert_ep.test_ep_limit_against_mpmath(cert_ep.CANONICAL_MP[0], backend=CPU64,
                                             record=Recorder("ep.matches_implicit_gradient"))


def test_one_sided_without_the_division_fails_orders(monkeypatch):
    """The readout's h(beta) left undivided: the estimate no longer tends to the gradient."""
    orig = est.Nudger.readout
    monkeypatch.setattr(est.Nudger, "readout", lambda self, ph, at=None: orig(self, ph, at) * abs(ph.beta))
    with pytest.raises(AssertionError, match="O\\(beta"):
        inner(cert_ep.test_ep_matches_implicit_gradient)(case=ENERGY, backend=CPU64,
                                                         record=Recorder("ep.matches_implicit_gradient"))


# --- aep.identity -------------------------------------------------------------------------------

def test_symmetric_product_fails_identity(monkeypatch):
    """J v + J^T v instead of J v - J^T v."""
    orig = est.antisymmetric_product

    def plus(F, z0):
        ap = orig(F, z0)
        return lambda v: ap(v) + 2 * torch.func.vjp(F, z0.detach())[1](v)[0]

    monkeypatch.setattr(est, "antisymmetric_product", plus)
    with pytest.raises(AssertionError, match="matrix-free"):
        inner(cert_aep.test_aep_identity)(case=TOY, vseed=0, at_fixed_point=True, backend=CPU64,
                                          record=Recorder("aep.identity"))


# --- aep.exact_gradient -------------------------------------------------------------------------

@pytest.mark.parametrize("mutant", ["dropped", "sign"])
def test_aep_correction_mutants_fail(monkeypatch, mutant):
    if mutant == "dropped":
        monkeypatch.setattr(est, "aep_correction", lambda two_A, z, z0: torch.zeros_like(z))
    else:
        monkeypatch.setattr(est, "aep_correction", lambda two_A, z, z0: -two_A(z - z0))
    with pytest.raises(AssertionError, match="nudged Jacobian"):
        inner(cert_aep.test_aep_exact_gradient)(case=TOY, backend=CPU64, record=Recorder("aep.exact_gradient"))


def test_aep_correction_dropped_fails_orders(monkeypatch):
    """With the correction dropped only inside the nudged phases (the Jacobian identity (i) still
    sees the right force), the AEP estimate converges to the biased limit: the order check fails."""
    orig = est.Nudger.__init__

    def no_correction(self, block, x, y, z0, cfg):
        orig(self, block, x, y, z0, cfg)
        if cfg.correction == "aep":
            self.two_A = lambda v: torch.zeros_like(v)

    monkeypatch.setattr(est.Nudger, "__init__", no_correction)
    with pytest.raises(AssertionError, match="AEP error is not O"):
        inner(cert_aep.test_aep_exact_gradient)(case=TOY, backend=CPU64, record=Recorder("aep.exact_gradient"))


def test_ift_reference_without_transpose_fails(monkeypatch):
    """The IFT reference solving with J instead of J^T (what uncorrected EP converges to)."""
    monkeypatch.setattr(refs, "ift_adjoint", lambda J, g: torch.linalg.solve(J, g))
    with pytest.raises(AssertionError, match="AEP error is not O"):
        inner(cert_aep.test_aep_exact_gradient)(case=TOY, backend=CPU64, record=Recorder("aep.exact_gradient"))


# --- holo.exact_gradient ------------------------------------------------------------------------

def test_holomorphic_readout_without_1_over_beta_fails(monkeypatch):
    orig = est.cauchy_weights

    def flat_weights(r, N):
        betas, _ = orig(r, N)
        return betas, [1.0 / N] * N  # the 1/beta_k dropped

    monkeypatch.setattr(est, "cauchy_weights", flat_weights)
    with pytest.raises(AssertionError):
        inner(cert_holo.test_holomorphic_geometric)(case=ENERGY, backend=CPU64, record=Recorder("holo.exact_gradient"))


def test_holomorphic_points_off_the_circle_fail(monkeypatch):
    """The points at r e^{2 pi i k/N} replaced by real ones (r, r, ...): N-independent, no decay."""
    orig = est.cauchy_weights

    def real_points(r, N):
        _, ws = orig(r, N)
        return [complex(r, 0.0)] * N, [1.0 / (N * r)] * N

    monkeypatch.setattr(est, "cauchy_weights", real_points)
    with pytest.raises(AssertionError):
        inner(cert_holo.test_holomorphic_geometric)(case=TOY, backend=CPU64, record=Recorder("holo.exact_gradient"))


# --- damping ------------------------------------------------------------------------------------

def test_damping_with_the_wrong_sign_fails_the_lognorm_bound(monkeypatch):
    monkeypatch.setattr(blocks.DampedAttention, "force",
                        lambda self, z, x: self.lam * (x - z) + self.s * (self.attention(z) + self.c * z))
    case = (EPCase("damped", 3, 4, 1, 1, 3, scale=1.0, s=2.0, c=1.0, v_scale=1.0), 1.0)
    with pytest.raises(AssertionError, match="log-norm bound"):
        inner(cert_damp.test_damping_lognorm_condition)(cl=case, backend=CPU64,
                                                         record=Recorder("damping.stable_fixed_point_lognorm"))


def test_overdamped_block_leaves_no_counterexample(monkeypatch):
    """A block damped by c + 10 instead of c: every fixed point is stable, the counterexample search
    finds nothing and the certificate cannot report the claim conditional."""
    monkeypatch.setattr(blocks.DampedAttention, "force",
                        lambda self, z, x: self.lam * (x - z) + self.s * (self.attention(z) - (self.c + 10) * z))
    with pytest.raises(Exception, match="No examples found"):
        cert_damp.test_damping_counterexample(backend=CPU64, record=Recorder("damping.stable_fixed_point"))
