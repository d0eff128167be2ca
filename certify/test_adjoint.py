"""Family F: the finite-set adjoint gradient of the Flexformer decoder (000 sec 9, eqs 18-24).

SUT: models.adjoint (forward, adjoint recursion, DP^* vector-Jacobian product) with the
Flexformer of models.preconditioners at seeded inits (K 2..16, both kernels) and at its trained
checkpoints on held-out tasks: the least-squares decoder (certify.sut, K = 8) and the GP/KRR
(K = 4) and PDE (K = 24) decoders of certify.sut_families.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st, target

import models
from certify import sut
from models import adjoint as adj
from models import gp as gp_mod
from properties import adjoint as ref
from properties.reference.normbound import rho_upper
from properties.strategies import CHECKPOINT_FAMILIES, SEEDS
from properties.tolerances import gamma


@dataclass(frozen=True)
class AdjointCase:
    source: str  # "init" or "checkpoint"
    K: int
    L: int
    N: int
    seed: int
    kernel: str = "exp"
    task: int = 0
    family: str = "lsq"  # checkpoint family: least squares, GP/KRR posterior latents, PDE queries
    size: int = 0


@st.composite
def adjoint_cases(draw) -> AdjointCase:
    source = draw(st.sampled_from(("init", "checkpoint")))
    L = draw(st.integers(1, 8))
    N = draw(st.integers(1, 8))
    seed = draw(SEEDS)
    if source == "checkpoint":
        family = draw(st.sampled_from(tuple(CHECKPOINT_FAMILIES)))
        size = draw(st.sampled_from(CHECKPOINT_FAMILIES[family]))
        return AdjointCase(source, 0, L, N, seed, task=draw(st.integers(0, 500)), family=family, size=size)
    return AdjointCase(source, draw(st.sampled_from(range(2, 17))), L, N, seed,
                       kernel=draw(st.sampled_from(("exp", "rbf"))))


def materialize(case: AdjointCase, backend):
    """(Flexformer with grads enabled, H (N,K,K), d (N,K), z* (N,K))."""
    dev, dt = backend.device, backend.torch_dtype
    if case.source == "checkpoint":
        dec, held = sut.checkpoint(case.family, case.size, "flexformer", backend)
        pc = copy.deepcopy(dec.precond)
        tasks = held[slice(case.task, case.task + case.N)]
        H, d, zs = tasks.H, tasks.d, tasks.xstar
    else:
        pc = models.Flexformer(case.K, device=dev, dtype=dt, seed=case.seed, m=8, kernel=case.kernel)
        prompts = models.LeastSquaresPrompts(models.TaskConfig(K=case.K, M=4 * case.K, kappa=20.0), dev, dt)
        tasks = prompts.sample(case.N, case.seed)
        H, d, zs = tasks.H, tasks.d, tasks.xstar
    pc.requires_grad_(True)
    return pc, H, d, zs


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


def _jacobian_terms(pc, G: torch.Tensor) -> tuple[float, float]:
    """(||J||_F, || |J|^T |G| ||_2) of theta -> P_theta (J by reverse mode, K^2 VJPs)."""
    params = list(pc.parameters())
    P = pc.matrix()
    K = P.shape[0]
    rows = []
    for idx in range(K * K):
        e = torch.zeros(K * K, dtype=P.dtype, device=P.device)
        e[idx] = 1
        gs = torch.autograd.grad(P, params, grad_outputs=e.view(K, K), retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    J = torch.stack(rows)
    Jn = float(torch.linalg.norm(J.double()))
    absvjp = float(torch.linalg.norm(J.double().abs().T @ G.double().abs().reshape(-1)))
    return Jn, absvjp


@pytest.mark.claim("flexformer.adjoint_gradient")
@given(case=adjoint_cases())
def test_adjoint_gradient(case: AdjointCase, backend, record) -> None:
    """flexformer.adjoint_gradient: "finite-set recursion (000 eqs 20-24): lambda_{i,L} =
    (z_{i,L} - z_i*)/(NK), lambda_{i,l} = (I - P H_i)^T lambda_{i,l+1}, grad_P L_N = sum_i sum_l
    lambda_{i,l+1} r_{i,l}^T, theta-gradient = DP*[grad_P]; equals autograd and the mpmath
    reference (000: rel err 1.7e-16 and 1.0e-15)" (seed 000 sec 9, eqs 18-24).

    (p) the SUT's P_theta against eq 18 built in arb from E, W_Q, W_K, a, v, s (entrywise,
        `ref.P_theta_tolerance`); (b) SUT grad_P against the arb adjoint recursion and the
        arb direct expansion d/dP L_N (both from the SUT's exact P, H_i, d_i, z_i*) within
        `ref.grad_P_tolerance` (first-order forward + adjoint rounding); (a) against autograd
        of L_N w.r.t. P as a leaf within twice that (both obey the same bound, triangle
        inequality); (c) theta-gradient DP^*[grad_P] against autograd of L_N w.r.t. the
        parameters within ||J||_F 2 tol_P + 2 gamma_{2K+2m+16} || |J|^T |G| || (the propagated
        grad_P difference plus the rounding of the two vector-Jacobian products).
    """
    u = backend.unit_roundoff
    pc, H, d, zs = materialize(case, backend)
    K, L, N = H.shape[-1], case.L, d.shape[0]
    # (p) P_theta of eq 18 from the parameters, independently of attention_matrix
    Pt = pc.matrix()
    P = np64(Pt)
    prm = {k: np64(v) for k, v in pc.named_parameters()}
    Pex = ref.exact_P_theta(prm["E"], prm["W_Q"], prm["W_K"], prm["a"], prm["v"], prm["s"], pc.kernel)
    ptol = ref.P_theta_tolerance(u, prm["E"], prm["W_Q"], prm["W_K"], prm["a"], prm["v"], prm["s"], pc.kernel, P)
    p_ratio = ref.entrywise_excess(Pex, P, ptol)
    # SUT adjoint gradient and its trajectory
    tr = adj.adjoint_trajectory(Pt, H, d, zs, L)
    G_sut, grads_sut = adj.theta_gradient(pc, H, d, zs, L)
    G = np64(G_sut)
    Hn, dn, zn = np64(H), np64(d), np64(zs)
    rhos = [rho_upper(P, Hn[i]) for i in range(N)]
    tol = ref.grad_P_tolerance(u, P, Hn, dn, zn, [np64(z) for z in tr["z"]], [np64(r) for r in tr["r"]],
                               [np64(x) for x in tr["lam"]], rhos)
    # (b) arb references
    G_adj = ref.exact_grad_P_adjoint(P, Hn, dn, zn, L)
    G_dir = ref.exact_grad_P_direct(P, Hn, dn, zn, L)
    err_adj, err_dir = ref.diff_fro_upper(G_adj, G), ref.diff_fro_upper(G_dir, G)
    gnorm = max(ref.fro_mid(G_adj), np.finfo(np.float64).tiny)
    # (a) autograd, P a leaf
    Pleaf = Pt.detach().clone().requires_grad_(True)
    (G_auto,) = torch.autograd.grad(adj.loss(Pleaf, H, d, zs, L), Pleaf)
    err_auto = float(np.linalg.norm(G - np64(G_auto)))
    # (c) theta-gradient vs autograd through the parameters
    params = list(pc.parameters())
    auto_theta = torch.autograd.grad(adj.loss(pc.matrix(), H, d, zs, L), params)
    gs = np.concatenate([np64(g).ravel() for g in grads_sut])
    ga = np.concatenate([np64(g).ravel() for g in auto_theta])
    err_theta = float(np.linalg.norm(gs - ga))
    Jn, absvjp = _jacobian_terms(pc, G_sut)
    m = pc.m
    tol_theta = (Jn * 2 * tol + 2 * gamma(2 * K + 2 * m + 16, u) * absvjp) * (1 + gamma(2 * K + 2, u))

    rel_P = err_adj / gnorm
    rel_theta = err_theta / max(float(np.linalg.norm(ga)), np.finfo(np.float64).tiny)
    ratio = max(p_ratio, err_adj / tol, err_dir / tol, err_auto / (2 * tol), err_theta / tol_theta)
    record.example()
    if case.source == "checkpoint":
        record.sum(f"{case.family}_checkpoint_examples", 1)
    record.max("max_rel_err_grad_P", rel_P)
    record.max("max_rel_err_grad_theta", rel_theta)
    record.max("max_rel_err_grad_P_vs_autograd", err_auto / gnorm)
    record.max("max_P_theta_error_over_tolerance", p_ratio)
    record.max("max_error_over_tolerance", ratio)
    target(ratio, label="error/tolerance")
    assert p_ratio <= 1, f"{case}: P_theta differs from eq 18 built from the parameters ({p_ratio:.3e} x tolerance)"
    assert err_adj <= tol, f"{case}: grad_P vs arb adjoint recursion {err_adj:.3e} > tolerance {tol:.3e}"
    assert err_dir <= tol, f"{case}: grad_P vs arb direct d/dP expansion {err_dir:.3e} > tolerance {tol:.3e}"
    assert err_auto <= 2 * tol, f"{case}: grad_P vs autograd {err_auto:.3e} > tolerance {2 * tol:.3e}"
    assert err_theta <= tol_theta, f"{case}: theta-gradient vs autograd {err_theta:.3e} > tolerance {tol_theta:.3e}"


GRADCHECK_TASKS = {"lsq": models.TaskConfig(K=3, M=12), "gp": gp_mod.GPTaskConfig(m=3, n=8)}


@pytest.mark.claim("flexformer.adjoint_gradient")
@pytest.mark.parametrize("family", tuple(GRADCHECK_TASKS))
@pytest.mark.parametrize("kernel", ("exp", "rbf"))
def test_adjoint_gradcheck(kernel: str, family: str, backend, record) -> None:
    """flexformer.adjoint_gradient (d): torch.autograd.gradcheck of the SUT loss L_N as a function of
    the Flexformer parameters (float64, K = 3, m = 4, N = 2, L = 3) on least-squares and GP
    posterior-latent tasks, plus one training step of eq 24 decreasing L_N for a small step
    (first-order descent: eta ||g||^2 dominates)."""
    pc = models.Flexformer(3, dtype=torch.float64, seed=5, m=4, kernel=kernel)
    tasks = GRADCHECK_TASKS[family].sampler("cpu", torch.float64).sample(2, 7)
    names = [n for n, _ in pc.named_parameters()]

    def f(*ps):
        saved = {n: getattr(pc, n) for n in names}
        for n, p in zip(names, ps):
            del pc._parameters[n]
            setattr(pc, n, p)
        try:
            return adj.loss(pc.matrix(), tasks.H, tasks.d, tasks.xstar, 3)
        finally:
            for n in names:
                delattr(pc, n)
                pc._parameters[n] = saved[n]

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in pc.parameters())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6), "gradcheck failed"
    before = adj.train_step(pc, tasks.H, tasks.d, tasks.xstar, 3, eta=1e-3)
    with torch.no_grad():
        after = adj.loss(pc.matrix(), tasks.H, tasks.d, tasks.xstar, 3)
    record.example()
    record.set(f"gradcheck_{family}_{kernel}", "passed")
    assert float(after) < float(before), f"one step of eq 24 did not decrease L_N ({float(before)} -> {float(after)})"
