"""Equilibrium blocks of seed 003: forces F(z; x) whose fixed points are the block's output.

State z and input injection x have shape (B, T, d): B samples, T tokens of width d.  The
dynamics is dz/dt = F(z; x, theta); a free equilibrium is F(z*) = 0.  Every block evaluates
its force with holomorphic operations only (softmax through exp, tanh-GELU, products z * z
rather than |z|^2), so the same code runs on complex states -- what holomorphic EP needs.

* `EnergyBlock` (conservative): energy attention (Hoover et al. 2023: one scalar couples the
  query and key roles; no free value/output map) plus a Hopfield memory, with the confinement
  kappa/2 ||z||^2 - x.z that fixes the gauge (the bare attention energy is invariant under
  per-token shifts along the null space of W_Q^T W_K, which makes its Hessian singular) and
  keeps the energy bounded below.  F = -dE/dz, written out analytically.
* `SkewedEnergyBlock`: the energy block plus a rotational drift alpha z Omega that dials the
  Jacobian's asymmetry (alpha = 0 is conservative).
* `DampedAttention` (non-conservative): real softmax attention with independent W_Q, W_K, W_V,
  W_O, damped as s (attn(z) - c z) (003 TL;DR 2), plus the leak and injection lam (x - z).
* `ThickBlock` (non-conservative, 003 2026-06-09 "thick"): pre-LN attention + a GELU FFN as
  parallel residual branches, F = (x - z) - c z + attn(LN1 z) + ffn(LN2 z), with qk-norm and
  small-init ("resinit") residual branches as options.

Each block has a readout cost C(z, y) per sample (squared error of a trainable linear readout
of the token mean), its exact gradient dC/dz, and `param_groups()` naming the parameter
groups whose gradient cosines the seed reports.  Parameters are drawn in float64 on the CPU
from a seed (models.seeding), then cast, so every backend starts identically.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ..dtypes import as_device, as_dtype
from ..seeding import cpu_generator, derive_seed


# --------------------------------------------------------------------------- #
# holomorphic building blocks
# --------------------------------------------------------------------------- #
def softmax(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis by exp and a sum, so it is holomorphic in complex logits.

    The shift by the (detached) row maximum of the real part leaves the value unchanged and
    keeps exp finite; masked entries (mask False) get weight exactly 0.
    """
    shift = logits.real.detach().amax(-1, keepdim=True) if logits.is_complex() else logits.detach().amax(-1, keepdim=True)
    e = torch.exp(logits - shift)
    if mask is not None:
        e = e * mask
    return e / e.sum(-1, keepdim=True)


def logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """log sum exp over the last axis, holomorphic (the principal log near the real axis)."""
    shift = logits.real.detach().amax(-1, keepdim=True) if logits.is_complex() else logits.detach().amax(-1, keepdim=True)
    return torch.log(torch.exp(logits - shift).sum(-1)) + shift.squeeze(-1)


def gelu(u: torch.Tensor) -> torch.Tensor:
    """The tanh form of GELU everywhere (free phase, nudged phases, readout): holomorphic, and one
    formula for all phases (003 2026-06-18 found erf in one phase and tanh in the other)."""
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u * u * u)))


def layer_norm(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-token normalisation without affine parameters; holomorphic (sqrt of the variance)."""
    mu = z.mean(-1, keepdim=True)
    c = z - mu
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps)


def log_cosh(u: torch.Tensor) -> torch.Tensor:
    """log cosh u: |u| + log1p(e^-2|u|) - log 2 for real u (no overflow), the principal
    log(cosh u) for complex u (holomorphic near the real axis)."""
    if u.is_complex():
        return torch.log(torch.cosh(u))
    a = u.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


def rms_norm(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return z / torch.sqrt((z * z).mean(-1, keepdim=True) + eps)


def like(W: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A real parameter in the state's dtype (complex states meet real weights in every product)."""
    return W.to(z.dtype) if z.is_complex() and not W.is_complex() else W


def causal_mask(T: int, device: torch.device) -> torch.Tensor:
    return torch.tril(torch.ones(T, T, dtype=torch.bool, device=device))


def _draw(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


class EquilibriumBlock(nn.Module):
    """Common interface: force(z, x), cost(z, y), cost_grad_z(z, y), param_groups()."""

    conservative: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def __init__(self, T: int, d: int, d_out: int, *, device, dtype, seed: int) -> None:
        super().__init__()
        if T < 1 or d < 1 or d_out < 1:
            raise ValueError(f"T, d and d_out must be >= 1, got T={T}, d={d}, d_out={d_out}")
        self.T, self.d, self.d_out = int(T), int(d), int(d_out)
        self._device, self._dtype = as_device(device), as_dtype(dtype)
        self._gen = cpu_generator(derive_seed(self.name, T, d, d_out, seed))
        self.W_out = self._param(_draw(self._gen, d, d_out, scale=1.0 / math.sqrt(d)))

    def _param(self, t: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(t.to(device=self._device, dtype=self._dtype))

    def check_state(self, z: torch.Tensor) -> None:
        if z.dim() != 3 or z.shape[1:] != (self.T, self.d):
            raise ValueError(f"{type(self).__name__}: state must be (B, {self.T}, {self.d}), got {tuple(z.shape)}")

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- readout ---------------------------------------------------------------------------
    def readout(self, z: torch.Tensor) -> torch.Tensor:
        """o = mean_t(z_t) W_out, shape (B, d_out)."""
        return z.mean(1) @ like(self.W_out, z)

    def cost(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """C(z, y) = 1/2 ||o - y||^2 per sample (bilinear, so holomorphic in complex z)."""
        r = self.readout(z) - y
        return 0.5 * (r * r).sum(-1)

    def cost_grad_z(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dC/dz = (o - y) W_out^T / T for every token (exact; C is quadratic in z)."""
        r = self.readout(z) - y
        return (r @ like(self.W_out, z).mT).unsqueeze(1).expand(-1, self.T, -1) / self.T

    def param_groups(self) -> dict[str, list[str]]:
        """Parameter names per group (seed 003's Q, K, V, O, FFN, LN, embeddings, ...)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- #
# conservative: energy attention + Hopfield memory
# --------------------------------------------------------------------------- #
class EnergyBlock(EquilibriumBlock):
    """E(z) = kappa/2 ||z||^2 - x.z - (1/b) sum_{h,i} log sum_j exp(b q_hi.k_hj) - lam sum_{i,mu} log cosh(xi_mu.z_i),

    q_hi = z_i W_Q^h, k_hj = z_j W_K^h (b the inverse temperature).  Conservative by
    construction: F = -dE/dz is the gradient of one scalar, its Jacobian -d2E/dz2 is symmetric.
    """

    conservative = True
    name = "energy"

    def __init__(self, T: int, d: int, d_out: int = 2, *, heads: int = 1, d_k: int | None = None,
                 memories: int = 4, beta_att: float = 1.0, kappa: float = 1.0, lam_hop: float = 0.5,
                 qk_scale: float = 0.3, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__(T, d, d_out, device=device, dtype=dtype, seed=seed)
        d_k = d if d_k is None else int(d_k)
        if heads < 1 or d_k < 1 or memories < 0:
            raise ValueError(f"heads, d_k must be >= 1 and memories >= 0, got {heads}, {d_k}, {memories}")
        if not (kappa > 0 and beta_att > 0 and lam_hop >= 0):
            raise ValueError("need kappa > 0, beta_att > 0, lam_hop >= 0")
        self.heads, self.d_k, self.memories = int(heads), d_k, int(memories)
        self.beta_att, self.kappa, self.lam_hop = float(beta_att), float(kappa), float(lam_hop)
        g = self._gen
        self.W_Q = self._param(_draw(g, heads, d, d_k, scale=qk_scale / math.sqrt(d)))
        self.W_K = self._param(_draw(g, heads, d, d_k, scale=qk_scale / math.sqrt(d)))
        self.Xi = self._param(_draw(g, memories, d, scale=1.0 / math.sqrt(d)))

    def param_groups(self) -> dict[str, list[str]]:
        return {"attention_QK": ["W_Q", "W_K"], "memory": ["Xi"], "readout": ["W_out"]}

    def _qk(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, h, T, d_k)
        return (torch.einsum("btd,hdk->bhtk", z, like(self.W_Q, z)),
                torch.einsum("btd,hdk->bhtk", z, like(self.W_K, z)))

    def energy(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """E per sample, shape (B,)."""
        self.check_state(z)
        q, k = self._qk(z)
        logits = self.beta_att * q @ k.mT  # (B, h, T, T)
        e_att = -logsumexp(logits).sum((1, 2)) / self.beta_att
        u = z @ like(self.Xi, z).mT  # (B, T, M)
        e_hop = -self.lam_hop * log_cosh(u).sum((1, 2))
        e_conf = 0.5 * self.kappa * (z * z).sum((1, 2)) - (x * z).sum((1, 2))
        return e_conf + e_att + e_hop

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """F = -dE/dz: with A = softmax_j(b q_i.k_j), dE_att/dq_i = -sum_j A_ij k_j and
        dE_att/dk_j = -sum_i A_ij q_i, pulled back through q = z W_Q, k = z W_K."""
        self.check_state(z)
        q, k = self._qk(z)
        A = softmax(self.beta_att * q @ k.mT)  # (B, h, T, T)
        dq = A @ k  # -dE_att/dq
        dk = A.mT @ q  # -dE_att/dk
        att = (torch.einsum("bhtk,hdk->btd", dq, like(self.W_Q, z))
               + torch.einsum("bhtk,hdk->btd", dk, like(self.W_K, z)))
        Xi = like(self.Xi, z)
        hop = self.lam_hop * torch.tanh(z @ Xi.mT) @ Xi
        return x - self.kappa * z + att + hop


class SkewedEnergyBlock(EnergyBlock):
    """The energy block plus a rotational drift: F = -dE/dz + alpha z Omega (Omega a fixed seeded
    antisymmetric d x d matrix of unit spectral norm, applied per token).

    The drift adds exactly alpha (I_T (x) Omega^T) to the Jacobian: its antisymmetric part is
    alpha times a known matrix and its symmetric part is untouched, so alpha dials the asymmetry
    of the dynamics at a fixed energy landscape (alpha = 0: conservative again)."""

    conservative = False
    name = "skewed_energy"

    def __init__(self, T: int, d: int, d_out: int = 2, *, alpha: float = 0.5, **kw) -> None:
        super().__init__(T, d, d_out, **kw)
        self.alpha = float(alpha)
        g = cpu_generator(derive_seed("skew", T, d, kw.get("seed", 0)))
        S = torch.randn(d, d, generator=g, dtype=torch.float64)
        Om = S - S.T
        nrm = float(torch.linalg.matrix_norm(Om, ord=2))
        self.register_buffer("Omega", (Om / nrm if nrm > 0 else Om).to(self._device, self._dtype))

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return super().force(z, x) + self.alpha * (z @ like(self.Omega, z))


# --------------------------------------------------------------------------- #
# non-conservative: damped real softmax attention
# --------------------------------------------------------------------------- #
class DampedAttention(EquilibriumBlock):
    """F(z) = lam (x - z) + s (attn(z) - c z), attn(z)_i = sum_h sum_j softmax_j(q_hi.k_hj / sqrt(d_k)) v_hj W_O^h,

    q = z W_Q, k = z W_K, v = z W_V with independent weights (no energy: the Jacobian is not
    symmetric).  s is the attention strength, c the damping (003 TL;DR 2); lam = 0 removes the leak.
    """

    name = "damped_attention"

    def __init__(self, T: int, d: int, d_out: int = 2, *, heads: int = 1, d_k: int | None = None,
                 s: float = 1.0, c: float = 1.0, lam: float = 1.0, causal: bool = False,
                 qk_scale: float = 1.0, v_scale: float = 1.0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__(T, d, d_out, device=device, dtype=dtype, seed=seed)
        d_k = d if d_k is None else int(d_k)
        if heads < 1 or d_k < 1:
            raise ValueError(f"heads and d_k must be >= 1, got {heads}, {d_k}")
        if not (s >= 0 and c >= 0 and lam >= 0):
            raise ValueError(f"need s, c, lam >= 0, got s={s}, c={c}, lam={lam}")
        self.heads, self.d_k, self.s, self.c, self.lam = int(heads), d_k, float(s), float(c), float(lam)
        self.causal = bool(causal)
        g = self._gen
        self.W_Q = self._param(_draw(g, heads, d, d_k, scale=qk_scale / math.sqrt(d)))
        self.W_K = self._param(_draw(g, heads, d, d_k, scale=qk_scale / math.sqrt(d)))
        self.W_V = self._param(_draw(g, heads, d, d_k, scale=v_scale / math.sqrt(d)))
        self.W_O = self._param(_draw(g, heads, d_k, d, scale=1.0 / math.sqrt(d_k * heads)))

    def param_groups(self) -> dict[str, list[str]]:
        return {"Q": ["W_Q"], "K": ["W_K"], "V": ["W_V"], "O": ["W_O"], "readout": ["W_out"]}

    def attention(self, z: torch.Tensor) -> torch.Tensor:
        q = torch.einsum("btd,hdk->bhtk", z, like(self.W_Q, z))
        k = torch.einsum("btd,hdk->bhtk", z, like(self.W_K, z))
        v = torch.einsum("btd,hdk->bhtk", z, like(self.W_V, z))
        mask = causal_mask(self.T, z.device) if self.causal else None
        A = softmax(q @ k.mT / math.sqrt(self.d_k), mask)
        return torch.einsum("bhtk,hkd->btd", A @ v, like(self.W_O, z))

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.check_state(z)
        return self.lam * (x - z) + self.s * (self.attention(z) - self.c * z)


# --------------------------------------------------------------------------- #
# non-conservative: the "thick" pre-LN attention + FFN block
# --------------------------------------------------------------------------- #
class ThickBlock(EquilibriumBlock):
    """F(z) = (x - z) - c z + attn(LN1 z) + ffn(LN2 z), ffn(u) = gelu(u W_fc + b_fc) W_pj.

    Options: qk-norm (RMS-normalised queries and keys: bounded logits, 003 2026-06-14) and
    resinit (W_O and W_pj scaled by `resinit`, so the block is ~ -(z - x) - c z at init).
    """

    name = "thick"

    def __init__(self, T: int, d: int, d_out: int = 2, *, heads: int = 1, mlp: int = 4, c: float = 1.0,
                 causal: bool = True, qk_norm: bool = False, resinit: float = 1.0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__(T, d, d_out, device=device, dtype=dtype, seed=seed)
        if d % heads:
            raise ValueError(f"d = {d} must be a multiple of heads = {heads}")
        if c < 0 or resinit < 0 or mlp < 1:
            raise ValueError(f"need c >= 0, resinit >= 0, mlp >= 1, got {c}, {resinit}, {mlp}")
        self.heads, self.d_k, self.c = int(heads), d // heads, float(c)
        self.causal, self.qk_norm, self.resinit = bool(causal), bool(qk_norm), float(resinit)
        g = self._gen
        self.W_Q = self._param(_draw(g, heads, d, self.d_k, scale=1.0 / math.sqrt(d)))
        self.W_K = self._param(_draw(g, heads, d, self.d_k, scale=1.0 / math.sqrt(d)))
        self.W_V = self._param(_draw(g, heads, d, self.d_k, scale=1.0 / math.sqrt(d)))
        self.W_O = self._param(_draw(g, heads, self.d_k, d, scale=resinit / math.sqrt(d)))
        self.W_fc = self._param(_draw(g, d, mlp * d, scale=1.0 / math.sqrt(d)))
        self.b_fc = self._param(torch.zeros(mlp * d, dtype=torch.float64))
        self.W_pj = self._param(_draw(g, mlp * d, d, scale=resinit / math.sqrt(mlp * d)))

    def param_groups(self) -> dict[str, list[str]]:
        return {"Q": ["W_Q"], "K": ["W_K"], "V": ["W_V"], "O": ["W_O"], "FFN_fc": ["W_fc", "b_fc"],
                "FFN_proj": ["W_pj"], "readout": ["W_out"]}

    def attention(self, u: torch.Tensor) -> torch.Tensor:
        q = torch.einsum("btd,hdk->bhtk", u, like(self.W_Q, u))
        k = torch.einsum("btd,hdk->bhtk", u, like(self.W_K, u))
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        v = torch.einsum("btd,hdk->bhtk", u, like(self.W_V, u))
        mask = causal_mask(self.T, u.device) if self.causal else None
        A = softmax(q @ k.mT / math.sqrt(self.d_k), mask)
        return torch.einsum("bhtk,hkd->btd", A @ v, like(self.W_O, u))

    def ffn(self, u: torch.Tensor) -> torch.Tensor:
        return gelu(u @ like(self.W_fc, u) + like(self.b_fc, u)) @ like(self.W_pj, u)

    def force(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.check_state(z)
        return (x - z) - self.c * z + self.attention(layer_norm(z)) + self.ffn(layer_norm(z))


BLOCKS: dict[str, type[EquilibriumBlock]] = {
    c.name: c for c in (EnergyBlock, SkewedEnergyBlock, DampedAttention, ThickBlock)}
