"""Closure family: exact constructions, strategies, references and tolerances
(002 sec 7: no scalar risk closure; 000 sec 7: spectra-only obstruction).

Exact arithmetic: rationals (fractions.Fraction object arrays for the SUT's own operator-form
step, flint fmpq_mat for the independent reference) and arb balls (python-flint) for the
spectra and the depth-1 risks.  Float inputs are converted exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from flint import arb, arb_mat, fmpq, fmpq_mat
from hypothesis import strategies as st

from properties import tolerances
from properties.reference import ball, normbound
from properties.reference.convert import _as_exact_float64, arb_lower, arb_upper, precision, to_arb_mat

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


# --------------------------------------------------------------------------- #
# exact rational helpers
# --------------------------------------------------------------------------- #
def frac_array(a) -> np.ndarray:
    """Exact Fraction object-array copy of a float/int array (an object array passes through)."""
    arr = np.asarray(a)
    if arr.dtype == object:
        return np.vectorize(Fraction, otypes=[object])(arr)
    f64 = _as_exact_float64(arr, "frac_array")
    return np.vectorize(Fraction, otypes=[object])(f64)


def to_fmpq_mat(a) -> fmpq_mat:
    arr = frac_array(a)
    if arr.ndim == 1:
        arr = arr[:, None]
    return fmpq_mat([[fmpq(x.numerator, x.denominator) for x in row] for row in arr])


def fmpq_to_fraction(x: fmpq) -> Fraction:
    return Fraction(int(x.p), int(x.q))


def fmpq_mat_to_frac(M: fmpq_mat) -> np.ndarray:
    return np.array([[fmpq_to_fraction(x) for x in row] for row in M.tolist()], dtype=object)


def as_float_array(a: np.ndarray) -> np.ndarray:
    """Round an exact array to float64 (the construction handed to the backend SUT)."""
    return np.vectorize(float, otypes=[np.float64])(np.asarray(a, dtype=object))


def _trace(M: fmpq_mat) -> fmpq:
    return sum((M[i, i] for i in range(M.nrows())), fmpq(0))


# --------------------------------------------------------------------------- #
# 002 sec 7: eigenmode states of the outer step
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ModeConstruction:
    """Exact rational inputs of the outer step P <- P - eta (P C - B).

    C = Q diag(lam) Q^T (Q rational orthogonal, columns q_k), B = P* C (so P* = B C^{-1} is
    the fixed point), two initial decoders P0_A = P* + a q_i^T and P0_B = P* + b q_j^T: the
    errors lie on single eigenvectors, R = Tr(E C E^T) gives R_0^A = ||a||^2 lam_i and
    R_0^B = ||b||^2 lam_j, equal to r0 by the choice of a, b.
    """

    Q: np.ndarray
    C: np.ndarray
    B: np.ndarray
    Pstar: np.ndarray
    P0_A: np.ndarray
    P0_B: np.ndarray
    eta: Fraction
    lam: tuple[Fraction, ...]
    i: int
    j: int
    r0: Fraction

    @property
    def K(self) -> int:
        return self.C.shape[0]

    def describe(self) -> dict:
        return {"K": self.K, "eta": str(self.eta), "lambda": [str(x) for x in self.lam],
                "i": self.i, "j": self.j, "R0": str(self.r0),
                "eta_lambda_i": str(self.eta * self.lam[self.i]),
                "eta_lambda_j": str(self.eta * self.lam[self.j])}


def _mode_construction(Q: np.ndarray, lam, Pstar: np.ndarray, a, b, i: int, j: int,
                       eta: Fraction) -> ModeConstruction:
    Q = np.asarray(Q, dtype=object)
    K = Q.shape[0]
    D = np.diag(np.array(lam, dtype=object))
    C = Q @ D @ Q.T
    B = Pstar @ C
    a = np.array(a, dtype=object).reshape(K, 1)
    b = np.array(b, dtype=object).reshape(K, 1)
    P0_A = Pstar + a @ Q[:, i].reshape(1, K)
    P0_B = Pstar + b @ Q[:, j].reshape(1, K)
    rA = sum(x * x for x in a.ravel()) * lam[i]
    rB = sum(x * x for x in b.ravel()) * lam[j]
    if rA != rB:
        raise ValueError(f"construction has R_0^A = {rA} != R_0^B = {rB}")
    return ModeConstruction(Q, C, B, Pstar, P0_A, P0_B, Fraction(eta), tuple(Fraction(x) for x in lam),
                            i, j, Fraction(rA))


def canonical_scalar_construction() -> ModeConstruction:
    """The 002 sec 7 counterexample with rational data: K = 3, eta = 1/4,
    lam = (18/25, 56/25, 1) so eta lam_1 = 0.18, eta lam_2 = 0.56; Q = [[1,2,2],[2,1,-2],[2,-2,1]]/3;
    a = (7, 1, 0)/6 (||a||^2 = 25/18), b = (15, 10, 5)/28 (||b||^2 = 25/56), so
    R_0^A = R_0^B = 1 and R_1^A = (41/50)^2 = 0.6724, R_1^B = (11/25)^2 = 0.1936 exactly."""
    F = Fraction
    Q = np.array([[F(1, 3), F(2, 3), F(2, 3)],
                  [F(2, 3), F(1, 3), F(-2, 3)],
                  [F(2, 3), F(-2, 3), F(1, 3)]], dtype=object)
    Pstar = np.array([[F(1, 2), F(0), F(1, 4)],
                      [F(0), F(1, 2), F(0)],
                      [F(-1, 4), F(0), F(1, 2)]], dtype=object)
    return _mode_construction(Q, (F(18, 25), F(56, 25), F(1)), Pstar,
                              (F(7, 6), F(1, 6), F(0)), (F(15, 28), F(10, 28), F(5, 28)),
                              0, 1, F(1, 4))


def mode_risk(lam: Fraction, eta: Fraction, r0: Fraction, s: int) -> Fraction:
    """002 sec 7: e_0 = alpha q_i  =>  R_s = (1 - eta lam_i)^(2s) R_0 (exact)."""
    return (1 - Fraction(eta) * Fraction(lam)) ** (2 * s) * Fraction(r0)


def modes_separate(lam_i: Fraction, lam_j: Fraction, eta: Fraction) -> bool:
    """R_1^A != R_1^B for two eigenmode states with equal R_0 > 0, exactly when
    (1 - eta lam_i)^2 != (1 - eta lam_j)^2, i.e. eta (lam_i - lam_j)(2 - eta (lam_i + lam_j)) != 0."""
    return eta * (lam_i - lam_j) * (2 - eta * (lam_i + lam_j)) != 0


# --------------------------------------------------------------------------- #
# hypothesis: eigenmode cases over (C, eta, alpha)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ModeCase:
    """A drawn exact construction (all numbers small integers, so a case shrinks readably).

    lam_k = c m_k^2 with m_k = m_num[k]/m_den[k] and c = c_num/c_den; Q = Cayley transform
    (I - A)(I + A)^{-1} of the integer skew matrix A (upper triangle `skew`), exactly
    orthogonal; P* = pstar/4; u the integer error-row vector.  E_A = m_j u q_i^T and
    E_B = m_i u q_j^T, so R_0^A = R_0^B = c m_i^2 m_j^2 ||u||^2 (alpha_A = m_j ||u||,
    alpha_B = m_i ||u||).  kind "boundary" sets eta = 2/(lam_i + lam_j) and "degenerate"
    sets m_j = m_i (lam_i = lam_j): the two ways R_1 can coincide.
    """

    K: int
    m_num: tuple[int, ...]
    m_den: tuple[int, ...]
    c_num: int
    c_den: int
    eta_num: int
    eta_den: int
    i: int
    j: int
    skew: tuple[int, ...]
    pstar: tuple[int, ...]
    u: tuple[int, ...]
    kind: str = "generic"


MODE_KINDS = ("generic", "boundary", "degenerate")


@st.composite
def mode_cases(draw: st.DrawFn, max_K: int = 5) -> ModeCase:
    K = draw(st.integers(2, max_K))
    small = st.integers(1, 9)
    m_num = tuple(draw(small) for _ in range(K))
    m_den = tuple(draw(small) for _ in range(K))
    i = draw(st.integers(0, K - 1))
    j = draw(st.integers(0, K - 1).filter(lambda x: x != i))
    skew = tuple(draw(st.integers(-2, 2)) for _ in range(K * (K - 1) // 2))
    pstar = tuple(draw(st.integers(-3, 3)) for _ in range(K * K))
    u = tuple(draw(st.integers(-3, 3)) for _ in range(K))
    return ModeCase(K, m_num, m_den, draw(small), draw(small), draw(st.integers(1, 40)),
                    draw(st.integers(1, 20)), i, j, skew, pstar, u, draw(st.sampled_from(MODE_KINDS)))


def cayley_orthogonal(K: int, skew: tuple[int, ...]) -> np.ndarray:
    """Q = (I - A)(I + A)^{-1}: exactly orthogonal for skew-symmetric A (I + A is invertible)."""
    A = fmpq_mat(K, K)
    k = 0
    for r in range(K):
        for c in range(r + 1, K):
            A[r, c] = skew[k]
            A[c, r] = -skew[k]
            k += 1
    eye = fmpq_mat(K, K)
    for r in range(K):
        eye[r, r] = 1
    return fmpq_mat_to_frac((eye - A) * (eye + A).inv())


def build_mode_construction(case: ModeCase) -> ModeConstruction:
    K = case.K
    m = [Fraction(p, q) for p, q in zip(case.m_num, case.m_den)]
    if case.kind == "degenerate":
        m[case.j] = m[case.i]
    c = Fraction(case.c_num, case.c_den)
    lam = tuple(c * mk * mk for mk in m)
    eta = Fraction(case.eta_num, case.eta_den)
    if case.kind == "boundary":
        eta = 2 / (lam[case.i] + lam[case.j])
    Q = cayley_orthogonal(K, case.skew)
    Pstar = np.array([Fraction(x, 4) for x in case.pstar], dtype=object).reshape(K, K)
    u = [Fraction(x) for x in case.u]
    if all(x == 0 for x in u):
        u[0] = Fraction(1)
    a = [m[case.j] * x for x in u]
    b = [m[case.i] * x for x in u]
    return _mode_construction(Q, lam, Pstar, a, b, case.i, case.j, eta)


def construction_is_modal(con: ModeConstruction) -> bool:
    """Exact sanity of a construction: Q^T Q = I, C q_k = lam_k q_k, B = P* C, and the two
    errors P0 - P* are rank one along q_i and q_j."""
    Q, K = con.Q, con.K
    if not np.all(Q.T @ Q == np.eye(K, dtype=int).astype(object)):
        return False
    if not all(np.all(con.C @ Q[:, k] == con.lam[k] * Q[:, k]) for k in range(K)):
        return False
    if not np.all(con.B == con.Pstar @ con.C):
        return False
    EA, EB = con.P0_A - con.Pstar, con.P0_B - con.Pstar
    # E q_k = 0 for every k other than i (resp. j): the error lies on one eigenvector
    return all(np.all(EA @ Q[:, k] == 0) for k in range(K) if k != con.i) and \
        all(np.all(EB @ Q[:, k] == 0) for k in range(K) if k != con.j)


# --------------------------------------------------------------------------- #
# independent exact reference of a float outer trajectory, and its tolerance
# --------------------------------------------------------------------------- #
def exact_outer_risks(P0, C, B, Pstar, eta, steps: int) -> list[Fraction]:
    """R_s = Tr((P_s - P*) C (P_s - P*)^T) along P_{s+1} = P_s - eta (P_s C - B), in fmpq
    arithmetic from exact copies of the given (float or rational) inputs."""
    P, Cq, Bq, Sq = (to_fmpq_mat(x) for x in (P0, C, B, Pstar))
    e = fmpq(Fraction(eta).numerator, Fraction(eta).denominator)
    out = []
    for s in range(steps + 1):
        E = P - Sq
        out.append(fmpq_to_fraction(_trace(E * Cq * E.transpose())))
        if s < steps:
            P = P - (P * Cq - Bq) * e
    return out


def step_contraction_upper(C: np.ndarray, eta: float) -> float:
    """Rigorous upper bound on ||I - eta C||_2 (eta C formed exactly in arb)."""
    K = C.shape[0]
    with precision():
        M = ball.identity(K) - to_arb_mat(C) * arb(float(eta))
        return normbound.norm2_upper(M)


def _fro(a: np.ndarray) -> float:
    """float Frobenius norm, inflated to cover its own rounding (first order)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64))) * (1 + 1e-12)


def outer_risk_tolerances(u: float, Ps: list[np.ndarray], C: np.ndarray, B: np.ndarray,
                          Pstar: np.ndarray, eta: float) -> list[float]:
    """Bound on |R^_s - R_s| for the SUT's float trajectory Ps = [P^_0, ...] against the exact
    trajectory from the same float inputs (P^_0, C, B, P*, eta).

    step:  P^_{s+1} = fl(P^_s - fl(eta fl(fl(P^_s C) - B))) = P^_s - eta (P^_s C - B) + delta_s,
           ||delta_s||_F <= gamma_{K+3} (|eta| (||P^_s||_F ||C||_F + ||B||_F) + ||P^_s||_F)
           (gamma_K for the product, one rounding each for - B, eta *, and P^_s -);
    propagation: P^_s - P_s = sum_{t<s} delta_t (I - eta C)^{s-1-t}, so
           D_s = ||P^_s - P_s||_F <= sum_{t<s} rho^{s-1-t} ||delta_t||_F, rho >= ||I - eta C||_2 rigorous;
    risk:  E^ = fl(P^_s - P*) is within D_s + u ||E^||_F of E_s = P_s - P*;
           |Tr(E^ C E^T) - Tr(E C E^T)| <= ||C||_F D (2 ||E^||_F + D), and the float evaluation
           sum(fl(E^ C) * E^) adds gamma_{K^2 + K} ||E^||_F^2 ||C||_F.
    """
    K = C.shape[0]
    rho = step_contraction_upper(C, eta)
    g_step, g_risk = tolerances.gamma(K + 3, u), tolerances.gamma(K * K + K, u)
    c_f, b_f = _fro(C), _fro(B)
    deltas = [g_step * (abs(eta) * (_fro(P) * c_f + b_f) + _fro(P)) for P in Ps[:-1]]
    out = []
    for s, P in enumerate(Ps):
        D = sum(rho ** (s - 1 - t) * deltas[t] for t in range(s))
        e_f = _fro(np.asarray(P, np.float64) - np.asarray(Pstar, np.float64))
        D += tolerances.gamma(1, u) * e_f
        tol = c_f * D * (2 * e_f + D) + g_risk * e_f * e_f * c_f
        out.append(tol * (1 + g_risk))
    return out


def fraction_abs_diff_upper(x: float, y: Fraction) -> float:
    """A float >= |x - y| (x a float taken exactly, y exact)."""
    d = abs(Fraction(x) - y)
    f = float(d)
    return f if Fraction(f) >= d else math.nextafter(f, math.inf)


# --------------------------------------------------------------------------- #
# 000 sec 7: spectra-only obstruction
# --------------------------------------------------------------------------- #
def signed_permutation_similar(PA: np.ndarray, PB: np.ndarray, perm: list[int], signs: list[float]) -> bool:
    """P_B == Pi P_A Pi^T exactly (Pi = diag(signs) P_perm, signs +-1): then P_B is orthogonally
    similar to P_A, so eigenvalues and singular values agree exactly."""
    PA, PB = np.asarray(PA, np.float64), np.asarray(PB, np.float64)
    K = PA.shape[0]
    if sorted(perm) != list(range(K)) or any(s not in (1.0, -1.0) for s in signs):
        return False
    s = np.asarray(signs, np.float64)
    return bool(np.array_equal(PB, s[:, None] * PA[np.ix_(perm, perm)] * s[None, :]))


@dataclass(frozen=True)
class SpectraComparison:
    eig_overlap: bool  # every sorted pair of eigenvalue enclosures overlaps
    sv_overlap: bool  # same for singular values
    eig_mismatch_upper: float  # rigorous max |lambda_k(P_A) - lambda_k(P_B)| for the sorted pairing
    sv_mismatch_upper: float
    eig_separated: bool  # some pair certainly differs (disjoint enclosures)


def _sorted_eigs(P: np.ndarray):
    with precision():
        return sorted(to_arb_mat(P).eig(), key=lambda z: (float(z.real.mid()), float(z.imag.mid())))


def _sorted_svs(P: np.ndarray):
    with precision():
        M = to_arb_mat(P)
        G = M.transpose() * M
        return sorted((z.real for z in G.eig()), key=lambda x: float(x.mid()))


def compare_spectra(PA: np.ndarray, PB: np.ndarray) -> SpectraComparison:
    """arb enclosures of the eigenvalues of P_A, P_B and of the eigenvalues of P^T P
    (squared singular values), paired in sorted order."""
    ea, eb = _sorted_eigs(PA), _sorted_eigs(PB)
    sa, sb = _sorted_svs(PA), _sorted_svs(PB)
    with precision():
        e_ov = all(x.overlaps(y) for x, y in zip(ea, eb))
        s_ov = all(x.overlaps(y) for x, y in zip(sa, sb))
        e_mis = max(arb_upper(abs(x - y)) for x, y in zip(ea, eb))
        s_mis = max(arb_upper(abs(x.nonnegative_part().sqrt() - y.nonnegative_part().sqrt()))
                    for x, y in zip(sa, sb))
    return SpectraComparison(e_ov, s_ov, e_mis, s_mis, not e_ov)


@dataclass(frozen=True)
class Depth1Risk:
    """Exact depth-1 risk K^{-1} mean_i ||(I - P H) x_i||^2, x_i = H^{-1} d_i (exact, arb),
    and what the comparison with the SUT's float risk needs."""

    lower: float
    upper: float
    mid: float
    label_errors: np.ndarray  # rigorous ||x^*_i - H^{-1} d_i|| of the SUT's labels


def exact_depth1_risk(P: np.ndarray, H: np.ndarray, D: np.ndarray, Xhat: np.ndarray) -> Depth1Risk:
    """(I - P H) x = (H^{-1} - P) d: the risk is ||H^{-1} D^T - P D^T||_F^2 / (n K), exact in arb."""
    n, K = D.shape
    with precision():
        X = ball.solve(H, np.asarray(D, np.float64).T)  # K x n enclosure of H^{-1} d_i
        R = X - to_arb_mat(P) * to_arb_mat(np.asarray(D, np.float64).T)
        s = arb(0)
        for x in R.entries():
            s += x * x
        s = s.nonnegative_part() / (n * K)
        labels = []
        for i in range(n):
            col = arb_mat([[X[k, i]] for k in range(K)])
            labels.append(ball.norm2_diff_upper(col, np.asarray(Xhat[i], np.float64).reshape(-1, 1)))
        return Depth1Risk(arb_lower(s), arb_upper(s), float(s.mid()), np.array(labels))


def exact_inverse_risk_upper(H: np.ndarray, D: np.ndarray) -> float:
    """Upper end of the depth-1 risk of the exact inverse P = H^{-1} (an arb enclosure of it):
    (H^{-1} - H^{-1}) d = 0, so this is a ball around 0 whose radius is the enclosure width."""
    n, K = D.shape
    with precision():
        Hinv = to_arb_mat(H).inv()
        X = ball.solve(H, np.asarray(D, np.float64).T)
        R = X - Hinv * to_arb_mat(np.asarray(D, np.float64).T)
        s = arb(0)
        for x in R.entries():
            s += x * x
        return arb_upper(s.nonnegative_part() / (n * K))


def inverse_rounding_fro_upper(P: np.ndarray, H: np.ndarray) -> float:
    """Rigorous upper bound on ||H^{-1} - P||_F (the rounding of a float inverse P)."""
    with precision():
        Hinv = to_arb_mat(H).inv()
        return arb_upper(ball.vec_norm2(Hinv - to_arb_mat(P)))


def depth1_risk_tolerance(u: float, P: np.ndarray, D: np.ndarray, Xhat: np.ndarray,
                          label_errors: np.ndarray, risk_float: float) -> float:
    """Bound on |R^ - R| for the SUT's depth-1 risk R^ = fl(mean_i ||fl(P d_i) - x^*_i||^2 / K)
    against the exact R = mean_i ||P d_i - H^{-1} d_i||^2 / K.

    x_1 = 0 + P (d - H 0) = fl(P d): error <= gamma_K ||P||_F ||d_i||; the SUT's label x^*_i is
    off by the rigorous label error l_i; the subtraction adds u ||a^_i||: so
    ||a^_i - a_i|| <= Delta_i = gamma_{K+1} ||P||_F ||d_i|| + l_i (+ the u term inside gamma).
    Squares: |(||a^||^2 - ||a||^2)| <= (2 ||a^|| + Delta) Delta; the float sums of nK
    non-negative squares, the mean and / K add gamma_{K+n+2} R^.
    """
    n, K = D.shape
    P, D, Xhat = (np.asarray(x, np.float64) for x in (P, D, Xhat))
    p_f = _fro(P)
    a_hat = np.linalg.norm(D @ P.T - Xhat, axis=1) * (1 + 1e-12)
    deltas = tolerances.gamma(K + 1, u) * p_f * np.linalg.norm(D, axis=1) * (1 + 1e-12) + label_errors
    deltas = deltas + u * a_hat
    tol = float(np.sum((2 * a_hat + deltas) * deltas)) / (n * K)
    return tol + tolerances.gamma(K + n + 2, u) * abs(risk_float)


@dataclass(frozen=True)
class SpectraCase:
    """The 000 sec 7 pair on H = models.spd_system(K, kappa, seed) with n evaluation tasks."""

    K: int
    kappa: float
    seed: int
    n: int = 32


@st.composite
def spectra_cases(draw: st.DrawFn, max_K: int = 12) -> SpectraCase:
    K = draw(st.sampled_from(range(2, max_K + 1)))
    # kappa >= 2: H = c I (kappa = 1) commutes with every Pi and the two risks coincide
    kappa = 10.0 ** draw(st.floats(min_value=math.log10(2.0), max_value=4.0))
    return SpectraCase(K, kappa, draw(SEEDS), draw(st.sampled_from((8, 32))))
