"""References for the empirical-Bernstein certificate (Maurer & Pontil 2009, Thm 4).

The bound on losses clipped to [0, c] (seed 000 eq 5, 001 sec 2) is evaluated
here in mpmath from the exact values of the float losses; loss laws come with
their exact clipped means; coverage is judged by an exact binomial test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np
from scipy import stats

from properties.reference.convert import MP_DPS


def eb_upper_reference(losses: np.ndarray, c: float, delta: float, dps: int = MP_DPS) -> mpmath.mpf:
    """mean + sqrt(2 V log(2/delta)/n) + 7 c log(2/delta)/(3(n-1)) in mpmath, V with ddof 1."""
    with mpmath.workdps(dps):
        x = [min(mpmath.mpf(float(v)), mpmath.mpf(c)) for v in np.asarray(losses, dtype=np.float64)]
        n = len(x)
        mean = mpmath.fsum(x) / n
        var = mpmath.fsum((v - mean) ** 2 for v in x) / (n - 1)
        lg = mpmath.log(2 / mpmath.mpf(delta))
        return mean + mpmath.sqrt(2 * var * lg / n) + 7 * mpmath.mpf(c) * lg / (3 * (n - 1))


@dataclass(frozen=True)
class LossLaw:
    """A law of losses on [0, inf) with the exact mean of its clipped version."""

    name: str
    sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
    clipped_mean: Callable[[float], mpmath.mpf]


def bernoulli(p: float) -> LossLaw:
    return LossLaw(
        f"Bernoulli(p={p:g})",
        lambda g, shape: (g.random(shape) < p).astype(np.float64),
        lambda c: mpmath.mpf(p) * min(mpmath.mpf(1), mpmath.mpf(c)),
    )


def beta(a: float, b: float) -> LossLaw:
    def clipped_mean(c: float) -> mpmath.mpf:
        # E min(X, c) = int_0^c P(X > t) dt, X ~ Beta(a, b) on [0, 1]
        c = min(mpmath.mpf(c), 1)
        return mpmath.quad(lambda t: 1 - mpmath.betainc(a, b, 0, t, regularized=True), [0, c])

    return LossLaw(f"Beta({a:g},{b:g})", lambda g, shape: g.beta(a, b, shape), clipped_mean)


def clipped_gaussian(mu: float, s: float) -> LossLaw:
    """Loss max(X, 0), X ~ N(mu, s^2), then clipped to [0, c] by the certificate."""

    def clipped_mean(c: float) -> mpmath.mpf:
        # E min(max(X,0), c) = int_0^c P(X > t) dt
        return mpmath.quad(lambda t: mpmath.ncdf(-(t - mu) / s), [0, mu, c] if 0 < mu < c else [0, c])

    return LossLaw(
        f"ClippedGaussian({mu:g},{s:g})",
        lambda g, shape: np.maximum(g.normal(mu, s, shape), 0.0),
        clipped_mean,
    )


def scaled_chi2(k: int, scale: float) -> LossLaw:
    """Loss scale * chi^2_k (heavy right tail, exercises the clipping)."""

    def clipped_mean(c: float) -> mpmath.mpf:
        q = lambda t: mpmath.gammainc(mpmath.mpf(k) / 2, t / (2 * mpmath.mpf(scale)), mpmath.inf, regularized=True)  # noqa: E731
        return mpmath.quad(q, [0, c])

    return LossLaw(
        f"ScaledChi2(k={k},s={scale:g})",
        lambda g, shape: scale * g.chisquare(k, shape),
        clipped_mean,
    )


def binomial_upper_pvalue(failures: int, trials: int, p: float) -> float:
    """P(Bin(trials, p) >= failures): small when failures are too many for rate <= p."""
    if failures <= 0:
        return 1.0
    return float(stats.binom.sf(failures - 1, trials, p))


def binomial_critical(trials: int, p: float, alpha: float) -> int:
    """Smallest f with P(Bin(trials, p) >= f) <= alpha: the rejection threshold."""
    return int(stats.binom.isf(alpha, trials, p)) + 1
