"""Exact conversions between numpy floats and the two reference engines.

Every float64 (and every float32/float16, via an exact widening) is a dyadic
rational, so it can be carried into arb or mpmath without any rounding. All
reference results start from these exact copies, so any discrepancy found later
is attributable to the code under test, not to the conversion.

Going back to floats is done with *directed* rounding (`arb_upper`, `arb_lower`):
the bound is computed exactly from the ball's endpoint (a dyadic rational), so it
is rigorous regardless of how python-flint's own float conversion rounds.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import mpmath
import numpy as np
from flint import arb, arb_mat, ctx
from mpmath.libmp import from_float, from_int

PREC_BITS: int = 212
"""Default arb working precision (about 64 decimal digits)."""

MP_DPS: int = 50
"""Default mpmath working precision in decimal digits (>= 40 required)."""

_FLOAT_MAX = np.finfo(np.float64).max
_TINY = 5e-324


# --------------------------------------------------------------------------- #
# precision contexts
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def precision(bits: int = PREC_BITS) -> Iterator[int]:
    """Set `flint.ctx.prec` (a process-wide global) for a block and restore it after."""
    if int(bits) < 2:
        raise ValueError(f"precision must be >= 2 bits, got {bits}")
    old = ctx.prec
    ctx.prec = int(bits)
    try:
        yield int(bits)
    finally:
        ctx.prec = old


@contextlib.contextmanager
def workdps(dps: int = MP_DPS) -> Iterator[int]:
    """Set mpmath's working precision (decimal digits) for a block and restore it after."""
    with mpmath.workdps(int(dps)):
        yield int(dps)


def working_prec(prec: int | None) -> int:
    """Precision an arb routine should use: `prec`, else max(current ctx.prec, PREC_BITS).

    Taking the max lets `with precision(400): ...` raise the precision of library
    calls while flint's default of 53 bits never silently weakens a reference.
    """
    return int(prec) if prec is not None else max(ctx.prec, PREC_BITS)


def working_dps(dps: int | None) -> int:
    """mpmath analogue of `working_prec`."""
    return int(dps) if dps is not None else max(mpmath.mp.dps, MP_DPS)


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def _as_exact_float64(a: Any, what: str = "input") -> np.ndarray:
    """Return `a` as a float64 ndarray, refusing anything the widening would round."""
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize > 8:
            raise TypeError(f"{what}: dtype {arr.dtype} is wider than float64; "
                            "it cannot be converted exactly")
        out = arr.astype(np.float64)
    elif kind in "iub":
        out = arr.astype(np.float64)
        if kind != "b" and not np.array_equal(out.astype(arr.dtype), arr):
            raise ValueError(f"{what}: integer values beyond 2**53 are not exact in float64")
    else:
        raise TypeError(f"{what}: unsupported dtype {arr.dtype} (real floats or ints only)")
    if not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))[0]
        val = out[tuple(bad)]
        raise ValueError(f"{what}: non-finite value {val!r} at index {tuple(int(i) for i in bad)}")
    return out


def _scalar_to_float(x: Any, what: str = "value") -> float:
    if isinstance(x, (bool, np.bool_)):
        return float(x)
    if isinstance(x, (Integral, np.integer)):
        f = float(x)
        if int(f) != int(x):
            raise ValueError(f"{what}: integer {x} is not exactly representable in float64")
        return f
    if isinstance(x, (np.floating, Real)):
        if isinstance(x, np.floating) and np.dtype(type(x)).itemsize > 8:
            raise TypeError(f"{what}: {type(x).__name__} is wider than float64")
        f = float(x)  # exact for float16/32/64
        if not math.isfinite(f):
            raise ValueError(f"{what}: non-finite value {f!r}")
        return f
    raise TypeError(f"{what}: unsupported type {type(x).__name__}")


# --------------------------------------------------------------------------- #
# mpmath
# --------------------------------------------------------------------------- #
def to_mpf(x: Any) -> mpmath.mpf:
    """Exact mpf copy of a finite float/int (independent of mpmath's current precision).

    `mpmath.mpf(0.1)` rounds to the working precision when dps < 16; this does not.
    """
    if isinstance(x, mpmath.mpf):
        if not mpmath.isfinite(x):
            raise ValueError(f"non-finite value {x!r}")
        return x
    if isinstance(x, (Integral, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return mpmath.mp.make_mpf(from_int(int(x)))
    return mpmath.mp.make_mpf(from_float(_scalar_to_float(x)))


def to_mpf_matrix(a: Any) -> mpmath.matrix:
    """Exact mpmath matrix copy of a 1-D (-> column) or 2-D real array."""
    arr = _as_exact_float64(a, "to_mpf_matrix")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"to_mpf_matrix: expected 1-D or 2-D array, got shape {arr.shape}")
    m, n = arr.shape
    out = mpmath.matrix(m, n)
    mk = mpmath.mp.make_mpf
    for i, row in enumerate(arr.tolist()):
        for j, v in enumerate(row):
            if v != 0.0:
                out[i, j] = mk(from_float(v))
    return out


# --------------------------------------------------------------------------- #
# arb
# --------------------------------------------------------------------------- #
def to_arb(x: Any) -> arb:
    """Exact arb copy of a finite float/int (arb(float) is exact at any precision)."""
    if isinstance(x, arb):
        return x
    if isinstance(x, (Integral, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return arb(int(x))
    return arb(_scalar_to_float(x))


def to_arb_mat(a: Any) -> arb_mat:
    """Exact arb_mat copy of a real array; 1-D arrays become column vectors.

    An arb_mat passes through unchanged, so callers can accept either form.
    """
    if isinstance(a, arb_mat):
        return a
    arr = _as_exact_float64(a, "to_arb_mat")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"to_arb_mat: expected 1-D or 2-D array, got shape {arr.shape}")
    m, n = arr.shape
    if m == 0 or n == 0:
        return arb_mat(m, n)
    return arb_mat(arr.tolist())


def _round_dyadic(man: int, exp: int, up: bool) -> float:
    """man * 2**exp rounded to float64 towards +inf (up) or -inf (not up), exactly."""
    if man == 0:
        return 0.0
    neg = man < 0
    a = -man if neg else man
    away = up != neg  # round the magnitude away from zero?
    top = exp + a.bit_length()  # 2**(top-1) <= |value| < 2**top
    if top > 1024:
        mag = math.inf if away else _FLOAT_MAX
    elif top < -1074:
        mag = _TINY if away else 0.0
    else:
        lsb = max(top - 53, -1074)
        shift = lsb - exp
        if shift <= 0:
            q = a << -shift
        else:
            q = a >> shift
            if away and (q << shift) != a:
                q += 1
        try:
            mag = math.ldexp(q, lsb)
        except OverflowError:
            mag = math.inf if away else _FLOAT_MAX
    return -mag if neg else mag


def _exact_arb_to_float(u: arb, up: bool) -> float:
    if u.is_nan():
        raise ValueError("cannot bound a NaN ball")
    if not u.is_finite():
        return math.inf if u > 0 else -math.inf
    man, exp = u.man_exp()
    return _round_dyadic(int(man), int(exp), up)


def arb_upper(x: arb) -> float:
    """A float >= every point of the ball x (directed rounding, +inf if unbounded)."""
    with precision(64):  # ceil_53(ceil_64(v)) == ceil_53(v): no loss vs. higher prec
        return _exact_arb_to_float(x.upper(), up=True)


def arb_lower(x: arb) -> float:
    """A float <= every point of the ball x (directed rounding, -inf if unbounded)."""
    with precision(64):
        return _exact_arb_to_float(x.lower(), up=False)


def arb_mat_to_numpy_mid(m: arb_mat) -> np.ndarray:
    """Midpoints of an arb_mat as a float64 array (rounded to nearest; not a bound)."""
    r, c = m.nrows(), m.ncols()
    if r == 0 or c == 0:
        return np.zeros((r, c))
    return np.array([[float(x) for x in row] for row in m.mid().tolist()], dtype=np.float64)


def arb_mat_radius_max(m: arb_mat) -> float:
    """Largest entry radius of an arb_mat, rounded up (0.0 for an exact matrix)."""
    rads = [x.rad() for x in m.entries()]
    if not rads:
        return 0.0
    with precision(64):
        biggest = functools.reduce(lambda p, q: p if p >= q else q, rads)
    return arb_upper(biggest)
