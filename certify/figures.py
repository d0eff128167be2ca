"""Figures of the report, drawn from data the certificates record with `record.figure`.

Each renderer takes the list of data dicts recorded under its name (one per
certificate that recorded it) and writes one PNG.  Families add renderers in
certify/figs_<family>.py with the same `@renderer(name)` decorator.
"""

from __future__ import annotations

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


def render_all(results: dict[str, Any], outdir: Path) -> list[Path]:
    _load_family_renderers()
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for res in results.values():
        for fig in res.figures:
            grouped[fig["name"]].append(fig["data"])
    written = []
    for name, datas in sorted(grouped.items()):
        if name not in RENDERERS:
            raise KeyError(f"figure data recorded for {name!r} but no renderer is registered")
        outdir.mkdir(parents=True, exist_ok=True)
        path = outdir / f"{name}.png"
        RENDERERS[name](datas, path)
        written.append(path)
    return written


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
