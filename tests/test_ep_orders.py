"""certify.ep_orders: the beta grid holds settled nudged phases only, and the premise-cut
(basin-limited) exception of `check_orders` cannot hide a wrong order or a broken nudged phase.

The case: 003's pre-LN "thick" block at width d = 2, where LayerNorm is nearly a sign function
(||J|| ~ 270 against ||J^-1|| ~ 1): its AEP nudged phases settle only from beta_0 2^-17, and before
the grid kept only the first grid point's residual in check, the unsettled phases above that
(errors ~1e135) entered the order fit as if they were estimates."""

from __future__ import annotations

import pytest
import torch

from certify import ep_blocks as eb
from certify import ep_orders as eo
from certify.backend import Backend
from certify.plugin import Recorder
from certify.test_ep import prepare
from models.ep import estimators as est
from models.ep import solvers
from properties.ep import EPCase

CPU64 = Backend("cpu", "float64")
NARROW_LN = EPCase("thick", 2, 2, 1, 1, 0, c=1.0)


@pytest.fixture(scope="module")
def narrow():
    blk, x, y, z0, J, g = prepare(NARROW_LN, CPU64)
    sc = eo.scales(blk, x, y, z0, J, g, "vf")
    tol = eb.free_tol(x, CPU64)
    nd = est.Nudger(blk, x, y, z0, est.EPConfig("aep", "vf", solver="chord", steps=60, tol=tol))
    return nd, g, sc, tol


def test_grid_keeps_only_settled_points(narrow) -> None:
    nd, g, sc, tol = narrow
    run = eo.run_orders(nd, g, sc, CPU64.unit_roundoff, tol)
    assert run.start_halvings > eo.START_HALVINGS and run.basin_limited
    assert run.betas and run.nudged_residual <= tol
    rec = Recorder("aep.exact_gradient")
    f1, f2 = eo.check_orders(rec, run, "AEP", NARROW_LN, "float64")
    assert f1.contains(1.0)  # the one-sided fit still resolves, and is still checked
    assert rec.ops["order_basin_limited_examples"] == ("sum", 1)


def test_basin_limited_grid_still_checks_a_resolved_order(narrow, monkeypatch) -> None:
    """Mutant: the readout's h(beta) left undivided; the one-sided fit resolves to order 0 and fails
    although the example is basin-limited."""
    nd, g, sc, tol = narrow
    orig = est.Nudger.readout
    monkeypatch.setattr(est.Nudger, "readout", lambda self, ph, at=None: orig(self, ph, at) * abs(ph.beta))
    run = eo.run_orders(nd, g, sc, CPU64.unit_roundoff, tol)
    assert run.basin_limited
    with pytest.raises(AssertionError, match="error is not O\\(beta"):
        eo.check_orders(Recorder("aep.exact_gradient"), run, "AEP", NARROW_LN, "float64")


def test_nudged_phases_that_never_settle_fail(narrow, monkeypatch) -> None:
    """Mutant: a chord solver that reports the residual of its start (it never iterates)."""
    nd, g, sc, tol = narrow
    orig = solvers.chord
    monkeypatch.setattr(solvers, "chord", lambda G, z, J, steps, tol: orig(G, z, J, steps=0, tol=tol))
    run = eo.run_orders(nd, g, sc, CPU64.unit_roundoff, tol)
    assert not run.betas
    with pytest.raises(AssertionError, match="settle at no beta"):
        eo.check_orders(Recorder("aep.exact_gradient"), run, "AEP", NARROW_LN, "float64")


def test_unresolved_without_a_premise_cut_fails_in_float64() -> None:
    """A grid that settled from beta_0 on but whose errors never reach a power law (noise) is a
    float64 failure, and only a float32 example may stay undecided for it."""
    gen = torch.Generator().manual_seed(0)
    betas = [2.0**-k for k in range(10)]
    noise = (1 + torch.rand(10, generator=gen, dtype=torch.float64)).tolist()
    run = eo.OrderRun(betas=betas, one=noise, sym=noise[::-1], floor_one=[1e-12] * 10, floor_sym=[1e-12] * 10)
    assert not run.basin_limited
    with pytest.raises(AssertionError, match="did not reach its asymptotic regime"):
        eo.check_orders(Recorder("aep.exact_gradient"), run, "AEP", "noise", "float64")
    eo.check_orders(Recorder("aep.exact_gradient"), run, "AEP", "noise", "float32")
