"""Cost of the certificates per checkpoint against the cost of evaluating the model they certify.

    python benchmarks/bench_certificates.py           # the README table (trains missing checkpoints)
    python -m pytest benchmarks/bench_certificates.py --dist no   # pytest-benchmark

Per trained least-squares decoder (certify.sut, CPU float64, K = 8, L = 6) on its 512 held-out
tasks:
  model     models.metrics.depth_losses: the batched L-step decoder run and the per-task losses;
  norm      certify.sut.certify_heldout: 000 eq 4 per task with rho a certified (arb) upper bound
            on ||I - P H||_2 and the exact e_L in arb, recomputed (the reference memo off);
  norm, memo hit   the same with every reference served by properties.reference.memo (what a
            re-run of the report pays: the SUT's frozen P and iterates, hashing, the lookups);
  EB        the clipped empirical-Bernstein bound, the SUT's (models.eb.eb_upper) and its 50-digit
            mpmath reference (properties.eb.eb_upper_reference) together.
Per subspace-encoder checkpoint (certify.sut_encoder.TABLE3, N = 420):
  model     models.encoder.subspace_estimates (prompts, running second moment, top-r eigenspace);
  subspace  properties.encoder.subspace_check (arb eigenvector enclosures, Davis-Kahan / YWS ends).
Median CPU time of interleaved rounds; each ratio certificate / model is taken in one run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from certify import sut, sut_encoder
from certify.backend import Backend
from models import eb as model_eb
from models import encoder as enc
from models.metrics import depth_losses
from properties import eb as ref_eb
from properties import encoder as ref_enc
from properties.reference import memo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import fmt_seconds, interleaved  # noqa: E402

BACKEND = Backend("cpu", "float64")
CLASSES = ("free_linear", "diagonal", "flexformer", "softmax")


def decoder_cases(cls: str) -> dict[str, object]:
    dec, tasks = sut.trained(cls, BACKEND), sut.heldout(BACKEND)
    losses = sut.to_numpy(depth_losses(dec, tasks))

    def eb() -> None:
        model_eb.eb_upper(losses, sut.EB_CLIP, sut.EB_DELTA)
        ref_eb.eb_upper_reference(losses, sut.EB_CLIP, sut.EB_DELTA)

    def norm(memo_on: bool):
        def run() -> None:
            os.environ[memo.ENV] = "1" if memo_on else "0"
            try:
                sut.certify_heldout(dec, tasks, BACKEND.unit_roundoff)
            finally:
                os.environ[memo.ENV] = "0"
        return run

    return {"model": lambda: depth_losses(dec, tasks), "norm": norm(False), "norm, memo hit": norm(True), "EB": eb}


def subspace_cases() -> dict[str, object]:
    cfg = sut_encoder.TABLE3
    Ss, Us, U_star, Sz, _ = sut_encoder.subspace(cfg, (cfg.N,), BACKEND)
    return {"model": lambda: enc.subspace_estimates(cfg, [cfg.N], "cpu", torch.float64, seed=cfg.seed),
            "subspace": lambda: ref_enc.subspace_check(Ss[-1], Us[-1], U_star, Sz, BACKEND.unit_roundoff)}


def measure(rounds: int = 3) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    out = {f"decoder {cls}": interleaved(decoder_cases(cls), rounds=rounds) for cls in CLASSES}  # type: ignore[arg-type]
    out["encoder subspace (TABLE3)"] = interleaved(subspace_cases(), rounds=rounds)  # type: ignore[arg-type]
    return out


def table(times: dict[str, dict[str, float]]) -> str:
    rows = ["| checkpoint | model evaluation | certificate | time | / model |", "|---|---|---|---|---|"]
    for name, t in times.items():
        for cert, s in t.items():
            if cert != "model":
                rows.append(f"| {name} | {fmt_seconds(t['model'])} | {cert} | {fmt_seconds(s)} | {s / t['model']:,.0f} |")
    return "\n".join(rows)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("part", ["model", "norm", "norm, memo hit", "EB"])
def test_decoder_certificate_cost(benchmark, cls: str, part: str) -> None:
    torch.set_num_threads(1)
    benchmark.pedantic(decoder_cases(cls)[part], rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("part", ["model", "subspace"])
def test_subspace_certificate_cost(benchmark, part: str) -> None:
    torch.set_num_threads(1)
    benchmark.pedantic(subspace_cases()[part], rounds=3, iterations=1, warmup_rounds=1)


def main() -> int:
    times = measure()
    print("median CPU time of 3 interleaved rounds, torch threads 1; 512 held-out tasks per decoder")
    print(table(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
