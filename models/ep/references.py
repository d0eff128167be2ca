"""Exact gradients the EP estimators are measured against (seed 003; NUMERICS.md).

* `ift_gradient`: the implicit-function-theorem gradient at the free equilibrium,
  dL/dtheta = dC/dtheta - (dF/dtheta)^T J^-T dC/dz, J = dF/dz at z*: the dense Jacobian (forward
  mode, column by column), one linear solve with J^T, one vector-Jacobian product.  For a
  conservative block J is symmetric and the transpose is invisible; for the non-conservative
  blocks it is what AEP's correction reproduces.
* `bptt_gradient`: backpropagation through the T-step Euler unroll z_{t+1} = z_t + eps F(z_t)
  from z_init, loss sum_b C(z_T); equal to the IFT gradient as T -> infinity when the unroll
  converges (the error decays like the unroll's contraction factor to the power T).
"""

from __future__ import annotations

import torch

from . import solvers
from .blocks import EquilibriumBlock
from .estimators import dC_dtheta, flat, free_force, params


def ift_adjoint(J: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """a = J^-T g (the adjoint state of the implicit function theorem)."""
    return torch.linalg.solve(J.mT, g)


def ift_gradient(block: EquilibriumBlock, x: torch.Tensor, y: torch.Tensor, z0: torch.Tensor,
                 transpose: bool = True) -> torch.Tensor:
    """dC/dtheta(z0) - (dF/dtheta(z0))^T J^-T dC/dz(z0), flat over block.parameters().

    transpose=False gives dC/dtheta - P^T J^-1 dC/dz instead: the beta -> 0 limit of EP *without*
    the AEP correction on a non-conservative block (its nudged phase linearises J, not J^T), i.e.
    the biased gradient plain EP converges to."""
    F = free_force(block, x)
    with torch.enable_grad():
        J = solvers.jacobian(F, z0.detach())
    c = block.cost_grad_z(z0, y).reshape(-1).detach()
    a = (ift_adjoint(J, c) if transpose else torch.linalg.solve(J, c)).reshape(z0.shape)
    ps = params(block)
    with torch.enable_grad():
        Fz = block.force(z0.detach(), x)
        implicit = torch.autograd.grad(Fz, ps, grad_outputs=a, allow_unused=True)
    return dC_dtheta(block, z0, y) - flat(list(implicit), ps)


def bptt_gradient(block: EquilibriumBlock, x: torch.Tensor, y: torch.Tensor, z_init: torch.Tensor,
                  eps: float, T: int) -> torch.Tensor:
    """d/dtheta of sum_b C(z_T) through the T-step Euler unroll from z_init (autograd)."""
    if T < 0:
        raise ValueError(f"T must be >= 0, got {T}")
    ps = params(block)
    with torch.enable_grad():
        z = z_init.detach()
        for _ in range(int(T)):
            z = z + eps * block.force(z, x)
        g = torch.autograd.grad(block.cost(z, y).sum(), ps, allow_unused=True)
    return flat(list(g), ps)
