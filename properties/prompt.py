"""Property functions and strategies for the prompt claims of 002 sec 4.

prompt.mp_window: the whitened prompt covariance W = Sigma_x^{-1/2} (X^T X / M) Sigma_x^{-1/2}
of a Gaussian design (rows N(0, Sigma_x)) equals Z^T Z / M with Z an M x K standard Gaussian
matrix, so its eigenvalues are s_i(Z)^2 / M.  Davidson-Szarek (Vershynin 2012, Cor. 5.35):
with probability >= 1 - 2 exp(-tau^2/2), sqrt(M) - sqrt(K) - tau <= s_min(Z) <= s_max(Z) <=
sqrt(M) + sqrt(K) + tau; with tau = sqrt(M) t and g = K / M this is
spec(W) in [max(0, 1 - sqrt(g) - t)^2, (1 + sqrt(g) + t)^2] w.p. >= 1 - 2 exp(-M t^2 / 2).
The seed squares the lower end without the max(0, .): for 1 - sqrt(g) - t < 0 its window
starts at (sqrt(g) + t - 1)^2 > 0, which a small singular value violates.

prompt.resolvent: H_M = H_inf + D; the second-order resolvent identity and the Neumann-series
bound ||H_M^{-1} - H_inf^{-1}|| <= a^2 d / (1 - a d), a = ||H_inf^{-1}||, d = ||D||, a d < 1.

Window decisions for the SUT's float W: an eigenvalue counts as outside the window only
when it is outside by more than the rounding margin of `window_margin`; the probability
that the exact whitened spectrum lies within that margin of an endpoint is far below the
tests' resolution (the margin is ~1e-12 in float64, ~1e-4 relative in float32).
"""

from __future__ import annotations

from fractions import Fraction

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from flint import arb
from hypothesis import strategies as st

from properties import tolerances
from properties.reference import ball, normbound
from properties.reference.convert import MP_DPS, arb_lower, arb_upper, precision, to_arb_mat
from properties.richardson import _f64

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


# =========================================================================== #
# windows and probabilities
# =========================================================================== #
def seed_window(K: int, M: int, t: float) -> tuple[float, float]:
    """[(1 - sqrt(g) - t)^2, (1 + sqrt(g) + t)^2], g = K/M, as 002 sec 4 states it."""
    sg = math.sqrt(K / M)
    return (1 - sg - t) ** 2, (1 + sg + t) ** 2


def corrected_window(K: int, M: int, t: float) -> tuple[float, float]:
    """[max(0, 1 - sqrt(g) - t)^2, (1 + sqrt(g) + t)^2] (Vershynin 2012, Cor. 5.35)."""
    sg = math.sqrt(K / M)
    return max(0.0, 1 - sg - t) ** 2, (1 + sg + t) ** 2


def failure_bound(M: int, t: float) -> float:
    """The claimed failure probability 2 exp(-M t^2 / 2)."""
    return 2.0 * math.exp(-M * t * t / 2)


def t_for_failure_bound(M: int, p0: float) -> float:
    """The t with 2 exp(-M t^2/2) = p0."""
    return math.sqrt(2 * math.log(2 / p0) / M)


def window_margin(W: np.ndarray, X: np.ndarray, Sinv: np.ndarray, kappa_x: float, u: float) -> np.ndarray:
    """Per-sample rounding margin of the SUT's eigenvalues of W (n,K,K) from X (n,M,K):
    whitening products gamma_{M+2K+4} ||Sinv||_F^2 ||X||_F^2 / M, the rounded whitening
    matrix (its relative error, up to gamma_{4K} kappa_x^{1/2}, enters twice), and the
    float64 eigensolver's backward error gamma_{4K^2} ||W||_F (p(K) = 4K^2, as in
    properties.encoder)."""
    n, M, K = X.shape
    xs = np.linalg.norm(X.reshape(n, -1), axis=1) ** 2 / M
    sf = float(np.linalg.norm(Sinv)) ** 2
    wf = np.linalg.norm(W.reshape(n, -1), axis=1)
    g = tolerances.gamma
    return (g(M + 2 * K + 4, u) + 2 * g(4 * K, u) * math.sqrt(kappa_x)) * sf * xs * (1 + 1e-12) \
        + g(4 * K * K, 2.0**-53) * wf


def count_outside(eigs: np.ndarray, lo: float, hi: float, margin: np.ndarray) -> np.ndarray:
    """Boolean per sample: some eigenvalue lies outside [lo, hi] by more than its margin."""
    below = eigs.min(axis=1) < lo - margin
    above = eigs.max(axis=1) > hi + margin
    return below | above


def binomial_tail_mp(failures: int, trials: int, p: float, dps: int = MP_DPS) -> mpmath.mpf:
    """P(Bin(trials, p) >= failures) in mpmath (regularized incomplete beta)."""
    if failures <= 0:
        return mpmath.mpf(1)
    with mpmath.workdps(dps):
        return mpmath.betainc(failures, trials - failures + 1, 0, mpmath.mpf(p), regularized=True)


def failure_probability_lower(K: int, M: int, lo: float, hi: float, dps: int = MP_DPS) -> mpmath.mpf:
    """An exact lower bound on P(spec(Z^T Z / M) not within [lo, hi]), Z ~ N(0,1)^{M x K}.

    lambda_min <= W_11 <= lambda_max and lambda_min <= Tr(W)/K <= lambda_max, with
    M W_11 ~ chi^2_M and M Tr W ~ chi^2_{MK}; each event {W_11 < lo}, {W_11 > hi},
    {Tr W / K < lo}, {Tr W / K > hi} implies a failure, so P(failure) >= the largest of
    their (exact, regularized incomplete gamma) probabilities.
    """
    with mpmath.workdps(dps):
        lo_m, hi_m = mpmath.mpf(lo), mpmath.mpf(hi)

        def cdf(k, x):  # P(chi^2_k <= x)
            return mpmath.gammainc(mpmath.mpf(k) / 2, 0, x / 2, regularized=True)

        cands = [cdf(M, M * lo_m), 1 - cdf(M, M * hi_m), cdf(M * K, M * K * lo_m), 1 - cdf(M * K, M * K * hi_m)]
        return max(cands)


@dataclass(frozen=True)
class MPCase:
    """One statistical check: K, M, the failure bound p0 (t solves 2 exp(-M t^2/2) = p0),
    design conditioning kappa_x, seed, and `trials` designs."""

    K: int
    M: int
    p0: float
    kappa_x: float
    seed: int
    trials: int = 256

    @property
    def t(self) -> float:
        return t_for_failure_bound(self.M, self.p0)

    @property
    def g(self) -> float:
        return self.K / self.M


@st.composite
def mp_cases(draw: st.DrawFn, max_K: int = 24, max_M: int = 256) -> MPCase:
    """K in 1..max_K, M in 1..max_M (M < K allowed: the corrected window starts at 0),
    p0 log-uniform in [1e-3, 0.5] so the claimed bound is informative (p0 < 1)."""
    K = draw(st.integers(1, max_K))
    M = draw(st.integers(1, max_M))
    p0 = 10.0 ** draw(st.floats(-3.0, math.log10(0.5)))
    kappa = 10.0 ** draw(st.floats(0.0, 2.0))
    return MPCase(K, M, p0, kappa, draw(SEEDS))


# =========================================================================== #
# prompt.resolvent
# =========================================================================== #
@dataclass(frozen=True)
class ResolventCase:
    source: str          # "lsq": models.tasks.LeastSquaresPrompts; "gaussian": models.gaussian_prompts
    K: int
    M: int
    ridge: float
    kappa: float
    seed: int


@st.composite
def resolvent_cases(draw: st.DrawFn, max_K: int = 16) -> ResolventCase:
    src = draw(st.sampled_from(("lsq", "gaussian")))
    K = draw(st.sampled_from(range(1, max_K + 1)))
    M = int(round(2.0 ** draw(st.floats(0.0, 11.0))))
    ridge = 10.0 ** draw(st.floats(-3.0, 0.0))
    kappa = 10.0 ** draw(st.floats(0.0, 3.0))
    return ResolventCase(src, K, M, ridge, kappa, draw(SEEDS))


@dataclass(frozen=True)
class ResolventCheck:
    identity_ok: bool        # LHS - RHS encloses 0 with a negligible radius
    identity_radius: float   # rigorous upper bound on max |LHS - RHS| (the ball width)
    identity_scale: float    # max |H_inf^{-1} D H_inf^{-1}| (the first-order term), for scale
    lhs_upper: float         # rigorous upper bound on ||H_M^{-1} - H_inf^{-1}||_2
    a: tuple[float, float]   # rigorous (lo, hi) of ||H_inf^{-1}||_2
    d: tuple[float, float]   # rigorous (lo, hi) of ||D||_2
    status: str              # "applies" (a d < 1 certain), "vacuous" (a d >= 1 certain), "undecided"
    bound_lower: float       # rigorous lower bound on a^2 d / (1 - a d) when it applies
    tightness: float         # lhs / bound (midpoints), when it applies

    @property
    def bound_holds(self) -> bool:
        """Certified up to the relative width of the rigorous norm enclosures (norm2_upper
        carries a margin of at most 2^-44 relative; 2^-40 covers it and the four ends):
        the bound is attained with equality (K = 1, D < 0), so no strict certificate exists."""
        return self.status != "applies" or self.lhs_upper <= self.bound_lower * (1 + 2.0**-40)

    @property
    def literal_rhs_negative(self) -> bool:
        """a d > 1 certain: read literally, the bound's right side is negative (false)."""
        return Fraction(self.a[0]) * Fraction(self.d[0]) > 1  # exact product of the lower ends


def resolvent_terms(HM: np.ndarray, Hinf: np.ndarray, sign: int = 1):
    """(LHS, RHS, first-order term) of the second-order resolvent identity in arb:
    LHS = H_M^{-1} - H_inf^{-1}, RHS = -B D B + sign * B D A D B, A = H_M^{-1}, B = H_inf^{-1}."""
    HM, Hinf = _f64(HM), _f64(Hinf)
    K = HM.shape[0]
    with precision():
        I = ball.identity(K)
        A = ball.solve(HM, I)
        B = ball.solve(Hinf, I)
        D = to_arb_mat(HM) - to_arb_mat(Hinf)
        first = B * D * B
        return A - B, -first + sign * (B * D * A * D * B), first, A, B, D


def neumann_bound(a: arb, d: arb) -> arb:
    """a^2 d / (1 - a d): the norm bound of 002 sec 4 (a seam for bound mutants)."""
    return a * a * d / (1 - a * d)


def rhs_sign() -> int:
    """+1: the identity as the seed writes it (a seam for the sign-flip mutant)."""
    return 1


def resolvent_check(HM: np.ndarray, Hinf: np.ndarray) -> ResolventCheck:
    lhs, rhs, first, A, B, D = resolvent_terms(HM, Hinf, rhs_sign())
    with precision():
        diff = lhs - rhs
        rad = max((arb_upper(x.abs_upper()) for x in diff.entries()), default=0.0)
        contains = all(x.contains(0) for x in diff.entries())
        scale = max((arb_upper(x.abs_upper()) for x in first.entries()), default=0.0)
        lhs_up = normbound.norm2_upper(lhs)
        a = (normbound.norm2_lower(B), normbound.norm2_upper(B))
        d = (normbound.norm2_lower(D), normbound.norm2_upper(D))
        ad_hi = arb(a[1]) * arb(d[1])
        ad_lo = arb(a[0]) * arb(d[0])
        if ad_hi < 1:
            status = "applies"
            # a^2 d / (1 - a d) is increasing in a and d on a d < 1: evaluate at the lower ends
            bl = arb_lower(neumann_bound(arb(a[0]), arb(d[0])))
            # tightness at midpoints of the enclosures (evidence only; equality gives ~1)
            lm = 0.5 * (normbound.norm2_lower(lhs) + lhs_up)
            bm = float(neumann_bound(arb(0.5 * (a[0] + a[1])), arb(0.5 * (d[0] + d[1]))).mid())
            tight = lm / bm if bm > 0 else 0.0
        elif ad_lo >= 1:
            status, bl, tight = "vacuous", math.nan, math.nan
        else:
            status, bl, tight = "undecided", math.nan, math.nan
    # the exact identity leaves only the enclosure width: demand it far below the terms' scale
    ok = contains and rad <= 2.0**-120 * max(scale, 2.0**-1000) + 2.0**-160
    return ResolventCheck(ok, rad, scale, lhs_up, a, d, status, bl, tight)
