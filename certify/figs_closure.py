"""Figures of the closure and overlap families (002 sec 7; 000 sec 7-8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from certify.figures import renderer


@renderer("closure_scalar_state")
def _scalar_state(datas: list[dict[str, Any]], path: Path) -> None:
    """R_s of the two states of the 002 sec 7 counterexample over the outer steps s."""
    d = datas[0]
    fig, ax = plt.subplots(figsize=(5.4, 4))
    s = d["steps"]
    for key, lab, ek, c in (("A", "A", 0, "C0"), ("B", "B", 1, "C3")):
        ax.semilogy(s, d[f"exact_{key}"], "-", color=c, lw=1.2,
                    label=f"state {lab}: exact (1 - {d['eta_lambda'][ek]:.2f})^(2s)")
        ax.semilogy(s, d[f"backend_{key}"], "o", color=c, ms=5, mfc="none", label=f"state {lab}: backend SUT")
    ax.annotate(f"R_1 = {d['backend_A'][1]:.4f}", (1, d["backend_A"][1]), textcoords="offset points",
                xytext=(8, 6), fontsize=8)
    ax.annotate(f"R_1 = {d['backend_B'][1]:.4f}", (1, d["backend_B"][1]), textcoords="offset points",
                xytext=(8, -12), fontsize=8)
    ax.set_xlabel("outer step s (P <- P - eta (P C - B))")
    ax.set_ylabel("R_s = Tr(E_s C E_s^T)")
    ax.set_title(f"Same R_0 = 1, different futures: risk is not a closed state ({d['backend']})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("closure_spectra_only")
def _spectra_only(datas: list[dict[str, Any]], path: Path) -> None:
    """Eigenvalues and singular values of P_A, P_B (equal) beside their depth-1 risks (not)."""
    d = datas[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    k = range(1, len(d["eig_A"]) + 1)
    ax1.semilogy(k, d["eig_A"], "o", ms=8, mfc="none", color="C0", label="eig P_A")
    ax1.semilogy(k, d["eig_B"], "x", ms=6, color="C0", label="eig P_B")
    ax1.semilogy(k, sorted(d["sv_A"]), "s", ms=8, mfc="none", color="C2", label="sv P_A")
    ax1.semilogy(k, sorted(d["sv_B"]), "+", ms=8, color="C2", label="sv P_B")
    ax1.set_xlabel("index (sorted)")
    ax1.set_title(f"P_A = H^-1, P_B = Pi P_A Pi^T: identical spectra (K={d['K']}, kappa={d['kappa']:g})",
                  fontsize=8)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7)
    vals = [d["risk_A_sut"], d["risk_A_exact"], d["risk_B_sut"], d["risk_B_exact"]]
    labels = ["P_A SUT\n(float)", "P_A exact\n(float P_A)", "P_B SUT", "P_B exact"]
    ax2.bar(range(4), [max(v, 1e-300) for v in vals], color=["C0", "C9", "C3", "C1"])
    ax2.set_yscale("log")
    ax2.set_xticks(range(4), labels, fontsize=7)
    for i, v in enumerate(vals):
        ax2.text(i, max(v, 1e-300), f"{v:.2e}", ha="center", va="bottom", fontsize=7)
    ax2.set_title("depth-1 risk K^-1 E||(I - P H) x*||^2\n(exact inverse: 0)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("overlap_trajectories")
def _overlap(datas: list[dict[str, Any]], path: Path) -> None:
    """Per task family (rows): order parameters along the logged trajectories, R_L direct vs
    reconstructed, and the reconstruction error against its derived tolerance; colour = class."""
    fams: dict[str, list[dict[str, Any]]] = {}
    for d in datas:
        key = d.get("family", "lsq") + (f" {d['size']}" if d.get("size") else "")
        fams.setdefault(key, []).append(d)
    order = sorted(fams, key=lambda k: ("lsq", "gp", "pde").index(k.split()[0]))
    fig, axes = plt.subplots(len(order), 3, figsize=(13, 3.1 * len(order)), squeeze=False)
    classes = sorted({d["cls"] for d in datas})
    for r, key in enumerate(order):
        for d in sorted(fams[key], key=lambda d: d["cls"]):
            col = f"C{classes.index(d['cls'])}"
            s, L = d["steps"], d["L"]
            ax = axes[r][0]
            ax.plot(s, d["omega01"], "o-", ms=3, color=col, label=f"{d['cls']} Omega_01 = E Tr(PHS)/K")
            ax.plot(s, d["omega11"], "^--", ms=3, color=col, label=f"{d['cls']} Omega_11 = E Tr(PHSH'P')/K")
            ax = axes[r][1]
            ax.semilogy(s, d["direct_L"], "o-", ms=3, color=col, label=f"{d['cls']} R_{L} direct")
            ax.semilogy(s, d["rec_L"], "x--", color=col, label=f"{d['cls']} R_{L} from Omega")
            ax = axes[r][2]
            ax.semilogy(s, [max(g, 1e-300) for g in d["gap"]], "o-", ms=3, color=col,
                        label=f"{d['cls']} max_l |R_rec - R_dir|")
            ax.semilogy(s, d["tol"], ":", color=col, lw=1)
        d0 = fams[key][0]
        axes[r][0].set_ylabel(f"{key} (K={d0['K']}, L={d0['L']})")
        for c in range(3):
            axes[r][c].grid(alpha=0.3, which="both")
            axes[r][c].legend(fontsize=5)
    axes[0][0].set_title("order parameters", fontsize=9)
    axes[0][1].set_title("R_L: decoder vs binomial reconstruction", fontsize=9)
    axes[0][2].set_title("reconstruction error (dotted: derived tolerance)", fontsize=9)
    for c in range(3):
        axes[-1][c].set_xlabel("training step")
    fig.suptitle(f"Overlap order parameters along decoder trajectories ({datas[0]['backend']}; 000 sec 8, Fig 5)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
