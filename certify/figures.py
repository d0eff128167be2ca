"""Figures of the report, drawn from data the certificates record with `record.figure`.

Each renderer takes the list of data dicts recorded under its name (one per
certificate that recorded it) and writes one PNG.  Families add renderers in
certify/figs_<family>.py with the same `@renderer(name)` decorator.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RENDERERS: dict[str, Callable[[list[dict[str, Any]], Path], None]] = {}


def renderer(name: str):
    def wrap(fn):
        RENDERERS[name] = fn
        return fn

    return wrap


def _load_family_renderers() -> None:
    """Renderers of later families live in certify/figs_<family>.py; importing registers them."""
    import importlib
    import pkgutil

    import certify

    for mod in pkgutil.iter_modules(certify.__path__):
        if mod.name.startswith("figs_"):
            importlib.import_module(f"certify.{mod.name}")


def _render_one(name: str, datas: list[dict[str, Any]], path: Path) -> Path:
    _load_family_renderers()
    if name not in RENDERERS:
        raise KeyError(f"figure data recorded for {name!r} but no renderer is registered")
    RENDERERS[name](datas, path)
    return path


def render_all(results: dict[str, Any], outdir: Path, workers: int | None = None) -> list[Path]:
    """Write one PNG per recorded figure name.  The report's ~35 figures take ~18 s serially at
    the end of a run, when the xdist workers are idle, so they are drawn by `workers` child
    processes (env CERTIFY_FIGURE_WORKERS, default the cores), each a fresh `python -m
    certify.figures` over its share of the jobs, handed over as JSON (the recorded data are plain
    numbers, lists and strings)."""
    _load_family_renderers()
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for res in results.values():
        for fig in res.figures:
            grouped[fig["name"]].append(fig["data"])
    for name in grouped:
        if name not in RENDERERS:
            raise KeyError(f"figure data recorded for {name!r} but no renderer is registered")
    if not grouped:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, datas, outdir / f"{name}.png") for name, datas in sorted(grouped.items())]
    n = workers if workers is not None else int(os.environ.get("CERTIFY_FIGURE_WORKERS", os.cpu_count() or 1))
    if n <= 1 or len(jobs) < 2:
        return [_render_one(*job) for job in jobs]
    import json
    import subprocess
    import sys
    import tempfile

    n = min(n, len(jobs))
    with tempfile.TemporaryDirectory(prefix="certify-figures-") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps([[name, datas, str(path)] for name, datas, path in jobs], default=_plain))
        procs = [subprocess.Popen([sys.executable, "-m", "certify.figures", str(spec), str(k), str(n)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(n)]
        outs = [(p, p.communicate()[0]) for p in procs]
    bad = [out for p, out in outs if p.returncode != 0]
    if bad:
        raise RuntimeError("figure rendering failed:\n" + bad[0][-3000:])
    return [path for _, _, path in jobs]


def _plain(x: Any) -> Any:
    """numpy scalars and arrays as JSON (NaN and inf survive: json writes and reads them back)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"figure data of type {type(x).__name__} is not JSON")


def _main(argv: list[str]) -> int:
    """python -m certify.figures JOBS.json K N: render every N-th job from the K-th."""
    import json

    from certify import figures  # the registry the figs_* modules fill (not this __main__ copy)

    spec, k, n = argv
    for name, datas, path in json.loads(Path(spec).read_text())[int(k)::int(n)]:
        figures._render_one(name, datas, Path(path))
    return 0


@renderer("richardson_error_vs_bound")
def _richardson(datas: list[dict[str, Any]], path: Path) -> None:
    """||e_l|| against the certified rho^l ||e_0|| over l, one panel per preconditioner class."""
    datas = sorted(datas, key=lambda d: d["cls"])
    fig, axes = plt.subplots(1, len(datas), figsize=(4 * len(datas), 3.4), squeeze=False)
    for ax, d in zip(axes[0], datas):
        ls = list(range(len(d["median_error"])))
        ax.semilogy(ls, d["median_error"], "o-", label="median ||e_l|| (SUT)")
        ax.fill_between(ls, d["q10_error"], d["q90_error"], alpha=0.25, label="10-90% of tasks")
        ax.semilogy(ls, d["median_bound"], "k--", label="median rho^l ||e_0|| (rigorous rho)")
        ax.set_title(f"{d['cls']} (K={d['K']}, {d['n']} held-out tasks)", fontsize=9)
        ax.set_xlabel("Richardson step l")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("error norm")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Richardson error against the norm bound (000 eq 4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("eb_coverage")
def _eb_coverage(datas: list[dict[str, Any]], path: Path) -> None:
    """Observed P(true clipped risk > EB bound) against delta, per loss law."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    deltas_all: list[float] = []
    for d in sorted(datas, key=lambda d: d["law"]):
        pts = sorted(zip(d["delta"], d["failure_rate"], d["upper_limit"]))
        deltas = [p[0] for p in pts]
        deltas_all += deltas
        rate = [max(p[1], 1e-6) for p in pts]
        line = ax.loglog(deltas, rate, "o-", label=f"{d['law']} (n={d['n']}, {d['trials']} trials)")
        ax.loglog(deltas, [p[2] for p in pts], ":", color=line[0].get_color(), lw=1)
    if deltas_all:
        lo, hi = min(deltas_all), max(deltas_all)
        ax.loglog([lo, hi], [lo, hi], "k--", label="delta (allowed)")
    ax.set_xlabel("delta")
    ax.set_ylabel("observed failure rate (floored at 1e-6)")
    ax.set_title("Empirical-Bernstein coverage; dotted: 1e-6 test limit", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
