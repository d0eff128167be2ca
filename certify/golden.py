"""Golden files: pinned metrics, one JSON file per claim family.

Layout of golden/<family>.json (parsed as plain JSON, nothing else)::

    {"family": "richardson", "schema": 1,
     "backends": {"cpu-float64": {"<metric>": {"value": v, "rtol": r, "atol": a,
                                               "seed": s_or_null, "provenance": {...}}}}}

A measured value m passes when |m - v| <= atol + rtol |v|.  Regeneration is
deliberate (--update-golden) and refused in CI and under xdist with more than one
worker, so a drifting number can never be re-pinned by accident.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def update_refusal(workers: int) -> str | None:
    """Why --update-golden may not run here, or None: never in CI, never with xdist workers."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "--update-golden is refused in CI: golden values are pinned deliberately"
    if workers > 1:
        return "--update-golden is refused under -n > 1: run it in one process"
    return None


class GoldenError(ValueError):
    """A golden file that cannot be used: malformed, or of the wrong shape."""


class GoldenDrift(AssertionError):
    """Measured metrics outside their pinned band."""


class GoldenUnpinned(LookupError):
    """No golden values exist for this backend: the comparison cannot run."""


@dataclass
class Metric:
    value: float
    rtol: float
    atol: float
    seed: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def admits(self, measured: float) -> bool:
        if math.isnan(measured) or math.isnan(self.value):
            return False
        if math.isinf(self.value) or math.isinf(measured):
            return measured == self.value
        return abs(measured - self.value) <= self.atol + self.rtol * abs(self.value)

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "rtol": self.rtol,
            "atol": self.atol,
            "seed": self.seed,
            "provenance": self.provenance,
        }


def _number(path: Path, where: str, x: Any, allow_none: bool = False) -> float | None:
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise GoldenError(f"{path}: {where} must be a number, got {x!r}")
    return float(x)


def load_file(path: Path) -> dict[str, dict[str, Metric]]:
    """backend -> metric -> Metric, validating every field; errors name the file."""
    return load_document(path)[0]


def load_document(path: Path) -> tuple[dict[str, dict[str, Metric]], dict[str, str | float]]:
    """(backend -> metric -> Metric, setup) of a golden file, validating every field.

    `setup` (optional, top level) states the configuration the metrics were pinned for
    (feature map, prior, sizes, ...): names to strings or numbers."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise GoldenError(f"{path}: not UTF-8 text ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("backends"), dict):
        raise GoldenError(f"{path}: expected an object with a 'backends' object")
    if raw.get("schema") != SCHEMA:
        raise GoldenError(f"{path}: schema {raw.get('schema')!r}, this suite reads schema {SCHEMA}")
    setup = raw.get("setup", {})
    if not isinstance(setup, dict) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in setup.values()):
        raise GoldenError(f"{path}: 'setup' must be an object of strings and numbers")
    out: dict[str, dict[str, Metric]] = {}
    for backend, metrics in raw["backends"].items():
        if not isinstance(metrics, dict):
            raise GoldenError(f"{path}: backends[{backend!r}] must be an object")
        table: dict[str, Metric] = {}
        for name, m in metrics.items():
            where = f"backends[{backend!r}][{name!r}]"
            if not isinstance(m, dict) or "value" not in m:
                raise GoldenError(f"{path}: {where} must be an object with a 'value'")
            prov = m.get("provenance", {})
            if not isinstance(prov, dict):
                raise GoldenError(f"{path}: {where}.provenance must be an object")
            rtol = _number(path, where + ".rtol", m.get("rtol"))
            atol = _number(path, where + ".atol", m.get("atol"))
            if rtol < 0 or atol < 0:
                raise GoldenError(f"{path}: {where} has a negative tolerance")
            table[name] = Metric(
                value=_number(path, where + ".value", m["value"]),
                rtol=rtol,
                atol=atol,
                seed=_number(path, where + ".seed", m.get("seed"), allow_none=True),
                provenance=prov,
            )
        out[backend] = table
    return out, dict(setup)


def format_drift(family: str, backend: str, rows: list[tuple[str, Metric, float]]) -> str:
    """A readable table of the metrics that left their band."""
    lines = [
        f"golden drift in golden/{family}.json [{backend}]:",
        f"  {'metric':<44} {'golden':>14} {'measured':>14} {'rel diff':>10} {'band':>10}",
    ]
    for name, m, measured in rows:
        rel = abs(measured - m.value) / abs(m.value) if m.value else math.inf
        band = m.atol + m.rtol * abs(m.value)
        lines.append(
            f"  {name:<44} {m.value:>14.7g} {measured:>14.7g} {rel:>10.2e} {band:>10.2e}"
        )
    lines.append("  (re-pin only deliberately: python -m certify --update-golden, with the reason)")
    return "\n".join(lines)


class GoldenStore:
    """Reads golden/<family>.json lazily and compares, or collects values to pin."""

    def __init__(self, directory: Path, backend: str, update: bool = False):
        self.directory = Path(directory)
        self.backend = backend
        self.update = update
        self._cache: dict[str, tuple[dict[str, dict[str, Metric]], dict[str, str | float]]] = {}
        self.pending: dict[str, dict[str, Metric]] = {}
        self.pending_setup: dict[str, dict[str, str | float]] = {}

    def path(self, family: str) -> Path:
        return self.directory / f"{family}.json"

    def _document(self, family: str) -> tuple[dict[str, dict[str, Metric]], dict[str, str | float]]:
        if family not in self._cache:
            p = self.path(family)
            self._cache[family] = load_document(p) if p.exists() else ({}, {})
        return self._cache[family]

    def table(self, family: str) -> dict[str, dict[str, Metric]]:
        return self._document(family)[0]

    def setup(self, family: str) -> dict[str, str | float]:
        return self._document(family)[1]

    def check(
        self,
        family: str,
        measured: dict[str, float],
        rtol: float,
        atol: float = 0.0,
        seeds: dict[str, float] | None = None,
        provenance: dict[str, Any] | None = None,
        setup: dict[str, str | float] | None = None,
    ) -> None:
        """Compare metrics with the pinned ones; raise GoldenDrift with a diff table.

        `setup` names the configuration the metrics belong to; it must equal what the file
        states (a changed feature map or prior is a drift of its own, reported as such).
        In update mode the values (and the setup) are queued for `write_pending` instead.
        """
        seeds = seeds or {}
        setup = dict(setup or {})
        if self.update:
            slot = self.pending.setdefault(family, {})
            for name, v in measured.items():
                slot[name] = Metric(float(v), rtol, atol, seeds.get(name), dict(provenance or {}))
            self.pending_setup.setdefault(family, {}).update(setup)
            return
        pinned = self.table(family).get(self.backend)
        if pinned is None:
            raise GoldenUnpinned(
                f"golden/{family}.json pins no metrics for backend {self.backend}"
            )
        stated = self.setup(family)
        differ = {k: (stated.get(k, "<not stated>"), v) for k, v in setup.items() if stated.get(k) != v}
        if differ:
            rows = "\n".join(f"  {k}: golden {a!r}, this run {b!r}" for k, (a, b) in sorted(differ.items()))
            raise GoldenDrift(f"golden/{family}.json was pinned for another setup:\n{rows}\n"
                              "  (re-pin only deliberately: python -m certify --update-golden, with the reason)")
        missing = [n for n in measured if n not in pinned]
        if missing:
            raise GoldenDrift(
                f"golden/{family}.json [{self.backend}] has no value for {', '.join(missing)}; "
                "pin them deliberately with python -m certify --update-golden"
            )
        drift = [(n, pinned[n], float(v)) for n, v in measured.items() if not pinned[n].admits(float(v))]
        if drift:
            raise GoldenDrift(format_drift(family, self.backend, drift))

    def write_pending(self) -> list[Path]:
        """Merge queued metrics into their files (other backends' entries are kept)."""
        written = []
        for family, metrics in self.pending.items():
            p = self.path(family)
            backends = {b: {n: m.as_json() for n, m in t.items()} for b, t in self.table(family).items()}
            slot = backends.setdefault(self.backend, {})
            slot.update({n: m.as_json() for n, m in metrics.items()})
            setup = {**self.setup(family), **self.pending_setup.get(family, {})}
            doc: dict[str, Any] = {"family": family, "schema": SCHEMA}
            if setup:
                doc["setup"] = dict(sorted(setup.items()))
            doc["backends"] = {b: dict(sorted(t.items())) for b, t in sorted(backends.items())}
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
            written.append(p)
        self.pending.clear()
        self.pending_setup.clear()
        self._cache.clear()
        return written
