"""Family S: the empirical-Bernstein certificate (seed 000 sec 3, seed 001 sec 2).

SUT: models.eb (the certificate module the trainers report with).
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings, target
from hypothesis import strategies as st

from certify import registry, sut
from certify import sut_families as sf
from models import eb as eb_sut
from properties import eb as ref
from properties import tolerances
from properties.strategies import SEEDS, LossCase, loss_cases

# Loss laws with exact clipped means; c = 1 for the laws on [0, 1].
LAWS = (
    (ref.bernoulli(0.05), 1.0),
    (ref.bernoulli(0.5), 1.0),
    (ref.beta(0.5, 2.0), 1.0),
    (ref.beta(2.0, 2.0), 1.0),
    (ref.clipped_gaussian(0.3, 0.5), 1.0),
    (ref.scaled_chi2(2, 0.2), 1.0),
    (ref.scaled_chi2(3, 1.0), 2.0),
)
FALSE_ALARM = 1e-6  # family-wise, for every statistical check in this module


@functools.cache
def true_clipped_mean(law_index: int) -> mpmath.mpf:
    law, c = LAWS[law_index]
    with mpmath.workdps(30):
        return +law.clipped_mean(c)


def failures_of_bound(law_index: int, n: int, delta: float, trials: int, seed: int) -> int:
    """Trials in which the SUT's EB bound falls below the true clipped risk."""
    law, c = LAWS[law_index]
    losses = law.sample(np.random.default_rng(seed), (trials, n))
    truth = true_clipped_mean(law_index)
    bounds = eb_sut.eb_upper_batch(losses, c, delta)
    # exact comparison: the float bound against the 30-digit true mean
    return sum(1 for b in bounds if mpmath.mpf(float(b)) < truth)


@pytest.mark.claim("eb.formula")
@given(case=loss_cases())
@example(case=LossCase("constant", 2, 0, 1.0, 0.05))
@example(case=LossCase("bernoulli", 2000, 7, 1.0, 1e-9))
@example(case=LossCase("heavy", 3, 1, 1e3, 0.5))
def test_eb_formula_matches_mpmath(case: LossCase, record) -> None:
    """eb.formula: "R_c <= mean + sqrt(2 V log(2/delta)/n) + 7 c log(2/delta) / (3(n-1)) for
    losses clipped to [0, c], V the sample variance" (000 eq 5; 001 sec 2).

    The implementation must equal the formula evaluated in mpmath (50 digits) from the
    exact float losses, within the float64 rounding bound of `eb_float_tolerance`.
    """
    losses = case.losses
    got = eb_sut.eb_upper(losses, case.c, case.delta)
    exact = ref.eb_upper_reference(losses, case.c, case.delta)
    # tolerance: first-order rounding bound of the float64 evaluation (properties/tolerances.py)
    tol = tolerances.eb_float_tolerance(losses, case.c, case.delta)
    err = float(abs(mpmath.mpf(got) - exact))
    ratio = err / tol
    target(ratio, label="error/tolerance")
    record.example()
    record.max("max_error_over_tolerance", ratio)
    record.max("max_n", case.n)
    batch = float(eb_sut.eb_upper_batch(losses[None, :], case.c, case.delta)[0])
    assert err <= tol, f"EB bound {got!r} vs mpmath {mpmath.nstr(exact, 20)}: error {err:.3e} > tol {tol:.3e}"
    assert batch == got, "the batched EB evaluation differs from the scalar one"


@pytest.mark.claim("eb.coverage")
@given(
    law_index=st.integers(0, len(LAWS) - 1),
    n=st.integers(2, 200),
    delta=st.floats(0.01, 0.5),
    seed=SEEDS,
)
def test_eb_coverage_binomial(law_index: int, n: int, delta: float, seed: int, record) -> None:
    """eb.coverage: "P(true clipped risk > bound) <= delta" over several loss laws
    (Bernoulli, Beta, clipped Gaussian, scaled chi-square; 000 sec 3, 001 sec 2).

    Statistical check: `trials` independent samples of size n; failures ~ Bin(trials, p)
    with p <= delta under the claim.  Rejection when P(Bin(trials, delta) >= failures)
    <= alpha, alpha = 1e-6 / max_examples of the active profile (Bonferroni: hypothesis
    runs at most max_examples examples before a first failure, so the family-wise
    false-alarm rate is <= 1e-6 under every profile).
    """
    trials = 400
    alpha = FALSE_ALARM / settings.default.max_examples
    fails = failures_of_bound(law_index, n, delta, trials, seed)
    crit = ref.binomial_critical(trials, delta, alpha)
    record.example()
    record.max("max_failures_over_critical", fails / crit)
    record.set("false_alarm_rate_per_example", alpha)
    target(fails / crit, label="failures/critical")
    assert fails < crit, (
        f"{LAWS[law_index][0].name}: {fails}/{trials} trials had true clipped risk above the "
        f"EB bound at delta={delta}, n={n}; critical count {crit} (alpha {alpha:g})"
    )


COVERAGE_DELTAS = (0.5, 0.3, 0.2, 0.1, 0.05)


@pytest.mark.claim("eb.coverage")
@pytest.mark.parametrize("law_index", range(len(LAWS)), ids=[law.name for law, _ in LAWS])
def test_eb_coverage_against_delta(law_index: int, record) -> None:
    """eb.coverage at fixed n = 30 over a grid of delta (the coverage-vs-delta figure).

    2000 trials per delta; alpha = 1e-6 / (7 laws x 5 deltas) per binomial test, so the
    family-wise false-alarm rate of this check is <= 1e-6.
    """
    n, trials = 30, 2000
    alpha = FALSE_ALARM / (len(LAWS) * len(COVERAGE_DELTAS))
    rates, limits, bad = [], [], []
    for k, delta in enumerate(COVERAGE_DELTAS):
        fails = failures_of_bound(law_index, n, delta, trials, seed=1000 * law_index + k)
        crit = ref.binomial_critical(trials, delta, alpha)
        rates.append(fails / trials)
        limits.append(crit / trials)
        record.example()
        if fails >= crit:
            bad.append((delta, fails, crit))
    law = LAWS[law_index][0]
    record.max("max_failure_rate_over_delta", max(r / d for r, d in zip(rates, COVERAGE_DELTAS)))
    record.figure(
        "eb_coverage",
        {"law": law.name, "n": n, "trials": trials, "delta": list(COVERAGE_DELTAS),
         "failure_rate": rates, "upper_limit": limits},
    )
    assert not bad, f"{law.name}: coverage rejected at (delta, failures, critical) = {bad}"


@pytest.mark.claim("eb.heldout")
@pytest.mark.parametrize("cls", sut.CLASSES)
def test_eb_heldout_checkpoints(cls: str, backend, record, golden) -> None:
    """eb.heldout: "every trained checkpoint reports its clipped EB upper bound (001: decoder
    0.1771, Flexformer enc+dec 0.1751, PDE 0.0842)" -- here the decoder checkpoints of the
    foundation tier, on 512 held-out tasks, c = 1, delta = 0.05.

    The reported bound is the SUT's (models.checkpoint_metrics); it must equal the mpmath
    evaluation on the checkpoint's own held-out losses, lie above their clipped mean, and
    match golden/eb.json.
    """
    reported = sut.table2(cls, backend)["eb_upper"]
    check_reported_eb(sut.heldout_losses(cls, backend), reported, cls, record)
    golden("eb", {f"{cls}.eb_upper": reported}, rtol=tolerances.relative_band_golden(backend.dtype),
           seeds=registry.CLAIMS["eb.heldout"].seed_values, seed=sut.HELDOUT_SEED)


def check_reported_eb(losses: np.ndarray, reported: float, name: str, record) -> None:
    """The EB bound a checkpoint reports equals the mpmath evaluation of eq 5 on its own held-out
    losses (float64 values taken exactly; tolerance `eb_float_tolerance`, as for eb.formula) and
    lies above their clipped mean."""
    exact = ref.eb_upper_reference(losses, sut.EB_CLIP, sut.EB_DELTA)
    tol = tolerances.eb_float_tolerance(losses, sut.EB_CLIP, sut.EB_DELTA)
    err = float(abs(mpmath.mpf(reported) - exact))
    clipped_mean = float(np.minimum(losses, sut.EB_CLIP).mean())
    record.example(len(losses))
    record.set(f"{name}.eb_upper", reported)
    record.set(f"{name}.heldout_clipped_mean", clipped_mean)
    record.max("max_error_over_tolerance", err / tol)
    assert err <= tol, f"{name}: reported EB {reported!r} vs mpmath {mpmath.nstr(exact, 17)} (tol {tol:.2e})"
    assert reported >= clipped_mean, f"{name}: reported EB {reported!r} below the clipped mean {clipped_mean!r}"


def _family_rows():
    return [pytest.param(family, size, cls, marks=pytest.mark.xdist_group(sf.group(family, size)),
                         id=f"{family}-{sf.label(family, size)}-{cls}")
            for family in sf.FAMILIES for size in sf.PROMPT_SIZES[family] for cls in sut.CLASSES]


@pytest.mark.claim("eb.heldout")
@pytest.mark.parametrize(("family", "size", "cls"), _family_rows())
def test_eb_heldout_family_checkpoints(family: str, size: int, cls: str, backend, record, golden) -> None:
    """eb.heldout on the GP/KRR and PDE checkpoints (000 sec 4-5; 001 Table 5: PDE 0.0842): each
    reports the clipped EB bound of its held-out decoder losses, and a PDE query decoder also that
    of its end-to-end losses against the true solution; each must equal the mpmath evaluation on
    the checkpoint's own losses (`check_reported_eb`).  `pde.eb_upper` is the best (smallest)
    end-to-end bound over the PDE checkpoints (the seed's "best clipped EB upper")."""
    t = sf.table(family, size, cls, backend)
    name = f"{family}_{sf.label(family, size)}.{cls}"
    check_reported_eb(sf.losses(family, size, cls, backend), t["eb_upper"], name, record)
    pinned = {f"{name}.eb_upper": t["eb_upper"]}
    if family == "pde":
        check_reported_eb(sf.e2e_losses(size, cls, backend), t["e2e_eb_upper"], f"{name}_e2e", record)
        record.min("pde.eb_upper", t["e2e_eb_upper"])
        pinned[f"{name}_e2e.eb_upper"] = t["e2e_eb_upper"]
    golden("eb", pinned, rtol=tolerances.relative_band_golden(backend.dtype),
           seeds=registry.CLAIMS["eb.heldout"].seed_values, seed=sut.HELDOUT_SEED)
