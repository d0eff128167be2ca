"""Figures of the encoder + decoder family (002 sec 12.4, 12.7, 12.8; 001 Figs 3-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


@renderer("encdec_risk_decomposition")
def _risk(datas: list[dict[str, Any]], path: Path) -> None:
    """R_e2e, R_floor, R_dec and |cross| over the outer time s, one panel per run."""
    datas = sorted(datas, key=lambda d: d["run"])
    fig, axes = plt.subplots(1, len(datas), figsize=(4.6 * len(datas), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datas):
        s = d["s"]
        ax.semilogy(s, d["e2e"], "k-", lw=2, label="R_e2e (held-out)")
        ax.semilogy(s, d["floor"], "-", color="0.55", lw=2, label="R_floor (encoder)")
        ax.semilogy(s, d["dec"], "g-", label="R_dec (decoder)")
        ax.semilogy(s, np.maximum(np.abs(d["cross"]), 1e-300), "m--", label="|cross term|")
        resid = np.abs(np.array(d["e2e"]) - np.array(d["floor"]) - np.array(d["dec"]) - np.array(d["cross"]))
        ax.semilogy(s, np.maximum(resid, 1e-20), "r:", lw=1,
                    label="|R_e2e - floor - dec - cross| (float; 0 shown at 1e-20)")
        ax.set_title(f"{d['run']} enc+dec, 512 held-out prompts", fontsize=9)
        ax.set_xlabel("outer step s")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("risk (Sigma_x norm)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Risk decomposition R_e2e = R_floor + R_dec + cross (002 sec 6.3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("oracle_tracking")
def _tracking(datas: list[dict[str, Any]], path: Path) -> None:
    """||P_z,s - P*(U_s)|| / ||P*(U_s)||, oracle drift and the encoder's sin^2 over s."""
    datas = sorted(datas, key=lambda d: d["run"])
    fig, axes = plt.subplots(1, len(datas), figsize=(4.6 * len(datas), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datas):
        s = np.arange(len(d["tracking_rel"]))
        ax.semilogy(s, d["tracking_rel"], "b-", label="||P_z,s - P*(U_s)||_F / ||P*(U_s)||_F")
        ax.semilogy(s[:-1], np.maximum(d["drift"], 1e-18), "r-", lw=1, label="oracle drift ||D_s||_F")
        if max(d["sin2"]) > 0:  # the commuting runs' gain encoder spans U_* exactly (sin^2 = 0)
            ax.semilogy(s, np.maximum(d["sin2"], 1e-18), "k--", lw=1, label="sin^2(U_s, U_*)")
        ax.set_title(f"{d['run']}", fontsize=9)
        ax.set_xlabel("outer step s")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    fig.suptitle("Latent decoder tracking its moving oracle P_z*(U_s) = B_s C_s^+ (002 sec 6.2)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("commuting_ladder")
def _ladder(datas: list[dict[str, Any]], path: Path) -> None:
    """Commuting closure: trainer vs closed form for R_dec(s, 6), the p_i(s) and g_i(s)."""
    datas = sorted(datas, key=lambda d: d["run"])
    fig, axes = plt.subplots(2, len(datas), figsize=(4.8 * len(datas), 6.4), squeeze=False)
    for j, d in enumerate(datas):
        ax = axes[0][j]
        ax.semilogy(d["s"], np.maximum(d["R_sut"], 1e-300), "k-", lw=2, label="trainer R_dec(s, 6)")
        ax.semilogy(d["s"], np.maximum(d["R_cf"], 1e-300), "y--", label="sum_i w_i (1 - p_i a_i)^12 (mpmath)")
        ax.set_title(f"{d['run']}: max errors g {d['g_max']:.1e}, p {d['p_max']:.1e}, R {d['R_max']:.1e}",
                     fontsize=8)
        ax.set_xlabel("outer step s")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax = axes[1][j]
        p = np.array(d["p_sut"])
        g = np.array(d["g_sut"])
        for i in range(p.shape[1]):
            line = ax.plot(d["s"], p[:, i], "-", label=f"p_{i}(s)")
            ax.axhline(d["p_star"][i], color=line[0].get_color(), ls=":", lw=1)
            ax.plot(d["s"], g[:, i], "--", color=line[0].get_color(), lw=1, label=f"g_{i}(s)")
        ax.set_xlabel("outer step s")
        ax.set_title("decoder p_i (solid; dotted: final oracle) and encoder gains g_i (dashed)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle("Commuting scalar closure (002 sec 6.5, 12.8)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
