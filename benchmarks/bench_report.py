"""Where the wall time of the default report goes, and how it scales from one xdist worker to two.

    python benchmarks/bench_report.py                     # the whole default report (about 12 min)
    python benchmarks/bench_report.py --only richardson   # a subset (any python -m certify --only)

Three runs of `python -m certify` (ci profile, CPU float64), all with the checkpoint cache and the
reference memo as they are (run the report once before, so neither training nor first-time
references are timed; pass --no-reference-cache to time the references too):

  1. -n 2  wall W2 (the number the 180 s target is about);
  2. -n 1  wall W1: one xdist worker, the same work serially;
  3. -n 0  in-process under cProfile: each function's own time attributed to references
     (properties/, mpmath, python-flint, scipy), the SUT (models/, torch), hypothesis (generation,
     shrinking), pytest/pluggy/xdist/report, numpy, other (benchmarks/time_split.py's buckets).

Reported: W2, W1, the speed-up W1 / W2 and the xdist overhead W2 - W1 / 2 (load imbalance,
worker start-up, per-worker imports and caches), and the split of the serial run's profiled
time, as shares (cProfile inflates absolute times; its shares are ratios taken in one run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_split import split  # noqa: E402


def timed_report(workers: str, extra: list[str], out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "certify", "-n", workers, "--out", str(out), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
        raise SystemExit(f"python -m certify -n {workers} exited {proc.returncode}")
    return wall, json.loads((out / "claims.json").read_text())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--no-reference-cache", action="store_true")
    ap.add_argument("--skip-profile", action="store_true", help="only the two timed runs")
    args = ap.parse_args(argv)
    extra = [a for o in args.only for a in ("--only", o)] + (["--no-reference-cache"] if args.no_reference_cache else [])
    with tempfile.TemporaryDirectory() as tmp:
        w2, doc2 = timed_report("2", extra, Path(tmp) / "n2")
        print(f"-n 2: {w2:.1f} s wall", flush=True)
        w1, _ = timed_report("1", extra, Path(tmp) / "n1")
        print(f"-n 1: {w1:.1f} s wall", flush=True)
        totals, profiled = ({}, 0.0) if args.skip_profile else split(extra + ["-n", "0", "--out", str(Path(tmp) / "n0")])
    claims = [c for c in doc2["claims"] if c["status"] != "unchecked"]
    examples = [c["examples"] for c in claims]
    print(f"\n{len(claims)} claims, {sum(examples)} recorded examples")
    print("| measure | value |\n|---|---|")
    print(f"| wall, -n 2 | {w2:.1f} s |\n| wall, -n 1 | {w1:.1f} s |\n| speed-up -n 1 -> -n 2 | {w1 / w2:.2f}x |")
    print(f"| xdist overhead W2 - W1/2 | {w2 - w1 / 2:.1f} s ({100 * (w2 - w1 / 2) / w2:.0f} % of W2) |")
    if totals:
        print("\n| serial run, profiled (-n 0) | share |\n|---|---|")
        for label, t in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"| {label} | {100 * t / profiled:.1f} % |")
        print(f"\n(profiled time {profiled:.1f} s, cProfile overhead included)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
