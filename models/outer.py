"""Outer (pretraining) dynamics of the decoder-only linear-attention model (seed 002 sec 3.1-3.2,
11, 12.2, 12.5; seed 001 sec 3-4).

The decoder reads a task's right-hand side d in R^K and predicts z_hat = P d; the attention
weights reduce to the matrix P that outer training (time s) learns.  Three trainers:

(a) `train_population`: gradient descent on the population loss
    L(P) = (2K)^{-1} E||P d - z*||^2 with exact moments C = E[d d^T], B = E[z* d^T],
    P_{s+1} = P_s - eta K grad L(P_s) = P_s - eta (P_s C - B), logging P_s and the population
    risk R(P) = 2 L(P) at checkpoints;
(b) `train_online`: SGD on sampled task batches (one fresh batch per step and replicate,
    gradient by autograd), logging P_s and the observed risk on a held-out evaluation set;
(c) `fit_finite`: the finite-task least-squares fit P_N = Z D^T (D D^T)^+ on N tasks.
The oracle P* = B C^+ uses the pseudo-inverse, so a rank-deficient C is supported.

Task distributions with closed-form moments (`LinearTasks`): d = G g with g in R^r i.i.d.
standard Gaussian or Rademacher entries and G (K x r), so C = G G^T has rank r (r < K: C
singular), and z* = W d + sigma xi, xi ~ N(0, I_K), so B = W C and E[z* z*^T] = W C W^T +
sigma^2 I.  Kind "integer" draws small-integer G and dyadic W: then C, B and E[z* z*^T]
are exact in float32 and float64 (C exactly singular when r < K).  `PromptTasks` is the
in-context least-squares prompt distribution of seed 002 sec 1.2 (d = c_M, z* = x* =
H_M^{-1} c_M), whose moments are estimated once at a high sample size and then treated
as the population.

Randomness: every draw is made in float64 on the CPU from an explicit seed
(`models.seeding`) and then cast/moved, so all backends see the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .dtypes import as_device, as_dtype
from .seeding import cpu_generator, derive_seed, random_rotation
from .tasks import LeastSquaresPrompts, TaskConfig

BASES = ("gaussian", "rademacher")
KINDS = ("generic", "integer")

# Relative cutoff of the pseudo-inverse P* = B C^+: singular values below
# PINV_RTOL_FACTOR * K * eps * sigma_max count as zero.  An exactly singular C computes
# eigenvalues of size O(K eps ||C||) in its null space (backward stability of eigh/svd);
# the factor leaves room for that while any kept eigenvalue of the configurations used
# here is above 1e-4 sigma_max.
PINV_RTOL_FACTOR = 16.0


# --------------------------------------------------------------------------- #
# task distributions and their population moments
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Moments:
    """Population moments C = E[d d^T], B = E[z* d^T], S = E[z* z*^T] (all K x K)."""

    C: torch.Tensor
    B: torch.Tensor
    S: torch.Tensor

    @property
    def K(self) -> int:
        return self.C.shape[-1]

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "Moments":
        return Moments(*(t.to(device=device, dtype=dtype) for t in (self.C, self.B, self.S)))


@dataclass(frozen=True)
class LinearTaskConfig:
    """d = G g (g in R^rank), z* = W d + noise * xi.

    kind "generic": G = Q[:, :rank] diag(sqrt(lambda)), Q a seeded Haar rotation, lambda
    log-spaced from 1 down to 1/kappa; W Gaussian with entries N(0, 1/K).
    kind "integer": G with entries in {-2..2} (rank exactly `rank`), W with entries in
    {-8..8}/8, so C = G G^T, B = W C, W C W^T are small dyadic numbers, exact in float32.
    """

    K: int
    rank: int
    kind: str = "generic"
    kappa: float = 10.0
    noise: float = 0.5
    base: str = "gaussian"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= self.K:
            raise ValueError(f"need 1 <= rank <= K, got rank={self.rank}, K={self.K}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        if not self.kappa >= 1.0 or self.noise < 0:
            raise ValueError("kappa must be >= 1 and noise >= 0")


# Integer factors are redrawn until sigma_max/sigma_min(G) <= this, so kappa(C) <= 900 on
# the range of C: the pseudo-inverse then stays well determined in float32 too.
INTEGER_MAX_COND = 30.0


def _integer_factor(K: int, r: int, seed: int) -> torch.Tensor:
    """A K x r matrix with entries in {-2..2} of rank exactly r (seeded retries)."""
    for attempt in range(10_000):
        gen = cpu_generator(derive_seed("outer-integer-G", K, r, seed, attempt))
        G = torch.randint(-2, 3, (K, r), generator=gen).to(torch.float64)
        s = torch.linalg.svdvals(G)
        # small integers: singular values are either 0 or far above rounding, so the rank
        # decision and the condition number are exact enough in float64
        if s[-1] > 1e-8 * s[0] and s[0] / s[-1] <= INTEGER_MAX_COND:
            return G
    raise RuntimeError(f"no well-conditioned rank-{r} integer factor found for K={K}")


class LinearTasks:
    """The linear task distribution of a `LinearTaskConfig` (closed-form moments)."""

    def __init__(self, cfg: LinearTaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float64) -> None:
        self.cfg = cfg
        self.device = as_device(device)
        self.dtype = as_dtype(dtype)
        K, r = cfg.K, cfg.rank
        gen = cpu_generator(derive_seed("outer-linear-tasks", cfg.K, cfg.rank, cfg.kind, cfg.seed))
        if cfg.kind == "generic":
            Q = random_rotation(K, gen)
            lam = torch.logspace(0.0, -math.log10(cfg.kappa), r, dtype=torch.float64) if r > 1 \
                else torch.ones(1, dtype=torch.float64)
            self.G64 = Q[:, :r] * lam.sqrt()
            self.W64 = torch.randn(K, K, generator=gen, dtype=torch.float64) / math.sqrt(K)
        else:
            self.G64 = _integer_factor(K, r, cfg.seed)
            self.W64 = torch.randint(-8, 9, (K, K), generator=gen).to(torch.float64) / 8
        C = self.G64 @ self.G64.T
        C = (C + C.T) / 2  # exactly symmetric (and unchanged when already exact)
        eye = torch.eye(K, dtype=torch.float64)
        B = self.W64 @ C
        S = B @ self.W64.T
        S = (S + S.T) / 2 + cfg.noise**2 * eye
        self._moments64 = Moments(C, B, S)

    @property
    def K(self) -> int:
        return self.cfg.K

    def moments(self) -> Moments:
        """The exact population moments, cast to the sampler's device/dtype."""
        return self._moments64.to(self.device, self.dtype)

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n i.i.d. tasks as rows: d (n, K), z* (n, K)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        gen = cpu_generator(derive_seed("outer-linear-sample", seed))
        r = self.cfg.rank
        if self.cfg.base == "gaussian":
            g = torch.randn(n, r, generator=gen, dtype=torch.float64)
        else:
            g = torch.randint(0, 2, (n, r), generator=gen).to(torch.float64) * 2 - 1
        xi = torch.randn(n, self.K, generator=gen, dtype=torch.float64)
        d = g @ self.G64.T
        z = d @ self.W64.T + self.cfg.noise * xi
        return d.to(self.device, self.dtype), z.to(self.device, self.dtype)


class PromptTasks:
    """In-context least-squares prompts (seed 002 sec 1.2) as decoder tasks: d = c_M, z* = x*.

    The moments of this distribution have no closed form; `estimated_moments(n, seed)`
    estimates them once from n prompts, and the certificates treat that estimate as the
    population (stated wherever it is used).
    """

    def __init__(self, cfg: TaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float64) -> None:
        self.cfg = cfg
        self.device = as_device(device)
        self.dtype = as_dtype(dtype)
        self._prompts = LeastSquaresPrompts(cfg, "cpu", torch.float64)

    @property
    def K(self) -> int:
        return self.cfg.K

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        tasks = self._prompts.sample(n, derive_seed("outer-prompts", seed))
        return tasks.d.to(self.device, self.dtype), tasks.xstar.to(self.device, self.dtype)

    def estimated_moments(self, n: int, seed: int) -> Moments:
        """Moments estimated from n prompts in float64 (then cast)."""
        tasks = self._prompts.sample(n, derive_seed("outer-prompts-moments", seed))
        d, z = tasks.d, tasks.xstar
        C = d.T @ d / n
        C = (C + C.T) / 2
        B = z.T @ d / n
        S = z.T @ z / n
        S = (S + S.T) / 2
        return Moments(C, B, S).to(self.device, self.dtype)


# --------------------------------------------------------------------------- #
# the decoder, its population loss, gradient and oracle
# --------------------------------------------------------------------------- #
def population_risk(P: torch.Tensor, mom: Moments) -> torch.Tensor:
    """R(P) = K^{-1} E||P d - z*||^2 = K^{-1} (Tr(P C P^T) - 2 Tr(P B^T) + Tr S).

    P may carry leading batch dimensions (..., K, K); returns (...).
    """
    K = mom.K
    quad = ((P @ mom.C) * P).sum(dim=(-2, -1))
    lin = (P * mom.B).sum(dim=(-2, -1))
    return (quad - 2 * lin + torch.diagonal(mom.S).sum()) / K


def population_loss(P: torch.Tensor, mom: Moments) -> torch.Tensor:
    """L_dec(P) = (2K)^{-1} E||P d - z*||^2 = R(P) / 2 (seed 002 sec 3.1)."""
    return population_risk(P, mom) / 2


def population_gradient(P: torch.Tensor, mom: Moments) -> torch.Tensor:
    """grad L_dec(P) = K^{-1} (P C - B) (seed 002 sec 3.1), in closed form."""
    return (P @ mom.C - mom.B) / mom.K


def oracle(mom: Moments) -> torch.Tensor:
    """P* = B C^+ (pseudo-inverse: a singular C is supported), computed in the working dtype."""
    K = mom.K
    eps = torch.finfo(mom.C.dtype).eps
    Cp = torch.linalg.pinv(mom.C, hermitian=True, rtol=PINV_RTOL_FACTOR * K * eps)
    return mom.B @ Cp


def step_size(mom: Moments, c: float) -> float:
    """eta = c / lambda_max(C) (0 < c < 2 is the stable range), a float64 number."""
    lam = float(torch.linalg.eigvalsh(mom.C.to("cpu", torch.float64))[-1])
    return float(c) / lam


def initial_P(K: int, seed: int, scale: float = 1.0, device: str | torch.device = "cpu",
              dtype: torch.dtype | str = torch.float64) -> torch.Tensor:
    """A seeded Gaussian initialization P_0 with entries N(0, scale^2 / K)."""
    gen = cpu_generator(derive_seed("outer-P0", K, seed))
    P0 = torch.randn(K, K, generator=gen, dtype=torch.float64) * (scale / math.sqrt(K))
    return P0.to(as_device(device), as_dtype(dtype))


def _checkpoint_set(steps: int, checkpoints: Sequence[int] | None) -> list[int]:
    if checkpoints is None:
        return list(range(steps + 1))
    cps = sorted({int(s) for s in checkpoints if 0 <= int(s) <= steps} | {0, steps})
    return cps


@dataclass
class PopulationRun:
    """Checkpoints of a population-moment run: steps s, P_s, the logged risk R(P_s)."""

    steps: list[int]
    P: list[torch.Tensor]
    risk: list[float]
    eta: float
    P_star: torch.Tensor
    risk_star: float


@torch.no_grad()
def train_population(mom: Moments, eta: float, steps: int, P0: torch.Tensor,
                     checkpoints: Sequence[int] | None = None) -> PopulationRun:
    """(a) P_{s+1} = P_s - lr grad L(P_s), lr = eta K, i.e. P_s - eta (P_s C - B)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    K = mom.K
    lr = float(eta) * K
    cps = set(_checkpoint_set(steps, checkpoints))
    P = P0.to(device=mom.C.device, dtype=mom.C.dtype).clone()
    out_s, out_P, out_r = [], [], []
    for s in range(steps + 1):
        if s in cps:
            out_s.append(s)
            out_P.append(P.clone())
            out_r.append(float(population_risk(P, mom)))
        if s == steps:
            break
        P = P - lr * population_gradient(P, mom)
    Ps = oracle(mom)
    return PopulationRun(out_s, out_P, out_r, float(eta), Ps, float(population_risk(Ps, mom)))


# --------------------------------------------------------------------------- #
# (b) online SGD on sampled task batches
# --------------------------------------------------------------------------- #
@dataclass
class OnlineRun:
    """Checkpoints of online runs: P_s of every replicate (R, K, K) and its observed risk
    on the shared evaluation set (R,)."""

    steps: list[int]
    P: list[torch.Tensor]
    observed_risk: list[torch.Tensor]
    eta: float
    batch: int
    replicates: int


def batch_loss(P: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sampled decoder loss (2 K b)^{-1} sum_n ||P d_n - z_n||^2 per replicate, summed over
    replicates: P (R, K, K), d and z (R, b, K)."""
    K, b = P.shape[-1], d.shape[-2]
    resid = d @ P.transpose(-1, -2) - z
    return (resid * resid).sum() / (2 * K * b)


def observed_risk(P: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """K^{-1} mean_n ||P d_n - z_n||^2 on an evaluation set d, z (n, K), per replicate P (R, K, K)."""
    K = P.shape[-1]
    resid = torch.einsum("rij,nj->rni", P, d) - z
    return (resid * resid).sum(dim=-1).mean(dim=-1) / K


def train_online(tasks, eta: float, steps: int, batch: int, P0: torch.Tensor, seed: int,
                 replicates: int = 1, eval_set: tuple[torch.Tensor, torch.Tensor] | None = None,
                 checkpoints: Sequence[int] | None = None) -> OnlineRun:
    """(b) SGD with lr = eta K on the sampled loss; each step and replicate draws a fresh
    independent batch of `batch` tasks (so the stochastic gradient K^{-1}(P C_hat - B_hat)
    is unbiased for the population gradient).  `tasks.sample(n, seed)` gives rows (d, z*).
    """
    if steps < 0 or batch < 1 or replicates < 1:
        raise ValueError("need steps >= 0, batch >= 1, replicates >= 1")
    K = tasks.K
    dev, dt = tasks.device, tasks.dtype
    lr = float(eta) * K
    cps = set(_checkpoint_set(steps, checkpoints))
    P = torch.nn.Parameter(P0.to(dev, dt).expand(replicates, K, K).clone())
    opt = torch.optim.SGD([P], lr=lr)
    out_s, out_P, out_r = [], [], []
    for s in range(steps + 1):
        if s in cps:
            with torch.no_grad():
                out_s.append(s)
                out_P.append(P.detach().clone())
                if eval_set is not None:
                    out_r.append(observed_risk(P.detach(), *eval_set))
        if s == steps:
            break
        d, z = tasks.sample(replicates * batch, derive_seed("online-batch", seed, s))
        opt.zero_grad()
        batch_loss(P, d.view(replicates, batch, K), z.view(replicates, batch, K)).backward()
        opt.step()
    return OnlineRun(out_s, out_P, out_r, float(eta), batch, replicates)


# --------------------------------------------------------------------------- #
# (c) finite-task least squares
# --------------------------------------------------------------------------- #
def fit_finite(D: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """P_N = Z D^T (D D^T)^+ for D, Z (..., K, N) (tasks as columns), computed as Z D^+.

    Z D^T (D D^T)^+ = Z D^+ (an identity of the pseudo-inverse); the SVD of D avoids
    squaring its condition number.  Default cutoff eps * max(K, N) * sigma_max (LAPACK's).
    """
    return Z @ torch.linalg.pinv(D)


def finite_moments(D: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C_N = D D^T / N, B_N = Z D^T / N."""
    N = D.shape[-1]
    Dt = D.transpose(-1, -2)
    return D @ Dt / N, Z @ Dt / N
