"""Where the time of a certification run goes: references, SUT, hypothesis, pytest.

    python benchmarks/time_split.py --only richardson --only eb

Runs `python -m certify` in-process under cProfile and attributes each function's own
time (tottime) to a bucket by the file it lives in (C functions by their owner: flint
methods are references, torch ops are the SUT; other builtins by their main caller).  One run, so the shares are ratios taken
together; the machines here are noisy, so read them as such.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections import defaultdict

BUCKETS = (
    ("references (properties/, mpmath, python-flint)", ("properties/", "mpmath", "flint", "scipy")),
    ("SUT (models/, torch)", ("models/", "torch")),
    ("hypothesis (generation, shrinking)", ("hypothesis",)),
    ("pytest, pluggy, xdist, certify plugin/report", ("_pytest", "pluggy", "xdist", "certify/", "matplotlib")),
    ("numpy", ("numpy",)),
)


def bucket(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    where = filename if filename != "~" else name
    for label, keys in BUCKETS:
        if any(k in where for k in keys):
            return label
    return "other (imports, interpreter)"


def split(argv: list[str]) -> tuple[dict[str, float], float]:
    """Run `python -m certify argv` in-process under cProfile: (own seconds per bucket, total)."""
    from certify.cli import main as certify_main

    prof = cProfile.Profile()
    prof.enable()
    certify_main(argv)
    prof.disable()
    totals: dict[str, float] = defaultdict(float)
    table = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    for func, (_, _, tottime, _, callers) in table.items():
        label = bucket(func)
        if label.startswith("other") and func[0] == "~" and callers:
            # a builtin (getattr, isinstance, gc ...) counts for whoever called it most
            caller = max(callers, key=lambda c: callers[c][3])
            label = bucket(caller)
        totals[label] += tottime
    return dict(totals), sum(totals.values())


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    totals, profiled = split(argv + ["--out", "/tmp/certify-time-split"])
    wall = time.perf_counter() - t0
    print(f"\nwall {wall:.1f} s (profiled {profiled:.1f} s; cProfile adds overhead)")
    for label, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<50} {t:7.2f} s  {100 * t / profiled:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
