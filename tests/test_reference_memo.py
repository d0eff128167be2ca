"""The disk memo of the high-precision references (properties.reference.memo)."""

from __future__ import annotations

import numpy as np
import pytest

from certify import sut
from certify import sut_families as sf
from certify.backend import Backend
from properties import richardson as ref
from properties.reference import memo


@pytest.fixture
def memo_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    monkeypatch.setenv(memo.ENV, "1")
    return tmp_path


def problem(seed: int = 0, K: int = 4, L: int = 3):
    rng = np.random.default_rng(seed)
    H = np.eye(K) + 0.1 * rng.standard_normal((K, K))
    H = H @ H.T
    P = 0.5 * np.eye(K)
    d = rng.standard_normal(K)
    xs = [np.zeros(K)]
    for _ in range(L):
        xs.append(xs[-1] + P @ (d - H @ xs[-1]))
    return P, H, d, xs


def test_hit_equals_fresh_computation(memo_on, monkeypatch) -> None:
    P, H, d, xs = problem()
    fresh = ref.norm_bound_check.uncached(P, H, d, xs, 2.0**-53)
    assert ref.norm_bound_check(P, H, d, xs, 2.0**-53) == fresh
    assert list((memo_on / "references").glob("*.sqlite")), "nothing was stored"

    def boom(*a, **k):
        raise AssertionError("a memo hit recomputed the reference")

    monkeypatch.setattr(ref.ball, "richardson_error", boom)
    assert ref.norm_bound_check(P, H, d, xs, 2.0**-53) == fresh  # a hit, field for field


def test_one_ulp_is_another_key() -> None:
    P, H, d, xs = problem()
    k0 = memo.key("ns", (P, H, d, xs, 2.0**-53), {})
    H2 = H.copy()
    H2[1, 2] = np.nextafter(H2[1, 2], np.inf)
    xs2 = [x.copy() for x in xs]
    xs2[-1][0] = np.nextafter(xs2[-1][0], -np.inf)
    assert len({k0, memo.key("ns", (P, H2, d, xs, 2.0**-53), {}), memo.key("ns", (P, H, d, xs2, 2.0**-53), {}),
                memo.key("ns", (P, H, d, xs, 2.0**-24), {}), memo.key("other", (P, H, d, xs, 2.0**-53), {}),
                memo.key("ns", (P.astype(np.float32), H, d, xs, 2.0**-53), {})}) == 6
    with pytest.raises(TypeError, match="cannot key"):
        memo.key("ns", (object(),), {})


def test_off_recomputes(memo_on, monkeypatch) -> None:
    """With the memo off a planted certificate mutant is seen even after a cached run."""
    P, H, d, xs = problem()
    good = ref.norm_bound_check(P, H, d, xs, 2.0**-53)
    monkeypatch.setattr(ref, "rho_upper", lambda P, H: 1e-3)  # a wrong (too small) rho
    assert ref.norm_bound_check(P, H, d, xs, 2.0**-53) == good  # cached: the mutant is masked ...
    monkeypatch.setenv(memo.ENV, "0")
    bad = ref.norm_bound_check(P, H, d, xs, 2.0**-53)
    assert not (bad.exact_holds and bad.rho_certified)  # ... and caught with the memo off


def test_unreadable_file_is_named(memo_on) -> None:
    path = memo.STORE.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not sqlite" * 100)
    memo.STORE._conn = None
    P, H, d, xs = problem()
    with pytest.raises(memo.ReferenceCacheError, match=str(path.name)):
        ref.norm_bound_check(P, H, d, xs, 2.0**-53)
    memo.STORE._conn = None


@pytest.mark.slow
def test_cached_norm_bounds_recompute(monkeypatch) -> None:
    """Every memoized norm bound of the default tier's family tables (as `python -m certify` left
    them in the shared cache) equals its recomputation."""
    backend = Backend("cpu", "float64")
    for family in sf.FAMILIES:
        for size in sf.PROMPT_SIZES[family]:
            for cls in sut.CLASSES:
                dec, tasks = sf.trained(family, size, cls, backend), sf.heldout(family, size, backend)
                monkeypatch.setenv(memo.ENV, "1")
                cached = sut.certify_heldout(dec, tasks, backend.unit_roundoff)
                monkeypatch.setenv(memo.ENV, "0")
                fresh = sut.certify_heldout(dec, tasks, backend.unit_roundoff)
                assert cached == fresh, f"{family} {size} {cls}: a memoized norm bound differs from its recomputation"
