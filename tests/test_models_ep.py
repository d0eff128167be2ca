"""The EP core (models.ep.blocks, solvers, estimators, references): forces, holomorphy, solvers,
the matrix-free correction, the estimators' bookkeeping, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from models.ep import blocks
from models.ep import estimators as est
from models.ep import references as refs
from models.ep import solvers

DT = torch.float64


def _data(T=3, d=4, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d, generator=g, dtype=DT), torch.randn(B, 2, generator=g, dtype=DT)


@pytest.mark.parametrize("heads", [1, 2])
def test_energy_force_is_minus_grad_energy(heads):
    blk = blocks.EnergyBlock(3, 4, 2, heads=heads, memories=3, seed=2)
    x, _ = _data()
    z = torch.randn_like(x, requires_grad=True)
    (gE,) = torch.autograd.grad(blk.energy(z, x).sum(), z)
    assert torch.allclose(blk.force(z.detach(), x), -gE, atol=1e-13, rtol=1e-12)


def test_energy_jacobian_symmetric_and_skew_block_antisymmetric_part_is_alpha_omega():
    x, _ = _data(B=1)
    e = blocks.EnergyBlock(3, 4, 2, memories=2, seed=3)
    z = torch.randn_like(x) * 0.3
    J = solvers.jacobian(est.free_force(e, x), z)
    assert float((J - J.mT).abs().max()) < 1e-14
    sk = blocks.SkewedEnergyBlock(3, 4, 2, memories=2, seed=3, alpha=0.4)
    Js = solvers.jacobian(est.free_force(sk, x), z)
    sk.alpha = 0.0  # the same block without its drift: conservative again
    J = solvers.jacobian(est.free_force(sk, x), z)
    assert float((J - J.mT).abs().max()) < 1e-14
    expected = 0.4 * torch.kron(torch.eye(3, dtype=DT), sk.Omega.mT.contiguous())  # z Omega per token: d/dz = I (x) Omega^T
    assert torch.allclose(Js - J, expected, atol=1e-14)
    assert float(torch.linalg.matrix_norm(sk.Omega, 2)) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("cls", [blocks.EnergyBlock, blocks.DampedAttention, blocks.ThickBlock])
def test_forces_are_holomorphic(cls):
    """At a complex state z + i t v the force's imaginary part is t J v + O(t^3): the code path
    for complex states is the analytic continuation of the real one."""
    blk = cls(3, 4, 2, seed=4) if cls is not blocks.ThickBlock else cls(3, 4, 2, seed=4, causal=False)
    x, _ = _data()
    z = 0.5 * torch.randn_like(x)
    v = torch.randn_like(x)
    t = 1e-6
    Fc = blk.force(torch.complex(z, t * v), x)
    J = solvers.jacobian(est.free_force(blk, x), z)
    assert torch.allclose(Fc.real, blk.force(z, x), atol=1e-9)
    assert torch.allclose(Fc.imag / t, (J @ v.reshape(-1)).reshape(v.shape), atol=1e-8)


def test_layer_norm_and_softmax_helpers():
    u = torch.randn(2, 5, 6, dtype=DT)
    ln = blocks.layer_norm(u)
    assert torch.allclose(ln.mean(-1), torch.zeros(2, 5, dtype=DT), atol=1e-14)
    mask = blocks.causal_mask(5, u.device)
    A = blocks.softmax(u[..., :5], mask)
    assert torch.allclose(A.sum(-1), torch.ones(2, 5, dtype=DT)) and float(A[..., 0, 1:].abs().max()) == 0.0
    assert torch.allclose(blocks.log_cosh(torch.tensor([800.0, -3.0, 0.0], dtype=DT)),
                          torch.tensor([800 - math.log(2), math.log(math.cosh(3.0)), 0.0], dtype=DT))


@pytest.mark.parametrize("solver", ["newton", "anderson", "euler"])
def test_free_phase_solvers_converge_to_one_equilibrium(solver):
    blk = blocks.DampedAttention(3, 4, 2, seed=5)
    x, _ = _data()
    ref = est.free_phase(blk, x, solver="newton", tol=1e-14).z
    ph = est.free_phase(blk, x, solver=solver, eps=0.3, steps=2000 if solver == "euler" else 300, tol=1e-12)
    assert ph.solve.residual <= 1e-12 and float((ph.z - ref).abs().max()) < 1e-10


def test_free_phase_reports_non_convergence():
    blk = blocks.DampedAttention(3, 4, 2, seed=5)
    x, _ = _data()
    with pytest.raises(est.NotConverged, match="residual"):
        est.free_phase(blk, x, solver="euler", eps=0.1, steps=2, tol=1e-12)
    ph = est.free_phase(blk, x, solver="euler", eps=0.1, steps=2, tol=1e-12, require=False)
    assert ph.solve.residual > 1e-12 and ph.solve.steps == 2


def test_chord_and_newton_agree_on_a_nudged_phase():
    blk = blocks.DampedAttention(3, 4, 2, seed=6)
    x, y = _data()
    z0 = est.free_phase(blk, x).z
    a = est.Nudger(blk, x, y, z0, est.EPConfig("aep", "vf", solver="chord", steps=60, tol=1e-15)).phase(0.01)
    b = est.Nudger(blk, x, y, z0, est.EPConfig("aep", "vf", solver="newton", steps=30, tol=1e-15)).phase(0.01)
    assert float((a.z - b.z).abs().max()) < 1e-13


def test_matrix_free_product_equals_dense_antisymmetric_part():
    blk = blocks.ThickBlock(3, 4, 2, seed=7, causal=False)
    x, _ = _data()
    z = torch.randn_like(x)
    F = est.free_force(blk, x)
    J = solvers.jacobian(F, z)
    v = torch.randn_like(x)
    two_A = est.antisymmetric_product(F, z)
    assert torch.allclose(two_A(v).reshape(-1), (J - J.mT) @ v.reshape(-1), atol=1e-13)
    assert torch.allclose(est.antisymmetric_matrix(F, z), J - J.mT, atol=1e-13)
    w = torch.complex(v, torch.randn_like(v))
    assert torch.allclose(two_A(w), torch.complex(two_A(v), two_A(w.imag)))


def test_cauchy_weights_read_out_the_first_coefficient():
    """(1/N) sum_k h(beta_k)/beta_k = h_1 + h_{N+1} r^N + ... for h(b) = sum_n h_n b^n."""
    h = [0.0, 1.5, -2.0, 0.7, 3.0]
    for N in (2, 3, 5):
        betas, ws = est.cauchy_weights(0.1, N)
        val = sum(w * sum(c * b**n for n, c in enumerate(h)) for b, w in zip(betas, ws))
        expected = h[1] + sum(h[n] * 0.1 ** (n - 1) for n in range(len(h)) if n > 1 and (n - 1) % N == 0)
        assert abs(val - expected) < 1e-14


def test_references_agree_at_convergence_and_plain_limit_differs():
    blk = blocks.DampedAttention(3, 4, 2, seed=8)
    x, y = _data()
    z0 = est.free_phase(blk, x).z
    g = refs.ift_gradient(blk, x, y, z0)
    gb = refs.bptt_gradient(blk, x, y, z0, 0.3, 400)
    assert float((g - gb).norm() / g.norm()) < 1e-12
    gp = refs.ift_gradient(blk, x, y, z0, transpose=False)
    assert float((gp - g).norm() / g.norm()) > 1e-3  # non-conservative: J^-1 != J^-T


def test_group_slices_cover_the_parameters_once():
    blk = blocks.ThickBlock(3, 4, 2, seed=9)
    n = sum(p.numel() for p in blk.parameters())
    idx = [i for sl in est.group_slices(blk).values() for s in sl for i in range(s.start, s.stop)]
    assert sorted(idx) == list(range(n))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="T, d and d_out"):
        blocks.EnergyBlock(0, 4)
    with pytest.raises(ValueError, match="kappa"):
        blocks.EnergyBlock(2, 2, kappa=0.0)
    with pytest.raises(ValueError, match="multiple of heads"):
        blocks.ThickBlock(2, 5, heads=2)
    blk = blocks.DampedAttention(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"state must be \(B, 2, 3\)"):
        blk.force(torch.zeros(1, 3, 3, dtype=DT), torch.zeros(1, 3, 3, dtype=DT))
    with pytest.raises(ValueError, match="correction"):
        est.EPConfig(correction="frozen")
    with pytest.raises(ValueError, match="readout"):
        est.EPConfig(readout="energy")
    with pytest.raises(ValueError, match="steps"):
        solvers.euler(lambda z: -z, torch.zeros(1, 2, dtype=DT), 0.1, -1)
    x, y = _data()
    z0 = est.free_phase(blocks.DampedAttention(3, 4, 2, seed=1), x).z
    nd = est.Nudger(blocks.DampedAttention(3, 4, 2, seed=1), x, y, z0, est.EPConfig("tracking", "vf", solver="anderson"))
    with pytest.raises(ValueError, match="pair"):
        nd.phase(0.1)
    with pytest.raises(ValueError, match="no energy"):
        est.dE_dtheta(blocks.DampedAttention(3, 4, 2, seed=1), z0, x)
