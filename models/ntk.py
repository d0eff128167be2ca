"""Finite-NTK linearization of fixed-set decoder training (seed 000 sec 9, eqs 25-27).

With f_theta the stacked outputs (z_{i,L})_i (length m = N K) and r = f_theta - y, eq 24 is
theta_{s+1} = theta_s - (eta/m) J^T r_s.  Freezing the Jacobian at theta_0 gives the linear
(finite-NTK) model r_{s+1} = (I - eta Theta_0) r_s with Theta_0 = J_0 J_0^T / m, so
r_s^NTK = (I - eta Theta_0)^s r_0 and L_s^NTK = ||r_s^NTK||^2 / (2m) (eq 25; eq 27 for the GP
posterior-latent tasks, y = z_post).

J_0 is taken by reverse mode (torch.func.jacrev) through the same forward recursion the
trainer differentiates (models.adjoint.forward) with respect to the flattened parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import finite_set
from .finite_set import History
from .seeding import cpu_generator, derive_seed
from .tasks import Tasks


class _MatrixOf(nn.Module):
    """forward() = precond.matrix(), so torch.func.functional_call can swap its parameters."""

    def __init__(self, precond: nn.Module) -> None:
        super().__init__()
        self.pc = precond

    def forward(self) -> torch.Tensor:
        return self.pc.matrix()


def matrix_of_theta(precond: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(theta -> P_theta as a pure function of the flat parameter vector, theta_0)."""
    named = list(precond.named_parameters())
    if not named:
        raise ValueError(f"{type(precond).__name__} has no parameters to differentiate")
    shapes = [(n, p.shape, p.numel()) for n, p in named]
    wrapper = _MatrixOf(precond)

    def P_of(theta: torch.Tensor) -> torch.Tensor:
        params, at = {}, 0
        for n, shape, k in shapes:
            params["pc." + n] = theta[at:at + k].reshape(shape)
            at += k
        return torch.func.functional_call(wrapper, params, ())

    return P_of, finite_set.flat_parameters(precond)


def matrix_jacobian(precond: nn.Module) -> torch.Tensor:
    """dP_theta/dtheta as a (K^2, p) matrix (row-major vec of P), detached."""
    P_of, theta0 = matrix_of_theta(precond)
    with torch.enable_grad():
        Jp = torch.func.jacrev(P_of)(theta0)
    return Jp.reshape(-1, theta0.numel()).detach()


def jacobian(precond: nn.Module, tasks: Tasks, L: int) -> torch.Tensor:
    """J_0 = d f_theta / d theta at the current parameters: (m, p), m = N K, detached."""
    finite_set.check_run(precond, tasks, L)
    P_of, theta0 = matrix_of_theta(precond)

    def f(theta: torch.Tensor) -> torch.Tensor:
        return finite_set.stacked_outputs(P_of(theta), tasks, L)

    with torch.enable_grad():
        J = torch.func.jacrev(f)(theta0)
    return J.detach()


def ntk_matrix(J: torch.Tensor) -> torch.Tensor:
    """Theta_0 = J_0 J_0^T / m (m, m): the GD step on r is -eta Theta r (loss 1/(2m) ||r||^2)."""
    if J.dim() != 2:
        raise ValueError(f"J must be a matrix (m, p), got shape {tuple(J.shape)}")
    return J @ J.T / J.shape[0]


def lambda_max(Theta: torch.Tensor) -> float:
    """Largest eigenvalue of the (symmetric PSD) NTK, in float64."""
    return float(torch.linalg.eigvalsh(Theta.double()).max())


def step_size(Theta: torch.Tensor, fraction: float) -> float:
    """eta = fraction / lambda_max(Theta_0): the linear model contracts for 0 < fraction < 2."""
    if not (math.isfinite(fraction) and fraction > 0):
        raise ValueError(f"step-size fraction must be finite and > 0, got {fraction!r}")
    lam = lambda_max(Theta)
    if not lam > 0:
        raise ValueError(f"the NTK has lambda_max = {lam}: no step size is defined")
    return fraction / lam


def linearized_residuals(Theta: torch.Tensor, r0: torch.Tensor, eta: float, steps: int) -> torch.Tensor:
    """r_s^NTK = (I - eta Theta_0)^s r_0 for s = 0..steps, (steps+1, m), by r <- r - eta Theta r."""
    if Theta.dim() != 2 or Theta.shape[0] != Theta.shape[1] or Theta.shape[0] != r0.numel():
        raise ValueError(f"Theta must be (m, m) with m = len(r0) = {r0.numel()}, got {tuple(Theta.shape)}")
    rs = [r0]
    for _ in range(int(steps)):
        rs.append(rs[-1] - eta * (Theta @ rs[-1]))
    return torch.stack(rs)


def linearized_losses(rs: torch.Tensor) -> torch.Tensor:
    """L_s^NTK = ||r_s^NTK||^2 / (2m) (eq 25)."""
    return torch.stack([finite_set.finite_loss(r) for r in rs])


@dataclass
class NTKRun:
    """The nonlinear eq-24 run and its finite-NTK prediction from the same theta_0, r_0, eta."""

    J: torch.Tensor
    Theta: torch.Tensor
    eta: float
    history: History
    ntk_residuals: torch.Tensor
    ntk_losses: torch.Tensor
    model: nn.Module  # the trained copy after the last step

    @property
    def deviations(self) -> torch.Tensor:
        """||r_s - r_s^NTK||_2 for s = 0..S (float64)."""
        return torch.linalg.norm((self.history.residuals - self.ntk_residuals).double(), dim=1)

    @property
    def loss_rel_err(self) -> float:
        """max_s |L_s - L_s^NTK| / L_s^NTK: the seed's NTK relative error."""
        L, Ln = self.history.losses.double(), self.ntk_losses.double()
        return float(((L - Ln).abs() / Ln).max())

    @property
    def residual_rel_err(self) -> float:
        """max_s ||r_s - r_s^NTK|| / ||r_s^NTK||: the same in the residual vector."""
        return float((self.deviations / torch.linalg.norm(self.ntk_residuals.double(), dim=1)).max())

    def max_deviation(self, upto: int | None = None) -> float:
        """max_{t <= upto} ||r_t - r_t^NTK|| (upto = S by default)."""
        dev = self.deviations
        return float(dev[: (len(dev) if upto is None else int(upto) + 1)].max())


def ntk_run(precond: nn.Module, tasks: Tasks, L: int, eta: float, steps: int,
            J: torch.Tensor | None = None) -> NTKRun:
    """Train a copy of `precond` by eq 24 and predict the same run with the NTK at theta_0."""
    finite_set.check_run(precond, tasks, L, eta, steps)
    if J is None:
        J = jacobian(precond, tasks, L)
    Theta = ntk_matrix(J)
    model, hist = finite_set.train(precond, tasks, L, eta, steps)
    rs = linearized_residuals(Theta, hist.residuals[0], eta, steps)
    return NTKRun(J, Theta, float(eta), hist, rs, linearized_losses(rs), model)


def eta_grid(eta0: float, points: int, ratio: float = 0.5) -> list[float]:
    """eta0 ratio^k, k = 0..points-1: the geometric grid of the order check."""
    if points < 1 or not (0 < ratio < 1):
        raise ValueError(f"need points >= 1 and 0 < ratio < 1, got {points}, {ratio}")
    return [eta0 * ratio**k for k in range(points)]


def order_runs(precond: nn.Module, tasks: Tasks, L: int, etas: Sequence[float], steps: int) -> list[NTKRun]:
    """One NTK run per step size, all from the same theta_0 and one J_0."""
    J = jacobian(precond, tasks, L)
    return [ntk_run(precond, tasks, L, eta, steps, J=J) for eta in etas]


# --------------------------------------------------------------------------- #
# GP posterior-latent tasks: held-out posterior mean of the trained local model
# --------------------------------------------------------------------------- #
def posterior_mean_mse(P: torch.Tensor, sampler, L: int, n_tasks: int, seed: int,
                       n_query: int = 8) -> dict[str, float]:
    """Held-out posterior-mean errors of the decoder z_L(P) on GP tasks (a models.gp.GPPrompts).

    Per task, queries x_q ~ U[0, 1] (seeded); the decoder's posterior mean is phi(x_q)^T z_L.
    Returns the mean over tasks and queries of (phi_q^T (z_L - z_post))^2 ("posterior_mean_mse",
    the error of the solve in function space) and of (phi_q^T (z_post - z_true))^2
    ("exact_posterior_mse", the exact posterior mean's own error against the drawn latent).
    """
    if n_tasks < 1 or n_query < 1:
        raise ValueError(f"need n_tasks >= 1 and n_query >= 1, got {n_tasks}, {n_query}")
    tasks = sampler.sample(n_tasks, seed)
    gen = cpu_generator(derive_seed("ntk.gp.queries", n_tasks, n_query, seed))
    xq = torch.rand(n_tasks, n_query, generator=gen, dtype=torch.float64)
    Phi = sampler.gp.features(xq)  # (n_tasks, n_query, K) on the sampler's device/dtype
    with torch.no_grad():
        zL = finite_set.stacked_outputs(P, tasks, L).reshape(tasks.d.shape)
    def mse(e: torch.Tensor) -> float:
        return float(((Phi @ e.unsqueeze(-1)).squeeze(-1).double() ** 2).mean())
    return {"posterior_mean_mse": mse(zL - tasks.xstar),
            "exact_posterior_mse": mse(tasks.xstar - tasks.aux["z_true"])}
