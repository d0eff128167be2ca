"""Rigorous ball-arithmetic references (python-flint arb), for matrices up to K = 64.

Each result is an arb_mat whose balls are guaranteed to contain the exact value for
the exact (dyadic) float inputs, so a float result can be checked against it with
`max_abs_diff` / `norm2_diff_upper` without any tolerance spent on the reference.

Arb precision: each function takes `prec`; None means max(flint.ctx.prec, PREC_BITS),
so the flint default of 53 bits never silently weakens a reference and
`with precision(400): ...` still raises it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flint import arb, arb_mat

from .convert import arb_upper, precision, to_arb_mat, working_prec

__all__ = [
    "identity",
    "matpow",
    "solve",
    "richardson_error",
    "richardson_closed_form",
    "vec_norm2",
    "max_abs_diff",
    "norm2_diff_upper",
]

# Below this many steps the plain recurrence is cheapest; above it, square-and-multiply
# (log2 L matrix squarings plus matvecs) wins at every K.
_ITERATE_MAX_STEPS = 64


def identity(n: int) -> arb_mat:
    """n x n identity as an exact arb_mat."""
    m = arb_mat(n, n)
    for i in range(n):
        m[i, i] = 1
    return m


def _square(m: arb_mat, what: str) -> int:
    if m.nrows() != m.ncols():
        raise ValueError(f"{what}: expected a square matrix, got {m.nrows()}x{m.ncols()}")
    return m.nrows()


def matpow(m: arb_mat | np.ndarray, n: int, *, prec: int | None = None) -> arb_mat:
    """m**n (n >= 0; identity for n = 0) by arb's binary powering."""
    m = to_arb_mat(m)
    k = _square(m, "matpow")
    if n < 0:
        raise ValueError(f"matpow: exponent must be >= 0, got {n}")
    if n == 0:
        return identity(k)
    with precision(working_prec(prec)):
        return m ** int(n)


def solve(a: arb_mat | np.ndarray, b: arb_mat | np.ndarray, *, prec: int | None = None) -> arb_mat:
    """Enclosure of a^-1 b; ValueError when arb cannot certify that a is nonsingular."""
    a = to_arb_mat(a)
    b = to_arb_mat(b)
    k = _square(a, "solve")
    if b.nrows() != k:
        raise ValueError(f"solve: shapes {k}x{k} and {b.nrows()}x{b.ncols()} do not match")
    with precision(working_prec(prec)):
        try:
            x = a.solve(b)
        except ZeroDivisionError as exc:
            raise ValueError(
                "solve: arb could not certify the matrix nonsingular at "
                f"{working_prec(prec)} bits (singular or too ill-conditioned)"
            ) from exc
    if not all(e.is_finite() for e in x.entries()):
        raise ValueError("solve: enclosure is not finite (matrix not certified nonsingular)")
    return x


def _iteration_matrix(P: Any, H: Any) -> arb_mat:
    """I - P H formed in arb from exact P and H (call inside a precision block)."""
    Pm, Hm = to_arb_mat(P), to_arb_mat(H)
    if Pm.ncols() != Hm.nrows() or Pm.nrows() != Hm.ncols():
        raise ValueError(
            f"P is {Pm.nrows()}x{Pm.ncols()} and H is {Hm.nrows()}x{Hm.ncols()}: "
            "P H must be square"
        )
    return identity(Pm.nrows()) - Pm * Hm


def _check_vec(v: arb_mat, k: int, what: str) -> None:
    if v.nrows() != k or v.ncols() != 1:
        raise ValueError(f"{what}: expected a vector of length {k}, got {v.nrows()}x{v.ncols()}")


def _apply_power(B: arb_mat, v: arb_mat, L: int) -> arb_mat:
    """B**L v: plain recurrence for small L, else square-and-multiply on the vector."""
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


def _geometric_sum(B: arb_mat, c: arb_mat, L: int) -> arb_mat:
    """sum_{j<L} B**j c: Horner for small L, else binary doubling (LSB first)."""
    k = B.nrows()
    r = arb_mat(k, 1)
    if L <= _ITERATE_MAX_STEPS:
        for _ in range(L):
            r = B * r + c
        return r
    # t = sum_{j<2^i} B^j c and sq = B^(2^i); prepending a block: r <- t + sq r.
    t, sq = c, B
    while True:
        if L & 1:
            r = t + sq * r
        L >>= 1
        if not L:
            return r
        t = t + sq * t
        sq = sq * sq


def richardson_error(P: Any, H: Any, e0: Any, L: int, *, prec: int | None = None) -> arb_mat:
    """Enclosure of (I - P H)**L e0, the Richardson error after L steps (exact inputs)."""
    if L < 0:
        raise ValueError(f"richardson_error: L must be >= 0, got {L}")
    with precision(working_prec(prec)):
        B = _iteration_matrix(P, H)
        v = to_arb_mat(e0)
        _check_vec(v, B.nrows(), "richardson_error: e0")
        return _apply_power(B, v, int(L))


def richardson_closed_form(P: Any, H: Any, d: Any, L: int, *, prec: int | None = None) -> arb_mat:
    """Enclosure of sum_{j<L} (I - P H)**j P d: the L-step iterate started from x0 = 0."""
    if L < 0:
        raise ValueError(f"richardson_closed_form: L must be >= 0, got {L}")
    with precision(working_prec(prec)):
        B = _iteration_matrix(P, H)
        dv = to_arb_mat(d)
        _check_vec(dv, B.ncols(), "richardson_closed_form: d")
        c = to_arb_mat(P) * dv
        return _geometric_sum(B, c, int(L))


def vec_norm2(v: arb_mat, *, prec: int | None = None) -> arb:
    """Euclidean norm of a vector (Frobenius norm for a matrix) as a ball."""
    v = to_arb_mat(v)
    with precision(working_prec(prec)):
        s = arb(0)
        for x in v.entries():
            s += x * x
        # x*x of a ball straddling 0 dips below 0; the true sum of squares cannot.
        return s.nonnegative_part().sqrt()


def _diff(a: arb_mat, b_float: Any, what: str) -> arb_mat:
    a = to_arb_mat(a)
    b = to_arb_mat(np.asarray(b_float))
    if (a.nrows(), a.ncols()) != (b.nrows(), b.ncols()):
        raise ValueError(
            f"{what}: shapes {a.nrows()}x{a.ncols()} and {b.nrows()}x{b.ncols()} differ"
        )
    return a - b


def max_abs_diff(a: arb_mat, b_float: np.ndarray, *, prec: int | None = None) -> float:
    """Rigorous upper bound on max_i |a_i - b_i| (b taken exactly; 1-D b is a column)."""
    with precision(working_prec(prec)):
        d = _diff(a, b_float, "max_abs_diff")
        ents = d.entries()
        if not ents:
            return 0.0
        return max(arb_upper(x.abs_upper()) for x in ents)


def norm2_diff_upper(a: arb_mat, b_float: np.ndarray, *, prec: int | None = None) -> float:
    """Rigorous upper bound on ||a - b||_2 (Euclidean for vectors, Frobenius for matrices,
    which also bounds the spectral norm)."""
    with precision(working_prec(prec)):
        return arb_upper(vec_norm2(_diff(a, b_float, "norm2_diff_upper")))
