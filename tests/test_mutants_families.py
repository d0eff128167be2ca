"""Mutants of the GP/KRR and PDE decoder certificates (gp.method_comparison,
pde.method_comparison, sweep.scaling, eb.heldout and overlap.reconstruction on the family
checkpoints): each planted by monkeypatch (never by editing files) must make its check fail.

The trained checkpoints come from the cache (the mutants act when the frozen decoder runs or
when its metrics are computed), so the per-process SUT caches are cleared around each test.
"""

from __future__ import annotations

import pytest
import torch

from certify import sut_families as sf
from certify import sut_overlap
from certify import test_eb as cert_eb
from certify import test_gp as cert_gp
from certify import test_overlap as cert_o
from certify import test_pde as cert_pde
from certify import test_sweep as cert_s
from certify.backend import Backend
from certify.golden import GOLDEN_DIR, GoldenDrift, GoldenStore
from certify.plugin import Recorder
from models import eb as eb_mod
from models import overlap as overlap_mod
from models import pde as pde_mod
from models import preconditioners as pcs
from models import richardson as rich_mod

# checkpoints are trained by the unmutated code before any mutant is planted (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("standard_checkpoints")

CPU64 = Backend("cpu", "float64")


@pytest.fixture(autouse=True)
def fresh_tables():
    caches = (sf.table, sf.losses, sf.e2e_losses, sut_overlap.trajectory)
    for c in caches:
        c.cache_clear()
    yield
    for c in caches:
        c.cache_clear()


def golden_of(backend: Backend):
    """The `golden` fixture's comparison against the shipped golden files."""
    store = GoldenStore(GOLDEN_DIR, backend.name)

    def golden(family, metrics, rtol, atol=0.0, seeds=None, seed=None, setup=None):
        store.check(family, metrics, rtol, atol, seeds, {}, setup)

    return golden


def no_golden(*args, **kwargs) -> None:
    return None


def _residual_sign_flipped(z, H, d):
    return (H @ z.unsqueeze(-1)).squeeze(-1) - d  # x <- x - P(d - Hx): the iteration runs away


def _half_free_P(self):
    return 0.5 * self.P  # the free class runs half of its learned step


# --- gp.method_comparison / pde.method_comparison -------------------------------------------

def test_runaway_iteration_violates_the_norm_bound(monkeypatch):
    monkeypatch.setattr(rich_mod, "residual", _residual_sign_flipped)
    with pytest.raises(AssertionError, match="violate 000 eq 4"):
        cert_gp.test_gp_method_row(64, "free_linear", backend=CPU64, record=Recorder("gp.method_comparison"),
                                   golden=no_golden)


def test_runaway_iteration_fails_the_pde_table(monkeypatch):
    """On the PDE decoders ||I - P H||_2 reaches ~3 although the errors contract, so 000 eq 4
    is loose there (error/bound ~1e-4) and a runaway iteration can stay under it; the pinned
    end-to-end MSE catches it."""
    monkeypatch.setattr(rich_mod, "residual", _residual_sign_flipped)
    with pytest.raises(AssertionError, match="violate 000 eq 4|e2e_mse"):
        cert_pde.test_pde_method_row(4, "free_linear", backend=CPU64, record=Recorder("pde.method_comparison"),
                                     golden=golden_of(CPU64))


@pytest.mark.parametrize("family, size, cert", [("gp", 64, cert_gp.test_gp_method_row),
                                                ("pde", 16, cert_pde.test_pde_method_row)])
def test_halved_free_P_drifts_the_pinned_table(monkeypatch, family, size, cert):
    """Still a convergent decoder (the norm bound holds for the P it runs), but the pinned
    risks move far outside their sqrt(u) band."""
    monkeypatch.setattr(pcs.FreeLinear, "matrix", _half_free_P)
    with pytest.raises(GoldenDrift, match="risk|mse"):
        cert(size, "free_linear", backend=CPU64, record=Recorder(f"{family}.method_comparison"),
             golden=golden_of(CPU64))


@pytest.mark.parametrize("family, size, cert", [("gp", 64, cert_gp.test_gp_best_method),
                                                ("pde", 16, cert_pde.test_pde_best_method)])
def test_crippled_free_P_is_not_the_best(monkeypatch, family, size, cert):
    """"best = free_linear" is checked, not assumed: a free class that runs a tenth of its step
    loses the ranking, and the certificate reports the claim disproved with the counterexample."""
    monkeypatch.setattr(pcs.FreeLinear, "matrix", lambda self: 0.1 * self.P)
    record = Recorder(f"{family}.method_comparison")
    cert(size, backend=CPU64, record=record)
    assert [v["status"] for v in record.verdicts] == ["disproved"], record.verdicts
    assert record.verdicts[0]["counterexample"]["best"] != "free_linear"


def test_encoder_without_ridge_term_drifts_pde_table(monkeypatch):
    """The encoder (not the decoder) mutated: z_enc by the squared ridge parameter moves the
    z MSE, the A error and the floor of the PDE table."""
    def ridge_squared(G, b, lam):
        S = G.mT @ G + lam**2 * torch.eye(G.shape[-1], device=G.device, dtype=G.dtype)
        return S, (G.mT @ b.unsqueeze(-1)).squeeze(-1)

    monkeypatch.setattr(pde_mod, "ridge_system", ridge_squared)
    sf.heldout.cache_clear()
    try:
        with pytest.raises(GoldenDrift, match="z_mse|A_rel_err|floor_mse"):
            cert_pde.test_pde_method_row(4, "free_linear", backend=CPU64, record=Recorder("pde.method_comparison"),
                                         golden=golden_of(CPU64))
    finally:
        sf.heldout.cache_clear()


# --- sweep.scaling --------------------------------------------------------------------------

def test_runaway_iteration_fails_a_sweep_row(monkeypatch):
    monkeypatch.setattr(rich_mod, "residual", _residual_sign_flipped)
    with pytest.raises(AssertionError, match="violate 000 eq 4"):
        cert_s.test_sweep_row("gp", 16, "diagonal", sf.DEFAULT_L, backend=CPU64, record=Recorder("sweep.scaling"),
                              golden=no_golden)


def test_halved_free_P_drifts_a_sweep_row(monkeypatch):
    monkeypatch.setattr(pcs.FreeLinear, "matrix", _half_free_P)
    with pytest.raises(GoldenDrift, match="risk"):
        cert_s.test_sweep_row("pde", 4, "free_linear", sf.DEFAULT_L, backend=CPU64, record=Recorder("sweep.scaling"),
                              golden=golden_of(CPU64))


# --- eb.heldout on the family checkpoints -----------------------------------------------------

@pytest.mark.parametrize("family, size", [("gp", 64), ("pde", 4)])
def test_ddof0_fails_family_heldout_eb(monkeypatch, family, size):
    monkeypatch.setattr(eb_mod, "VARIANCE_DDOF", 0)
    with pytest.raises(AssertionError, match="reported EB"):
        cert_eb.test_eb_heldout_family_checkpoints(family, size, "flexformer", backend=CPU64,
                                                   record=Recorder("eb.heldout"), golden=no_golden)


# --- overlap.reconstruction on the GP and PDE trajectories -------------------------------------

@pytest.mark.parametrize("family, size", [("gp", 64), ("pde", 16)])
def test_wrong_binomial_sign_fails_family_trajectory(monkeypatch, family, size):
    monkeypatch.setattr(overlap_mod, "binomial_weights", lambda l: [1] * (l + 1))
    with pytest.raises(AssertionError, match="reconstruction|reconstructed"):
        cert_o.test_overlap_trajectory(family, size, "free_linear", backend=CPU64,
                                       record=Recorder("overlap.reconstruction"), golden=no_golden)
