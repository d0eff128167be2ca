"""Tests of the high-precision reference layer (properties.reference).

The references are what every other check is measured against, so they are tested
for exactness (conversions), agreement of two independent engines (arb vs mpmath),
and rigor of the norm bounds (upper >= lower, both tight, and a plain float norm is
caught by the rigor check).
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from flint import arb, arb_mat, ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import properties.reference.normbound as nb
from properties.reference import (
    MP_DPS,
    PREC_BITS,
    arb_lower,
    arb_mat_radius_max,
    arb_mat_to_numpy_mid,
    arb_upper,
    ball,
    certify_upper_bound,
    identity_minus_product,
    max_abs_diff,
    mp,
    norm2_diff_upper,
    norm2_lower,
    norm2_upper,
    precision,
    rho_upper,
    to_arb,
    to_arb_mat,
    to_mpf,
    to_mpf_matrix,
    vec_norm2,
    workdps,
)
from properties.reference.normbound import _norm2_upper_by_squaring

HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

@pytest.fixture(autouse=True)
def _arb_precision():
    """flint's ctx.prec is global and defaults to 53: arithmetic done in a test on
    returned balls would otherwise round at 53 bits."""
    with precision(PREC_BITS):
        yield


finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def frac_of_arb(x: arb) -> Fraction:
    """Exact value of an exact arb."""
    man, exp = x.man_exp()
    man, exp = int(man), int(exp)
    return Fraction(man * 2**exp) if exp >= 0 else Fraction(man, 2**-exp)


def frac_of_mpf(x: mpmath.mpf) -> Fraction:
    sign, man, exp, _ = x._mpf_
    v = Fraction(int(man) * 2**exp) if exp >= 0 else Fraction(int(man), 2**-exp)
    return -v if sign else v


def mpf_to_arb(x: mpmath.mpf) -> arb:
    """Exact arb copy of an mpf (call inside a high-precision block)."""
    sign, man, exp, _ = x._mpf_
    v = arb(int(man)) * arb(2) ** int(exp)
    return -v if sign else v


# --------------------------------------------------------------------------- #
# conversion
# --------------------------------------------------------------------------- #
def test_defaults():
    assert PREC_BITS == 212 and MP_DPS >= 40


@HYP
@given(x=finite64)
def test_scalar_round_trip_float64(x):
    a = to_arb(x)
    assert a.is_exact()
    assert frac_of_arb(a.mid()) == Fraction(x)
    assert arb_upper(a) == x == arb_lower(a)
    with workdps(5):  # exactness must not depend on mpmath's working precision
        m = to_mpf(x)
    assert frac_of_mpf(m) == Fraction(x)


@HYP
@given(a=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5), elements=finite32))
def test_array_round_trip_float32(a):
    exact = a.astype(np.float64)
    m = to_arb_mat(a)
    mid = arb_mat_to_numpy_mid(m)
    assert np.array_equal(mid, exact.reshape(mid.shape))
    assert arb_mat_radius_max(m) == 0.0
    with workdps(3):
        mm = to_mpf_matrix(a)
    flat = exact.reshape(mid.shape)
    for i in range(mm.rows):
        for j in range(mm.cols):
            assert frac_of_mpf(mm[i, j]) == Fraction(float(flat[i, j]))


@HYP
@given(a=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), elements=finite64))
def test_array_round_trip_float64(a):
    m = to_arb_mat(a)
    assert (m.nrows(), m.ncols()) == a.shape
    assert all(x.is_exact() for x in m.entries())
    assert np.array_equal(arb_mat_to_numpy_mid(m), a)
    assert max_abs_diff(m, a) == 0.0


def test_float32_low_precision_mpf_is_exact():
    x = np.float32(0.1)
    with workdps(3):
        m = to_mpf(x)
        rounded = mpmath.mpf(float(x))  # what plain mpmath does at 3 digits
    assert frac_of_mpf(m) == Fraction(float(x))
    assert frac_of_mpf(rounded) != Fraction(float(x))


def test_vector_becomes_column():
    v = to_arb_mat(np.array([1.0, 2.0, 3.0]))
    assert (v.nrows(), v.ncols()) == (3, 1)
    assert to_mpf_matrix(np.array([1.0, 2.0])).cols == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    a = np.array([[1.0, bad], [0.0, 1.0]])
    for f in (to_arb_mat, to_mpf_matrix):
        with pytest.raises(ValueError, match="non-finite"):
            f(a)
    for f in (to_arb, to_mpf):
        with pytest.raises(ValueError, match="non-finite"):
            f(bad)
    with pytest.raises(ValueError, match="non-finite"):
        to_arb(np.float32(bad))


def test_unrepresentable_inputs_rejected():
    with pytest.raises(TypeError):
        to_arb_mat(np.array([1 + 2j]))
    with pytest.raises(ValueError):
        to_arb_mat(np.array([2**62 + 1], dtype=np.int64))


@HYP
@given(p=st.integers(-(10**30), 10**30), q=st.integers(1, 10**30), bits=st.sampled_from([53, 64, 212]))
def test_directed_rounding_is_rigorous_and_tight(p, q, bits):
    with precision(bits):
        x = arb(p) / arb(q)
    lo, hi = arb_lower(x), arb_upper(x)
    exact = Fraction(p, q)
    assert Fraction(lo) <= exact <= Fraction(hi)
    # the ball itself is tiny, so the floats are at most a few ulps apart
    assert hi <= math.nextafter(math.nextafter(math.nextafter(lo, math.inf), math.inf), math.inf)


def test_directed_rounding_extremes():
    with precision(128):
        big, tiny = arb(2) ** 2000, arb(2) ** -2000
        assert arb_upper(big) == math.inf and arb_lower(big) == np.finfo(float).max
        assert arb_upper(-big) == -np.finfo(float).max and arb_lower(-big) == -math.inf
        assert arb_upper(tiny) == 5e-324 and arb_lower(tiny) == 0.0
        assert arb_upper(-tiny) == -0.0 and arb_lower(-tiny) == -5e-324
        ballx = arb(1.0, 2.0**-40)
        assert arb_upper(ballx) >= 1 + 2.0**-40 and arb_lower(ballx) <= 1 - 2.0**-40
        assert arb_upper(arb("inf")) == math.inf
    with pytest.raises(ValueError):
        arb_upper(arb("nan"))


def test_precision_context_restores_even_on_error():
    old = ctx.prec
    with pytest.raises(RuntimeError):
        with precision(333):
            assert ctx.prec == 333
            raise RuntimeError
    assert ctx.prec == old
    with workdps(77):
        assert mpmath.mp.dps == 77
    assert mpmath.mp.dps != 77


# --------------------------------------------------------------------------- #
# ball vs mpmath
# --------------------------------------------------------------------------- #
def _problem(K, seed):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((K, K)) / np.sqrt(K)
    H = np.linalg.inv(P) + 0.1 * rng.standard_normal((K, K)) / np.sqrt(K)
    return P, H, rng.standard_normal(K), rng.standard_normal(K)


def _assert_agree(b: arb_mat, m: mpmath.matrix, rtol=1e-40):
    assert (b.nrows(), b.ncols()) == (m.rows, m.cols)
    with precision(400):
        for i in range(m.rows):
            for j in range(m.cols):
                d = b[i, j] - mpf_to_arb(m[i, j])
                scale = 1.0 + abs(float(m[i, j]))
                assert arb_upper(d.abs_upper()) <= rtol * scale, (i, j, d)


@pytest.mark.parametrize("K", [1, 2, 3, 6])
@pytest.mark.parametrize("L", [0, 1, 7, 100])
def test_richardson_ball_vs_mpmath(K, L):
    P, H, e0, d = _problem(K, seed=10 * K + L)
    be = ball.richardson_error(P, H, e0, L)
    _assert_agree(be, mp.richardson_error(P, H, e0, L))
    bc = ball.richardson_closed_form(P, H, d, L)
    _assert_agree(bc, mp.richardson_closed_form(P, H, d, L))
    # the enclosures are tight: nowhere near the 212-bit budget being exhausted
    assert arb_mat_radius_max(be) < 1e-50 * (1 + np.abs(arb_mat_to_numpy_mid(be)).max())


@pytest.mark.parametrize("K,L", [(4, 9), (6, 130), (16, 200)])
def test_closed_form_is_iterate_identity(K, L):
    """sum_{j<L} B^j P d == x* - B^L x* with x* = H^-1 d (B = I - P H): links three routines."""
    P, H, _, d = _problem(K, seed=K)
    xstar = ball.solve(to_arb_mat(H), to_arb_mat(d))
    rhs = xstar - ball.richardson_error(P, H, xstar, L)
    lhs = ball.richardson_closed_form(P, H, d, L)
    for x, y in zip(lhs.entries(), rhs.entries()):
        assert x.overlaps(y)
    assert max(arb_upper(abs(x - y)) for x, y in zip(lhs.entries(), rhs.entries())) < 1e-45


@pytest.mark.parametrize("K", [1, 3, 6])
def test_matpow_and_solve_ball_vs_mpmath(K):
    rng = np.random.default_rng(K)
    A = np.eye(K) + rng.standard_normal((K, K)) / (2 * np.sqrt(K))
    B = rng.standard_normal((K, 2))
    for n in (0, 1, 10, 33):
        _assert_agree(ball.matpow(to_arb_mat(A), n), mp.matpow(A, n))
    _assert_agree(ball.solve(to_arb_mat(A), to_arb_mat(B)), mp.solve(A, B))
    assert ball.matpow(to_arb_mat(A), 0).entries() == ball.identity(K).entries()


def test_solve_singular_raises():
    S = np.array([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match="certify"):
        ball.solve(to_arb_mat(S), to_arb_mat(np.ones(2)))
    with pytest.raises(ValueError, match="singular"):
        mp.solve(S, np.ones(2))


def test_default_precision_is_not_flint_default():
    """A reference computed while ctx.prec is flint's 53 must still use >= PREC_BITS."""
    P, H, e0, _ = _problem(6, seed=1)
    with precision(53):
        r = ball.richardson_error(P, H, e0, 40)
    assert arb_mat_radius_max(r) < 1e-50


def test_vec_norm2_and_diffs():
    with precision(PREC_BITS):
        n = vec_norm2(to_arb_mat(np.array([3.0, 4.0])))
        assert n.contains(5) and arb_upper(n.rad()) < 1e-60
        around_zero = arb_mat([[arb(0, 1e-3)], [arb(0, 1e-3)]])
        z = vec_norm2(around_zero)
        assert z.is_finite() and arb_upper(z) >= math.sqrt(2) * 1e-3
    a = to_arb_mat(np.array([1.0, 2.0]))
    b = np.array([1.0, 2.0 + 2.0**-40])
    assert 2.0**-40 <= max_abs_diff(a, b) <= 2.0**-40 * (1 + 2.0**-50)
    assert 2.0**-40 <= norm2_diff_upper(a, b) <= 2.0**-40 * (1 + 2.0**-50)
    # a ball: the bound covers its farthest point
    wide = arb_mat([[arb(1.0, 2.0**-30)], [arb(2.0)]])
    assert max_abs_diff(wide, b) >= 2.0**-30
    assert norm2_diff_upper(wide, b) >= math.hypot(2.0**-30, 2.0**-40)
    with pytest.raises(ValueError):
        max_abs_diff(a, np.zeros(3))


# --------------------------------------------------------------------------- #
# norm bounds
# --------------------------------------------------------------------------- #
def _matrix(kind: str, K: int, seed: int):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((K, K))
    if kind == "random":
        return G
    if kind == "ill":
        U, _ = np.linalg.qr(G)
        V, _ = np.linalg.qr(rng.standard_normal((K, K)))
        return (U * np.logspace(0, -12, K)) @ V.T
    if kind == "big":
        return G * 1e150
    if kind == "small":
        return G * 1e-150
    if kind == "IPH":
        P = G / np.sqrt(K)
        H = np.linalg.inv(P) + 0.05 * rng.standard_normal((K, K)) / np.sqrt(K)
        return P, H
    raise AssertionError(kind)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8, 16, 32, 64])
@pytest.mark.parametrize("kind", ["random", "ill", "big", "small", "IPH"])
def test_norm2_bounds_tight_and_ordered(kind, K):
    M = _matrix(kind, K, seed=K)
    if kind == "IPH":
        P, H = M
        B = identity_minus_product(P, H)
        ref = float(np.linalg.norm(np.eye(K) - P @ H, 2))
        up, lo = rho_upper(P, H), norm2_lower(B)
        assert up == norm2_upper(B)
    else:
        ref = float(np.linalg.norm(M, 2))
        up, lo = norm2_upper(M), norm2_lower(M)
    assert 0.0 < lo <= up
    assert abs(up - ref) <= 1e-12 * ref
    assert abs(lo - ref) <= 1e-12 * ref
    assert up - lo <= 1e-12 * up


def test_norm2_agrees_with_mpmath_svd():
    rng = np.random.default_rng(7)
    M = rng.standard_normal((5, 4))
    with workdps(40):
        s = mpmath.svd_r(to_mpf_matrix(M), compute_uv=False)
        smax = max(s)
    assert norm2_lower(M) <= smax <= norm2_upper(M)


@HYP
@given(
    M=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    )
)
def test_norm2_bounds_property(M):
    up, lo = norm2_upper(M), norm2_lower(M)
    assert 0.0 <= lo <= up
    if not M.any():
        assert up == 0.0
    else:
        assert up <= lo * (1 + 1e-12) + 1e-300


def test_zero_and_one_by_one():
    for Z in (np.zeros((3, 3)), np.zeros((1, 1)), np.zeros((2, 5)), to_arb_mat(np.zeros((4, 4)))):
        assert norm2_upper(Z) == 0.0 and norm2_lower(Z) == 0.0
        assert _norm2_upper_by_squaring(Z) == 0.0
    for x in (-3.0, 1e-300, 7e200, 0.1):
        M = np.array([[x]])
        assert norm2_lower(M) == abs(x)
        assert abs(x) <= norm2_upper(M) <= abs(x) * (1 + 1e-12)


def test_rectangular():
    M = np.ones((3, 5))
    exact = math.sqrt(15)
    assert norm2_lower(M) <= exact <= norm2_upper(M) <= exact * (1 + 1e-12)


def _grid_matrix(K, seed):
    """Entries on a 2^-20 grid, so M +- 2^-30 is exact in float64."""
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal((K, K)) * 2**20) / 2**20


@pytest.mark.parametrize("K,rad", [(1, 2.0**-30), (6, 2.0**-30), (16, 2.0**-12), (32, 2.0**-30)])
def test_ball_input_covers_every_member(K, rad):
    M = _grid_matrix(K, seed=K)
    with precision(PREC_BITS):
        A = arb_mat([[arb(x, rad) for x in row] for row in M.tolist()])
    up, lo = norm2_upper(A), norm2_lower(A)
    U, s, Vt = np.linalg.svd(M)
    E = rad * np.sign(np.outer(U[:, 0], Vt[0]))  # the worst perturbation, to first order
    E[E == 0] = rad
    assert np.array_equal((M + E) - M, E) and np.array_equal(M - (M - E), E)
    worst_up, worst_lo = M + E, M - E
    assert up >= norm2_upper(worst_up) >= norm2_lower(worst_up)
    assert lo <= norm2_lower(worst_lo)
    rng = np.random.default_rng(0)
    for _ in range(3):
        R = M + rad * rng.choice([-1.0, 1.0], size=M.shape)
        assert lo <= norm2_lower(R) and norm2_upper(R) <= up
    # and not absurdly loose: within ~K * rad of the midpoint's norm
    assert up <= s[0] + 2 * K * rad + 1e-12 * s[0]


def test_ball_around_zero():
    A = arb_mat([[arb(0, 1e-3)] * 3] * 3)
    up = norm2_upper(A)
    assert 3e-3 <= up <= 3e-3 * 1.01  # ones(3,3) * 1e-3 is a member, with norm 3e-3
    assert norm2_lower(A) == 0.0


def test_ball_with_huge_entries():
    with precision(PREC_BITS):
        A = arb_mat([[arb(2) ** 2000, 1], [0, 1]])
        T = arb_mat([[arb(2) ** -1000 * 3, 0], [0, arb(2) ** -1001]])
    assert norm2_upper(A) == math.inf and norm2_lower(A) == np.finfo(float).max
    assert norm2_lower(T) <= 3 * 2.0**-1000 <= norm2_upper(T) <= 3 * 2.0**-1000 * (1 + 1e-12)


@pytest.mark.parametrize("kind,K", [("random", 8), ("random", 64), ("ill", 32), ("big", 16), ("IPH", 32)])
def test_squaring_fallback_direct(kind, K):
    M = _matrix(kind, K, seed=100 + K)
    if kind == "IPH":
        M = identity_minus_product(*M)
    up, lo = _norm2_upper_by_squaring(M), norm2_lower(M)
    assert lo <= up <= lo * (1 + 1e-12)


def test_squaring_fallback_degenerate_top_singular_value():
    """Orthogonal Q: sigma_1 has multiplicity K, the slowest case for repeated squaring."""
    Q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((16, 16)))
    up = _norm2_upper_by_squaring(Q)
    assert norm2_lower(Q) <= up <= 1 + 1e-12
    assert _norm2_upper_by_squaring(Q, max_steps=1) >= up  # fewer steps: looser, still an upper bound


def test_norm2_upper_falls_back_when_gershgorin_never_certifies(monkeypatch):
    M = _matrix("random", 12, seed=3)
    monkeypatch.setattr(nb, "MARGINS", ())
    up = nb.norm2_upper(M)
    assert up == _norm2_upper_by_squaring(M)
    assert norm2_lower(M) <= up <= norm2_lower(M) * (1 + 1e-12)


def test_first_margin_certifies_typical_matrices(monkeypatch):
    """The cheap path is the one taken (NUMERICS.md); the fallback would be ~10x slower."""
    monkeypatch.setattr(nb, "_norm2_upper_by_squaring", lambda *a, **k: pytest.fail("fallback used"))
    monkeypatch.setattr(nb, "MARGINS", nb.MARGINS[:1])
    for kind in ("random", "ill", "big", "small"):
        nb.norm2_upper(_matrix(kind, 32, seed=1))
    nb.norm2_upper(identity_minus_product(*_matrix("IPH", 32, seed=1)))


# --------------------------------------------------------------------------- #
# mutant: a plain float norm in place of norm2_upper is caught
# --------------------------------------------------------------------------- #
def _float_norm_below_rigorous_lower():
    for seed in range(200):
        M = np.random.default_rng(seed).standard_normal((8, 8))
        if float(np.linalg.norm(M, 2)) < norm2_lower(M):
            return M
    pytest.fail("no seeded matrix where the float norm underestimates")


def test_certify_upper_bound_catches_float_norm(monkeypatch):
    M = _float_norm_below_rigorous_lower()
    assert certify_upper_bound(M, nb.norm2_upper(M))  # the real bound passes
    assert not certify_upper_bound(M, float("nan"))

    monkeypatch.setattr(nb, "norm2_upper", lambda A, **_: float(np.linalg.norm(np.asarray(A), 2)))
    assert not certify_upper_bound(M, nb.norm2_upper(M))  # the mutant is caught


def test_real_upper_bound_always_certifies():
    for seed in range(40):
        M = np.random.default_rng(seed).standard_normal((8, 8))
        assert certify_upper_bound(M, norm2_upper(M))
