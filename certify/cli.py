"""`python -m certify`: run the certificates and write the report.

The certificates are pytest modules; this command runs them through pytest
(and pytest-xdist with -n) with the certify plugin, which writes report/.
Exit status: 0 when every checked claim has its expected verdict, 1 when one
misses it, 2 on bad usage (unknown --only id, unusable backend, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from certify import backend as backend_mod
from certify import profiles, registry
from certify.golden import update_refusal
from certify.report import misses

CERTIFY_DIR = Path(__file__).resolve().parent


def _workers(text: str) -> str:
    if text in ("auto", "logical"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"-n takes a number or 'auto', not {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("-n must be >= 0")
    return str(n)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m certify",
        description="Certify the claims of the learned-preconditioner reports and write report/.",
    )
    p.add_argument("--only", action="append", default=[], metavar="ID_OR_PREFIX",
                   help="run only these claims (repeatable): an id or a prefix such as 'richardson'")
    p.add_argument("--device", default=None, help="cpu|cuda (default: env CERTIFY_DEVICE or cpu)")
    p.add_argument("--dtype", default=None, help="float64|float32 (default: env CERTIFY_DTYPE or float64)")
    p.add_argument("--profile", default=None, choices=profiles.PROFILES,
                   help="hypothesis profile (default: env CERTIFY_PROFILE or ci)")
    p.add_argument("--out", default="report", type=Path, help="report folder (default report/)")
    p.add_argument("--update-golden", action="store_true",
                   help="re-pin golden metrics from this run (refused in CI and with -n > 1)")
    p.add_argument("-n", dest="workers", default=None, type=_workers,
                   help="pytest-xdist workers (a number or auto)")
    p.add_argument("--slow", action="store_true",
                   help="also run the slow tier (e.g. all 96 rows of sweep.scaling; env CERTIFY_SLOW=1)")
    p.add_argument("--no-reference-cache", action="store_true",
                   help="recompute every memoized high-precision reference (env CERTIFY_REFERENCE_CACHE=0)")
    p.add_argument("--list", action="store_true", help="list the registered claims and exit")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="exit 0 with a SKIPPED line when the requested device is absent "
                        "(for tox's cuda environments); without it that is an error")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    return p


def _claim_map_key(base_args: list[str]) -> str:
    """What the collection depends on: the arguments, the environment that selects tiers and
    backends, and the sources of the packages the certificates import at collection time."""
    import hashlib

    h = hashlib.sha256(json.dumps([base_args, {k: os.environ.get(k) for k in
                                               ("CERTIFY_SLOW", "CERTIFY_DEVICE", "CERTIFY_DTYPE")}]).encode())
    root = CERTIFY_DIR.parent
    files = [p for pkg in ("certify", "properties", "models") for p in (root / pkg).rglob("*.py")]
    for path in sorted(files + [root / "conftest.py", root / "pyproject.toml"]):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def _claim_map(base_args: list[str]) -> Path:
    """Collect once (no xdist) to learn which tests belong to which claim (for the progress
    lines), or reuse the map of an identical collection (keyed by `_claim_map_key`: ~10 s saved)."""
    from certify.sut import cache_dir

    fd, name = tempfile.mkstemp(prefix="certify-claims-", suffix=".json")
    os.close(fd)
    cached = cache_dir() / "claim-maps" / f"{_claim_map_key(base_args)}.json"
    if cached.is_file():
        Path(name).write_bytes(cached.read_bytes())
        return Path(name)
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           "--certify-write-claim-map", name, *base_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        ok = proc.returncode == 0 and bool(json.loads(Path(name).read_text()))
    except ValueError:
        ok = False
    if ok:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(Path(name).read_bytes())
        tmp.replace(cached)  # atomic: a concurrent run never reads half a map
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for c in registry.CLAIMS.values():
            print(f"{c.id:<36} expected {c.expected:<10} {c.source}")
        return 0
    try:
        selected = registry.select(args.only or None)
        be = backend_mod.resolve(args.device, args.dtype)
        profile = profiles.active_profile_name(args.profile)
    except backend_mod.DeviceUnavailable as exc:
        if args.skip_unavailable:
            print(f"certify: SKIPPED, nothing was certified: {exc}")
            return 0
        print(f"certify: error: {exc}", file=sys.stderr)
        return 2
    except (registry.UnknownClaimError, backend_mod.BackendError, ValueError) as exc:
        print(f"certify: error: {exc}", file=sys.stderr)
        return 2
    if args.update_golden:
        workers = 2 if args.workers in ("auto", "logical") else int(args.workers or 0)
        why = update_refusal(workers)
        if why:
            print(f"certify: error: {why}", file=sys.stderr)
            return 2

    if args.no_reference_cache:
        from properties.reference import memo

        os.environ[memo.ENV] = "0"  # xdist workers inherit it
    out = args.out.resolve()
    base = [str(CERTIFY_DIR), "-p", "certify.plugin", "--device", be.device, "--dtype", be.dtype,
            "--hypothesis-profile", profile]
    for pat in args.only:
        base += ["--certify-only", pat]
    if args.update_golden:
        base.append("--update-golden")
    if args.slow:
        base.append("--slow")
    pytest_args = [*base, "--certify-report", str(out), "-q", "--no-header", "--tb=short",
                   "-p", "no:cacheprovider", *args.pytest_args]
    claim_map = None
    if args.workers not in (None, "0"):
        claim_map = _claim_map(base)
        # (pyproject's addopts adds --dist loadgroup: one family's checkpoint tests share a worker)
        pytest_args += ["-n", args.workers, "--certify-claim-map", str(claim_map)]

    print(f"certify: {len(selected)} claim(s) on {be.name}, profile {profile}, report -> {out}", flush=True)
    claims_json = out / "claims.json"
    if claims_json.exists():
        claims_json.unlink()  # never report a stale run
    import pytest

    try:
        rc = pytest.main(pytest_args)
    finally:
        if claim_map is not None:
            claim_map.unlink(missing_ok=True)
    if not claims_json.exists():
        print(f"certify: error: pytest exited {int(rc)} before writing the report", file=sys.stderr)
        return 2
    doc = json.loads(claims_json.read_text())
    entries = doc["claims"]
    bad = misses(entries)
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"certify: {summary}; {doc['suite']['seconds']:.1f} s; report in {out}")
    for e in bad:
        print(f"certify: MISS {e['id']}: {e['status']} (expected {e['expected']})", file=sys.stderr)
    if int(rc) not in (0, 1, 5):
        return 2
    return 1 if bad else 0
