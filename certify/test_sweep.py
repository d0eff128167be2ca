"""sweep.scaling: the certified K = 4 scaling sweep (000 sec 1, sec 6, Fig 3).

SUT: the Richardson decoders of certify.sut_families, one per (task family, prompt size,
preconditioner class, depth L): GP posterior-latent solves at n = 16, 64 and encoded PDE query
solves at M = 4, 16, every class, L in {1, 2, 3, 4, 6, 8} -- 2 x 2 x 4 x 6 = 96 rows.  The
default (ci) tier certifies the 16 rows at the method-comparison depth L = 6 (the checkpoints of
gp.method_comparison and pde.method_comparison, certified once per process); the other 80 rows
are the slow tier (python -m certify --slow).
"""

from __future__ import annotations

import pytest

from certify import registry, sut
from certify import sut_families as sf
from properties import tolerances

ROWS = [(family, size, cls, L) for family in sf.FAMILIES for size in sf.PROMPT_SIZES[family]
        for cls in sut.CLASSES for L in sf.DEPTHS]


def _params():
    out = []
    for family, size, cls, L in ROWS:
        marks = [pytest.mark.xdist_group(sf.group(family, size, L))]
        if L != sf.DEFAULT_L:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(family, size, cls, L, marks=marks, id=f"{family}-{sf.label(family, size)}-{cls}-L{L}"))
    return out


@pytest.mark.claim("sweep.scaling")
@pytest.mark.parametrize(("family", "size", "cls", "L"), _params())
def test_sweep_row(family: str, size: int, cls: str, L: int, backend, record, golden) -> None:
    """sweep.scaling: "certified sweep over GP prompt sizes {16, 64}, PDE prompt sizes {4, 16},
    K = 4: 96 rows, max violation 0" (000 sec 6, Fig 3).

    One row: the trained decoder of (family, prompt size, class, L) on its 512 held-out tasks;
    its violation rate of 000 eq 4 is rigorous (rho a certified upper bound on ||I - P H||_2,
    exact e_L in arb, the SUT's e_L within its derived rounding tolerance; the softmax map in
    Jacobian form) and must be 0.  Held-out risk and violation rate are pinned per row in
    golden/sweep.json; the figure shows risk against depth per class and prompt size.
    """
    t = sf.table(family, size, cls, backend, L)
    key = f"{family}_{sf.label(family, size)}.{cls}.L{L}"
    record.sum("rows", 1)
    record.sum("tasks_certified", t["n_tasks"])
    record.max("max_violation", t["rigorous_violation_rate"])
    record.max("max_tightness", t["max_tightness"])
    record.example(t["n_tasks"])
    record.figure("sweep_scaling", {"family": family, "size": size, "label": sf.label(family, size), "cls": cls,
                                    "L": L, "depths": list(sf.DEPTHS), "risk": t["risk"], "eb_upper": t["eb_upper"],
                                    "violation_rate": t["rigorous_violation_rate"],
                                    "mean_contraction": t["mean_contraction"]})
    assert t["rigorous_violations"] == 0, f"{key}: {t['rigorous_violations']} held-out tasks violate 000 eq 4"
    golden("sweep", {f"{key}.risk": t["risk"], f"{key}.violation_rate": t["rigorous_violation_rate"]},
           rtol=tolerances.relative_band_golden(backend.dtype),
           atol=64 * backend.unit_roundoff,  # violation rates that are exactly 0 stay 0
           seeds=registry.CLAIMS["sweep.scaling"].seed_values, seed=sut.HELDOUT_SEED,
           setup={**sf.setup("gp"), **sf.setup("pde"), "sweep.depths": ", ".join(map(str, sf.DEPTHS))})
