"""Preconditioner classes of the Richardson decoder: the update maps Delta(z, H, d).

Linear classes (free P, diagonal P, Flexformer kernel attention P_theta) have one
global matrix P and Delta = P r with r = d - H z.  The softmax update map is genuinely
nonlinear in r; its exact linear object is the Jacobian dDelta/dr at a point
(seed 002 sec 8), which `FrozenLinear` can wrap to run the decoder in Jacobian form.

Every class is built as Cls(K, *, device, dtype, seed, **hparams); initial values are
drawn in float64 on the CPU from `seed`, then cast, so all backends start identically.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from . import richardson
from .dtypes import as_device, as_dtype
from .seeding import cpu_generator, derive_seed


class Preconditioner(nn.Module):
    """Common interface: update(z, H, d) -> Delta and frozen_matrix(...) -> P."""

    name: ClassVar[str] = ""
    is_linear: ClassVar[bool] = True

    def __init__(self, K: int) -> None:
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        self.K = int(K)

    def hparams(self) -> dict[str, Any]:
        """Constructor keyword arguments beyond K/device/dtype/seed (saved in checkpoints)."""
        return {}

    def matrix(self) -> torch.Tensor:
        """The differentiable global P (K,K) of a linear class (for gradients in theta)."""
        raise NotImplementedError(f"{type(self).__name__} has no global matrix")

    def update(self, z: torch.Tensor, H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Delta = P (d - H z), so that x_{l+1} = x_l + Delta."""
        return richardson.apply(self.matrix(), richardson.residual(z, H, d))

    def frozen_matrix(self, z: torch.Tensor | None = None, H: torch.Tensor | None = None,
                      d: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen (detached) P of the update; arguments are ignored for linear classes."""
        return self.matrix().detach()


def _draw(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _param(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(t.to(device=device, dtype=dtype))


class FreeLinear(Preconditioner):
    """P a free (K,K) parameter; init step * I plus a small seeded perturbation."""

    name = "free_linear"

    def __init__(self, K: int, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0,
                 step: float = 0.5, noise: float = 0.05) -> None:
        super().__init__(K)
        dev, dt = as_device(device), as_dtype(dtype)
        gen = cpu_generator(derive_seed(self.name, seed))
        self.step, self.noise = float(step), float(noise)
        P0 = self.step * torch.eye(K, dtype=torch.float64) + self.noise * _draw(gen, K, K) / math.sqrt(K)
        self.P = _param(P0, dev, dt)

    def hparams(self) -> dict[str, Any]:
        return {"step": self.step, "noise": self.noise}

    def matrix(self) -> torch.Tensor:
        return self.P


class Diagonal(Preconditioner):
    """P = diag(p): the Jacobi-like class; init p = step * (1 + noise * g)."""

    name = "diagonal"

    def __init__(self, K: int, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0,
                 step: float = 0.5, noise: float = 0.1) -> None:
        super().__init__(K)
        dev, dt = as_device(device), as_dtype(dtype)
        gen = cpu_generator(derive_seed(self.name, seed))
        self.step, self.noise = float(step), float(noise)
        self.p = _param(self.step * (1.0 + self.noise * _draw(gen, K)), dev, dt)

    def hparams(self) -> dict[str, Any]:
        return {"step": self.step, "noise": self.noise}

    def matrix(self) -> torch.Tensor:
        return torch.diag(self.p)


class Flexformer(Preconditioner):
    """Kernel attention over the K coordinate tokens (seed 000 eq 18).

    q_i = W_Q E_i, k_j = W_K E_j (E learned (K,m) token embeddings),
    A(i,j) = k(q_i,k_j) / sum_a k(q_i,k_a) (normalised over the key axis j),
    P_theta = D_a A D_v + D_s.  kernel "exp": exp(q.k / sqrt(m)) (softmax attention
    with input-independent tokens, so P_theta is still one global matrix);
    kernel "rbf": exp(-||q - k||^2 / (2 m)).  Init a ~ 0.1, v ~ 1, s ~ 0.5: a stable
    small step dominated by the diagonal.
    """

    name = "flexformer"
    KERNELS = ("exp", "rbf")

    def __init__(self, K: int, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0, m: int = 16,
                 kernel: str = "exp") -> None:
        super().__init__(K)
        if kernel not in self.KERNELS:
            raise ValueError(f"kernel must be one of {self.KERNELS}, got {kernel!r}")
        dev, dt = as_device(device), as_dtype(dtype)
        gen = cpu_generator(derive_seed(self.name, seed))
        self.m, self.kernel = int(m), kernel
        self.E = _param(_draw(gen, K, m), dev, dt)
        self.W_Q = _param(_draw(gen, m, m) / math.sqrt(m), dev, dt)
        self.W_K = _param(_draw(gen, m, m) / math.sqrt(m), dev, dt)
        self.a = _param(0.1 * (1.0 + 0.1 * _draw(gen, K)), dev, dt)
        self.v = _param(1.0 + 0.1 * _draw(gen, K), dev, dt)
        self.s = _param(0.5 * (1.0 + 0.1 * _draw(gen, K)), dev, dt)

    def hparams(self) -> dict[str, Any]:
        return {"m": self.m, "kernel": self.kernel}

    def queries_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """q (K,m) and k (K,m): rows q_i = W_Q E_i, k_j = W_K E_j."""
        return self.E @ self.W_Q.T, self.E @ self.W_K.T

    def attention_matrix(self) -> torch.Tensor:
        """A_theta (K,K), each row a probability vector over the keys j."""
        q, k = self.queries_keys()
        if self.kernel == "exp":
            logits = q @ k.T / math.sqrt(self.m)
        else:
            # explicit differences: cdist's matmul shortcut loses accuracy for close q, k
            logits = -(q[:, None, :] - k[None, :, :]).pow(2).sum(-1) / (2 * self.m)
        # softmax = exp(logits) / sum_j exp(logits) with the max subtracted (no overflow).
        return torch.softmax(logits, dim=-1)

    def matrix(self) -> torch.Tensor:
        return self.a[:, None] * self.attention_matrix() * self.v[None, :] + torch.diag(self.s)


class SoftmaxUpdate(Preconditioner):
    """Nonlinear softmax-attention update map (seed 002 sec 8).

    Tokens tau_i = [r_i, z_i, H_ii, E_i] (E learned (K, embed)); q_i = W_Q tau_i,
    k_j = W_K tau_j, Delta_i = sum_j softmax_j(q_i . k_j / sqrt(m)) v_j r_j + s_i r_i.
    The attention weights depend on r, so Delta is nonlinear in r: its exact linear
    object is the Jacobian J = dDelta/dr at (z, H, d), returned by frozen_matrix.
    """

    name = "softmax"
    is_linear = False

    def __init__(self, K: int, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, seed: int = 0, m: int = 16,
                 embed: int = 8) -> None:
        super().__init__(K)
        dev, dt = as_device(device), as_dtype(dtype)
        gen = cpu_generator(derive_seed(self.name, seed))
        self.m, self.embed = int(m), int(embed)
        width = 3 + self.embed
        self.E = _param(_draw(gen, K, self.embed), dev, dt)
        self.W_Q = _param(_draw(gen, self.m, width) / math.sqrt(width), dev, dt)
        self.W_K = _param(_draw(gen, self.m, width) / math.sqrt(width), dev, dt)
        self.v = _param(0.1 * (1.0 + 0.1 * _draw(gen, K)), dev, dt)
        self.s = _param(0.5 * (1.0 + 0.1 * _draw(gen, K)), dev, dt)

    def hparams(self) -> dict[str, Any]:
        return {"m": self.m, "embed": self.embed}

    def tokens(self, r: torch.Tensor, z: torch.Tensor, h_diag: torch.Tensor) -> torch.Tensor:
        """tau (..., K, 3 + embed) from r, z, diag(H) of shape (..., K)."""
        E = self.E.expand(*r.shape[:-1], self.K, self.embed)
        return torch.cat([r.unsqueeze(-1), z.unsqueeze(-1), h_diag.unsqueeze(-1), E], dim=-1)

    def attention(self, r: torch.Tensor, z: torch.Tensor, h_diag: torch.Tensor) -> torch.Tensor:
        """Attention weights (..., K, K), rows summing to 1 over the keys j."""
        tau = self.tokens(r, z, h_diag)
        q, k = tau @ self.W_Q.T, tau @ self.W_K.T
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.m), dim=-1)

    def delta(self, r: torch.Tensor, z: torch.Tensor, h_diag: torch.Tensor) -> torch.Tensor:
        """Delta as a function of the residual r (with z and diag(H) held fixed)."""
        A = self.attention(r, z, h_diag)
        return (A @ (self.v * r).unsqueeze(-1)).squeeze(-1) + self.s * r

    def update(self, z: torch.Tensor, H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        r = richardson.residual(z, H, d)
        return self.delta(r, z, torch.diagonal(H, dim1=-2, dim2=-1))

    def frozen_matrix(self, z: torch.Tensor | None = None, H: torch.Tensor | None = None,
                      d: torch.Tensor | None = None) -> torch.Tensor:
        """J(z, H, d) = dDelta/dr at r = d - H z: (B,K,K) for batched inputs, (K,K) for one.

        Computed with torch.func (jacrev, vmapped over the batch); detached.
        z defaults to zeros (the decoder's x_0).
        """
        if H is None or d is None:
            raise ValueError("the softmax update has no global matrix: pass H and d (and z)")
        if z is None:
            z = torch.zeros_like(d)
        r = richardson.residual(z, H, d)
        h_diag = torch.diagonal(H, dim1=-2, dim2=-1)
        jac = torch.func.jacrev(self.delta, argnums=0)
        if r.dim() == 1:
            return jac(r, z, h_diag).detach()
        return torch.func.vmap(jac)(r, z, h_diag).detach()


class FrozenLinear(Preconditioner):
    """A given matrix P, global (K,K) or per-task (B,K,K), used as a linear preconditioner.

    Why: running the decoder with the softmax Jacobian (or any fixed P) turns the
    Richardson identity e_L = (I - P H)^L e_0 into an exact statement about that P.
    """

    name = "frozen_linear"

    def __init__(self, P: torch.Tensor) -> None:
        if P.dim() not in (2, 3) or P.shape[-1] != P.shape[-2]:
            raise ValueError(f"P must be (K,K) or (B,K,K), got shape {tuple(P.shape)}")
        super().__init__(P.shape[-1])
        self.register_buffer("P", P.detach().clone())

    def matrix(self) -> torch.Tensor:
        return self.P


PRECONDITIONERS: dict[str, type[Preconditioner]] = {
    "free_linear": FreeLinear,
    "diagonal": Diagonal,
    "flexformer": Flexformer,
    "softmax": SoftmaxUpdate,
}


def build_preconditioner(name: str, K: int, *, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float64, seed: int = 0,
                         **hparams: Any) -> Preconditioner:
    """Construct a registered class by name (the trainer's and the checkpoint loader's entry)."""
    try:
        cls = PRECONDITIONERS[name]
    except KeyError:
        raise ValueError(f"unknown preconditioner {name!r}; choose from {sorted(PRECONDITIONERS)}") from None
    return cls(K, device=device, dtype=dtype, seed=seed, **hparams)
