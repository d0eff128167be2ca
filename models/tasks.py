"""In-context least-squares tasks (seed 002 sec 1.2) and single SPD test systems.

A task is one prompt of M noisy linear measurements; the decoder sees only the induced
normal equations H x* = d with H = X^T X / M + ridge I and d = X^T y / M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .dtypes import as_device, as_dtype
from .seeding import cpu_generator, derive_seed, random_rotation

# Tasks are drawn in chunks of at most this many Gaussian entries, so a large M*K
# (the seeds' GPU sizes, M = 4096, K = 64) never allocates the whole design at once.
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class TaskConfig:
    """Task distribution: K unknowns, M prompt rows, design conditioning kappa.

    `seed` fixes the anisotropic design covariance Sigma_x = Q diag(eigs) Q^T
    (eigs log-spaced from 1 down to 1/kappa, Q a seeded Haar rotation); task draws
    themselves are seeded separately in `LeastSquaresPrompts.sample`.
    """

    family: ClassVar[str] = "lsq"

    K: int = 8
    M: int = 32
    kappa: float = 20.0
    noise: float = 0.1
    ridge: float = 1e-2
    seed: int = 0

    @property
    def dim(self) -> int:
        """Size K of the decoder's system."""
        return self.K

    def sampler(self, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float64) -> "LeastSquaresPrompts":
        """The task sampler of this family (every task config has one: `.sample(n, seed)`)."""
        return LeastSquaresPrompts(self, device, dtype)

    def __post_init__(self) -> None:
        if self.K < 1 or self.M < 1:
            raise ValueError(f"K and M must be positive, got K={self.K}, M={self.M}")
        if not self.kappa >= 1.0:
            raise ValueError(f"kappa must be >= 1, got {self.kappa}")
        if self.noise < 0 or self.ridge < 0:
            raise ValueError("noise and ridge must be non-negative")


@dataclass
class Tasks:
    """A batch of n decoder problems: H (n,K,K) SPD, d (n,K), xstar (n,K) = H^{-1} d.

    `aux` holds per-task tensors of a task family beyond the decoder's system (leading
    axis n), e.g. the PDE family's true latent z and the true solution u_true; they are
    indexed and moved with the tasks.
    """

    H: torch.Tensor
    d: torch.Tensor
    xstar: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.H.shape[0]

    def __getitem__(self, idx: slice | torch.Tensor | int) -> "Tasks":
        """A sub-batch (an int index keeps the batch axis)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Tasks(self.H[idx], self.d[idx], self.xstar[idx], {k: v[idx] for k, v in self.aux.items()})

    @property
    def K(self) -> int:
        return self.H.shape[-1]

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "Tasks":
        """The same tasks on another device/dtype (xstar is cast, not re-solved)."""
        return Tasks(*(t.to(device=device, dtype=dtype) for t in (self.H, self.d, self.xstar)),
                     {k: v.to(device=device, dtype=dtype) for k, v in self.aux.items()})


def log_spaced_eigs(K: int, kappa: float) -> torch.Tensor:
    """K eigenvalues log-spaced from 1 down to 1/kappa (float64), so max/min = kappa."""
    if K == 1:
        return torch.ones(1, dtype=torch.float64)
    return torch.logspace(0.0, -math.log10(kappa), K, dtype=torch.float64)


def exact_solution(H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """x* of the given (already cast) H, d: solved in float64, then cast back.

    Why float64: x* is the target the SUT is measured against; solving the SUT's own
    rounded H, d in higher precision makes x* exact for those inputs up to one rounding.
    """
    x = torch.linalg.solve(H.to(torch.float64), d.to(torch.float64).unsqueeze(-1))
    return x.squeeze(-1).to(H.dtype)


class LeastSquaresPrompts:
    """Sampler of in-context least-squares tasks (seed 002 sec 1.2).

    Per task: beta ~ N(0, I_K) (chosen so that K^{-1} E||x*||^2 is O(1) whatever K,
    making depth risks comparable across K and the risk of x = 0 about 1);
    X (M,K) with rows x_i ~ N(0, Sigma_x); y = X beta + noise * xi, xi ~ N(0, I_M);
    H = X^T X / M + ridge I; d = c_M = X^T y / M; x* = H^{-1} d.
    Draws are made on the CPU in float64 and then cast and moved, so float32/float64
    and cpu/cuda runs see the same tasks up to rounding.
    """

    def __init__(self, cfg: TaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.cfg = cfg
        self.device = as_device(device)
        self.dtype = as_dtype(dtype)
        gen = cpu_generator(derive_seed("design-covariance", cfg.seed))
        Q = random_rotation(cfg.K, gen)
        self.eigs64 = log_spaced_eigs(cfg.K, cfg.kappa)
        self._sigma64 = symmetrize((Q * self.eigs64) @ Q.T)
        self._sigma_sqrt64 = symmetrize((Q * self.eigs64.sqrt()) @ Q.T)

    @property
    def Sigma_x(self) -> torch.Tensor:
        """The design covariance (K,K) on the sampler's device/dtype."""
        return self._sigma64.to(self.device, self.dtype)

    def population_H(self) -> torch.Tensor:
        """E[H] = Sigma_x + ridge I (K,K): the M -> infinity limit of H_M."""
        eye = torch.eye(self.cfg.K, dtype=torch.float64)
        return (self._sigma64 + self.cfg.ridge * eye).to(self.device, self.dtype)

    def sample(self, n: int, seed: int) -> Tasks:
        """n i.i.d. tasks from the stream fixed by `seed` (same seed -> same tasks)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        K, M = self.cfg.K, self.cfg.M
        gen = cpu_generator(derive_seed("lsq-prompts", seed))
        beta = torch.randn(n, K, generator=gen, dtype=torch.float64)
        eye = torch.eye(K, dtype=torch.float64)
        chunk = max(1, _CHUNK_ENTRIES // (M * K))
        Hs, ds = [], []
        for start in range(0, n, chunk):
            b = beta[start:start + chunk]
            X = torch.randn(b.shape[0], M, K, generator=gen, dtype=torch.float64) @ self._sigma_sqrt64
            xi = torch.randn(b.shape[0], M, generator=gen, dtype=torch.float64)
            y = (X @ b.unsqueeze(-1)).squeeze(-1) + self.cfg.noise * xi
            Xt = X.transpose(-1, -2)
            Hs.append(symmetrize(Xt @ X) / M + self.cfg.ridge * eye)
            ds.append((Xt @ y.unsqueeze(-1)).squeeze(-1) / M)
        H = torch.cat(Hs).to(self.dtype)
        d = torch.cat(ds).to(self.dtype)
        xstar = exact_solution(H, d)
        return Tasks(H, d, xstar).to(self.device, self.dtype)


def spd_system(K: int, kappa: float, seed: int, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """One SPD H (K,K) with condition number kappa and a seeded d ~ N(0, I_K).

    Eigenvalues log-spaced in [1/kappa, 1] in a seeded Haar basis: property tests get
    a controlled conditioning at any K (2..64) without sampling noise. The condition
    number is exact before the final rounding to `dtype`.
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if not kappa >= 1.0:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    gen = cpu_generator(derive_seed("spd-system", K, float(kappa), seed))
    Q = random_rotation(K, gen)
    H = symmetrize((Q * log_spaced_eigs(K, kappa)) @ Q.T)
    d = torch.randn(K, generator=gen, dtype=torch.float64)
    dev, dt = as_device(device), as_dtype(dtype)
    return H.to(dev, dt), d.to(dev, dt)


def symmetrize(A: torch.Tensor) -> torch.Tensor:
    """(A + A^T)/2: removes the rounding asymmetry of a product that is symmetric in exact arithmetic."""
    return 0.5 * (A + A.transpose(-1, -2))
