"""Gaussian-design prompts with the design matrix exposed (seed 002 sec 1.2, 4, 5.2).

`models.tasks.LeastSquaresPrompts` hands the decoder only H_M and d.  The prompt claims of
002 sec 4 and the subspace encoder of 002 sec 5.2 need more of the prompt: the design X
itself (its whitened covariance Sigma_x^{-1/2} X^T X Sigma_x^{-1/2} / M), low-rank tasks
beta = U_* z, and each prompt's ridge estimate beta_hat = H_M^{-1} c_M.  This sampler is a
`LeastSquaresPrompts` (same TaskConfig, same seeded design covariance Sigma_x, same H_M =
X^T X / M + ridge I and population H_inf = Sigma_x + ridge I), extended with those pieces.

Draws are made on the CPU in float64 and then cast and moved; the whitening is applied by
the SUT in its own dtype on its own device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .seeding import cpu_generator, derive_seed, random_rotation
from .tasks import LeastSquaresPrompts, TaskConfig, symmetrize, log_spaced_eigs

__all__ = ["GaussianPrompts", "PromptBatch", "whitened_covariance"]


@dataclass
class PromptBatch:
    """n prompts: X (n,M,K), y (n,M), beta (n,K), H (n,K,K), c (n,K), beta_hat (n,K)."""

    X: torch.Tensor
    y: torch.Tensor
    beta: torch.Tensor
    H: torch.Tensor
    c: torch.Tensor
    beta_hat: torch.Tensor

    def __len__(self) -> int:
        return self.X.shape[0]


def whitened_covariance(X: torch.Tensor, Sigma_inv_sqrt: torch.Tensor) -> torch.Tensor:
    """Sigma_x^{-1/2} (X^T X / M) Sigma_x^{-1/2} for a batch X (n,M,K) (002 sec 4)."""
    M = X.shape[-2]
    S = symmetrize(X.transpose(-1, -2) @ X) / M
    return symmetrize(Sigma_inv_sqrt @ S @ Sigma_inv_sqrt)


class GaussianPrompts(LeastSquaresPrompts):
    """Prompts x_i ~ N(0, Sigma_x) (rows of X), y = X beta + noise xi, Gaussian design.

    Tasks: `rank=None` draws beta ~ N(0, I_K) as `LeastSquaresPrompts` does; `rank=r`
    draws low-rank tasks beta = U_* z, z ~ N(0, Sigma_z) in R^r (002 sec 1.2), with U_* a
    seeded K x r orthonormal basis and Sigma_z = diag(eigs) in a seeded rotation, eigs
    log-spaced in [z_scale / kappa_z, z_scale].
    """

    def __init__(self, cfg: TaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, rank: int | None = None,
                 kappa_z: float = 4.0, z_scale: float = 1.0) -> None:
        super().__init__(cfg, device, dtype)
        K = cfg.K
        # The same Haar rotation the parent drew for Sigma_x (same derived seed).
        Q = random_rotation(K, cpu_generator(derive_seed("design-covariance", cfg.seed)))
        self._sigma_inv_sqrt64 = symmetrize((Q * self.eigs64.rsqrt()) @ Q.T)
        self.rank = rank
        if rank is not None:
            if not 1 <= rank <= K:
                raise ValueError(f"rank must be in 1..K={K}, got {rank}")
            if not kappa_z >= 1.0 or not z_scale > 0:
                raise ValueError("kappa_z must be >= 1 and z_scale > 0")
            g = cpu_generator(derive_seed("lowrank-tasks", cfg.seed, rank))
            self.U_star64 = random_rotation(K, g)[:, :rank].contiguous()
            V = random_rotation(rank, g)
            self.mu64 = z_scale * log_spaced_eigs(rank, kappa_z)
            self.Sigma_z64 = symmetrize((V * self.mu64) @ V.T)
            self._sigma_z_sqrt64 = symmetrize((V * self.mu64.sqrt()) @ V.T)

    # ------------------------------------------------------------------ population
    @property
    def Sigma_x_inv_sqrt(self) -> torch.Tensor:
        return self._sigma_inv_sqrt64.to(self.device, self.dtype)

    @property
    def U_star(self) -> torch.Tensor:
        self._need_rank()
        return self.U_star64.to(self.device, self.dtype)

    @property
    def Sigma_beta(self) -> torch.Tensor:
        """E[beta beta^T] = U_* Sigma_z U_*^T (002 sec 5.2), float64 -> dtype."""
        self._need_rank()
        return symmetrize(self.U_star64 @ self.Sigma_z64 @ self.U_star64.T).to(self.device, self.dtype)

    def _need_rank(self) -> None:
        if self.rank is None:
            raise ValueError("low-rank quantities need GaussianPrompts(..., rank=r)")

    # ------------------------------------------------------------------ sampling
    def design(self, n: int, seed: int) -> torch.Tensor:
        """n designs X (n,M,K) with i.i.d. rows N(0, Sigma_x), on the sampler's device/dtype."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        gen = cpu_generator(derive_seed("gaussian-design", seed))
        Z = torch.randn(n, self.cfg.M, self.cfg.K, generator=gen, dtype=torch.float64)
        return (Z @ self._sigma_sqrt64).to(self.device, self.dtype)

    def whitened(self, X: torch.Tensor) -> torch.Tensor:
        """The whitened prompt covariance of each design in X (n,K,K), in the SUT's dtype."""
        return whitened_covariance(X, self.Sigma_x_inv_sqrt)

    def whitened_spectra(self, n: int, seed: int) -> torch.Tensor:
        """Eigenvalues (n,K), ascending, of the whitened covariances of n fresh designs."""
        return torch.linalg.eigvalsh(self.whitened(self.design(n, seed)))

    def prompts(self, n: int, seed: int) -> PromptBatch:
        """n prompts with their normal equations and ridge estimates beta_hat = H_M^{-1} c_M."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        K, M = self.cfg.K, self.cfg.M
        gen = cpu_generator(derive_seed("gaussian-prompts", seed, self.rank))
        if self.rank is None:
            beta = torch.randn(n, K, generator=gen, dtype=torch.float64)
        else:
            z = torch.randn(n, self.rank, generator=gen, dtype=torch.float64) @ self._sigma_z_sqrt64
            beta = z @ self.U_star64.T
        X = torch.randn(n, M, K, generator=gen, dtype=torch.float64) @ self._sigma_sqrt64
        xi = torch.randn(n, M, generator=gen, dtype=torch.float64)
        y = (X @ beta.unsqueeze(-1)).squeeze(-1) + self.cfg.noise * xi
        dev, dt = self.device, self.dtype
        X, y, beta = X.to(dev, dt), y.to(dev, dt), beta.to(dev, dt)
        Xt = X.transpose(-1, -2)
        eye = torch.eye(K, device=dev, dtype=dt)
        H = symmetrize(Xt @ X) / M + self.cfg.ridge * eye
        c = (Xt @ y.unsqueeze(-1)).squeeze(-1) / M
        beta_hat = torch.linalg.solve(H, c.unsqueeze(-1)).squeeze(-1)
        return PromptBatch(X, y, beta, H, c, beta_hat)
