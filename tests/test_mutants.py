"""The suite can fail: mutants planted in the SUT or the certificate code (monkeypatched,
never by editing files) must make the matching certificate fail.

Each test calls the certificate exactly as pytest would (the hypothesis search included)
and expects its assertion to fire.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from certify import sut
from certify import test_backend as cert_b
from certify import test_eb as cert_eb
from certify import test_richardson as cert_r
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models import eb as eb_mod
from models import richardson as rich_mod
from properties import richardson as prop_r

# checkpoints are trained by the unmutated code before any mutant is planted (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("standard_checkpoints")

CPU64 = Backend("cpu", "float64")


def rec(cid: str) -> Recorder:
    return Recorder(cid)


@pytest.fixture
def fresh_sut_caches():
    """Metric caches of certify.sut hold SUT outputs: a mutant must recompute them."""
    sut.table2.cache_clear()
    sut.heldout_losses.cache_clear()
    yield
    sut.table2.cache_clear()
    sut.heldout_losses.cache_clear()


def _transposed_apply(P: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    if P.dim() == 2:
        return r @ P  # P^T r instead of P r
    return torch.bmm(P.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)


def _one_step_short(self, H, d, x0=None, trajectory=False):
    x = torch.zeros_like(d) if x0 is None else x0
    xs = [x]
    for _ in range(max(self.L - 1, 0)):
        x = x + self.precond.update(x, H, d)
        xs.append(x)
    xs.append(x)  # still reports L + 1 iterates
    return xs if trajectory else x


def _float32_leak(P: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    out = rich_mod.__dict__["_orig_apply"](P.float(), r.float())
    return out.to(r.dtype)


def test_transposed_P_fails_identity(monkeypatch):
    monkeypatch.setattr(rich_mod, "apply", _transposed_apply)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert_r.test_richardson_identity(backend=CPU64, record=rec("richardson.identity"))


def test_one_iteration_too_few_fails_identity(monkeypatch):
    monkeypatch.setattr(models.RichardsonDecoder, "forward", _one_step_short)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert_r.test_richardson_identity(backend=CPU64, record=rec("richardson.identity"))


def test_one_iteration_too_few_fails_closed_form(monkeypatch):
    monkeypatch.setattr(models.RichardsonDecoder, "forward", _one_step_short)
    with pytest.raises(AssertionError, match="z_L"):
        cert_r.test_richardson_closed_form(backend=CPU64, record=rec("richardson.closed_form"))


def test_plain_float_norm_fails_norm_bound(monkeypatch):
    def float_rho(P, H):
        return float(np.linalg.norm(np.eye(H.shape[0]) - np.asarray(P, np.float64) @ np.asarray(H, np.float64), 2))

    monkeypatch.setattr(prop_r, "rho_upper", float_rho)
    with pytest.raises(AssertionError, match="below a rigorous lower bound"):
        cert_r.test_richardson_norm_bound(backend=CPU64, record=rec("richardson.norm_bound"))


def test_transposed_P_fails_certified_risk(monkeypatch):
    monkeypatch.setattr(rich_mod, "apply", _transposed_apply)
    with pytest.raises(AssertionError, match="certified risk"):
        cert_r.test_richardson_certified_risk(backend=CPU64, record=rec("richardson.certified_risk"))


def test_transposed_P_drifts_table2_golden(monkeypatch, fresh_sut_caches):
    """The measured part of richardson.certified_risk: the pinned Table 2 metrics move."""
    monkeypatch.setattr(rich_mod, "apply", _transposed_apply)
    store = GoldenStore(GOLDEN_DIR, CPU64.name)

    def golden(family, metrics, rtol, atol=0.0, seeds=None, seed=None):
        store.check(family, metrics, rtol, atol, seeds)

    with pytest.raises((GoldenDrift, AssertionError)):
        cert_r.test_checkpoint_table2("free_linear", backend=CPU64, record=rec("richardson.certified_risk"),
                                      golden=golden)


@pytest.mark.parametrize("constant", [7 / 6])
def test_bernstein_constant_fails_formula(monkeypatch, constant):
    monkeypatch.setattr(eb_mod, "BERNSTEIN_CONSTANT", constant)
    with pytest.raises(AssertionError, match="EB bound"):
        cert_eb.test_eb_formula_matches_mpmath(record=rec("eb.formula"))


def test_ddof0_fails_formula(monkeypatch):
    monkeypatch.setattr(eb_mod, "VARIANCE_DDOF", 0)
    with pytest.raises(AssertionError, match="EB bound"):
        cert_eb.test_eb_formula_matches_mpmath(record=rec("eb.formula"))


def test_ddof0_fails_heldout(monkeypatch, fresh_sut_caches):
    monkeypatch.setattr(eb_mod, "VARIANCE_DDOF", 0)
    with pytest.raises(AssertionError, match="reported EB"):
        cert_eb.test_eb_heldout_checkpoints("flexformer", backend=CPU64, record=rec("eb.heldout"),
                                            golden=lambda *a, **k: None)


def test_bound_without_range_term_fails_coverage(monkeypatch):
    """Dropping the 7c log(2/delta)/(3(n-1)) term leaves a bound of 0 whenever all n
    losses are 0, which for Bernoulli(0.05) at small n happens far more often than delta."""
    monkeypatch.setattr(eb_mod, "BERNSTEIN_CONSTANT", 0.0)
    with pytest.raises(AssertionError, match="trials had true clipped risk above"):
        cert_eb.test_eb_coverage_binomial(record=rec("eb.coverage"))


def test_mean_as_bound_fails_coverage_grid(monkeypatch):
    def mean_only(losses, c, delta):
        x = np.minimum(np.asarray(losses, np.float64), c)
        return x.mean(axis=-1)

    monkeypatch.setattr(eb_mod, "eb_upper_batch", mean_only)
    with pytest.raises(AssertionError, match="coverage rejected"):
        cert_eb.test_eb_coverage_against_delta(1, record=rec("eb.coverage"))


def test_float32_leak_fails_backend_agreement(monkeypatch):
    """A SUT that silently computes in float32 cannot meet the float64 tolerance."""
    monkeypatch.setitem(rich_mod.__dict__, "_orig_apply", rich_mod.apply)
    monkeypatch.setattr(rich_mod, "apply", _float32_leak)
    with pytest.raises(AssertionError, match="cpu-float64"):
        cert_b.test_identities_on_every_backend(record=rec("backend.agreement"))
