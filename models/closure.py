"""Closure counterexamples: the linear decoder's outer step and the spectra-only pair.

002 sec 7: the outer (pretraining) step of the linear decoder, P <- P - eta (P C - B),
moves the error E = P - P* as E <- E (I - eta C); the risk R = Tr(E C E^T) of an error
placed on one eigenvector q_i of C is multiplied by (1 - eta lambda_i)^2, so two states
with the same risk but errors on different eigenvectors have different next risks:
risk alone is not a closed state variable.

000 sec 7: P_A = H^{-1} and P_B = Pi H^{-1} Pi^T (Pi a signed permutation, exactly
orthogonal in floating point) have the same eigenvalues and singular values, yet the
depth-1 risk of P_A vanishes (up to the rounding of P_A) while that of P_B does not.

The outer step and the risk are written with operators only (@, *, -, .sum()), so the
same code runs on torch tensors (the backend run) and on numpy object arrays of
fractions.Fraction (an exact run of the very same step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .dtypes import as_device, as_dtype
from .preconditioners import FrozenLinear
from .richardson import RichardsonDecoder, depth_risk
from .seeding import cpu_generator, derive_seed
from .tasks import Tasks, spd_system


# --------------------------------------------------------------------------- #
# 002 sec 7: outer step of the linear decoder
# --------------------------------------------------------------------------- #
def population_gradient(P: Any, C: Any, B: Any) -> Any:
    """d/dP of (1/2) E||P d - x*||^2 = (1/2) Tr(P C P^T) - Tr(P B^T) + const: P C - B,
    with C = E[d d^T] and B = E[x* d^T] (002 sec 3)."""
    return P @ C - B


def outer_step(P: Any, C: Any, B: Any, eta: Any) -> Any:
    """One population gradient step of the linear decoder: P - eta (P C - B) (002 sec 3, 6.2)."""
    return P - eta * population_gradient(P, C, B)


def outer_trajectory(P0: Any, C: Any, B: Any, eta: Any, steps: int) -> list[Any]:
    """[P_0, ..., P_steps] of the outer step."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    Ps = [P0]
    for _ in range(int(steps)):
        Ps.append(outer_step(Ps[-1], C, B, eta))
    return Ps


def excess_risk(P: Any, Pstar: Any, C: Any) -> Any:
    """R = Tr((P - P*) C (P - P*)^T): 002 sec 7's e^T C e summed over the rows of P - P*
    (K times the excess depth-1 risk of 002 sec 3, which is K^{-1} Tr(...))."""
    E = P - Pstar
    return ((E @ C) * E).sum()


@dataclass
class OuterRun:
    """One backend outer trajectory: its inputs as cast to the backend, iterates and risks."""

    C: torch.Tensor
    B: torch.Tensor
    Pstar: torch.Tensor
    eta: torch.Tensor  # 0-dim, in the backend dtype: the step size the run actually used
    Ps: list[torch.Tensor]
    risks: list[float]


def run_outer(P0: Any, C: Any, B: Any, Pstar: Any, eta: float, steps: int,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> OuterRun:
    """The backend run: float64 CPU arrays (numpy or torch) and eta are cast and moved first,
    so every backend starts from the same numbers; then `steps` outer steps and the risk
    R_s = Tr((P_s - P*) C (P_s - P*)^T) of each iterate."""
    dev, dt = as_device(device), as_dtype(dtype)
    P0t, Ct, Bt, Pst = (torch.as_tensor(x, dtype=torch.float64).to(device=dev, dtype=dt)
                        for x in (P0, C, B, Pstar))
    eta_t = torch.tensor(float(eta), dtype=torch.float64).to(device=dev, dtype=dt)
    with torch.no_grad():
        Ps = outer_trajectory(P0t, Ct, Bt, eta_t, steps)
        risks = [float(excess_risk(P, Pst, Ct)) for P in Ps]
    return OuterRun(Ct, Bt, Pst, eta_t, Ps, risks)


# --------------------------------------------------------------------------- #
# 000 sec 7: same spectra, different depth-1 risks
# --------------------------------------------------------------------------- #
@dataclass
class SpectraPair:
    """H, P_A = H^{-1} (computed on the backend), P_B = Pi P_A Pi^T and the evaluation tasks.

    Pi = diag(signs) @ permutation matrix of `perm`: (Pi X Pi^T)[i, j] =
    signs[i] signs[j] X[perm[i], perm[j]], an exact re-indexing (and sign flip) of floats,
    so P_B has exactly the eigenvalues and singular values of P_A.
    """

    H: torch.Tensor
    P_A: torch.Tensor
    P_B: torch.Tensor
    perm: list[int]
    signs: list[float]
    tasks: Tasks


def signed_permutation(K: int, seed: int) -> tuple[list[int], list[float]]:
    """A seeded signed permutation that is not +-I (K >= 2), so Pi H Pi^T != H for generic H."""
    if K < 2:
        raise ValueError(f"a misaligning signed permutation needs K >= 2, got {K}")
    gen = cpu_generator(derive_seed("signed-permutation", K, seed))
    while True:
        perm = torch.randperm(K, generator=gen).tolist()
        signs = [1.0 if b else -1.0 for b in (torch.rand(K, generator=gen, dtype=torch.float64) < 0.5).tolist()]
        identity = perm == list(range(K))
        if not (identity and len(set(signs)) == 1):
            return perm, signs


def conjugate_by_signed_permutation(X: torch.Tensor, perm: list[int], signs: list[float]) -> torch.Tensor:
    """Pi X Pi^T for Pi = diag(signs) P_perm: re-indexing and sign flips only (exact)."""
    idx = torch.as_tensor(perm, device=X.device)
    s = torch.as_tensor(signs, device=X.device, dtype=X.dtype)
    return s[:, None] * X[idx][:, idx] * s[None, :]


def spectra_pair(K: int, kappa: float, seed: int, n_eval: int = 64,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> SpectraPair:
    """The 000 sec 7 construction on an SPD H of condition kappa (models.spd_system).

    Evaluation tasks: x* ~ N(0, I_K) (float64, CPU, seeded), d = H x*, then the label is
    re-solved from the cast H, d in float64 (as models.tasks does), so S = E x* x*^T ~ I.
    """
    dev, dt = as_device(device), as_dtype(dtype)
    H, _ = spd_system(K, kappa, seed, device=dev, dtype=dt)
    P_A = torch.linalg.inv(H)
    perm, signs = signed_permutation(K, seed)
    P_B = conjugate_by_signed_permutation(P_A, perm, signs)
    gen = cpu_generator(derive_seed("spectra-eval", K, float(kappa), seed))
    x = torch.randn(n_eval, K, generator=gen, dtype=torch.float64)
    H64 = H.to("cpu", torch.float64)
    d = (x @ H64.T).to(dt).to(torch.float64)  # the decoder's d, rounded to the backend dtype
    xstar = torch.linalg.solve(H64, d.unsqueeze(-1)).squeeze(-1)
    Hb = H.expand(n_eval, K, K).contiguous()
    tasks = Tasks(Hb, d.to(device=dev, dtype=dt), xstar.to(device=dev, dtype=dt))
    return SpectraPair(H, P_A, P_B, perm, signs, tasks)


@torch.no_grad()
def depth1_risk(P: torch.Tensor, tasks: Tasks) -> float:
    """The SUT's depth-1 risk K^{-1} E||x_1 - x*||^2 of the Richardson decoder with the
    frozen P, from x_0 = 0 on `tasks` (models.RichardsonDecoder + FrozenLinear)."""
    return float(depth_risk(RichardsonDecoder(FrozenLinear(P), 1), tasks))
