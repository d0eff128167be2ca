"""Cost of the high-precision reference engines against float64 numpy on the same operation.

    python benchmarks/bench_references.py            # the README table (K = 8, 16, 32, 64)
    python benchmarks/bench_references.py --K 8 16   # a subset
    python -m pytest benchmarks/bench_references.py --dist no   # pytest-benchmark, K = 8 and 16

Operations, each on one seeded K x K matrix A = I + G / (2 sqrt K) (well conditioned) and a
K-vector b: matmul A A, solve A x = b, power A^L with L = 8 (the decoders' depth range), and the
2-norm ||A||_2.  Engines: numpy float64 (the baseline, LAPACK/BLAS), python-flint arb balls at the
suite's working precision (PREC_BITS = 212) (properties.reference.ball / normbound: the rigorous engine; the 2-norm
is normbound.norm2_upper, a certified upper bound), and mpmath at the suite's 50 digits
(properties.reference.mp; its 2-norm is the largest singular value by mpmath.svd_r, a
high-precision value, not an enclosure).  Median CPU time of interleaved rounds; ratios engine /
numpy are taken in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from properties.reference import ball, mp, normbound
from properties.reference.convert import MP_DPS, PREC_BITS, to_arb_mat, to_mpf_matrix, workdps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import fmt_seconds, interleaved  # noqa: E402

L_POWER = 8
OPS = ("matmul", "solve", "power", "norm2")
MP_SVD_MAX_K = 32  # mpmath's SVD at K = 64 takes minutes; the table says so instead


def problem(K: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.eye(K) + rng.standard_normal((K, K)) / (2 * np.sqrt(K)), rng.standard_normal((K, 1))


def _mp_norm2(A: mpmath.matrix) -> mpmath.mpf:
    with workdps(MP_DPS):
        return max(mpmath.svd_r(A, compute_uv=False))


def cases(K: int) -> dict[str, dict[str, object]]:
    """op -> engine -> zero-argument callable, all on the same (A, b)."""
    A, b = problem(K)
    Aa, ba = to_arb_mat(A), to_arb_mat(b)
    Am, bm = to_mpf_matrix(A), to_mpf_matrix(b)
    out: dict[str, dict[str, object]] = {
        "matmul": {"numpy": lambda: A @ A, "arb": lambda: Aa * Aa, "mpmath": lambda: _mp_mul(Am, Am)},
        "solve": {"numpy": lambda: np.linalg.solve(A, b), "arb": lambda: ball.solve(Aa, ba),
                  "mpmath": lambda: mp.solve(Am, bm)},
        "power": {"numpy": lambda: np.linalg.matrix_power(A, L_POWER), "arb": lambda: ball.matpow(Aa, L_POWER),
                  "mpmath": lambda: mp.matpow(Am, L_POWER)},
        "norm2": {"numpy": lambda: np.linalg.norm(A, 2), "arb": lambda: normbound.norm2_upper(Aa)},
    }
    if K <= MP_SVD_MAX_K:
        out["norm2"]["mpmath"] = lambda: _mp_norm2(Am)
    return out


def _mp_mul(X: mpmath.matrix, Y: mpmath.matrix) -> mpmath.matrix:
    with workdps(MP_DPS):
        return X * Y


def measure(Ks: list[int], rounds: int = 3) -> dict[tuple[int, str], dict[str, float]]:
    times = {}
    for K in Ks:
        for op, engines in cases(K).items():
            times[(K, op)] = interleaved(engines, rounds=rounds)  # type: ignore[arg-type]
            print(f"  K={K:3d} {op:7s} " + "  ".join(f"{e} {fmt_seconds(t)}" for e, t in times[(K, op)].items()),
                  file=sys.stderr, flush=True)
    return times


def table(times: dict[tuple[int, str], dict[str, float]]) -> str:
    rows = [f"| K | operation | numpy float64 | arb ({PREC_BITS} bit) | arb / numpy | mpmath ({MP_DPS} digits) | mpmath / numpy |",
            "|---|---|---|---|---|---|---|"]
    for (K, op), t in times.items():
        n = t["numpy"]
        mpc = (f"{fmt_seconds(t['mpmath'])} | {t['mpmath'] / n:,.0f}" if "mpmath" in t
               else f"(SVD > {MP_SVD_MAX_K}: minutes) | -")
        rows.append(f"| {K} | {op} | {fmt_seconds(n)} | {fmt_seconds(t['arb'])} | {t['arb'] / n:,.0f} | {mpc} |")
    return "\n".join(rows)


@pytest.mark.parametrize("K", [8, 16])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("engine", ["numpy", "arb", "mpmath"])
def test_reference_cost(benchmark, K: int, op: str, engine: str) -> None:
    fn = cases(K)[op].get(engine)
    if fn is None:
        pytest.skip(f"no {engine} {op} at K = {K}")
    benchmark(fn)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    times = measure(args.K, args.rounds)
    print(f"median CPU time of {args.rounds} interleaved rounds; power L = {L_POWER}")
    print(table(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
