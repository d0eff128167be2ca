"""Q/K gauge transform of attention modules (seed 002 sec 12.10).

The attention logits depend on W_Q, W_K only through the bilinear form
q.k = tau^T W_Q^T W_K tau' (q = W_Q tau, k = W_K tau'), so W_Q -> A W_Q,
W_K -> A^{-T} W_K (A invertible, (m, m)) leaves W_Q^T W_K unchanged.  The transform
is computed in float64 on the CPU (A W_Q by a matmul, A^{-T} W_K by an LU solve with
A^T) and cast back to the module's device and dtype.  The two halves are separate
small functions so a test can plant a mutant (A^{-1} instead of A^{-T}).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def gauge_query(A: torch.Tensor, W_Q: torch.Tensor) -> torch.Tensor:
    """A W_Q in float64 on the CPU."""
    return A.to(torch.float64).cpu() @ W_Q.detach().to(device="cpu", dtype=torch.float64)


def gauge_key(A: torch.Tensor, W_K: torch.Tensor) -> torch.Tensor:
    """A^{-T} W_K = solve(A^T, W_K) in float64 on the CPU."""
    A64 = A.to(torch.float64).cpu()
    return torch.linalg.solve(A64.T, W_K.detach().to(device="cpu", dtype=torch.float64))


def gauge_transform(module: nn.Module, A: torch.Tensor) -> nn.Module:
    """A deep copy of `module` (with W_Q, W_K parameters) with W_Q <- A W_Q, W_K <- A^{-T} W_K."""
    W_Q, W_K = module.W_Q, module.W_K
    m = W_Q.shape[0]
    if A.shape != (m, m):
        raise ValueError(f"A must be ({m}, {m}), got {tuple(A.shape)}")
    new = copy.deepcopy(module)
    with torch.no_grad():
        new.W_Q.copy_(gauge_query(A, W_Q).to(device=W_Q.device, dtype=W_Q.dtype))
        new.W_K.copy_(gauge_key(A, W_K).to(device=W_K.device, dtype=W_K.dtype))
    return new
