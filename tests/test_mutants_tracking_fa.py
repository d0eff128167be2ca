"""The aep.tracking and fa.upstream_failure certificates can fail: mutants planted in
models.ep.estimators and models.ep.fa (monkeypatched, never by editing files) must make the
matching certificate of certify/test_aep_tracking.py or certify/test_fa.py raise AssertionError
(for the measured metrics: GoldenDrift, an AssertionError, against golden/<family>.json; for a
verdict: the conditional verdict disappears)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from certify import test_aep_tracking as cert_t
from certify import test_fa as cert_f
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models.ep import estimators as est
from models.ep import fa, solvers
from properties.ep_tracking import TrackingCase

CPU64 = Backend("cpu", "float64")
# one drawn case of the property (its inner test, so no search or shrinking is timed here): a
# thick block whose free phase stopped at res0 <= 0.1
CASE = TrackingCase("thick", T=3, d=4, B=1, seed=5, c=1.0, resinit=1.0, x_scale=1.0, log_stop=-1.0, beta=1e-2)


@pytest.fixture(autouse=True)
def fresh_caches():
    """The certificates cache their measured runs: a mutant must recompute them (and leave none)."""
    caches = (cert_t.canonical, cert_f.bp_point, cert_f.fa_runs, cert_f.ep_groups)
    for c in caches:
        c.cache_clear()
    yield
    for c in caches:
        c.cache_clear()


def rec(cid: str) -> Recorder:
    return Recorder(cid)


def no_golden(*args, **kwargs) -> None:
    return None


def pinned_golden(*args, **kwargs) -> None:
    """Compare with the pinned golden/<family>.json (cpu-float64) like the plugin does."""
    family, metrics, rtol = args[:3]
    GoldenStore(GOLDEN_DIR, CPU64.name).check(family, metrics, rtol, kwargs.get("atol", 0.0), kwargs.get("seeds"))


def _property(match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        cert_t.test_tracking_restores_property.hypothesis.inner_test(case=CASE, backend=CPU64,
                                                                     record=rec("aep.tracking"))


def _far(match: str, golden=no_golden) -> None:
    with pytest.raises(AssertionError, match=match):
        cert_t.test_far_case(backend=CPU64, record=rec("aep.tracking"), golden=golden)


# --------------------------------------------------------------------------- #
# aep.tracking: the tracking pair (models.ep.estimators.tracking_pair, symmetric)
# --------------------------------------------------------------------------- #
def _tracking_variant(kind: str):
    """tracking_pair with its correction 2 A(zbar)(z+- - zbar) replaced: "z0" re-linearises at the
    point z0 the free phase stopped at (the frozen linearisation), "none" drops it, "sign" adds it."""

    def pair(block, x, y, z0, beta, *, eps=0.2, steps=200, solver="euler", tol=None):
        B = z0.shape[0]
        F = est.free_force(block, x)
        xx, yy = torch.cat([x, x]), torch.cat([y, y])
        sign = torch.cat([torch.ones(B), -torch.ones(B)]).to(z0.dtype).view(-1, 1, 1)
        J0 = solvers.jacobian(F, z0)

        def G(Z):
            zp, zm = Z[:B], Z[B:]
            J = J0 if kind == "z0" else solvers.jacobian(F, 0.5 * (zp + zm))
            corr = ((J - J.mT) @ (0.5 * (zp - zm)).reshape(-1)).reshape(zp.shape)
            if kind == "none":
                corr = torch.zeros_like(corr)
            s = -1.0 if kind == "sign" else 1.0
            return block.force(Z, xx) - beta * sign * block.cost_grad_z(Z, yy) - s * sign * torch.cat([corr, corr])

        res = est._relax(G, torch.cat([z0, z0]).clone(), solver, eps, steps, tol)
        return est.Phase(res.z[:B], res, beta), est.Phase(res.z[B:], res, -beta)

    return pair


def test_tracking_relinearised_at_z0_fails_property(monkeypatch):
    """Tracking re-linearised at z0 instead of the common mode (= the frozen linearisation): its
    state no longer satisfies the tracking equations at its own common mode (check (e))."""
    monkeypatch.setattr(est, "tracking_pair", _tracking_variant("z0"))
    _property("does not satisfy the tracking equations")


def test_tracking_relinearised_at_z0_fails_far_case(monkeypatch):
    monkeypatch.setattr(est, "tracking_pair", _tracking_variant("z0"))
    _far("does not satisfy the tracking equations|does not restore|did not converge")


def test_tracking_without_correction_fails(monkeypatch):
    """The pair relaxed without any correction (plain symmetric EP read out at the common mode)."""
    monkeypatch.setattr(est, "tracking_pair", _tracking_variant("none"))
    _property("does not satisfy the tracking equations")


def test_tracking_correction_sign_flipped_fails(monkeypatch):
    monkeypatch.setattr(est, "tracking_pair", _tracking_variant("sign"))
    _property("does not satisfy the tracking equations|does not converge")


def test_tracking_relaxation_truncated_fails_c0_guard(monkeypatch):
    """The tracking relaxation cut to one Euler step: it settles nowhere, not even from z* at a
    smaller beta, so the (C0) guard must call the SUT broken instead of counting a C0 case."""
    orig = est.tracking_pair
    monkeypatch.setattr(est, "tracking_pair", lambda *a, **k: orig(*a, **{**k, "steps": 1}))
    _property(r"nor from z\* at beta")


def test_tracking_residual_misreported_fails_c0_counterexample(monkeypatch):
    """The tracking relaxation reports a zero residual wherever it stopped (every pair "settled"): the
    pinned (C0) counterexample, whose relaxation settles nowhere at beta 0.32, must fail."""
    orig = est.tracking_pair

    def misreported(*a, **k):
        return tuple(dataclasses.replace(ph, solve=dataclasses.replace(ph.solve, residual=0.0)) for ph in orig(*a, **k))

    monkeypatch.setattr(est, "tracking_pair", misreported)
    with pytest.raises(AssertionError, match="C0"):
        cert_t.test_counterexamples(backend=CPU64, record=rec("aep.tracking"))


def test_tracking_read_out_at_z0_fails(monkeypatch):
    """symmetric() reads tracking's pair out at z0 (vf readout and dC/dtheta where the free phase
    stopped) instead of at the common mode: the identity check (i) catches it."""
    orig = est.symmetric

    def at_z0(nudger, beta):
        if nudger.cfg.correction != "tracking":
            return orig(nudger, beta)
        zp, zm = nudger.pair(beta)
        h = nudger.readout(zp) - nudger.readout(zm)
        return est.Estimate(nudger.explicit + h / (2 * beta), "symmetric", beta,
                            nudged_residuals=[zp.solve.residual, zm.solve.residual])

    monkeypatch.setattr(est, "symmetric", at_z0)
    _far("is not g_IFT")


def test_frozen_correction_dropped_drifts_golden(monkeypatch):
    """The frozen AEP correction dropped (frozen = plain EP): the pinned far.cos_frozen moves
    (measured claim: the golden comparison catches it)."""
    monkeypatch.setattr(est, "aep_correction", lambda two_A, z, z0: torch.zeros_like(z))
    with pytest.raises((GoldenDrift, AssertionError), match="far.cos_frozen|far.rel_err_frozen|frozen AEP does not fail"):
        cert_t.test_far_case(backend=CPU64, record=rec("aep.tracking"), golden=pinned_golden)


# --------------------------------------------------------------------------- #
# fa.upstream_failure: the FA block (models.ep.fa) and the EP / AEP estimators
# --------------------------------------------------------------------------- #
def test_fa_with_true_transposes_fails(monkeypatch):
    """'FA' whose backward pass uses W^T: it is backprop, upstream cosines are 1, not mean 0."""

    def transposed(block, x, y, seeds):
        fb = fa.transposed_feedback(block)
        return fa.backward(block, x, y, fa.Feedback({n: m.expand(len(seeds), *m.shape[1:])
                                                      for n, m in fb.mats.items()}))

    monkeypatch.setattr(fa, "fa_gradient", transposed)
    with pytest.raises(AssertionError, match="is not unaligned"):
        cert_f.test_fa_at_bp_operating_point(backend=CPU64, record=rec("fa.upstream_failure"), golden=no_golden)


def test_feedback_redrawn_every_step_changes_verdict_and_golden(monkeypatch):
    """FA training that redraws its feedback every step: the weights cannot align with a fixed B,
    the sign test no longer rejects 'near-random' (no conditional verdict) and the pinned
    fa_trained.* metrics drift."""

    def redrawn(fb, step):
        g = torch.Generator().manual_seed(1_000_003 * (step + 1))
        return fa.Feedback({n: torch.randn(m.shape, generator=g, dtype=torch.float64).to(m.dtype) * float(m.std())
                            for n, m in fb.mats.items()})

    monkeypatch.setattr(fa, "training_feedback", redrawn)
    r = rec("fa.upstream_failure")
    cert_f.test_fa_trained_alignment(backend=CPU64, record=r, golden=no_golden)
    assert not r.verdicts, "the redrawn-feedback mutant still yields the alignment counterexample"
    cert_f.fa_runs.cache_clear()
    with pytest.raises(GoldenDrift, match="fa_trained"):
        cert_f.test_fa_trained_alignment(backend=CPU64, record=rec("fa.upstream_failure"), golden=pinned_golden)


def test_readout_gradient_through_feedback_fails(monkeypatch):
    """The readout's own gradient computed from the error after a round trip through the feedback
    (e B_out B_out^T) instead of the true error e."""
    orig = fa.backward_weights

    def roundtrip(W, x, y, cfg, fb, *, absolute=False):
        out = orig(W, x, y, cfg, fb, absolute=absolute)
        cc = fa.forward(W, x, cfg)
        Bo = fb.mats["W_out"]
        e2 = torch.einsum("...bd,...od->...bo", torch.einsum("...bo,...od->...bd", cc.o - y, Bo), Bo)
        g = torch.einsum("...bd,...bo->...do", cc.mean, e2)
        out["W_out"] = g.expand_as(out["W_out"]).contiguous()
        return out

    monkeypatch.setattr(fa, "backward_weights", roundtrip)
    with pytest.raises(AssertionError, match="is not backprop|readout's FA gradient differs"):
        cert_f.test_fa_at_bp_operating_point(backend=CPU64, record=rec("fa.upstream_failure"), golden=no_golden)


def test_recursion_without_ln_jacobian_fails(monkeypatch):
    """The backward recursion passes the error through LN2 unchanged (its Jacobian dropped)."""
    monkeypatch.setattr(fa, "layer_norm_vjp", lambda x, y, dy, absolute=False: dy.abs() if absolute else dy)
    with pytest.raises(AssertionError, match="is not backprop"):
        cert_f.test_fa_at_bp_operating_point(backend=CPU64, record=rec("fa.upstream_failure"), golden=no_golden)


def test_aep_correction_dropped_fails_ep_groups(monkeypatch):
    """AEP without its correction (= plain EP) on the non-conservative ThickBlocks: some group's
    cosine falls below 0.99."""
    monkeypatch.setattr(est, "aep_correction", lambda two_A, z, z0: torch.zeros_like(z))
    with pytest.raises(AssertionError, match="aep cosine below 0.99"):
        cert_f.test_ep_aep_per_group(backend=CPU64, record=rec("fa.upstream_failure"), golden=no_golden)
