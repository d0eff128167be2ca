"""The EP-trained equilibrium character language model and its exact-gradient (BPTT) twin.

Claim ep.training (seed 003, 2026-06-09 "H2 training era"): "an EP-trained equilibrium block on a
small character language model tracks its exact-gradient (BPTT) twin; report both validation
cross-entropies and cos(g_EP, g_BPTT) along training".

Model (`CharLMBlock`, a models.ep.blocks.ThickBlock): tokens s_1..s_T, injection
x_t = E[s_t] + P[t] (token + position embeddings), one causal thick equilibrium block

    F(z; x) = (x - z) - c z + attn(LN z) + ffn(LN z),

per-position logits l_t = z_t W_out + b_out and the cost C(z, y) = (1/T) sum_t CE(l_t, y_t) per
sample, with dC/dz_t = (softmax(l_t) - onehot(y_t)) W_out^T / T (analytic; holomorphic ops only).
The block's `x` argument is the (B, T) token-id tensor: the injection is computed inside the
force, so dF/dtheta covers the embeddings.  That is how EP delivers dL/dx: with F(z*; x) = 0,
dL/dx = -(dF/dx)^T J^-T dC/dz = -J^-T dC/dz (dF/dx = I here), and the symmetric AEP nudge gives
J^-T dC/dz = (z_+b - z_-b)/(2b) + O(b^2); the vector-field readout -(dF/dtheta)^T (z_+b - z_-b)/(2b)
over the embedding parameters is exactly that dL/dx pulled back through x = E[s] + P.

Training (`train`): the two twins share the architecture, the init (model seed), the batches (one
seeded batch per step), Adam (with an optional linear warm-up) and the residual controller; only
the task gradient differs:

* rule "ep": free phase = T1 Euler steps z <- z + eps F(z) from z = 0 (models.ep.estimators.
  free_phase), then the symmetric AEP estimate (nudged force estimators.nudged_force with the
  frozen matrix-free correction 2 A_0 (z - z_0), vector-field readout; = holomorphic N = 2) or the
  holomorphic estimate with N points, treating z_T1 as the equilibrium.  The nudged phases run
  stacked in one batch (`stacked_estimate`, equal to estimators.symmetric / holomorphic to
  rounding: tests/test_models_charlm.py);
* rule "bptt": the exact gradient of sum_b C(z_T1) through the same T1-step unroll (autograd).

Residual controller (seed 003 2026-06-09: "a residual-driven continuous controller on a soft
Jacobian penalty (Hutchinson)", with R5's EMA-smoothed residual signal).  The penalty is either

* "jacreg" (default): P = mean_b ||J_nc,b^T v_b||^2 / (T d), v ~ N(0, I) seeded per step, at the
  detached state z_T1, J_nc = dF/dz + (1 + c) I the Jacobian of the attention + FFN branches (the
  non-conservative part of the force); E P = ||J_nc||_F^2 / (T d) (Hutchinson); or
* "resreg" (2026-06-20): R = mean_b ||eps F(z_T1,b)||^2 / (||z_T1,b||^2 + 1), z_T1 detached;

its gradient enters with the task-relative scale lam ||g_task|| / ||g_pen|| (`penalty_term`), and
lam follows the free-phase residual res = max_b ||F(z_T1,b)|| / max(||z_T1,b||, 1)
(models.ep.solvers.residual) through a PI controller on the EMA of log res with a target
(`ResidualController`).  The same controller and penalty run in both twins.

Logs per step: train CE at z_T1, the residual, lam, the penalty; every `log_every` steps:
validation CE at z_T1 (fixed windows), and in the EP twin cos(g_EP, g_BPTT) of the task gradients
on the step's batch (before the update), their norm ratio and per-group cosines
(estimators.group_slices).  The history also holds a digest of the initial parameters and of
every batch, so the twin property (same init, same batches) can be checked afterwards.

Checkpoints: safetensors (models.checkpoints.atomic_save, tensor_digest) with the config and the
history in the metadata, keyed by the config and a hash of the models/ep sources (plus
models/seeding.py); a file lock (models.train's) makes concurrent askers train once; a corrupt
or mismatched file raises models.checkpoints.CheckpointError naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import seeding
from ..checkpoints import CheckpointError, atomic_save, tensor_digest
from ..dtypes import as_device, as_dtype, dtype_name
from ..seeding import derive_seed
from . import estimators, solvers
from .blocks import ThickBlock, like, logsumexp, softmax
from .charlm_data import ALPHABET, Corpus, CorpusConfig

FORMAT = "models.ep.charlm/1"
RULES = ("ep", "bptt")
ESTIMATORS = ("symmetric", "holomorphic")
REGULARIZERS = ("resreg", "jacreg", "none")
_EP_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- #
# the equilibrium char-LM block
# --------------------------------------------------------------------------- #
class CharLMBlock(ThickBlock):
    """ThickBlock (causal) with token/position embeddings as the injection and a per-position
    softmax readout.  force(z, x): x is the (B, T) int64 token ids (or an explicit (B, T, d)
    injection); cost(z, y) is the mean cross-entropy over positions per sample."""

    name = "charlm"

    def __init__(self, vocab: int, T: int, d: int, *, heads: int = 2, mlp: int = 4, c: float = 1.0,
                 qk_norm: bool = True, resinit: float = 0.1, emb_scale: float = 1.0, pos_scale: float = 0.1,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        if vocab < 2:
            raise ValueError(f"vocab must be >= 2, got {vocab}")
        super().__init__(T, d, vocab, heads=heads, mlp=mlp, c=c, causal=True, qk_norm=qk_norm,
                         resinit=resinit, device=device, dtype=dtype, seed=seed)
        self.vocab = int(vocab)
        g = self._gen
        self.b_out = self._param(torch.zeros(vocab, dtype=torch.float64))
        self.tok_emb = self._param(emb_scale * torch.randn(vocab, d, generator=g, dtype=torch.float64))
        self.pos_emb = self._param(pos_scale * torch.randn(T, d, generator=g, dtype=torch.float64))

    def param_groups(self) -> dict[str, list[str]]:
        groups = super().param_groups()
        groups["readout"] = ["W_out", "b_out"]
        groups["embeddings"] = ["tok_emb", "pos_emb"]
        return groups

    def check_ids(self, ids: torch.Tensor, what: str = "token ids") -> None:
        if ids.dtype != torch.int64 or ids.dim() != 2 or ids.shape[1] != self.T:
            raise ValueError(f"{what} must be an int64 tensor of shape (B, {self.T}), "
                             f"got {ids.dtype} {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab):
            raise ValueError(f"{what} must lie in [0, {self.vocab}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    def inject(self, ids: torch.Tensor) -> torch.Tensor:
        """x = E[ids] + P, shape (B, T, d)."""
        return self.tok_emb[ids] + self.pos_emb

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() or x.is_complex():
            if x.shape != z.shape:
                raise ValueError(f"an injection must have the state's shape {tuple(z.shape)}, got {tuple(x.shape)}")
        else:
            if x.dim() != 2 or x.shape != z.shape[:2]:
                raise ValueError(f"token ids must have shape {tuple(z.shape[:2])} (B, T), got {tuple(x.shape)}")
            x = self.inject(x)
        return super().force(z, x)

    def readout(self, z: torch.Tensor) -> torch.Tensor:
        """Logits l = z W_out + b_out, shape (B, T, vocab)."""
        return z @ like(self.W_out, z) + like(self.b_out, z)

    def cost(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(1/T) sum_t [logsumexp(l_t) - l_t[y_t]] per sample (holomorphic in complex z)."""
        logits = self.readout(z)
        picked = torch.gather(logits, -1, y.unsqueeze(-1)).squeeze(-1)
        return (logsumexp(logits) - picked).mean(-1)

    def cost_grad_z(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dC/dz = (softmax(l) - onehot(y)) W_out^T / T."""
        p = softmax(self.readout(z))
        r = p - torch.nn.functional.one_hot(y, self.vocab).to(p.dtype)
        return r @ like(self.W_out, z).mT / self.T


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ModelConfig:
    """Architecture: width d (the seed's C), heads, FFN ratio, context T, damping c, options."""

    d: int = 16
    heads: int = 2
    mlp: int = 4
    T: int = 16
    c: float = 1.0
    qk_norm: bool = True
    resinit: float = 0.1


@dataclass(frozen=True)
class NudgeConfig:
    """The EP estimate: symmetric AEP (= holomorphic N = 2) or holomorphic with N points on the
    circle of radius beta; nudged phases of T2 Euler steps of size eps from z_T1."""

    estimator: str = "symmetric"
    beta: float = 0.02
    N: int = 2
    T2: int = 8
    eps: float = 0.5
    correction: str | None = "aep"

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.correction not in (None, "aep"):
            raise ValueError(f"correction must be None or 'aep' (tracking needs the dense Jacobian), "
                             f"got {self.correction!r}")
        if not (self.beta > 0 and self.eps > 0 and self.T2 >= 1 and self.N >= 2):
            raise ValueError(f"need beta > 0, eps > 0, T2 >= 1, N >= 2; got {self}")


@dataclass(frozen=True)
class ControlConfig:
    """The penalty (jacreg or resreg; "none" disables it) and its residual controller: target, lam's
    start, floor and cap, integral gain, proportional gain, EMA of log res (module docstring)."""

    reg: str = "jacreg"
    target: float = 1e-4
    lam0: float = 0.1
    lam_floor: float = 0.1
    lam_max: float = 1.0
    gain: float = 0.05
    prop: float = 1.0
    ema: float = 0.5

    def __post_init__(self) -> None:
        if self.reg not in REGULARIZERS:
            raise ValueError(f"reg must be one of {REGULARIZERS}, got {self.reg!r}")
        if not (self.target > 0 and 0 < self.lam_floor <= self.lam0 <= self.lam_max and self.gain >= 0 and self.prop >= 0
                and 0 <= self.ema < 1):
            raise ValueError(f"need target > 0, 0 < lam_floor <= lam0 <= lam_max, gain, prop >= 0, 0 <= ema < 1; "
                             f"got {self}")


@dataclass(frozen=True)
class TwinConfig:
    """Everything that determines one trained twin (and its cache key)."""

    rule: str = "ep"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    nudge: NudgeConfig = field(default_factory=NudgeConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    eps: float = 0.5
    T1: int = 12
    steps: int = 150
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 0
    seed: int = 0
    log_every: int = 10
    n_val: int = 128
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        for name in ("T1", "steps", "batch", "log_every", "n_val"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.eps > 0 and self.lr > 0):
            raise ValueError(f"need eps > 0 and lr > 0, got eps={self.eps}, lr={self.lr}")

    def twin(self, rule: str) -> "TwinConfig":
        """The same run under the other training rule."""
        return dataclasses.replace(self, rule=rule)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TwinConfig":
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        d["corpus"] = CorpusConfig(**d["corpus"])
        d["nudge"] = NudgeConfig(**d["nudge"])
        d["control"] = ControlConfig(**d["control"])
        return cls(**d)

    def key(self) -> str:
        """16 hex digits: the config plus the source hash."""
        text = json.dumps(self.to_dict(), sort_keys=True) + source_hash()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_hash() -> str:
    """SHA-256 of the models/ep sources and models/seeding.py: a cached run dies with a code change."""
    h = hashlib.sha256()
    for f in sorted(_EP_DIR.glob("*.py")) + [Path(seeding.__file__)]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def corpus(cfg: CorpusConfig) -> Corpus:
    return Corpus(cfg)


def build_block(cfg: TwinConfig) -> CharLMBlock:
    """The untrained block of a config: identical for both rules (the init seed is cfg.seed)."""
    m = cfg.model
    return CharLMBlock(len(ALPHABET), m.T, m.d, heads=m.heads, mlp=m.mlp, c=m.c, qk_norm=m.qk_norm,
                       resinit=m.resinit, device=as_device(cfg.device), dtype=as_dtype(cfg.dtype),
                       seed=derive_seed("charlm-init", cfg.seed))


def batch_seed(cfg: TwinConfig, step: int) -> int:
    """The batch seed of training step `step` (shared by the twins)."""
    return derive_seed("charlm-train", cfg.seed, step)


def train_batch(cfg: TwinConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, y = corpus(cfg.corpus).batch(cfg.batch, cfg.model.T, batch_seed(cfg, step))
    dev = as_device(cfg.device)
    return ids.to(dev), y.to(dev)


# --------------------------------------------------------------------------- #
# gradients
# --------------------------------------------------------------------------- #
def zero_state(block: CharLMBlock, B: int) -> torch.Tensor:
    return torch.zeros(B, block.T, block.d, dtype=block.W_out.dtype, device=block.W_out.device)


def relax(block: CharLMBlock, ids: torch.Tensor, eps: float, T1: int) -> solvers.Solve:
    """The free phase: T1 Euler steps from z = 0 (no gradient)."""
    block.check_ids(ids)
    return estimators.free_phase(block, ids, solver="euler", eps=eps, steps=T1, tol=None,
                                 z_init=zero_state(block, ids.shape[0])).solve


def antisymmetric_product(F: estimators.Force, z0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> 2 A_J v = J v - J^T v at z0, matrix-free by reverse mode only: J^T v is one backward
    through the graph of F at z0, J v one backward through the graph of the linear map u -> J^T u
    (double backward).  Both graphs are built once per free equilibrium.  The same operator as
    models.ep.estimators.antisymmetric_product (checked in tests/test_models_charlm.py), whose
    torch.func.linearize traces the force anew for every z0 (seconds per training step here)."""
    z = z0.detach().requires_grad_(True)
    with torch.enable_grad():
        out = F(z)
        u = torch.zeros_like(out, requires_grad=True)
        (jtu,) = torch.autograd.grad(out, z, u, create_graph=True)

    def real_apply(v: torch.Tensor) -> torch.Tensor:
        (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
        (jtv,) = torch.autograd.grad(out, z, v, retain_graph=True)
        return jv - jtv

    def apply(v: torch.Tensor) -> torch.Tensor:
        if v.is_complex():  # J is real at a real z0
            return torch.complex(real_apply(v.real.contiguous()), real_apply(v.imag.contiguous()))
        return real_apply(v)

    return apply


class CharLMNudger(estimators.Nudger):
    """models.ep.estimators.Nudger with the correction product of `antisymmetric_product` above (the
    nudged phases, readouts and estimators are the core's)."""

    def __init__(self, block: CharLMBlock, x: torch.Tensor, y: torch.Tensor, z0: torch.Tensor,
                 cfg: estimators.EPConfig) -> None:
        if cfg.solver != "euler":
            raise ValueError(f"CharLMNudger relaxes the nudged phases by Euler steps, got solver {cfg.solver!r}")
        # the parent without a correction builds everything else; the correction product is ours
        super().__init__(block, x, y, z0, dataclasses.replace(cfg, correction=None))
        self.cfg = cfg
        if cfg.correction == "aep":
            self.two_A = antisymmetric_product(estimators.free_force(block, x), self.z0)


def ep_config(nudge: NudgeConfig) -> estimators.EPConfig:
    return estimators.EPConfig(correction=nudge.correction, readout="vf", eps=nudge.eps, steps=nudge.T2,
                               solver="euler")


def ep_estimate(block: CharLMBlock, ids: torch.Tensor, y: torch.Tensor, z0: torch.Tensor,
                nudge: NudgeConfig) -> estimators.Estimate:
    """The EP estimate of d/dtheta sum_b C(z*_b) with z0 taken as the free equilibrium (through the
    core's estimators.symmetric / holomorphic; one nudged phase after the other)."""
    block.check_ids(ids)
    block.check_ids(y, "targets")
    nudger = CharLMNudger(block, ids, y, z0, ep_config(nudge))
    if nudge.estimator == "symmetric":
        return estimators.symmetric(nudger, nudge.beta)
    return estimators.holomorphic(nudger, nudge.beta, nudge.N)


def stacked_estimate(block: CharLMBlock, ids: torch.Tensor, y: torch.Tensor, z0: torch.Tensor,
                     nudge: NudgeConfig) -> estimators.Estimate:
    """The same estimate as `ep_estimate`, with the K nudged phases (beta_k = +-beta, or the N
    Cauchy points) relaxed as one stacked batch of K B states: the nudged force is the core's
    estimators.nudged_force (per-sample beta_k, the frozen correction at the stacked free
    equilibrium), and by linearity of the vector-field readout
    sum_k w_k h(beta_k) = -(dF/dtheta(z0))^T sum_k w_k (z_k - z0) is one readout (weights
    w = +-1/(2 beta), or estimators.cauchy_weights).  K times fewer sequential force evaluations."""
    block.check_ids(ids)
    block.check_ids(y, "targets")
    B = ids.shape[0]
    if nudge.estimator == "symmetric":
        betas, ws = [nudge.beta, -nudge.beta], [0.5 / nudge.beta, -0.5 / nudge.beta]
    else:
        betas, ws = estimators.cauchy_weights(nudge.beta, nudge.N)
    K = len(betas)
    cplx = any(isinstance(b, complex) for b in betas)
    dt = (torch.complex128 if z0.dtype == torch.float64 else torch.complex64) if cplx else z0.dtype
    ids_k, y_k, z0_k = ids.repeat(K, 1), y.repeat(K, 1), z0.detach().repeat(K, 1, 1)
    beta_k = torch.tensor(betas, dtype=dt, device=z0.device).repeat_interleave(B).view(-1, 1, 1)
    two_A = None
    if nudge.correction == "aep":
        two_A = antisymmetric_product(estimators.free_force(block, ids_k), z0_k)
    G = estimators.nudged_force(block, ids_k, y_k, beta_k, z0_k, nudge.correction, two_A)
    sol = solvers.euler(G, z0_k.to(dt), nudge.eps, nudge.T2)
    delta = sum(w * (sol.z[k * B:(k + 1) * B] - z0) for k, w in enumerate(ws))
    h = estimators.vf_readout(block, ids, z0.detach(), delta)
    imag = float(h.imag.norm()) if h.is_complex() else 0.0
    h = h.real if h.is_complex() else h
    kind = nudge.estimator
    return estimators.Estimate(estimators.dC_dtheta(block, z0, y) + h, kind, nudge.beta, imag=imag,
                               nudged_residuals=[sol.residual])


def unroll(block: CharLMBlock, ids: torch.Tensor, eps: float, T1: int) -> torch.Tensor:
    """z_T1 of the T1-step Euler unroll from z = 0, differentiable in the parameters."""
    z = zero_state(block, ids.shape[0])
    for _ in range(int(T1)):
        z = z + eps * block.force(z, ids)
    return z


def bptt_task_gradient(block: CharLMBlock, ids: torch.Tensor, y: torch.Tensor, eps: float,
                       T1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d/dtheta sum_b C(z_T1,b) through the unroll, flat; z_T1 detached)."""
    block.check_ids(ids)
    block.check_ids(y, "targets")
    ps = estimators.params(block)
    with torch.enable_grad():
        z = unroll(block, ids, eps, T1)
        g = torch.autograd.grad(block.cost(z, y).sum(), ps, allow_unused=True)
    return estimators.flat(list(g), ps), z.detach()


def resreg_penalty(block: CharLMBlock, ids: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """R = mean_b ||eps F(z_b)||^2 / (||z_b||^2 + 1) at the detached state z (a function of theta)."""
    zd = z.detach()
    F = block.force(zd, ids)
    return ((eps * F) ** 2).sum((1, 2)).div((zd * zd).sum((1, 2)) + 1.0).mean()


def jacreg_penalty(block: CharLMBlock, ids: torch.Tensor, z: torch.Tensor, seed: int) -> torch.Tensor:
    """P = mean_b ||J_nc,b^T v_b||^2 / (T d) at the detached state z, v ~ N(0, I) drawn from `seed`
    (Hutchinson: E ||J^T v||^2 = ||J||_F^2), J_nc = dF/dz + (1 + c) I; differentiable in theta."""
    v = torch.randn(z.shape, generator=seeding.cpu_generator(seed), dtype=torch.float64).to(z)
    zz = z.detach().requires_grad_(True)
    (jtv,) = torch.autograd.grad(block.force(zz, ids), zz, v, create_graph=True)
    jtv = jtv + (1.0 + block.c) * v
    return (jtv * jtv).sum((1, 2)).mean() / (block.T * block.d)


def penalty_gradient(cfg: "TwinConfig", block: CharLMBlock, ids: torch.Tensor, z: torch.Tensor,
                     step: int) -> tuple[float, torch.Tensor]:
    """(value, flat gradient) of the configured penalty at the detached state z of step `step`."""
    ps = estimators.params(block)
    with torch.enable_grad():
        if cfg.control.reg == "resreg":
            P = resreg_penalty(block, ids, z, cfg.eps)
        elif cfg.control.reg == "jacreg":
            P = jacreg_penalty(block, ids, z, derive_seed("charlm-hutchinson", cfg.seed, step))
        else:
            raise ValueError(f"no penalty for reg {cfg.control.reg!r}")
        g = torch.autograd.grad(P, ps, allow_unused=True)
    return float(P.detach()), estimators.flat(list(g), ps)


def penalty_term(g_task: torch.Tensor, g_pen: torch.Tensor, lam: float) -> torch.Tensor:
    """lam ||g_task|| g_pen / ||g_pen||: the penalty's gradient at lam times the task gradient's norm
    (the seed's task-relative scale), so lam is a ratio whatever the residual's magnitude."""
    n = float(g_pen.norm())
    return g_pen * (lam * float(g_task.norm()) / n) if n > 0 else g_pen


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else float("nan")


def group_cosines(block: CharLMBlock, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    return {g: cosine(estimators.group_vector(a, s), estimators.group_vector(b, s))
            for g, s in estimators.group_slices(block).items()}


class ResidualController:
    """A PI controller on the logarithm of the residual (it spans decades): with e = lbar - log target,
    lbar the EMA of log res, the integral I <- clip(I + gain e) and
    lam = clip(exp(I + prop e), lam_floor, lam_max), I clipped to the same range (no wind-up)."""

    def __init__(self, cfg: ControlConfig) -> None:
        self.cfg = cfg
        self.lam = cfg.lam0 if cfg.reg != "none" else 0.0
        self.integral = math.log(cfg.lam0)
        self.lbar: float | None = None

    def update(self, res: float) -> None:
        c = self.cfg
        if c.reg == "none":
            return
        lr = math.log(max(res, 1e-300))
        self.lbar = lr if self.lbar is None else c.ema * self.lbar + (1 - c.ema) * lr
        e = self.lbar - math.log(c.target)
        lo, hi = math.log(c.lam_floor), math.log(c.lam_max)
        self.integral = min(max(self.integral + c.gain * e, lo), hi)
        self.lam = math.exp(min(max(self.integral + c.prop * e, lo), hi))


@torch.no_grad()
def evaluate(block: CharLMBlock, ids: torch.Tensor, y: torch.Tensor, eps: float, T1: int,
             chunk: int = 64) -> tuple[float, float]:
    """(mean CE at z_T1 over all windows and positions, largest free-phase residual)."""
    block.check_ids(y, "targets")
    total, res = 0.0, 0.0
    for i in range(0, ids.shape[0], chunk):
        s = relax(block, ids[i:i + chunk], eps, T1)
        total += float(block.cost(s.z, y[i:i + chunk]).sum())
        res = max(res, s.residual)
    return total / ids.shape[0], res


def val_data(cfg: TwinConfig) -> tuple[torch.Tensor, torch.Tensor]:
    ids, y = corpus(cfg.corpus).val_windows(cfg.n_val, cfg.model.T)
    dev = as_device(cfg.device)
    return ids.to(dev), y.to(dev)


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
@dataclass
class TrainedTwin:
    """A trained twin: its block (frozen), config and history (JSON-able lists)."""

    block: CharLMBlock
    cfg: TwinConfig
    history: dict[str, Any]


def _new_history() -> dict[str, Any]:
    return {"step": [], "train_ce": [], "res": [], "lam": [], "penalty": [],
            "log_step": [], "val_ce": [], "val_res": [], "cos": [], "norm_ratio": [], "group_cos": [],
            "nudged_res": [], "diverged_at": None, "init_digest": "", "batch_digest": ""}


def _finite(*ts: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)


def _set_grads(ps: list[torch.nn.Parameter], g: torch.Tensor) -> None:
    at = 0
    for p in ps:
        p.grad = g[at:at + p.numel()].view_as(p).clone()
        at += p.numel()


def train(cfg: TwinConfig, progress: Callable[[dict[str, Any]], None] | None = None) -> TrainedTwin:
    """Adam on the task gradient of `cfg.rule` plus the controlled penalty; see the module
    docstring.  A non-finite free phase or gradient stops training (the parameters of the last
    finite step are kept) and is recorded as history["diverged_at"]."""
    block = build_block(cfg)
    opt = torch.optim.Adam(block.parameters(), lr=cfg.lr)
    ctrl = ResidualController(cfg.control)
    xv, yv = val_data(cfg)
    ps = estimators.params(block)
    h = _new_history()
    h["init_digest"] = tensor_digest(dict(block.state_dict()))
    batches = hashlib.sha256()
    B = cfg.batch

    def log_val(step: int, g_task: torch.Tensor | None = None, g_ref: torch.Tensor | None = None,
                nres: tuple[float, ...] = ()) -> None:
        ce, vres = evaluate(block, xv, yv, cfg.eps, cfg.T1)
        h["log_step"].append(step)
        h["val_ce"].append(ce)
        h["val_res"].append(vres)
        if g_ref is not None:
            h["cos"].append(cosine(g_task, g_ref))
            h["norm_ratio"].append(float(g_task.norm() / g_ref.norm()))
            h["group_cos"].append(group_cosines(block, g_task, g_ref))
            h["nudged_res"].append(max(nres))

    for step in range(cfg.steps):
        ids, y = train_batch(cfg, step)
        batches.update(ids.cpu().numpy().tobytes() + y.cpu().numpy().tobytes())
        logging = step % cfg.log_every == 0
        g_ref, nres = None, ()
        if cfg.rule == "ep":
            free = relax(block, ids, cfg.eps, cfg.T1)
            z, res = free.z, free.residual
            if not _finite(z):
                h["diverged_at"] = step
                break
            est = stacked_estimate(block, ids, y, z, cfg.nudge)
            g_task, nres = est.grad / B, tuple(est.nudged_residuals)
            if logging:
                g_ref = bptt_task_gradient(block, ids, y, cfg.eps, cfg.T1)[0] / B
        else:
            g_task, z = bptt_task_gradient(block, ids, y, cfg.eps, cfg.T1)
            g_task = g_task / B
            res = solvers.residual(block.force(z, ids).detach(), z)
        with torch.no_grad():
            train_ce = float(block.cost(z, y).mean())
        pen, g = 0.0, g_task
        if cfg.control.reg != "none":
            pen, g_pen = penalty_gradient(cfg, block, ids, z, step)
            g = g_task + penalty_term(g_task, g_pen, ctrl.lam)
        if not _finite(g):
            h["diverged_at"] = step
            break
        if logging:
            log_val(step, g_task, g_ref, nres)
        h["step"].append(step)
        h["train_ce"].append(train_ce)
        h["res"].append(res)
        h["lam"].append(ctrl.lam)
        h["penalty"].append(pen)
        for group in opt.param_groups:  # linear warm-up of the learning rate
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
        opt.zero_grad(set_to_none=True)
        _set_grads(ps, g)
        opt.step()
        ctrl.update(res)
        if progress is not None:
            progress({"step": step, "train_ce": train_ce, "res": res, "lam": ctrl.lam})
    h["batch_digest"] = batches.hexdigest()
    if h["diverged_at"] is None:
        log_val(cfg.steps)
    block.requires_grad_(False)
    return TrainedTwin(block, cfg, h)


# --------------------------------------------------------------------------- #
# validity probe: cos of EP at a truncated free phase against the exact implicit gradient
# --------------------------------------------------------------------------- #
def thawed(block: CharLMBlock, cfg: TwinConfig, dtype: str | None = None) -> CharLMBlock:
    """A trainable copy of a (frozen) block, optionally in another dtype."""
    out = build_block(cfg if dtype is None else dataclasses.replace(cfg, dtype=dtype))
    ref = out.W_out
    out.load_state_dict({k: v.detach().to(device=ref.device, dtype=ref.dtype) for k, v in block.state_dict().items()})
    return out


def validity_probe(block: CharLMBlock, cfg: TwinConfig, lengths: list[int], *, batch: int = 2,
                   seed: int = 10_000, reference: str = "ift", tight_tol: float = 1e-12,
                   max_steps: int = 5000) -> dict[str, Any]:
    """For free phases truncated at t steps (t in `lengths`): the residual res(z_t) and the cosines
    of the EP estimate at z_t and of BPTT through t steps with the exact gradient on `batch`
    windows of the training text drawn at `seed`.  reference "ift": the implicit-function-theorem
    gradient at the equilibrium relaxed to res <= tight_tol (float64 copy of the block, dense
    Jacobian; models.ep.references.ift_gradient); "bptt": BPTT through 8 T1 steps (states too
    large for a dense Jacobian)."""
    from .references import ift_gradient

    if reference not in ("ift", "bptt"):
        raise ValueError(f"reference must be 'ift' or 'bptt', got {reference!r}")
    ids, y = corpus(cfg.corpus).batch(batch, cfg.model.T, derive_seed("charlm-probe", seed))
    dev = block.W_out.device
    ids, y = ids.to(dev), y.to(dev)
    block = thawed(block, cfg)
    ref_block = thawed(block, cfg, "float64")
    if reference == "ift":
        tight = estimators.free_phase(ref_block, ids, solver="euler", eps=cfg.eps, steps=max_steps,
                                      tol=tight_tol, z_init=zero_state(ref_block, batch))
        g_ref, ref_res = ift_gradient(ref_block, ids, y, tight.z), tight.solve.residual
    else:
        g_ref, z_ref = bptt_task_gradient(ref_block, ids, y, cfg.eps, 8 * cfg.T1)
        ref_res = solvers.residual(ref_block.force(z_ref, ids).detach(), z_ref)
    out: dict[str, Any] = {"t": [], "res": [], "cos_ep": [], "cos_bptt": [], "ratio_ep": [],
                           "reference": reference, "reference_residual": ref_res}
    for t in lengths:
        s = relax(block, ids, cfg.eps, t)
        g_ep = stacked_estimate(block, ids, y, s.z, cfg.nudge).grad.to(torch.float64)
        g_bp = bptt_task_gradient(block, ids, y, cfg.eps, t)[0].to(torch.float64)
        out["t"].append(int(t))
        out["res"].append(s.residual)
        out["cos_ep"].append(cosine(g_ep, g_ref))
        out["cos_bptt"].append(cosine(g_bp, g_ref))
        out["ratio_ep"].append(float(g_ep.norm() / g_ref.norm()))
    return out


# --------------------------------------------------------------------------- #
# checkpoints
# --------------------------------------------------------------------------- #
def checkpoint_path(cfg: TwinConfig, directory: Path) -> Path:
    return Path(directory) / f"charlm-{cfg.rule}-{cfg.key()}.safetensors"


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


def save_twin(path: Path, twin: TrainedTwin) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in twin.block.state_dict().items()}
    meta = {"format": FORMAT, "config": _canonical(twin.cfg.to_dict()), "history": json.dumps(twin.history),
            "sha256": tensor_digest(tensors)}
    atomic_save(Path(path), tensors, meta)


def load_twin(path: Path, expect: TwinConfig | None = None) -> TrainedTwin:
    """Rebuild a trained twin; CheckpointError (naming the file) if the file is missing, unreadable,
    corrupt (SHA-256), of another format or config, or has missing / mis-shaped / non-finite tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    for k in ("format", "config", "history", "sha256"):
        if k not in meta:
            raise CheckpointError(f"checkpoint {path}: metadata lacks {k!r}")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta['format']!r}, expected {FORMAT!r}")
    if tensor_digest(tensors) != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path}: tensor data does not match its SHA-256 (corrupt file)")
    try:
        stored = json.loads(meta["config"])
        history = json.loads(meta["history"])
        cfg = TwinConfig.from_dict(stored)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: malformed metadata ({exc})") from exc
    if expect is not None and _canonical(stored) != _canonical(expect.to_dict()):
        raise CheckpointError(f"checkpoint {path}: stored config does not match the requested one\n"
                              f"  stored:    {_canonical(stored)}\n  requested: {_canonical(expect.to_dict())}")
    block = build_block(cfg)
    want = block.state_dict()
    if set(want) != set(tensors):
        raise CheckpointError(f"checkpoint {path}: missing tensors {sorted(set(want) - set(tensors))}, "
                              f"unexpected tensors {sorted(set(tensors) - set(want))}")
    for k, ref in want.items():
        if tuple(tensors[k].shape) != tuple(ref.shape):
            raise CheckpointError(f"checkpoint {path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, "
                                  f"expected {tuple(ref.shape)}")
        if not torch.isfinite(tensors[k]).all():
            raise CheckpointError(f"checkpoint {path}: tensor {k!r} has non-finite entries")
    block.load_state_dict({k: v.to(device=want[k].device, dtype=want[k].dtype) for k, v in tensors.items()})
    block.requires_grad_(False)
    return TrainedTwin(block, cfg, history)


def load_or_train(cfg: TwinConfig, directory: Path,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> TrainedTwin:
    """The cached twin of `cfg` under `directory`, else trained now and saved (under the file lock
    of models.train, so concurrent askers train once).  A bad cached file is an error, never retrained."""
    from ..train import _training_lock

    path = checkpoint_path(cfg, directory)
    with _training_lock(path):
        if path.exists():
            return load_twin(path, cfg)
        twin = train(cfg, progress)
        save_twin(path, twin)
    return twin
