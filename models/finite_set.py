"""Fixed finite-set training of a linear-preconditioner decoder by eq 24 (seed 000 sec 9).

On a fixed set of N tasks (H_i, d_i, z_i*) the decoder's stacked outputs are
f_theta = (z_{i,L}(P_theta))_i, a vector of length m = N K (task-major), the residual is
r = f_theta - (z_i*)_i and the loss is L_N = ||r||^2 / (2m), exactly eq 21.  Plain gradient
descent theta <- theta - eta DP^*[grad_P L_N] (eq 24, `models.adjoint.train_step`) is then
theta_{s+1} = theta_s - (eta/m) J^T r_s.

Depth L = 1 is the quadratic case: z_{i,1} = P d_i, so L_N(P) = (1/(2K)) tr((P - P_N*) C_N
(P - P_N*)^T) + L_N(P_N*) with C_N = (1/N) sum d_i d_i^T, B_N = (1/N) sum z_i* d_i^T,
P_N* C_N = B_N, and free-P descent P_{s+1} = P_s - (eta/K)(P_s C_N - B_N) has the closed form
P_s - P_N* = (P_0 - P_N*)(I - (eta/K) C_N)^s (`quadratic_free_P`).

Every step is a small function so the tests can plant mutants by monkeypatching.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import adjoint
from .tasks import Tasks


def check_run(precond: nn.Module | None, tasks: Tasks, L: int, eta: float | None = None,
              steps: int | None = None) -> None:
    """Bad input is an error naming the problem, before any arithmetic."""
    if len(tasks) < 1:
        raise ValueError("the finite training set is empty (N = 0)")
    if precond is not None and getattr(precond, "K", tasks.K) != tasks.K:
        raise ValueError(f"preconditioner has K = {precond.K} but the tasks have K = {tasks.K}")
    if int(L) != L or L < 1:
        raise ValueError(f"decoder depth L must be an integer >= 1, got {L!r}")
    if eta is not None and not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"step size eta must be finite and > 0, got {eta!r}")
    if steps is not None and (int(steps) != steps or steps < 0):
        raise ValueError(f"number of steps must be an integer >= 0, got {steps!r}")


def flat_parameters(precond: nn.Module) -> torch.Tensor:
    """theta: the parameters in `parameters()` order, flattened and concatenated (detached)."""
    return torch.cat([p.detach().reshape(-1) for p in precond.parameters()])


def stacked_outputs(P: torch.Tensor, tasks: Tasks, L: int) -> torch.Tensor:
    """f = (z_{1,L}, ..., z_{N,L}) of eq 20 (length m = N K, task-major); differentiable in P."""
    zs, _ = adjoint.forward(P, tasks.H, tasks.d, L)
    return zs[-1].reshape(-1)


def residual_vector(precond: nn.Module, tasks: Tasks, L: int) -> torch.Tensor:
    """r = f_theta - y with y = (z_i*)_i (eq 26), detached."""
    with torch.no_grad():
        return stacked_outputs(precond.matrix(), tasks, L) - tasks.xstar.reshape(-1)


def finite_loss(r: torch.Tensor) -> torch.Tensor:
    """L_N = ||r||^2 / (2m) (eq 21 written in the stacked residual; also eq 25's L^NTK)."""
    return (r * r).sum() / (2 * r.numel())


def autograd_gradient(precond: nn.Module, tasks: Tasks, L: int) -> torch.Tensor:
    """grad_theta L_N by plain autograd through the forward recursion (flat, detached): the
    independent route the adjoint gradient of eq 24 is compared with along a trajectory."""
    params = list(precond.parameters())
    with torch.enable_grad():
        loss = adjoint.loss(precond.matrix(), tasks.H, tasks.d, tasks.xstar, L)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def adjoint_gradient(precond: nn.Module, tasks: Tasks, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_P, DP^*[grad_P] flattened): the gradient eq 24 steps with (models.adjoint)."""
    G, grads = adjoint.theta_gradient(precond, tasks.H, tasks.d, tasks.xstar, L)
    return G, torch.cat([g.reshape(-1) for g in grads])


def gd_step(precond: nn.Module, tasks: Tasks, L: int, eta: float) -> None:
    """One step of eq 24 in place: theta <- theta - eta DP^*[grad_P L_N] (the adjoint gradient)."""
    adjoint.train_step(precond, tasks.H, tasks.d, tasks.xstar, L, eta)


@dataclass
class History:
    """One fixed-set run: theta_s (S+1, p), r_s (S+1, m) and L_s (S+1,) for s = 0..S."""

    eta: float
    L: int
    thetas: torch.Tensor
    residuals: torch.Tensor
    losses: torch.Tensor

    @property
    def steps(self) -> int:
        return self.residuals.shape[0] - 1


def train(precond: nn.Module, tasks: Tasks, L: int, eta: float, steps: int
          ) -> tuple[nn.Module, History]:
    """Train a copy of `precond` for `steps` steps of eq 24 on the fixed set; the input is untouched.

    Returns (trained copy, history of theta_s, r_s, L_s for s = 0..steps).
    """
    check_run(precond, tasks, L, eta, steps)
    pc = copy.deepcopy(precond)
    pc.requires_grad_(True)
    thetas, rs = [flat_parameters(pc)], [residual_vector(pc, tasks, L)]
    for _ in range(int(steps)):
        gd_step(pc, tasks, L, eta)
        thetas.append(flat_parameters(pc))
        rs.append(residual_vector(pc, tasks, L))
    R = torch.stack(rs)
    return pc, History(float(eta), int(L), torch.stack(thetas), R,
                       torch.stack([finite_loss(r) for r in R]))


# --------------------------------------------------------------------------- #
# depth 1: the quadratic free-P theory
# --------------------------------------------------------------------------- #
def task_moments(tasks: Tasks) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_N, B_N) = ((1/N) sum d_i d_i^T, (1/N) sum z_i* d_i^T), the depth-1 loss's moments."""
    N = len(tasks)
    return tasks.d.T @ tasks.d / N, tasks.xstar.T @ tasks.d / N


def free_P_optimum(C: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """P_N* with P_N* C_N = B_N, by a Cholesky solve (C_N must be positive definite: N >= K)."""
    R, info = torch.linalg.cholesky_ex(C)
    if int(info) != 0:
        raise ValueError(f"C_N is not positive definite (Cholesky fails at minor {int(info)}): "
                         "the depth-1 optimum needs N >= K tasks with independent d_i")
    return torch.cholesky_solve(B.T.contiguous(), R).T  # C symmetric: (C^-1 B^T)^T = B C^-1


def free_P_contraction(C: torch.Tensor, eta: float, K: int) -> torch.Tensor:
    """M = I - (eta/K) C_N: the per-step factor of free-P descent at depth 1."""
    return torch.eye(C.shape[0], dtype=C.dtype, device=C.device) - (eta / K) * C


@dataclass
class QuadraticPrediction:
    """The closed-form free-P trajectory P_s (S+1, K, K), its loss L_N(P_s) and P_N*."""

    eta: float
    P: torch.Tensor
    losses: torch.Tensor
    P_star: torch.Tensor
    loss_star: torch.Tensor
    C: torch.Tensor
    B: torch.Tensor


def quadratic_free_P(P0: torch.Tensor, tasks: Tasks, eta: float, steps: int) -> QuadraticPrediction:
    """P_s = P_N* + (P_0 - P_N*)(I - (eta/K) C_N)^s, s = 0..steps, and L_N(P_s) at depth 1."""
    if P0.shape != (tasks.K, tasks.K):
        raise ValueError(f"P_0 must be ({tasks.K}, {tasks.K}), got {tuple(P0.shape)}")
    check_run(None, tasks, 1, eta, steps)
    C, B = task_moments(tasks)
    P_star = free_P_optimum(C, B)
    M = free_P_contraction(C, eta, tasks.K)
    E = P0.detach() - P_star
    Ps = [P0.detach().clone()]  # s = 0 is P_0 itself (not P* + (P_0 - P*) rounded)
    for _ in range(int(steps)):
        E = E @ M  # (P_0 - P*) M^s by repeated multiplication (exponent s, not s + 1)
        Ps.append(P_star + E)
    Ps = torch.stack(Ps)
    with torch.no_grad():
        losses = torch.stack([adjoint.loss(P, tasks.H, tasks.d, tasks.xstar, 1) for P in Ps])
        loss_star = adjoint.loss(P_star, tasks.H, tasks.d, tasks.xstar, 1)
    return QuadraticPrediction(float(eta), Ps, losses, P_star, loss_star, C, B)
