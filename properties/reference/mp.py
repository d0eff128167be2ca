"""mpmath references (MP_DPS digits) mirroring `ball`, for scalars and K <= 8.

Not rigorous (plain multiprecision floating point, no error enclosure), but an
independent engine: agreement with the arb enclosures cross-checks both. At
K >= 32 mpmath costs 0.1-2 s per matrix op; use `ball` there.

Precision: each function takes `dps`; None means max(mpmath.mp.dps, MP_DPS).
"""

from __future__ import annotations

from typing import Any

import mpmath

from .convert import to_mpf_matrix, working_dps, workdps

__all__ = ["matpow", "solve", "richardson_error", "richardson_closed_form"]

_ITERATE_MAX_STEPS = 64


def _as_mp(x: Any) -> mpmath.matrix:
    return x if isinstance(x, mpmath.matrix) else to_mpf_matrix(x)


def _square(m: mpmath.matrix, what: str) -> int:
    if m.rows != m.cols:
        raise ValueError(f"{what}: expected a square matrix, got {m.rows}x{m.cols}")
    return m.rows


def matpow(m: Any, n: int, *, dps: int | None = None) -> mpmath.matrix:
    """m**n (n >= 0; identity for n = 0)."""
    m = _as_mp(m)
    k = _square(m, "matpow")
    if n < 0:
        raise ValueError(f"matpow: exponent must be >= 0, got {n}")
    if n == 0:
        return mpmath.eye(k)
    with workdps(working_dps(dps)):
        out, sq = None, m
        while True:
            if n & 1:
                out = sq if out is None else out * sq
            n >>= 1
            if not n:
                return out
            sq = sq * sq


def solve(a: Any, b: Any, *, dps: int | None = None) -> mpmath.matrix:
    """a^-1 b by LU with partial pivoting; ValueError if mpmath finds a singular pivot."""
    a, b = _as_mp(a), _as_mp(b)
    k = _square(a, "solve")
    if b.rows != k:
        raise ValueError(f"solve: shapes {k}x{k} and {b.rows}x{b.cols} do not match")
    with workdps(working_dps(dps)):
        cols = []
        try:
            for j in range(b.cols):
                cols.append(mpmath.lu_solve(a, b.column(j)))
        except ZeroDivisionError as exc:
            raise ValueError("solve: matrix is numerically singular") from exc
        out = mpmath.matrix(k, b.cols)
        for j, c in enumerate(cols):
            for i in range(k):
                out[i, j] = c[i]
        return out


def _iteration_matrix(P: Any, H: Any) -> mpmath.matrix:
    Pm, Hm = _as_mp(P), _as_mp(H)
    if Pm.cols != Hm.rows or Pm.rows != Hm.cols:
        raise ValueError(
            f"P is {Pm.rows}x{Pm.cols} and H is {Hm.rows}x{Hm.cols}: P H must be square"
        )
    return mpmath.eye(Pm.rows) - Pm * Hm


def _check_vec(v: mpmath.matrix, k: int, what: str) -> None:
    if v.rows != k or v.cols != 1:
        raise ValueError(f"{what}: expected a vector of length {k}, got {v.rows}x{v.cols}")


def richardson_error(P: Any, H: Any, e0: Any, L: int, *, dps: int | None = None) -> mpmath.matrix:
    """(I - P H)**L e0 as a column mpmath.matrix (exact inputs)."""
    if L < 0:
        raise ValueError(f"richardson_error: L must be >= 0, got {L}")
    with workdps(working_dps(dps)):
        B = _iteration_matrix(P, H)
        v = _as_mp(e0)
        _check_vec(v, B.rows, "richardson_error: e0")
        if L <= _ITERATE_MAX_STEPS:
            for _ in range(L):
                v = B * v
            return v
        sq = B
        while True:
            if L & 1:
                v = sq * v
            L >>= 1
            if not L:
                return v
            sq = sq * sq


def richardson_closed_form(P: Any, H: Any, d: Any, L: int, *, dps: int | None = None) -> mpmath.matrix:
    """sum_{j<L} (I - P H)**j P d as a column mpmath.matrix."""
    if L < 0:
        raise ValueError(f"richardson_closed_form: L must be >= 0, got {L}")
    with workdps(working_dps(dps)):
        B = _iteration_matrix(P, H)
        dv = _as_mp(d)
        _check_vec(dv, B.cols, "richardson_closed_form: d")
        c = _as_mp(P) * dv
        r = mpmath.matrix(B.rows, 1)
        if L <= _ITERATE_MAX_STEPS:
            for _ in range(L):
                r = B * r + c
            return r
        t, sq = c, B
        while True:
            if L & 1:
                r = t + sq * r
            L >>= 1
            if not L:
                return r
            t = t + sq * t
            sq = sq * sq
