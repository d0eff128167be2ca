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

Decoder tasks (000 eq 13; 001 sec 5.4, Table 5): `PDETaskConfig` / `PDEPrompts` encode a prompt
of M solution pairs into z_enc and pose the query solve A(z_enc) u = f* (f* a fresh GP load) to
the Richardson decoder as H = A(z_enc)/a, d = f*/a with a = 4(n+1) + C0/(n+1) (the Gershgorin
bound of A_0), so H has eigenvalues O(1); x* = A(z_enc)^-1 f* and the true solution
u* = A(z)^-1 f* differ by the encoder's error (the encoded-solve floor).

All arithmetic in the requested dtype on the requested device; random numbers are drawn in
float64 on the CPU from explicit seeds, then cast.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from models.eb import eb_upper
from models.seeding import cpu_generator, derive_seed
from models.tasks import Tasks, exact_solution

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


@functools.cache
def _load_root(n: int) -> torch.Tensor:
    """A square root R (R R^T = C) of the SE(length 0.2) covariance C of f at the n nodes."""
    x = nodes(n)
    C = torch.exp(-0.5 * ((x[:, None] - x[None, :]) / GP_LENGTH) ** 2)
    evals, evecs = torch.linalg.eigh(C)
    return evecs * evals.clamp_min(0.0).sqrt()


def gp_loads(M: int, seed: int, n: int = N_NODES) -> torch.Tensor:
    """F, shape (n, M): load vectors h f_i(x_j) of M draws f_i ~ GP(0, SE(length 0.2))."""
    xi = torch.randn(n, M, generator=cpu_generator(derive_seed("pde.gp_loads", seed, n, M)), dtype=torch.float64)
    return (_load_root(n) @ xi) / (n + 1)


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
        """A(z), accumulated term by term: A_0 + z_1 A_1 + ... + z_K A_K; z (..., K) gives (..., n, n)."""
        A = self.A0.clone()
        for k in range(K):
            A = A + z[..., k, None, None] * self.Ak[k]
        return A

    @staticmethod
    def _chol(S: torch.Tensor) -> torch.Tensor:
        L, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            raise torch.linalg.LinAlgError(f"Cholesky failed (leading minor {int(info.max())})")
        return L

    def solve(self, z: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        """U = A(z)^{-1} F by Cholesky (eq 10)."""
        return torch.cholesky_solve(F, self._chol(self.operator(z)))

    def weak_form(self, U: torch.Tensor, F: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, b) of eq 11: G_{(i,r),k} = v_r^T (A_k u_i), b_{(i,r)} = v_r^T (f_i - A_0 u_i).

        U, F (..., n, M) give G (..., M q, K) and b (..., M q), row i*q + r."""
        lead = U.shape[:-2]
        AU = self.Ak @ U.unsqueeze(-3)  # (..., K, n, M)
        Gk = V.mT @ AU  # (..., K, q, M)
        G = Gk.movedim(-3, -1).transpose(-3, -2).reshape(*lead, -1, K)  # (..., M, q, K) -> rows i*q + r
        B = V.mT @ (F - self.A0 @ U)  # (..., q, M)
        b = B.mT.reshape(*lead, -1)
        return G, b

    def prompt(self, z, M: int, q: int, seed: int) -> Prompt:
        z = self._t(z).reshape(K)
        F = self._t(gp_loads(M, seed, self.n))
        V = self._t(test_functions(q, self.n))
        U = self.solve(z, F)
        G, b = self.weak_form(U, F, V)
        return Prompt(self.A0, self.Ak, z, V, F, U, G, b)


def ridge_system(G: torch.Tensor, b: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(G^T G + lambda I, G^T b); batched over leading axes."""
    S = G.mT @ G + lam * torch.eye(G.shape[-1], device=G.device, dtype=G.dtype)
    return S, (G.mT @ b.unsqueeze(-1)).squeeze(-1)


def encode(G: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """z_enc = (G^T G + lambda_z I)^{-1} G^T b (eq 12), by Cholesky; batched over leading axes."""
    S, d = ridge_system(G, b, lam)
    L = GalerkinFamily._chol(S)
    return torch.cholesky_solve(d.unsqueeze(-1), L).squeeze(-1)


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


# --------------------------------------------------------------------------- #
# decoder tasks: the query solve after the prompt encoder (000 eq 13; 001 Table 5)
# --------------------------------------------------------------------------- #
def operator_scale(n: int = N_NODES) -> float:
    """a = 4/h + C0 h: the Gershgorin bound of A_0 (its largest eigenvalue is just below)."""
    return 4.0 * (n + 1) + C0 / (n + 1)


@dataclass(frozen=True)
class PDETaskConfig:
    """Encoded query solves: prompts of M solution pairs, q test functions, ridge lambda_z,
    on the P1 space of n interior nodes (the decoder's K = n)."""

    family: ClassVar[str] = "pde"

    M: int = 16
    q: int = 8
    lam_z: float = LAMBDA_Z
    n: int = N_NODES

    def __post_init__(self) -> None:
        if self.M < 1:
            raise ValueError(f"prompt size M must be >= 1, got {self.M}")
        if not 1 <= self.q <= self.n:
            raise ValueError(f"q must be in [1, {self.n}], got {self.q}")
        if not (math.isfinite(self.lam_z) and self.lam_z > 0):
            raise ValueError(f"lambda_z must be finite and > 0, got {self.lam_z}")

    @property
    def dim(self) -> int:
        return self.n

    def sampler(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> "PDEPrompts":
        return PDEPrompts(self, device, dtype)

    def describe(self) -> dict[str, str | float]:
        """The operator family, prompts and system of these tasks, as golden files state them."""
        return {
            "pde.problem": "-(a u')' + c u = f on [0,1], u(0) = u(1) = 0, P1 elements, lumped mass",
            "pde.coefficients": "a = 1 + (z1 cos(pi x) + z2 cos(2 pi x))/4, c = 50 (1 + (z3 sin(pi x) + z4 cos(3 pi x))/4), "
                                "z ~ U[-1,1]^4",
            "pde.nodes": self.n,
            "pde.loads": "f ~ GP(0, SE(length 0.2)) at the nodes, load h f(x_j)",
            "pde.test_functions": f"v_r = sqrt(2) sin(r pi x), r = 1..{self.q}",
            "pde.lambda_z": self.lam_z,
            "pde.system": "H = A(z_enc)/a, d = f*/a, a = 4(n+1) + 50/(n+1); u* = A(z)^-1 f*",
        }


class PDEPrompts:
    """Sampler of encoded query solves.  Per task: z ~ U[-1,1]^4, M prompt loads f_i and a query
    load f* from the GP; the SUT family (in the sampler's dtype, on its device) solves
    u_i = A(z)^-1 f_i, assembles (G, b) and encodes z_enc (eq 12); the decoder's system is
    H = A(z_enc)/a, d = f*/a, x* = H^-1 d by a float64 solve of the cast system.
    aux: "z" (true latent), "z_enc", "u_true" = A(z)^-1 f* (float64, the exact operator)."""

    def __init__(self, cfg: PDETaskConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.cfg = cfg
        self.family = GalerkinFamily(cfg.n, device, dtype)
        self._family64 = GalerkinFamily(cfg.n)
        self.V = self.family._t(test_functions(cfg.q, cfg.n))
        self.scale = operator_scale(cfg.n)

    def sample(self, N: int, seed: int) -> Tasks:
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        n, M = self.cfg.n, self.cfg.M
        gen = cpu_generator(derive_seed("pde.tasks", n, M, self.cfg.q, seed))
        z = 2.0 * torch.rand(N, K, generator=gen, dtype=torch.float64) - 1.0
        root = _load_root(n)
        F = root @ torch.randn(N, n, M, generator=gen, dtype=torch.float64) / (n + 1)
        fq = (root @ torch.randn(N, n, 1, generator=gen, dtype=torch.float64)).squeeze(-1) / (n + 1)
        fam, t = self.family, self.family._t
        zt, Ft = t(z), t(F)
        U = fam.solve(zt, Ft)
        G, b = fam.weak_form(U, Ft, self.V)
        z_enc = encode(G, b, self.cfg.lam_z)
        H = fam.operator(z_enc) / self.scale
        d = t(fq) / self.scale
        u_true = exact_solution(self._family64.operator(z), fq)  # float64: the exact operator A(z)
        return Tasks(H, d, exact_solution(H, d), {"z": zt, "z_enc": z_enc, "u_true": t(u_true)})


def _require_encoded(tasks: Tasks) -> None:
    if not {"z", "z_enc", "u_true"} <= set(tasks.aux):
        raise ValueError(f"needs PDEPrompts tasks (aux z, z_enc, u_true), got aux {sorted(tasks.aux)}")


@torch.no_grad()
def query_losses(decoder: torch.nn.Module, tasks: Tasks) -> torch.Tensor:
    """Per-task end-to-end losses ||u_L - u*||^2 / n of the query decoder from u_0 = 0."""
    _require_encoded(tasks)
    return ((decoder(tasks.H, tasks.d) - tasks.aux["u_true"]) ** 2).sum(-1) / tasks.K


@torch.no_grad()
def query_metrics(decoder: torch.nn.Module, tasks: Tasks, c: float, delta: float) -> dict[str, float]:
    """001 Table 5 quantities of a query decoder on held-out encoded tasks (PDEPrompts):
    end-to-end MSE ||u_L - u*||^2 / n against the true solution, the encoded-solve floor
    ||A(z_enc)^-1 f* - u*||^2 / n, the encoder's z MSE and mean ||A(z_enc) - A(z)||_F / ||A(z)||_F,
    and the clipped EB upper bound (c, delta) of the end-to-end losses."""
    e2e = query_losses(decoder, tasks)
    n = tasks.K
    floor = ((tasks.xstar - tasks.aux["u_true"]) ** 2).sum(-1) / n
    z, ze = tasks.aux["z"], tasks.aux["z_enc"]
    fam = GalerkinFamily(n, z.device, z.dtype)
    A, Ae = fam.operator(z), fam.operator(ze)
    rel = torch.linalg.matrix_norm(Ae - A) / torch.linalg.matrix_norm(A)
    return {
        "e2e_mse": float(e2e.mean()),
        "floor_mse": float(floor.mean()),
        "z_mse": float(((ze - z) ** 2).mean()),
        "A_rel_err": float(rel.mean()),
        "e2e_eb_upper": eb_upper(e2e.double().cpu().numpy(), c, delta),
    }
