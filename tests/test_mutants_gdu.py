"""The ep.gdu certificates can fail: mutants planted in models.ep.rnn (the SUT) and in
properties.gdu (the BPTT reference), by monkeypatching, must make the matching check of
certify/test_gdu.py raise AssertionError."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from certify import test_gdu as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models.ep import rnn
from properties import gdu as ref
from properties.gdu import GDUCase

CPU64 = Backend("cpu", "float64")
UNTIED_CASE = GDUCase("untied", n=4, n_in=2, n_out=1, K=3, coupling=0.7, input_scale=1.5, eps=0.5, seed=11)
PROTO_CASE = GDUCase("prototypical", n=3, n_in=1, n_out=2, K=3, coupling=0.8, input_scale=2.0, eps=0.5, seed=5)
PRIM_CASE = GDUCase("primitive", n=5, n_in=2, n_out=1, K=4, coupling=0.7, input_scale=1.0, eps=0.75, seed=3)


@pytest.fixture(autouse=True)
def fresh_canonical_cache():
    """certify.test_gdu caches its canonical runs: a mutant must recompute them (and leave none behind)."""
    cert.canonical.cache_clear()
    yield
    cert.canonical.cache_clear()


def no_golden(*args, **kwargs) -> None:
    return None


def _primitive_canonical(match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        cert.test_gdu_primitive_canonical(backend=CPU64, record=Recorder(cert.PRIMITIVE_CLAIM), golden=no_golden)


def _prototypical_canonical(match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        cert.test_gdu_prototypical_canonical(backend=CPU64, record=Recorder(cert.CLAIM), golden=no_golden)


def _property(test, case: GDUCase, cid: str, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        test.hypothesis.inner_test(case=case, backend=CPU64, record=Recorder(cid))


def test_unmutated_cases_pass():
    """The fixed cases below pass without a mutant (so each failure is the mutant's)."""
    cert.test_gdu_primitive_property.hypothesis.inner_test(case=PRIM_CASE, backend=CPU64,
                                                           record=Recorder(cert.PRIMITIVE_CLAIM))
    for case in (PROTO_CASE, UNTIED_CASE):
        cert.test_gdu_prototypical_property.hypothesis.inner_test(case=case, backend=CPU64,
                                                                  record=Recorder(cert.CLAIM))


# --------------------------------------------------------------------------- #
# SUT mutants (models.ep.rnn)
# --------------------------------------------------------------------------- #
def _nudged_from_zero(monkeypatch) -> None:
    """The nudged phase starts from s = 0 instead of the free fixed point."""
    orig = rnn.nudged_phase
    monkeypatch.setattr(rnn, "nudged_phase",
                        lambda model, start, betas, K: orig(model, torch.zeros_like(start), betas, K))


def test_nudged_phase_from_zero_fails(monkeypatch):
    _nudged_from_zero(monkeypatch)
    _primitive_canonical("EP updates at beta")


def test_nudged_phase_from_zero_fails_property(monkeypatch):
    _nudged_from_zero(monkeypatch)
    _property(cert.test_gdu_primitive_property, PRIM_CASE, cert.PRIMITIVE_CLAIM, "EP updates at beta")
    _property(cert.test_gdu_prototypical_property, PROTO_CASE, cert.CLAIM, "EP updates at beta")


def _few_free_steps(monkeypatch) -> None:
    """The free phase stops after K + 1 steps, far from convergence."""
    orig = rnn.free_phase
    monkeypatch.setattr(rnn, "free_phase", lambda model, T, K: orig(model, K + 1, K))


def test_free_phase_not_converged_fails(monkeypatch):
    _few_free_steps(monkeypatch)
    _primitive_canonical("free phase ended")


def test_free_phase_not_converged_fails_property(monkeypatch):
    _few_free_steps(monkeypatch)
    _property(cert.test_gdu_prototypical_property, PROTO_CASE, cert.CLAIM, "free phase ended")
    _property(cert.test_gdu_prototypical_property, UNTIED_CASE, cert.CLAIM, "free phase ended")


def _without_one_over_beta(monkeypatch) -> None:
    """Delta^EP = s_{t+1} - s_t (and the dPhi/dtheta difference) without the division by beta."""
    orig = rnn.ep_updates

    def no_division(model, states, betas):
        out = orig(model, states, betas)
        b = out.betas[None, :, None]
        return dataclasses.replace(out, ds=out.ds * b, dtheta=out.dtheta * b)

    monkeypatch.setattr(rnn, "ep_updates", no_division)


def test_ep_update_without_1_over_beta_fails(monkeypatch):
    _without_one_over_beta(monkeypatch)
    _primitive_canonical("EP updates at beta")


def test_ep_update_without_1_over_beta_fails_property(monkeypatch):
    _without_one_over_beta(monkeypatch)
    _property(cert.test_gdu_prototypical_property, PROTO_CASE, cert.CLAIM, "EP updates at beta")


def test_ep_update_without_1_over_beta_fails_order(monkeypatch):
    """With the identity checks (f, b, u) out of the way, the beta-checks (o) still see it: the
    mismatch tends to ||grad^BPTT|| instead of 0 (at t = 0 of the s part, exact zero in the SUT, it
    is (1 - beta) ||dl/ds||: far above the rounding floor; elsewhere order 0, not 1 or 2)."""
    _without_one_over_beta(monkeypatch)
    monkeypatch.setattr(cert, "identity_checks", lambda run: None)
    _primitive_canonical("exceeds its rounding floor|is not of order|unresolved")


# --------------------------------------------------------------------------- #
# reference mutant (properties.gdu): the adjoint recursion without its transpose
# --------------------------------------------------------------------------- #
def _adjoint_without_transpose(monkeypatch) -> None:
    """lambda <- J lambda instead of J^T lambda in the BPTT reference."""
    monkeypatch.setattr(ref, "adjoint_step", lambda J, lam: ref._mv(J, lam))


def test_bptt_reference_missing_transpose_fails_untied(monkeypatch):
    """Asymmetric W: the transpose matters in W itself."""
    _adjoint_without_transpose(monkeypatch)
    _property(cert.test_gdu_prototypical_property, UNTIED_CASE, cert.CLAIM, "BPTT gradients differ")


def test_bptt_reference_missing_transpose_fails_prototypical(monkeypatch):
    """Symmetric W, but dF/ds = diag(tanh') W is not symmetric: the transpose matters there too."""
    _adjoint_without_transpose(monkeypatch)
    _prototypical_canonical("BPTT gradients differ")


def test_bptt_reference_missing_transpose_hides_the_counterexample(monkeypatch):
    """Without the transpose the reference's BPTT would be -(D W)^t dl/ds = Lambda(t): the gap would
    vanish; the counterexample search then finds nothing and says so (never a silent `verified`)."""
    _adjoint_without_transpose(monkeypatch)
    with pytest.raises(AssertionError, match="no prototypical RNN with a certified EP-BPTT gap"):
        cert.test_gdu_counterexample(backend=CPU64, record=Recorder(cert.CLAIM))


def test_bptt_reference_missing_transpose_invisible_on_symmetric_jacobian(monkeypatch):
    """For the primitive-function RNN dF/ds is symmetric, so this mutant cannot be seen there: the
    asymmetric variants above are what catches it."""
    _adjoint_without_transpose(monkeypatch)
    cert.test_gdu_primitive_property.hypothesis.inner_test(case=PRIM_CASE, backend=CPU64,
                                                           record=Recorder(cert.PRIMITIVE_CLAIM))
