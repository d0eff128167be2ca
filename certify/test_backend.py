"""Family B: the Richardson identities on every backend this machine has (the design card).

SUT: the decoder and its preconditioner classes, built from the same float64 seeds on
each backend (cpu/cuda x float64/float32) and checked against the exact reference with
the tolerance derived from that backend's unit roundoff.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, target

from certify import backend as backend_mod
from certify import sut
from properties import richardson as ref
from properties.strategies import RichardsonCase, richardson_cases

BACKENDS = backend_mod.available()


@pytest.mark.claim("backend.agreement")
@given(case=richardson_cases(sources=("init",), max_K=32))
def test_identities_on_every_backend(case: RichardsonCase, record) -> None:
    """backend.agreement: "each identity holds on every backend (cpu/cuda x float64/float32)
    within the tolerance derived for that dtype; float32 tolerances come from unit
    roundoff and size, not from tuning" (design card).

    richardson.identity and richardson.closed_form (from x_0 = 0, the identity from a
    random x_0) on each available backend, each with its own u.
    """
    record.example()
    record.set("backends_checked", ", ".join(b.name for b in BACKENDS))
    if not torch.cuda.is_available():
        record.set("cuda", "not available on this machine: cuda backends unchecked here")
    failures = []
    worst: dict[str, float] = {}
    for be in BACKENDS:
        for start in ("zero", "random"):
            c = RichardsonCase(case.source, case.cls, case.L, case.seed, K=case.K, kappa=case.kappa,
                               x0=start)
            dec, H, d, x0 = sut.materialize(c, be)
            P = sut.frozen_P(dec, x0, H, d)
            xs = sut.run(sut.linear_decoder(dec, P, c.L), H, d, x0)
            Pn, Hn, dn = sut.to_numpy(P), sut.to_numpy(H), sut.to_numpy(d)
            cmp, _ = ref.identity_check(Pn, Hn, dn, xs, be.unit_roundoff)
            checks = [("identity", cmp)]
            if start == "zero":
                series, gap = ref.closed_form_check(Pn, Hn, dn, xs, be.unit_roundoff)
                checks += [("closed_form.series", series), ("closed_form.gap", gap)]
            for name, cm in checks:
                record.max(f"{be.name}.max_error_over_tolerance", cm.ratio)
                worst[be.name] = max(worst.get(be.name, 0.0), cm.ratio)
                if not cm.ok:
                    failures.append(f"{be.name} {name}: {cm.error:.3e} > {cm.tolerance:.3e}")
    for name, ratio in worst.items():
        target(ratio, label=f"{name} error/tolerance")
    assert not failures, f"{case}: " + "; ".join(failures)
