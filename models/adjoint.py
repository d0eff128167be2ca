"""Exact finite-set gradient of a linear-preconditioner decoder by the adjoint recursion
(seed 000 sec 9, eqs 20-24).

Forward (eq 20):  z_{i,0} = 0, r_{i,l} = d_i - H_i z_{i,l}, z_{i,l+1} = z_{i,l} + P r_{i,l}.
Loss (eq 21):     L_N = (1/(2NK)) sum_i ||z_{i,L} - z_i*||^2.
Adjoint (eq 22):  lambda_{i,L} = (z_{i,L} - z_i*)/(NK), lambda_{i,l} = (I - P H_i)^T lambda_{i,l+1}.
grad_P (eq 23):   sum_i sum_{l<L} lambda_{i,l+1} r_{i,l}^T.
Update (eq 24):   theta <- theta - eta DP_theta^*[grad_P], the adjoint of the derivative of
                  theta -> P_theta applied to grad_P: a vector-Jacobian product of P_theta.

The steps are small plain functions so the tests can plant mutants by monkeypatching.
"""

from __future__ import annotations

import torch
from torch import nn

from .richardson import apply, residual


def forward(P: torch.Tensor, H: torch.Tensor, d: torch.Tensor, L: int
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """([z_0..z_L], [r_0..r_{L-1}]) for a batch H (N,K,K), d (N,K) and a global P (K,K)."""
    z = torch.zeros_like(d)
    zs, rs = [z], []
    for _ in range(int(L)):
        r = residual(z, H, d)
        z = z + apply(P, r)
        rs.append(r)
        zs.append(z)
    return zs, rs


def loss(P: torch.Tensor, H: torch.Tensor, d: torch.Tensor, zstar: torch.Tensor, L: int) -> torch.Tensor:
    """L_N of eq 21 (differentiable in P)."""
    zs, _ = forward(P, H, d, L)
    N, K = d.shape
    return ((zs[-1] - zstar) ** 2).sum() / (2 * N * K)


def terminal(zL: torch.Tensor, zstar: torch.Tensor) -> torch.Tensor:
    """lambda_{i,L} = (z_{i,L} - z_i*)/(NK) (eq 22)."""
    N, K = zL.shape
    return (zL - zstar) / (N * K)


def adjoint_step(P: torch.Tensor, H: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lambda_l = (I - P H)^T lambda_{l+1} = lambda_{l+1} - H^T (P^T lambda_{l+1}) (eq 22)."""
    w = lam @ P  # rows: P^T lambda
    return lam - (H.transpose(-1, -2) @ w.unsqueeze(-1)).squeeze(-1)


def accumulate(lams: list[torch.Tensor], rs: list[torch.Tensor]) -> torch.Tensor:
    """sum_i sum_{l<L} lambda_{i,l+1} r_{i,l}^T (eq 23); lams = [lambda_0..lambda_L]."""
    K = rs[0].shape[-1] if rs else lams[0].shape[-1]
    G = torch.zeros(K, K, dtype=lams[0].dtype, device=lams[0].device)
    for l, r in enumerate(rs):
        G = G + lams[l + 1].transpose(0, 1) @ r
    return G


@torch.no_grad()
def adjoint_trajectory(P: torch.Tensor, H: torch.Tensor, d: torch.Tensor, zstar: torch.Tensor,
                       L: int) -> dict[str, list[torch.Tensor]]:
    """Forward iterates, residuals and adjoints [lambda_0..lambda_L] of eqs 20-22."""
    P = P.detach()
    zs, rs = forward(P, H, d, L)
    lams = [terminal(zs[-1], zstar)]
    for _ in range(int(L)):
        lams.append(adjoint_step(P, H, lams[-1]))
    lams.reverse()
    return {"z": zs, "r": rs, "lam": lams}


def grad_P(P: torch.Tensor, H: torch.Tensor, d: torch.Tensor, zstar: torch.Tensor, L: int) -> torch.Tensor:
    """nabla_P L_N by the adjoint recursion (eqs 22-23), (K,K), detached."""
    tr = adjoint_trajectory(P, H, d, zstar, L)
    with torch.no_grad():
        return accumulate(tr["lam"], tr["r"])


def theta_gradient(precond: nn.Module, H: torch.Tensor, d: torch.Tensor, zstar: torch.Tensor,
                   L: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(grad_P, DP_theta^*[grad_P] per parameter) for a preconditioner with a global matrix().

    The adjoint DP^* is the vector-Jacobian product of theta -> P_theta with grad_P.
    """
    params = [p for p in precond.parameters()]
    with torch.enable_grad():
        P_theta = precond.matrix()
        G = grad_P(P_theta, H, d, zstar, L)
        grads = torch.autograd.grad(P_theta, params, grad_outputs=G, allow_unused=True)
    return G, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def train_step(precond: nn.Module, H: torch.Tensor, d: torch.Tensor, zstar: torch.Tensor, L: int,
               eta: float) -> torch.Tensor:
    """One step of eq 24, theta <- theta - eta DP^*[grad_P], in place; returns L_N before it."""
    with torch.no_grad():
        before = loss(precond.matrix(), H, d, zstar, L)
    _, grads = theta_gradient(precond, H, d, zstar, L)
    with torch.no_grad():
        for p, g in zip(precond.parameters(), grads):
            p.sub_(eta * g)
    return before
