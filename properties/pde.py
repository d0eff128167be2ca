"""Property functions for the PDE encoder family (000 sec 5, eqs 10-12; 001 sec 5.4).

Inputs are the SUT's own float arrays (A_0, A_k, z, V, F, U, G, b, z_enc); references are
arb balls (212 bits) computed from those exact (dyadic) values; tolerances are rounding-error
bounds (Higham 2nd ed., ch. 3, Thm 10.3/10.4) from the unit roundoff, the sizes and the norms
of the data.  No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flint import arb_mat
from hypothesis import strategies as st

from properties.reference import ball, normbound
from properties.reference.convert import arb_upper, precision, to_arb, to_arb_mat
from properties.tolerances import gamma

K = 4
N_NODES = 24
PROMPT_SIZES = (4, 16)
# Norms in the bounds are evaluated in float64 from exact values (relative error < 1e-12);
# SAFETY = 2 covers that and the dropped second-order products of rounding errors.
SAFETY = 2.0


def _f64(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32/float64 data, got {a.dtype}")
    return a.astype(np.float64)


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PDECase:
    z: tuple[float, ...]  # in [-1, 1]^K (A(z) SPD there)
    M: int  # prompt size
    q: int  # number of test functions
    seed: int


@st.composite
def pde_cases(draw, prompt_sizes=PROMPT_SIZES, q_min: int = 1) -> PDECase:
    z = tuple(draw(st.floats(-1.0, 1.0, allow_nan=False)) for _ in range(K))
    return PDECase(z=z, M=draw(st.sampled_from(prompt_sizes)), q=draw(st.integers(q_min, N_NODES)),
                   seed=draw(st.integers(0, 2**32 - 1)))


# --------------------------------------------------------------------------- #
# references (arb)
# --------------------------------------------------------------------------- #
def _rows(B: arb_mat) -> arb_mat:
    """(q, M) -> the column vector of entries (i, r) in row order i*q + r."""
    q, M = B.nrows(), B.ncols()
    out = arb_mat(q * M, 1)
    for i in range(M):
        for r in range(q):
            out[i * q + r, 0] = B[r, i]
    return out


def weak_form_reference(A0, Ak, V, F, U) -> tuple[list[arb_mat], arb_mat]:
    """Exact G (as K column vectors) and b of eq 11 for the SUT's own A_0, A_k, V, F and
    computed U (all taken exactly)."""
    with precision():
        a0, v, f, u = (to_arb_mat(_f64(x)) for x in (A0, V, F, U))
        vt = v.transpose()
        cols = [_rows(vt * (to_arb_mat(_f64(Ak[k])) * u)) for k in range(len(Ak))]
        b = _rows(vt * (f - a0 * u))
    return cols, b


def matrix_from_cols(cols: list[arb_mat]) -> arb_mat:
    m = cols[0].nrows()
    out = arb_mat(m, len(cols))
    for k, c in enumerate(cols):
        for i in range(m):
            out[i, k] = c[i, 0]
    return out


def residual_upper(G, b, z) -> float:
    """Rigorous upper bound on ||G z - b||_2 for float G, b, z taken exactly."""
    with precision():
        r = to_arb_mat(_f64(G)) * to_arb_mat(_f64(z).reshape(-1, 1)) - to_arb_mat(_f64(b).reshape(-1, 1))
        return arb_upper(ball.vec_norm2(r))


def error_upper(exact: arb_mat, sut) -> float:
    """Rigorous upper bound on ||exact - sut|| (Euclidean / Frobenius), sut taken exactly."""
    sut = _f64(sut)
    return ball.norm2_diff_upper(exact, sut.reshape(-1, 1) if sut.ndim == 1 else sut)


@dataclass
class Ridge:
    S: arb_mat  # G^T G + lambda I (exact)
    Sinv: arb_mat  # its inverse (ball)
    z_ridge: arb_mat  # S^-1 G^T b (ball)
    bias: arb_mat  # -lambda S^-1 z (ball), the noise-free bias
    sinv_norm: float  # rigorous upper bound on ||S^-1||_2
    sinv_gt_norm: float  # rigorous upper bound on ||S^-1 G^T||_2
    sigma_min2_lower: float  # rigorous lower bound on sigma_min(G)^2 (0 if not certified)


def ridge_reference(G, b, z, lam: float) -> Ridge:
    """Exact ridge solution (eq 12) and noise-free bias for the SUT's G, b, lambda and the
    latent z (all taken exactly)."""
    G, b, z = _f64(G), _f64(b).reshape(-1, 1), _f64(z).reshape(-1, 1)
    with precision():
        g = to_arb_mat(G)
        gtg = g.transpose() * g
        S = gtg + ball.identity(G.shape[1]) * to_arb(float(lam))
        Sinv = ball.solve(S, ball.identity(G.shape[1]))
        z_ridge = Sinv * (g.transpose() * to_arb_mat(b))
        bias = Sinv * to_arb_mat(z) * (-to_arb(float(lam)))
        sinv_norm = min(normbound.norm2_upper(Sinv), 1.0 / float(lam) * (1 + 2.0**-50))
        sinv_gt_norm = normbound.norm2_upper(Sinv * g.transpose())
        try:
            gtg_inv_norm = normbound.norm2_upper(ball.solve(gtg, ball.identity(G.shape[1])))
            smin2 = 1.0 / gtg_inv_norm * (1 - 2.0**-50) if math.isfinite(gtg_inv_norm) else 0.0
        except ValueError:
            smin2 = 0.0
    return Ridge(S, Sinv, z_ridge, bias, sinv_norm, sinv_gt_norm, smin2)


def vec_norm_upper(v: arb_mat) -> float:
    with precision():
        return arb_upper(ball.vec_norm2(v))


# --------------------------------------------------------------------------- #
# tolerances
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class WeakTolerance:
    solve_residual: float  # bound on ||V^T (A(z) U^ - F)||_F: the solve's residual, projected
    G: float  # bound on ||G^ - G(U^)||_F (assembly rounding)
    b: float  # bound on ||b^ - b(U^)||
    Gz_minus_b: float  # bound on ||G^ z - b^||
    cholesky_guaranteed: bool


def weak_form_tolerance(A0, Ak, z, V, F, U, u: float) -> WeakTolerance:
    """Bounds for the SUT's G z - b (eq 11), which is 0 in exact arithmetic with exact u_i.

    A^ = fl(A_0 + sum_k z_k A_k) term by term: |A^ - A(z)| <= gamma_{2K} (|A_0| + sum |z_k||A_k|).
    Cholesky solve (Higham Thm 10.4): (A^ + E_c) u^_i = f_i, ||E_c||_2 <= gamma_{3n+1} ||R||_F^2,
    ||R||_F^2 <= tr(A^) / (1 - gamma_{n+1}) (Thm 10.3).  Hence the residual of the computed U
    with the exact A(z): A(z) U^ - F = (A(z) - A^ - E_c) U^, and in exact arithmetic
    G(U^) z - b(U^) = V^T (A(z) U^ - F), so ||.|| <= ||V||_F (||dA|| + ||E_c||) ||U^||_F.
    Assembly: G_k = fl(V^T fl(A_k U)): |dG_k| <= gamma_{2n} |V|^T |A_k| |U|;
    b = fl(V^T fl(F - fl(A_0 U))): |db| <= gamma_{2n+1} |V|^T (|F| + |A_0||U|).
    ||G^ z - b^|| <= residual + sum_k |z_k| ||dG_k||_F + ||db||, all times SAFETY.
    Cholesky completes when 20 n^{3/2} kappa u <= 1 (Thm 10.7); kappa <= tr(A^)/lambda_min lower.
    """
    A0, Ak, z, V, F, U = map(_f64, (A0, Ak, z, V, F, U))
    n = A0.shape[0]
    nrm = np.linalg.norm
    absA = np.abs(A0) + sum(abs(z[k]) * np.abs(Ak[k]) for k in range(len(Ak)))
    dA = gamma(2 * len(Ak), u) * nrm(absA)
    Az = A0 + np.einsum("k,kij->ij", z, Ak)
    tr = float(np.trace(Az)) * (1 + gamma(2 * len(Ak), u)) + n * dA
    Ec = gamma(3 * n + 1, u) * tr / (1 - gamma(n + 1, u))
    v_f, u_f = nrm(V), nrm(U)
    res = v_f * (dA + Ec) * u_f
    dG = [gamma(2 * n, u) * nrm(np.abs(V).T @ np.abs(Ak[k]) @ np.abs(U)) for k in range(len(Ak))]
    dG_f = float(np.sqrt(sum(x * x for x in dG)))
    db = gamma(2 * n + 1, u) * nrm(np.abs(V).T @ (np.abs(F) + np.abs(A0) @ np.abs(U)))
    total = res + sum(abs(z[k]) * dG[k] for k in range(len(Ak))) + db
    lmin = float(np.linalg.eigvalsh(Az)[0]) - dA  # float64 eigenvalue: error ~1e-14 ||A||, << dA margin
    kappa = tr / lmin if lmin > 0 else math.inf
    return WeakTolerance(SAFETY * res, SAFETY * dG_f, SAFETY * db, SAFETY * total,
                         20 * n**1.5 * kappa * u <= 1)


def ridge_tolerance(G, b, z_enc, lam: float, sinv_norm: float, u: float) -> float:
    """Bound on ||z^_enc - S^-1 G^T b|| for the SUT's Cholesky ridge solve (eq 12).

    S^ = fl(G^T G + lambda I): |dS| <= gamma_{m+1} (|G|^T|G| + lambda I) (m = Mq-term inner
    products, one addition on the diagonal); d^ = fl(G^T b): |dd| <= gamma_m |G|^T|b|;
    Cholesky (Thm 10.4): (S^ + E_c) z^ = d^, ||E_c|| <= gamma_{3K+1} tr(S^)/(1 - gamma_{K+1}).
    Exactly S (z^ - z_ridge) = dd - (dS + E_c) z^, so
    ||z^ - z_ridge|| <= ||S^-1|| (||dd|| + (||dS|| + ||E_c||) ||z^||); ||S^-1|| certified in arb.
    """
    G, b, z_enc = _f64(G), _f64(b), _f64(z_enc)
    m, k = G.shape
    nrm = np.linalg.norm
    g_f2 = nrm(G) ** 2
    dS = gamma(m + 1, u) * (g_f2 + lam)
    dd = gamma(m, u) * nrm(np.abs(G).T @ np.abs(b))
    tr = (g_f2 + k * lam) * (1 + gamma(m + 1, u))
    Ec = gamma(3 * k + 1, u) * tr / (1 - gamma(k + 1, u))
    return SAFETY * sinv_norm * (dd + (dS + Ec) * nrm(z_enc))


# --------------------------------------------------------------------------- #
# order of the bias in lambda
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SlopeFit:
    slope: float
    lo: float  # certified interval for the order (the limit slope as lambda -> 0)
    hi: float
    rounding_halfwidth: float
    curvature: float


def bias_slope(lams, y, dev, curvature: float) -> SlopeFit:
    """Least-squares slope of y_j = log e_j (the SUT's bias norms) on log lambda_j, and a
    certified interval for the order of the exact bias.

    The slope is linear in y: s = sum_j w_j y_j, w_j = (x_j - xbar)/Sxx.  With dev_j a rigorous
    bound on |y_j - log e*_j| (e*_j = ||lambda_j S_j^-1 z||, the exact noise-free bias, arb), the
    exact curve's fitted slope lies in s +- hw, hw = sum_j |w_j| dev_j.  The exact curve
    log e* = log lambda + log ||(G^T G + lambda I)^-1 z|| has local slope 1 - lambda z^T S^-3 z /
    z^T S^-2 z in [1 - lambda/(sigma_min^2 + lambda), 1]; a least-squares slope is a positively
    weighted average of secant slopes, so the exact fitted slope is 1 - delta with delta in
    [0, curvature], curvature = lambda_max/(sigma_min^2 + lambda_max).  Hence the order (1 under
    the claim) lies in [s - hw, s + hw + curvature] with certainty (no statistical error: the
    data are deterministic and every deviation is bounded).  The fit is evaluated in float64
    (relative error ~1e-15 of sum |w_j y_j|): hw is doubled and 1e-12 added for it.
    """
    x = np.log(np.asarray(lams, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    d = np.asarray(dev, dtype=np.float64)
    xb = x.mean()
    w = (x - xb) / np.sum((x - xb) ** 2)
    s = float(np.sum(w * y))
    hw = 2.0 * float(np.sum(np.abs(w) * d)) + 1e-12
    return SlopeFit(s, s - hw, s + hw + curvature, hw, curvature)


def log_ratio_bounds(z_enc, z, bias: arb_mat) -> tuple[float, float]:
    """(y, dev): y = float log ||z_enc - z|| (the SUT's bias, taken exactly) and a rigorous
    upper bound dev on |y - log ||bias|||, bias the exact arb ball -lambda S^-1 z.  dev = inf
    when either norm is not certified positive."""
    with precision():
        dz = to_arb_mat(_f64(z_enc).reshape(-1, 1)) - to_arb_mat(_f64(z).reshape(-1, 1))
        e = ball.vec_norm2(dz)
        e_star = ball.vec_norm2(bias)
        if not (e > 0 and e_star > 0):
            return (float(np.log(max(float(e.mid()), 1e-300))), math.inf)
        y = float(e.log().mid())
        dev = arb_upper(abs(to_arb(y) - e_star.log()))
    return y, dev
