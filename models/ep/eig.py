"""Eigen utilities of the EP stability diagnostics (seed 003, 2026-07-03).

Seed 003 retracted a stability "fingerprint" because `num_abscissa` ran *plain* power iteration
on the indefinite Sym(J_nc): it converges to the largest-|lambda| end (or, at a near tie, stays a
mixture), not to lambda_max.  This module holds the plain method (kept: it is the artifact the
suite certifies), the fixes (shifted power iteration, Lanczos with full reorthogonalization), the
Arnoldi iteration used on M = I + eps J for the leading map eigenvalue (mu = (lambda - 1)/eps),
and dense references (torch.linalg.eigvalsh / eigvals).

Everything is matrix-free where it matters: an operator is a callable ``mv(v) -> A v`` on 1-D
tensors of length n, with the dtype and device given explicitly (in EP, J v is a JVP and J^T v a
VJP; Sym(J) v = (J v + J^T v)/2).  Dense wrappers take a square tensor.  Every step is a small
module-level function so that tests can plant mutants by monkeypatching.  Start vectors come from
explicit seeds (models.seeding); nothing touches a global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from models.seeding import cpu_generator, derive_seed

MatVec = Callable[[torch.Tensor], torch.Tensor]

WHICH_ARNOLDI = ("LM", "LR")
WHICH_LANCZOS = ("LA", "SA", "BE")
NUMERICAL_ABSCISSA_METHODS = ("dense", "lanczos", "shifted_power", "power")


class EigInputError(ValueError):
    """Bad input to an eigen utility (shape, size, Krylov dimension, non-finite values)."""


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def check_size(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise EigInputError(f"operator size n must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise EigInputError(f"operator size n must be >= 1, got n = {n}")
    return n


def check_krylov_dim(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise EigInputError(f"Krylov dimension k must be an int, got {type(k).__name__} {k!r}")
    if not 1 <= k <= n:
        raise EigInputError(f"Krylov dimension k must satisfy 1 <= k <= n = {n}, got k = {k}")
    return k


def check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EigInputError(f"steps must be an int >= 1, got {steps!r}")
    return steps


def check_tol(tol: float | None) -> float | None:
    if tol is None:
        return None
    t = float(tol)
    if not (math.isfinite(t) and t > 0):
        raise EigInputError(f"tol must be a finite number > 0 (or None), got {tol!r}")
    return t


def check_scalar(x: float, what: str) -> float:
    f = float(x)
    if not math.isfinite(f):
        raise EigInputError(f"{what} must be finite, got {x!r}")
    return f


def check_matrix(A: object, *, symmetric: bool = False) -> torch.Tensor:
    """A finite, square, floating-point 2-D tensor (exactly symmetric when asked)."""
    if not isinstance(A, torch.Tensor):
        raise EigInputError(f"expected a torch.Tensor matrix, got {type(A).__name__}")
    if A.ndim != 2:
        raise EigInputError(f"expected a 2-D matrix, got shape {tuple(A.shape)}")
    if A.shape[0] != A.shape[1]:
        raise EigInputError(f"matrix is not square: shape {tuple(A.shape)}")
    if A.shape[0] < 1:
        raise EigInputError("matrix is empty (n = 0); n must be >= 1")
    if not A.dtype.is_floating_point:
        raise EigInputError(f"matrix dtype must be floating point, got {A.dtype}")
    bad = ~torch.isfinite(A)
    if bool(bad.any()):
        i, j = (int(x) for x in bad.nonzero()[0])
        raise EigInputError(f"matrix has a non-finite entry {A[i, j].item()!r} at ({i}, {j})")
    if symmetric and not torch.equal(A, A.mT):
        d = (A - A.mT).abs()
        i, j = (int(x) for x in (d == d.max()).nonzero()[0])
        raise EigInputError(
            f"matrix is not symmetric: A[{i},{j}] - A[{j},{i}] = {(A[i, j] - A[j, i]).item():.3e} "
            "(eigvalsh/Lanczos would silently use one triangle; pass sym_part(A))")
    return A


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def rounding_level(n: int, dtype: torch.dtype) -> float:
    """gamma_n = n u / (1 - n u): the relative rounding level of one length-n inner product."""
    u = unit_roundoff(dtype)
    return n * u / (1 - n * u)


# --------------------------------------------------------------------------- #
# operators
# --------------------------------------------------------------------------- #
def dense_matvec(A: torch.Tensor) -> MatVec:
    """v -> A v for a dense square matrix."""
    A = check_matrix(A)
    return lambda v: A @ v


def sym_part(A: torch.Tensor) -> torch.Tensor:
    """Sym(A) = (A + A^T)/2, exactly symmetric in floating point (a + b = b + a, /2 is exact)."""
    A = check_matrix(A)
    return (A + A.mT) / 2


def sym_matvec(jv: MatVec, jtv: MatVec) -> MatVec:
    """Sym(J) v = (J v + J^T v)/2 from a JVP and a VJP: the operator of the numerical abscissa."""
    return lambda v: (jv(v) + jtv(v)) / 2


def map_operator(jv: MatVec, eps: float) -> MatVec:
    """M v = v + eps J v: the Euler map of the relaxation whose leading eigenvalue 003 probes."""
    e = check_scalar(eps, "eps")
    if e == 0:
        raise EigInputError("eps must be nonzero (mu = (lambda - 1)/eps)")
    return lambda v: v + e * jv(v)


def apply(mv: MatVec, v: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
    """mv(v), checked: same shape, dtype and device as v, all finite (the power loop skips the
    finiteness scan: a non-finite A v makes its Rayleigh quotient or residual non-finite, which it
    checks instead).  An operator that cannot take v at all (wrong n or dtype for a dense matvec)
    is reported as such."""
    try:
        w = mv(v)
    except RuntimeError as exc:
        raise EigInputError(f"matvec failed on a vector of shape {tuple(v.shape)}, {v.dtype} on {v.device} "
                            f"(operator of another size or dtype?): {exc}") from exc
    if not isinstance(w, torch.Tensor) or w.shape != v.shape:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise EigInputError(f"matvec returned {shape}, expected shape {tuple(v.shape)}")
    if w.dtype != v.dtype or w.device != v.device:
        raise EigInputError(f"matvec returned {w.dtype} on {w.device}, expected {v.dtype} on {v.device}")
    if check_finite and not bool(torch.isfinite(w).all()):
        raise_non_finite()
    return w


def raise_non_finite() -> None:
    raise EigInputError("matvec returned non-finite values (operator or input not finite)")


# --------------------------------------------------------------------------- #
# building blocks (each a mutant target)
# --------------------------------------------------------------------------- #
def start_vector(n: int, seed: int, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """A unit Gaussian start vector drawn on the CPU in float64 from `seed`, then cast.

    Drawn on the CPU so every backend starts from the same vector (up to the cast).
    """
    n = check_size(n)
    g = cpu_generator(derive_seed("models.ep.eig.start", int(seed), n))
    v = torch.randn(n, generator=g, dtype=torch.float64)
    return normalize(v.to(dtype=dtype, device=device))


def check_start(v0: torch.Tensor, n: int, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    if not isinstance(v0, torch.Tensor) or v0.shape != (n,):
        raise EigInputError(f"start vector must have shape ({n},), got "
                            f"{tuple(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__}")
    v0 = v0.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(v0).all()):
        raise EigInputError("start vector has non-finite entries")
    if not bool((v0 != 0).any()):
        raise EigInputError("start vector is zero")
    return normalize(v0)


def normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v)


def rayleigh_quotient(v: torch.Tensor, Av: torch.Tensor) -> float:
    """theta = v.Av / v.v (divided explicitly: a rounded unit vector is not exactly unit)."""
    return float(torch.dot(v, Av) / torch.dot(v, v))


def residual_norm(v: torch.Tensor, Av: torch.Tensor, theta: complex) -> float:
    """||A v - theta v|| / ||v||: by the Bauer-Fike/Weyl residual bound, for a symmetric A some
    eigenvalue lies within this distance of theta (for any theta, not only the Rayleigh quotient)."""
    return float(torch.linalg.vector_norm(Av - theta * v) / torch.linalg.vector_norm(v))


def shifted_apply(Av: torch.Tensor, v: torch.Tensor, shift: float) -> torch.Tensor:
    """(A + shift I) v from A v."""
    return Av + shift * v


def power_converged(residual: float, scale: float, tol: float | None) -> bool:
    """Stop when ||A v - theta v|| <= tol * scale, scale = max_k ||A v_k|| (~<= ||A||_2)."""
    return tol is not None and residual <= tol * scale


# --------------------------------------------------------------------------- #
# power iteration
# --------------------------------------------------------------------------- #
@dataclass
class PowerResult:
    """Outcome of (shifted) power iteration; `value` is the Rayleigh quotient of A itself."""

    value: float
    vector: torch.Tensor
    iterations: int  # power steps taken (matvecs = iterations + 1)
    residual: float  # computed ||A v - value v|| / ||v|| at the returned vector
    converged: bool
    shift: float
    scale: float  # max_k ||A v_k|| = hypot(theta_k, r_k) over the unit iterates: estimates ||A||_2 from below
    rayleigh: list[float] = field(default_factory=list)  # theta at every iterate, start included
    residuals: list[float] = field(default_factory=list)


def _power(mv: MatVec, n: int, shift: float, steps: int, tol: float | None, seed: int,
           dtype: torch.dtype, device: str | torch.device, v0: torch.Tensor | None) -> PowerResult:
    n = check_size(n)
    steps = check_steps(steps)
    tol = check_tol(tol)
    shift = check_scalar(shift, "shift")
    v = start_vector(n, seed, dtype, device) if v0 is None else check_start(v0, n, dtype, device)
    thetas: list[float] = []
    res: list[float] = []
    scale = 0.0
    with torch.no_grad():
        for it in range(steps + 1):
            Av = apply(mv, v, check_finite=False)
            theta = rayleigh_quotient(v, Av)
            r = residual_norm(v, Av, theta)
            if not (math.isfinite(theta) and math.isfinite(r)):
                raise_non_finite()
            # ||A v|| = sqrt(theta^2 + r^2) for a unit v (A v = theta v + residual, orthogonal parts)
            scale = max(scale, math.hypot(theta, r))
            thetas.append(theta)
            res.append(r)
            done = power_converged(r, scale, tol)
            if done or it == steps:
                break
            w = shifted_apply(Av, v, shift)
            wn = torch.linalg.vector_norm(w)
            if wn == 0:  # (A + shift I) v = 0: v is an exact eigenvector, eigenvalue -shift
                break
            v = w / wn
    return PowerResult(theta, v, it, r, bool(done), shift, scale, thetas, res)


def power_iteration(mv: MatVec, n: int, *, steps: int = 1000, tol: float | None = None, seed: int = 0,
                    dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                    v0: torch.Tensor | None = None) -> PowerResult:
    """Plain power iteration v <- A v / ||A v||, estimate theta = Rayleigh quotient.

    It converges to the eigenvalue of largest |lambda| (for a start with a component along its
    eigenvector): on an indefinite symmetric A with |lambda_min| > lambda_max that is lambda_min,
    *not* lambda_max (003, 2026-07-03); at a tie |lambda_min| = lambda_max it is a fixed mixture.
    Stops after `steps` steps, or once ||A v - theta v|| <= tol * max_k ||A v_k|| when tol is given.
    """
    return _power(mv, n, 0.0, steps, tol, seed, dtype, device, v0)


def shifted_power_iteration(mv: MatVec, n: int, shift: float, *, steps: int = 5000, tol: float | None = None,
                            seed: int = 0, dtype: torch.dtype = torch.float64,
                            device: str | torch.device = "cpu", v0: torch.Tensor | None = None) -> PowerResult:
    """Power iteration on A + shift I for lambda_max of a symmetric A; theta is A's Rayleigh quotient.

    Shift choice: A + shift I must have lambda_max + shift as its largest-modulus eigenvalue, i.e.
    shift > -(lambda_max + lambda_min)/2; shift >= -lambda_min (A + shift I PSD) is sufficient.
    `gershgorin_shift(A)` gives a rigorous such shift for a dense A; matrix-free, `power_shift`
    uses |theta| + residual of a converged plain power iteration (>= rho(A) >= -lambda_min).
    The rate is (lambda_2 + shift)/(lambda_max + shift): a larger shift converges more slowly.
    """
    return _power(mv, n, shift, steps, tol, seed, dtype, device, v0)


def gershgorin_shift(A: torch.Tensor) -> float:
    """max(0, -min_i (a_ii - sum_{j != i} |a_ij|)) >= -lambda_min(A) (Gershgorin), so A + s I is PSD.

    Rounding of the row sums (relative n u) can leave lambda_min + s ~ -n u ||A||: harmless, the
    shifted top eigenvalue still dominates by ~(lambda_max - lambda_min).
    """
    A = check_matrix(A)
    off = A.abs().sum(dim=1) - A.diagonal().abs()
    return max(0.0, float(-(A.diagonal() - off).min()))


def power_shift(mv: MatVec, n: int, *, steps: int = 1000, tol: float | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> float:
    """Matrix-free PSD shift: |theta| + residual of plain power iteration (its estimate of rho(A)).

    Plain power iteration finds the largest-|lambda| end, so (once converged) |theta| + r >= rho(A)
    >= -lambda_min by the residual bound; the result is a valid shift for shifted_power_iteration.
    """
    res = power_iteration(mv, n, steps=steps, tol=tol, seed=seed, dtype=dtype, device=device)
    return abs(res.value) + res.residual


# --------------------------------------------------------------------------- #
# Lanczos (symmetric)
# --------------------------------------------------------------------------- #
@dataclass
class LanczosResult:
    """Ritz pairs of a symmetric operator from a k-step Lanczos run (ascending Ritz values)."""

    ritz_values: torch.Tensor  # (m,) ascending
    ritz_vectors: torch.Tensor  # (n, m), unit columns
    residuals: torch.Tensor  # (m,) computed ||A y - theta y|| / ||y|| (explicit matvecs)
    alpha: torch.Tensor  # (m,) diagonal of T
    beta: torch.Tensor  # (m - 1,) off-diagonal of T
    basis: torch.Tensor  # (n, m) Lanczos vectors
    steps: int  # Krylov dimension m actually built (<= k; < k on convergence or breakdown)
    converged: bool
    breakdown: bool  # an invariant subspace was found (T's eigenvalues are eigenvalues of A)
    scale: float  # max |theta| over the run: a lower estimate of ||A||_2
    history: list[tuple[float, float]] = field(default_factory=list)  # (theta_min, theta_max) per step

    @property
    def lambda_max(self) -> float:
        return float(self.ritz_values[-1])

    @property
    def lambda_min(self) -> float:
        return float(self.ritz_values[0])


def lanczos_matvec(mv: MatVec, q: torch.Tensor) -> torch.Tensor:
    return apply(mv, q)


def lanczos_recurrence(w: torch.Tensor, q: torch.Tensor, q_prev: torch.Tensor | None,
                       beta_prev: float) -> tuple[torch.Tensor, float]:
    """w - alpha q - beta_{j-1} q_{j-1}, alpha = q.w: the three-term recurrence."""
    alpha = float(torch.dot(q, w))
    w = w - alpha * q
    if q_prev is not None:
        w = w - beta_prev * q_prev
    return w, alpha


def reorthogonalize(w: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Full reorthogonalization against the columns of Q: classical Gram-Schmidt twice
    ("twice is enough": orthogonality to working precision without the loss that makes plain
    Lanczos produce ghost copies of converged Ritz values)."""
    for _ in range(2):
        w = w - Q @ (Q.mT @ w)
    return w


def tridiagonal(alpha: list[float], beta: list[float], dtype: torch.dtype,
                device: str | torch.device) -> torch.Tensor:
    m = len(alpha)
    T = torch.diag(torch.tensor(alpha, dtype=dtype, device=device))
    if m > 1:
        b = torch.tensor(beta[: m - 1], dtype=dtype, device=device)
        T = T + torch.diag(b, 1) + torch.diag(b, -1)
    return T


def tridiagonal_ritz(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the Lanczos tridiagonal T (ascending)."""
    return torch.linalg.eigh(T)


def breakdown_level(n: int, dtype: torch.dtype, scale: float) -> float:
    """A new Lanczos/Arnoldi direction below gamma_n ||A|| is the rounding of one matvec: stop."""
    return rounding_level(n, dtype) * scale


def lanczos_extreme_converged(res: torch.Tensor, which: str, scale: float, tol: float | None) -> bool:
    if tol is None:
        return False
    picks = {"LA": [-1], "SA": [0], "BE": [0, -1]}[which]
    return all(float(res[i]) <= tol * scale for i in picks)


def lanczos(mv: MatVec, n: int, k: int, *, tol: float | None = None, which: str = "BE", seed: int = 0,
            dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
            v0: torch.Tensor | None = None, reorth: bool = True, history: bool = False) -> LanczosResult:
    """Lanczos with full reorthogonalization (small n): extreme eigenvalues of a symmetric operator.

    Builds up to k Lanczos vectors; with `tol`, stops early once the extreme Ritz pair(s) named by
    `which` ("LA" largest, "SA" smallest, "BE" both) have an estimated residual |beta_m s_m| <=
    tol * scale, and then reports `converged` from the *explicit* residuals ||A y - theta y||.
    A breakdown (beta below the rounding level) means an invariant subspace: its Ritz values are
    eigenvalues of A.  `reorth=False` is plain Lanczos (loses orthogonality once a Ritz value
    converges; kept for comparison).  `history` records (theta_min, theta_max) per step (always
    with `tol`).
    """
    n = check_size(n)
    k = check_krylov_dim(k, n)
    tol = check_tol(tol)
    if which not in WHICH_LANCZOS:
        raise EigInputError(f"which must be one of {WHICH_LANCZOS}, got {which!r}")
    q = start_vector(n, seed, dtype, device) if v0 is None else check_start(v0, n, dtype, device)
    Q = torch.zeros(n, k, dtype=dtype, device=device)
    alpha: list[float] = []
    beta: list[float] = []
    history_on = bool(history)
    hist: list[tuple[float, float]] = []
    q_prev, b_prev, scale, broke = None, 0.0, 0.0, False
    with torch.no_grad():
        for j in range(k):
            Q[:, j] = q
            w = lanczos_matvec(mv, q)
            w, a = lanczos_recurrence(w, q, q_prev, b_prev)
            if reorth:
                w = reorthogonalize(w, Q[:, : j + 1])
            b = float(torch.linalg.vector_norm(w))
            alpha.append(a)
            if tol is not None or history_on:  # per-step Ritz values: for the stopping test / history
                theta, S = tridiagonal_ritz(tridiagonal(alpha, beta, dtype, device))
                scale = max(scale, float(theta.abs().max()))
                hist.append((float(theta[0]), float(theta[-1])))
            else:  # a row sum of T: <= ||T||_inf, a cheap scale for the breakdown test alone
                scale = max(scale, abs(a) + b_prev)
            if b <= breakdown_level(n, dtype, scale):
                broke = True
                break
            if j == k - 1:
                break
            if tol is not None and lanczos_extreme_converged(b * S[-1].abs(), which, scale, tol):
                break
            beta.append(b)
            q_prev, q, b_prev = q, w / b, b
        m = len(alpha)
        T = tridiagonal(alpha, beta, dtype, device)
        theta, S = tridiagonal_ritz(T)
        scale = max(float(theta.abs().max()), scale if tol is not None or history_on else 0.0)
        Qm = Q[:, :m]
        Y = Qm @ S
        Y = Y / torch.linalg.vector_norm(Y, dim=0)
        res = torch.tensor([residual_norm(Y[:, i], apply(mv, Y[:, i]), float(theta[i])) for i in range(m)],
                           dtype=dtype, device=device)
    conv = lanczos_extreme_converged(res, which, scale, tol) if tol is not None else False
    return LanczosResult(theta, Y, res, T.diagonal().clone(), torch.tensor(beta[: m - 1], dtype=dtype, device=device),
                         Qm.clone(), m, conv, broke, scale, hist)


# --------------------------------------------------------------------------- #
# Arnoldi (non-symmetric)
# --------------------------------------------------------------------------- #
@dataclass
class ArnoldiResult:
    """Ritz pairs of a general operator, leading first by `which` ("LM" modulus, "LR" real part)."""

    ritz_values: torch.Tensor  # (m,) complex, sorted by `which`, leading first
    ritz_vectors: torch.Tensor  # (n, m) complex, unit columns
    residuals: torch.Tensor  # (m,) computed ||A y - theta y|| / ||y||
    hessenberg: torch.Tensor  # (m, m) of the last cycle
    steps: int  # matvecs spent on Krylov bases and restart filters (not on the residual checks)
    restarts: int  # restarts used
    converged: bool  # leading residual <= tol * scale
    breakdown: bool
    scale: float  # max |theta| seen: a lower estimate of the spectral radius
    which: str

    @property
    def leading(self) -> complex:
        return complex(self.ritz_values[0])


def orthogonalize(w: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram-Schmidt twice against V's columns; returns (w_perp, coefficients)."""
    h = V.mT @ w
    w = w - V @ h
    c = V.mT @ w
    return w - V @ c, h + c


def arnoldi_factorization(mv: MatVec, v: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """A V_m = V_m H_m + h_{m+1,m} v_{m+1} e_m^T; returns (V (n, m), H (m, m), m, breakdown)."""
    n = v.shape[0]
    V = torch.zeros(n, k, dtype=v.dtype, device=v.device)
    H = torch.zeros(k, k, dtype=v.dtype, device=v.device)
    V[:, 0] = v
    scale = 0.0
    for j in range(k):
        w = apply(mv, V[:, j])
        scale = max(scale, float(torch.linalg.vector_norm(w)))
        w, h = orthogonalize(w, V[:, : j + 1])
        H[: j + 1, j] = h
        b = float(torch.linalg.vector_norm(w))
        if b <= breakdown_level(n, v.dtype, scale):
            return V[:, : j + 1], H[: j + 1, : j + 1], j + 1, True
        if j == k - 1:
            break
        H[j + 1, j] = b
        V[:, j + 1] = w / b
    return V, H, k, False


def hessenberg_ritz(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the small Hessenberg matrix (complex)."""
    return torch.linalg.eig(H)


def ritz_order(theta: torch.Tensor, which: str) -> torch.Tensor:
    """Indices sorting Ritz values leading first: by modulus ("LM") or real part ("LR"); a
    conjugate pair is ordered Im >= 0 first so the choice is deterministic."""
    key = theta.abs() if which == "LM" else theta.real
    # sort by (-key, -imag): a stable two-pass sort
    idx = torch.argsort(-theta.imag, stable=True)
    return idx[torch.argsort(-key[idx], stable=True)]


def restart_vector(y: torch.Tensor) -> torch.Tensor:
    """Re y + Im y: a real vector in the invariant subspace of a Ritz vector and its conjugate."""
    v = y.real + y.imag
    return normalize(v if bool((v != 0).any()) else y.real)


def complex_apply(mv: MatVec, y: torch.Tensor) -> torch.Tensor:
    """A y for complex y from a real operator: A Re y + i A Im y."""
    return torch.complex(apply(mv, y.real.contiguous()), apply(mv, y.imag.contiguous()))


def power_filter(mv: MatVec, v: torch.Tensor, m: int) -> torch.Tensor:
    """A^m v (normalized each step): the restart filter.

    It multiplies the component along each eigenvector x_j by lambda_j^m, so the dominant one gains
    on every other by |lambda_1 / lambda_j|^m >= 1 and can never be filtered out.  Exact-shift
    filters (prod (A - theta_j I) over unwanted Ritz values) and restarting from the leading Ritz
    vector can: when the dominant eigenvalue is not yet resolved, its direction is damped and the
    iteration locks onto a non-dominant eigenpair with a small residual (measured on this suite's
    drawn non-normal matrices, k = 4..n/2: ~2% of runs with exact shifts, 0 of 1932 with A^k).
    """
    for _ in range(m):
        v = apply(mv, v)
        nv = torch.linalg.vector_norm(v)
        if nv == 0:  # v in the null space: A is nilpotent on it, nothing dominant to find there
            break
        v = v / nv
    return v


def arnoldi(mv: MatVec, n: int, k: int, *, which: str = "LM", tol: float | None = None, restarts: int = 0,
            seed: int = 0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
            v0: torch.Tensor | None = None) -> ArnoldiResult:
    """Arnoldi (Gram-Schmidt twice) for the leading eigenvalues of a non-symmetric operator.

    With k = n (and no breakdown) H is similar to A up to rounding, so all Ritz values are
    eigenvalue approximations; for k < n each restart (`restarts` times, until the leading explicit
    residual <= tol * scale) starts the next cycle from A^k v_0 (`power_filter`), which cannot lose
    the dominant direction.  A small residual certifies an eigenpair, not that it is the leading one.
    """
    n = check_size(n)
    k = check_krylov_dim(k, n)
    tol = check_tol(tol)
    if which not in WHICH_ARNOLDI:
        raise EigInputError(f"which must be one of {WHICH_ARNOLDI}, got {which!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise EigInputError(f"restarts must be an int >= 0, got {restarts!r}")
    if restarts and which != "LM" and k < n:
        raise EigInputError("restarts need which='LM' (the power filter favours the largest modulus); "
                            "for the largest real part use k = n, or Arnoldi on M = I + eps J")
    v = start_vector(n, seed, dtype, device) if v0 is None else check_start(v0, n, dtype, device)
    steps, scale = 0, 0.0
    with torch.no_grad():
        for cycle in range(restarts + 1):
            V, H, m, broke = arnoldi_factorization(mv, v, k)
            steps += m
            theta, S = hessenberg_ritz(H)
            order = ritz_order(theta, which)
            theta, S = theta[order], S[:, order]
            Y = V.to(theta.dtype) @ S
            Y = Y / torch.linalg.vector_norm(Y, dim=0)
            res = torch.stack([torch.linalg.vector_norm(complex_apply(mv, Y[:, i]) - theta[i] * Y[:, i]).real
                               for i in range(m)])
            scale = max(scale, float(theta.abs().max()))
            conv = tol is not None and float(res[0]) <= tol * scale
            if conv or broke or cycle == restarts:
                break
            v = power_filter(mv, V[:, 0], k)
            steps += k
            if not bool((v != 0).any()):
                v = restart_vector(Y[:, 0])
    return ArnoldiResult(theta, Y, res, H, steps, cycle, bool(conv), broke, scale, which)


@dataclass
class MapEigResult:
    """Leading eigenvalues lambda of M = I + eps J and the continuous-time mu = (lambda - 1)/eps."""

    lam: torch.Tensor
    mu: torch.Tensor
    eps: float
    arnoldi: ArnoldiResult


def map_leading_eigs(jv: MatVec, n: int, eps: float, k: int, **kw) -> MapEigResult:
    """Arnoldi on M = I + eps J (matrix-free, seed 003's eig_probe): leading map eigenvalues by
    modulus and mu = (lambda - 1)/eps, which for small eps orders like Re mu (|1 + eps mu|^2 =
    1 + 2 eps Re mu + eps^2 |mu|^2)."""
    res = arnoldi(map_operator(jv, eps), n, k, which="LM", **kw)
    lam = res.ritz_values
    return MapEigResult(lam, (lam - 1) / eps, float(eps), res)


# --------------------------------------------------------------------------- #
# dense references and abscissae
# --------------------------------------------------------------------------- #
def dense_eigvalsh(A: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of an exactly symmetric A, ascending (torch.linalg.eigvalsh)."""
    return torch.linalg.eigvalsh(check_matrix(A, symmetric=True))


def dense_eigh(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ascending eigenvalues, orthonormal eigenvectors) of an exactly symmetric A."""
    return torch.linalg.eigh(check_matrix(A, symmetric=True))


def dense_eigvals(A: torch.Tensor, which: str = "LM") -> torch.Tensor:
    """Eigenvalues of a general A (complex), leading first by `which` (torch.linalg.eigvals)."""
    if which not in WHICH_ARNOLDI:
        raise EigInputError(f"which must be one of {WHICH_ARNOLDI}, got {which!r}")
    lam = torch.linalg.eigvals(check_matrix(A))
    return lam[ritz_order(lam, which)]


def dense_eig(A: torch.Tensor, symmetric: bool | None = None) -> torch.Tensor:
    """eigvalsh (ascending, real) for a symmetric A, else eigvals (complex, leading modulus first).
    symmetric=None decides by exact symmetry."""
    A = check_matrix(A)
    if symmetric is None:
        symmetric = torch.equal(A, A.mT)
    return dense_eigvalsh(A) if symmetric else dense_eigvals(A)


def spectral_abscissa(A: torch.Tensor) -> float:
    """alpha(A) = max Re lambda(A) (dense): the continuous-time stability margin."""
    return float(torch.linalg.eigvals(check_matrix(A)).real.max())


def numerical_abscissa(A: torch.Tensor, method: str = "dense", *, tol: float | None = None,
                       steps: int = 5000, seed: int = 0) -> float:
    """omega(A) = lambda_max(Sym(A)), the initial growth rate of ||exp(tA)|| (omega >= alpha).

    method "dense" (eigvalsh), "lanczos" (k = n, full reorthogonalization), "shifted_power"
    (Gershgorin shift), or "power": plain power iteration, the 003 artifact (it returns the
    largest-|lambda| end of Sym(A), which is lambda_min when |lambda_min| > lambda_max).
    """
    if method not in NUMERICAL_ABSCISSA_METHODS:
        raise EigInputError(f"method must be one of {NUMERICAL_ABSCISSA_METHODS}, got {method!r}")
    S = sym_part(A)
    n = S.shape[0]
    if method == "dense":
        return float(dense_eigvalsh(S)[-1])
    mv = dense_matvec(S)
    kw = {"seed": seed, "dtype": S.dtype, "device": S.device}
    if method == "lanczos":
        return lanczos(mv, n, n, tol=tol, which="LA", **kw).lambda_max
    if method == "shifted_power":
        return shifted_power_iteration(mv, n, gershgorin_shift(S), steps=steps, tol=tol, **kw).value
    return power_iteration(mv, n, steps=steps, tol=tol, **kw).value
