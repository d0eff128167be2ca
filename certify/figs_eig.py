"""Figures of the eigen-utility claim eig.power_iteration_artifact (seed 003, 2026-07-03)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


@renderer("eig_power_iteration")
def _power_iteration(datas: list[dict[str, Any]], path: Path) -> None:
    """Left: Rayleigh-quotient trajectories of plain power iteration, shifted power iteration (both
    shift rules) and Lanczos' extreme Ritz values against lambda_max and lambda_min; right: the
    residual ||A v - theta v|| of the power iterates (the rigorous error bar of each estimate)."""
    d = max(datas, key=lambda x: x["dtype"])  # float64 when both were recorded
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.axhline(d["lambda_max"], color="k", ls="--", lw=1, label=f"lambda_max = {d['lambda_max']:.4g}")
    ax.axhline(d["lambda_min"], color="gray", ls=":", lw=1, label=f"lambda_min = {d['lambda_min']:.4g}")
    ax.plot(d["plain"], "-", color="C3", label="plain power iteration (-> largest-|lambda| end)")
    ax.plot(d["shifted"], "-", color="C0", label=f"shifted, Gershgorin shift {d['shift']:.3g}")
    ax.plot(d["shifted_power"], "-", color="C2", label=f"shifted, shift |theta_plain| + r = {d['power_shift']:.3g}")
    lz = np.asarray(d["lanczos"])
    ks = np.arange(1, len(lz) + 1)
    ax.plot(ks, lz[:, 1], "o-", ms=3, color="C1", label="Lanczos theta_max(T_k)")
    ax.plot(ks, lz[:, 0], "s-", ms=3, color="C1", alpha=0.5, label="Lanczos theta_min(T_k)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration / Krylov dimension k")
    ax.set_ylabel("estimate")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    ax.set_title(f"{d['name']} ({d['dtype']}): plain PI converges to lambda_min", fontsize=8)
    for key, color, label in (("plain_res", "C3", "plain"), ("shifted_res", "C0", "shifted (Gershgorin)"),
                              ("shifted_power_res", "C2", "shifted (|theta| + r)")):
        r = np.maximum(np.asarray(d[key], dtype=float), 1e-300)
        ax2.semilogy(r, "-", color=color, label=label)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("||A v - theta v|| (computed)")
    ax2.legend(fontsize=6)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle("Power iteration on an indefinite symmetric matrix (003, 2026-07-03)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
