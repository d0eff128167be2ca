"""The depth-L preconditioned Richardson decoder (seed 000 eq 1; 001 sec 4; 002 sec 3.1).

x_{l+1} = x_l + Delta(x_l, H, d); for linear preconditioners Delta = P (d - H x_l).
The loop and the matrix-vector product are kept in small plain functions so tests can
plant mutants (a transposed P, one iteration too few) by monkeypatching them.
"""

from __future__ import annotations

import torch
from torch import nn

from .tasks import Tasks


def residual(z: torch.Tensor, H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """r = d - H z for z, d (..., K) and H (..., K, K)."""
    return d - (H @ z.unsqueeze(-1)).squeeze(-1)


def apply(P: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """P r for a global P (K,K) (as r @ P^T) or per-task P (B,K,K) (as a batched matmul)."""
    if P.dim() == 2:
        return r @ P.transpose(0, 1)
    return torch.bmm(P, r.unsqueeze(-1)).squeeze(-1)


class RichardsonDecoder(nn.Module):
    """L steps of x <- x + precond.update(x, H, d) from x_0 (zeros by default)."""

    def __init__(self, precond: nn.Module, L: int) -> None:
        super().__init__()
        if int(L) < 0:
            raise ValueError(f"L must be >= 0, got {L}")
        self.precond = precond
        self.L = int(L)

    def forward(self, H: torch.Tensor, d: torch.Tensor, x0: torch.Tensor | None = None,
                trajectory: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """x_L, or the list [x_0, ..., x_L] when trajectory=True."""
        x = torch.zeros_like(d) if x0 is None else x0
        xs = [x]
        for _ in range(self.L):
            x = x + self.precond.update(x, H, d)
            xs.append(x)
        return xs if trajectory else x


def depth_risk(decoder: RichardsonDecoder, tasks: Tasks) -> torch.Tensor:
    """Mean over tasks of ||x_L - x*||^2 / K (seed 000 eq 19, 001 sec 4); differentiable."""
    xL = decoder(tasks.H, tasks.d)
    return ((xL - tasks.xstar) ** 2).sum(-1).mean() / tasks.K
