"""Property functions and strategies for the encoder family (001 sec 3, 5.2; 002 sec 5).

Encoder dictionary model: z ~ N(0, Sigma_z) in R^r, b = G_* z + xi in R^K, xi ~ N(0,
sigma^2 I_K); R_enc(G) = K^{-1} E||G z - b||^2 (K = dim b, sigma^2 per coordinate of b).
Subspace claims: Davis-Kahan as the seeds state it, its corrected forms, on drawn
perturbations and on the SUT's subspace estimates.

Inputs are the SUT's float arrays, taken exactly; references are arb enclosures (212 bits)
or mpmath at 50 digits.  Tolerances (u = unit roundoff of the SUT dtype, gamma_n = n u /
(1 - n u), Higham ch. 3; norms of |A| bounded by Frobenius norms):
* one trainer step fl(G - eta (fl(G S_z) - S_bz)) with the SUT's rounded moments S_z =
  fl(Sigma_z), S_bz = fl(G_* Sigma_z) and eta_t = fl(eta): the step differs from the exact
  step of the same G by at most gamma_{r+7} (||G||_F + eta (||G||_F ||Sigma_z||_F +
  ||G_*||_F ||Sigma_z||_F)) (moment rounding u, gamma_{r+1}; product gamma_r; subtraction,
  eta product and eta rounding 3u; final subtraction u; products of these second order);
  errors propagate through the exact map E -> E (I - eta Sigma_z), so after s steps they
  sum to sum_l rho^{s-1-l} delta_l with rho >= ||I - eta Sigma_z||_2 rigorous;
* the SUT's population risk K^{-1} fl(Tr(G S_z G^T) - 2 Tr(G S_bz^T) + Tr S_bb): each of the
  three sums has at most K r + r + 1 terms and its inputs carry at most gamma_{2r+4}, so
  |error| <= gamma_{K r + 2r + 8} (A + 2 B + C) / K with A = ||G||_F^2 ||Sigma_z||_F,
  B = ||G||_F ||G_*||_F ||Sigma_z||_F, C = ||G_*||_F^2 ||Sigma_z||_F + K sigma^2;
* the symmetric eigensolver behind Top_r: backward error ||dS||_2 <= p(K) u ||S||_2 with
  p(K) = 4 K^2 (LAPACK Users' Guide sec 4.7: "a modestly growing function of n"), so the
  computed top-r subspace is within 2 p(K) u ||S||_F / gap(S) of the exact one (the
  operator-norm Davis-Kahan bound with population gap, Yu-Wang-Samworth 2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from flint import acb_mat, arb, arb_mat
from hypothesis import strategies as st
from scipy import optimize, stats

from properties import tolerances
from properties.reference import ball, normbound
from properties.reference.convert import MP_DPS, arb_lower, arb_upper, precision, to_arb, to_arb_mat, to_mpf
from properties.richardson import Comparison, _f64

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
# Floating-point evaluation of a tolerance formula errs by far less than this relative margin.
_EVAL_MARGIN = 1 + 1e-10


def _g(n: int, u: float) -> float:
    return tolerances.gamma(n, u)


def _fro(a: np.ndarray) -> float:
    return float(np.linalg.norm(_f64(a))) * (1 + 1e-15)


def _eye(n: int) -> arb_mat:
    return ball.identity(n)


# =========================================================================== #
# strategies
# =========================================================================== #
@dataclass(frozen=True)
class EncoderCase:
    """One encoder run: model (K, r, Sigma_z spectrum, seed), step size and step count.

    eta = eta_frac * 2 / z_scale, z_scale = lambda_max of the log-spaced Sigma_z spectrum, so
    eta_frac < 1 is the contraction regime 0 < eta < 2/lambda_max and eta_frac > 1 diverges.
    init "random": the seeded G_0; "slow": G_0 - G_* along the slowest-contracting eigenvector
    of I - eta Sigma_z (the contraction bound is then tight).
    """

    K: int
    r: int
    kappa_z: float
    z_scale: float
    eta_frac: float
    steps: int
    seed: int
    init: str = "random"
    sigma: float = 0.02


@st.composite
def encoder_cases(draw: st.DrawFn, max_eta_frac: float = 1.2, max_steps: int = 800,
                  inits: tuple[str, ...] = ("random", "slow")) -> EncoderCase:
    K = draw(st.sampled_from(range(1, 17)))
    r = draw(st.sampled_from(range(1, K + 1)))
    kappa = 10.0 ** draw(st.floats(0.0, 3.0))
    z_scale = 10.0 ** draw(st.floats(-1.0, 1.0))
    frac = draw(st.floats(1e-3, max_eta_frac))
    if frac > 1.0:  # divergent: keep rho^s (rho = 2 frac - 1 <= 1.4) within float range
        steps = draw(st.integers(0, 40))
    else:
        steps = draw(st.integers(0, max_steps))
    sigma = draw(st.sampled_from((0.0, 0.02, 0.3)))
    return EncoderCase(K, r, kappa, z_scale, frac, steps, draw(SEEDS), draw(st.sampled_from(inits)), sigma)


# =========================================================================== #
# encoder.trajectory
# =========================================================================== #
def contraction_upper(Sigma_z: np.ndarray, eta: float) -> float:
    """Rigorous upper bound on ||I - eta Sigma_z||_2 (I - eta Sigma_z formed in arb)."""
    with precision():
        M = _eye(Sigma_z.shape[0]) - to_arb(eta) * to_arb_mat(_f64(Sigma_z))
    return normbound.norm2_upper(M)


def contraction_lower(Sigma_z: np.ndarray, eta: float) -> float:
    with precision():
        M = _eye(Sigma_z.shape[0]) - to_arb(eta) * to_arb_mat(_f64(Sigma_z))
    return normbound.norm2_lower(M)


def trajectory_difference(G0: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, eta: float,
                          s: int) -> arb_mat:
    """Enclosure of (G_0 - G_*)(I - eta Sigma_z)^s (formed directly: no cancellation)."""
    with precision():
        Gs = to_arb_mat(_f64(G_star))
        Mt = _eye(Sigma_z.shape[0]) - to_arb(eta) * to_arb_mat(_f64(Sigma_z))
        return (to_arb_mat(_f64(G0)) - Gs) * ball.matpow(Mt, s)


def trajectory_reference(G0: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, eta: float,
                         s: int) -> arb_mat:
    """Enclosure of G_* + (G_0 - G_*)(I - eta Sigma_z)^s (the claimed closed form)."""
    D = trajectory_difference(G0, G_star, Sigma_z, eta, s)
    with precision():
        return to_arb_mat(_f64(G_star)) + D


def trajectory_tolerance(traj: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, eta: float,
                         s: int, rho: float, u: float, g0_rounding: float) -> float:
    """sum_{l<s} rho^{s-1-l} delta_l + rho^s e_0 (module docstring), delta_l from the SUT's
    computed G_l; e_0 the rounding of G_0 to the SUT dtype."""
    r = Sigma_z.shape[0]
    z, gs = _fro(Sigma_z), _fro(G_star)
    g = np.linalg.norm(_f64(traj[:s]).reshape(s, -1), axis=1) * (1 + 1e-15) if s else np.zeros(0)
    delta = _g(r + 7, u) * (g + eta * (g * z + gs * z))
    total = 0.0
    for d in delta:  # Horner: total_{l+1} = rho total_l + delta_l
        total = total * rho + float(d)
    return (total + rho**s * g0_rounding) * _EVAL_MARGIN


def trajectory_check(traj: np.ndarray, G0_exact: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray,
                     eta: float, s: int, u: float) -> tuple[Comparison, float]:
    """The SUT's G_s against the closed form in arb; (comparison, rho)."""
    rho = contraction_upper(Sigma_z, eta)
    ref = trajectory_reference(G0_exact, G_star, Sigma_z, eta, s)
    with precision():
        err = ball.norm2_diff_upper(ref, _f64(traj[s]))
    e0 = float(np.linalg.norm(_f64(traj[0]) - _f64(G0_exact))) * (1 + 1e-15) + u * _fro(G0_exact)
    return Comparison(err, trajectory_tolerance(traj, G_star, Sigma_z, eta, s, rho, u, e0)), rho


# =========================================================================== #
# R_enc(s) = sigma^2 + K^{-1} Tr[(G - G_*) Sigma_z (G - G_*)^T]
# =========================================================================== #
def risk_definition(G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, sigma: float) -> arb:
    """K^{-1} E||G z - b||^2 from the model's second moments, K = dim b:
    K^{-1} Tr(G Sz G^T - G Sz G_*^T - G_* Sz G^T + G_* Sz G_*^T) + K^{-1} Tr(sigma^2 I_K)."""
    K = G.shape[0]
    with precision():
        Ga, Gs, Sz = to_arb_mat(_f64(G)), to_arb_mat(_f64(G_star)), to_arb_mat(_f64(Sigma_z))
        cov = Ga * Sz * Ga.transpose() - Ga * Sz * Gs.transpose() - Gs * Sz * Ga.transpose() \
            + Gs * Sz * Gs.transpose()
        return (cov.trace() + K * to_arb(sigma) ** 2) / K


def risk_claimed(G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, sigma: float) -> arb:
    """sigma^2 + K^{-1} Tr[(G - G_*) Sigma_z (G - G_*)^T] (001 sec 3.2)."""
    ex = excess_risk(G, G_star, Sigma_z)
    with precision():
        return to_arb(sigma) ** 2 + ex


def excess_risk(G: np.ndarray | None, G_star: np.ndarray, Sigma_z: np.ndarray,
                difference: arb_mat | None = None) -> arb:
    """K^{-1} Tr[D Sigma_z D^T], D = G - G_* (G an exact float array) or a given enclosure D."""
    with precision():
        D = difference if difference is not None else to_arb_mat(_f64(G)) - to_arb_mat(_f64(G_star))
        return (D * to_arb_mat(_f64(Sigma_z)) * D.transpose()).trace() / D.nrows()


def risk_tolerance(G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, sigma: float, u: float) -> float:
    """gamma_{K r + 2r + 8} (A + 2B + C) / K of the module docstring."""
    K, r = G.shape
    g, gs, z = _fro(G), _fro(G_star), _fro(Sigma_z)
    A, B, C = g * g * z, g * gs * z, gs * gs * z + K * sigma * sigma
    return _g(K * r + 2 * r + 8, u) * (A + 2 * B + C) / K * _EVAL_MARGIN


@dataclass(frozen=True)
class RiskCheck:
    algebra_ok: bool      # the definition and the claimed formula enclose the same number
    sut: Comparison       # the SUT's population risk vs the exact value
    exact: float          # midpoint of R_enc(G)


def risk_check(G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, sigma: float,
               sut_risk: float, u: float) -> RiskCheck:
    dfn = risk_definition(G, G_star, Sigma_z, sigma)
    clm = risk_claimed(G, G_star, Sigma_z, sigma)
    with precision():
        diff = dfn - clm
        # the two are the same number: the ball of their difference must contain 0 and be tiny
        algebra_ok = bool(diff.contains(0)) and arb_upper(abs(diff)) <= 2.0**-150 * max(1.0, arb_upper(abs(clm)))
        err = arb_upper(abs(clm - to_arb(float(sut_risk))))
    return RiskCheck(algebra_ok, Comparison(err, risk_tolerance(G, G_star, Sigma_z, sigma, u)), float(clm.mid()))


# =========================================================================== #
# encoder.contraction_bound
# =========================================================================== #
@dataclass(frozen=True)
class ContractionCheck:
    rho: float              # rigorous upper bound on ||I - eta Sigma_z||_2 used in the bound
    rho_certified: bool     # rho >= a rigorous lower bound on the norm
    exact_holds: bool       # exact trajectory: excess_s <= rho^{2s} excess_0, certain in arb
    sut_excess: float       # rigorous upper bound on the excess risk of the SUT's G_s
    bound: float            # rigorous upper bound on rho^{2s} excess_0
    allowance: float        # rounding allowance of the SUT iterate (first order, derived)
    ratio: float            # exact excess_s / (rho^{2s} excess_0), midpoints

    @property
    def sut_holds(self) -> bool:
        return self.sut_excess <= self.bound + self.allowance


def contraction_check(traj: np.ndarray, G0_exact: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray,
                      eta: float, s: int, u: float, rho: float | None = None) -> ContractionCheck:
    """R_enc(s) - sigma^2 <= ||I - eta Sigma_z||^{2s} K^{-1} Tr[(G_0 - G_*) Sigma_z (G_0 - G_*)^T]."""
    K = G_star.shape[0]
    rho = contraction_upper(Sigma_z, eta) if rho is None else float(rho)
    certified = rho >= contraction_lower(Sigma_z, eta)
    ex_s = excess_risk(None, G_star, Sigma_z, trajectory_difference(G0_exact, G_star, Sigma_z, eta, s))
    ex_0 = excess_risk(_f64(G0_exact), G_star, Sigma_z)
    with precision():
        bnd = to_arb(rho) ** (2 * s) * ex_0
        # s = 0 is an equality (rho^0 = 1): "not certainly violated" is all that can be certified
        exact_holds = bool(ex_s <= bnd) if s > 0 else not bool(ex_s > bnd)
        ratio = float(ex_s.mid()) / float(bnd.mid()) if float(bnd.mid()) > 0 else 0.0
        sut_ex = arb_upper(excess_risk(_f64(traj[s]), G_star, Sigma_z))
        bound_up = arb_upper(bnd)
    # ||G^_s - G_s||_F <= t  =>  sqrt(K ex(G^)) <= sqrt(K ex(G)) + t sqrt(lambda_max)
    e0 = float(np.linalg.norm(_f64(traj[0]) - _f64(G0_exact))) * (1 + 1e-15) + u * _fro(G0_exact)
    t = trajectory_tolerance(traj, G_star, Sigma_z, eta, s, max(rho, contraction_upper(Sigma_z, eta)), u, e0)
    lam = normbound.norm2_upper(_f64(Sigma_z))
    b = math.sqrt(K * bound_up) * (1 + 1e-15)
    allowance = (2 * b * t * math.sqrt(lam) + t * t * lam) / K * _EVAL_MARGIN
    return ContractionCheck(rho, certified, exact_holds, sut_ex, bound_up, allowance, ratio)


# =========================================================================== #
# encoder.heldout_matches_population: the law of the held-out risk
# =========================================================================== #
def residual_weights(G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray, sigma: float) -> np.ndarray:
    """Eigenvalues of Omega = (G - G_*) Sigma_z (G - G_*)^T + sigma^2 I_K, the covariance of
    the residual G z - b; each held-out ||G z_i - b_i||^2 is sum_j w_j chi^2_1.  float64
    eigvalsh: relative error ~1e-15, far below the resolution of a test on nK ~ 1e5 terms."""
    D = _f64(G) - _f64(G_star)
    Om = D @ _f64(Sigma_z) @ D.T
    Om = 0.5 * (Om + Om.T) + sigma * sigma * np.eye(G.shape[0])
    return np.clip(np.linalg.eigvalsh(Om), sigma * sigma, None)


def _chernoff_upper_tail(q: float, w: np.ndarray, n: int) -> float:
    """P(sum_j w_j chi^2_n >= q) <= min_{0<th<1/(2 w_max)} exp(-th q) prod (1 - 2 th w_j)^(-n/2)."""
    wmax = float(w.max())

    def logb(x: float) -> float:
        th = x / (2 * wmax)
        return -th * q - 0.5 * n * float(np.sum(np.log1p(-2 * th * w)))

    res = optimize.minimize_scalar(logb, bounds=(0.0, 1 - 1e-12), method="bounded",
                                   options={"xatol": 1e-12})
    return math.exp(min(0.0, float(res.fun), logb(0.0)))


def _chernoff_lower_tail(q: float, w: np.ndarray, n: int) -> float:
    """P(sum_j w_j chi^2_n <= q) <= min_{th>0} exp(th q) prod (1 + 2 th w_j)^(-n/2)."""
    mean = n * float(np.sum(w))

    def logb(x: float) -> float:
        th = x / float(w.max())
        return th * q - 0.5 * n * float(np.sum(np.log1p(2 * th * w)))

    res = optimize.minimize_scalar(logb, bounds=(0.0, 50.0 * mean / max(q, 1e-300)), method="bounded",
                                   options={"xatol": 1e-12})
    return math.exp(min(0.0, float(res.fun)))


def weighted_chi2_tails(q: float, w: np.ndarray, n: int) -> tuple[float, float]:
    """Upper bounds on P(Q <= q) and P(Q >= q) for Q = sum_j w_j chi^2_n (independent).

    Two rigorous bounds, the smaller taken: stochastic order w_min chi^2_{nK} <= Q <=
    w_max chi^2_{nK} (exact gamma tails) and the Chernoff bound from the exact moment
    generating function prod_j (1 - 2 th w_j)^(-n/2).  Any theta gives a valid bound, so
    the optimizer's accuracy affects power only, never the false-alarm rate.
    """
    w = np.asarray(w, np.float64)
    K = w.size
    if not float(w.min()) > 0:
        raise ValueError("weighted_chi2_tails needs positive weights (sigma > 0)")
    dom_low = float(stats.chi2.cdf(q / float(w.min()), n * K))
    dom_high = float(stats.chi2.sf(q / float(w.max()), n * K))
    return min(dom_low, _chernoff_lower_tail(q, w, n)), min(dom_high, _chernoff_upper_tail(q, w, n))


@dataclass(frozen=True)
class HeldoutTest:
    ratio: float          # held-out / exact
    p_low: float          # upper bound on P(Q <= q)
    p_high: float         # upper bound on P(Q >= q)
    alpha: float
    band: tuple[float, float]  # acceptance band of the ratio at alpha

    @property
    def rejected(self) -> bool:
        return min(self.p_low, self.p_high) <= self.alpha / 2


def heldout_rounding(G: np.ndarray, G_star: np.ndarray, z: np.ndarray, b: np.ndarray, u: float) -> float:
    """Bound on |q_SUT - q| for q = sum_i ||G z_i - b_i||^2 over the held-out draws (z_i, b_i)
    (float64 values of the sampler): per sample the residual carries the sampler's rounding of
    b = G_* z + sigma xi, the cast to the SUT dtype and the product G z, at most
    delta_i = gamma_{2r+4} ((||G||_F + ||G_*||_F) ||z_i|| + ||b_i||); the squares and the
    float mean of nK terms add gamma_{nK+K+2} of the total."""
    G, G_star, z, b = map(_f64, (G, G_star, z, b))
    n, r = z.shape
    K = b.shape[1]
    res = z @ G.T - b
    rn = np.linalg.norm(res, axis=1)
    m = (_fro(G) + _fro(G_star)) * np.linalg.norm(z, axis=1) + np.linalg.norm(b, axis=1)
    d = _g(2 * r + 4, u) * m + _g(r + 2, 2.0**-53) * m  # + the float64 residual computed here
    hi = (rn + d) ** 2
    return float(np.sum(hi - rn**2) + _g(n * K + K + 2, u) * np.sum(hi)) * _EVAL_MARGIN


def heldout_test(heldout_risk: float, n: int, G: np.ndarray, G_star: np.ndarray, Sigma_z: np.ndarray,
                 sigma: float, alpha: float, q_uncertainty: float = 0.0) -> HeldoutTest:
    """Two-sided test of 'heldout_risk is the mean of n i.i.d. ||G z - b||^2 / K' (level alpha).

    q = n K heldout_risk ~ sum_j w_j chi^2_n; the SUT's q is within q_uncertainty of the
    exact one (`heldout_rounding`), so each tail is tested at the endpoint most favourable
    to the null hypothesis.
    """
    K = G.shape[0]
    w = residual_weights(G, G_star, Sigma_z, sigma)
    exact = float(np.sum(w)) / K  # R_enc(G) = Tr(Omega) / K
    q = float(heldout_risk) * n * K
    p_low = weighted_chi2_tails(q + q_uncertainty, w, n)[0]
    p_high = weighted_chi2_tails(max(q - q_uncertainty, 0.0), w, n)[1]
    band = _acceptance_band(w, n, alpha)
    return HeldoutTest(float(heldout_risk) / exact, p_low, p_high, alpha,
                       (band[0] / (n * K * exact), band[1] / (n * K * exact)))


def _acceptance_band(w: np.ndarray, n: int, alpha: float) -> tuple[float, float]:
    """[q_lo, q_hi]: the q values the test accepts (bisection on the monotone tail bounds)."""
    mean = n * float(np.sum(w))

    def bisect(f, a: float, b: float) -> float:
        for _ in range(80):
            m = 0.5 * (a + b)
            if f(m):
                b = m
            else:
                a = m
        return 0.5 * (a + b)

    lo = bisect(lambda x: weighted_chi2_tails(x, w, n)[0] > alpha / 2, 0.0, mean)
    hi = bisect(lambda x: weighted_chi2_tails(x, w, n)[1] <= alpha / 2, mean, 4 * mean + 100 * float(w.max()))
    return lo, hi


# =========================================================================== #
# subspace.davis_kahan: strategies and high-precision references
# =========================================================================== #
@dataclass(frozen=True)
class DKCase:
    """Sigma = diag(lam) (WLOG: sin Theta, ||E|| and the gap are invariant under a common
    rotation), top-r block lam_i = gap (1 + a_i), the rest lam_j = -gap b_j with one b = 0,
    and a symmetric perturbation E given entrywise (upper triangle, row-major)."""

    r: int
    gap: float
    top: tuple[float, ...]
    bottom: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def K(self) -> int:
        return len(self.top) + len(self.bottom)

    @property
    def lam(self) -> np.ndarray:
        return np.array([self.gap * (1 + a) for a in self.top] + [0.0 - self.gap * b for b in self.bottom])

    @property
    def E(self) -> np.ndarray:
        K = self.K
        E = np.zeros((K, K))
        it = iter(self.upper)
        for i in range(K):
            for j in range(i, K):
                E[i, j] = E[j, i] = next(it)
        return E


@st.composite
def dk_cases(draw: st.DrawFn, max_K: int = 5, kinds: tuple[str, ...] = ("indefinite", "psd", "nsd")) -> DKCase:
    """Perturbation cases; kinds steer E: entrywise, or +/- a Gram matrix (semi-definite)."""
    K = draw(st.integers(2, max_K))
    r = draw(st.integers(1, K - 1))
    gap = draw(st.sampled_from((1.0, 0.5, 2.0, 1e-3, 1e3)))
    # entries in [-1, 1], either 0 or of magnitude >= 1e-6 (keeps the reference's digits bounded)
    unit = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False).map(lambda x: x if abs(x) >= 1e-6 else 0.0)
    top = tuple(draw(st.floats(0.0, 3.0, allow_subnormal=False)) for _ in range(r))
    bottom = (0.0,) + tuple(draw(st.floats(0.0, 3.0, allow_subnormal=False)) for _ in range(K - r - 1))
    scale = gap * draw(st.floats(1e-4, 2.0))
    kind = draw(st.sampled_from(kinds))
    if kind == "indefinite":
        vals = [scale * draw(unit) for _ in range(K * (K + 1) // 2)]
    else:
        A = np.array([[draw(unit) for _ in range(K)] for _ in range(draw(st.integers(1, K)))])
        G = A.T @ A
        G = 0.5 * (G + G.T) * (scale / max(1.0, float(np.abs(G).max())))
        if kind == "nsd":
            G = -G
        vals = [float(G[i, j]) for i in range(K) for j in range(i, K)]
    return DKCase(r, gap, top, bottom, tuple(vals))


@dataclass(frozen=True)
class DKQuantities:
    """Everything the Davis-Kahan forms need, at 50 digits (mpmath) or as arb midpoints."""

    sin_op: mpmath.mpf
    sin_F: mpmath.mpf
    E_op: mpmath.mpf
    E_F: mpmath.mpf
    Delta: mpmath.mpf          # lambda_r(Sigma) - lambda_{r+1}(Sigma)
    lam_Sigma: list            # descending
    lam_S: list                # descending
    r: int

    @property
    def defined(self) -> bool:
        """The top-r eigenspace of S is unique (lambda_r(S) > lambda_{r+1}(S))."""
        return self.lam_S[self.r - 1] - self.lam_S[self.r] > mpmath.mpf(10) ** (-35)

    @property
    def seed_ratio(self) -> mpmath.mpf:
        """sin Theta_op / (||E||_op / Delta): the seed's form holds iff <= 1."""
        return self.sin_op * self.Delta / self.E_op if self.E_op > 0 else mpmath.mpf(0)

    @property
    def yws_ratio(self) -> mpmath.mpf:
        """sin Theta_op / (2 ||E||_op / Delta) (Yu, Wang & Samworth 2015, operator form)."""
        return self.seed_ratio / 2

    @property
    def yws_frobenius_ratio(self) -> mpmath.mpf:
        """||sin Theta||_F / (2 min(sqrt(r) ||E||_op, ||E||_F) / Delta) (YWS 2015 Theorem 1)."""
        den = 2 * min(mpmath.sqrt(self.r) * self.E_op, self.E_F)
        return self.sin_F * self.Delta / den if den > 0 else mpmath.mpf(0)

    @property
    def one_sided_gap(self) -> bool:
        """The named condition: lambda_r(S) >= lambda_r(Sigma) or lambda_{r+1}(S) <=
        lambda_{r+1}(Sigma), with a 1e-35 margin (else undecided, reported False)."""
        r, tol = self.r, mpmath.mpf(10) ** (-35)
        return bool(self.lam_S[r - 1] - self.lam_Sigma[r - 1] > tol
                    or self.lam_Sigma[r] - self.lam_S[r] > tol)

    @property
    def mixed_gap(self) -> mpmath.mpf:
        """delta = max(lambda_r(Sigma) - lambda_{r+1}(S), lambda_r(S) - lambda_{r+1}(Sigma)):
        the separation the classical Davis-Kahan sin-theta theorem (1970) divides by."""
        r = self.r
        return max(self.lam_Sigma[r - 1] - self.lam_S[r], self.lam_S[r - 1] - self.lam_Sigma[r])

    def as_json(self) -> dict:
        f = lambda x: float(x)  # noqa: E731
        return {"sin_op": f(self.sin_op), "E_op": f(self.E_op), "Delta": f(self.Delta),
                "seed_ratio": f(self.seed_ratio), "sin2": f(self.sin_op**2),
                "seed_bound_sin2": f((self.E_op / self.Delta) ** 2)}


def dk_quantities(lam: np.ndarray, E: np.ndarray, r: int, dps: int = MP_DPS) -> DKQuantities:
    """sin Theta between the top-r eigenspaces of Sigma = diag(lam) and S = Sigma + E, and the
    norms, in mpmath at `dps` digits from the exact float inputs."""
    lam, E = _f64(lam), _f64(E)
    K = lam.size
    # Working precision: the angle is computed to ~10^-dps ||S|| / gap(S) absolutely, while the
    # ratios divide by ||E|| / Delta; buy the digits that scale separation costs.
    L, e = float(np.abs(lam).max()), float(np.abs(E).max())
    ls = np.sort(lam)[::-1]
    gap = float(ls[r - 1] - ls[r])
    if e > 0 and gap > 0:
        dps = dps + int(math.ceil(math.log10((L + e) / e) + max(0.0, math.log10((L + e) / gap))))
    with mpmath.workdps(dps):
        S = mpmath.matrix(K, K)
        Em = mpmath.matrix(K, K)
        for i in range(K):
            for j in range(K):
                Em[i, j] = to_mpf(E[i, j])
                S[i, j] = Em[i, j] + (to_mpf(lam[i]) if i == j else 0)
        ev, Q = mpmath.eigsy(S)
        order = sorted(range(K), key=lambda k: ev[k], reverse=True)
        lam_S = [ev[k] for k in order]
        top_ref = sorted(range(K), key=lambda k: lam[k], reverse=True)[:r]
        rest = [i for i in range(K) if i not in top_ref]
        # sin Theta = singular values of U_ref_perp^T V_S (rows outside the reference block)
        B = mpmath.matrix(len(rest), r)
        for a, i in enumerate(rest):
            for b, k in enumerate(order[:r]):
                B[a, b] = Q[i, k]
        BtB = B.T * B
        sv2 = mpmath.eigsy(BtB)[0]
        sin_op = mpmath.sqrt(max(max(sv2), 0))
        sin_F = mpmath.sqrt(max(sum(sv2), 0))
        eE = mpmath.eigsy(Em)[0]
        E_op = max(abs(x) for x in eE)
        E_F = mpmath.sqrt(sum(Em[i, j] ** 2 for i in range(K) for j in range(K)))
        lam_Sigma = sorted((to_mpf(x) for x in lam), reverse=True)
        Delta = lam_Sigma[r - 1] - lam_Sigma[r]
        return DKQuantities(+sin_op, +sin_F, +E_op, +E_F, +Delta, lam_Sigma, lam_S, r)


def dk_seed_ratio_float(lam: np.ndarray, E: np.ndarray, r: int) -> float:
    """Fast float64 sin Theta_op Delta / ||E||_op, for the search only (confirmed in mpmath/arb)."""
    S = np.diag(lam) + E
    w, V = np.linalg.eigh(S)
    ws = np.sort(w)[::-1]
    if ws[r - 1] - ws[r] <= 1e-8 * max(1.0, float(np.abs(ws).max())):
        return 0.0  # the top-r eigenspace of S is not (numerically) unique: no verdict
    top = V[:, np.argsort(w)[::-1][:r]]
    ref = np.argsort(lam)[::-1][:r]
    rest = [i for i in range(lam.size) if i not in set(ref.tolist())]
    sin = float(np.linalg.norm(top[rest, :], 2)) if rest else 0.0
    ls = np.sort(lam)[::-1]
    e = float(np.linalg.norm(E, 2))
    return sin * (ls[r - 1] - ls[r]) / e if e > 0 else 0.0


# --------------------------------------------------------------------------- #
# rigorous (arb) subspace quantities
# --------------------------------------------------------------------------- #
def _projector(B: acb_mat) -> acb_mat:
    """Orthogonal projector B (B^* B)^{-1} B^* onto the column span (any column scaling)."""
    Bh = B.conjugate().transpose()
    return B * (Bh * B).solve(Bh)


def _acb(a) -> acb_mat:
    return acb_mat(to_arb_mat(a) if not isinstance(a, (arb_mat, acb_mat)) else a)


def top_eigenspace_arb(S: arb_mat, r: int) -> tuple[acb_mat, list[arb], bool]:
    """(projector onto the top-r eigenspace of the symmetric S, its eigenvalues descending,
    separated) -- rigorous enclosures (acb_mat.eig with eigenvectors; raises ValueError when
    the eigenvalues cannot be isolated).  `separated`: lambda_r(S) > lambda_{r+1}(S) certain."""
    K = S.nrows()
    E, R = acb_mat(S).eig(right=True)
    order = sorted(range(K), key=lambda k: float(E[k].real.mid()), reverse=True)
    lam = [E[k].real for k in order]
    cols = acb_mat(K, r)
    for b, k in enumerate(order[:r]):
        for i in range(K):
            cols[i, b] = R[i, k]
    sep = bool(lam[r - 1] > lam[r]) if r < K else True
    return _projector(cols), lam, sep


def sin_theta_projectors(P1: acb_mat, P2: acb_mat) -> tuple[float, float]:
    """Rigorous (lower, upper) on ||(I - P1) P2||_2 = ||sin Theta||_op for equal dimensions."""
    K = P1.nrows()
    M = (_acb(_eye(K)) - P1) * P2
    Mr = M.real
    return normbound.norm2_lower(Mr), normbound.norm2_upper(Mr)


def dk_quantities_arb(lam: np.ndarray, E: np.ndarray, r: int) -> dict:
    """The counterexample confirmation: rigorous sin Theta_op, ||E||_op and Delta (arb)."""
    lam, E = _f64(lam), _f64(E)
    K = lam.size
    with precision():
        Sigma = arb_mat(K, K)
        for i in range(K):
            Sigma[i, i] = arb(float(lam[i]))
        S = Sigma + to_arb_mat(E)
        P_S, lam_S, sep = top_eigenspace_arb(S, r)
        P_ref, _, _ = top_eigenspace_arb(Sigma, r) if len(set(lam.tolist())) == K else (None, None, None)
        if P_ref is None:  # repeated reference eigenvalues: build the coordinate projector
            P_ref = acb_mat(K, K)
            for i in np.argsort(lam)[::-1][:r]:
                P_ref[int(i), int(i)] = 1
        s_lo, s_hi = sin_theta_projectors(P_ref, P_S)
        e_lo, e_hi = normbound.norm2_lower(E), normbound.norm2_upper(E)
        ls = sorted(lam.tolist(), reverse=True)
        Delta = arb(ls[r - 1]) - arb(ls[r])
        # certified violation of the seed's form: sin_lo > E_hi / Delta_hi
        bound_hi = arb_upper(arb(e_hi) / Delta)
        return {"sin_op_lower": s_lo, "sin_op_upper": s_hi, "E_op_lower": e_lo, "E_op_upper": e_hi,
                "Delta": float(Delta.mid()), "seed_bound_upper": bound_hi,
                "seed_violated": s_lo > bound_hi, "separated": sep,
                "yws_bound_lower": arb_lower(2 * arb(e_lo) / Delta), "yws_holds": s_hi <= arb_lower(2 * arb(e_lo) / Delta)}


# --------------------------------------------------------------------------- #
# the SUT's subspace estimates
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SubspaceCheck:
    sin_sut: tuple[float, float]      # rigorous (lo, hi) of ||sin Theta(U_SUT, U_*)||_op
    sin_exact: tuple[float, float]    # same for the exact top-r eigenspace of S
    sut_vs_exact: float               # rigorous upper bound on ||sin Theta(U_SUT, exact)||_op
    eig_tolerance: float              # derived: 2 p(K) u ||S||_F / gap(S)
    E_op: tuple[float, float]         # rigorous (lo, hi) of ||S - Sigma_beta||_op
    Delta: tuple[float, float]        # rigorous (lo, hi) of lambda_r - lambda_{r+1} of Sigma_beta
    one_sided_gap: bool               # the named condition, certain in arb

    @property
    def seed_bound(self) -> float:
        """(||E|| / Delta) at midpoints-ish: upper ends, for reporting."""
        return self.E_op[1] / self.Delta[0]

    @property
    def seed_ratio(self) -> float:
        return self.sin_sut[1] / (self.E_op[0] / self.Delta[1]) if self.E_op[0] > 0 else 0.0

    @property
    def yws_holds(self) -> bool:
        """||sin Theta(U_SUT, U_*)|| <= 2 ||E|| / Delta + the eigensolver tolerance (rigorous ends)."""
        return self.sin_sut[1] <= 2 * self.E_op[0] / self.Delta[1] * (1 - 1e-15) + self.eig_tolerance

    @property
    def sut_is_top_r(self) -> bool:
        return self.sut_vs_exact <= self.eig_tolerance


def subspace_check(S: np.ndarray, U_sut: np.ndarray, U_star: np.ndarray, Sigma_z: np.ndarray,
                   u: float) -> SubspaceCheck:
    """The Davis-Kahan quantities of one SUT estimate S_N, U_N = Top_r(S_N) against
    Sigma_beta = U_* Sigma_z U_*^T (built exactly in arb from the model's float64 U_*, Sigma_z)."""
    S, U_sut, U_star, Sigma_z = map(_f64, (S, U_sut, U_star, Sigma_z))
    K, r = U_star.shape
    with precision():
        Us = to_arb_mat(U_star)
        Sb = Us * to_arb_mat(Sigma_z) * Us.transpose()
        Sa = to_arb_mat(S)
        P_exact, lam_S, sep = top_eigenspace_arb(Sa, r)
        P_beta, lam_b, _ = _lowrank_projector(Us, Sb, r)
        P_sut = _projector(_acb(U_sut))
        sin_sut = sin_theta_projectors(P_beta, P_sut)
        sin_exact = sin_theta_projectors(P_beta, P_exact)
        sut_vs_exact = sin_theta_projectors(P_exact, P_sut)[1]
        Delta = lam_b[r - 1] - (lam_b[r] if r < K else arb(0))
        E = Sa - Sb
        e_lo, e_hi = normbound.norm2_lower(E), normbound.norm2_upper(E)
        gap_S = lam_S[r - 1] - lam_S[r] if r < K else arb(math.inf)
        gap_lo = arb_lower(gap_S) if r < K else math.inf
        p = 4 * K * K
        tol = 2 * p * u * float(np.linalg.norm(S)) * (1 + 1e-15) / gap_lo if gap_lo > 0 else math.inf
        cond = bool(lam_S[r - 1] >= lam_b[r - 1]) or (r < K and bool(lam_S[r] <= lam_b[r]))
        return SubspaceCheck((sin_sut[0], sin_sut[1]), (sin_exact[0], sin_exact[1]), sut_vs_exact,
                             tol * _EVAL_MARGIN, (e_lo, e_hi), (arb_lower(Delta), arb_upper(Delta)), cond)


def _lowrank_projector(Us: arb_mat, Sb: arb_mat, r: int):
    """Sigma_beta = U_* Sigma_z U_*^T has rank r exactly: its top-r eigenspace is span(U_*)
    (projector U_*(U_*^T U_*)^{-1} U_*^T), lambda_{r+1..K} = 0 exactly, and its nonzero
    eigenvalues are those of Sigma_z U_*^T U_* (enclosed by acb eig of the r x r product)."""
    P = _projector(acb_mat(Us))
    K = Us.nrows()
    UtU = Us.transpose() * Us
    # U^T Sb U = (U^T U) Sz (U^T U), so M = (U^T U)^{-1} U^T Sb U = Sz U^T U, whose eigenvalues
    # are the nonzero eigenvalues of Sb = U Sz U^T
    M = UtU.solve(Us.transpose() * Sb * Us)
    ev = acb_mat(M).eig()
    lam = sorted((e.real for e in ev), key=lambda x: float(x.mid()), reverse=True)
    return P, lam + [arb(0)] * (K - r), True
