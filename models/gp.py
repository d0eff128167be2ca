"""Finite-rank GP / KRR posterior (000 sec 4, eqs 6-9): weight space and function space.

Prior z ~ N(0, Lambda), f(x) = phi(x)^T z, with a fixed cosine basis of rank m on [0, 1]
(phi_0 = 1, phi_j = sqrt(2) cos(pi j x)) and a decaying diagonal prior lambda_j = (1+j)^-2.

Weight space (primal): A = Lambda^-1 + s^-2 Phi^T Phi, d = s^-2 Phi^T y, z_post = A^-1 d,
mean phi_q^T z_post, covariance Phi_q A^-1 Phi_q^T.
Function space (dual): k(x, x') = phi(x)^T Lambda phi(x'), M = K + s^2 I,
mean k_q^T M^-1 y, covariance k(q, q) - k_q^T M^-1 k_q.
Both solves by Cholesky.  All arithmetic in the module's dtype on its device.

Decoder tasks (the posterior-latent solve of 000 sec 4, Fig 1): `GPTaskConfig` /
`GPPrompts` turn prompts into Richardson systems H z = d with z* = z_post, normalised by
c = s^2 / n (H = c A, d = c d_A, the same solution): H = Phi^T Phi / n + (s^2/n) Lambda^-1
has eigenvalues O(1) at every prompt size, as the least-squares tasks' X^T X / M do, so one
preconditioner initialisation serves both families.  Running the decoder with P on (cA, cd)
is running it with cP on (A, d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from models.seeding import cpu_generator, derive_seed
from models.tasks import Tasks, exact_solution, symmetrize

PROMPT_SIZES = (16, 64)
RANK = 4  # K = m of the decoder tasks (000: "K=4 CPU comparisons")
SIGMA = 0.1  # observation noise s of the decoder tasks


class FiniteRankGP(torch.nn.Module):
    def __init__(self, m: int, sigma: float, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if m < 1:
            raise ValueError(f"rank m must be >= 1, got {m}")
        self.m = int(m)
        self.device_ = torch.device(device)
        self.dtype_ = dtype
        j = torch.arange(self.m, dtype=torch.float64)
        self.register_buffer("lam", (1.0 / (1.0 + j) ** 2).to(device=self.device_, dtype=dtype))
        self.register_buffer("sigma", torch.tensor(float(sigma), dtype=torch.float64).to(self.device_, dtype))

    # ---- shared pieces ------------------------------------------------------------------
    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(x).to(device=self.device_, dtype=self.dtype_).reshape(-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Phi, shape (len(x), m); a batch of prompts x (B, n) gives (B, n, m)."""
        x = torch.as_tensor(x).to(device=self.device_, dtype=self.dtype_)
        if x.dim() == 0:
            x = x.reshape(1)
        j = torch.arange(self.m, device=self.device_, dtype=self.dtype_)
        phi = math.sqrt(2.0) * torch.cos(math.pi * x[..., None] * j)
        phi[..., 0] = 1.0
        return phi

    def noise_var(self) -> torch.Tensor:
        return self.sigma * self.sigma

    @staticmethod
    def _chol(S: torch.Tensor) -> torch.Tensor:
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0:
            raise torch.linalg.LinAlgError(f"Cholesky failed at leading minor {int(info)}")
        return L

    # ---- weight space (primal) ------------------------------------------------------------
    def primal_system(self, Phi: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A = Lambda^-1 + s^-2 Phi^T Phi, d = s^-2 Phi^T y (eq 7); batched over leading axes."""
        s2 = self.noise_var()
        A = torch.diag(1.0 / self.lam) + (Phi.mT @ Phi) / s2
        d = (Phi.mT @ y.unsqueeze(-1)).squeeze(-1) / s2
        return A, d

    def primal_posterior(self, x, y, xq) -> dict[str, torch.Tensor]:
        Phi, Phiq, y = self.features(x), self.features(xq), self._x(y)
        A, d = self.primal_system(Phi, y)
        L = self._chol(A)
        z = torch.cholesky_solve(d[:, None], L)[:, 0]  # z_post = A^-1 d (eq 8)
        W = torch.cholesky_solve(Phiq.T.contiguous(), L)  # A^-1 Phi_q^T
        return {"Phi": Phi, "Phiq": Phiq, "A": A, "d": d, "z_post": z, "mean": Phiq @ z,
                "W": W, "cov": self.primal_cov(Phiq, W)}

    def primal_cov(self, Phiq: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return Phiq @ W

    # ---- function space (dual) ------------------------------------------------------------
    def kernel(self, x1, x2) -> torch.Tensor:
        """k(x, x') = phi(x)^T Lambda phi(x') (eq 9)."""
        return (self.features(x1) * self.lam) @ self.features(x2).T

    def dual_system(self, K: torch.Tensor) -> torch.Tensor:
        """M = K + s^2 I."""
        return K + self.noise_var() * torch.eye(K.shape[0], device=self.device_, dtype=self.dtype_)

    def dual_posterior(self, x, y, xq) -> dict[str, torch.Tensor]:
        y = self._x(y)
        K, kq, kqq = self.kernel(x, x), self.kernel(xq, x), self.kernel(xq, xq)
        M = self.dual_system(K)
        L = self._chol(M)
        alpha = torch.cholesky_solve(y[:, None], L)[:, 0]
        W = torch.cholesky_solve(kq.T.contiguous(), L)  # M^-1 k_q
        return {"Phi": self.features(x), "Phiq": self.features(xq), "K": K, "M": M, "kq": kq,
                "kqq": kqq, "alpha": alpha, "mean": kq @ alpha, "W": W, "cov": self.dual_cov(kqq, kq, W)}

    def dual_cov(self, kqq: torch.Tensor, kq: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return kqq - kq @ W


def sample_prompt(m: int, n: int, sigma: float, seed: int, n_query: int = 4
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A GP prompt (float64, CPU): x_i ~ U[0,1], z ~ N(0, Lambda), y = Phi z + s eps, queries U[0,1].

    Drawn in float64 on the CPU from `seed` (prompt sizes of the seed: PROMPT_SIZES); the
    module casts them to its own dtype/device.
    """
    gen = cpu_generator(derive_seed("gp.prompt", m, n, seed))
    prior = FiniteRankGP(m, sigma)
    x = torch.rand(n, generator=gen, dtype=torch.float64)
    xq = torch.rand(n_query, generator=gen, dtype=torch.float64)
    z = torch.randn(m, generator=gen, dtype=torch.float64) * prior.lam.sqrt()
    y = prior.features(x) @ z + sigma * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y, xq


# --------------------------------------------------------------------------- #
# decoder tasks: the posterior-latent solve (000 sec 4, Fig 1; sec 6 sweep)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class GPTaskConfig:
    """GP posterior-latent tasks: rank m (the decoder's K), prompt size n, noise s."""

    family: ClassVar[str] = "gp"

    m: int = RANK
    n: int = 16
    sigma: float = SIGMA

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1:
            raise ValueError(f"rank m and prompt size n must be positive, got m={self.m}, n={self.n}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"noise sigma must be finite and > 0, got {self.sigma}")

    @property
    def dim(self) -> int:
        return self.m

    def sampler(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> "GPPrompts":
        return GPPrompts(self, device, dtype)

    def describe(self) -> dict[str, str | float]:
        """The feature map, prior and system of these tasks, as golden files state them."""
        return {
            "gp.feature_map": "phi_0(x) = 1, phi_j(x) = sqrt(2) cos(pi j x), j = 1..m-1, x_i ~ U[0, 1]",
            "gp.prior": "z ~ N(0, Lambda), Lambda = diag((1 + j)^-2), j = 0..m-1",
            "gp.rank_m": self.m,
            "gp.sigma": self.sigma,
            "gp.system": "H = (s^2/n) (Lambda^-1 + s^-2 Phi^T Phi), d = Phi^T y / n, z* = z_post",
        }


class GPPrompts:
    """Sampler of posterior-latent solves: per task x_i ~ U[0,1] (n of them), z ~ N(0, Lambda),
    y = Phi z + s eps; the system (H, d) = (s^2/n) (A, d_A) of eq 7 built by the SUT module
    FiniteRankGP in the sampler's dtype on its device, z* = z_post = H^-1 d (a float64 solve of
    the cast system, as for the least-squares tasks).  aux["z_true"] is the drawn latent.
    Draws are made on the CPU in float64, so every backend sees the same prompts."""

    def __init__(self, cfg: GPTaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.cfg = cfg
        self.gp = FiniteRankGP(cfg.m, cfg.sigma, device, dtype)
        self._prior = FiniteRankGP(cfg.m, cfg.sigma)  # float64 CPU: draws only

    def prompts(self, N: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The N prompts behind `sample(N, seed)`: inputs x (N, n), targets y (N, n), latents z (N, m),
        float64 on the CPU."""
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        m, n, s = self.cfg.m, self.cfg.n, self.cfg.sigma
        gen = cpu_generator(derive_seed("gp.tasks", m, n, s, seed))
        x = torch.rand(N, n, generator=gen, dtype=torch.float64)
        z = torch.randn(N, m, generator=gen, dtype=torch.float64) * self._prior.lam.sqrt()
        y = (self._prior.features(x) @ z.unsqueeze(-1)).squeeze(-1) + s * torch.randn(
            N, n, generator=gen, dtype=torch.float64)
        return x, y, z

    def sample(self, N: int, seed: int) -> Tasks:
        x, y, z = self.prompts(N, seed)
        n = self.cfg.n
        gp = self.gp
        A, dA = gp.primal_system(gp.features(x), y.to(gp.device_, gp.dtype_))
        c = gp.noise_var() / n
        H, d = c * symmetrize(A), c * dA  # Phi^T Phi as a product is symmetric only up to rounding
        return Tasks(H, d, exact_solution(H, d), {"z_true": z.to(gp.device_, gp.dtype_)})
