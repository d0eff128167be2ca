"""The equilibrium blocks as the EP certificates build them: an `EPCase` (properties.ep) becomes a
models.ep block with seeded input injection x and targets y on the backend, and a block becomes
its mpmath twin (properties.ep.MPBlock) from the SUT's own parameters."""

from __future__ import annotations

import numpy as np
import torch

from certify.backend import Backend
from models.ep import blocks
from models.ep import estimators as est
from models.ep import solvers
from models.seeding import cpu_generator, derive_seed
from properties.ep import EPCase, MPBlock

D_OUT = 2


def build(case: EPCase, backend: Backend) -> tuple[blocks.EquilibriumBlock, torch.Tensor, torch.Tensor]:
    """(block, x (B, T, d), y (B, D_OUT)) of a case; data drawn in float64 on the CPU, then cast."""
    kw = dict(device=backend.device, dtype=backend.torch_dtype, seed=case.seed)
    if case.kind == "energy":
        blk = blocks.EnergyBlock(case.T, case.d, D_OUT, heads=case.heads, memories=2, qk_scale=case.scale, **kw)
    elif case.kind == "skewed":
        blk = blocks.SkewedEnergyBlock(case.T, case.d, D_OUT, heads=case.heads, memories=2, qk_scale=case.scale,
                                       alpha=case.alpha, **kw)
    elif case.kind == "damped":
        blk = blocks.DampedAttention(case.T, case.d, D_OUT, heads=case.heads, s=case.s, c=case.c, lam=1.0,
                                     qk_scale=case.scale, v_scale=case.v_scale, **kw)
    elif case.kind == "thick":
        blk = blocks.ThickBlock(case.T, case.d, D_OUT, heads=1, c=case.c, causal=False, **kw)
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    g = cpu_generator(derive_seed("ep.data", case.seed, case.T, case.d, case.B))
    x = torch.randn(case.B, case.T, case.d, generator=g, dtype=torch.float64)
    y = torch.randn(case.B, D_OUT, generator=g, dtype=torch.float64)
    return blk, x.to(backend.device, backend.torch_dtype), y.to(backend.device, backend.torch_dtype)


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").to(torch.float64).numpy()


def mp_block(blk: blocks.EquilibriumBlock) -> MPBlock:
    """The block's mpmath twin, built from its parameters (float values taken exactly)."""
    params = {n: np64(p) for n, p in blk.named_parameters()}
    if isinstance(blk, blocks.EnergyBlock):
        hp = {"beta_att": blk.beta_att, "kappa": blk.kappa, "lam_hop": blk.lam_hop,
              "alpha": getattr(blk, "alpha", 0.0)}
        fixed = {"Omega": np64(blk.Omega)} if isinstance(blk, blocks.SkewedEnergyBlock) else None
        return MPBlock("energy", params, hp, blk.T, blk.d, fixed)
    if isinstance(blk, blocks.DampedAttention):
        return MPBlock("damped", params, {"s": blk.s, "c": blk.c, "lam": blk.lam, "causal": int(blk.causal)},
                       blk.T, blk.d)
    raise ValueError(f"no mpmath twin for {type(blk).__name__}")


def force_terms(blk: blocks.EquilibriumBlock) -> int:
    """An upper bound on the products summed into one entry of the force, its jvp or its vjp
    (the longest inner product of the computation: attention over T keys of width d_k after a
    projection of width d, a Hopfield sum over the memories, the readout's mean), for gamma_n."""
    T, d = blk.T, blk.d
    k = getattr(blk, "d_k", d)
    h = getattr(blk, "heads", 1)
    mem = getattr(blk, "memories", 0)
    mlp = getattr(blk, "W_fc", None)
    width = mlp.shape[1] if mlp is not None else 0
    return h * (T * (k + d) + d * k) + mem * d + width + 4 * d + T + 16


def free_tol(x: torch.Tensor, backend: Backend) -> float:
    """64 n u (n the state size of a sample): the residual of an O(1) state computed with ~n-term
    inner products cannot be resolved much below n u."""
    return 64 * x[0].numel() * backend.unit_roundoff


def free_equilibrium(blk: blocks.EquilibriumBlock, x: torch.Tensor, backend: Backend) -> est.Phase:
    """The free phase converged to `free_tol`: Anderson relaxation from the injection x (force
    evaluations only) to 1e3 x the tolerance, then Newton to polish (two or three dense steps);
    where Anderson stalls, Newton with backtracking from x.  Raises est.NotConverged when neither
    reaches the tolerance (the claims' premise is not met)."""
    tol = free_tol(x, backend)
    pre = est.free_phase(blk, x, solver="anderson", eps=0.3, steps=300, tol=tol * 1e3, require=False)
    start = pre.z if pre.solve.residual <= tol * 1e3 else x.clone()
    return est.free_phase(blk, x, solver="newton", steps=40, tol=tol, z_init=start)


def jacobian(blk: blocks.EquilibriumBlock, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return solvers.jacobian(est.free_force(blk, x), z)
