"""Longest-first test order for the report's xdist runs, from the previous run's durations.

xdist hands out work (whole xdist groups under --dist loadgroup) in collection order, so a long
certificate collected last keeps one worker busy after the other has gone idle.  Ordering the
scopes longest first (the classic LPT heuristic) fixes most of that.  The durations of the last
report run on a backend are kept in <CERTIFY_CACHE>/durations/<backend>.json (plain JSON);
tests it has not seen go first (they may be long).  Only the order changes, never a test: every
certificate is independent of the order (derandomized hypothesis, pure caches), and all workers
read the same file, so they collect the same order as xdist requires.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def path(backend_name: str) -> Path:
    from certify.sut import cache_dir

    return cache_dir() / "durations" / f"{backend_name}.json"


def load(backend_name: str) -> dict[str, float]:
    p = path(backend_name)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"durations file {p} is not valid JSON ({exc}); delete it") from exc
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise ValueError(f"durations file {p} is not a JSON object of seconds; delete it")
    return {str(k): float(v) for k, v in data.items()}


def save(backend_name: str, seconds: dict[str, float]) -> None:
    """Merge this run's per-test seconds into the file (atomically)."""
    if not seconds:
        return
    merged = {**load(backend_name), **{k: round(v, 3) for k, v in seconds.items()}}
    p = path(backend_name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(p)


def scope_of(item: Any) -> str:
    """The unit xdist's loadgroup hands out: the xdist_group, else the test itself."""
    m = item.get_closest_marker("xdist_group")
    if m is not None:
        return "group:" + str(m.args[0] if m.args else m.kwargs.get("name"))
    return item.nodeid


def longest_first(items: list[Any], seconds: dict[str, float]) -> list[Any]:
    """Items reordered by their scope's total seconds, descending (unknown scopes first), items of
    one scope together in their collected order; ties keep the collected order."""
    if not seconds:
        return list(items)
    total: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, it in enumerate(items):
        s = scope_of(it)
        first.setdefault(s, i)
        t = seconds.get(it.nodeid)
        total[s] = total.get(s, 0.0) + (float("inf") if t is None else t)
    order = {s: rank for rank, s in enumerate(sorted(total, key=lambda s: (-total[s], first[s])))}
    return sorted(items, key=lambda it: (order[scope_of(it)], first[scope_of(it)]))
