"""Property functions for the Richardson family (000 sec 2; 001 sec 4; 002 sec 3.1).

Inputs are the SUT's own matrices and iterates as float arrays (float32 values
are taken exactly); the references are arb enclosures of the exact quantities;
each function returns the measured error, the derived tolerance and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from properties import tolerances
from properties.reference import ball, memo, normbound
from properties.reference.convert import arb_upper, precision, to_arb, to_arb_mat


@dataclass(frozen=True)
class Comparison:
    """A SUT value against an exact reference: rigorous error bound vs derived tolerance."""

    error: float
    tolerance: float

    @property
    def ratio(self) -> float:
        if self.tolerance == 0:
            return 0.0 if self.error == 0 else float("inf")
        return self.error / self.tolerance

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


def _f64(a: np.ndarray) -> np.ndarray:
    """float32 -> float64 is exact; anything else must already be float64."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32/float64 data, got {a.dtype}")
    return a.astype(np.float64)


def rho_upper(P: np.ndarray, H: np.ndarray) -> float:
    """Rigorous upper bound on ||I - P H||_2 (exact P, H)."""
    return normbound.rho_upper(_f64(P), _f64(H))


def exact_solution(H: np.ndarray, d: np.ndarray):
    """Enclosure of x* = H^{-1} d for the SUT's own H and d."""
    return ball.solve(_f64(H), _f64(d).reshape(-1, 1))


def forward_tolerance(P: np.ndarray, H: np.ndarray, d: np.ndarray, xs: list[np.ndarray], u: float,
                      rho: float) -> float:
    """The derived float tolerance of `tolerances.richardson_forward_error` for this run."""
    P, H = _f64(P), _f64(H)
    return tolerances.richardson_forward_error(
        u,
        H.shape[0],
        rho,
        float(np.linalg.norm(P)) * (1 + 1e-15),
        float(np.linalg.norm(H)) * (1 + 1e-15),
        float(np.linalg.norm(_f64(d))) * (1 + 1e-15),
        [float(np.linalg.norm(_f64(x))) * (1 + 1e-15) for x in xs],
    )


def identity_check(P: np.ndarray, H: np.ndarray, d: np.ndarray, xs: list[np.ndarray],
                   u: float) -> tuple[Comparison, float]:
    """richardson.identity: x_L - x* against (I - P H)^L (x_0 - x*).

    xs = [x_0, ..., x_L] from the SUT decoder.  Returns the comparison and rho_upper.
    """
    L = len(xs) - 1
    xstar = exact_solution(H, d)
    with precision():
        e0 = to_arb_mat(_f64(xs[0]).reshape(-1, 1)) - xstar
        eL = ball.richardson_error(_f64(P), _f64(H), e0, L)
        err = ball.norm2_diff_upper(eL + xstar, _f64(xs[-1]).reshape(-1, 1))
    rho = rho_upper(P, H)
    return Comparison(err, forward_tolerance(P, H, d, xs, u, rho)), rho


def closed_form_check(P: np.ndarray, H: np.ndarray, d: np.ndarray, xs: list[np.ndarray],
                      u: float) -> tuple[Comparison, Comparison]:
    """richardson.closed_form: from z_0 = 0, z_L = sum_{j<L} (I-PH)^j P d and
    z_L - z_dagger = -(I - P H)^L z_dagger (both against the SUT's z_L)."""
    if np.any(_f64(xs[0]) != 0):
        raise ValueError("closed_form_check needs z_0 = 0")
    L = len(xs) - 1
    zL = _f64(xs[-1]).reshape(-1, 1)
    rho = rho_upper(P, H)
    tol = forward_tolerance(P, H, d, xs, u, rho)
    with precision():
        series = ball.richardson_closed_form(_f64(P), _f64(H), _f64(d), L)
        err_series = ball.norm2_diff_upper(series, zL)
        zdag = exact_solution(H, d)
        gap = -ball.richardson_error(_f64(P), _f64(H), zdag, L)  # -(I-PH)^L z_dagger
        err_gap = ball.norm2_diff_upper(gap + zdag, zL)
    return Comparison(err_series, tol), Comparison(err_gap, tol)


@dataclass(frozen=True)
class BoundCheck:
    """richardson.norm_bound on one task."""

    exact_holds: bool  # ||e_L|| <= rho^L ||e_0|| certainly, in arb, for the exact e_L
    sut_error: float  # rigorous upper bound on ||x_L^SUT - x*||
    bound: float  # rigorous upper bound on rho^L ||e_0||
    tolerance: float  # derived float tolerance of the SUT iterate
    rho: float
    rho_certified: bool  # rho >= a rigorous lower bound on ||I - P H||_2
    tightness: float  # ||e_L|| / (rho^L ||e_0||), midpoint

    @property
    def sut_holds(self) -> bool:
        return self.sut_error <= self.bound + self.tolerance


@memo.memoize(decode=lambda d: BoundCheck(**d))  # pure in its inputs: ~3.5 ms of arb per task
def norm_bound_check(P: np.ndarray, H: np.ndarray, d: np.ndarray, xs: list[np.ndarray],
                     u: float, rho: float | None = None) -> BoundCheck:
    """||e_L||_2 <= ||I - P H||_2^L ||e_0||_2 with rho a rigorous upper bound (000 eq 4)."""
    L = len(xs) - 1
    rho = rho_upper(P, H) if rho is None else rho
    xstar = exact_solution(H, d)
    with precision():
        e0 = to_arb_mat(_f64(xs[0]).reshape(-1, 1)) - xstar
        eL = ball.richardson_error(_f64(P), _f64(H), e0, L)
        n0, nL = ball.vec_norm2(e0), ball.vec_norm2(eL)
        bound = to_arb(rho) ** L * n0
        exact_holds = bool(nL <= bound)
        sut_err = ball.norm2_diff_upper(xstar, _f64(xs[-1]).reshape(-1, 1))
        bound_up = arb_upper(bound)
        tight = float(nL.mid()) / float(bound.mid()) if float(bound.mid()) > 0 else 0.0
    certified = normbound.certify_upper_bound(identity_minus(P, H), rho)
    return BoundCheck(exact_holds, sut_err, bound_up, forward_tolerance(P, H, d, xs, u, rho),
                      rho, certified, tight)


def identity_minus(P: np.ndarray, H: np.ndarray):
    return normbound.identity_minus_product(_f64(P), _f64(H))


@memo.memoize(decode=tuple)
def certified_risk_terms(P: np.ndarray, H: np.ndarray, d: np.ndarray, xs: list[np.ndarray],
                         u: float) -> tuple[float, float, float, float]:
    """(actual, bound, tolerance, rho) of one task for richardson.certified_risk, z_0 = 0.

    actual = ||z_L^SUT - x*||^2 / K (rigorous upper end), bound = rho^{2L} ||x*||^2 / K
    with rho >= ||I - P H||_2 rigorous, tolerance = the first-order effect of the SUT's
    rounding on the squared error, (2 b + t) t / K with b^2 = K bound and t the forward bound.
    """
    K, L = H.shape[0], len(xs) - 1
    rho = rho_upper(P, H)
    xstar = exact_solution(H, d)
    with precision():
        err = ball.norm2_diff_upper(xstar, _f64(xs[-1]).reshape(-1, 1))
        nx = ball.vec_norm2(xstar)
        bound = arb_upper(to_arb(rho) ** (2 * L) * nx * nx / K)
    tol = forward_tolerance(P, H, d, xs, u, rho)
    # exact ||e_L|| <= b = sqrt(K bound) implies SUT err <= b + t, so err^2 <= b^2 + (2b + t) t
    b = float(np.sqrt(bound * K)) * (1 + 1e-15)
    return err * err / K, bound, (2 * b + tol) * tol / K, rho

