"""Overlap order parameters: exact references and derived tolerances (000 sec 7-8).

Omega_{a,b} = K^{-1} mean_i <(P H_i)^a x*_i, (P H_i)^b x*_i> and R_l = K^{-1} mean_i
||(I - P H_i)^l x*_i||^2 = sum_{a,b<=l} w_a w_b Omega_{a,b}, w_a = (-1)^a C(l, a).
References are arb enclosures from the SUT's own float P, H, x* (taken exactly); the
tolerances bound the SUT's float evaluation (first order in u, Higham ch. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from flint import arb, arb_mat
from hypothesis import strategies as st

from properties import tolerances
from properties.reference import ball
from properties.reference.convert import arb_lower, arb_upper, precision, to_arb_mat

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def binomial_weights(l: int) -> list[int]:
    """w_a = (-1)^a C(l, a): (I - M)^l = sum_a w_a M^a (the reference's own copy)."""
    return [(-1) ** a * math.comb(l, a) for a in range(l + 1)]


def amplification(l: int) -> int:
    """sum_{a,b<=l} |w_a w_b| = 4^l: the factor by which the binomial expansion can amplify an
    absolute error of the logged traces."""
    return sum(abs(w) for w in binomial_weights(l)) ** 2


def _per_task(P: np.ndarray, n: int) -> list[np.ndarray]:
    P = np.asarray(P, np.float64)
    return [P] * n if P.ndim == 2 else [P[i] for i in range(n)]


# --------------------------------------------------------------------------- #
# exact references
# --------------------------------------------------------------------------- #
@dataclass
class ExactRow:
    """Exact Omega (arb (L+1)x(L+1)), R_l = K^{-1} mean ||(I - PH)^l x*||^2 (arb, l = 0..L),
    and per-task ||(I - PH)^l x*|| upper bounds (n, L+1) and rho_i >= ||I - P H_i||_2."""

    omega: arb_mat
    risks: list[arb]
    err_norms: np.ndarray
    rho: np.ndarray

    def omega_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        L1 = self.omega.nrows()
        lo = np.array([[arb_lower(self.omega[a, b]) for b in range(L1)] for a in range(L1)])
        hi = np.array([[arb_upper(self.omega[a, b]) for b in range(L1)] for a in range(L1)])
        return lo, hi


def exact_row(P: np.ndarray, H: np.ndarray, xstar: np.ndarray, L: int) -> ExactRow:
    """Omega and R_l of the exact (P, H_i, x*_i), P global (K,K) or per task (n,K,K).

    R_l is computed by the recursion w_l = (I - P H) w_{l-1}, independently of Omega; the
    binomial identity between them is checked by `binomial_identity_holds`.
    """
    H, xstar = np.asarray(H, np.float64), np.asarray(xstar, np.float64)
    n, K = xstar.shape
    Ps = _per_task(P, n)
    err = np.zeros((n, L + 1))
    rho = np.zeros(n)
    with precision():
        eye = ball.identity(K)
        omega = arb_mat(L + 1, L + 1)
        risks = [arb(0)] * (L + 1)
        for i in range(n):
            M = to_arb_mat(Ps[i]) * to_arb_mat(H[i])
            x = to_arb_mat(xstar[i])
            V = arb_mat(K, L + 1)
            v = x
            for a in range(L + 1):
                if a:
                    v = M * v
                for k in range(K):
                    V[k, a] = v[k, 0]
            omega += V.transpose() * V
            B = eye - M
            rho[i] = arb_upper(ball.vec_norm2(B))  # ||.||_F >= ||.||_2
            w = x
            for l in range(L + 1):
                if l:
                    w = B * w
                nrm = ball.vec_norm2(w)
                err[i, l] = arb_upper(nrm)
                risks[l] = risks[l] + nrm * nrm
        scale = arb(n * K)
        omega = arb_mat([[omega[a, b] / scale for b in range(L + 1)] for a in range(L + 1)])
        risks = [r / scale for r in risks]
    return ExactRow(omega, risks, err, rho)


def binomial_identity_holds(row: ExactRow) -> bool:
    """The identity itself, in exact arithmetic: sum w_a w_b Omega_ab and the recursion's R_l
    enclose a common value for every l (a check of the reference, not of the SUT)."""
    L1 = row.omega.nrows()
    with precision():
        for l in range(L1):
            w = binomial_weights(l)
            s = arb(0)
            for a in range(l + 1):
                for b in range(l + 1):
                    s += w[a] * w[b] * row.omega[a, b]
            if not s.overlaps(row.risks[l]):
                return False
    return True


def reconstruct_exact(omega_hat: np.ndarray, l: int) -> Fraction:
    """sum_{a,b<=l} w_a w_b Omega^_ab in exact rationals from the SUT's logged float Omega^."""
    w = binomial_weights(l)
    om = np.asarray(omega_hat, np.float64)
    return sum((Fraction(w[a] * w[b]) * Fraction(float(om[a, b])) for a in range(l + 1) for b in range(l + 1)),
               Fraction(0))


def label_errors(H: np.ndarray, d: np.ndarray, xstar: np.ndarray) -> np.ndarray:
    """Rigorous ||x^*_i - H_i^{-1} d_i|| for the SUT's labels x^*_i."""
    H, d, xstar = (np.asarray(a, np.float64) for a in (H, d, xstar))
    out = []
    with precision():
        for i in range(len(d)):
            out.append(ball.norm2_diff_upper(ball.solve(H[i], d[i].reshape(-1, 1)), xstar[i].reshape(-1, 1)))
    return np.array(out)


# --------------------------------------------------------------------------- #
# tolerances
# --------------------------------------------------------------------------- #
def _fro(a: np.ndarray, axis=None) -> np.ndarray:
    return np.linalg.norm(a, axis=axis) * (1 + 1e-12)


def omega_tolerance(u: float, P: np.ndarray, H: np.ndarray, xstar: np.ndarray, L: int) -> np.ndarray:
    """eps (L+1, L+1) with |Omega^_ab - Omega_ab| <= eps_ab for the SUT's float Omega^.

    power vectors: v^_a = fl(P fl(H v^_{a-1})) = P H v^_{a-1} + eta_a with, componentwise,
        |eta_a| <= gamma_{2K} |P| |H| |v^_{a-1}|  (two matrix-vector products), so
        ||eta_a|| <= gamma_{2K} (|| |P||H||v_{a-1}| || + || |P||H| ||_F Delta_{a-1});
    propagated through the powers of M = P H: v^_a - v_a = sum_{t<=a} M^{a-t} eta_t, so
        ||v^_a - v_a|| <= Delta_a = sum_{t<=a} ||M^{a-t}||_2 ||eta_t||;
    traces: <v^_a, v^_b> - <v_a, v_b> <= Delta_a ||v^_b|| + (||v^_a|| + Delta_a) Delta_b, and the
        einsum over n K products and the division add gamma_{nK+1} sum_i ||v^_a|| ||v^_b|| / (nK).
    The float64 quantities used (||v_a||, |P||H||v|, ||M^k||_2) carry their own rounding, a
    u64-relative effect on a bound that is already first order in u; they are inflated by it.
    """
    H, xstar = np.asarray(H, np.float64), np.asarray(xstar, np.float64)
    n, K = xstar.shape
    Ps = _per_task(P, n)
    u64 = 2.0**-53
    g2k = tolerances.gamma(2 * K, u)
    vn = np.zeros((n, L + 1))
    dl = np.zeros((n, L + 1))
    for i in range(n):
        A = np.abs(Ps[i]) @ np.abs(H[i])
        a_f = _fro(A)
        M = Ps[i] @ H[i]
        m_f = _fro(M) + tolerances.gamma(K, u64) * a_f
        pw, Mk = [1.0], np.eye(K)
        for k in range(1, L + 1):
            Mk = Mk @ M
            # spectral norm of the float64 power, inflated by its relative and absolute rounding
            pw.append(float(np.linalg.norm(Mk, 2)) * (1 + tolerances.gamma(8 * K, u64))
                      + tolerances.gamma(k * K, u64) * m_f**k)
        v = xstar[i].copy()
        vn[i, 0] = _fro(v)
        etas = [0.0]
        for a in range(1, L + 1):
            etas.append(g2k * (_fro(A @ np.abs(v)) + a_f * dl[i, a - 1]))
            v = M @ v
            vn[i, a] = _fro(v) * (1 + tolerances.gamma(2 * K * a, u64))
            dl[i, a] = sum(pw[a - t] * etas[t] for t in range(1, a + 1))
    vh = vn + dl  # >= ||v^_a||
    eps = np.zeros((L + 1, L + 1))
    g_sum = tolerances.gamma(n * K + 1, u)
    for a in range(L + 1):
        for b in range(L + 1):
            prop = dl[:, a] * vh[:, b] + (vh[:, a] + dl[:, a]) * dl[:, b]
            eps[a, b] = (np.sum(prop) + g_sum * np.sum(vh[:, a] * vh[:, b])) / (n * K)
    return eps * (1 + g_sum)


def reconstruction_tolerance(u: float, eps: np.ndarray, omega_hat: np.ndarray, l: int) -> float:
    """Bound on |R^_rec,l - R_l| for R^_rec,l = fl(w^T Omega^ w) (SUT) and the exact R_l:
    sum |w_a w_b| eps_ab (the logged traces' error, amplified by the binomial weights, at most
    4^l max eps) + gamma_{2l+2} sum |w_a| |Omega^_ab| |w_b| (the two float sums of l+1 terms)."""
    w = np.abs(np.array(binomial_weights(l), np.float64))
    om = np.abs(np.asarray(omega_hat, np.float64)[: l + 1, : l + 1])
    amp = float(w @ eps[: l + 1, : l + 1] @ w)
    return (amp + tolerances.gamma(2 * l + 2, u) * float(w @ om @ w)) * (1 + 1e-12)


def evaluation_tolerance(u: float, omega_hat: np.ndarray, l: int) -> float:
    """Bound on |fl(w^T Omega^ w) - w^T Omega^ w| alone (the SUT's reconstruction arithmetic)."""
    w = np.abs(np.array(binomial_weights(l), np.float64))
    om = np.abs(np.asarray(omega_hat, np.float64)[: l + 1, : l + 1])
    return tolerances.gamma(2 * l + 2, u) * float(w @ om @ w) * (1 + 1e-12)


def direct_risk_tolerance(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, xstar: np.ndarray,
                          row: ExactRow, labels: np.ndarray, risk_hat: np.ndarray) -> np.ndarray:
    """Bound (l = 0..L) on |R^_dir,l - R_l| for the SUT decoder's measured risks
    R^_dir,l = fl(mean_i ||x^_l - x^*_i||^2 / K) against the exact R_l = K^{-1} mean ||(I-PH)^l x^*||^2.

    x^_l - x_l <= t_l: `tolerances.richardson_forward_error` (rho_i >= ||I - P H_i||_2 rigorous);
    the exact iterate from x_0 = 0 has x_l - x^* = -(I-PH)^l x^* + (I - (I-PH)^l)(x_true - x^*), so the
    label's rigorous error l_i adds (1 + rho_i^l) l_i; the float subtraction u ||e^||; squares
    (2 ||e|| + tau) tau; sums, mean and / K: gamma_{K+n+2} R^.
    """
    H, d, xstar = (np.asarray(a, np.float64) for a in (H, d, xstar))
    n, K = xstar.shape
    L = row.err_norms.shape[1] - 1
    Ps = _per_task(P, n)
    out = np.zeros(L + 1)
    for i in range(n):
        p_f, h_f, d_n = _fro(Ps[i]), _fro(H[i]), _fro(d[i])
        rho = float(row.rho[i])
        xs = _fro(xstar[i])
        for l in range(L + 1):
            x_norms = [xs + row.err_norms[i, k] + (1 + rho**k) * labels[i] for k in range(l + 1)]
            t = tolerances.richardson_forward_error(u, K, rho, p_f, h_f, d_n, x_norms) if l else 0.0
            e = row.err_norms[i, l]
            tau = t + (1 + rho**l) * labels[i] + u * (e + t + (1 + rho**l) * labels[i])
            out[l] += (2 * e + tau) * tau
    out = out / (n * K) + tolerances.gamma(K + n + 2, u) * np.abs(np.asarray(risk_hat, np.float64))
    return out * (1 + 1e-12)


# --------------------------------------------------------------------------- #
# 000 eq 17: the three listed parameters do not determine R_L for L >= 2
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Eq17Pair:
    """P_A = diag(0, 1/2, 1/2), P_B = diag(2/3, 1/6, 1/6), H = I_3, tasks x* = e_1, e_2, e_3
    (S = E x* x*^T = I/3).  Equal Tr(PH)/K, Tr(PHPH)/K, Tr(PH S H^T P^T)/K (1/3, 1/6, 1/18),
    equal R_1 = 1/6, but R_2 = 1/8 vs 211/1944."""

    m_A: tuple[Fraction, ...] = (Fraction(0), Fraction(1, 2), Fraction(1, 2))
    m_B: tuple[Fraction, ...] = (Fraction(2, 3), Fraction(1, 6), Fraction(1, 6))

    @property
    def K(self) -> int:
        return len(self.m_A)

    def triple(self, m: tuple[Fraction, ...]) -> tuple[Fraction, Fraction, Fraction]:
        """000 eq 17 with H-bar = I, S-bar = I/K: Tr(P)/K, Tr(P^2)/K, Tr(P S P^T)/K."""
        K = self.K
        return (sum(m) / K, sum(x * x for x in m) / K, sum(x * x for x in m) / (K * K))

    def risk(self, m: tuple[Fraction, ...], l: int) -> Fraction:
        """R_l = K^{-1} mean_k ||(I - P)^l e_k||^2 = K^{-2} sum_k (1 - m_k)^{2l}."""
        K = self.K
        return sum((1 - x) ** (2 * l) for x in m) / (K * K)

    def omega(self, m: tuple[Fraction, ...], a: int, b: int) -> Fraction:
        """Omega_ab = K^{-2} sum_k m_k^{a+b}."""
        K = self.K
        return sum(x ** (a + b) for x in m) / (K * K)


# --------------------------------------------------------------------------- #
# hypothesis: order parameters of any decoder
# --------------------------------------------------------------------------- #
OVERLAP_CLASSES = ("free_linear", "diagonal", "flexformer", "softmax")


@dataclass(frozen=True)
class OverlapCase:
    """A seeded decoder (class at its init) of size K, depth L, on n tasks of condition kappa."""

    cls: str
    K: int
    L: int
    n: int
    kappa: float
    seed: int


@st.composite
def overlap_cases(draw: st.DrawFn, max_K: int = 12, max_L: int = 10, max_n: int = 12) -> OverlapCase:
    return OverlapCase(
        cls=draw(st.sampled_from(OVERLAP_CLASSES)),
        K=draw(st.sampled_from(range(2, max_K + 1))),
        L=draw(st.integers(1, max_L)),
        n=draw(st.integers(1, max_n)),
        kappa=10.0 ** draw(st.floats(min_value=0.0, max_value=3.0)),
        seed=draw(SEEDS),
    )
