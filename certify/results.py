"""Per-claim results folded from test reports, and the status rules of DESIGN.md contract 3."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from certify import registry

_FOLD = {
    "set": lambda a, b: b,
    "max": max,
    "min": min,
    "sum": lambda a, b: a + b,
}


def fold_ops(old: tuple[str, Any], new: tuple[str, Any]) -> tuple[str, Any]:
    """Combine two recordings of one evidence name; mixing operations is a bug."""
    (op_a, a), (op_b, b) = old, new
    if op_a != op_b:
        raise ValueError(f"evidence recorded with both {op_a!r} and {op_b!r}")
    if op_a != "set" and (isinstance(a, str) or isinstance(b, str)):
        raise ValueError(f"evidence op {op_a!r} needs numbers, got {a!r}, {b!r}")
    return op_a, _FOLD[op_a](a, b)


@dataclass
class ClaimResult:
    id: str
    passed: set[str] = field(default_factory=set)
    failures: list[dict[str, str]] = field(default_factory=list)
    skips: dict[str, str] = field(default_factory=dict)
    ops: dict[str, tuple[str, Any]] = field(default_factory=dict)
    examples: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def checks(self) -> int:
        """Certificates that ran to a verdict (passed or failed)."""
        return len(self.passed | {f["nodeid"] for f in self.failures})

    def absorb(self, payload: dict[str, Any]) -> None:
        for name, (op, value) in payload["ops"].items():
            self.ops[name] = fold_ops(self.ops[name], (op, value)) if name in self.ops else (op, value)
        self.examples += int(payload["examples"])
        self.verdicts.extend(payload["verdicts"])
        self.figures.extend(payload["figures"])

    def fail(self, nodeid: str, when: str, text: str) -> None:
        self.failures.append({"nodeid": nodeid, "when": when, "message": text})

    def skip(self, nodeid: str, reason: str) -> None:
        self.skips[nodeid] = reason

    @property
    def evidence(self) -> dict[str, Any]:
        return {name: value for name, (_, value) in sorted(self.ops.items())}

    def status(self) -> tuple[str, str]:
        """(status, reason) by contract 3: a failure beats every other verdict."""
        if self.failures:
            first = self.failures[0]
            return "failed", f"{len(self.failures)} check(s) failed, first {first['nodeid']} ({first['when']})"
        if not self.passed:
            if self.skips:
                reasons = sorted(set(self.skips.values()))
                return "unchecked", "; ".join(reasons)
            return "unchecked", "no certificate ran"
        for status in ("disproved", "conditional", "open"):
            hits = [v for v in self.verdicts if v["status"] == status]
            if hits:
                return status, hits[0]["reason"]
        return "verified", ""

    def counterexample(self) -> Any:
        for v in self.verdicts:
            if v.get("counterexample") is not None:
                return v["counterexample"]
        for f in self.failures:
            found = falsifying_example(f["message"])
            if found:
                return {"test": f["nodeid"], "falsifying_example": found}
        return None


def falsifying_example(text: str) -> str | None:
    """The (shrunk or explicit) example hypothesis printed for a failed property, if any."""
    lines = [re.sub(r"^E {0,3}", "", ln) for ln in text.splitlines()]
    text = "\n".join(lines)
    m = re.search(r"(?:Falsifying(?: explicit)? example|Failing explicit example): (.*?)"
                  r"(?:\n\s*\n|\nYou can reproduce|\nExplanation:|\Z)", text, re.S)
    return m.group(1).strip() if m else None


def unchecked_reason(cid: str, selected: bool) -> str:
    claim = registry.CLAIMS[cid]
    if not selected:
        return "not selected (--only)"
    if claim.issue > 2:
        return f"no certificate implemented yet (issue #{claim.issue})"
    return "no certificate ran"
