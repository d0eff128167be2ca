"""The report of DESIGN.md contract 2: report/claims.json, report/CLAIMS.md, report/figures/."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

from certify import __version__, registry
from certify.backend import Backend
from certify.results import ClaimResult, unchecked_reason

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = out.stdout.strip() if out.returncode == 0 else "unknown"
    if commit != "unknown":
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True, timeout=10,
        )
        if dirty.returncode == 0 and dirty.stdout.strip():
            commit += "+dirty"
    return commit


@functools.cache
def suite_versions() -> dict[str, str]:
    import mpmath
    import numpy
    import scipy
    import torch

    try:
        import flint

        flint_v = flint.__version__
    except ImportError:  # pragma: no cover - a declared dependency
        flint_v = "missing"
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "mpmath": mpmath.__version__,
        "torch": torch.__version__,
        "python-flint": flint_v,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # JSON has no inf/nan; keep them visible as strings
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def claim_entries(results: dict[str, ClaimResult], selected: list[str]) -> list[dict[str, Any]]:
    """One entry per registered claim, in registry order; unchecked ones with the reason."""
    chosen = set(selected)
    entries = []
    for cid, claim in registry.CLAIMS.items():
        res = results.get(cid)
        if res is not None and cid in chosen:
            status, reason = res.status()
            evidence = dict(res.evidence)
            if res.skips:
                evidence["skipped"] = "; ".join(sorted(set(res.skips.values())))
            if res.failures:
                evidence["failure"] = res.failures[0]["message"][-1500:]
        else:
            res = ClaimResult(cid)
            status, reason = "unchecked", unchecked_reason(cid, cid in chosen)
            evidence = {}
        if reason:
            evidence["reason"] = reason
        entries.append(
            {
                "id": cid,
                "title": claim.title,
                "source": claim.source,
                "status": status,
                "expected": claim.expected,
                "evidence": _jsonable(evidence),
                "seed_values": claim.seed_values,
                "checks": res.checks,
                "examples": res.examples,
                "counterexample": _jsonable(res.counterexample()),
                "seconds": round(res.seconds, 3),
                "tolerance_tightness": tolerance_tightness(evidence),
            }
        )
    return entries


TIGHTNESS_SUFFIX = "_over_tolerance"
TIGHT, LOOSE = 0.1, 1e-3  # bands of observed error / tolerance for the tightness table


def tolerance_tightness(evidence: dict[str, Any]) -> dict[str, Any] | None:
    """The largest observed-error / derived-tolerance ratio a claim's checks recorded (evidence
    names ending in `_over_tolerance`, also per object), with its metric name and band: near 1 the
    tolerance is tight, far below it the tolerance is loose (or the rounding never materialized).
    None for claims whose checks are bounds or statistical tests rather than tolerances."""
    ratios = {k: v for k, v in evidence.items()
              if k.endswith(TIGHTNESS_SUFFIX) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not ratios:
        return None
    key = max(ratios, key=lambda k: ratios[k])
    r = float(ratios[key])
    band = "tight" if r >= TIGHT else ("moderate" if r >= LOOSE else "loose")
    return {"max_error_over_tolerance": r, "metric": key, "band": band, "ratios": len(ratios)}


def misses(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claims that ran and missed their expected verdict (the exit-status rule).

    `unchecked` claims are listed in the report but do not fail the run: they were
    not selected, need hardware that is absent, or await their family's issue.
    """
    return [e for e in entries if e["status"] != "unchecked" and e["status"] != e["expected"]]


def write_report(
    out: Path,
    *,
    results: dict[str, ClaimResult],
    selected: list[str],
    backend: Backend,
    profile: str,
    started: float,
    seconds: float,
    collection_ok: bool = True,
) -> dict[str, Any]:
    entries = claim_entries(results, selected)
    doc = {
        "suite": {
            "version": __version__,
            "git_commit": git_commit(),
            "backend": backend.as_dict(),
            "hypothesis_profile": profile,
            "versions": suite_versions(),
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "selected": selected,
            "collection_ok": collection_ok,
        },
        "claims": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "claims.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out / "CLAIMS.md").write_text(render_markdown(doc), encoding="utf-8")
    from certify.figures import render_all

    figures = render_all(results, out / "figures")
    doc["figures"] = [str(p.relative_to(out)) for p in figures]
    return doc


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _split_evidence(evidence: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Plain evidence, and per-object metrics (names `object.metric`) for their own tables."""
    plain: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in evidence.items():
        head, dot, tail = name.partition(".")
        if dot:
            grouped.setdefault(head, {})[tail] = value
        else:
            plain[name] = value
    return plain, grouped


def render_markdown(doc: dict[str, Any]) -> str:
    s = doc["suite"]
    lines = [
        "# Certification report",
        "",
        f"commit `{s['git_commit']}`, backend {s['backend']['device']}/{s['backend']['dtype']}, "
        f"hypothesis profile `{s['hypothesis_profile']}`, {s['seconds']:.1f} s, started {s['started']}.",
        "",
        "| item | status | expected | evidence (measured; seed in brackets) |",
        "|---|---|---|---|",
    ]
    tables: list[str] = []
    for e in doc["claims"]:
        seeds = dict(e["seed_values"])
        plain, grouped = _split_evidence({k: v for k, v in e["evidence"].items() if k != "failure"})
        ev = []
        for name, value in plain.items():
            text = f"{name} {_fmt(value)}"
            if name in seeds:
                text += f" [seed {_fmt(seeds.pop(name))}]"
            ev.append(text.replace("|", "/").replace("\n", " "))
        if grouped:
            ev.append(f"metrics of {', '.join(grouped)} below")
            tables += ["", f"### {e['id']}: measured metrics", "", "| object | metric | measured | seed |",
                       "|---|---|---|---|"]
            for obj, metrics in grouped.items():
                for metric, value in metrics.items():
                    seed = seeds.pop(f"{obj}.{metric}", None)
                    tables.append(f"| {obj} | {metric} | {_fmt(value)} | {'' if seed is None else _fmt(seed)} |")
        ev += [f"{n} [seed {_fmt(v)}, not measured]" for n, v in seeds.items()]
        if e["checks"]:
            ev.append(f"{e['checks']} checks, {e['examples']} examples")
        status = e["status"] if e["status"] == e["expected"] or e["status"] == "unchecked" else f"**{e['status']}**"
        lines.append(f"| {e['id']} | {status} | {e['expected']} | {'; '.join(ev)} |")
    bad = misses(doc["claims"])
    lines += ["", f"{len(bad)} claim(s) missed their expected verdict." if bad else "Every checked claim has its expected verdict."]
    lines += tables
    lines += tightness_table(doc["claims"])
    for e in doc["claims"]:
        if e["counterexample"] is not None:
            lines += ["", f"## Counterexample: {e['id']}", "", "```", json.dumps(e["counterexample"], indent=1), "```"]
        if e["status"] == "failed" and "failure" in e["evidence"]:
            lines += ["", f"## Failure: {e['id']}", "", "```", str(e["evidence"]["failure"]), "```"]
    return "\n".join(lines) + "\n"


def tightness_table(entries: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: per checked claim, its largest observed error / tolerance (see
    `tolerance_tightness`); claims without tolerance-based checks are named at the end."""
    rows, others = [], []
    for e in entries:
        t = e.get("tolerance_tightness")
        if e["status"] == "unchecked":
            continue
        if t is None:
            others.append(e["id"])
        else:
            rows.append(f"| {e['id']} | {t['max_error_over_tolerance']:.3g} | {t['band']} | {t['metric']} | {t['ratios']} |")
    if not rows:
        return []
    out = ["", "## Tolerance tightness", "",
           f"Largest observed error / derived tolerance per claim (tight >= {TIGHT:g}, loose < {LOOSE:g}).", "",
           "| claim | max error / tolerance | band | metric | ratios recorded |", "|---|---|---|---|---|", *rows]
    if others:
        out += ["", "No tolerance-based check (bounds, orders or statistical tests): " + ", ".join(others) + "."]
    return out
