"""Discrete-time equilibrium RNNs with static input and the time-resolved EP / BPTT updates of
Ernoult, Grollier, Querlioz, Bengio & Scellier (NeurIPS 2019), "Updates of Equilibrium Prop Match
Gradients of Backprop Through Time in an RNN with Static Input" (claim ep.gdu, seed 003).

Claim ep.gdu: "discrete-time EP updates equal BPTT gradients step by step in the first nudged
steps, as beta -> 0 (Ernoult 2019)".

Setting.  Static input x, state s in R^n, s_{t+1} = F(x, s_t, theta), free phase from s_0 = 0 to
(near) the fixed point s*; loss l(s) = 1/2 ||s_out - y||^2 on the first n_out units.

* BPTT over the last K steps of the free trajectory: grad_s(t) = dL/ds_{T-t} (t = 0..K) and
  grad_theta(t) = dL/dtheta_{T-t}, the contribution of the parameters used by the step that
  produces s_{T-t} (t = 0..K-1), by autograd with one parameter copy per step.
* EP nudged phase from s^beta_0 = s_T:  s^beta_{t+1} = F(x, s^beta_t, theta) - beta dl/ds(s^beta_t),
  with the time-resolved updates
      Delta_s(beta, t)     = (s^beta_{t+1} - s^beta_t) / beta,
      Delta_theta(beta, t) = (dPhi/dtheta(s^beta_{t+1}) - dPhi/dtheta(s^beta_t)) / beta,
  one-sided, and symmetric: (Delta(beta, t) + Delta(-beta, t)) / 2.

Two RNNs (W symmetric by construction, W = (A + A^T)/2 from a free parameter A):

* "primitive": the energy-based Euler step s_{t+1} = s_t - eps dE/ds, E = 1/2||s||^2 -
  1/2 rho(s)^T W rho(s) - rho(s)^T (W_x x + b), rho = tanh, i.e.
      F(s) = (1 - eps) s + eps rho'(s) * (W rho(s) + W_x x + b) = dPhi/ds,
      Phi(s) = (1 - eps)/2 ||s||^2 + eps (1/2 rho(s)^T W rho(s) + rho(s)^T (W_x x + b)),
  a transition that derives from a primitive function (dF/ds = d^2 Phi/ds^2 is symmetric).  The
  weights are scaled so that a = C'' max_i(sum_j |W_ij| + |c_i|) + ||W||_2 = coupling < 1
  (C'' = max |rho''| = 4/(3 sqrt 3), c = W_x x + b): then every eigenvalue of dF/ds lies in
  [1 - eps(1 + a), 1 - eps(1 - a)], a global contraction with factor 1 - eps(1 - a).
* "prototypical": Ernoult's prototypical setting F(s) = tanh(W s + W_x x + b), ||W||_2 = coupling
  < 1 (a contraction since |tanh'| <= 1).  It derives from no primitive function (dF/ds =
  diag(tanh') W is not symmetric); EP uses Ernoult's approximate primitive
  Phi(s) = 1/2 s^T W s + s^T (W_x x + b) (the activation ignored).
* "untied": the prototypical transition with a free (asymmetric) W = A; BPTT only (no primitive).

Everything random is drawn from the seed on the CPU in float64, then cast to the SUT dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..dtypes import as_device, as_dtype
from ..seeding import cpu_generator, derive_seed

KINDS = ("primitive", "prototypical", "untied")
RHO_DDOT_MAX = 4.0 / (3.0 * math.sqrt(3.0))  # max |tanh''(z)| = max |2 tanh sech^2|, at tanh^2 = 1/3
THETA_NAMES = ("A", "W_x", "b")


@dataclass(frozen=True)
class RNNConfig:
    """One equilibrium RNN: kind, sizes, coupling (the contraction budget, < 1), input scale (the
    size of W_x x + b relative to W), Euler step eps (primitive only) and the seed."""

    kind: str
    n: int
    n_in: int = 1
    n_out: int = 1
    coupling: float = 0.5
    input_scale: float = 1.0
    eps: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown RNN kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("n", "n_in", "n_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RNNConfig.{name} must be an integer >= 1, got {v!r}")
        if self.n_out > self.n:
            raise ValueError(f"RNNConfig.n_out = {self.n_out} exceeds the number of units n = {self.n}")
        if not (0.0 < float(self.coupling) < 1.0):
            raise ValueError(f"RNNConfig.coupling must lie in (0, 1) for a contraction, got {self.coupling!r}")
        if not (math.isfinite(self.input_scale) and self.input_scale >= 0.0):
            raise ValueError(f"RNNConfig.input_scale must be finite and >= 0, got {self.input_scale!r}")
        if not (0.0 < float(self.eps) <= 1.0):
            raise ValueError(f"RNNConfig.eps (the Euler step) must lie in (0, 1], got {self.eps!r}")


class EquilibriumRNN(nn.Module):
    """Parameters theta = (A, W_x, b), W = (A + A^T)/2 (tied kinds) or A (untied); buffers x, y."""

    def __init__(self, cfg: RNNConfig, *, dtype: str | torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        dt, dev = as_dtype(dtype), as_device(device)
        A, Wx, b, x, y = draw_weights(cfg)
        self.A = nn.Parameter(A.to(dev, dt))
        self.W_x = nn.Parameter(Wx.to(dev, dt))
        self.b = nn.Parameter(b.to(dev, dt))
        self.register_buffer("x", x.to(dev, dt))
        self.register_buffer("y", y.to(dev, dt))

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def tied(self) -> bool:
        return self.cfg.kind != "untied"

    def theta(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.A, self.W_x, self.b)

    @property
    def num_theta(self) -> int:
        n, m = self.cfg.n, self.cfg.n_in
        return n * n + n * m + n


def draw_weights(cfg: RNNConfig) -> tuple[torch.Tensor, ...]:
    """(A, W_x, b, x, y) in float64 on the CPU, scaled to the config's contraction budget."""
    g = cpu_generator(derive_seed("ep.gdu-rnn", cfg.kind, cfg.n, cfg.n_in, cfg.n_out, cfg.seed))
    n, m = cfg.n, cfg.n_in
    A = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    Wx = torch.randn(n, m, generator=g, dtype=torch.float64) * (cfg.input_scale / math.sqrt(m))
    b = torch.randn(n, generator=g, dtype=torch.float64) * (0.5 * cfg.input_scale)
    x = torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1
    # targets +-1: at least 1 - |s_out| away from any tanh-bounded output, so dl/ds never vanishes
    y = torch.where(torch.rand(cfg.n_out, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).double()
    W = (A + A.T) / 2 if cfg.kind != "untied" else A
    if cfg.kind == "primitive":
        c = Wx @ x + b
        a = RHO_DDOT_MAX * float((W.abs().sum(1) + c.abs()).max()) + float(torch.linalg.matrix_norm(W, 2))
        lam = cfg.coupling / a  # a is 1-homogeneous in (W, W_x, b): scale all three
        A, Wx, b = A * lam, Wx * lam, b * lam
    else:
        A = A * (cfg.coupling / float(torch.linalg.matrix_norm(W, 2)))
    return A, Wx, b, x, y


# --------------------------------------------------------------------------- #
# the transition, its primitive, the loss
# --------------------------------------------------------------------------- #
Theta = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def weight(model: EquilibriumRNN, A: torch.Tensor) -> torch.Tensor:
    """The recurrent matrix W used by the transition: symmetric (A + A^T)/2 unless untied."""
    return (A + A.mT) / 2 if model.tied else A


def _check_state(model: EquilibriumRNN, s: torch.Tensor) -> None:
    if s.shape[-1] != model.cfg.n:
        raise ValueError(f"state has {s.shape[-1]} units in its last dimension, the RNN has n = {model.cfg.n}")
    if s.dtype != model.A.dtype:
        raise ValueError(f"state dtype {s.dtype} differs from the RNN's {model.A.dtype}")


def transition(model: EquilibriumRNN, s: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
    """F(x, s, theta) for a state or a batch of states (..., n)."""
    return _step(model, s, *_operands(model, theta))


def _operands(model: EquilibriumRNN, theta: Theta | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, c = W_x x + b): what every step with these parameters shares (formed once per phase)."""
    A, Wx, b = model.theta() if theta is None else theta
    return weight(model, A), Wx @ model.x + b


def _step(model: EquilibriumRNN, s: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    if model.kind == "primitive":
        eps = model.cfg.eps
        r = torch.tanh(s)
        return (1 - eps) * s + eps * ((1 - r * r) * (r @ W.mT + c))
    return torch.tanh(s @ W.mT + c)


def primitive(model: EquilibriumRNN, s: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
    """Phi(x, s, theta) per state (...): exact for the primitive RNN (F = dPhi/ds), Ernoult's
    approximate primitive 1/2 s^T W s + s^T (W_x x + b) for the prototypical one."""
    if not model.tied:
        raise ValueError("the untied RNN (asymmetric W) has no primitive function: EP updates are undefined")
    A, Wx, b = model.theta() if theta is None else theta
    W = weight(model, A)
    c = Wx @ model.x + b
    if model.kind == "primitive":
        eps = model.cfg.eps
        r = torch.tanh(s)
        return (1 - eps) / 2 * (s * s).sum(-1) + eps * (0.5 * (r * (r @ W.mT)).sum(-1) + (r * c).sum(-1))
    return 0.5 * (s * (s @ W.mT)).sum(-1) + (s * c).sum(-1)


def loss(model: EquilibriumRNN, s: torch.Tensor) -> torch.Tensor:
    """l(s) = 1/2 ||s[:n_out] - y||^2 per state."""
    e = s[..., : model.cfg.n_out] - model.y
    return 0.5 * (e * e).sum(-1)


def loss_grad(model: EquilibriumRNN, s: torch.Tensor) -> torch.Tensor:
    """dl/ds: s[:n_out] - y on the output units, 0 elsewhere."""
    g = torch.zeros_like(s)
    g[..., : model.cfg.n_out] = s[..., : model.cfg.n_out] - model.y
    return g


def flat(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenate (A, W_x, b)-shaped tensors (leading batch dims kept) into (..., p), row-major."""
    lead = parts[-1].shape[:-1]
    return torch.cat([p.reshape(*lead, -1) for p in parts], dim=-1)


def phi_theta(model: EquilibriumRNN, S: torch.Tensor) -> torch.Tensor:
    """dPhi/dtheta at each state of S (B, n), flattened (B, p): per-state gradients by vmap."""
    _check_state(model, S)
    theta = tuple(p.detach() for p in model.theta())

    def phi(th: Theta, s: torch.Tensor) -> torch.Tensor:
        return primitive(model, s, th)

    grads = torch.func.vmap(torch.func.grad(phi), in_dims=(None, 0))(theta, S)
    return flat(tuple(grads))


# --------------------------------------------------------------------------- #
# the two phases
# --------------------------------------------------------------------------- #
def free_phase(model: EquilibriumRNN, T: int, K: int) -> torch.Tensor:
    """T steps of s_{t+1} = F(s_t) from s_0 = 0; the last K + 1 states s_{T-K}, ..., s_T (K+1, n)."""
    if isinstance(T, bool) or not isinstance(T, int) or isinstance(K, bool) or not isinstance(K, int):
        raise TypeError(f"free_phase: T and K must be integers, got {T!r}, {K!r}")
    if K < 1 or T < K:
        raise ValueError(f"free_phase: need 1 <= K <= T, got K = {K}, T = {T}")
    s = torch.zeros(model.cfg.n, dtype=model.A.dtype, device=model.A.device)
    keep = [s]
    with torch.no_grad():
        W, c = _operands(model, None)
        for _ in range(T):
            s = _step(model, s, W, c)
            keep.append(s)
            if len(keep) > K + 1:
                keep.pop(0)
    return torch.stack(keep)


def _betas(model: EquilibriumRNN, betas) -> torch.Tensor:
    b = torch.as_tensor(betas, dtype=model.A.dtype, device=model.A.device).reshape(-1)
    if b.numel() == 0:
        raise ValueError("no nudging strengths beta given")
    if not bool(torch.isfinite(b).all()) or bool((b == 0).any()):
        raise ValueError(f"every beta must be finite and nonzero, got {b.tolist()}")
    return b


def nudged_phase(model: EquilibriumRNN, start: torch.Tensor, betas, K: int) -> torch.Tensor:
    """s^beta_0 = start, s^beta_{t+1} = F(s^beta_t) - beta dl/ds(s^beta_t): (K+1, B, n) for B betas."""
    _check_state(model, start)
    if start.dim() != 1:
        raise ValueError(f"nudged_phase: start must be one state (n,), got shape {tuple(start.shape)}")
    if K < 1:
        raise ValueError(f"nudged_phase: K must be >= 1, got {K}")
    b = _betas(model, betas)[:, None]
    s = start.detach().expand(b.shape[0], -1).clone()
    states = [s]
    with torch.no_grad():
        W, c = _operands(model, None)
        for _ in range(K):
            s = _step(model, s, W, c) - b * loss_grad(model, s)
            states.append(s)
    return torch.stack(states)


@dataclass
class EPUpdates:
    """Time-resolved EP updates for B betas: ds (K, B, n), dtheta (K, B, p); for one-sided updates
    also the nudged states (K+1, B, n) and dPhi/dtheta at them (K+1, B, p) they came from; for
    symmetric ones the one-sided updates at (beta, -beta) they average (`sides`, 2B betas)."""

    betas: torch.Tensor
    ds: torch.Tensor
    dtheta: torch.Tensor
    states: torch.Tensor | None = None
    phis: torch.Tensor | None = None
    sides: EPUpdates | None = None


def ep_updates(model: EquilibriumRNN, states: torch.Tensor, betas) -> EPUpdates:
    """Delta_s = (s_{t+1} - s_t)/beta and Delta_theta = (dPhi/dtheta(s_{t+1}) - dPhi/dtheta(s_t))/beta
    from nudged states (K+1, B, n)."""
    b = _betas(model, betas)
    Kp1, B, n = states.shape
    if B != b.numel():
        raise ValueError(f"ep_updates: {B} nudged trajectories but {b.numel()} betas")
    G = phi_theta(model, states.reshape(Kp1 * B, n)).reshape(Kp1, B, -1)
    ds = (states[1:] - states[:-1]) / b[None, :, None]
    dth = (G[1:] - G[:-1]) / b[None, :, None]
    return EPUpdates(b, ds, dth, states, G)


def ep_one_sided(model: EquilibriumRNN, start: torch.Tensor, betas, K: int) -> EPUpdates:
    """One-sided EP updates (error O(beta)) over the first K nudged steps from `start`."""
    return ep_updates(model, nudged_phase(model, start, betas, K), betas)


def ep_symmetric(model: EquilibriumRNN, start: torch.Tensor, betas, K: int) -> EPUpdates:
    """Symmetric EP updates (Delta(beta) + Delta(-beta))/2 (odd powers of beta cancel: O(beta^2))."""
    b = _betas(model, betas)
    both = ep_one_sided(model, start, torch.cat([b, -b]), K)
    B = b.numel()
    return EPUpdates(b, (both.ds[:, :B] + both.ds[:, B:]) / 2, (both.dtheta[:, :B] + both.dtheta[:, B:]) / 2,
                     sides=both)


# --------------------------------------------------------------------------- #
# BPTT
# --------------------------------------------------------------------------- #
@dataclass
class BPTTGradients:
    """states (K+1, n) = s_{T-K}..s_T; grad_s (K+1, n), grad_s[t] = dL/ds_{T-t}; grad_theta (K, p),
    grad_theta[t] = dL/dtheta_{T-t} (the step producing s_{T-t})."""

    states: torch.Tensor
    grad_s: torch.Tensor
    grad_theta: torch.Tensor


def bptt(model: EquilibriumRNN, start: torch.Tensor, K: int) -> BPTTGradients:
    """Time-resolved BPTT gradients of L = l(s_T) over K steps unrolled from start = s_{T-K}, by
    autograd with one copy of theta per step (its gradient is that step's contribution)."""
    _check_state(model, start)
    if K < 1:
        raise ValueError(f"bptt: K must be >= 1, got {K}")
    copies = [tuple(p.detach().clone().requires_grad_(True) for p in model.theta()) for _ in range(K)]
    with torch.enable_grad():
        s = start.detach().clone().requires_grad_(True)
        states = [s]
        for k in range(K):
            states.append(transition(model, states[-1], copies[k]))
        L = loss(model, states[-1])
        leaves = [p for c in copies for p in c]
        grads = torch.autograd.grad(L, states + leaves)
    gs = grads[: K + 1]
    gth = grads[K + 1:]
    grad_s = torch.stack([gs[K - t] for t in range(K + 1)])
    per_step = [flat(tuple(gth[3 * k: 3 * k + 3])) for k in range(K)]
    grad_theta = torch.stack([per_step[K - 1 - t] for t in range(K)])
    return BPTTGradients(torch.stack([x.detach() for x in states]), grad_s.detach(), grad_theta.detach())
