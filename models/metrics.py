"""Descriptive checkpoint metrics (seed 001 Table 2), computed in floating point.

These numbers are reported and pinned by golden files; the rigorous versions of the
bounds live in the certificates, not here.
"""

from __future__ import annotations

from typing import Any

import torch

from .eb import eb_upper
from .richardson import RichardsonDecoder
from .tasks import LeastSquaresPrompts, Tasks


def _stable_rank(P: torch.Tensor) -> torch.Tensor:
    """||P||_F^2 / ||P||_2^2 (batched over leading dims)."""
    fro = torch.linalg.matrix_norm(P, ord="fro")
    two = torch.linalg.matrix_norm(P, ord=2)
    return (fro / two) ** 2


@torch.no_grad()
def depth_losses(decoder: RichardsonDecoder, tasks: Tasks) -> torch.Tensor:
    """Per-task held-out losses ||x_L - x*||^2 / K from x_0 = 0 (what the EB bound certifies)."""
    return _losses(decoder(tasks.H, tasks.d), tasks)


def _losses(xL: torch.Tensor, tasks: Tasks) -> torch.Tensor:
    return ((xL - tasks.xstar) ** 2).sum(-1) / tasks.K


@torch.no_grad()
def checkpoint_metrics(decoder: RichardsonDecoder, tasks: Tasks, c: float, delta: float,
                       oracle_P: torch.Tensor | None = None) -> dict[str, Any]:
    """001 Table 2 quantities on held-out `tasks`.

    P per task is the global P for linear classes; for the nonlinear softmax map it is
    the Jacobian at the decoder's start (z = x_0 = 0), so rho, the violation rate and the
    ratio are then descriptive of the linearisation only (the Richardson bound is a
    theorem for linear P, not for the nonlinear map).  rel_dist_oracle is None unless an
    oracle is given and the class is linear; stable_rank is averaged over tasks when P
    is per task.
    """
    precond = decoder.precond
    H, d, xstar = tasks.H, tasks.d, tasks.xstar
    K, L = tasks.K, decoder.L
    x0 = torch.zeros_like(d)
    xL = decoder(H, d, x0=x0)
    eL = torch.linalg.vector_norm(xL - xstar, dim=-1)
    e0 = torch.linalg.vector_norm(x0 - xstar, dim=-1)
    losses = _losses(xL, tasks)  # the decoder already ran from x_0 = 0: no second run

    if precond.is_linear:
        P = precond.frozen_matrix()
    else:
        P = precond.frozen_matrix(x0, H, d)
    eye = torch.eye(K, device=d.device, dtype=d.dtype)
    rho = torch.linalg.matrix_norm(eye - P @ H, ord=2)
    bound = rho ** L * e0
    out: dict[str, Any] = {
        "n": len(tasks),
        "heldout_risk": float(losses.mean()),
        "eb_upper": eb_upper(losses.double().cpu().numpy(), c, delta),
        "violation_rate": float((eL > bound).to(losses.dtype).mean()),
        "error_bound_ratio": float((eL / bound).mean()),
        "mean_contraction": float(rho.mean()),
        "rel_dist_oracle": None,
        "stable_rank": float(_stable_rank(P).mean()),
    }
    if oracle_P is not None and precond.is_linear:
        oracle = oracle_P.to(device=P.device, dtype=P.dtype)
        out["rel_dist_oracle"] = float(torch.linalg.matrix_norm(P - oracle) / torch.linalg.matrix_norm(oracle))
    return out


@torch.no_grad()
def oracle_P(prompts: LeastSquaresPrompts, n: int, seed: int) -> torch.Tensor:
    """Monte Carlo depth-1 population oracle P* = B C^+ (seed 002 sec 3.1).

    C = E[d d^T], B = E[x* d^T] estimated from n tasks of `prompts` with task seed
    `seed`; P* minimises E||P d - x*||^2, i.e. the best one-step decoder from x_0 = 0.
    It is the reference the seeds measure learned P against, not the depth-L optimum.
    """
    tasks = prompts.sample(n, seed)
    D, X = tasks.d, tasks.xstar
    C = D.T @ D / n
    B = X.T @ D / n
    return B @ torch.linalg.pinv(C, hermitian=True)
