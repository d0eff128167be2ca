"""Feedback alignment on a small feedforward transformer block (claim fa.upstream_failure, seed 003
TL;DR 1: "FA only trains layers adjacent to the loss (output proj cos ~1.0) and leaves upstream
layers as noise (attention Q/K/V cos ~0.25, FFN fc cos ~-0.01)").

The block (pre-LN, one attention and one FFN branch, residual stream, token-mean readout):

    u = LN(x),  q, k, v = u W_Q^h, u W_K^h, u W_V^h,  A^h = softmax(q k^T / sqrt(d_k)) [causal mask]
    h  = x + sum_h (A^h v^h) W_O^h
    a  = LN(h),  p = a W_fc + b_fc,  g = gelu(p)
    h2 = h + g W_pj
    o  = mean_t(h2) W_out,  loss = sum_b 1/2 ||o_b - y_b||^2

with the same holomorphic LN / tanh-GELU / softmax as models.ep.blocks (so the equilibrium
ThickBlock is its weight-tied, relaxed counterpart; parameter groups have the same names:
Q, K, V, O, FFN_fc, FFN_proj, readout).

Gradients
* `bp_gradient`: exact backpropagation by autograd.
* `backward`: the explicit backward recursion of the block.  Every step where the error crosses a
  weight matrix W uses a feedback matrix in place of W^T; with the transposes themselves
  (`transposed_feedback`) the recursion IS backpropagation (tests check it equals autograd), with
  fixed random matrices (`random_feedback`) it is feedback alignment (Lillicrap, Cownden, Tweed &
  Akerman 2016, Nat. Commun. 7:13276): B in place of W^T in the backward pass only.
  Random feedback replaces the transposes of W_out (readout -> residual stream), W_pj (FFN
  projection -> GELU), W_fc (FFN input -> LN2) and W_O (attention output -> heads).  W_Q, W_K and
  W_V would only carry the error on into the block input x, which has no parameters upstream, so
  no feedback matrix is needed for them.  Everything local to a unit is used exactly, as in
  Lillicrap et al.: each weight's own update is (its input)^T (the error at its output); the
  elementwise GELU derivative, the LayerNorm Jacobian and the softmax Jacobian, and the bilinear
  products inside attention (A, v, q, k are activations, not weights) are exact.
  So the readout's own gradient uses the true error e = o - y and equals backprop exactly; every
  other group receives an error that went through B_out first.
* Because the forward pass does not depend on the feedback and every FA gradient except the
  readout's is linear in B_out, drawing B_out -> -B_out flips them: for any sign-symmetric law of
  the feedback, cos(g_FA, g_BP) of every upstream group has a symmetric distribution, mean 0, at
  an operating point that was not trained with that feedback (e.g. after backprop training).

Everything random is drawn from seeds on the CPU in float64 (models.seeding), then cast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..dtypes import as_device, as_dtype
from ..seeding import cpu_generator, derive_seed
from .blocks import causal_mask, gelu, layer_norm, softmax

GROUPS: dict[str, tuple[str, ...]] = {
    "Q": ("W_Q",), "K": ("W_K",), "V": ("W_V",), "O": ("W_O",), "FFN_fc": ("W_fc", "b_fc"),
    "FFN_proj": ("W_pj",), "readout": ("W_out",)}
# weights whose transpose the backward pass uses, i.e. those FA replaces by a feedback matrix
FEEDBACK_WEIGHTS = ("W_out", "W_pj", "W_fc", "W_O")
LN_EPS = 1e-5
_GELU_C = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class FAConfig:
    """Sizes of the block: T tokens of width d, `heads` heads (d_k = d / heads), FFN width mlp * d,
    d_out readout outputs; causal attention or not; the seed of its initial weights."""

    T: int = 4
    d: int = 8
    d_out: int = 4
    heads: int = 2
    mlp: int = 4
    causal: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("T", "d", "d_out", "heads", "mlp"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"FAConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.d % self.heads:
            raise ValueError(f"d = {self.d} must be a multiple of heads = {self.heads}")

    @property
    def d_k(self) -> int:
        return self.d // self.heads


def _draw(gen: torch.Generator, *shape: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


def init_weights(cfg: FAConfig) -> dict[str, torch.Tensor]:
    """The block's initial weights from cfg.seed (float64, CPU): Gaussian with std 1/sqrt(fan in),
    b_fc = 0."""
    c = cfg
    g = cpu_generator(derive_seed("fa-block", c.T, c.d, c.d_out, c.heads, c.mlp, c.seed))
    m = c.mlp * c.d
    return {"W_Q": _draw(g, c.heads, c.d, c.d_k, scale=1.0 / math.sqrt(c.d)),
            "W_K": _draw(g, c.heads, c.d, c.d_k, scale=1.0 / math.sqrt(c.d)),
            "W_V": _draw(g, c.heads, c.d, c.d_k, scale=1.0 / math.sqrt(c.d)),
            "W_O": _draw(g, c.heads, c.d_k, c.d, scale=1.0 / math.sqrt(c.d)),
            "W_fc": _draw(g, c.d, m, scale=1.0 / math.sqrt(c.d)),
            "b_fc": torch.zeros(m, dtype=torch.float64),
            "W_pj": _draw(g, m, c.d, scale=1.0 / math.sqrt(m)),
            "W_out": _draw(g, c.d, c.d_out, scale=1.0 / math.sqrt(c.d))}


PARAM_NAMES = ("W_Q", "W_K", "W_V", "W_O", "W_fc", "b_fc", "W_pj", "W_out")


@dataclass
class Cache:
    """Every intermediate of the forward pass (leading replica axes first, then (B, [h,] T, .))."""

    u: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    A: torch.Tensor
    head: torch.Tensor
    h: torch.Tensor
    a: torch.Tensor
    pre: torch.Tensor
    g: torch.Tensor
    h2: torch.Tensor
    mean: torch.Tensor
    o: torch.Tensor


def forward(W: dict[str, torch.Tensor], x: torch.Tensor, cfg: FAConfig) -> Cache:
    """The forward pass for weights W (each may carry leading replica axes R..., shared by all of
    them: R independent blocks at once) on x (B, T, d)."""
    if x.dim() != 3 or x.shape[1:] != (cfg.T, cfg.d):
        raise ValueError(f"TransformerBlock: input must be (B, {cfg.T}, {cfg.d}), got {tuple(x.shape)}")
    u = layer_norm(x, LN_EPS)
    q = torch.einsum("...btd,...hdk->...bhtk", u, W["W_Q"])
    k = torch.einsum("...btd,...hdk->...bhtk", u, W["W_K"])
    v = torch.einsum("...btd,...hdk->...bhtk", u, W["W_V"])
    mask = causal_mask(cfg.T, x.device) if cfg.causal else None
    A = softmax(q @ k.mT / math.sqrt(cfg.d_k), mask)
    head = A @ v  # (..., B, h, T, d_k)
    h = x + torch.einsum("...bhtk,...hkd->...btd", head, W["W_O"])
    a = layer_norm(h, LN_EPS)
    pre = torch.einsum("...btd,...dm->...btm", a, W["W_fc"]) + W["b_fc"][..., None, None, :]
    gl = gelu(pre)
    h2 = h + torch.einsum("...btm,...md->...btd", gl, W["W_pj"])
    mean = h2.mean(-2)
    o = torch.einsum("...bd,...do->...bo", mean, W["W_out"])
    return Cache(u, q, k, v, A, head, h, a, pre, gl, h2, mean, o)


def loss(W: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, cfg: FAConfig) -> torch.Tensor:
    """sum_b 1/2 ||o_b - y_b||^2 per replica (the EP blocks' readout cost, summed over the batch)."""
    r = forward(W, x, cfg).o - y
    return 0.5 * (r * r).sum((-2, -1))


class TransformerBlock(nn.Module):
    """The feedforward pre-LN transformer block of this module's docstring (one replica)."""

    def __init__(self, cfg: FAConfig, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float64) -> None:
        super().__init__()
        self.cfg = cfg
        dev, dt = as_device(device), as_dtype(dtype)
        for name, w in init_weights(cfg).items():
            setattr(self, name, nn.Parameter(w.to(device=dev, dtype=dt)))

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in PARAM_NAMES}

    def param_groups(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in GROUPS.items()}

    def forward(self, x: torch.Tensor) -> Cache:
        return forward(self.weights(), x, self.cfg)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(self.weights(), x, y, self.cfg)


# --------------------------------------------------------------------------- #
# feedback matrices
# --------------------------------------------------------------------------- #
@dataclass
class Feedback:
    """Backward matrices with leading set axes S..., each with the shape of the transpose it stands
    in for: W_out (S, d_out, d), W_pj (S, d, m), W_fc (S, m, d), W_O (S, h, d, d_k)."""

    mats: dict[str, torch.Tensor]

    @property
    def S(self) -> int:
        return int(next(iter(self.mats.values())).shape[0])


def transposes(W: dict[str, torch.Tensor]) -> Feedback:
    """The true transposes (W_O per head): `backward` with these is exact backpropagation.  Leading
    replica axes of W are kept (no extra set axis)."""
    return Feedback({n: W[n].detach().mT for n in FEEDBACK_WEIGHTS})


def transposed_feedback(block: TransformerBlock) -> Feedback:
    """The true transposes of one block, as one feedback set (S = 1)."""
    return Feedback({n: m.unsqueeze(0) for n, m in transposes(block.weights()).mats.items()})


def feedback_scale(cfg: FAConfig, name: str) -> float:
    """Standard deviation of a feedback entry: that of the weight's initialisation (1/sqrt(fan in)),
    so a random B has the norm of W^T at init."""
    return {"W_out": 1.0 / math.sqrt(cfg.d), "W_pj": 1.0 / math.sqrt(cfg.mlp * cfg.d),
            "W_fc": 1.0 / math.sqrt(cfg.d), "W_O": 1.0 / math.sqrt(cfg.d)}[name]


def feedback_shapes(cfg: FAConfig) -> dict[str, tuple[int, ...]]:
    m = cfg.mlp * cfg.d
    return {"W_out": (cfg.d_out, cfg.d), "W_pj": (cfg.d, m), "W_fc": (m, cfg.d), "W_O": (cfg.heads, cfg.d, cfg.d_k)}


def random_feedback(cfg: FAConfig, seeds: Sequence[int], *, device: str | torch.device = "cpu",
                    dtype: str | torch.dtype = torch.float64) -> Feedback:
    """One fixed Gaussian feedback set per seed (S = len(seeds); independent of the weights, a
    sign-symmetric law), drawn on the CPU in float64, then cast."""
    if len(seeds) < 1:
        raise ValueError("random_feedback needs at least one seed")
    shapes = feedback_shapes(cfg)
    mats: dict[str, list[torch.Tensor]] = {n: [] for n in FEEDBACK_WEIGHTS}
    for s in seeds:
        g = cpu_generator(derive_seed("fa-feedback", cfg.T, cfg.d, cfg.d_out, cfg.heads, cfg.mlp, int(s)))
        for n in FEEDBACK_WEIGHTS:
            mats[n].append(_draw(g, *shapes[n], scale=feedback_scale(cfg, n)))
    return Feedback({n: torch.stack(v).to(device=as_device(device), dtype=as_dtype(dtype)) for n, v in mats.items()})


# --------------------------------------------------------------------------- #
# the backward recursion
# --------------------------------------------------------------------------- #
def gelu_prime(p: torch.Tensor) -> torch.Tensor:
    """d/dp of the tanh-GELU 1/2 p (1 + tanh(c (p + 0.044715 p^3)))."""
    th = torch.tanh(_GELU_C * (p + 0.044715 * p * p * p))
    return 0.5 * (1.0 + th) + 0.5 * p * (1.0 - th * th) * _GELU_C * (1.0 + 3 * 0.044715 * p * p)


def layer_norm_vjp(x: torch.Tensor, y: torch.Tensor, dy: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """(dLN/dx)^T dy for y = LN(x) = (x - mean) / sqrt(var + eps), per token (last axis):
    dx = (dy - mean(dy) - y mean(dy y)) / sigma.  absolute: the same with every term's absolute
    value, (|dy| + mean|dy| + |y| mean|dy y|) / sigma (for running-error bounds)."""
    c = x - x.mean(-1, keepdim=True)
    sigma = torch.sqrt((c * c).mean(-1, keepdim=True) + LN_EPS)
    if absolute:
        return (dy.abs() + dy.abs().mean(-1, keepdim=True) + y.abs() * (dy * y).abs().mean(-1, keepdim=True)) / sigma
    return (dy - dy.mean(-1, keepdim=True) - y * (dy * y).mean(-1, keepdim=True)) / sigma


def softmax_vjp(A: torch.Tensor, dA: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """(dsoftmax/dlogits)^T dA row-wise: A (dA - sum_j dA_j A_j); masked entries (A = 0) get 0.
    absolute: A (|dA| + sum_j |dA_j| A_j)."""
    if absolute:
        return A * (dA.abs() + (dA.abs() * A).sum(-1, keepdim=True))
    return A * (dA - (dA * A).sum(-1, keepdim=True))


def backward_weights(W: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, cfg: FAConfig,
                     fb: Feedback, *, absolute: bool = False) -> dict[str, torch.Tensor]:
    """d loss / d weight by the explicit backward recursion, with fb's matrices in place of the
    transposes of W_out, W_pj, W_fc, W_O.  Leading axes of W (replicas) and of fb (feedback sets)
    broadcast against each other; every gradient gets the broadcast leading shape.

    absolute: the recursion run on the absolute values of every factor (error, feedback matrices,
    activations, elementwise derivatives, and the absolute forms of the LN / softmax products): the
    |.|-chains of a first-order running-error bound (Higham ch. 3: a computed product of k factors
    is within gamma_k of the product of their absolute values)."""
    ab = torch.abs if absolute else (lambda t: t)
    with torch.no_grad():
        cc = forward(W, x, cfg)
        T, dk = cfg.T, cfg.d_k
        B_out, B_pj, B_fc, B_O = (ab(fb.mats[n]) for n in FEEDBACK_WEIGHTS)
        e = ab(cc.o - y)  # (..., B, d_out): the true error, at the loss
        gr: dict[str, torch.Tensor] = {}
        # readout: its own gradient uses the true error (local: input^T error)
        gr["W_out"] = torch.einsum("...bd,...bo->...do", ab(cc.mean), e)
        # into the residual stream through W_out^T -> B_out, equally to every token (mean readout)
        t = torch.einsum("...bo,...od->...bd", e, B_out) / T
        d_h2 = t.unsqueeze(-2).expand(*t.shape[:-1], T, t.shape[-1])
        # FFN projection: local gradient from the error at its output
        gr["W_pj"] = torch.einsum("...btm,...btd->...md", ab(cc.g), d_h2)
        d_g = torch.einsum("...btd,...dm->...btm", d_h2, B_pj)  # through W_pj^T -> B_pj
        d_p = d_g * ab(gelu_prime(cc.pre))
        gr["W_fc"] = torch.einsum("...btd,...btm->...dm", ab(cc.a), d_p)
        gr["b_fc"] = d_p.sum((-3, -2))
        d_a = torch.einsum("...btm,...md->...btd", d_p, B_fc)  # through W_fc^T -> B_fc
        d_h = d_h2 + layer_norm_vjp(cc.h, cc.a, d_a, absolute)  # residual + LN2's exact Jacobian
        # attention output
        gr["W_O"] = torch.einsum("...bhtk,...btd->...hkd", ab(cc.head), d_h)
        d_head = torch.einsum("...btd,...hdk->...bhtk", d_h, B_O)  # through W_O^T -> B_O, per head
        d_A = d_head @ ab(cc.v).mT  # exact bilinear products of attention
        d_v = cc.A.mT @ d_head
        d_logits = softmax_vjp(cc.A, d_A, absolute) / math.sqrt(dk)
        d_q = d_logits @ ab(cc.k)
        d_k = d_logits.mT @ ab(cc.q)
        gr["W_Q"] = torch.einsum("...btd,...bhtk->...hdk", ab(cc.u), d_q)
        gr["W_K"] = torch.einsum("...btd,...bhtk->...hdk", ab(cc.u), d_k)
        gr["W_V"] = torch.einsum("...btd,...bhtk->...hdk", ab(cc.u), d_v)
        lead = torch.broadcast_shapes(*(gr[n].shape[:gr[n].dim() - BASE_DIMS[n]] for n in PARAM_NAMES))
        return {n: gr[n].expand(*lead, *gr[n].shape[gr[n].dim() - BASE_DIMS[n]:]).contiguous() for n in PARAM_NAMES}


def recursion_terms(cfg: FAConfig, batch: int) -> int:
    """The longest chain of rounded operations from the error to a weight gradient (for gamma_k):
    the readout sum (d_out), the FFN products (d, then m), LN2's three sums (3 d), the head map (d),
    the attention products (d_k, T, T), the softmax sum (T), the projections (d_k), and the
    batch/token accumulation of the gradient (B T)."""
    m = cfg.mlp * cfg.d
    return cfg.d_out + cfg.d + m + 3 * cfg.d + cfg.d + 3 * cfg.d_k + 3 * cfg.T + batch * cfg.T + 8


BASE_DIMS = {"W_Q": 3, "W_K": 3, "W_V": 3, "W_O": 3, "W_fc": 2, "b_fc": 1, "W_pj": 2, "W_out": 2}


def backward(block: TransformerBlock, x: torch.Tensor, y: torch.Tensor, fb: Feedback) -> dict[str, torch.Tensor]:
    """The recursion for one block: name -> (S, *shape), one gradient per feedback set."""
    W = {n: w.detach() for n, w in block.weights().items()}
    return backward_weights(W, x, y, block.cfg, fb)


def bp_gradient(block: TransformerBlock, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact backpropagation (autograd): name -> gradient."""
    ps = [getattr(block, n) for n in PARAM_NAMES]
    with torch.enable_grad():
        gs = torch.autograd.grad(block.loss(x, y), ps)
    return dict(zip(PARAM_NAMES, gs))


def fa_gradient(block: TransformerBlock, x: torch.Tensor, y: torch.Tensor, seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """Feedback-alignment gradients, one per feedback seed: name -> (S, *shape)."""
    W = block.W_out
    return backward(block, x, y, random_feedback(block.cfg, seeds, device=W.device, dtype=W.dtype))


def group_vectors(grads: dict[str, torch.Tensor], lead: int = 0) -> dict[str, torch.Tensor]:
    """group -> the concatenated gradient of its parameters, flattened after `lead` leading axes."""
    out = {}
    for gname, names in GROUPS.items():
        parts = [grads[n].reshape(*grads[n].shape[:lead], -1) for n in names]
        out[gname] = torch.cat(parts, -1)
    return out


# --------------------------------------------------------------------------- #
# data and training
# --------------------------------------------------------------------------- #
def teacher_task(cfg: FAConfig, n: int, seed: int, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float64, teacher_seed: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): n inputs x ~ N(0, 1) of shape (T, d) and targets y = the readout of a fixed teacher
    block (the same architecture, initialised from teacher_seed), all drawn in float64."""
    if n < 1:
        raise ValueError(f"need n >= 1 samples, got {n}")
    g = cpu_generator(derive_seed("fa-task", cfg.T, cfg.d, n, seed))
    x = torch.randn(n, cfg.T, cfg.d, generator=g, dtype=torch.float64)
    teacher = TransformerBlock(FAConfig(**{**cfg.__dict__, "seed": teacher_seed}))
    with torch.no_grad():
        y = teacher.forward(x).o
    return x.to(device=as_device(device), dtype=as_dtype(dtype)), y.to(device=as_device(device), dtype=as_dtype(dtype))


def training_feedback(fb: Feedback, step: int) -> Feedback:
    """The feedback an FA training step uses: the same fixed matrices at every step (Lillicrap:
    B is drawn once; the forward weights come to align with it)."""
    return fb


@dataclass
class TrainRun:
    """Trained weights (leading replica axis R) and the loss per replica before every step."""

    weights: dict[str, torch.Tensor]
    losses: torch.Tensor  # (steps, R)
    rule: str
    feedback_seeds: tuple[int, ...] = ()

    def block(self, r: int = 0) -> TransformerBlock:
        """Replica r as a TransformerBlock."""
        cfg = self.cfg
        blk = TransformerBlock(cfg, device=self.weights["W_out"].device, dtype=self.weights["W_out"].dtype)
        with torch.no_grad():
            for n in PARAM_NAMES:
                getattr(blk, n).copy_(self.weights[n][r])
        return blk

    cfg: FAConfig = FAConfig()


def train(cfg: FAConfig, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, rule: str = "bp",
          feedback_seeds: Sequence[int] = (), W0: dict[str, torch.Tensor] | None = None,
          betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8) -> TrainRun:
    """Full-batch Adam (Kingma & Ba 2015, written out: torch.optim imports torch._dynamo, seconds
    per process) on sum_b 1/2 ||o_b - y_b||^2 / n from W0 (default: cfg's initial weights), in x's
    dtype and device.  rule "bp": the backprop gradient (autograd), one replica; rule "fa": the
    feedback-alignment gradient, one replica per feedback seed, each with its own fixed feedback
    set (`training_feedback`), all trained at once (a leading replica axis)."""
    if rule not in ("bp", "fa"):
        raise ValueError(f"rule must be 'bp' or 'fa', got {rule!r}")
    if int(steps) != steps or steps < 0 or not lr > 0:
        raise ValueError(f"need integer steps >= 0 and lr > 0, got steps={steps!r}, lr={lr!r}")
    if rule == "fa" and len(feedback_seeds) < 1:
        raise ValueError("rule 'fa' needs at least one feedback seed")
    R = 1 if rule == "bp" else len(feedback_seeds)
    base = init_weights(cfg) if W0 is None else W0
    W = {n: base[n].detach().to(device=x.device, dtype=x.dtype).expand(R, *base[n].shape).clone()
         for n in PARAM_NAMES}
    fb = random_feedback(cfg, feedback_seeds, device=x.device, dtype=x.dtype) if rule == "fa" else None
    b1, b2 = betas
    m1 = {n: torch.zeros_like(w) for n, w in W.items()}
    m2 = {n: torch.zeros_like(w) for n, w in W.items()}
    n_samples = x.shape[0]
    losses = []
    for t in range(int(steps)):
        if rule == "bp":
            leaves = {n: w.detach().requires_grad_(True) for n, w in W.items()}
            with torch.enable_grad():
                L = loss(leaves, x, y, cfg)
                gs = dict(zip(PARAM_NAMES, torch.autograd.grad(L.sum(), [leaves[n] for n in PARAM_NAMES])))
            L = L.detach()
        else:
            gs = backward_weights(W, x, y, cfg, training_feedback(fb, t))
            with torch.no_grad():
                L = loss(W, x, y, cfg)
        losses.append(L / n_samples)
        with torch.no_grad():
            for name in PARAM_NAMES:
                g = gs[name] / n_samples
                m1[name].mul_(b1).add_(g, alpha=1 - b1)
                m2[name].mul_(b2).addcmul_(g, g, value=1 - b2)
                mhat = m1[name] / (1 - b1 ** (t + 1))
                vhat = m2[name] / (1 - b2 ** (t + 1))
                W[name] = W[name] - lr * mhat / (vhat.sqrt() + adam_eps)
    L_all = torch.stack(losses) if losses else torch.zeros(0, R, dtype=x.dtype)
    return TrainRun(W, L_all, rule, tuple(int(s) for s in feedback_seeds), cfg)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis (a may carry leading axes; b broadcasts)."""
    a64, b64 = a.double(), b.double()
    return (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1))

