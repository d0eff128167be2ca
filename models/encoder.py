"""Encoder-only low-rank recovery (001 sec 3; 002 sec 5.1, 12.6) and the subspace encoder
of 002 sec 5.2.

Dictionary model (001 sec 3.1): z ~ N(0, Sigma_z) in R^r, b = G_* z + xi in R^K,
xi ~ N(0, sigma^2 I_K); G_* (K x r) has orthonormal columns (the low-rank subspace to
recover).  Convention: K is the dimension of b, sigma^2 the noise variance *per
coordinate of b*, and the encoder risk is normalized per coordinate of b,

    R_enc(G) = K^{-1} E||G z - b||^2,

so its floor R_enc(G_*) is sigma^2 (001 Table 1: floor 4.0e-4 = 0.02^2).

Trainers of the dictionary G_s (gradient descent on L_enc(G) = E||G z - b||^2 / 2):
* "population": G_{s+1} = G_s - eta (G_s Sigma_z - Sigma_bz), the exact moments;
* "online":     fresh minibatch moments every step (the sampled run of 002 sec 12.6);
* "finite":     the moments of one fixed training set of N samples (full-batch GD).
The held-out risk is the mean of ||G z - b||^2 / K over fresh samples (a seed no trainer uses).

Subspace encoder (002 sec 5.2): from N least-squares prompts with low-rank tasks
beta = U_* z, S_N = N^{-1} sum beta_hat_n beta_hat_n^T and U_N = Top_r(S_N).

Everything random is drawn in float64 on the CPU from derived seeds, then cast and moved.
Small module-level functions (`gd_step`, `heldout_sample`, `top_r`, ...) are the seams
tests use to plant mutants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dtypes import as_device, as_dtype
from .gaussian_prompts import GaussianPrompts
from .seeding import cpu_generator, derive_seed, random_rotation
from .tasks import TaskConfig, symmetrize, log_spaced_eigs

__all__ = [
    "EncoderConfig", "EncoderProblem", "train", "gd_step", "population_risk", "heldout_sample",
    "heldout_risk", "encoder_metrics", "subspace_sin2", "top_r", "SubspaceConfig",
    "SubspaceRun", "subspace_estimates",
]

MODES = ("population", "online", "finite")


@dataclass(frozen=True)
class EncoderConfig:
    """Dictionary model: b = G_* z + xi, b in R^K, z in R^r.

    Sigma_z has eigenvalues log-spaced in [z_scale / kappa_z, z_scale] in a seeded basis;
    G_0 = init_scale * N(0, 1/r) entries.  `seed` fixes Sigma_z, G_* and G_0.
    """

    K: int = 16
    r: int = 4
    sigma: float = 0.02
    kappa_z: float = 50.0
    z_scale: float = 1.0
    init_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.r <= self.K:
            raise ValueError(f"need 1 <= r <= K, got r={self.r}, K={self.K}")
        if self.sigma < 0 or not self.kappa_z >= 1 or not self.z_scale > 0:
            raise ValueError("sigma >= 0, kappa_z >= 1 and z_scale > 0 are required")


class EncoderProblem:
    """The dictionary model on a device/dtype: moments, G_*, G_0 and a sampler."""

    def __init__(self, cfg: EncoderConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.cfg = cfg
        self.device = as_device(device)
        self.dtype = as_dtype(dtype)
        g = cpu_generator(derive_seed("encoder-problem", cfg.seed, cfg.K, cfg.r))
        V = random_rotation(cfg.r, g)
        self.mu64 = cfg.z_scale * log_spaced_eigs(cfg.r, cfg.kappa_z)
        self.Sigma_z64 = symmetrize((V * self.mu64) @ V.T)
        self._sz_sqrt64 = symmetrize((V * self.mu64.sqrt()) @ V.T)
        self.G_star64 = random_rotation(cfg.K, g)[:, :cfg.r].contiguous()
        self.G0_64 = cfg.init_scale * torch.randn(cfg.K, cfg.r, generator=g, dtype=torch.float64) / cfg.r**0.5

    def _t(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    @property
    def K(self) -> int:
        return self.cfg.K

    @property
    def r(self) -> int:
        return self.cfg.r

    @property
    def sigma2(self) -> float:
        """Noise variance per coordinate of b (the float sigma, squared exactly in theory)."""
        return self.cfg.sigma ** 2

    @property
    def Sigma_z(self) -> torch.Tensor:
        return self._t(self.Sigma_z64)

    @property
    def G_star(self) -> torch.Tensor:
        return self._t(self.G_star64)

    @property
    def G0(self) -> torch.Tensor:
        return self._t(self.G0_64)

    @property
    def Sigma_bz(self) -> torch.Tensor:
        """E[b z^T] = G_* Sigma_z (E[xi z^T] = 0)."""
        return self._t(self.G_star64 @ self.Sigma_z64)

    @property
    def Sigma_bb(self) -> torch.Tensor:
        """E[b b^T] = G_* Sigma_z G_*^T + sigma^2 I_K."""
        eye = torch.eye(self.K, dtype=torch.float64)
        return self._t(symmetrize(self.G_star64 @ self.Sigma_z64 @ self.G_star64.T) + self.cfg.sigma ** 2 * eye)

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n i.i.d. pairs (z (n,r), b (n,K)) from the generator, float64 -> device/dtype."""
        z = torch.randn(n, self.r, generator=gen, dtype=torch.float64) @ self._sz_sqrt64
        xi = torch.randn(n, self.K, generator=gen, dtype=torch.float64)
        b = z @ self.G_star64.T + self.cfg.sigma * xi
        return self._t(z), self._t(b)


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
def gd_step(G: torch.Tensor, Sz: torch.Tensor, Sbz: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """G - eta (G Sigma_z - Sigma_bz): one gradient step on E||G z - b||^2 / 2 (002 sec 5.1)."""
    return G - eta * (G @ Sz - Sbz)


def empirical_moments(z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z^T Z / n, B^T Z / n) of a sample."""
    n = z.shape[0]
    return symmetrize(z.T @ z) / n, b.T @ z / n


def training_set(problem: EncoderProblem, N: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training set of the "finite" trainer."""
    return problem.sample(N, cpu_generator(derive_seed("encoder-train", problem.cfg.seed, seed)))


@torch.no_grad()
def train(problem: EncoderProblem, eta: float, steps: int, mode: str = "population",
          batch: int = 64, N: int = 64, seed: int = 0, G0: torch.Tensor | None = None) -> torch.Tensor:
    """The trajectory G_0, ..., G_steps (steps+1, K, r) of the encoder dictionary trainer.

    mode "population" uses the exact moments; "online" draws a fresh minibatch of `batch`
    samples per step; "finite" reuses the moments of `training_set(problem, N, seed)`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    G = problem.G0 if G0 is None else G0.to(problem.device, problem.dtype)
    eta_t = torch.tensor(eta, dtype=problem.dtype, device=problem.device)
    traj = torch.empty(steps + 1, problem.K, problem.r, dtype=problem.dtype, device=problem.device)
    traj[0] = G
    if mode == "population":
        Sz, Sbz = problem.Sigma_z, problem.Sigma_bz
    elif mode == "finite":
        Sz, Sbz = empirical_moments(*training_set(problem, N, seed))
    else:
        gen = cpu_generator(derive_seed("encoder-online", problem.cfg.seed, seed))
    for s in range(steps):
        if mode == "online":
            Sz, Sbz = empirical_moments(*problem.sample(batch, gen))
        G = gd_step(G, Sz, Sbz, eta_t)
        traj[s + 1] = G
    return traj


# --------------------------------------------------------------------------- #
# risks and metrics
# --------------------------------------------------------------------------- #
def population_risk(problem: EncoderProblem, G: torch.Tensor) -> torch.Tensor:
    """R_enc(G) = K^{-1} E||G z - b||^2 from the second moments (the definition, expanded):
    K^{-1} Tr(G Sigma_z G^T - 2 G Sigma_bz^T + Sigma_bb).  Works on a batch of G (..., K, r)."""
    Sz, Sbz, Sbb = problem.Sigma_z, problem.Sigma_bz, problem.Sigma_bb
    quad = ((G @ Sz) * G).sum((-1, -2))
    cross = (G * Sbz).sum((-1, -2))
    return (quad - 2 * cross + torch.diagonal(Sbb).sum()) / problem.K


def heldout_sample(problem: EncoderProblem, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh held-out pairs (a seed stream no trainer uses)."""
    return problem.sample(n, cpu_generator(derive_seed("encoder-heldout", problem.cfg.seed, seed)))


@torch.no_grad()
def heldout_risk(problem: EncoderProblem, G: torch.Tensor, n: int, seed: int,
                 per_sample: bool = False) -> tuple[torch.Tensor, int]:
    """(held-out estimate of R_enc(G), sample count): mean of ||G z_i - b_i||^2 / K.

    G may be a batch (..., K, r): every G is evaluated on the same held-out sample.
    With per_sample=True the first value is the (..., n) tensor of ||G z_i - b_i||^2.
    """
    z, b = heldout_sample(problem, n, seed)
    res = z @ G.transpose(-1, -2) - b  # (..., n, K)
    sq = (res * res).sum(-1)
    if per_sample:
        return sq, z.shape[0]
    return sq.mean(-1) / problem.K, z.shape[0]


def subspace_sin2(G: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """||sin Theta(col G, col U)||_op^2 (largest principal angle) from orthonormal bases."""
    Qg, _ = torch.linalg.qr(G)
    Qu, _ = torch.linalg.qr(U)
    R = Qg - Qu @ (Qu.T @ Qg)
    return torch.linalg.matrix_norm(R, ord=2) ** 2


@torch.no_grad()
def encoder_metrics(problem: EncoderProblem, G: torch.Tensor, n_heldout: int,
                    heldout_seed: int) -> dict[str, float]:
    """The 001 Table 1 quantities of one checkpoint G."""
    hat, n = heldout_risk(problem, G, n_heldout, heldout_seed)
    exact = population_risk(problem, G)
    Gs = problem.G_star
    return {
        "heldout_risk": float(hat),
        "exact_risk": float(exact),
        "heldout_over_exact": float(hat / exact),
        "rel_G_error": float(torch.linalg.matrix_norm(G - Gs) / torch.linalg.matrix_norm(Gs)),
        "subspace_sin2": float(subspace_sin2(G, Gs)),
        "noise_floor": float(problem.sigma2),
        "heldout_n": float(n),
    }


# --------------------------------------------------------------------------- #
# subspace encoder, 002 sec 5.2
# --------------------------------------------------------------------------- #
def top_r(S: torch.Tensor, r: int) -> torch.Tensor:
    """Eigenvectors (K, r) of the r largest eigenvalues of the symmetric S (eigh is ascending)."""
    _, V = torch.linalg.eigh(S)
    return V[..., -r:]


@dataclass(frozen=True)
class SubspaceConfig:
    """Low-rank least-squares prompts (002 sec 1.2) and N of them for the encoder."""

    K: int = 8
    r: int = 2
    M: int = 32
    N: int = 420
    kappa_x: float = 20.0
    kappa_z: float = 4.0
    noise: float = 0.1
    ridge: float = 1e-2
    seed: int = 0

    def task_config(self) -> TaskConfig:
        return TaskConfig(K=self.K, M=self.M, kappa=self.kappa_x, noise=self.noise,
                          ridge=self.ridge, seed=self.seed)


@dataclass
class SubspaceRun:
    """Running estimates S_n (checkpoints n), their U_n = Top_r(S_n), and the population."""

    ns: list[int]
    S: torch.Tensor          # (len(ns), K, K)
    U: torch.Tensor          # (len(ns), K, r)
    Sigma_beta: torch.Tensor  # (K, K)
    U_star: torch.Tensor     # (K, r)
    mu: torch.Tensor         # eigenvalues of Sigma_z (float64, log-spaced)


@torch.no_grad()
def subspace_estimates(cfg: SubspaceConfig, checkpoints: list[int] | None = None,
                       device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                       seed: int = 0) -> SubspaceRun:
    """S_n = n^{-1} sum_{m <= n} beta_hat_m beta_hat_m^T and U_n = Top_r(S_n) at checkpoints n."""
    ns = sorted(set(checkpoints or [cfg.N]))
    if ns[0] < 1 or ns[-1] > cfg.N:
        raise ValueError(f"checkpoints must lie in 1..N={cfg.N}")
    pr = GaussianPrompts(cfg.task_config(), device, dtype, rank=cfg.r, kappa_z=cfg.kappa_z)
    bh = pr.prompts(cfg.N, derive_seed("subspace-encoder", seed)).beta_hat  # (N, K)
    outer = bh.unsqueeze(-1) * bh.unsqueeze(-2)  # (N, K, K)
    csum = torch.cumsum(outer, 0)
    idx = torch.tensor([n - 1 for n in ns], device=bh.device)
    counts = torch.tensor(ns, dtype=bh.dtype, device=bh.device)
    S = symmetrize(csum[idx] / counts[:, None, None])
    U = top_r(S, cfg.r)
    return SubspaceRun(ns, S, U, pr.Sigma_beta, pr.U_star, pr.mu64)
