"""Rigorous float bounds on the spectral norm ||M||_2 (and on ||I - P H||_2).

Why: contraction factors and tolerances in the suite must be *upper* bounds, and a
float `np.linalg.norm(M, 2)` is only accurate to ~K eps, in either direction.

Upper bound (NUMERICS.md): from a float SVD take sigma_1 and V, t = sigma_1 (1 + 2^-44)
rounded up, and form in arb C = t^2 V^T V - (M V)^T (M V) = V^T (t^2 I - M^T M) V.
If Gershgorin certifies C positive definite (lower(c_ii) > upper(sum_j!=i |c_ij|)),
then V is nonsingular and ||M||_2 < t. A ball matrix is bounded as ||mid|| + ||R||
(R its radius matrix), which holds for every member. Retry with margins 2^-36, 2^-26;
fall back to repeated squaring, ||M||^(2^(k+1)) <= ||G^(2^k)||_F with G = M^T M,
which always certifies.

Lower bound: ||M v1|| / ||v1|| in arb, v1 the float top right singular vector.

Measured on this 2-core machine (exact float64 input, medians, default 212 bits,
OPENBLAS_NUM_THREADS=1): norm2_upper K = 8: 0.15 ms, K = 32: 2.5 ms, K = 64: 8-11 ms
(first margin certifies); norm2_lower K = 64: 1.1 ms; _norm2_upper_by_squaring K = 64:
~60 ms, ~0.4 s when sigma_1 is highly degenerate (orthogonal M).
Caveat: with OpenBLAS's default 2 threads and the other core busy, a 64 x 64 float SVD
took ~90 ms instead of ~0.5 ms, making norm2_upper ~120 ms; pin BLAS to one thread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flint import arb, arb_mat

from .ball import _iteration_matrix, vec_norm2
from .convert import (
    _as_exact_float64,
    arb_lower,
    arb_mat_radius_max,
    arb_mat_to_numpy_mid,
    arb_upper,
    precision,
    to_arb_mat,
    working_prec,
)

__all__ = [
    "norm2_upper",
    "norm2_lower",
    "rho_upper",
    "identity_minus_product",
    "certify_upper_bound",
]

_EXTRA_BITS_PER_STEP = 2  # observed radius growth per squaring is far below 1 bit

MARGINS: tuple[float, ...] = (2.0**-44, 2.0**-36, 2.0**-26)
"""Relative margins tried, in order, above the float sigma_1."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _ball_and_mid(M: Any) -> tuple[arb_mat, np.ndarray | None, int]:
    """(exact/ball arb_mat, float midpoint scaled by 2^-shift or None, shift)."""
    if isinstance(M, arb_mat):
        A = M
        for x in A.entries():
            if x.is_nan():
                raise ValueError("norm bound of a matrix with NaN entries")
        mid = arb_mat_to_numpy_mid(A)
    else:
        mid = _as_exact_float64(M, "norm bound")
        if mid.ndim == 1:
            mid = mid[:, None]
        if mid.ndim != 2:
            raise ValueError(f"norm bound: expected a 2-D array, got shape {mid.shape}")
        A = to_arb_mat(mid)
    if mid.size == 0:
        return A, mid, 0
    big = float(np.max(np.abs(mid))) if np.all(np.isfinite(mid)) else math.inf
    if big == 0.0 or 2.0**-500 < big < 2.0**500:
        return A, mid, 0
    # Far outside the comfortable float range (or overflowed): work on A * 2^-shift.
    shift = _max_exponent(A)
    if shift is None:
        return A, None, 0
    with precision(max(working_prec(None), 256)):
        As = A * (arb(2) ** (-shift))
    return As, arb_mat_to_numpy_mid(As), shift


def _max_exponent(A: arb_mat) -> int | None:
    """Largest e with some |mid entry| >= 2^(e-1), or None if all midpoints are 0/inf."""
    best = None
    for x in A.entries():
        m = x.mid()
        if not m.is_finite():
            return None
        man, exp = m.man_exp()
        if man != 0:
            e = int(exp) + int(man).bit_length()
            best = e if best is None else max(best, e)
    return best


def _scale_up(t: float, shift: int) -> float:
    """t * 2^shift rounded up (exact unless it leaves the float range)."""
    if shift == 0:
        return t
    with precision(64):
        return arb_upper(arb(t) * arb(2) ** shift)


def _gershgorin_pd(C: arb_mat) -> bool:
    """True only if every Gershgorin disc of the (symmetric) C lies in (0, inf)."""
    for i, row in enumerate(C.tolist()):
        off = arb(0)
        for j, c in enumerate(row):
            if j != i:
                off += abs(c)
        # arb '>' is certain: lower(c_ii) > upper(off) >= 0.
        if not row[i] > off:
            return False
    return True


def _is_exact_zero(A: arb_mat) -> bool:
    return all(x.is_zero() for x in A.entries())


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def identity_minus_product(P: Any, H: Any, *, prec: int | None = None) -> arb_mat:
    """I - P H as a ball matrix from exact P (K x N) and H (N x K)."""
    with precision(working_prec(prec)):
        return _iteration_matrix(P, H)


def norm2_upper(M: np.ndarray | arb_mat, *, prec: int | None = None) -> float:
    """Rigorous float upper bound on ||M||_2 (for every matrix in M if M is a ball).

    Typically within ~1e-13 relative of the true norm.
    """
    if isinstance(M, arb_mat) and not all(x.is_exact() for x in M.entries()):
        return _norm2_upper_ball(M, prec=prec)
    A, mid, shift = _ball_and_mid(M)
    if A.nrows() == 0 or A.ncols() == 0 or _is_exact_zero(A):
        return 0.0
    if mid is None or not np.all(np.isfinite(mid)):
        return _norm2_upper_by_squaring(A, prec=prec)
    try:
        _, s, Vt = np.linalg.svd(mid)
    except np.linalg.LinAlgError:
        return _norm2_upper_by_squaring(A, prec=prec)
    sigma1 = float(s[0])
    if not (math.isfinite(sigma1) and sigma1 > 0.0):
        return _norm2_upper_by_squaring(A, prec=prec)
    with precision(working_prec(prec)):
        V = arb_mat(Vt.T.tolist())
        MV = A * V
        gram_mv = MV.transpose() * MV
        gram_v = V.transpose() * V
        for margin in MARGINS:
            t = math.nextafter(sigma1 * (1.0 + margin), math.inf)
            if not math.isfinite(t):
                break
            tt = arb(t)
            if _gershgorin_pd(gram_v * (tt * tt) - gram_mv):
                return _scale_up(t, shift)
    return _norm2_upper_by_squaring(A, prec=prec)


def _norm2_upper_ball(A: arb_mat, *, prec: int | None = None) -> float:
    """Ball input: ||M'|| <= ||mid|| + ||R|| for every M' in the ball, R = radius matrix.

    (|M' - mid| <= R entrywise implies ||M' - mid||_2 <= ||R||_2.) This is tighter than
    certifying the ball C directly, whose Gershgorin discs widen by ~K^2 * radius.
    """
    for x in A.entries():
        if x.is_nan():
            raise ValueError("norm bound of a matrix with NaN entries")
        if not x.rad().is_finite():
            return math.inf
    up_mid = norm2_upper(A.mid(), prec=prec)
    m, n = A.nrows(), A.ncols()
    rmax = arb_mat_radius_max(A)
    with precision(64):
        r_frob = arb_upper(arb(rmax) * arb(m * n).sqrt())  # >= ||R||_F >= ||R||_2
    if r_frob > 2.0**-50 * up_mid:  # not negligible: bound ||R||_2 tightly
        R = arb_mat([[x.rad() for x in row] for row in A.tolist()])
        r_frob = min(r_frob, norm2_upper(R, prec=prec))
    with precision(64):
        return arb_upper(arb(up_mid) + arb(r_frob))


def _norm2_upper_by_squaring(
    M: np.ndarray | arb_mat, *, prec: int | None = None, max_steps: int = 64
) -> float:
    """Fallback upper bound: min over k of ||G^(2^k)||_F^(1/2^(k+1)), G = M^T M.

    Always finite and rigorous; converges to ||M||_2 (slowly, like ln(m)/2^(k+2), when
    the top singular value has multiplicity m). Powers are renormalised by exact powers
    of two, and ||H||_F^2 = trace(H H) for symmetric H reuses the next squaring.
    """
    A = to_arb_mat(M)
    if A.nrows() == 0 or A.ncols() == 0 or _is_exact_zero(A):
        return 0.0
    # Ball radii grow by a few bits per squaring; buy them up front (matmul cost is
    # nearly flat in precision).
    bits = max(working_prec(prec), 128) + _EXTRA_BITS_PER_STEP * max_steps
    with precision(bits):
        G = A.transpose() * A
        tr = G.trace().upper()
        if not tr.is_finite():
            return math.inf
        if not tr > 0:
            return 0.0  # trace(M'^T M') = ||M'||_F^2 <= 0 forces M' = 0
        s = _exponent(tr)
        H = G * (arb(2) ** (-s))
        E = s  # G = 2^E H
        ln2 = arb(2).log()
        best = math.inf
        for k in range(max_steps):
            H2 = H * H
            T = H2.trace()  # encloses ||H'||_F^2 = trace(H'^2)
            u = T.upper()
            if not u.is_finite():
                break
            if not u > 0:
                return 0.0
            # ||M'||^(2^(k+1)) <= 2^E ||H'||_F
            b = arb_upper(((arb(E) * ln2 + u.log() / 2) / arb(2) ** (k + 1)).exp())
            improved = best - b
            best = min(best, b)
            if k >= 2 and improved <= best * 2.0**-52:
                break
            if not T.rad() < abs(T.mid()):  # ball reached zero: nothing more to gain
                break
            s = _exponent(u)
            H = H2 * (arb(2) ** (-s))
            E = 2 * E + s
    return best


def _exponent(x: arb) -> int:
    """e with 2^(e-1) <= x < 2^e for an exact positive arb."""
    man, exp = x.man_exp()
    return int(exp) + int(man).bit_length()


def norm2_lower(M: np.ndarray | arb_mat, *, prec: int | None = None) -> float:
    """Rigorous float lower bound ||M v1|| / ||v1|| on ||M||_2 (for every M' in a ball)."""
    A, mid, shift = _ball_and_mid(M)
    if A.nrows() == 0 or A.ncols() == 0 or mid is None or not np.all(np.isfinite(mid)):
        return 0.0
    if not np.any(mid):
        return 0.0
    try:
        _, _, Vt = np.linalg.svd(mid)
    except np.linalg.LinAlgError:
        return 0.0
    with precision(working_prec(prec)):
        v1 = arb_mat([[float(x)] for x in Vt[0]])
        q = vec_norm2(A * v1) / vec_norm2(v1)
        if shift:
            q = q * arb(2) ** shift
        return max(0.0, arb_lower(q))


def certify_upper_bound(M: np.ndarray | arb_mat, upper: float) -> bool:
    """True iff `upper` is not refuted by the rigorous lower bound on ||M||_2.

    A claimed upper bound below norm2_lower(M) is certainly wrong; this is the rigor
    check that catches a plain-float norm standing in for norm2_upper.
    """
    upper = float(upper)
    if math.isnan(upper):
        return False
    return upper >= norm2_lower(M)


def rho_upper(P: Any, H: Any, *, prec: int | None = None) -> float:
    """Rigorous upper bound on ||I - P H||_2 with I - P H formed in arb from exact P, H."""
    return norm2_upper(identity_minus_product(P, H, prec=prec), prec=prec)
