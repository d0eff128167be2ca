"""Figures of the GP/KRR and PDE families (000 Figs 1-3; 001 Fig 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer

CLASS_ORDER = ("free_linear", "diagonal", "flexformer", "softmax")


def _by_size(datas: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for d in datas:
        out.setdefault(d["size"], {})[d["cls"]] = d
    return dict(sorted(out.items()))


def _comparison(datas: list[dict[str, Any]], path: Path, *, risk: str, risk_label: str, eb: str,
                size_symbol: str, title: str, floor: str | None = None) -> None:
    """Left: risk per class and prompt size (bars) with the clipped EB upper bound (markers);
    right: median ||e_l|| against the median rigorous rho^l ||e_0|| per class, one line style
    per prompt size."""
    sizes = _by_size(datas)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(sizes), 1)
    x = np.arange(len(CLASS_ORDER))
    for k, (size, rows) in enumerate(sizes.items()):
        vals = [rows[c][risk] if c in rows else np.nan for c in CLASS_ORDER]
        ebs = [rows[c][eb] if c in rows else np.nan for c in CLASS_ORDER]
        off = x - 0.4 + width * (k + 0.5)
        ax.bar(off, vals, width, label=f"{risk_label}, {size_symbol} = {size}", color=f"C{k}")
        ax.plot(off, ebs, "v", color=f"C{k}", mec="k", label=f"clipped EB upper, {size_symbol} = {size}")
        if floor is not None:
            fl = next(iter(rows.values()))[floor]
            ax.axhline(fl, color=f"C{k}", ls=":", lw=1, label=f"encoded-solve floor, {size_symbol} = {size}")
        for c, v, rows_c in zip(off, vals, CLASS_ORDER):
            if rows_c in rows:
                viol = rows[rows_c]["rigorous_violation_rate"]
                ax.annotate(f"viol {viol:g}", (c, v), textcoords="offset points", xytext=(0, 3), ha="center",
                            fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(x, CLASS_ORDER, fontsize=8)
    ax.set_ylabel("held-out value (512 tasks)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, axis="y", which="both")
    styles = ("-", "--", ":", "-.")
    for k, (size, rows) in enumerate(sizes.items()):
        for j, c in enumerate(CLASS_ORDER):
            if c not in rows:
                continue
            d = rows[c]
            ls = list(range(len(d["median_error"])))
            ax2.semilogy(ls, d["median_error"], styles[k % 4], marker="o", ms=3, color=f"C{j}",
                         label=f"{c} ||e_l||, {size_symbol}={size}")
            ax2.semilogy(ls, d["median_bound"], styles[k % 4], color=f"C{j}", lw=0.8, alpha=0.5)
    ax2.set_xlabel("Richardson step l")
    ax2.set_ylabel("median error norm (thin: rigorous rho^l ||e_0||)")
    ax2.legend(fontsize=5, ncol=2)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("gp_method_comparison")
def _gp(datas: list[dict[str, Any]], path: Path) -> None:
    _comparison(datas, path, risk="risk", risk_label="risk K^-1 E||z_L - z_post||^2", eb="eb_upper",
                size_symbol="n", title="GP/KRR posterior-latent solve by preconditioner class (000 sec 4, Fig 1)")


@renderer("pde_method_comparison")
def _pde(datas: list[dict[str, Any]], path: Path) -> None:
    _comparison(datas, path, risk="e2e_mse", risk_label="end-to-end query MSE", eb="e2e_eb_upper",
                size_symbol="M", floor="floor_mse",
                title="PDE encoder-decoder query solve by preconditioner class (000 Fig 2; 001 Table 5)")


@renderer("sweep_scaling")
def _sweep(datas: list[dict[str, Any]], path: Path) -> None:
    """Held-out risk against depth L per class, one panel per (family, prompt size); the title
    of each panel gives the rows certified and the largest rigorous violation rate."""
    panels: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for d in datas:
        panels.setdefault((d["family"], d["size"]), []).append(d)
    keys = sorted(panels)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = panels[key]
        for j, c in enumerate(CLASS_ORDER):
            pts = sorted((d["L"], d["risk"]) for d in rows if d["cls"] == c)
            if pts:
                ax.semilogy([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{j}", ms=4, label=c)
        viol = max(d["violation_rate"] for d in rows)
        depths = rows[0]["depths"]
        ax.set_xlim(min(depths) - 0.5, max(depths) + 0.5)
        ax.set_xticks(depths)
        ax.set_title(f"{key[0]} {rows[0]['label']}: {len(rows)} rows, max violation {viol:g}", fontsize=8)
        ax.set_xlabel("depth L")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("held-out risk")
    axes[0][0].legend(fontsize=6)
    n = len(datas)
    fig.suptitle(f"Certified K = 4 scaling sweep (000 sec 6, Fig 3): {n} of 96 rows "
                 f"({'all' if n == 96 else 'ci tier; --slow runs the rest'})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
