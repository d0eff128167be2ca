"""Empirical-Bernstein upper confidence bound on a clipped mean (numpy only).

Maurer & Pontil (2009), Theorem 4, for i.i.d. Z_i in [0, 1], scaled to [0, c] as in
seed 001 sec 2 / seed 000 eq 5: with probability >= 1 - delta,
    E[min(l, c)] <= mean + sqrt(2 V log(2/delta) / n) + 7 c log(2/delta) / (3 (n - 1)),
V the unbiased (ddof = 1) sample variance of the clipped losses.  One-sided.
The constants are module-level names read at call time, so tests can plant mutants.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

BERNSTEIN_CONSTANT = 7.0 / 3.0
VARIANCE_DDOF = 1


def _validate(x: np.ndarray, c: float, delta: float) -> None:
    n = x.shape[-1]
    if n < 2:
        raise ValueError(f"eb_upper needs at least 2 losses, got {n}")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"clipping level c must be finite and > 0, got {c}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"losses must be finite; {int(np.sum(~np.isfinite(x)))} of {x.size} are not")


def eb_upper_batch(losses: ArrayLike, c: float, delta: float) -> np.ndarray:
    """eb_upper of each row of a (trials, n) array: one vectorized evaluation per sample."""
    x = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"eb_upper_batch takes a (trials, n) array, got shape {x.shape}")
    _validate(x, c, delta)
    n = x.shape[-1]
    clipped = np.clip(x, 0.0, c)
    log_term = math.log(2.0 / delta)
    variance = np.var(clipped, axis=-1, ddof=VARIANCE_DDOF)
    return (clipped.mean(axis=-1)
            + np.sqrt(2.0 * variance * log_term / n)
            + BERNSTEIN_CONSTANT * c * log_term / (n - 1))


def eb_upper(losses: ArrayLike, c: float, delta: float) -> float:
    """Upper confidence bound at level 1 - delta on E[min(loss, c)] from held-out losses."""
    x = np.asarray(losses, dtype=np.float64).reshape(1, -1)
    return float(eb_upper_batch(x, c, delta)[0])
