"""Joint low-rank encoder + latent decoder trainer (seed 002 sec 1.2, 6.1-6.6; 001 sec 5.2-5.3).

Tasks (002 sec 1.2): z ~ N(0, Sigma_z) in R^r, beta = U_* z (U_* K x r orthonormal),
x_i ~ N(0, Sigma_x), y = X beta + noise xi; the prompt gives H_M = X^T X / M + ridge I and
c_M = X^T y / M.  An encoder basis U_s (K x r) induces the latent system (002 sec 6.1)

    A_s = U_s^T H_M U_s,   d_s = U_s^T c_M,   z_s^dagger = A_s^{-1} d_s,

solved by the latent Richardson decoder z_{l+1} = z_l + P_{z,s}(d_s - A_s z_l), z_0 = 0
(models.RichardsonDecoder with a FrozenLinear P_{z,s}, or a latent Flexformer, 001 sec 5.3).

Outer dynamics with the stop-gradient coupling of 002 sec 6.4, L = L_enc(U) + L_dec(P; sg(U)):

* encoder "oja": U_{s+1} = qr(U_s + eta_e S U_s), S = mean of beta_hat beta_hat^T over the
  training prompts, beta_hat = H_M^{-1} c_M (the prompt's ridge estimate): a gradient step
  on -Tr(U^T S U)/2 followed by a QR retraction (diag(R) > 0);
* encoder "gain": the encoder-only population dynamics of 002 sec 5.1 / 6.5,
  G_{s+1} = G_s - eta_e (G_s Sigma_z - Sigma_bz), Sigma_bz = E[beta_hat z^T], used as the
  (non-orthonormal) encoder matrix U_s = G_s;
* decoder "free": P_{z,s+1} = P_{z,s} - eta_d (P_{z,s} C_s - B_s) with the moving moments
  C_s = E[d_s d_s^T | U_s], B_s = E[z_s^dagger d_s^T | U_s] (002 sec 6.2);
* decoder "flexformer": Adam on the latent Flexformer's parameters, loss the training mean of
  ||U_s (z_L - z_s^dagger)||^2_{Sigma_x} with U_s stopped.

Moments: "sample" = means over a fixed set of training prompts; "population" = exact
expectations for the orthogonal design (X^T X / M = Sigma_x exactly, so H_M = Sigma_x +
ridge I is the same for every task and c_M = Sigma_x beta + n, n ~ N(0, noise^2 Sigma_x / M)).
With a diagonal Sigma_x, U_* = [e_1..e_r], a "gain" encoder started diagonal and a diagonal
P_0, every matrix of the run is diagonal in one basis: the commuting configuration of 002
sec 6.5.

Every checkpoint s = 0..steps logs U_s, P_{z,s}, C_s, B_s and P_z*(U_s) = B_s C_s^+.
The stop-gradient, the oracle and the update are small module-level functions so that tests
can plant mutants by monkeypatching them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .checkpoints import CheckpointError, atomic_save, tensor_digest
from .dtypes import as_device, as_dtype, dtype_name
from .eb import eb_upper
from .preconditioners import Flexformer, FrozenLinear
from .richardson import RichardsonDecoder
from .seeding import cpu_generator, derive_seed, random_rotation
from .tasks import TaskConfig, symmetrize, log_spaced_eigs

DESIGNS = ("gaussian", "orthogonal")
ENCODERS = ("oja", "gain")
DECODERS = ("free", "flexformer")
MOMENTS = ("sample", "population")


# --------------------------------------------------------------------------- #
# tasks
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class LowRankTaskConfig:
    """Low-rank in-context least-squares tasks: `task` fixes K, M, Sigma_x, noise, ridge;
    `z_var` the diagonal of Sigma_z (its length is r); `design` gaussian or orthogonal."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(K=8, M=32, kappa=20.0))
    z_var: tuple[float, ...] = (1.0, 0.5, 0.25)
    design: str = "gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(self, "z_var", tuple(float(v) for v in self.z_var))
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {self.design!r}")
        if not 1 <= self.r <= self.task.K:
            raise ValueError(f"need 1 <= r <= K, got r={self.r}, K={self.task.K}")
        if any(v < 0 for v in self.z_var):
            raise ValueError("z_var must be non-negative")

    @property
    def r(self) -> int:
        return len(self.z_var)

    @property
    def K(self) -> int:
        return self.task.K


@dataclass
class LowRankTasks:
    """n prompts: H (n,K,K), c (n,K), beta (n,K), z (n,r)."""

    H: torch.Tensor
    c: torch.Tensor
    beta: torch.Tensor
    z: torch.Tensor

    def __len__(self) -> int:
        return self.H.shape[0]

    def __getitem__(self, idx: slice) -> "LowRankTasks":
        return LowRankTasks(self.H[idx], self.c[idx], self.beta[idx], self.z[idx])


class LowRankPrompts:
    """Sampler of the low-rank tasks of 002 sec 1.2 (float64 draws on the CPU, then cast)."""

    def __init__(self, cfg: LowRankTaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.cfg = cfg
        self.device, self.dtype = as_device(device), as_dtype(dtype)
        K, r, t = cfg.K, cfg.r, cfg.task
        eigs = log_spaced_eigs(K, t.kappa)
        if cfg.design == "orthogonal":
            Q = torch.eye(K, dtype=torch.float64)  # diagonal Sigma_x: the commuting basis
            self.U_star64 = torch.eye(K, r, dtype=torch.float64)
        else:
            # the same Sigma_x as models.LeastSquaresPrompts for this TaskConfig
            Q = random_rotation(K, cpu_generator(derive_seed("design-covariance", t.seed)))
            self.U_star64 = random_rotation(K, cpu_generator(derive_seed("lowrank-basis", t.seed)))[:, :r]
        self.eigs64 = eigs
        self.sigma64 = symmetrize((Q * eigs) @ Q.T)
        self.sigma_sqrt64 = symmetrize((Q * eigs.sqrt()) @ Q.T)
        self.z_var64 = torch.tensor(cfg.z_var, dtype=torch.float64)
        eye = torch.eye(K, dtype=torch.float64)
        self.H_pop64 = self.sigma64 + t.ridge * eye

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=self.dtype)

    @property
    def Sigma_x(self) -> torch.Tensor:
        return self._cast(self.sigma64)

    @property
    def U_star(self) -> torch.Tensor:
        return self._cast(self.U_star64)

    def population(self) -> dict[str, torch.Tensor]:
        """Exact moments of the orthogonal design (fixed H): H, S_c = E[c c^T], E[beta_hat z^T],
        Sigma_z."""
        if self.cfg.design != "orthogonal":
            raise ValueError("population moments are exact only for the orthogonal design")
        t = self.cfg.task
        Sz = torch.diag(self.z_var64)
        Sx, Us = self.sigma64, self.U_star64
        S_c = symmetrize(Sx @ Us @ Sz @ Us.T @ Sx) + (t.noise**2 / t.M) * Sx
        Sigma_bz = torch.linalg.solve(self.H_pop64, Sx @ Us @ Sz)  # E[H^{-1} c z^T]
        return {k: self._cast(v) for k, v in
                {"H": self.H_pop64, "S_c": S_c, "Sigma_bz": Sigma_bz, "Sigma_z": Sz}.items()}

    def sample(self, n: int, seed: int) -> LowRankTasks:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cfg, t = self.cfg, self.cfg.task
        K, M, r = cfg.K, t.M, cfg.r
        gen = cpu_generator(derive_seed("lowrank-prompts", seed))
        z = torch.randn(n, r, generator=gen, dtype=torch.float64) * self.z_var64.sqrt()
        beta = z @ self.U_star64.T
        eye = torch.eye(K, dtype=torch.float64)
        if cfg.design == "orthogonal":
            xi = torch.randn(n, K, generator=gen, dtype=torch.float64)
            noise = (t.noise / math.sqrt(M)) * (xi @ self.sigma_sqrt64)
            c = beta @ self.sigma64 + noise
            H = self.H_pop64.expand(n, K, K).clone()
        else:
            X = torch.randn(n, M, K, generator=gen, dtype=torch.float64) @ self.sigma_sqrt64
            xi = torch.randn(n, M, generator=gen, dtype=torch.float64)
            y = (X @ beta.unsqueeze(-1)).squeeze(-1) + t.noise * xi
            Xt = X.transpose(-1, -2)
            H = symmetrize(Xt @ X) / M + t.ridge * eye
            c = (Xt @ y.unsqueeze(-1)).squeeze(-1) / M
        return LowRankTasks(*(self._cast(v) for v in (H, c, beta, z)))


# --------------------------------------------------------------------------- #
# latent system, oracle, updates (module-level so tests can plant mutants)
# --------------------------------------------------------------------------- #
def latent_system(U: torch.Tensor, H: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A_s = U^T H U (batched over H), d_s = U^T c."""
    A = U.transpose(-1, -2) @ H @ U
    d = c @ U
    return A, d


def latent_solution(A: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """z^dagger = A^{-1} d (batched)."""
    return torch.linalg.solve(A, d.unsqueeze(-1)).squeeze(-1)


def latent_oracle(B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """P_z*(U_s) = B_s C_s^+ (Moore-Penrose pseudo-inverse of the symmetric C_s)."""
    return B @ torch.linalg.pinv(C, hermitian=True)


def decoder_step(P: torch.Tensor, C: torch.Tensor, B: torch.Tensor, eta: float) -> torch.Tensor:
    """One population gradient step on L_dec(P; U_s): P - eta (P C - B) (002 sec 6.2)."""
    return P - eta * (P @ C - B)


def encoder_oja_step(U: torch.Tensor, S: torch.Tensor, eta: float,
                     coupling: torch.Tensor | None) -> torch.Tensor:
    """qr(U + eta S U [- eta coupling]) with diag(R) > 0."""
    V = U + eta * (S @ U)
    if coupling is not None:
        V = V - eta * coupling
    Q, R = torch.linalg.qr(V)
    signs = torch.sign(torch.diagonal(R))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q * signs


def encoder_gain_step(G: torch.Tensor, Sigma_z: torch.Tensor, Sigma_bz: torch.Tensor, eta: float,
                      coupling: torch.Tensor | None) -> torch.Tensor:
    """G - eta (G Sigma_z - Sigma_bz) [- eta coupling] (002 sec 5.1)."""
    G = G - eta * (G @ Sigma_z - Sigma_bz)
    if coupling is not None:
        G = G - eta * coupling
    return G


def stop_gradient(U: torch.Tensor) -> torch.Tensor:
    """sg(U) of L = L_enc(U) + L_dec(P; sg(U)) (002 sec 6.4)."""
    return U.detach()


def decoder_loss(P: torch.Tensor, U: torch.Tensor, H: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """L_dec(P; U) = (1/2r) mean ||P d - z^dagger||^2 over the prompts (002 sec 6.2)."""
    A, d = latent_system(U, H, c)
    zdag = latent_solution(A, d)
    return 0.5 * ((d @ P.T - zdag) ** 2).sum(-1).mean() / P.shape[-1]


def coupling_gradient(U: torch.Tensor, loss_of_U) -> torch.Tensor | None:
    """d/dU of L_dec(P; sg(U)) (loss_of_U(U) -> scalar): None when the stop-gradient cuts it,
    which makes the dynamics triangular (the encoder never sees the decoder)."""
    Ug = U.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        Us = stop_gradient(Ug)
        if not Us.requires_grad:
            return None
        (g,) = torch.autograd.grad(loss_of_U(Us), Ug)
    return g.detach()


def population_decoder_loss(P: torch.Tensor, U: torch.Tensor, pop: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_dec(P; U) = (1/2r) Tr(P C P^T - 2 P B^T + Z) with the population moments of U."""
    A = U.T @ pop["H"] @ U
    C = U.T @ pop["S_c"] @ U
    B = torch.linalg.solve(A, C)
    Z = torch.linalg.solve(A, B.T)
    return 0.5 * torch.trace(P @ C @ P.T - 2 * P @ B.T + Z) / P.shape[-1]


def sigma_norm_sq(v: torch.Tensor, Sigma: torch.Tensor) -> torch.Tensor:
    """||v||^2_Sigma = v^T Sigma v over the last axis."""
    return ((v @ Sigma) * v).sum(-1)


def sigma_inner(a: torch.Tensor, b: torch.Tensor, Sigma: torch.Tensor) -> torch.Tensor:
    return ((a @ Sigma) * b).sum(-1)


# --------------------------------------------------------------------------- #
# trainer
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class EncDecConfig:
    """Everything that determines a joint run (and its cache key)."""

    prompts: LowRankTaskConfig = field(default_factory=LowRankTaskConfig)
    encoder: str = "oja"
    decoder: str = "free"
    moments: str = "sample"
    n_train: int = 256
    steps: int = 150
    eta_enc: float = 0.0625
    eta_dec: float = 1.0
    lr: float = 2e-2  # Adam, flexformer decoder only
    L: int = 6
    p0: tuple[float, ...] = ()  # diagonal P_0; empty: 0.5 I + seeded perturbation
    p0_noise: float = 0.1
    g0: tuple[float, ...] = ()  # diagonal gains of the "gain" encoder's G_0 = U_* diag(g0)
    flex_m: int = 8
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        object.__setattr__(self, "p0", tuple(float(v) for v in self.p0))
        object.__setattr__(self, "g0", tuple(float(v) for v in self.g0))
        for name, val, allowed in (("encoder", self.encoder, ENCODERS), ("decoder", self.decoder, DECODERS),
                                   ("moments", self.moments, MOMENTS)):
            if val not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {val!r}")
        if self.moments == "population" and self.prompts.design != "orthogonal":
            raise ValueError("population moments need the orthogonal design")
        if (self.encoder == "gain") != (self.moments == "population"):
            raise ValueError("the gain encoder runs on population moments, the oja encoder on sampled ones")
        if self.steps < 1 or self.L < 0 or self.n_train < 2:
            raise ValueError("need steps >= 1, L >= 0, n_train >= 2")
        if self.p0 and len(self.p0) != self.prompts.r:
            raise ValueError("p0 needs r entries")
        if self.g0 and len(self.g0) != self.prompts.r:
            raise ValueError("g0 needs r entries")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        from .train import source_hash

        text = json.dumps(self.to_dict(), sort_keys=True) + source_hash()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EncDecRun:
    """The logged trajectory s = 0..steps of a joint run, plus what evaluates it.

    U (S+1,K,r), P (S+1,r,r), C, B, Pstar (S+1,r,r): C_s, B_s and P_z*(U_s) = B_s C_s^+ at
    every checkpoint.  For the flexformer decoder, `flex_states` holds the parameters at
    every checkpoint (P is then the module's matrix).  `pop` holds the exact population
    moments of the orthogonal design (empty otherwise).
    """

    config: EncDecConfig
    U: torch.Tensor
    P: torch.Tensor
    C: torch.Tensor
    B: torch.Tensor
    Pstar: torch.Tensor
    Sigma_x: torch.Tensor
    U_star: torch.Tensor
    A_pop: torch.Tensor | None = None  # population latent A_s (orthogonal design)
    pop: dict[str, torch.Tensor] = field(default_factory=dict)
    flex_states: dict[str, torch.Tensor] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.U.shape[0] - 1

    @property
    def eta_dec(self) -> float:
        return self.config.eta_dec

    def latent_decoder(self, s: int, L: int | None = None) -> RichardsonDecoder:
        """The latent decoder at checkpoint s: the trained module (Flexformer with theta_s,
        or the free P_{z,s} as a FrozenLinear), depth L (default: the trained depth)."""
        L = self.config.L if L is None else L
        if self.config.decoder == "flexformer":
            flex = build_latent_flexformer(self.config)
            flex.load_state_dict({k: v[s] for k, v in self.flex_states.items()})
            flex.requires_grad_(False)
            return RichardsonDecoder(flex, L)
        return RichardsonDecoder(FrozenLinear(self.P[s]), L)


def build_latent_flexformer(cfg: EncDecConfig) -> Flexformer:
    return Flexformer(cfg.prompts.r, device=cfg.device, dtype=as_dtype(cfg.dtype),
                      seed=derive_seed("latent-flexformer", cfg.seed), m=cfg.flex_m)


def _initial_P(cfg: EncDecConfig) -> torch.Tensor:
    r = cfg.prompts.r
    if cfg.p0:
        return torch.diag(torch.tensor(cfg.p0, dtype=torch.float64))
    gen = cpu_generator(derive_seed("latent-P0", cfg.seed))
    return 0.5 * torch.eye(r, dtype=torch.float64) + cfg.p0_noise * torch.randn(r, r, generator=gen,
                                                                                dtype=torch.float64)


def _initial_U(cfg: EncDecConfig, prompts: LowRankPrompts) -> torch.Tensor:
    K, r = cfg.prompts.K, cfg.prompts.r
    if cfg.encoder == "gain":
        g0 = torch.tensor(cfg.g0 or (1.0,) * r, dtype=torch.float64)
        return prompts.U_star64 * g0
    return random_rotation(K, cpu_generator(derive_seed("encoder-U0", cfg.seed)))[:, :r]


TRAIN_SEED_LABEL = "encdec-train"


def train_encdec(cfg: EncDecConfig) -> EncDecRun:
    """Run the joint stop-gradient dynamics for cfg.steps outer steps, logging every checkpoint."""
    dev, dt = as_device(cfg.device), as_dtype(cfg.dtype)
    prompts = LowRankPrompts(cfg.prompts, dev, dt)
    cast = prompts._cast
    U = cast(_initial_U(cfg, prompts))
    Sigma_x = prompts.Sigma_x
    pop: dict[str, torch.Tensor] = {}
    if cfg.moments == "population":
        pop = prompts.population()
        train = None
    else:
        train = prompts.sample(cfg.n_train, derive_seed(TRAIN_SEED_LABEL, cfg.seed))
        beta_hat = latent_solution(train.H, train.c)  # the prompts' ridge estimates H^{-1} c
        S = symmetrize(beta_hat.T @ beta_hat) / len(train)

    flex = None
    opt = None
    if cfg.decoder == "flexformer":
        flex = build_latent_flexformer(cfg)
        opt = torch.optim.Adam(flex.parameters(), lr=cfg.lr)
        P = flex.matrix().detach()
    else:
        P = cast(_initial_P(cfg))

    def moments(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if cfg.moments == "population":
            A = U.T @ pop["H"] @ U
            C = symmetrize(U.T @ pop["S_c"] @ U)
            B = torch.linalg.solve(A, C)  # E[z^dagger d^T] = A^{-1} C for the fixed H
            return C, B, A
        A, d = latent_system(U, train.H, train.c)
        zdag = latent_solution(A, d)
        C = symmetrize(d.T @ d) / len(train)
        B = zdag.T @ d / len(train)
        return C, B, None

    Us, Ps, Cs, Bs, Pstars, Apops, losses = [], [], [], [], [], [], []
    states: dict[str, list[torch.Tensor]] = {}

    def log(U, P, C, B, A):
        Us.append(U.clone()), Ps.append(P.clone()), Cs.append(C), Bs.append(B)
        Pstars.append(latent_oracle(B, C))
        if A is not None:
            Apops.append(A)
        if flex is not None:
            for k, v in flex.state_dict().items():
                states.setdefault(k, []).append(v.detach().clone())

    C, B, A = moments(U)
    log(U, P, C, B, A)
    for step in range(cfg.steps):
        # --- encoder: its own loss, plus the decoder's only if the stop-gradient is absent
        Pd = P.detach()
        if cfg.encoder == "gain":
            coupling = coupling_gradient(U, lambda Uv: population_decoder_loss(Pd, Uv, pop))
            U_next = encoder_gain_step(U, pop["Sigma_z"], pop["Sigma_bz"], cfg.eta_enc, coupling)
        else:
            coupling = coupling_gradient(U, lambda Uv: decoder_loss(Pd, Uv, train.H, train.c))
            U_next = encoder_oja_step(U, S, cfg.eta_enc, coupling)
        # --- decoder: tracks the oracle of the current (stopped) encoder
        if flex is None:
            P_next = decoder_step(P, C, B, cfg.eta_dec)
        else:
            Ud = stop_gradient(U)
            with torch.enable_grad():
                A_t, d_t = latent_system(Ud, train.H, train.c)
                zdag_t = latent_solution(A_t, d_t).detach()
                zL = RichardsonDecoder(flex, cfg.L)(A_t, d_t)
                loss = sigma_norm_sq((zL - zdag_t) @ Ud.T, Sigma_x).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise RuntimeError(f"flexformer enc+dec training diverged at step {step}")
            P_next = flex.matrix().detach()
        U, P = U_next.detach(), P_next.detach()
        C, B, A = moments(U)
        log(U, P, C, B, A)

    return EncDecRun(
        config=cfg, U=torch.stack(Us), P=torch.stack(Ps), C=torch.stack(Cs), B=torch.stack(Bs),
        Pstar=torch.stack(Pstars), Sigma_x=Sigma_x, U_star=prompts.U_star,
        A_pop=torch.stack(Apops) if Apops else None, pop=pop,
        flex_states={k: torch.stack(v) for k, v in states.items()}, train_loss=losses,
    )


# --------------------------------------------------------------------------- #
# evaluation at a checkpoint
# --------------------------------------------------------------------------- #
@torch.no_grad()
def heldout_terms(run: EncDecRun, s: int, tasks: LowRankTasks, L: int | None = None) -> dict[str, torch.Tensor]:
    """Per-task quantities of checkpoint s on held-out tasks (002 sec 6.3; 001 sec 5.1).

    zL, zdag (n,r): the latent decoder's z_L from z_0 = 0 and z^dagger = A_s^{-1} d_s;
    e = U z_L - beta, f = U z^dagger - beta (encoder part), g = U (z_L - z^dagger)
    (decoder part), all (n,K); per-task losses e2e = ||e||^2_Sx, floor = ||f||^2_Sx,
    dec = ||g||^2_Sx, cross = 2 <f, g>_Sx, and the Euclidean e2 = ||e||^2, f2, g2.
    """
    U = run.U[s]
    Sx = run.Sigma_x
    A, d = latent_system(U, tasks.H, tasks.c)
    zL = run.latent_decoder(s, L)(A, d)
    zdag = latent_solution(A, d)
    Ut = U.transpose(0, 1)
    e = zL @ Ut - tasks.beta
    f = zdag @ Ut - tasks.beta
    g = (zL - zdag) @ Ut
    return {
        "A": A, "d": d, "zL": zL, "zdag": zdag, "e": e, "f": f, "g": g,
        "e2e": sigma_norm_sq(e, Sx), "floor": sigma_norm_sq(f, Sx), "dec": sigma_norm_sq(g, Sx),
        "cross": 2 * sigma_inner(f, g, Sx),
        "e2": (e * e).sum(-1), "f2": (f * f).sum(-1), "g2": (g * g).sum(-1),
    }


def risk_decomposition(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sample means R_e2e, R_floor, R_dec and the cross term 2 E<f, g>_Sx (002 sec 6.3)."""
    return {k: float(terms[k].mean()) for k in ("e2e", "floor", "dec", "cross")}


def sin2_theta(U: torch.Tensor, U_star: torch.Tensor) -> float:
    """sin^2 of the largest principal angle between span U and span U_* (orthonormalized)."""
    Q, _ = torch.linalg.qr(U)
    sv = torch.linalg.svdvals(U_star.transpose(0, 1) @ Q)
    return float(1 - sv.min() ** 2)


@torch.no_grad()
def checkpoint_metrics(run: EncDecRun, s: int, tasks: LowRankTasks, c: float, delta: float) -> dict[str, float]:
    """001 Tables 3/4 and 002 sec 11 quantities at checkpoint s, in floating point.

    Descriptive numbers for the report and golden files; the rigorous versions of the bounds
    live in the certificates.
    """
    t = risk_decomposition(terms := heldout_terms(run, s, tasks))
    A, zL, zdag = terms["A"], terms["zL"], terms["zdag"]
    P = run.P[s]
    r, L = A.shape[-1], run.config.L
    M = torch.eye(r, dtype=A.dtype, device=A.device) - P @ A
    rho = torch.linalg.matrix_norm(M, ord=2)
    # the identity risk: z_L - z^dagger = -(I - P A)^L z^dagger, lifted by U
    gap_id = -(torch.linalg.matrix_power(M, L) @ zdag.unsqueeze(-1)).squeeze(-1)
    id_losses = sigma_norm_sq((zdag + gap_id) @ run.U[s].T - tasks.beta, run.Sigma_x)
    err = torch.linalg.vector_norm(zL - zdag, dim=-1)
    bound = rho**L * torch.linalg.vector_norm(zdag, dim=-1)
    sx_norm = float(torch.linalg.matrix_norm(run.Sigma_x, ord=2))
    out = {
        "heldout_risk": t["e2e"], "floor_risk": t["floor"], "decoder_risk": t["dec"], "cross_term": t["cross"],
        "identity_risk": float(id_losses.mean()),
        "identity_gap": abs(float(id_losses.mean()) - t["e2e"]),
        "decoder_certified": sx_norm * float((rho ** (2 * L) * (zdag**2).sum(-1)).mean()),
        "violation_rate": float((err > bound).to(A.dtype).mean()),
        "error_bound_ratio": float((err / bound).mean()),
        "mean_contraction": float(rho.mean()),
        "sin2_true": sin2_theta(run.U[s], run.U_star),
        "eb_upper": eb_upper(terms["e2e"].double().cpu().numpy(), c, delta),
    }
    if run.config.decoder == "free":
        out["tracking_rel"] = float(torch.linalg.matrix_norm(P - run.Pstar[s]) / torch.linalg.matrix_norm(run.Pstar[s]))
    return out


@torch.no_grad()
def population_decoder_risk(run: EncDecRun, s: int, L: int) -> torch.Tensor:
    """R_dec(s, L) = E||U_s (z_L - z^dagger)||^2_Sx for the fixed-H (orthogonal) design:
    Tr(U^T Sx U M^L Z M^{L T}), M = I - P A_s, Z = E[z^dagger z^dagger^T] = A^{-1} C A^{-1}."""
    if run.A_pop is None:
        raise ValueError("population_decoder_risk needs a population (orthogonal-design) run")
    U, P, A, C = run.U[s], run.P[s], run.A_pop[s], run.C[s]
    r = P.shape[-1]
    M = torch.eye(r, dtype=P.dtype, device=P.device) - P @ A
    ML = torch.linalg.matrix_power(M, L)
    Ainv = torch.linalg.inv(A)
    Z = Ainv @ C @ Ainv.T
    W = U.T @ run.Sigma_x @ U
    return torch.trace(W @ ML @ Z @ ML.T)


# --------------------------------------------------------------------------- #
# persistence (safetensors; a corrupt or mismatched file is an error naming it)
# --------------------------------------------------------------------------- #
RUN_FORMAT = "models.encdec-run/1"


def _run_tensors(run: EncDecRun) -> dict[str, torch.Tensor]:
    t = {"U": run.U, "P": run.P, "C": run.C, "B": run.B, "Pstar": run.Pstar, "Sigma_x": run.Sigma_x,
         "U_star": run.U_star}
    if run.A_pop is not None:
        t["A_pop"] = run.A_pop
    t.update({f"pop.{k}": v for k, v in run.pop.items()})
    t.update({f"flex.{k}": v for k, v in run.flex_states.items()})
    return {k: v.detach().cpu().contiguous() for k, v in t.items()}


def save_run(path: str | Path, run: EncDecRun) -> None:
    path = Path(path)
    tensors = _run_tensors(run)
    meta = {"format": RUN_FORMAT, "config": json.dumps(run.config.to_dict(), sort_keys=True),
            "train_loss": json.dumps(run.train_loss), "sha256": tensor_digest(tensors)}
    atomic_save(path, tensors, meta)


def load_run(path: str | Path, expect: EncDecConfig) -> EncDecRun:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"encdec run {path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"encdec run {path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != RUN_FORMAT:
        raise CheckpointError(f"encdec run {path}: format {meta.get('format')!r}, expected {RUN_FORMAT!r}")
    if meta.get("sha256") != tensor_digest(tensors):
        raise CheckpointError(f"encdec run {path}: tensor data does not match its SHA-256 (corrupt file)")
    if meta.get("config") != json.dumps(expect.to_dict(), sort_keys=True):
        raise CheckpointError(f"encdec run {path}: stored config does not match the requested one")
    missing = {"U", "P", "C", "B", "Pstar", "Sigma_x", "U_star"} - set(tensors)
    if missing:
        raise CheckpointError(f"encdec run {path}: missing tensors {sorted(missing)}")
    dev, dt = as_device(expect.device), as_dtype(expect.dtype)
    tt = {k: v.to(device=dev, dtype=dt) for k, v in tensors.items()}
    return EncDecRun(
        config=expect, U=tt["U"], P=tt["P"], C=tt["C"], B=tt["B"], Pstar=tt["Pstar"],
        Sigma_x=tt["Sigma_x"], U_star=tt["U_star"], A_pop=tt.get("A_pop"),
        pop={k[4:]: v for k, v in tt.items() if k.startswith("pop.")},
        flex_states={k[5:]: v for k, v in tt.items() if k.startswith("flex.")},
        train_loss=json.loads(meta.get("train_loss", "[]")),
    )
