"""Property functions, references and strategies for the outer-dynamics family
(decoder.trajectory, decoder.excess_risk_modes, decoder.online_matches_population,
finite_task.erm, finite_task.rate; seed 002 sec 3.1-3.2, 11, 12.2, 12.5).

Inputs are the SUT's own float arrays (float32 values are exact in float64).  References:
- exact rational arithmetic (python-flint fmpq_mat) for the pseudo-inverses: P* = B C^+
  and P_N = Z D^T (D D^T)^+ are computed exactly, so a singular C or D D^T is exact too
  (C^+ = Y (Y^T C Y)^{-1} Y^T for a symmetric C whose range is spanned by the columns Y);
- arb balls (212 bits) for the trajectories, traces and norms;
- mpmath (50 digits) for the literal eigen-mode sum of decoder.excess_risk_modes;
- exact finite-sample inequalities for the statistical checks (Chebyshev + median of
  means with an exact binomial tail, Laurent-Massart chi-square bounds).
Tolerances are derived here, each with its rounding-error argument (u = unit roundoff).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import mpmath
import numpy as np
from flint import arb, arb_mat, fmpq, fmpq_mat
from hypothesis import strategies as st
from scipy import optimize, stats

from properties.reference import normbound
from properties.reference.ball import identity, vec_norm2
from properties.reference.convert import arb_upper, precision, to_arb, to_arb_mat, to_mpf, workdps
from properties.richardson import Comparison
from properties.strategies import SEEDS
from properties.tolerances import gamma

FALSE_ALARM = 1e-6  # family-wise false-alarm rate of every statistical check of this module


def _f64(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32/float64 data, got {a.dtype}")
    return a.astype(np.float64)


def _fro(a) -> float:
    """||a||_F of float data, rounded up by a relative 2^-40 (covers the float evaluation)."""
    return float(np.linalg.norm(_f64(a))) * (1 + 2.0**-40)


# --------------------------------------------------------------------------- #
# exact rational linear algebra
# --------------------------------------------------------------------------- #
def to_fmpq_mat(a) -> fmpq_mat:
    """Exact rational copy of a float matrix (every float is a dyadic rational)."""
    a = _f64(a)
    if a.ndim == 1:
        a = a[:, None]
    m, n = a.shape
    return fmpq_mat(m, n, [fmpq(*float(x).as_integer_ratio()) for x in a.ravel()])


def _cols(M: fmpq_mat, idx: Sequence[int]) -> fmpq_mat:
    rows = M.tolist()
    return fmpq_mat(M.nrows(), len(idx), [rows[i][j] for i in range(M.nrows()) for j in idx])


def psd_pinv_exact(C: fmpq_mat) -> tuple[fmpq_mat, int]:
    """(C^+, rank C) exactly, for a symmetric C: C^+ = Y (Y^T C Y)^{-1} Y^T with Y the
    pivot columns of C (a basis of its range)."""
    n = C.nrows()
    if C.ncols() != n or C.transpose() != C:
        raise ValueError("psd_pinv_exact needs a symmetric matrix")
    R, rank = C.rref()
    if rank == 0:
        return fmpq_mat(n, n), 0
    rows = R.tolist()
    piv = [next(j for j in range(n) if rows[i][j] != 0) for i in range(rank)]
    Y = _cols(C, piv)
    return Y * (Y.transpose() * C * Y).inv() * Y.transpose(), int(rank)


def fmpq_to_arb_mat(M: fmpq_mat) -> arb_mat:
    """Enclosure of a rational matrix (call inside a precision block)."""
    return arb_mat(M)


def arb_mid_mpf(x: arb) -> mpmath.mpf:
    """The midpoint of an arb ball as an exact mpf (float(x) would round it to 53 bits)."""
    man, exp = x.mid().man_exp()
    return mpmath.mpf((int(man), int(exp)))


def fmpq_to_mp_matrix(M: fmpq_mat) -> mpmath.matrix:
    out = mpmath.matrix(M.nrows(), M.ncols())
    for i, row in enumerate(M.tolist()):
        for j, x in enumerate(row):
            out[i, j] = mpmath.mpf(int(x.p)) / int(x.q)
    return out


@dataclass(frozen=True)
class Oracle:
    """The exact oracle of population moments (C, B): P* = B C^+ and what comes with it."""

    P_star: fmpq_mat
    C_pinv: fmpq_mat
    rank: int
    in_range: bool  # P* C = B exactly (the rows of B lie in the range of C)
    null_proj: fmpq_mat  # I - C^+ C, the orthogonal projector onto null(C)


def oracle_exact(C, B) -> Oracle:
    Cq, Bq = to_fmpq_mat(C), to_fmpq_mat(B)
    Cp, rank = psd_pinv_exact(Cq)
    Ps = Bq * Cp
    n = Cq.nrows()
    eye = fmpq_mat(n, n, [fmpq(int(i == j)) for i in range(n) for j in range(n)])
    return Oracle(Ps, Cp, rank, Ps * Cq == Bq, eye - Cp * Cq)


def _arb_fro_upper(M: arb_mat) -> float:
    return arb_upper(vec_norm2(M))


def pinv_oracle_tolerance(u: float, K: int, b_fro: float, c_fro: float, cpinv_2: float,
                          cpinv_fro: float) -> float:
    """Bound on ||fl(B pinv(C)) - B C^+||_F for the SUT's hermitian pseudo-inverse.

    eigh is backward stable: the computed eigendecomposition is exact for C + dC with
    ||dC||_2 <= gamma_{K^2} ||C||_F (Higham 2002 sec. 2.7/ch. 26 style p(K) u ||C||, p(K) = K^2);
    with the rank kept (the cutoff separates the null eigenvalues from the range ones), Wedin's
    theorem gives ||(C + dC)^+ - C^+||_2 <= 2 ||C^+||_2^2 ||dC||_2 / (1 - ||C^+||_2 ||dC||_2);
    forming V diag(1/lambda) V^T in floats adds gamma_K K ||C^+||_2 (|V| has ||.||_F^2 <= K),
    and the product with B adds gamma_K ||B||_F ||C^+||_F.  So
    ||dP*||_F <= ||B||_F (2 ||C^+||^2 dC / (1 - ||C^+|| dC) + gamma_K K ||C^+||) +
                 gamma_K ||B||_F ||C^+||_F (1 + that relative change).
    """
    dC = gamma(K * K, u) * c_fro
    q = cpinv_2 * dC
    if q >= 0.5:
        return math.inf  # the pseudo-inverse is not determined at this precision
    d_pinv = 2 * cpinv_2**2 * dC / (1 - q) + gamma(K, u) * K * cpinv_2
    return (b_fro * d_pinv + gamma(K, u) * b_fro * (cpinv_fro + math.sqrt(K) * d_pinv)) * (1 + 2.0**-40)


def oracle_check(P_star_sut, C, B, u: float, orc: Oracle | None = None) -> tuple[Comparison, float]:
    """SUT P* against the exact B C^+; returns the comparison and the rigorous upper bound
    on the SUT's error ||P*_SUT - P*||_F (used by the risk checks)."""
    orc = orc or oracle_exact(C, B)
    K = np.asarray(C).shape[0]
    with precision():
        Ps = fmpq_to_arb_mat(orc.P_star)
        Cp = fmpq_to_arb_mat(orc.C_pinv)
        err = _arb_fro_upper(Ps - to_arb_mat(_f64(P_star_sut)))
        cp2 = normbound.norm2_upper(Cp) if orc.rank else 0.0
        cpf = _arb_fro_upper(Cp)
    tol = pinv_oracle_tolerance(u, K, _fro(B), _fro(C), cp2, cpf)
    return Comparison(err, tol), err


# --------------------------------------------------------------------------- #
# decoder.trajectory
# --------------------------------------------------------------------------- #
def trajectory_tolerances(u: float, K: int, eta: float, c_fro: float, b_fro: float,
                          pstar_fro: float, e0_fro: float, rho: float, steps: int) -> list[float]:
    """tau_s >= ||P^_s - P_s||_F for s = 0..steps: the float recursion against exact arithmetic.

    The trainer computes P^_{t+1} = fl(P^_t - fl(fl(eta K) fl(fl(fl(P^_t C) - B) / K))).
    Entrywise (Higham ch. 3): fl(P C) = P C + E1, |E1| <= gamma_K |P||C|; the subtraction,
    the division by K, the product with fl(eta K) (itself rounded once) each add one relative
    rounding, and the last subtraction one more, so
    P^_{t+1} = P^_t - eta (P^_t C - B) + delta_t with
    ||delta_t||_F <= gamma_{K+5} eta (||P^_t||_F ||C||_F + ||B||_F) + u ||P^_{t+1}||_F.
    The exact recursion is affine with linear part X -> X (I - eta C), so the error obeys
    Delta_{t+1} = Delta_t (I - eta C) + delta_t and ||Delta_{t+1}|| <= rho ||Delta_t|| + ||delta_t||,
    rho >= ||I - eta C||_2 (rigorous).  ||P^_t|| <= ||P*|| + ||P_0 - P*|| rho^t + tau_t because
    P_t - P* = (P_0 - P*)(I - eta C)^t for the exact iterate.
    """
    g = gamma(K + 5, u)
    tau, out = 0.0, [0.0]
    for t in range(steps):
        p_t = pstar_fro + e0_fro * rho**t + tau
        a = g * eta * (p_t * c_fro + b_fro)
        q = pstar_fro + e0_fro * rho ** (t + 1) + rho * tau
        delta = (a + u * (q + a)) / (1 - u)
        tau = rho * tau + delta
        out.append(tau * (1 + 2.0**-40))
    return out


@dataclass(frozen=True)
class TrajectoryCheck:
    steps: list[int]
    errors: list[float]  # rigorous upper bounds on ||P^_s - (P* + (P_0 - P*)(I - eta C)^s)||_F
    tolerances: list[float]
    rho: float
    rank: int
    in_range: bool
    oracle: Comparison
    pstar_err: float  # rigorous upper bound on ||P*_SUT - P*||_F
    null_initial: float  # ||(P_0 - P*) Pi_null||_F: the part that (I - eta C)^s never contracts
    null_drift: list[float]  # ||(P^_s - P^_0) Pi_null||_F (rigorous upper): 0 up to rounding
    rel_err_sut: list[float]  # ||P^_s - P*||_F / ||P*||_F (midpoints, for figures)
    rel_err_pred: list[float]  # ||(P_0 - P*)(I - eta C)^s||_F / ||P*||_F
    pred_excess: list  # arb: K^{-1} Tr[E_s C E_s^T] of the exact iterate, E_s = (P_0-P*)(I-eta C)^s
    c_norm2: float  # rigorous upper bound on ||C||_2
    E0: arb_mat
    e0_norm: float  # ||P_0 - P*||_F (rigorous upper bound)

    @property
    def has_null_component(self) -> bool:
        """P_0 - P* has a component in null(C) (beyond the width of the exact reference)."""
        return self.null_initial > 2.0**-100 * (self.e0_norm + 1.0)

    @property
    def worst(self) -> Comparison:
        ratios = [e / t if t > 0 else (0.0 if e == 0 else math.inf) for e, t in zip(self.errors, self.tolerances)]
        i = int(np.argmax(ratios))
        return Comparison(self.errors[i], self.tolerances[i])

    @property
    def null_tolerances(self) -> list[float]:
        # (P^_s - P^_0) Pi_null = (P^_s - P_s) Pi_null - (P^_0 - P_0) Pi_null, P^_0 = P_0 (logged
        # exactly) and ||Pi_null||_2 = 1: bounded by the trajectory tolerance itself
        return self.tolerances


def trajectory_check(Ps: Sequence, steps: Sequence[int], C, B, eta: float, P_star_sut,
                     u: float) -> TrajectoryCheck:
    """decoder.trajectory against arb: P^_s vs P* + (P_0 - P*)(I - eta C)^s at each checkpoint.

    Ps[i] is the SUT's P at step steps[i]; steps[0] must be 0 (P_0 is taken from the log).
    """
    if steps[0] != 0:
        raise ValueError("the first checkpoint must be s = 0")
    K = np.asarray(C).shape[0]
    orc = oracle_exact(C, B)
    ocmp, pstar_err = oracle_check(P_star_sut, C, B, u, orc)
    with precision():
        Pstar = fmpq_to_arb_mat(orc.P_star)
        Pi0 = fmpq_to_arb_mat(orc.null_proj)
        Cm = to_arb_mat(_f64(C))
        M = identity(K) - to_arb(float(eta)) * Cm
        E0 = to_arb_mat(_f64(Ps[0])) - Pstar
        pstar_fro = _arb_fro_upper(Pstar)
        e0_fro = _arb_fro_upper(E0)
        null0 = E0 * Pi0
        null_initial = float(vec_norm2(null0).mid())
        pstar_mid = float(vec_norm2(Pstar).mid())
        errors, null_drift, rel_sut, rel_pred, pred_excess = [], [], [], [], []
        Ms, last = identity(K), 0
        for s, P in zip(steps, Ps):
            if s < last:
                raise ValueError("checkpoints must be increasing")
            if s > last:
                Ms = Ms * (M ** (s - last))
                last = s
            Es = E0 * Ms
            Pa = to_arb_mat(_f64(P))
            errors.append(_arb_fro_upper(Pa - (Pstar + Es)))
            null_drift.append(_arb_fro_upper((Pa - to_arb_mat(_f64(Ps[0]))) * Pi0))
            denom = pstar_mid if pstar_mid > 0 else 1.0
            rel_sut.append(float(vec_norm2(Pa - Pstar).mid()) / denom)
            rel_pred.append(float(vec_norm2(Es).mid()) / denom)
            pred_excess.append((Es * Cm * Es.transpose()).trace() / K)
        rho = normbound.norm2_upper(M)
        c2 = normbound.norm2_upper(Cm)
    taus = trajectory_tolerances(u, K, float(eta), _fro(C), _fro(B), pstar_fro, e0_fro, rho, max(steps))
    # + the width of the reference itself: P* is rational, its 212-bit enclosure has radius
    # <= 2^-200 |P*| entrywise, which the rigorous error bound includes (so s = 0 is not 0)
    slack = 2.0**-150 * (pstar_fro + e0_fro)
    return TrajectoryCheck(list(steps), errors, [taus[s] + slack for s in steps], rho, orc.rank, orc.in_range,
                           ocmp, pstar_err, null_initial, null_drift, rel_sut, rel_pred, pred_excess,
                           c2, E0, e0_fro)


# --------------------------------------------------------------------------- #
# decoder.excess_risk_modes and finite_task.erm (risks)
# --------------------------------------------------------------------------- #
def mode_sum_mp(P0, P_star: fmpq_mat, C, eta: float, steps: Sequence[int],
                dps: int = 50) -> tuple[list[mpmath.mpf], list[list[float]]]:
    """The seed's sum K^{-1} sum_i lambda_i (1 - eta lambda_i)^{2s} ||(P_0 - P*) q_i||^2 literally,
    with C = Q Lambda Q^T from mpmath's symmetric eigensolver at `dps` digits; also the mode
    weights w_{s,i} (seed 002 sec 3.1) at each s."""
    K = np.asarray(C).shape[0]
    with workdps(dps):
        lam, Q = mpmath.eigsy(mpmath.matrix(_f64(C).tolist()))
        E0 = mpmath.matrix(_f64(P0).tolist()) - fmpq_to_mp_matrix(P_star)
        norms = []
        for i in range(K):
            v = E0 * Q[:, i]
            norms.append(mpmath.fsum(v[j] ** 2 for j in range(K)))
        e = to_mpf(eta)
        sums, weights = [], []
        for s in steps:
            terms = [lam[i] * (1 - e * lam[i]) ** (2 * s) * norms[i] for i in range(K)]
            tot = mpmath.fsum(terms)
            sums.append(tot / K)
            weights.append([float(t / tot) if tot != 0 else 0.0 for t in terms])
        return sums, weights


def excess_exact(P, P_star: arb_mat, C) -> arb:
    """K^{-1} Tr[(P - P*) C (P - P*)^T] (arb) for float P, exact P*, float C."""
    K = np.asarray(C).shape[0]
    with precision():
        E = to_arb_mat(_f64(P)) - P_star
        return (E * to_arb_mat(_f64(C)) * E.transpose()).trace() / K


def population_risk_exact(P, C, B, S) -> arb:
    """R(P) = K^{-1} (Tr(P C P^T) - 2 Tr(P B^T) + Tr S) from the moments (arb)."""
    K = np.asarray(C).shape[0]
    with precision():
        Pa = to_arb_mat(_f64(P))
        Cm, Bm, Sm = (to_arb_mat(_f64(x)) for x in (C, B, S))
        return ((Pa * Cm * Pa.transpose()).trace() - 2 * (Pa * Bm.transpose()).trace() + Sm.trace()) / K


def oracle_risk_exact(orc: Oracle, B, S) -> arb:
    """R(P*) = K^{-1} (Tr S - Tr(P* B^T)) (uses P* C P*^T = P* B^T, valid when P* C = B)."""
    K = np.asarray(B).shape[0]
    with precision():
        Ps = fmpq_to_arb_mat(orc.P_star)
        return (to_arb_mat(_f64(S)).trace() - (Ps * to_arb_mat(_f64(B)).transpose()).trace()) / K


def risk_eval_tolerance(u: float, K: int, p_fro: float, c_fro: float, b_fro: float, tr_s: float) -> float:
    """Bound on |fl(R(P)) - R(P)| for `models.outer.population_risk`.

    quad = sum((P C) * P): gamma_K for P C, one rounding per product, K^2 - 1 additions ->
    gamma_{K^2+K} sum |P||C| o |P| <= gamma_{K^2+K} ||P||_F^2 ||C||_F; lin = sum(P * B):
    gamma_{K^2} ||P||_F ||B||_F; trace: gamma_K Tr S; quad - 2 lin + tr and the division by
    K: three more roundings.  Total <= gamma_{K^2+K+3} (||P||^2 ||C|| + 2 ||P|| ||B|| + Tr S) / K.
    """
    return gamma(K * K + K + 3, u) * (p_fro**2 * c_fro + 2 * p_fro * b_fro + abs(tr_s)) / K * (1 + 2.0**-40)


def excess_propagation(K: int, c_norm2: float, excess_up: float, err: float) -> float:
    """|K^{-1}||(E + D) C^{1/2}||_F^2 - K^{-1}||E C^{1/2}||_F^2| <= K^{-1}(2 ||E C^{1/2}|| ||C||^{1/2} d + ||C|| d^2)
    with ||E C^{1/2}||_F^2 = K * excess and ||D||_F <= d."""
    a = math.sqrt(max(K * excess_up, 0.0) * c_norm2)
    return (2 * a * err + c_norm2 * err * err) / K * (1 + 2.0**-40)


# --------------------------------------------------------------------------- #
# finite_task.erm
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class FiniteFit:
    P_N: fmpq_mat  # exact Z D^T (D D^T)^+
    rank: int
    normal_eq_exact: bool  # P_N C_N == B_N exactly (rational)
    dpinv_2: float  # rigorous upper bound on ||D^+||_2 = 1 / sigma_r(D)


def finite_fit_exact(D, Z) -> FiniteFit:
    """P_N = Z D^T (D D^T)^+ in exact rational arithmetic (D, Z are K x N, tasks as columns)."""
    Dq, Zq = to_fmpq_mat(D), to_fmpq_mat(Z)
    N = Dq.ncols()
    G = Dq * Dq.transpose()
    Gp, rank = psd_pinv_exact(G)
    PN = Zq * Dq.transpose() * Gp
    CN, BN = G / N, Zq * Dq.transpose() / N
    with precision():
        # ||D^+||_2^2 = ||(D D^T)^+||_2
        dp2 = math.sqrt(normbound.norm2_upper(fmpq_to_arb_mat(Gp))) * (1 + 2.0**-40) if rank else 0.0
    return FiniteFit(PN, int(rank), PN * CN == BN, dp2)


def finite_fit_tolerance(u: float, K: int, N: int, rank: int, z_fro: float, d_fro: float,
                         dpinv_2: float) -> float:
    """Bound on ||fl(Z pinv(D)) - Z D^+||_F (SVD-based pinv, rank decided correctly).

    The computed SVD is exact for D + dD with ||dD||_2 <= gamma_{K N} ||D||_F (backward
    stability, p(K, N) = K N); Wedin: ||(D + dD)^+ - D^+||_2 <= 2 ||D^+||^2 ||dD|| / (1 - ||D^+|| ||dD||);
    assembling V Sigma^+ U^T adds gamma_{K+N} r ||D^+||_2; the product with Z adds
    gamma_N ||Z||_F ||D^+_computed||_F <= gamma_N ||Z||_F sqrt(r) (||D^+|| + change).
    """
    dD = gamma(K * N, u) * d_fro
    q = dpinv_2 * dD
    if q >= 0.5:
        return math.inf
    change = 2 * dpinv_2**2 * dD / (1 - q) + gamma(K + N, u) * rank * dpinv_2
    return (z_fro * change + gamma(N, u) * z_fro * math.sqrt(rank) * (dpinv_2 + change)) * (1 + 2.0**-40)


def well_posed_rank(D, u: float, rtol_factor: float) -> bool:
    """True when the numerical rank of D is unambiguous at unit roundoff u for a pinv cutoff
    rtol_factor * max(K, N) * 2u * sigma_1: every nonzero singular value is >= 16 times the
    cutoff (float64 SVD of the exact data; its error is ~1e-16 sigma_1, far below the margin).
    Exactly zero singular values are recognised by the exact rank."""
    D = _f64(D)
    s = np.linalg.svd(D, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return True
    r = int(finite_rank_exact(D))
    cutoff = rtol_factor * max(D.shape) * 2 * u * s[0]
    return r == 0 or s[r - 1] >= 16 * cutoff


def finite_rank_exact(D) -> int:
    return int(to_fmpq_mat(D).rank())


# --------------------------------------------------------------------------- #
# decoder.online_matches_population: exact first and second moments of online SGD
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OnlineMoments:
    mean: list[np.ndarray]  # E[P_s], s = 0..steps (the population recursion)
    var: list[np.ndarray]  # Var(P_s) entrywise
    expected_risk: list[float]  # E R(P_s) over the SGD noise
    population_risk: list[float]  # R(E[P_s]): the predicted population curve


def online_moments(C, B, S, eta: float, batch: int, P0, steps: int) -> OnlineMoments:
    """Exact mean and second moment of minibatch SGD P+ = P - (eta/b) sum_n (P d_n - z_n) d_n^T
    with (d, z*) jointly Gaussian (moments C, B, S), fresh independent batches each step.

    Conditional on P: the increment has mean -eta (P C - B) and, with u = P d - z*,
    Cov((u d^T)_ia, (u d^T)_jb) = Sigma_u,ij C_ab + Sigma_ud,ib Sigma_ud,ja (Isserlis), where
    Sigma_u = P C P^T - P B^T - B P^T + S and Sigma_ud = P C - B.  Both are quadratic in P, so
    (mean, second moment T[i,a,j,b] = E P_ia P_jb) obey a closed linear recursion (float64).
    """
    C, B, S = (_f64(x) for x in (C, B, S))
    K = C.shape[0]
    A = np.eye(K) - eta * C
    m = _f64(P0).copy()
    T = np.einsum("ia,jb->iajb", m, m)
    IA = np.kron(np.eye(K), A)
    IC = np.kron(np.eye(K), C)
    means, vars_, exp_risk, pop_risk = [], [], [], []

    def risks(m, T):
        ET = np.einsum("icie,ce->", T, C)
        er = (ET - 2 * np.sum(m * B) + np.trace(S)) / K
        pr = (np.sum((m @ C) * m) - 2 * np.sum(m * B) + np.trace(S)) / K
        return er, pr

    for s in range(steps + 1):
        means.append(m.copy())
        vars_.append(np.einsum("iaia->ia", T) - m * m)
        er, pr = risks(m, T)
        exp_risk.append(float(er))
        pop_risk.append(float(pr))
        if s == steps:
            break
        Tm = T.reshape(K * K, K * K)
        mA = m @ A
        first = (IA.T @ Tm @ IA).reshape(K, K, K, K)
        first += eta * (np.einsum("ia,jb->iajb", B, mA) + np.einsum("ia,jb->iajb", mA, B))
        first += eta**2 * np.einsum("ia,jb->iajb", B, B)
        Eu = np.einsum("icje,ce->ij", T, C) - m @ B.T - B @ m.T + S
        X = (IC.T @ Tm @ IC).reshape(K, K, K, K).transpose(0, 3, 2, 1)  # sum_ce C_cb T_icje C_ea
        mC = m @ C
        Eud = X - np.einsum("ib,ja->iajb", B, mC) - np.einsum("ib,ja->iajb", mC, B) \
            + np.einsum("ib,ja->iajb", B, B)
        T = first + (eta**2 / batch) * (np.einsum("ij,ab->iajb", Eu, C) + Eud)
        m = m - eta * (m @ C - B)
    return OnlineMoments(means, vars_, exp_risk, pop_risk)


@functools.cache
def mom_plan(R: int, alpha: float) -> tuple[int, int, float]:
    """Median-of-means design (groups k odd, size m = R // k, Chebyshev factor c) minimising
    the threshold c sigma / sqrt(m) subject to P(Bin(k, 1/c^2) >= (k+1)/2) <= alpha.

    Each group mean deviates by >= c sigma/sqrt(m) with probability <= 1/c^2 (Chebyshev with
    the exact variance); the median deviates that far only if (k+1)/2 independent groups do.
    """
    best = (1, R, 1 / math.sqrt(alpha))
    best_score = best[2] / math.sqrt(R)
    for k in range(3, min(R, 401) + 1, 2):
        need = (k + 1) // 2

        def excess(p: float) -> float:
            return float(stats.binom.sf(need - 1, k, p)) - alpha

        if excess(1e-15) > 0:
            continue
        p = optimize.brentq(excess, 1e-15, 0.5, xtol=1e-15, rtol=1e-12)
        while excess(p) > 0:  # make sure the root is on the safe side
            p *= 1 - 1e-9
        c = 1 / math.sqrt(p)
        m = R // k
        score = c / math.sqrt(m)
        if score < best_score:
            best, best_score = (k, m, c), score
    return best


@dataclass(frozen=True)
class MeanTest:
    deviation: float
    threshold: float

    @property
    def ratio(self) -> float:
        return self.deviation / self.threshold if self.threshold > 0 else (0.0 if self.deviation == 0 else math.inf)


def median_of_means_test(samples: np.ndarray, mu: np.ndarray, var: np.ndarray, alpha: float,
                         allowance: float = 0.0) -> MeanTest:
    """Worst |median-of-means - mu| / threshold over the entries of samples (R, ...).

    Rejection at `alpha` per entry (exact: Chebyshev within groups, binomial across groups).
    `allowance` is added to the threshold (the SUT's rounding).
    """
    x = _f64(samples)
    R = x.shape[0]
    k, m, c = mom_plan(R, alpha)
    groups = x[: k * m].reshape(k, m, *x.shape[1:]).mean(axis=1)
    med = np.median(groups, axis=0)
    # the exact variance from the float64 recursion: inflate by 1e-9 relative for its rounding
    thr = c * np.sqrt(np.maximum(_f64(var), 0.0) * (1 + 1e-9) / m) + allowance
    # + the float64 rounding of the group means themselves (m-term sums and a division)
    thr = thr + gamma(m + 1, 2.0**-53) * np.max(np.abs(x), axis=0)
    dev = np.abs(med - _f64(mu))
    ratio = np.where(thr > 0, dev / np.where(thr > 0, thr, 1), np.where(dev > 0, np.inf, 0.0))
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return MeanTest(float(dev[i]), float(thr[i]))


def laurent_massart(Sigma_e, n: int, x: float) -> tuple[float, float]:
    """(upper, lower) deviations of the observed risk (n K)^{-1} sum_n ||e_n||^2, e_n ~ N(0, Sigma_e)
    i.i.d., about its mean Tr(Sigma_e)/K, each exceeded with probability <= e^{-x}
    (Laurent & Massart 2000, Lemma 1: weights a = eigenvalues/(n K), each repeated n times;
    ||a||_2 = ||Sigma_e||_F / (K sqrt(n)), ||a||_inf <= ||Sigma_e||_2 / (n K) <= ||Sigma_e||_F / (n K)).
    """
    Se = _f64(Sigma_e)
    K = Se.shape[0]
    f = _fro(Se)
    a2 = f / (K * math.sqrt(n))
    ainf = f / (n * K)
    return 2 * a2 * math.sqrt(x) + 2 * ainf * x, 2 * a2 * math.sqrt(x)


def residual_covariance(P, C, B, S) -> np.ndarray:
    """Cov(P d - z*) = P C P^T - P B^T - B P^T + S (float64)."""
    P, C, B, S = (_f64(x) for x in (P, C, B, S))
    return P @ C @ P.T - P @ B.T - B @ P.T + S


def risk_float(P, C, B, S) -> float:
    """R(P) in float64 (the expected value of an observed risk; relative error ~1e-15)."""
    return float(np.trace(residual_covariance(P, C, B, S)) / np.asarray(C).shape[0])


# --------------------------------------------------------------------------- #
# finite_task.rate
# --------------------------------------------------------------------------- #
def expected_excess_gaussian(sigma: float, rank: int, N: int) -> float:
    """E[R(P_N) - R(P*)] = sigma^2 E Tr(C (D D^T)^+) = sigma^2 r / (N - r - 1) exactly, for
    d = G g, g ~ N(0, I_r), G of full column rank r, z* = W d + sigma xi (inverse-Wishart mean;
    infinite for N <= r + 1)."""
    if N <= rank + 1:
        return math.inf
    return sigma**2 * rank / (N - rank - 1)


@dataclass(frozen=True)
class LogLogFit:
    slope: float
    slope_se: float
    intercept: float
    z: float

    @property
    def ci(self) -> tuple[float, float]:
        return self.slope - self.z * self.slope_se, self.slope + self.z * self.slope_se


def normal_quantile(alpha: float) -> float:
    """z with P(|N(0,1)| > z) = alpha."""
    return float(stats.norm.isf(alpha / 2))


def loglog_fit(Ns: Sequence[int], samples: Sequence[np.ndarray], alpha: float) -> LogLogFit:
    """Weighted least squares of log(mean excess) on log N; var(log mean) ~ s^2 / (R mean^2)
    (delta method); the CI is the asymptotic-normal one at level 1 - alpha."""
    x = np.log(np.asarray(Ns, dtype=np.float64))
    means = np.array([np.mean(s) for s in samples])
    v = np.array([np.var(s, ddof=1) / len(s) for s in samples]) / means**2
    w = 1 / v
    xb = np.sum(w * x) / np.sum(w)
    y = np.log(means)
    yb = np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (x - xb) ** 2)
    slope = np.sum(w * (x - xb) * (y - yb)) / sxx
    return LogLogFit(float(slope), float(math.sqrt(1 / sxx)), float(yb - slope * xb), normal_quantile(alpha))


def exact_curve_slope(Ns: Sequence[int], values: Sequence[float], weights: Sequence[float]) -> float:
    """Weighted least-squares slope of log(values) on log N with the fit's weights."""
    x, y, w = np.log(np.asarray(Ns, float)), np.log(np.asarray(values, float)), np.asarray(weights, float)
    xb, yb = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    return float(np.sum(w * (x - xb) * (y - yb)) / np.sum(w * (x - xb) ** 2))


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PopulationCase:
    """A population-moment run: task config, eta = c_eta / lambda_max(C), steps, P_0."""

    K: int
    rank: int
    kind: str
    kappa: float
    c_eta: float
    steps: int
    init: str  # "random" | "zero"
    seed: int
    noise: float = 0.5


@st.composite
def population_cases(draw: st.DrawFn, max_K: int = 8, max_steps: int = 300) -> PopulationCase:
    K = draw(st.sampled_from(range(2, max_K + 1)))
    singular = draw(st.booleans())
    if singular:
        rank, kind = draw(st.integers(1, K - 1)), "integer"
    else:
        rank, kind = K, draw(st.sampled_from(("generic", "integer")))
    kappa = 10.0 ** draw(st.floats(0.0, 3.0))
    # 0 < c < 2 is the contracting range; up to 2.1 the identity must hold while diverging
    c_eta = draw(st.floats(0.05, 2.1))
    steps = draw(st.integers(0, max_steps))
    init = draw(st.sampled_from(("random", "zero")))
    return PopulationCase(K, rank, kind, kappa, c_eta, steps, init, draw(SEEDS),
                          draw(st.sampled_from((0.0, 0.5, 2.0))))


@dataclass(frozen=True)
class FiniteCase:
    """N tasks of a linear task distribution for finite_task.erm."""

    K: int
    rank: int
    kind: str
    base: str
    kappa: float
    N: int
    seed: int
    noise: float = 0.5


@st.composite
def finite_cases(draw: st.DrawFn, max_K: int = 8, max_N: int = 64) -> FiniteCase:
    K = draw(st.sampled_from(range(2, max_K + 1)))
    singular = draw(st.booleans())
    if singular:
        # exactly singular C needs exactly low-rank data: integer G with Rademacher g
        rank, kind, base = draw(st.integers(1, K - 1)), "integer", "rademacher"
    else:
        rank, kind = K, draw(st.sampled_from(("generic", "integer")))
        base = draw(st.sampled_from(("gaussian", "rademacher")))
    kappa = 10.0 ** draw(st.floats(0.0, 2.0))
    N = draw(st.sampled_from(range(1, max_N + 1)))
    return FiniteCase(K, rank, kind, base, kappa, N, draw(SEEDS), draw(st.sampled_from((0.1, 0.5, 1.0))))


@dataclass(frozen=True)
class OnlineCase:
    """Replicated online SGD runs on a Gaussian linear task distribution."""

    K: int
    rank: int
    kappa: float
    c_eta: float
    batch: int
    steps: int
    noise: float
    seed: int
    init: str = "random"


@st.composite
def online_cases(draw: st.DrawFn, max_K: int = 4, max_steps: int = 30) -> OnlineCase:
    K = draw(st.sampled_from(range(2, max_K + 1)))
    rank = draw(st.integers(1, K))
    return OnlineCase(
        K=K, rank=rank, kappa=10.0 ** draw(st.floats(0.0, 2.0)),
        c_eta=draw(st.floats(0.1, 1.5)), batch=draw(st.sampled_from((1, 2, 4, 8, 16))),
        steps=draw(st.integers(1, max_steps)), noise=draw(st.floats(0.1, 1.0)), seed=draw(SEEDS),
        init=draw(st.sampled_from(("random", "zero"))),
    )


def online_rounding_allowance(u: float, K: int, batch: int, s: int, eta: float, c_fro: float,
                              b_fro: float, p_scale: float) -> float:
    """First-order envelope of the SUT's rounding in s online SGD steps (added to the
    statistical threshold, so the exact-arithmetic test is not upset by float noise).

    One step computes residuals P d - z (gamma_{K+1}), the batch gradient (b-term sums:
    gamma_{b+2}) and the update (two roundings): |delta| <= gamma_{K+b+6} (eta (|P||C_hat| +
    |B_hat|) + |P|).  Batch moments are random; the envelope uses 4 (||C||_F + ||B||_F) for
    their size (||C_hat||_F <= ||C||_F + ||C_hat - C||_F, the fluctuation being <= 3x the
    mean size for b >= 1 except with small probability), p_scale >= ||P_t||_F, and adds the
    s steps without contraction.  Not a rigorous bound: it is ~1e-13 (float64) and ~1e-5
    (float32) of the scale, far below the statistical thresholds it is added to.
    """
    per_step = gamma(K + batch + 6, u) * (eta * 4 * (p_scale * c_fro + b_fro) + p_scale)
    return s * per_step
