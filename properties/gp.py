"""Property functions for the finite-rank GP/KRR family (000 sec 4, eqs 6-9).

Inputs are the SUT's own float arrays (Phi, Phi_q, lambda, s, y and its outputs); the
references are arb balls (212 bits) of the exact primal and dual posteriors for those
inputs, and the tolerances are first-order rounding bounds (Higham 2nd ed., ch. 3 and
Thm 10.4) from the unit roundoff, the sizes and the two systems' conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flint import arb_mat
from hypothesis import strategies as st

from properties.reference import ball
from properties.reference.convert import arb_upper, precision, to_arb, to_arb_mat
from properties.tolerances import gamma


@dataclass(frozen=True)
class GPCase:
    m: int  # feature rank
    n: int  # prompt size
    log10_sigma: float  # s in [1e-3, 1]
    n_query: int
    seed: int

    @property
    def sigma(self) -> float:
        return float(10.0 ** self.log10_sigma)


@st.composite
def gp_cases(draw) -> GPCase:
    return GPCase(
        m=draw(st.integers(1, 32)),
        n=draw(st.integers(1, 64)),
        log10_sigma=draw(st.floats(-3.0, 0.0, allow_nan=False)),
        n_query=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def _f64(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32/float64 data, got {a.dtype}")
    return a.astype(np.float64)


# --------------------------------------------------------------------------- #
# exact references (arb)
# --------------------------------------------------------------------------- #
@dataclass
class Exact:
    mean_primal: arb_mat
    mean_dual: arb_mat
    cov_primal: arb_mat
    cov_dual: arb_mat

    def identity_gaps(self) -> tuple[float, float]:
        """Rigorous upper bounds on ||mean_p - mean_d||_2 and ||cov_p - cov_d||_F (exact)."""
        with precision():
            return (arb_upper(ball.vec_norm2(self.mean_primal - self.mean_dual)),
                    arb_upper(ball.vec_norm2(self.cov_primal - self.cov_dual)))


def exact_posteriors(Phi, Phiq, lam, sigma, y) -> Exact:
    """Both forms of eqs 7-9 in arb for the SUT's own (exact, dyadic) inputs."""
    Phi, Phiq, lam, y = map(_f64, (Phi, Phiq, lam, y))
    n, m = Phi.shape
    with precision():
        P, Pq, yv = to_arb_mat(Phi), to_arb_mat(Phiq), to_arb_mat(y.reshape(-1, 1))
        s2 = to_arb(float(sigma)) ** 2
        Lam = arb_mat(m, m)
        Laminv = arb_mat(m, m)
        for j in range(m):
            Lam[j, j] = to_arb(lam[j])
            Laminv[j, j] = 1 / to_arb(lam[j])
        # primal: A = Lambda^-1 + s^-2 Phi^T Phi, d = s^-2 Phi^T y
        A = Laminv + P.transpose() * P / s2
        d = P.transpose() * yv / s2
        mean_p = Pq * ball.solve(A, d)
        cov_p = Pq * ball.solve(A, Pq.transpose())
        # dual: K = Phi Lambda Phi^T, M = K + s^2 I
        PL = P * Lam
        M = PL * P.transpose() + ball.identity(n) * s2
        kq = Pq * Lam * P.transpose()
        kqq = Pq * Lam * Pq.transpose()
        mean_d = kq * ball.solve(M, yv)
        cov_d = kqq - kq * ball.solve(M, kq.transpose())
    return Exact(mean_p, mean_d, cov_p, cov_d)


def error_upper(exact: arb_mat, sut) -> float:
    """Rigorous upper bound on ||exact - sut|| (Euclidean / Frobenius), sut taken exactly."""
    sut = _f64(sut)
    return ball.norm2_diff_upper(exact, sut.reshape(-1, 1) if sut.ndim == 1 else sut)


def float_gap_upper(a, b) -> float:
    """Rigorous upper bound on ||a - b|| for two float arrays of one shape (both taken exactly)."""
    a, b = _f64(a), _f64(b)
    if a.ndim == 1:
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    return ball.norm2_diff_upper(to_arb_mat(a), b)


# --------------------------------------------------------------------------- #
# tolerances
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Tolerances:
    mean_primal: float
    cov_primal: float
    mean_dual: float
    cov_dual: float
    eta_primal: float  # ||A^-1|| ||E_A||: first-order regime needs <= 1/2
    eta_dual: float  # ||M^-1|| ||E_M||
    cond_A: float  # upper bounds on the condition numbers (trace / lambda_min lower bound)
    cond_M: float

    @property
    def in_regime(self) -> bool:
        return self.eta_primal <= 0.5 and self.eta_dual <= 0.5


# Norms below are evaluated in float64 from exact values (relative error <= gamma_4096 < 1e-12),
# and the bounds drop second-order products of rounding errors (each <= eta times a kept
# first-order term, eta <= 1/2 in the regime).  SAFETY = 2 covers both:
# (1 + 1e-12) (1 + eta) <= 2 for eta <= 1/2 (the 1e-12 is absorbed by the slack 1/2 - 1e-12).
SAFETY = 2.0


def posterior_tolerances(Phi, Phiq, lam, sigma, y, u: float, primal: dict, dual: dict) -> Tolerances:
    """First-order forward-error bounds of the SUT's primal and dual posteriors.

    Primal (m x m): fl(A) = A + E_f, |E_f| <= gamma_{n+3} (Lambda^-1 + |Phi|^T|Phi|/s^2)
    (n-term inner products, s^2 and 1/s^2 and 1/lambda roundings, one addition), so
    ||E_f||_2 <= gamma_{n+3} (max 1/lambda + ||Phi||_F^2 / s^2); fl(d) = d + f,
    ||f|| <= gamma_{n+2} ||Phi||_F ||y|| / s^2.  Cholesky solve (Higham Thm 10.4):
    (fl(A) + E_c) z^ = fl(d), ||E_c||_2 <= gamma_{3m+1} || |R^T||R| ||_2 <= gamma_{3m+1} ||R||_F^2
    <= gamma_{3m+1} tr(fl A) / (1 - gamma_{m+1}).  So z^ - z = A^-1 (f - E z^), E = E_f + E_c,
    ||z^ - z|| <= ||A^-1|| (||f|| + ||E|| ||z^||), and ||A^-1||_2 <= max lambda exactly
    (A >= Lambda^-1).  Mean Phi_q z^: + gamma_m ||Phi_q||_F ||z^||.  Covariance Phi_q W^,
    W^ = A^-1 Phi_q^T solved column-wise: ||dW||_F <= ||A^-1|| ||E|| ||W^||_F, then
    ||Phi_q||_F ||dW||_F + gamma_m ||Phi_q||_F ||W^||_F.

    Dual (n x n): fl(K) = K + E_K, |E_K| <= gamma_{m+1} |Phi| Lambda |Phi|^T, whose 2-norm
    <= ||Phi Lambda^1/2||_F^2 = tr K; + s^2 I adds gamma_2 (s^2 + diag): ||E_f|| <=
    gamma_{m+2} tr K + gamma_2 s^2; Cholesky gamma_{3n+1} tr(fl M) / (1 - gamma_{n+1});
    ||M^-1|| <= s^-2 exactly (M >= s^2 I).  k_q: ||dk||_F <= gamma_{m+1} ||Phi_q Lam^1/2||_F
    ||Phi Lam^1/2||_F; alpha: ||da|| <= ||M^-1|| ||E|| ||a^||; mean fl(k^ a^) - k a:
    gamma_n ||k^|| ||a^|| + ||k^|| ||da|| + ||dk|| (||a^|| + ||da||).  Covariance:
    ||dW|| <= ||M^-1|| (||dk|| + ||E|| ||W^||), product as for the mean, k(q,q) gamma_{m+1} tr
    k(q,q), subtraction u (||kqq|| + ||k^|| ||W^|| (1 + gamma_n)).
    """
    Phi, Phiq, lam = map(_f64, (Phi, Phiq, lam))
    s = float(sigma)
    s2 = s * s
    n, m = Phi.shape
    nrm = np.linalg.norm
    phi_f, phiq_f, y_n = nrm(Phi), nrm(Phiq), nrm(_f64(y))
    # --- primal
    a_abs = float(np.max(1 / lam)) + phi_f**2 / s2
    tr_A = (float(np.sum(1 / lam)) + phi_f**2 / s2) * (1 + gamma(n + 3, u))
    E_A = gamma(n + 3, u) * a_abs + gamma(3 * m + 1, u) * tr_A / (1 - gamma(m + 1, u))
    ainv = float(np.max(lam))
    f_n = gamma(n + 2, u) * phi_f * y_n / s2
    z_n, Wp_n = nrm(_f64(primal["z_post"])), nrm(_f64(primal["W"]))
    dz = ainv * (f_n + E_A * z_n)
    tol_mp = phiq_f * dz + gamma(m, u) * phiq_f * z_n
    dWp = ainv * E_A * Wp_n
    tol_cp = phiq_f * dWp + gamma(m, u) * phiq_f * Wp_n
    # --- dual
    tK = float(np.sum(Phi**2 * lam))
    tq = float(np.sum(Phiq**2 * lam))
    tr_M = (tK + n * s2) * (1 + gamma(m + 2, u))
    E_M = gamma(m + 2, u) * tK + gamma(2, u) * s2 + gamma(3 * n + 1, u) * tr_M / (1 - gamma(n + 1, u))
    minv = 1 / s2
    dk = gamma(m + 1, u) * np.sqrt(tq * tK)
    kq_n, a_n, Wd_n = nrm(_f64(dual["kq"])), nrm(_f64(dual["alpha"])), nrm(_f64(dual["W"]))
    kqq_n = nrm(_f64(dual["kqq"]))
    da = minv * E_M * a_n
    tol_md = gamma(n, u) * kq_n * a_n + kq_n * da + dk * (a_n + da)
    dWd = minv * (dk + E_M * Wd_n)
    tol_cd = (gamma(n, u) * kq_n * Wd_n + kq_n * dWd + dk * (Wd_n + dWd) + gamma(m + 1, u) * tq
              + u * (kqq_n + kq_n * Wd_n * (1 + gamma(n, u))))
    return Tolerances(SAFETY * tol_mp, SAFETY * tol_cp, SAFETY * tol_md, SAFETY * tol_cd,
                      ainv * E_A, minv * E_M, ainv * tr_A, minv * tr_M)


def first_order_regime(Phi, Phiq, lam, sigma, u: float) -> bool:
    """Before running the SUT: both systems within the first-order regime (eta <= 1/2) and
    both Cholesky factorizations guaranteed to complete (`cholesky_guaranteed`).  The
    bounds on ||E|| and the condition numbers depend on the inputs only, not on the outputs."""
    n, m = np.shape(Phi)
    dummy_p = {"z_post": np.zeros(m), "W": np.zeros((m, 1))}
    dummy_d = {k: np.zeros(1) for k in ("kq", "alpha", "W", "kqq")}
    t = posterior_tolerances(Phi, Phiq, lam, sigma, np.zeros(n), u, dummy_p, dummy_d)
    return t.in_regime and cholesky_guaranteed(t.cond_A, m, u) and cholesky_guaranteed(t.cond_M, n, u)


def exact_scale(exact: Exact) -> float:
    """1 + ||exact mean|| + ||exact cov||_F (upper bound): the scale of the identity check."""
    with precision():
        return 1 + arb_upper(ball.vec_norm2(exact.mean_primal)) + arb_upper(ball.vec_norm2(exact.cov_primal))


def cholesky_guaranteed(cond_upper: float, k: int, u: float) -> bool:
    """Higham Thm 10.7: Cholesky of an SPD k x k matrix runs to completion when
    20 k^{3/2} kappa_2 u <= 1 (cond_upper >= kappa_2 is passed in)."""
    return 20 * k**1.5 * cond_upper * u <= 1
