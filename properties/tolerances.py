"""Every tolerance of the suite, derived from unit roundoff, size and conditioning.

Nothing here is tuned: each function states the rounding-error bound it
implements (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
ch. 3).  Norms of |A| are bounded by Frobenius norms, || |A| ||_2 <= ||A||_F.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}


def unit_roundoff(dtype: str) -> float:
    try:
        return UNIT_ROUNDOFF[dtype]
    except KeyError:
        raise ValueError(f"no unit roundoff known for dtype {dtype!r}") from None


def gamma(n: int, u: float) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of an n-term inner product."""
    if n * u >= 1:
        raise ValueError(f"gamma_{n} undefined at u = {u}: n u >= 1")
    return n * u / (1 - n * u)


def richardson_step_error(
    u: float, K: int, p_fro: float, h_fro: float, d_norm: float, x_norm: float
) -> float:
    """Bound on ||fl(x + P(d - H x)) - (x + P(d - H x))||_2 for one decoder step.

    r^ = fl(d - Hx): |r^ - r| <= gamma_{K+1}(|d| + |H||x|)
    fl(P r^):       |. - P r^| <= gamma_K |P||r^|
    fl(x + .):      one more rounding, u |x + P r^|
    Summing the three with ||r^|| <= ||d|| + ||H||_F ||x|| gives
    delta <= (gamma_{K+1} p + gamma_K p + u p)(d + h x) + u x   (p = ||P||_F, h = ||H||_F),
    written below with gamma_{2K+2} >= gamma_{K+1} + gamma_K + u.
    """
    r_norm = d_norm + h_fro * x_norm
    return gamma(2 * K + 2, u) * p_fro * r_norm + gamma(1, u) * x_norm


def richardson_forward_error(
    u: float,
    K: int,
    rho: float,
    p_fro: float,
    h_fro: float,
    d_norm: float,
    x_norms: Sequence[float],
) -> float:
    """Bound on ||x^_L - x_L||_2 for L computed decoder steps against exact ones.

    The computed iterate obeys x^_{l+1} = x^_l + P(d - H x^_l) + delta_l, so the error
    propagates through M = I - P H: x^_L - x_L = sum_l M^{L-1-l} delta_l and
    ||x^_L - x_L|| <= sum_l rho^{L-1-l} delta_l with rho >= ||M||_2 (rigorous), delta_l from
    `richardson_step_error` at the computed ||x^_l||.  Used for e_L, z_L and z_L - z_dagger,
    which all differ from x_L by exactly known vectors.
    """
    L = len(x_norms) - 1
    total = 0.0
    for l in range(L):
        delta = richardson_step_error(u, K, p_fro, h_fro, d_norm, x_norms[l])
        total += rho ** (L - 1 - l) * delta
    # Each delta bound is first order in u; (1 + gamma_{2K+2}) covers the products of deltas
    # propagated through the rounded iterates.
    return total * (1 + gamma(2 * K + 2, u))


def matrix_input_error(u: float, K: int, a_fro: float) -> float:
    """Bound on ||fl(A) - A||_2 for a K x K matrix rounded entrywise: u ||A||_F."""
    return u * a_fro


def relative_band_golden(dtype: str) -> float:
    """Relative band of a golden metric of a trained checkpoint: sqrt(u).

    A checkpoint is bitwise reproducible on one build (seeded, deterministic
    algorithms), so on the pinning machine the observed drift is 0.  Across BLAS
    builds only the reduction order changes, a perturbation of a few u per
    operation; sqrt(u) leaves room for training to amplify it ~1e8-fold (float64)
    while still catching any change of algorithm, data or seed, which moves
    these metrics at the percent level.
    """
    return float(np.sqrt(unit_roundoff(dtype)))


def eb_float_tolerance(losses: np.ndarray, c: float, delta: float, u: float = 2.0**-53) -> float:
    """Bound on |float EB - exact EB| for a float64 evaluation of the formula.

    clipped losses are exact; mean: |fl - m| <= gamma_n m (sum of n nonnegatives and one
    division); V by two passes: |fl - V| <= gamma_{n+3} V + n (gamma_n m)^2/(n-1) (the
    second term is the exact effect of a perturbed mean); sqrt term T = sqrt(k V), k =
    2 log(2/delta)/n: |fl - T| <= min(sqrt(k dV), k dV / sqrt(k (V - dV))) + gamma_6 T (log,
    products, sqrt each one rounding); range term R: gamma_6 R; the two final additions gamma_2 of the
    sum.  Evaluated from float values of m, V (their own error is second order here).
    """
    x = np.minimum(np.asarray(losses, dtype=np.float64), c)
    n = x.size
    m = float(np.mean(x))
    v = float(np.var(x, ddof=1))
    lg = float(np.log(2 / delta))
    t = np.sqrt(2 * v * lg / n)
    r = 7 * c * lg / (3 * (n - 1))
    dm = gamma(n, u) * m
    dv = gamma(n + 3, u) * v + n * dm**2 / (n - 1)
    k = 2 * lg / n
    # |sqrt(kV^) - sqrt(kV)| <= min(sqrt(k dV), k dV / sqrt(k (V - dV))): the second form is
    # the mean-value bound, tight whenever V is well away from 0
    v_low = v - dv
    dt_sqrt = np.sqrt(k * dv)
    if v_low > 0:
        dt_sqrt = min(dt_sqrt, k * dv / np.sqrt(k * v_low))
    dt = dt_sqrt + gamma(6, u) * t
    dr = gamma(6, u) * r
    return float(dm + dt + dr + gamma(2, u) * (m + t + r))
