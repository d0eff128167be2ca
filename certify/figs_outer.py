"""Figures of the outer-dynamics family (decoder.*, finite_task.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np

from certify.figures import plt, renderer


@renderer("decoder_trajectory")
def _decoder_trajectory(datas: list[dict[str, Any]], path: Path) -> None:
    """||P_s - P*||_F / ||P*||_F over outer time s: the SUT's iterates (markers) and the
    predicted curve ||(P_0 - P*)(I - eta C)^s|| / ||P*|| (lines), one panel per run."""
    datas = sorted(datas, key=lambda d: (d.get("kind", ""), d["name"]))
    fig, axes = plt.subplots(1, len(datas), figsize=(4.3 * len(datas), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datas):
        s = np.asarray(d["steps"])
        sut = np.maximum(np.asarray(d["rel_sut"], float), 1e-300)
        pred = np.maximum(np.asarray(d["rel_pred"], float), 1e-300)
        if d.get("kind") == "online":
            ax.semilogy(s, pred, "k-", lw=1.2, label="population trainer (predicted)")
            ax.semilogy(s, sut, "o", ms=3, color="C1", label="online SGD iterate")
        else:
            ax.semilogy(s, pred, "k-", lw=1.2, label="(P_0 - P*)(I - eta C)^s (arb)")
            ax.semilogy(s, sut, "o", ms=3, color="C0", label="trainer's P_s")
            if d.get("null_floor", 0) > 0:
                ax.axhline(d["null_floor"], color="C3", ls=":", lw=1,
                           label="null(C) part of P_0 - P* (never decays)")
        title = d["name"]
        if "rank" in d:
            title += f" (rank C = {d['rank']}/{d['K']})"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("outer step s")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("||P_s - P*||_F / ||P*||_F")
    fig.suptitle("Decoder preconditioner trajectory vs the population oracle P* = B C^+ (002 sec 3.1, 12.1)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("decoder_online_risk")
def _decoder_online_risk(datas: list[dict[str, Any]], path: Path) -> None:
    """Observed online risk (held-out prompts) against the population curve, and their
    relative discrepancy (002 sec 12.2 left panel, 12.5)."""
    d = datas[0]
    s = np.asarray(d["steps"])
    obs, pred = np.asarray(d["observed"]), np.asarray(d["predicted"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    ax.semilogy(s, pred, "k-", lw=1.2, label="predicted (population moments)")
    ax.semilogy(s, obs, "o", ms=3, color="C1", label="observed (online SGD, held-out)")
    ax.axhline(d["oracle_risk"], color="gray", ls=":", label="oracle floor R(P*)")
    ax.set_xlabel("outer step s")
    ax.set_ylabel("decoder risk R_1(P_s)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(d["name"], fontsize=8)
    ax2.plot(s, (obs - pred) / pred, "o-", ms=3, color="C1")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlabel("outer step s")
    ax2.set_ylabel("(observed - predicted) / predicted")
    ax2.grid(alpha=0.3)
    fig.suptitle("Online decoder training against the population curve (002 sec 11, 12.5)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("finite_task_rate")
def _finite_task_rate(datas: list[dict[str, Any]], path: Path) -> None:
    """Mean excess risk of the N-task fit against N (log-log) with the fitted line, the exact
    expectation sigma^2 r/(N - r - 1) and the seed's asymptote (sigma_task^2/K) d_eff/N."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for i, d in enumerate(sorted(datas, key=lambda d: d["name"])):
        N = np.asarray(d["N"], float)
        m, se = np.asarray(d["mean"]), np.asarray(d["se"])
        col = f"C{i}"
        ax.errorbar(N, m, yerr=se, fmt="o", color=col, ms=4, capsize=2,
                    label=f"{d['name']}: mean excess (rank {d['rank']}, K={d['K']})")
        ax.loglog(N, np.exp(d["intercept"]) * N ** d["slope"], "-", color=col, lw=1,
                  label=f"fit slope {d['slope']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]")
        ax.loglog(N, d["exact"], ":", color="k", lw=1)
        ax.loglog(N, d["asymptote"], "--", color=col, lw=0.8, alpha=0.7)
    ax.plot([], [], "k:", label="exact sigma^2 r / (N - r - 1)")
    ax.plot([], [], "--", color="gray", label="(sigma_task^2/K) d_eff / N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if datas:
        ticks = sorted({float(n) for d in datas for n in d["N"]})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{int(t)}" for t in ticks], fontsize=7)
    ax.set_xlabel("number of tasks N")
    ax.set_ylabel("E[R(P_N) - R(P*)]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.set_title("Finite-task generalization rate (002 sec 3.2)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("decoder_mode_weights")
def _decoder_mode_weights(datas: list[dict[str, Any]], path: Path) -> None:
    """Where the remaining preconditioner error lies: w_{s,i} = lambda_i ||(P_s - P*) q_i||^2,
    normalized over the eigenmodes q_i of C, and its normalized entropy H(Omega_s) (002 sec 9)."""
    datas = sorted(datas, key=lambda d: d["name"])
    fig, axes = plt.subplots(1, len(datas), figsize=(4.6 * len(datas), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datas):
        s = np.asarray(d["steps"])
        w = np.asarray(d["weights"], float)
        lam = np.asarray(d["eigenvalues"], float)
        colors = plt.cm.viridis(np.linspace(0, 1, w.shape[1]))
        ax.stackplot(s, w.T, colors=colors, alpha=0.85)
        ax.plot(s, d["entropy"], "k--", lw=1.2, label="normalized entropy H(Omega_s)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{d['name']}: lambda from {lam.min():.2g} (dark) to {lam.max():.2g} (light)", fontsize=8)
        ax.set_xlabel("outer step s")
        ax.legend(fontsize=6, loc="upper right")
    axes[0][0].set_ylabel("mode weight w_{s,i}")
    fig.suptitle("Spectral overlap weights of P_s - P* over outer time (002 sec 3.1, 9; Fig 3)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
