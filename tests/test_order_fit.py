"""properties.order.order_fit when the last slope difference is already inside rounding: the fit
resolves from the two differences above it, its interval holds the true order under every rounding
the floors allow, and it still excludes a wrong order."""

from __future__ import annotations

import itertools

import numpy as np

from properties.order import order_fit

BETAS = 0.5 * 2.0 ** -np.arange(8)
T = 1.3e-3  # relative floor: 2h ~ 7.5e-3 lies between the last two slope differences (0.011, 0.0055)


def _dev(p: float) -> np.ndarray:
    return BETAS**p * (1 + BETAS)  # D = beta^p (1 + beta): slope differences halve per halving


def test_last_difference_inside_rounding_resolves() -> None:
    D = _dev(1.0)
    f = order_fit(BETAS, D, T * D)
    d = np.diff(f.local_slopes)[-3:]
    h = max(f.rounding)
    assert abs(d[2]) <= 2 * h < min(abs(d[0]), abs(d[1])), "the data no longer exercises the rounding-tail case"
    assert f.resolved and f.contraction == abs(d[1] / d[0]) and f.contains(1.0), f


def test_rounding_tail_interval_holds_under_every_admitted_rounding() -> None:
    D = _dev(1.0)
    resolved = 0
    for signs in itertools.product((-1.0, 1.0), repeat=len(BETAS)):
        # observed values anywhere within the floors (0.999: strictly inside, as the fit assumes)
        f = order_fit(BETAS, D * (1 + 0.999 * T * np.array(signs)), T * D)
        if f.resolved:
            resolved += 1
            assert f.contains(1.0), (signs, f.interval, f.local_slopes)
    assert resolved > 0


def test_rounding_tail_interval_excludes_a_wrong_order() -> None:
    D = _dev(1.5)
    f = order_fit(BETAS, D, T * D)
    assert f.resolved and not f.contains(1.0) and f.contains(1.5), f
