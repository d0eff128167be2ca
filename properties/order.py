"""Convergence orders from a halving grid: local log-log slopes, their asymptotic regime and an
interval for the limit, with the grid points too close to the rounding floor left out.  No torch.

Shared by the finite-NTK claims (deviation O(eta^2)) and the EP estimator orders (error O(beta)
one-sided, O(beta^2) symmetric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


@dataclass(frozen=True)
class OrderFit:
    """Order p of a deviation D(h) on a halving grid h_k = h_0 2^-k (e.g. the NTK deviation in eta,
    p = 2; an EP estimator's error in beta, p = 1 or 2).

    local_slopes[k] = log(D_k / D_{k+1}) / log 2.  When D is analytic in h with
    D = a h^p (1 + b h + ...), the slopes converge to p and their differences d_k =
    slope_k - slope_{k+1} contract by 1/2 per halving once b h is small.  The fit is *in the
    asymptotic regime* when the last three differences have one sign and contract by ratios in
    [Q_MIN, Q_MAX];
    then the limit lies within |d_last| Q_MAX / (1 - Q_MAX) = 3 |d_last| (the geometric tail of the
    remaining differences, which keep contracting by <= Q_MAX; their ratios tend to 1/2, or 1/4
    when b = 0) of the last slope, widened by the rounding halfwidths, and must contain the order p.
    """

    etas: tuple[float, ...]
    devs: tuple[float, ...]
    floors: tuple[float, ...]
    admitted: int  # leading grid points with floor/D <= ADMIT
    local_slopes: tuple[float, ...]
    rounding: tuple[float, ...]  # rounding halfwidth of each local slope
    ols_slope: float | None  # least-squares slope of log D on log eta over the admitted points
    contraction: float | None  # q of the last three differences (None: fewer than 3)
    interval: tuple[float, float] | None  # None: not (yet) in the asymptotic regime

    @property
    def resolved(self) -> bool:
        return self.interval is not None

    @property
    def limit(self) -> float | None:
        return None if self.interval is None else 0.5 * (self.interval[0] + self.interval[1])

    @property
    def halfwidth(self) -> float | None:
        return None if self.interval is None else 0.5 * (self.interval[1] - self.interval[0])

    def contains(self, order: float) -> bool:
        return self.interval is not None and self.interval[0] <= order <= self.interval[1]


ADMIT = 2.0**-4  # a point is used when its rounding floor is <= D/16 (slope error <= 0.13)
# asymptotic regime: differences contract by a ratio in [1/8, 3/4] (the limit ratio is 1/2, or 1/4
# when the O(eta) coefficient vanishes); a ratio below 1/8 announces a sign change of the differences
Q_MIN, Q_MAX = 0.125, 0.75
MAX_POINTS = 10  # the grid is refined (halved) up to eta_0 / 512 to reach the regime


def order_fit(etas: Sequence[float], devs: Sequence[float], floors: Sequence[float]) -> OrderFit:
    """Local slopes and the order interval over the leading admitted grid points.

    Rounding: with |D^_k - D_k| <= f_k and t_k = f_k / D^_k < 1, |log D^_k - log D_k| <=
    -log(1 - t_k), so a local slope is off by at most h_k = (-log(1 - t_k) - log(1 - t_{k+1})) /
    log 2; the differences by h_k + h_{k+1}.  Regime: the last three differences exceed their
    rounding (2 max h) and share a sign, with ratios in [Q_MIN, Q_MAX]; interval: slope_last +-
    (3 |d_last| + 4 max h).  Slopes converged to within rounding (every |d| <= 2 max h):
    slope_last +- 6 max h.  The regime on the first two of the three, the last inside rounding:
    slope_last +- (3 (|d_last| + 2 max h) + 4 max h).
    """
    etas, D, F = _f64(etas), _f64(devs), _f64(floors)
    tau = np.where(D > 0, F / np.where(D > 0, D, 1.0), math.inf)
    n = 0
    while n < len(D) and tau[n] <= ADMIT:
        n += 1
    steps = [np.log(etas[k] / etas[k + 1]) for k in range(n - 1)]
    slopes = tuple(float(np.log(D[k] / D[k + 1]) / steps[k]) for k in range(n - 1))
    ln = -np.log1p(-tau[:n]) if n else np.zeros(0)
    rnd = tuple(float((ln[k] + ln[k + 1]) / steps[k]) for k in range(n - 1))
    ols = float(np.polyfit(np.log(etas[:n]), np.log(D[:n]), 1)[0]) if n >= 2 else None
    q = interval = None
    if len(slopes) >= 4:
        d = np.diff(slopes)[-3:]  # d_k = slope_{k+1} - slope_k: the last three
        h = max(rnd)
        if np.all(np.abs(d) <= 2 * h):  # converged to within rounding
            q, interval = 0.0, (slopes[-1] - 6 * h, slopes[-1] + 6 * h)
        elif np.all(np.abs(d) > 2 * h) and (np.all(d > 0) or np.all(d < 0)):
            ratios = (abs(d[1] / d[0]), abs(d[2] / d[1]))
            q = float(max(ratios))
            if Q_MIN <= min(ratios) and q <= Q_MAX:
                # the regime bound is also the tail bound: later differences contract by <= Q_MAX
                w = abs(d[2]) * Q_MAX / (1 - Q_MAX) + 4 * h
                interval = (slopes[-1] - w, slopes[-1] + w)
        elif (np.all(np.abs(d[:2]) > 2 * h) and d[0] * d[1] > 0 and abs(d[2]) <= 2 * h
              and Q_MIN <= abs(d[1] / d[0]) <= Q_MAX):
            # the regime seen on two differences, the third already inside rounding: its true value is
            # <= |d_2| + 2h, and the tail beyond contracts by <= Q_MAX; plus the rounding of the slope
            q = float(abs(d[1] / d[0]))
            w = (abs(d[2]) + 2 * h) * Q_MAX / (1 - Q_MAX) + 4 * h
            interval = (slopes[-1] - w, slopes[-1] + w)
    return OrderFit(tuple(etas), tuple(D), tuple(F), n, slopes, rnd, ols, q, interval)


