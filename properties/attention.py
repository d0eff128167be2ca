"""Family F (attention): Q/K gauge and linear-vs-nonlinear update maps (seed 002 sec 8, 12.10).

numpy / mpmath / arb only (no torch).  Strategies, tolerance derivations and the
high-precision references of certify/test_attention.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
import scipy.linalg
from flint import arb, arb_mat
from hypothesis import strategies as st

from properties.reference.ball import solve as arb_solve
from properties.reference.convert import arb_lower, arb_upper, precision, to_arb_mat, to_mpf, workdps
from properties.strategies import SEEDS
from properties.tolerances import gamma

LINEAR_CLASSES = ("free_linear", "diagonal", "flexformer_exp", "flexformer_rbf")


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class GaugeCase:
    """A Flexformer of size K, width m (seeded) and an invertible A = U diag(sigma) V^T with
    cond_2(A) ~ kappa (U, V Haar orthogonal from `a_seed`, log-uniform singular values)."""

    K: int
    m: int
    seed: int
    a_seed: int
    kappa: float

    @property
    def A(self) -> np.ndarray:
        g = np.random.default_rng(self.a_seed)
        U, _ = np.linalg.qr(g.standard_normal((self.m, self.m)))
        V, _ = np.linalg.qr(g.standard_normal((self.m, self.m)))
        t = g.uniform(-0.5, 0.5, self.m)
        t[0], t[-1] = -0.5, 0.5
        sigma = self.kappa ** t
        return (U * sigma) @ V.T


@st.composite
def gauge_cases(draw: st.DrawFn, max_K: int = 16, max_m: int = 16) -> GaugeCase:
    K = draw(st.sampled_from(range(2, max_K + 1)))
    m = draw(st.sampled_from(range(1, max_m + 1)))
    kappa = 10.0 ** draw(st.floats(min_value=0.0, max_value=4.0))
    return GaugeCase(K, m, draw(SEEDS), draw(SEEDS), kappa)


@dataclass(frozen=True)
class MapCase:
    """A preconditioner class of size K (seeded) and N seeded inputs (z, H, d)."""

    cls: str
    K: int
    seed: int
    data_seed: int
    N: int

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.random.default_rng(self.data_seed)
        K, N = self.K, self.N
        H = np.eye(K) + g.standard_normal((N, K, K)) / math.sqrt(K)
        z = g.standard_normal((N, K))
        d = g.standard_normal((N, K))
        return z, H, d


@st.composite
def map_cases(draw: st.DrawFn, classes: tuple[str, ...], max_K: int = 8) -> MapCase:
    cls = draw(st.sampled_from(classes))
    K = draw(st.sampled_from(range(2, max_K + 1)))
    return MapCase(cls, K, draw(SEEDS), draw(SEEDS), 3 * K)


# --------------------------------------------------------------------------- #
# gauge: tolerances
# --------------------------------------------------------------------------- #
U64 = 2.0**-53


def gauge_param_errors(A: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, Wq1: np.ndarray,
                       Wk1: np.ndarray, u: float) -> tuple[float, float]:
    """(dQ, dK): bounds on ||Wq1 - A W_Q||_F and ||Wk1 - A^{-T} W_K||_F for the SUT's transform
    (float64 on the CPU, cast to the dtype with unit roundoff u).

    dQ: matmul gamma_m(u64) ||A||_F ||W_Q||_F (Higham 3.5) plus the cast 2u ||Wq1||_F.
    dK: LU solve with A^T: (A^T + dA) x^ = b, ||dA||_2 <= gamma_{3m}(u64) || |L||U| ||_F
    (Higham Thm 9.4; L, U from scipy's getrf, the LAPACK routine torch calls), so
    ||x^ - x|| <= eta ||x||, eta = e/(1-e), e = ||A^{-1}||_2 ||dA||_2 (Higham Thm 7.2), and
    ||x|| <= ||x^||/(1-eta); plus the cast 2u ||Wk1||_F.  ||A^{-1}||_2 = 1/sigma_min(A) from
    LAPACK's SVD (relative accuracy ~ m u64, covered by the factor 1.01).
    """
    m = A.shape[0]
    A = np.asarray(A, dtype=np.float64)
    dQ = gamma(m, U64) * np.linalg.norm(A) * np.linalg.norm(W_Q) + 2 * u * np.linalg.norm(Wq1)
    _, L, Uf = scipy.linalg.lu(A.T)
    dA = gamma(3 * m, U64) * np.linalg.norm(np.abs(L) @ np.abs(Uf))
    inv_norm = 1.01 / np.linalg.svd(A, compute_uv=False)[-1]
    e = inv_norm * dA
    if e >= 0.5:
        raise ValueError(f"A too ill-conditioned for the solve bound: ||A^-1|| ||dA|| = {e}")
    eta = e / (1 - e)
    xn = np.linalg.norm(Wk1) * (1 + 2 * u) / (1 - eta)
    dK = eta * xn + 2 * u * np.linalg.norm(Wk1)
    return float(dQ), float(dK)


def gauge_product_tolerance(dQ: float, dK: float, qn: float, kn: float, m: int, u: float
                            ) -> tuple[float, float]:
    """(params, total) bounds on ||fl(Wq1^T Wk1) - W_Q^T W_K||_F.

    Wq1^T Wk1 - W_Q^T W_K = dQ^T (A^{-T}W_K) + (A W_Q)^T dK + dQ^T dK with
    ||A W_Q|| <= qn + dQ, ||A^{-T} W_K|| <= kn + dK (qn, kn: norms of the SUT's Wq1, Wk1);
    the product in the dtype adds gamma_m(u) qn kn (Higham 3.5).
    """
    params = dQ * (kn + dK) + (qn + dQ) * dK + dQ * dK
    return params, params + gamma(m, u) * qn * kn


def exp_logit_error(E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, u: float) -> float:
    """max_ij |fl(logit_ij) - E_i W_Q^T W_K E_j^T / sqrt(m)| for the SUT's computation
    q = E W_Q^T, k = E W_K^T, q k^T / sqrt(m): three chained inner products of length
    <= max(m, width) (gamma_{3m}, Higham 3.5) in absolute values, plus u for the division and
    u for sqrt(m) rounded: gamma_{3m+2} (|E||W_Q^T|)(|E||W_K^T|)^T / sqrt(m)."""
    m = W_Q.shape[0]
    n = max(m, E.shape[1])
    bound = (np.abs(E) @ np.abs(W_Q).T) @ (np.abs(E) @ np.abs(W_K).T).T / math.sqrt(m)
    return float(gamma(3 * n + 2, u) * bound.max())


def softmax_tolerance(delta: float, K: int, u: float, spread: float) -> float:
    """Entrywise bound on |softmax^(l1) - softmax^(l0)| for computed logits within delta of each
    other (sup norm): p_i(l1) in p_i(l0) [e^{-2 delta}, e^{2 delta}] gives (e^{2 delta} - 1);
    each computed softmax has relative error <= gamma_{K+5}(u) (exp of x - max with the
    subtraction's u * spread absorbed into delta, exp within 2 ulp, a K-term sum, one division)."""
    d = delta + 2 * u * spread
    g = gamma(K + 5, u)
    return math.expm1(2 * d) + 2 * g * (1 + math.expm1(2 * d))


# --------------------------------------------------------------------------- #
# arb / mpmath references
# --------------------------------------------------------------------------- #
def _fro_upper(D: arb_mat) -> float:
    s = arb(0)
    for x in D.entries():
        s += x * x
    return arb_upper(s.nonnegative_part().sqrt())


def gauge_invariant_error_upper(W_Q: np.ndarray, W_K: np.ndarray, M1_float: np.ndarray) -> float:
    """Rigorous upper bound (arb, 212 bits) on ||M1_float - W_Q^T W_K||_F with W_Q, W_K the
    original module's exact float parameters."""
    with precision(212):
        M = to_arb_mat(np.asarray(W_Q).T) * to_arb_mat(W_K)
        return _fro_upper(M - to_arb_mat(M1_float))


def rbf_attention_mp(E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray) -> mpmath.matrix:
    """exp(-||q_i - k_j||^2 / (2m)) normalised over j, q_i = W_Q E_i, k_j = W_K E_j (50 digits)."""
    with workdps():
        Em, Q, Kk = (mpmath.matrix(np.asarray(x).tolist()) for x in (E, W_Q, W_K))
        q, k = Em * Q.T, Em * Kk.T
        K, m = q.rows, q.cols
        A = mpmath.matrix(K, K)
        for i in range(K):
            row = [mpmath.exp(-sum((q[i, f] - k[j, f]) ** 2 for f in range(m)) / (2 * m)) for j in range(K)]
            s = mpmath.fsum(row)
            for j in range(K):
                A[i, j] = row[j] / s
        return A


def mp_max_abs_diff(a: mpmath.matrix, b: mpmath.matrix) -> mpmath.mpf:
    return max(abs(a[i, j] - b[i, j]) for i in range(a.rows) for j in range(a.cols))


def softmax_delta_mp(r, z, h, E, W_Q, W_K, v, s) -> list:
    """Reference of the softmax update map (models.SoftmaxUpdate docstring, seed 002 sec 8):
    tau_i = [r_i, z_i, H_ii, E_i], Delta_i = sum_j softmax_j(q_i.k_j/sqrt(m)) v_j r_j + s_i r_i,
    at 50 digits from the exact float parameters."""
    with workdps():
        K = len(r)
        m = np.asarray(W_Q).shape[0]
        tau = [[to_mpf(r[i]), to_mpf(z[i]), to_mpf(h[i])] + [to_mpf(x) for x in E[i]] for i in range(K)]
        Wq, Wk = np.asarray(W_Q), np.asarray(W_K)
        q = [[mpmath.fsum(to_mpf(Wq[a, b]) * t[b] for b in range(len(t))) for a in range(m)] for t in tau]
        k = [[mpmath.fsum(to_mpf(Wk[a, b]) * t[b] for b in range(len(t))) for a in range(m)] for t in tau]
        sm = mpmath.sqrt(m)
        out = []
        for i in range(K):
            lg = [mpmath.fsum(q[i][a] * k[j][a] for a in range(m)) / sm for j in range(K)]
            mx = max(lg)
            w = [mpmath.exp(x - mx) for x in lg]
            tot = mpmath.fsum(w)
            out.append(mpmath.fsum(w[j] / tot * to_mpf(v[j]) * tau[j][0] for j in range(K)) + to_mpf(s[i]) * tau[i][0])
        return out


# --------------------------------------------------------------------------- #
# linear identity and the projection diagnostic
# --------------------------------------------------------------------------- #
def update_identity_error(P: np.ndarray, H: np.ndarray, z: np.ndarray, d: np.ndarray,
                          delta_float: np.ndarray) -> float:
    """Rigorous upper bound (arb) on ||delta_float - P (d - H z)||_2 for one input."""
    with precision(212):
        r = to_arb_mat(d) - to_arb_mat(H) * to_arb_mat(z)
        D = to_arb_mat(P) * r - to_arb_mat(delta_float)
        return _fro_upper(D)


def projection_matrix(D: arb_mat, R: arb_mat) -> arb_mat:
    """P_proj = E[Delta r^T] E[r r^T]^+ (seed 002 sec 8) with samples as columns of D, R (K x N):
    (D R^T)(R R^T)^{-1}; R R^T is invertible when R has full row rank (arb's solve fails
    otherwise), and then the pseudo-inverse is the inverse.  Computed as the transpose of
    (R R^T)^{-1} (R D^T) (R R^T symmetric)."""
    G = R * R.transpose()
    X = arb_solve(G, R * D.transpose())
    return X.transpose()


def projection_residual(deltas: np.ndarray, z: np.ndarray, H: np.ndarray, d: np.ndarray
                        ) -> tuple[float, float, np.ndarray]:
    """(lower, upper) rigorous bounds (arb, 212 bits) on sum_n ||Delta_n - P_proj r_n||^2 (N times
    the sample E) and P_proj's midpoint, for the SUT's Delta_n (rows of `deltas`, exact floats)
    and the exact residuals r_n = d_n - H_n z_n (in arb).  The exact minimiser P_proj of the
    sample least squares has residual <= the residual of any P."""
    with precision(212):
        N, K = deltas.shape
        cols = []
        for n in range(N):
            r = to_arb_mat(d[n]) - to_arb_mat(H[n]) * to_arb_mat(z[n])
            cols.append([r[i, 0] for i in range(K)])
        R = arb_mat([[cols[n][i] for n in range(N)] for i in range(K)])
        D = to_arb_mat(np.asarray(deltas).T)
        P = projection_matrix(D, R)
        E = D - P * R
        s = arb(0)
        for x in E.entries():
            s += x * x
        s = s.nonnegative_part()
        mid = np.array([[float(P[i, j].mid()) for j in range(P.ncols())] for i in range(P.nrows())])
        return max(arb_lower(s), 0.0), arb_upper(s), mid


def gauge_exact_change_upper(W_Q: np.ndarray, W_K: np.ndarray, Wq1: np.ndarray, Wk1: np.ndarray) -> float:
    """Rigorous upper bound (arb) on ||Wq1^T Wk1 - W_Q^T W_K||_F, both products exact."""
    with precision(212):
        M0 = to_arb_mat(np.asarray(W_Q).T) * to_arb_mat(W_K)
        M1 = to_arb_mat(np.asarray(Wq1).T) * to_arb_mat(Wk1)
        return _fro_upper(M1 - M0)
