"""Strategies, first-order bounds and statistics for aep.tracking and fa.upstream_failure (seed 003).
No torch: the certificates pass the SUT's float arrays and norms in.

aep.tracking -- the tracking-AEP pair and why it does not care where the free phase stopped.
With the free force F, its Jacobian J, the readout cost C with dC/dz = c(z) (affine: C is quadratic,
M = dc/dz) and the vector-field readout, the tracking pair Z = (z+, z-) solves

    G+ = F(z+) - beta c(z+) - 2 A(zbar) delta = 0,   G- = F(z-) + beta c(z-) + 2 A(zbar) delta = 0,
    zbar = (z+ + z-)/2, delta = (z+ - z-)/2, 2 A(z) = J(z) - J(z)^T,

and the estimate is g_t = dC/dtheta(zbar) - (dF/dtheta(zbar))^T delta / beta.  Summing the two
equations the corrections cancel: F(zbar) = beta M delta + O(delta^2), so zbar = z* + O(beta^2);
subtracting: J(zbar)^T delta = beta c(zbar) + O(beta^3).  Hence, to first order,

  (tracking)  g_t - g* = O(beta^2), and the stopping point z0 of the free phase appears in NO
              equation -- it is only the start of the relaxation -- so g_t(z0) = g_t(z*): the
              error bound does not grow with the free-phase error e0 = z0 - z*;
  (frozen)    the frozen pair solves F(z) -+ beta c(z) - 2 A(z0)(z - z0) = 0; at beta = 0 its root
              is zhat = z* - J*^-T (J* - J*^T) e0 + O(e0^2) (not z*), its linear response is
              (J(zhat) - 2 A(z0))^-1 = J*^-T + O(e0), and it reads out at z0: so
              g_f - g* = D_f e0 + O(|e0|^2 + beta^2), an error that grows linearly with e0.

`root_gap_bound` turns "z0 is only the start" into an assertable inequality: two tracking solves
started at different points (z0 and z*) end at residuals rho_1, rho_2 of the same equations, so
their end states differ only by the root perturbation ||DG^-1|| (||G_1|| + ||G_2||).

fa.upstream_failure -- `hoeffding_halfwidth` (two-sided mean of [-1, 1] variables) and
`sign_test_pvalue` (exact binomial tail) for the statistics over feedback seeds and training runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from .strategies import SEEDS
from .tolerances import gamma

FALSE_ALARM = 1e-6  # every statistical check of these claims (DESIGN.md contract 6)
FROZEN_FAILS = 0.9  # "the frozen linearization fails": cos(g_frozen, g*) < 0.9
RESTORED = 0.99  # "tracking restores the gradient": cos(g_tracking, g*) >= 0.99 (the seed's 0.997 level)


# --------------------------------------------------------------------------- #
# aep.tracking: drawn cases
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TrackingCase:
    """One non-conservative block, its input, where its free phase stops, and the nudge.

    kind "damped": DampedAttention F = lam (x - z) + s (attn(z) - c z) (003 TL;DR 2);
    kind "thick": ThickBlock F = (x - z) - c z + attn(LN z) + ffn(LN z) (003 2026-06-09).
    The free phase is the seed's Euler relaxation from x, stopped at the first iterate whose
    residual ||F(z)|| / max(||z||, 1) is <= 10^log_stop (z0 = x when x already is): log_stop spans
    the seed's validity threshold (~1e-4) up to unrelaxed states (res ~ 1)."""

    kind: str
    T: int
    d: int
    B: int
    seed: int
    s: float = 1.0  # damped: attention strength
    c: float = 1.0  # damping
    lam: float = 1.0  # damped: leak / injection
    qk_scale: float = 1.0  # damped: query/key scale (logit size)
    v_scale: float = 1.0  # damped: value scale
    resinit: float = 1.0  # thick: scale of the residual branches' output weights
    causal: bool = False
    x_scale: float = 1.0
    log_stop: float = -2.0
    beta: float = 1e-2

    @property
    def stop_residual(self) -> float:
        return 10.0 ** self.log_stop

    @property
    def rate(self) -> float:
        """The linear damping rate of the force (its Jacobian's diagonal shift): lam + s c (damped),
        1 + c (thick); the Euler step is 0.6 / rate (003's eps 0.3 at c = 1 for the thick block)."""
        return self.lam + self.s * self.c if self.kind == "damped" else 1.0 + self.c

    @property
    def eps(self) -> float:
        return 0.6 / self.rate


@st.composite
def tracking_cases(draw: st.DrawFn) -> TrackingCase:
    kind = draw(st.sampled_from(("damped", "thick")))
    T = draw(st.integers(2, 3))
    d = draw(st.integers(3, 4))
    B = draw(st.integers(1, 2))
    seed = draw(SEEDS)
    common = {"causal": draw(st.booleans()), "x_scale": draw(st.floats(0.5, 3.0)),
                  "log_stop": draw(st.floats(-4.0, 0.5)), "beta": 10.0 ** draw(st.floats(-3.0, -0.5))}
    if kind == "damped":
        return TrackingCase(kind, T, d, B, seed, s=draw(st.floats(0.5, 8.0)), c=draw(st.floats(1.0, 1.5)),
                            lam=draw(st.sampled_from((0.25, 1.0))), qk_scale=draw(st.floats(0.5, 3.0)),
                            v_scale=draw(st.floats(0.5, 3.0)), **common)
    return TrackingCase(kind, T, d, B, seed, c=draw(st.floats(0.0, 2.0)), resinit=draw(st.floats(0.5, 2.5)),
                        **common)


# --------------------------------------------------------------------------- #
# aep.tracking: first-order bounds
# --------------------------------------------------------------------------- #
def stop_tolerance(u: float, terms: int) -> float:
    """Residual a nudged / tracking solve stops at: 2^4 gamma_terms.  The force's own rounding is
    |fl(F) - F| <= gamma_terms |F-terms| (Higham ch. 3), ~gamma_terms relative to ||z||: the
    residual test is decided by the iteration, not by rounding, 16 x above that floor."""
    return 16.0 * gamma(terms, u)


def pair_jacobian_inverse_norm(J: np.ndarray, M: np.ndarray, beta: float) -> float:
    """||DG^-1||_2 of the tracking pair's linearisation at its root, to first order in delta.

    With s = (dz+ + dz-)/sqrt 2, t = (dz+ - dz-)/sqrt 2 (an orthogonal change of basis), the
    derivative of (G+ + G-, G+ - G-)/sqrt 2 is [[J, -beta M], [-beta M, J^T]] (the corrections'
    derivatives -(J - J^T) t cancel in the sum and turn J into J^T in the difference; the derivative
    of A(zbar) itself multiplies delta = O(beta) and is second order)."""
    n = J.shape[0]
    D = np.block([[J, -beta * M], [-beta * M, J.T]])
    if D.shape != (2 * n, 2 * n):
        raise ValueError("J and M must be square of the same size")
    return float(1.0 / np.linalg.svd(D, compute_uv=False)[-1])


def residual_norm(res: float, Z_norms: Sequence[float]) -> float:
    """||G(Z)||_2 from a solve's reported residual max_s ||G_s|| / max(||Z_s||, 1) over its samples:
    <= res sqrt(sum_s max(||Z_s||, 1)^2)."""
    return float(res * math.sqrt(sum(max(float(v), 1.0) ** 2 for v in Z_norms)))


def root_gap_bound(inv_norm: float, g1: float, g2: float) -> float:
    """||Z_1 - Z_2|| for two approximate roots of one system with residual norms g1, g2: each is
    within ||DG^-1|| g_i of the root (first order), doubled for the neglected second-order terms."""
    return 2.0 * inv_norm * (g1 + g2)


def ift_reference_error(u: float, n: int, cond_J: float, fth_fro: float, a_norm: float, dist: float,
                        terms: int) -> float:
    """First-order bound on the float64 dense IFT gradient's error (the reference of these checks):
    J by forward mode (gamma_terms |J|), the backward-stable solve with J^T (gamma_{3n} cond(J)),
    the equilibrium's own distance `dist` from the exact root (moves a by cond(J) dist), the vjp
    P^T a (gamma_terms ||P|| ||a||); doubled for the products of first-order terms."""
    g_t, g_s = gamma(terms, u), gamma(3 * n, u)
    return 2.0 * fth_fro * a_norm * (cond_J * (g_t + g_s + dist) + g_t)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


# --------------------------------------------------------------------------- #
# fa.upstream_failure: statistics
# --------------------------------------------------------------------------- #
def hoeffding_halfwidth(n: int, alpha: float, lo: float = -1.0, hi: float = 1.0) -> float:
    """t with P(|mean_n - mu| >= t) <= alpha for n independent variables in [lo, hi] (Hoeffding
    1963: P(|mean - mu| >= t) <= 2 exp(-2 n t^2 / (hi - lo)^2))."""
    if n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    return float((hi - lo) * math.sqrt(math.log(2.0 / alpha) / (2.0 * n)))


def sign_test_pvalue(k: int, n: int) -> float:
    """P(Bin(n, 1/2) >= k): the one-sided p-value of k positive signs among n independent draws of
    a statistic whose law, under the null, puts mass <= 1/2 above 0 (exact binomial tail)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return float(sum(math.comb(n, j) for j in range(k, n + 1)) / 2.0**n)


def sign_test_runs(alpha: float) -> int:
    """The fewest runs for which all-positive signs reject the null at level alpha: 2^-n <= alpha."""
    return math.ceil(math.log2(1.0 / alpha))
