"""Property functions for the encoder + decoder family (001 sec 5.1-5.3; 002 sec 6.1-6.6).

Inputs are the SUT's own logged matrices and vectors as float arrays (float32 values are
taken exactly); references are arb enclosures (python-flint, 212 bits), exact rationals
(fmpq, for the pseudo-inverse of a possibly singular C_s) or mpmath (scalar closures at
50 digits).  Each check returns the rigorous error against the derived tolerance.

Tolerances (u = unit roundoff of the SUT's dtype, gamma_n = n u / (1 - n u), Higham ch. 3;
norms of |A| bounded entrywise and then in Frobenius norm):
* one decoder step fl(P - eta (fl(P C) - B)):  gamma_{r+3} (|P| + eta |P||C| + eta |B|);
* a lifted vector fl(U z - beta): gamma_{r+1} (|U||z| + |beta|); fl(U fl(a - b)): gamma_{r+2} |U||a - b|;
* a Sigma-quadratic form fl(((v Sigma) * v).sum()): gamma_{2K} |v|^T |Sigma| |v|;
* a sample mean of n numbers: gamma_n mean |x|;
* the symmetric eigensolver behind pinv: backward error ||dC||_2 <= p(r) u ||C||_2 with
  p(r) = 4 r^2 (LAPACK Users' Guide sec 4.7 calls p(n) "a modestly growing function of n";
  its own error estimates take p(n) = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import numpy as np
from flint import arb, arb_mat, fmpq, fmpq_mat

from properties import tolerances
from properties.reference import ball, normbound
from properties.reference.convert import MP_DPS, arb_lower, arb_upper, precision, to_arb, to_arb_mat, to_mpf
from properties.richardson import Comparison, _f64

# Floating-point evaluation of a tolerance formula (a positive sum of a few hundred terms)
# errs by far less than this relative margin; every tolerance is multiplied by it.
_EVAL_MARGIN = 1 + 1e-10


def _g(n: int, u: float) -> float:
    return tolerances.gamma(n, u)


# --------------------------------------------------------------------------- #
# exact rationals: the pseudo-inverse oracle P* = B C^+
# --------------------------------------------------------------------------- #
def _fmpq(x: float) -> fmpq:
    f = Fraction(float(x))
    return fmpq(f.numerator, f.denominator)


def to_fmpq_mat(a: np.ndarray) -> fmpq_mat:
    a = _f64(a)
    if a.ndim == 1:
        a = a[:, None]
    return fmpq_mat([[_fmpq(v) for v in row] for row in a.tolist()])


def pinv_exact(C: np.ndarray) -> fmpq_mat:
    """Exact Moore-Penrose pseudo-inverse of a float matrix (any rank), in rationals.

    Full-rank factorization C = F G (F: the pivot columns of C, G: the nonzero rows of
    rref(C)); then C^+ = G^T (G G^T)^{-1} (F^T F)^{-1} F^T (Ben-Israel & Greville).
    """
    Cq = to_fmpq_mat(C)
    m, n = Cq.nrows(), Cq.ncols()
    R, rank = Cq.rref()
    if rank == 0:
        return fmpq_mat(n, m)
    pivots, row = [], 0
    for j in range(n):
        if row < rank and R[row, j] != 0:
            pivots.append(j)
            row += 1
    F = fmpq_mat([[Cq[i, j] for j in pivots] for i in range(m)])
    G = fmpq_mat([[R[i, j] for j in range(n)] for i in range(rank)])
    Gt, Ft = G.transpose(), F.transpose()
    return Gt * (G * Gt).inv() * (Ft * F).inv() * Ft


@dataclass(frozen=True)
class ExactOracle:
    """P* = B C^+ exactly (as an arb ball of the exact rational), and whether B C^+ C = B."""

    Pstar: arb_mat
    consistent: bool
    rank: int
    cplus_norm: float  # rigorous upper bound on ||C^+||_2


def exact_oracle(B: np.ndarray, C: np.ndarray) -> ExactOracle:
    Bq, Cq = to_fmpq_mat(B), to_fmpq_mat(C)
    Cp = pinv_exact(C)
    Pq = Bq * Cp
    consistent = (Pq * Cq) == Bq
    with precision():
        Pa = arb_mat(Pq)
        Cpa = arb_mat(Cp)
    return ExactOracle(Pa, bool(consistent), Cq.rank(), normbound.norm2_upper(Cpa))


# --------------------------------------------------------------------------- #
# oracle.tracking and dynamics.noncommuting
# --------------------------------------------------------------------------- #
def update_tolerance(P: np.ndarray, C: np.ndarray, B: np.ndarray, eta: float, u: float) -> float:
    """Frobenius bound on fl(P - eta (fl(P C) - B)) - (P - eta (P C - B)).

    fl(P C): gamma_r |P||C|; the subtraction, the product with eta and the final subtraction
    one rounding each, so the total is <= gamma_{r+3} (|P| + eta |P||C| + eta |B|) entrywise.
    """
    P, C, B = np.abs(_f64(P)), np.abs(_f64(C)), np.abs(_f64(B))
    r = P.shape[-1]
    bound = _g(r + 3, u) * (P + eta * (P @ C) + eta * B)
    return float(np.linalg.norm(bound)) * _EVAL_MARGIN


def _arb(a: np.ndarray) -> arb_mat:
    return to_arb_mat(_f64(a))


def _eye(r: int) -> arb_mat:
    return ball.identity(r)


def tracking_residual(P_s: np.ndarray, P_next: np.ndarray, C_s: np.ndarray, eta: float,
                      star_s: arb_mat, star_next: arb_mat) -> float:
    """Rigorous upper bound on the Frobenius norm of
    (P_{s+1} - P*_{s+1}) - [(P_s - P*_s)(I - eta C_s) + P*_s - P*_{s+1}] (002 sec 6.2)."""
    with precision():
        Ps, Pn, Cs = _arb(P_s), _arb(P_next), _arb(C_s)
        r = Cs.nrows()
        lhs = Pn - star_next
        rhs = (Ps - star_s) * (_eye(r) - to_arb(eta) * Cs) + star_s - star_next
        return arb_upper(ball.vec_norm2(lhs - rhs))


def oracle_tolerance(B: np.ndarray, C: np.ndarray, cplus_norm: float, u: float) -> float:
    """Frobenius bound on fl(B pinv(C)) - B C^+ for an eigensolver-based pinv (see module doc).

    dC = p u ||C||, p = 4 r^2; (C + dC)^+ - C^+ <= ||C^+||^2 dC / (1 - ||C^+|| dC) on the
    range (first-order Wedin bound with the rank kept); assembling Q diag(1/l) Q^T from a
    Q orthogonal to p u: (2 p u + gamma_r) ||C^+|| / (1 - ||C^+|| dC); the product with B:
    gamma_r; spectral -> Frobenius: sqrt(r).
    """
    B, C = _f64(B), _f64(C)
    r = C.shape[0]
    eps = 4 * r * r * u
    dC = eps * normbound.norm2_upper(C)
    if cplus_norm * dC >= 0.5:
        return math.inf
    den = 1 - cplus_norm * dC
    dinv = cplus_norm**2 * dC / den
    assembly = (2 * eps + _g(r, u)) * cplus_norm / den
    prod = _g(r, u) * cplus_norm / den
    bnorm = float(np.linalg.norm(B))
    return math.sqrt(r) * bnorm * (dinv + assembly + prod) * _EVAL_MARGIN


def oracle_error(Pstar_logged: np.ndarray, exact: ExactOracle) -> float:
    with precision():
        return ball.norm2_diff_upper(exact.Pstar, _f64(Pstar_logged))


def ordered_product(factors: list) -> arb_mat:
    """prod_{t=a}^{b} M_t = M_a M_{a+1} ... M_b (002 sec 6.6): left to right in t."""
    out = factors[0]
    for M in factors[1:]:
        out = out * M
    return out


def noncommuting_closed_form(E0: arb_mat, Ms: list[arb_mat], Ds: list[arb_mat]) -> arb_mat:
    """E_s = E_0 prod_{t<s} M_t + sum_{tau<s} D_tau prod_{t=tau+1}^{s-1} M_t, s = len(Ms).

    Suffix products S_tau = prod_{t=tau+1}^{s-1} M_t are built as ordered_product([M_tau, S_tau]),
    so the order convention lives in `ordered_product` alone."""
    s = len(Ms)
    r = E0.nrows()
    with precision():
        if s == 0:
            return E0
        suffix = _eye(r)  # S_{s-1} = I (empty product)
        total = arb_mat(r, r)
        for tau in range(s - 1, -1, -1):
            total = total + Ds[tau] * suffix
            suffix = ordered_product([Ms[tau], suffix])  # S_{tau-1} = M_tau S_tau
        return E0 * suffix + total


def propagated_tolerance(step_tols: list[float], rhos: list[float]) -> float:
    """sum_t tol_t prod_{t'=t+1}^{s-1} rho_t' (rho_t >= ||I - eta C_t||_2 rigorous)."""
    total, acc = 0.0, 1.0
    for t in range(len(step_tols) - 1, -1, -1):
        total += step_tols[t] * acc
        acc *= rhos[t]
    return total * (1 + 1e-12) * _EVAL_MARGIN


def contraction_upper(C: np.ndarray, eta: float) -> float:
    """Rigorous ||I - eta C||_2 upper bound (I - eta C formed in arb from exact C)."""
    with precision():
        M = _eye(C.shape[0]) - to_arb(eta) * _arb(C)
    return normbound.norm2_upper(M)


def commutator_norms(Cs: np.ndarray) -> tuple[float, tuple[int, int]]:
    """max_{t,t'} ||[C_t, C_t']||_F in float, and the maximizing pair."""
    Cs = _f64(Cs)
    X = np.einsum("aij,bjk->abik", Cs, Cs)
    comm = X - np.swapaxes(X, 0, 1)
    norms = np.sqrt((comm**2).sum(axis=(-1, -2)))
    a, b = np.unravel_index(int(np.argmax(norms)), norms.shape)
    return float(norms[a, b]), (int(a), int(b))


def commutator_lower(C1: np.ndarray, C2: np.ndarray) -> float:
    """Rigorous lower bound on ||C1 C2 - C2 C1||_F (0 when it cannot be certified positive)."""
    with precision():
        a, b = _arb(C1), _arb(C2)
        n = ball.vec_norm2(a * b - b * a)
    return max(0.0, arb_lower(n))


# --------------------------------------------------------------------------- #
# encdec.latent_identity: the latent system itself
# --------------------------------------------------------------------------- #
def latent_system_check(U: np.ndarray, H: np.ndarray, c: np.ndarray, A: np.ndarray, d: np.ndarray,
                        u: float) -> tuple[Comparison, Comparison]:
    """SUT A_s, d_s against exact U^T H U, U^T c: tolerances gamma_{2K} || |U|^T |H| |U| ||_F
    (two products of inner size K) and gamma_K || |c| |U| ||."""
    U, H, c = _f64(U), _f64(H), _f64(c)
    K = U.shape[0]
    with precision():
        Ua = _arb(U)
        A_ex = Ua.transpose() * _arb(H) * Ua
        d_ex = Ua.transpose() * _arb(c)
        eA = ball.norm2_diff_upper(A_ex, _f64(A))
        ed = ball.norm2_diff_upper(d_ex, _f64(d).reshape(-1, 1))
    aU = np.abs(U)
    tA = _g(2 * K, u) * float(np.linalg.norm(aU.T @ np.abs(H) @ aU)) * _EVAL_MARGIN
    td = _g(K, u) * float(np.linalg.norm(np.abs(c) @ aU)) * _EVAL_MARGIN
    return Comparison(eA, tA), Comparison(ed, td)


# --------------------------------------------------------------------------- #
# encdec.risk_decomposition
# --------------------------------------------------------------------------- #
RISK_TERMS = ("e2e", "floor", "dec", "cross")


@dataclass(frozen=True)
class RiskCheck:
    exact: dict[str, arb]  # exact sample means from the SUT's latent vectors
    errors: dict[str, float]  # rigorous |SUT mean - exact mean|
    tolerances: dict[str, float]
    identity_exact_holds: bool  # R_e2e - R_floor - R_dec - cross contains 0 (exact means)
    sut_identity_residual: float  # rigorous |R^_e2e - R^_floor - R^_dec - cross^| of the SUT floats
    bound_exact_holds: bool  # ||e||^2 <= 2||g||^2 + 2||f||^2 for every task, exactly
    bound_sut_violations: int  # tasks whose SUT Euclidean values violate it beyond rounding
    max_bound_ratio: float  # max ||e||^2 / (2||g||^2 + 2||f||^2) (midpoints)

    @property
    def identity_tolerance(self) -> float:
        return sum(self.tolerances.values())


def decomposition_identity(means: dict[str, arb]) -> arb:
    """R_e2e - (R_floor + R_dec + 2 E<beta_dag - beta, U(z_L - z_dag)>_Sx) (002 sec 6.3)."""
    return means["e2e"] - (means["floor"] + means["dec"] + means["cross"])


def _col_dots(X: arb_mat, Y: arb_mat) -> list[arb]:
    """Column-wise dot products of two K x n ball matrices."""
    K, n = X.nrows(), X.ncols()
    xs, ys = X.entries(), Y.entries()  # row-major
    out = []
    for j in range(n):
        s = arb(0)
        for i in range(K):
            s += xs[i * n + j] * ys[i * n + j]
        out.append(s)
    return out


def risk_decomposition_check(U: np.ndarray, Sigma: np.ndarray, beta: np.ndarray, zL: np.ndarray,
                             zdag: np.ndarray, sut_means: dict[str, float],
                             sut_tasks: dict[str, np.ndarray], u: float) -> RiskCheck:
    """The four sample means of 002 sec 6.3 on n tasks, exact from the SUT's own latent
    vectors z_L, z_dag (certified by encdec.latent_identity), U, Sigma_x and beta, against the
    SUT's float means; the exact decomposition; and the per-task bound of 001 sec 5.1,
    ||x_L - x*||^2 <= 2||dec||^2 + 2||enc||^2 (Euclidean), exact and for the SUT's floats.

    beta, zL, zdag: (n,K), (n,r), (n,r).  sut_tasks: the SUT's per-task e2e, floor, dec,
    cross (Sigma_x) and e2, f2, g2 (Euclidean) values.
    """
    U, Sg, beta, zL, zdag = map(_f64, (U, Sigma, beta, zL, zdag))
    n, K = beta.shape
    r = U.shape[1]
    with precision():
        Ua, Sa = _arb(U), _arb(Sg)
        ZL, ZD, Bt = _arb(zL.T), _arb(zdag.T), _arb(beta.T)
        E = Ua * ZL - Bt
        F = Ua * ZD - Bt
        G = Ua * (ZL - ZD)
        SF, SG = Sa * F, Sa * G
        per = {"e2e": _col_dots(E, Sa * E), "floor": _col_dots(F, SF), "dec": _col_dots(G, SG),
               "cross": [2 * x for x in _col_dots(F, SG)]}
        exact = {k: sum(v, arb(0)) / n for k, v in per.items()}
        errors = {k: arb_upper(abs(exact[k] - to_arb(sut_means[k]))) for k in RISK_TERMS}
        identity_holds = bool(decomposition_identity(exact).contains(0))
        sut_resid = arb_upper(abs(to_arb(sut_means["e2e"]) - to_arb(sut_means["floor"])
                                  - to_arb(sut_means["dec"]) - to_arb(sut_means["cross"])))
        e2, f2, g2 = _col_dots(E, E), _col_dots(F, F), _col_dots(G, G)
        bound_holds = all(bool(a <= 2 * b + 2 * c) for a, b, c in zip(e2, g2, f2))
        ratios = []
        for a, b, c in zip(e2, g2, f2):
            den = float((2 * b + 2 * c).mid())
            ratios.append(float(a.mid()) / den if den > 0 else 0.0)

    # --- derived tolerances, evaluated in float64 from positive bounds
    aU, aS = np.abs(U), np.abs(Sg)
    de = _g(r + 1, u) * (np.abs(zL) @ aU.T + np.abs(beta))  # |e^ - e*|, e = U z_L - beta
    df = _g(r + 1, u) * (np.abs(zdag) @ aU.T + np.abs(beta))  # |f^ - f*|, f = U z_dag - beta
    dg = _g(r + 2, u) * (np.abs(zL - zdag) @ aU.T)  # |g^ - g*|, g = U (z_L - z_dag)
    # |v*| and |v^| are both <= |v (float64 evaluation)| + 2 delta
    ve = np.abs(zL @ U.T - beta) + 2 * de
    vf = np.abs(zdag @ U.T - beta) + 2 * df
    vg = np.abs((zL - zdag) @ U.T) + 2 * dg

    def quad(a, b):  # a^T |Sigma| b per task
        return ((a @ aS) * b).sum(-1)

    g2K, gn = _g(2 * K, u), _g(n, u)
    # per task: evaluation gamma_{2K} |v|^T|S||v| + perturbation delta^T |S| (|v^| + |v*|)
    per_tol = {
        "e2e": g2K * quad(ve, ve) + quad(de, 2 * ve),
        "floor": g2K * quad(vf, vf) + quad(df, 2 * vf),
        "dec": g2K * quad(vg, vg) + quad(dg, 2 * vg),
        "cross": 2 * (g2K * quad(vf, vg) + quad(df, vg) + quad(vf, dg)),
    }
    # the mean of n float values: gamma_n mean |x^|
    tols = {k: float(per_tol[k].mean() + gn * np.mean(np.abs(_f64(sut_tasks[k])))) * _EVAL_MARGIN
            for k in RISK_TERMS}

    # SUT Euclidean bound per task: |fl(||v^||^2) - ||v*||^2| <= gamma_{K+1} |v|^2 + delta (2|v|)
    gK = _g(K + 1, u)
    te = gK * (ve**2).sum(-1) + (de * (2 * ve)).sum(-1)
    tf = gK * (vf**2).sum(-1) + (df * (2 * vf)).sum(-1)
    tg = gK * (vg**2).sum(-1) + (dg * (2 * vg)).sum(-1)
    e2s, f2s, g2s = (_f64(sut_tasks[k]) for k in ("e2", "f2", "g2"))
    slack = (te + 2 * tf + 2 * tg) * _EVAL_MARGIN
    sut_viol = int(np.sum(e2s > 2 * g2s + 2 * f2s + slack))
    return RiskCheck(exact, errors, tols, identity_holds, sut_resid, bound_holds, sut_viol, max(ratios))


# --------------------------------------------------------------------------- #
# encdec.decoder_bound
# --------------------------------------------------------------------------- #
def rigorous_norm(M: np.ndarray) -> float:
    """Rigorous upper bound on ||M||_2 (the bound's ||Sigma_x||_2 and rho_z)."""
    return normbound.norm2_upper(_f64(M))


def rho_z_upper(P: np.ndarray, A: np.ndarray) -> float:
    """rho_z = ||I - P_z A_s||_2, rigorous upper bound (properties.reference.normbound.rho_upper)."""
    return normbound.rho_upper(_f64(P), _f64(A))


@dataclass(frozen=True)
class DecoderBoundTask:
    exact_holds: bool  # exact ||U (z_L - z_dag)||^2_Sx <= ||Sx|| rho^{2L} ||z_dag||^2, certainly
    actual_upper: float  # rigorous upper end of the exact per-task decoder loss
    actual_lower: float
    bound: float  # rigorous upper end of ||Sx|| rho^{2L} ||z_dag||^2
    bound_lower: float
    rho: float
    rho_certified: bool  # rho >= a rigorous lower bound on ||I - P A||_2


def decoder_bound_task(U: np.ndarray, Sigma: np.ndarray, P: np.ndarray, A: np.ndarray, d: np.ndarray,
                       L: int, sigma_norm: float) -> DecoderBoundTask:
    """R_dec <= ||Sigma_x||_2 E[rho_z^{2L} ||z_dag||^2] (002 sec 6.3) for one task: the exact
    decoder loss of the checkpoint's z_L (z_0 = 0) on the SUT's latent system (A, d)."""
    U, Sg, P, A, d = map(_f64, (U, Sigma, P, A, d))
    rho = rho_z_upper(P, A)
    certified = normbound.certify_upper_bound(normbound.identity_minus_product(P, A), rho)
    with precision():
        zdag = ball.solve(A, d.reshape(-1, 1))
        err = ball.richardson_error(P, A, zdag, L)  # z_L - z_dag = -(I - P A)^L z_dag
        g = _arb(U) * err
        actual = (g.transpose() * _arb(Sg) * g)[0, 0]
        nz = ball.vec_norm2(zdag)
        bound = to_arb(sigma_norm) * to_arb(rho) ** (2 * L) * nz * nz
        holds = bool(actual <= bound)
        return DecoderBoundTask(holds, arb_upper(actual), arb_lower(actual), arb_upper(bound),
                                arb_lower(bound), rho, certified)


# --------------------------------------------------------------------------- #
# dynamics.commuting_scalar (mpmath)
# --------------------------------------------------------------------------- #
def gain_closed_form(g0: float, sigma: float, b: float, eta: float, s: int, dps: int = MP_DPS) -> mpmath.mpf:
    """g(s) = g* + (g(0) - g*)(1 - eta sigma)^s, g* = b / sigma (002 sec 6.5); for sigma = 0
    the limit g(0) + s eta b."""
    with mpmath.workdps(dps):
        g0, sg, b, eta = map(to_mpf, (g0, sigma, b, eta))
        if sg == 0:
            return g0 + s * eta * b
        gstar = b / sg
        return gstar + (g0 - gstar) * (1 - eta * sg) ** s


def gain_tolerance(gs: list[float], sigma: float, b: float, eta: float, u: float) -> float:
    """Propagated rounding of g_{t+1} = fl(g_t - eta (fl(g_t sigma) - b)) (diagonal entries of
    the trainer's G - eta (G Sigma_z - Sigma_bz); the off-diagonal terms are exact zeros):
    delta_t <= gamma_4 (|g_t| + eta |g_t| sigma + eta |b|), propagated by |1 - eta sigma|."""
    q = abs(1 - eta * sigma)
    total = 0.0
    for gt in gs:
        total = total * q + _g(4, u) * (abs(gt) + eta * abs(gt) * abs(sigma) + eta * abs(b))
    return total * (1 + 1e-12) * _EVAL_MARGIN


def p_closed_form(p0: float, cs: list[float], bs: list[float], eta: float, dps: int = MP_DPS) -> mpmath.mpf:
    """p(s) = p(0) prod_{t<s}(1 - eta c_t) + sum_{tau<s} eta b_tau prod_{t=tau+1}^{s-1}(1 - eta c_t)
    (002 sec 6.5), s = len(cs)."""
    with mpmath.workdps(dps):
        eta = to_mpf(eta)
        total = mpmath.mpf(0)
        suffix = mpmath.mpf(1)
        for tau in range(len(cs) - 1, -1, -1):
            total += eta * to_mpf(bs[tau]) * suffix
            suffix *= 1 - eta * to_mpf(cs[tau])
        return to_mpf(p0) * suffix + total


def p_tolerance(ps: list[float], cs: list[float], bs: list[float], eta: float, r: int, u: float) -> float:
    """Propagated rounding of the diagonal decoder steps (update_tolerance per entry, r-term
    products of which r - 1 terms are exact zeros), propagated by |1 - eta c_t|."""
    total = 0.0
    for pt, ct, bt in zip(ps, cs, bs):
        total = total * abs(1 - eta * ct) + _g(r + 3, u) * (abs(pt) + eta * abs(pt) * abs(ct) + eta * abs(bt))
    return total * (1 + 1e-12) * _EVAL_MARGIN


def commuting_weights(W_diag: np.ndarray, C_diag: np.ndarray, a_diag: np.ndarray, dps: int = MP_DPS) -> list:
    """w_i(s) = E[(U_s^T Sx U_s)_ii (z_dag_{s,i})^2] = W_ii C_ii / a_i^2: the Sigma_x-mass of
    latent mode i of z_dag = A^{-1} d (E[d d^T] = C diagonal), so that
    R_dec(s, L) = E||U (z_L - z_dag)||^2_Sx = sum_i w_i (1 - p_i a_i)^{2L} (002 sec 6.3, 6.5)."""
    with mpmath.workdps(dps):
        return [to_mpf(w) * to_mpf(c) / to_mpf(a) ** 2 for w, c, a in zip(W_diag, C_diag, a_diag)]


def rdec_closed_form(weights: list, p: np.ndarray, a: np.ndarray, L: int, dps: int = MP_DPS) -> mpmath.mpf:
    with mpmath.workdps(dps):
        return mpmath.fsum(w * (1 - to_mpf(pi) * to_mpf(ai)) ** (2 * L) for w, pi, ai in zip(weights, p, a))


def smallest_subnormal(u: float) -> float:
    """eta of the dtype with unit roundoff u: 2^-1074 (float64), 2^-149 (float32)."""
    return {2.0**-53: 2.0**-1074, 2.0**-24: 2.0**-149}[u]


def rdec_tolerance(weights: list, p: np.ndarray, a: np.ndarray, L: int, u: float,
                   W_diag: np.ndarray, Z_diag: np.ndarray) -> float:
    """Rounding of the trainer's matrix evaluation Tr(W M^L Z M^{L T}) on diagonal inputs:
    m^ = fl(1 - fl(p a)) errs by eps = gamma_2 (|m| + |p a|); every other entry is a product
    chain (M^L: L - 1 products; inv(A), Z = A^{-1} C A^{-1}, W = U^T Sx U, the three products of
    the trace argument, the r-term trace) of relative error gamma_N, N = 2L + r + 11.  So
    |R^ - R| <= sum_i w_i [(|m_i| + eps_i)^{2L} (1 + gamma_N) - |m_i|^{2L}].
    Gradual underflow (values below the normal range, e.g. float32 R_dec ~ 1e-42) adds at
    most eta/2 per operation (eta the smallest subnormal), amplified by the later factors of
    the chain: N (eta/2) (1 + W_ii)(1 + Z_ii) max(1, |m_i| + eps_i)^{2L} per mode."""
    r = len(weights)
    N = 2 * L + r + 11
    gN = _g(N, u)
    half_eta = smallest_subnormal(u) / 2
    total = 0.0
    for w, pi, ai, Wi, Zi in zip(weights, p, a, W_diag, Z_diag):
        pa = abs(float(pi) * float(ai))
        m = abs(1 - float(pi) * float(ai))
        eps = _g(2, u) * (m + pa)
        total += float(w) * ((m + eps) ** (2 * L) * (1 + gN) - m ** (2 * L))
        total += N * half_eta * (1 + abs(float(Wi))) * (1 + abs(float(Zi))) * max(1.0, m + eps) ** (2 * L)
    return total * (1 + 1e-12) * _EVAL_MARGIN
