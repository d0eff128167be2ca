"""Figures of the EP estimator claims (ep.matches_implicit_gradient, aep.exact_gradient,
holo.exact_gradient, damping.stable_fixed_point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


@renderer("ep_error_vs_beta")
def _error_vs_beta(datas: list[dict[str, Any]], path: Path) -> None:
    """||g(beta) - g_IFT|| against beta (log-log) per estimator, one panel per recorded block, with
    slope-1 and slope-2 guides and the derived rounding floor."""
    datas = sorted(datas, key=lambda d: d["title"])
    fig, axes = plt.subplots(1, len(datas), figsize=(5.2 * len(datas), 4), squeeze=False)
    for ax, d in zip(axes[0], datas):
        b = np.asarray(d["beta"])
        for name, ys in d["series"].items():
            ax.loglog(b, np.maximum(np.asarray(ys, float), 1e-300), "o-", ms=3, label=name)
        ax.loglog(b, d["floor"], "k:", lw=1, label="derived rounding floor (symmetric)")
        ref = max(max(ys) for ys in d["series"].values())
        ax.loglog(b, ref * (b / b[0]), "--", color="gray", lw=0.8, label="slope 1")
        ax.loglog(b, ref * (b / b[0]) ** 2, "-.", color="gray", lw=0.8, label="slope 2")
        ax.set_xlabel("beta")
        ax.set_title(f"{d['title']} ({d['backend']})", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("||g(beta) - g_IFT||")
    fig.suptitle("EP estimator error against the nudging strength (003; Scellier-Bengio 2017, Laborieux 2021)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("aep_bias_vs_asymmetry")
def _bias(datas: list[dict[str, Any]], path: Path) -> None:
    """Uncorrected EP's distance to the IFT gradient against the drift's asymmetry alpha, and AEP's."""
    d = datas[0]
    a = np.asarray(d["alpha"])
    fig, ax = plt.subplots(figsize=(5.4, 4))
    ax.loglog(a, d["plain_ep_error"], "o-", label="uncorrected EP (symmetric, small beta)")
    ax.loglog(a, np.maximum(np.asarray(d["aep_error"], float), 1e-300), "s-", label="AEP (same beta)")
    ax.loglog(a, d["plain_ep_error"][0] * a / a[0], "--", color="gray", lw=0.8, label="slope 1")
    ax.set_xlabel("asymmetry alpha (F = -dE/dz + alpha z Omega)")
    ax.set_ylabel("||g - g_IFT||")
    ax.set_title(f"Plain EP's bias grows with the asymmetry; AEP removes it ({d['backend']})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("holo_error_vs_N")
def _holo(datas: list[dict[str, Any]], path: Path) -> None:
    """Holomorphic EP's error against the number N of points on the circle (semilog), per block."""
    fig, ax = plt.subplots(figsize=(5.8, 4))
    for d in sorted(datas, key=lambda d: d["title"]):
        N = np.asarray(d["N"])
        line = ax.semilogy(N, np.maximum(np.asarray(d["error"], float), 1e-300), "o-", ms=3,
                           label=f"{d['title']} (fit q = {d['q']:.3g})")
        ax.semilogy(N, d["floor"], ":", color=line[0].get_color(), lw=1)
    ax.set_xlabel("N (points r e^{2 pi i k/N})")
    ax.set_ylabel("||g_holo - g_IFT||  (dotted: derived floor)")
    ax.set_title("Holomorphic EP: geometric decay in N (Laborieux-Zenke 2022)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("damping_abscissa")
def _damping(datas: list[dict[str, Any]], path: Path) -> None:
    """Spectral abscissa of the damped force's Jacobian at its fixed point against the value scale,
    stable (< 0) and unstable draws, with the log-norm bound -s (c - mu_2(J_attn))."""
    d = datas[0]
    fig, ax = plt.subplots(figsize=(5.8, 4))
    v = np.asarray(d["v_scale"])
    a = np.asarray(d["abscissa_over_s"])
    ax.scatter(v[a < 0], a[a < 0], s=10, label="stable fixed point")
    ax.scatter(v[a >= 0], a[a >= 0], s=14, color="C3", label="unstable fixed point (counterexample)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("value scale of W_V")
    ax.set_ylabel("spectral abscissa / s")
    ax.set_title(f"Damped attention s (attn(z) - c z) + x, c >= 1 ({d['backend']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
