"""Cost of the EP gradient estimators on one equilibrium block and batch (seed 003: "AEP 1.44x plain EP").

    python -m pytest benchmarks/bench_ep.py --dist no -s   # pytest-benchmark, then the ratio table
    python benchmarks/bench_ep.py                              # the same cases, interleaved rounds (README table)

Not part of the default test run (benchmarks/ is outside pyproject's testpaths).  Every case is a
complete gradient from scratch on the ep.training toy block (models.ep.charlm, d = 16, 2 heads,
T = 16) at its initialization, on one batch of B = 2 windows: the T1 = 12 Euler free phase plus the estimate (T2 = 8 nudged Euler steps,
beta = 0.02), or BPTT through the same T1-step unroll.  Ratios are to plain EP and to BPTT, all
taken in one run (the machines here are shared and noisy: read them as such).

cases: plain EP (symmetric, no correction), AEP symmetric, holomorphic N = 2 and N = 4 (with the
frozen correction), tracking AEP (estimators.tracking_pair: re-linearised at the common mode every evaluation,
matrix-free), BPTT; the AEP correction both as the core's estimators.antisymmetric_product
(J v as the vjp of v -> J^T v, recorded once per free equilibrium) and as
models.ep.charlm's double-backward product; and the stacked training path of models.ep.charlm.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import pytest
import torch

from models.ep import charlm as C
from models.ep import estimators

CFG = C.TwinConfig()  # the toy tier's block (certify.sut_ep uses the same architecture)
BATCH = 2
TIMES: dict[str, float] = {}  # case -> median seconds, filled by the benchmarks below


def _setup() -> tuple[C.CharLMBlock, torch.Tensor, torch.Tensor]:
    torch.set_num_threads(1)
    cfg = dataclasses.replace(CFG, batch=BATCH)
    ids, y = C.train_batch(cfg, 0)
    return C.build_block(cfg), ids, y


def _free(block: C.CharLMBlock, ids: torch.Tensor) -> torch.Tensor:
    return C.relax(block, ids, CFG.eps, CFG.T1).z


def _core(correction: str | None, kind: str = "symmetric", N: int = 2) -> Callable:
    def run(block, ids, y):
        z0 = _free(block, ids)
        cfg = estimators.EPConfig(correction=correction, readout="vf", eps=CFG.nudge.eps, steps=CFG.nudge.T2)
        nud = estimators.Nudger(block, ids, y, z0, cfg)
        if kind == "symmetric":
            return estimators.symmetric(nud, CFG.nudge.beta).grad
        return estimators.holomorphic(nud, CFG.nudge.beta, N).grad
    return run


def _charlm(nudge: C.NudgeConfig, stacked: bool = False) -> Callable:
    def run(block, ids, y):
        z0 = _free(block, ids)
        return (C.stacked_estimate if stacked else C.ep_estimate)(block, ids, y, z0, nudge).grad
    return run


def _bptt(block, ids, y):
    return C.bptt_task_gradient(block, ids, y, CFG.eps, CFG.T1)[0]


AEP = CFG.nudge  # symmetric, aep
CASES: dict[str, tuple[str, Callable]] = {
    "plain_ep": ("plain EP, symmetric (core)", _core(None)),
    "aep_symmetric": ("AEP symmetric (core Nudger, charlm double-backward product)", _charlm(AEP)),
    "aep_symmetric_core_product": ("AEP symmetric (core Nudger and core product, reverse over reverse)", _core("aep")),
    "holo_N2": ("holomorphic N=2 + AEP (charlm product)", _charlm(dataclasses.replace(AEP, estimator="holomorphic", N=2))),
    "holo_N4": ("holomorphic N=4 + AEP (charlm product)", _charlm(dataclasses.replace(AEP, estimator="holomorphic", N=4))),
    "tracking_aep": ("tracking AEP (core, matrix-free, re-linearised per evaluation)", _core("tracking")),
    "plain_ep_stacked": ("plain EP symmetric, stacked phases", _charlm(dataclasses.replace(AEP, correction=None), stacked=True)),
    "aep_stacked": ("AEP symmetric, stacked phases (the ep.training trainer)", _charlm(AEP, stacked=True)),
    "bptt": ("BPTT through the T1-step unroll", _bptt),
}


def table(times: dict[str, float]) -> str:
    """A markdown table of the median times with ratios to plain EP and to BPTT."""
    rows = ["| case | median ms | / plain EP | / BPTT |", "|---|---|---|---|"]
    for key, (label, _) in CASES.items():
        if key in times:
            t = times[key]
            rows.append(f"| {label} | {1e3 * t:.1f} | {t / times['plain_ep']:.2f} | {t / times['bptt']:.2f} |")
    return "\n".join(rows)


@pytest.mark.parametrize("case", list(CASES))
def test_estimator_cost(case: str, benchmark) -> None:
    block, ids, y = _setup()
    fn = CASES[case][1]
    g = benchmark.pedantic(fn, args=(block, ids, y), rounds=7, iterations=1, warmup_rounds=1)
    assert torch.isfinite(g).all()
    TIMES[case] = benchmark.stats.stats.median


def test_zz_ratio_table() -> None:
    """Prints the ratio table of the cases above (run with -s to see it)."""
    if not {"plain_ep", "bptt"} <= TIMES.keys():
        pytest.skip("run the whole module: the ratios need plain EP and BPTT")
    print("\n" + table(TIMES))


def main(rounds: int = 9) -> int:
    """Round-robin over the cases (each round times every case once), so a load change on a shared
    machine hits all cases alike; CPU time of this process (time.process_time), median per case."""
    block, ids, y = _setup()
    for _, fn in CASES.values():
        fn(block, ids, y)  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(rounds):
        for key, (_, fn) in CASES.items():
            t0 = time.process_time()
            fn(block, ids, y)
            samples[key].append(time.process_time() - t0)
    times = {k: statistics.median(v) for k, v in samples.items()}
    print(f"{rounds} interleaved rounds, CPU time, median; block d={CFG.model.d} H={CFG.model.heads} "
          f"T={CFG.model.T} B={BATCH}, T1={CFG.T1}, T2={CFG.nudge.T2}, torch threads 1")
    print(table(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
