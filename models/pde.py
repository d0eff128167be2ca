"""PDE encoder (000 sec 5, eqs 10-12; 001 sec 5.4; 002 sec 1.1): a Galerkin operator family
and its ridge prompt encoder.

Problem: -(a(x) u')' + c(x) u = f on [0, 1], u(0) = u(1) = 0, discretized by piecewise-linear
finite elements on n interior nodes x_j = j h, h = 1/(n+1) (stiffness with a evaluated at the
element midpoints; lumped mass with c at the nodes).  The coefficients are affine in z (K = 4):

    a(x) = 1 + (z_1 cos(pi x) + z_2 cos(2 pi x)) / 4,
    c(x) = C0 (1 + (z_3 sin(pi x) + z_4 cos(3 pi x)) / 4),   C0 = 50,

so A(z) = A_0 + sum_k z_k A_k (eq 10) with A_0 = stiffness(1) + C0 mass(1) and A_k the
stiffness / mass matrices of the k-th coefficient field; for every z in [-1, 1]^4 both a and c
are >= 1/2 (times C0), so A(z) is SPD.

Prompt (002 sec 1.1): f_i ~ GP(0, k_f) on the nodes, k_f squared-exponential (length 0.2),
load vector h f(x_j); u_i = A(z)^{-1} f_i by Cholesky.  Test functions v_r (r = 1..q): the
nodal interpolants of sqrt(2) sin(r pi x).  Inner product <w, v> = v^T w (duality pairing of
a load vector w with the nodal coefficients v).

Encoder (eqs 11-12): G_{(i,r),k} = <A_k u_i, v_r>, b_{(i,r)} = <f_i - A_0 u_i, v_r>, row index
i*q + r; z_enc = (G^T G + lambda_z I)^{-1} G^T b by Cholesky.

All arithmetic in the requested dtype on the requested device; random numbers are drawn in
float64 on the CPU from explicit seeds, then cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.seeding import cpu_generator, derive_seed

K = 4
N_NODES = 24
C0 = 50.0
GP_LENGTH = 0.2
PROMPT_SIZES = (4, 16)
LAMBDA_Z = 1e-4  # the encoder's ridge parameter for the measured metrics (golden/pde.json)


# --------------------------------------------------------------------------- #
# operator family (float64 on the CPU, then cast)
# --------------------------------------------------------------------------- #
def nodes(n: int = N_NODES) -> torch.Tensor:
    h = 1.0 / (n + 1)
    return torch.arange(1, n + 1, dtype=torch.float64) * h


def _stiffness(a_mid: torch.Tensor, n: int) -> torch.Tensor:
    """P1 stiffness of -(a u')' with a piecewise constant a (values at the n+1 element midpoints)."""
    h = 1.0 / (n + 1)
    S = torch.zeros(n, n, dtype=torch.float64)
    w = a_mid / h
    # element e = 0..n joins nodes e-1 and e (interior indices; -1 and n are the boundary)
    for e in range(n + 1):
        for i in (e - 1, e):
            if 0 <= i < n:
                S[i, i] += w[e]
        if 1 <= e < n:
            S[e - 1, e] -= w[e]
            S[e, e - 1] -= w[e]
    return S


def _lumped_mass(c_nodes: torch.Tensor, n: int) -> torch.Tensor:
    h = 1.0 / (n + 1)
    return torch.diag(h * c_nodes)


def operator_family(n: int = N_NODES) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_0, A_k stacked as (K, n, n)) in float64 on the CPU."""
    h = 1.0 / (n + 1)
    xm = (torch.arange(n + 1, dtype=torch.float64) + 0.5) * h  # element midpoints
    xn = nodes(n)
    one_m, one_n = torch.ones(n + 1, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    A0 = _stiffness(one_m, n) + C0 * _lumped_mass(one_n, n)
    Ak = torch.stack([
        _stiffness(0.25 * torch.cos(math.pi * xm), n),
        _stiffness(0.25 * torch.cos(2 * math.pi * xm), n),
        C0 * _lumped_mass(0.25 * torch.sin(math.pi * xn), n),
        C0 * _lumped_mass(0.25 * torch.cos(3 * math.pi * xn), n),
    ])
    return A0, Ak


def test_functions(q: int, n: int = N_NODES) -> torch.Tensor:
    """V, shape (n, q): column r-1 is sqrt(2) sin(r pi x) at the nodes."""
    if not 1 <= q <= n:
        raise ValueError(f"q must be in [1, {n}], got {q}")
    r = torch.arange(1, q + 1, dtype=torch.float64)
    return math.sqrt(2.0) * torch.sin(math.pi * nodes(n)[:, None] * r[None, :])


def gp_loads(M: int, seed: int, n: int = N_NODES) -> torch.Tensor:
    """F, shape (n, M): load vectors h f_i(x_j) of M draws f_i ~ GP(0, SE(length 0.2))."""
    x = nodes(n)
    C = torch.exp(-0.5 * ((x[:, None] - x[None, :]) / GP_LENGTH) ** 2)
    evals, evecs = torch.linalg.eigh(C)
    root = evecs * evals.clamp_min(0.0).sqrt()
    xi = torch.randn(n, M, generator=cpu_generator(derive_seed("pde.gp_loads", seed, n, M)), dtype=torch.float64)
    return (root @ xi) / (n + 1)


def sample_z(seed: int, count: int = 1) -> torch.Tensor:
    """Latents z ~ U[-1, 1]^K in float64 (shape (count, K)); A(z) is SPD on this box."""
    g = cpu_generator(derive_seed("pde.z", seed, count))
    return 2.0 * torch.rand(count, K, generator=g, dtype=torch.float64) - 1.0


# --------------------------------------------------------------------------- #
# the SUT
# --------------------------------------------------------------------------- #
@dataclass
class Prompt:
    """One prompt and its encoder inputs, all as the SUT holds them (its dtype and device)."""

    A0: torch.Tensor  # (n, n)
    Ak: torch.Tensor  # (K, n, n)
    z: torch.Tensor  # (K,)
    V: torch.Tensor  # (n, q)
    F: torch.Tensor  # (n, M)
    U: torch.Tensor  # (n, M), U = A(z)^{-1} F
    G: torch.Tensor  # (M q, K)
    b: torch.Tensor  # (M q,)


class GalerkinFamily(torch.nn.Module):
    """A(z) = A_0 + sum_k z_k A_k on the P1 finite-element space of n interior nodes."""

    def __init__(self, n: int = N_NODES, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        self.n = int(n)
        self.device_ = torch.device(device)
        self.dtype_ = dtype
        A0, Ak = operator_family(self.n)
        self.register_buffer("A0", A0.to(self.device_, dtype))
        self.register_buffer("Ak", Ak.to(self.device_, dtype))

    def _t(self, x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float64).to(self.device_, self.dtype_)

    def operator(self, z: torch.Tensor) -> torch.Tensor:
        """A(z), accumulated term by term: A_0 + z_1 A_1 + ... + z_K A_K."""
        A = self.A0.clone()
        for k in range(K):
            A = A + z[k] * self.Ak[k]
        return A

    @staticmethod
    def _chol(S: torch.Tensor) -> torch.Tensor:
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0:
            raise torch.linalg.LinAlgError(f"Cholesky failed at leading minor {int(info)}")
        return L

    def solve(self, z: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        """U = A(z)^{-1} F by Cholesky (eq 10)."""
        return torch.cholesky_solve(F, self._chol(self.operator(z)))

    def weak_form(self, U: torch.Tensor, F: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, b) of eq 11: G_{(i,r),k} = v_r^T (A_k u_i), b_{(i,r)} = v_r^T (f_i - A_0 u_i)."""
        AU = self.Ak @ U  # (K, n, M)
        Gk = V.T @ AU  # (K, q, M)
        G = Gk.permute(2, 1, 0).reshape(-1, K)  # row i*q + r
        B = V.T @ (F - self.A0 @ U)  # (q, M)
        b = B.T.reshape(-1)
        return G, b

    def prompt(self, z, M: int, q: int, seed: int) -> Prompt:
        z = self._t(z).reshape(K)
        F = self._t(gp_loads(M, seed, self.n))
        V = self._t(test_functions(q, self.n))
        U = self.solve(z, F)
        G, b = self.weak_form(U, F, V)
        return Prompt(self.A0, self.Ak, z, V, F, U, G, b)


def ridge_system(G: torch.Tensor, b: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(G^T G + lambda I, G^T b)."""
    S = G.T @ G + lam * torch.eye(G.shape[1], device=G.device, dtype=G.dtype)
    return S, G.T @ b


def encode(G: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """z_enc = (G^T G + lambda_z I)^{-1} G^T b (eq 12), by Cholesky."""
    S, d = ridge_system(G, b, lam)
    L = GalerkinFamily._chol(S)
    return torch.cholesky_solve(d[:, None], L)[:, 0]


def heldout_metrics(family: GalerkinFamily, lam: float = LAMBDA_Z, count: int = 64, M: int = 16,
                    q: int = 8, seed: int = 0) -> dict[str, float]:
    """Encoder metrics on a fixed held-out set of `count` prompts (z ~ U[-1,1]^4, noise free):
    z MSE = mean over prompts and coordinates of (z_enc - z)^2, and the mean over prompts of
    ||A(z_enc) - A(z)||_F / ||A(z)||_F."""
    zs = sample_z(derive_seed("pde.heldout", seed), count)
    sq, rel = 0.0, 0.0
    for t in range(count):
        p = family.prompt(zs[t], M, q, derive_seed("pde.heldout.prompt", seed, t))
        ze = encode(p.G, p.b, lam)
        sq += float(torch.sum((ze - p.z) ** 2)) / K
        A = family.operator(p.z)
        rel += float(torch.linalg.norm(family.operator(ze) - A) / torch.linalg.norm(A))
    return {"z_mse": sq / count, "A_rel_err": rel / count}
