"""Overlap order parameters logged along decoder training trajectories (000 sec 7-8).

At a frozen checkpoint with matrix P (the global P of a linear class, or the softmax map's
Jacobian at x_0 = 0 per task, seed 002 sec 8), over a fixed evaluation set of tasks
(H, d, x*), with S = x* x*^T per task:

    Omega_{a,b} = K^{-1} E Tr((P H)^a S ((P H)^b)^T) = K^{-1} E <(P H)^a x*, (P H)^b x*>,

for 0 <= a, b <= L (a symmetric (L+1) x (L+1) matrix).  Expanding (I - P H)^l by the
binomial theorem (the powers of P H commute with each other),

    R_l = K^{-1} E ||(I - P H)^l x*||^2 = sum_{a,b <= l} (-1)^{a+b} C(l,a) C(l,b) Omega_{a,b}.

000's listed parameters are special cases: Omega_{1,1} = K^{-1} E Tr(PH S H^T P^T) (eq 15/17),
Omega_{0,1} = K^{-1} E Tr(P H S) and Omega_{0,2} = K^{-1} E Tr(P H P H S), which reduce to
Tr(PH)/K and Tr(PHPH)/K (eq 17) only when H is fixed and S = I.  R_l needs every
Omega_{a,b} with a, b <= l: (l+1)(l+2)/2 numbers.

`train_logged` trains exactly like models.train.train (same init, batches, Adam) and logs a
checkpoint and its order parameters every `every` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .dtypes import as_device, as_dtype
from .preconditioners import FrozenLinear
from .richardson import RichardsonDecoder, apply
from .tasks import Tasks
from .train import TrainConfig, train


# --------------------------------------------------------------------------- #
# order parameters and the binomial reconstruction
# --------------------------------------------------------------------------- #
@torch.no_grad()
def frozen_matrices(decoder: RichardsonDecoder, tasks: Tasks) -> torch.Tensor:
    """P of the decoder's update: global (K,K) for a linear class, else the Jacobian of the
    nonlinear update at the decoder's start x_0 = 0, per task (n,K,K)."""
    pc = decoder.precond
    if pc.is_linear:
        return pc.frozen_matrix().clone()
    return pc.frozen_matrix(torch.zeros_like(tasks.d), tasks.H, tasks.d)


def linear_form(decoder: RichardsonDecoder, P: torch.Tensor) -> RichardsonDecoder:
    """The decoder whose risk the order parameters describe: the module itself for a linear
    class, the Jacobian form (FrozenLinear of the per-task Jacobians) for the nonlinear map."""
    if decoder.precond.is_linear:
        return decoder
    return RichardsonDecoder(FrozenLinear(P), decoder.L)


def power_vectors(P: torch.Tensor, H: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """V (L+1, n, K): V[0] = x, V[a] = P (H V[a-1]) = (P H)^a x, for P (K,K) or (n,K,K)."""
    vs = [x]
    for _ in range(int(L)):
        v = vs[-1]
        hv = (H @ v.unsqueeze(-1)).squeeze(-1)
        vs.append(apply(P, hv))
    return torch.stack(vs)


def order_parameters(P: torch.Tensor, H: torch.Tensor, xstar: torch.Tensor, L: int) -> torch.Tensor:
    """Omega (L+1, L+1): Omega[a, b] = K^{-1} mean_tasks <(PH)^a x*, (PH)^b x*>."""
    V = power_vectors(P, H, xstar, L)
    n, K = xstar.shape
    return torch.einsum("ank,bnk->ab", V, V) / (n * K)


def binomial_weights(l: int) -> list[int]:
    """w_a = (-1)^a C(l, a), a = 0..l: (I - M)^l = sum_a w_a M^a."""
    return [(-1) ** a * math.comb(l, a) for a in range(l + 1)]


def reconstruct_risk(omega: torch.Tensor, l: int) -> torch.Tensor:
    """R_l = sum_{a,b<=l} w_a w_b Omega[a,b] from the logged order parameters."""
    if not 0 <= l < omega.shape[0]:
        raise ValueError(f"depth {l} needs Omega up to index {l}, have {omega.shape[0] - 1}")
    w = torch.tensor(binomial_weights(l), dtype=omega.dtype, device=omega.device)
    return w @ omega[: l + 1, : l + 1] @ w


def reconstruct_risks(omega: torch.Tensor) -> torch.Tensor:
    """[R_0, ..., R_L] reconstructed from Omega (L+1, L+1)."""
    return torch.stack([reconstruct_risk(omega, l) for l in range(omega.shape[0])])


@torch.no_grad()
def direct_risks(decoder: RichardsonDecoder, tasks: Tasks) -> torch.Tensor:
    """[R_0, ..., R_L] measured from the decoder's iterates: K^{-1} mean ||x_l - x*||^2, x_0 = 0."""
    xs = decoder(tasks.H, tasks.d, trajectory=True)
    return torch.stack([((x - tasks.xstar) ** 2).sum(-1).mean() / tasks.K for x in xs])


# --------------------------------------------------------------------------- #
# logging along a training trajectory
# --------------------------------------------------------------------------- #
@dataclass
class OverlapRow:
    """One logged checkpoint: its step, matrix P, state, order parameters and risks l = 0..L."""

    step: int
    P: torch.Tensor
    omega: torch.Tensor
    direct: torch.Tensor
    reconstructed: torch.Tensor
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def log_checkpoint(decoder: RichardsonDecoder, tasks: Tasks, step: int) -> OverlapRow:
    """Order parameters (up to the decoder's depth L) and risks of the current checkpoint."""
    P = frozen_matrices(decoder, tasks)
    omega = order_parameters(P, tasks.H, tasks.xstar, decoder.L)
    direct = direct_risks(linear_form(decoder, P), tasks)
    state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    return OverlapRow(int(step), P, omega, direct, reconstruct_risks(omega), state)


@dataclass
class LoggedRun:
    decoder: RichardsonDecoder
    history: list[dict[str, Any]]
    rows: list[OverlapRow]


def train_logged(cfg: TrainConfig, eval_tasks: Tasks, every: int,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> LoggedRun:
    """models.train.train with logging: the same init (build_decoder), the same per-step
    batches (train_batch_seed) and the same Adam steps, so the final decoder is the one
    train(cfg) returns; a checkpoint row is logged before step 0, every `every` steps and
    after the last step.  `eval_tasks` must be on cfg's device and dtype."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    dev, dt = as_device(cfg.device), as_dtype(cfg.dtype)
    if eval_tasks.H.dtype != dt or eval_tasks.H.device.type != dev.type:
        raise ValueError(f"eval_tasks are {eval_tasks.H.dtype} on {eval_tasks.H.device}, "
                         f"the config trains {dt} on {dev}")
    rows: list[OverlapRow] = []

    def log(step: int, decoder: RichardsonDecoder) -> None:
        if step % every == 0:
            rows.append(log_checkpoint(decoder, eval_tasks, step))

    decoder, history = train(cfg, progress, before_step=log)
    rows.append(log_checkpoint(decoder, eval_tasks, cfg.steps))
    return LoggedRun(decoder, history, rows)
