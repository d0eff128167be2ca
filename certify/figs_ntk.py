"""Figures of the finite-NTK and global-theory claims (seed 000 sec 9, Figs 6-8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("ntk_dynamics")
def _dynamics(datas: list[dict[str, Any]], path: Path) -> None:
    """Fig 6: the eq-24 loss curve of the fixed-set Flexformer run, and the relative difference of
    the adjoint theta-gradient (what the trainer steps with) from autograd along it."""
    d = datas[0]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    ax.semilogy(d["steps"], d["loss"], "-", color="C0")
    ax.set_xlabel("outer step s")
    ax.set_ylabel("L_N(theta_s) (eq 21)")
    ax.set_title("eq-24 gradient descent on the fixed task set", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax2.semilogy(d["grad_steps"], np.maximum(d["grad_rel_err"], 1e-300), "o-", color="C1",
                 label="||g_adjoint - g_autograd|| / ||g_autograd||")
    ax2.axhline(d["u"], color="gray", ls=":", label="unit roundoff u")
    ax2.set_xlabel("outer step s")
    ax2.set_ylabel("relative gradient difference")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle("Exact nonlinear finite-set Flexformer gradient dynamics (000 Fig 6)", fontsize=9)
    _save(fig, path)


def _ntk_curve(datas: list[dict[str, Any]], path: Path, title: str) -> None:
    d = datas[0]
    s = np.asarray(d["steps"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    ax.plot(s, d["actual"], "o", ms=2.5, color="C0", label="actual L_s (eq-24 training)")
    ax.plot(s, d["ntk"], "k-", lw=1.2, label="L_s^NTK = ||(I - eta Theta_0)^s r_0||^2 / 2m")
    for mk in d["marks"]:
        ax.axvline(mk, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("outer step s")
    ax.set_ylabel("finite-set loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(d["title"], fontsize=8)
    rel = np.abs(np.asarray(d["actual"]) - np.asarray(d["ntk"])) / np.asarray(d["ntk"])
    ax2.semilogy(s[1:], np.maximum(rel[1:], 1e-300), "-", color="C0", label="|L_s - L_s^NTK| / L_s^NTK")
    ax2.semilogy(s[1:], np.maximum(np.asarray(d["deviation"])[1:], 1e-300), "--", color="C2",
                 label="||r_s - r_s^NTK||")
    for mk, r, sr in zip(d["marks"], d["rel_err"], d["seed_rel_err"]):
        ax2.plot([mk], [r], "o", color="C3")
        ax2.plot([mk], [sr], "x", color="k")
    ax2.plot([], [], "o", color="C3", label="max rel err up to the mark (ours)")
    ax2.plot([], [], "x", color="k", label="seed 000 value")
    ax2.set_xlabel("outer step s")
    ax2.legend(fontsize=6)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


@renderer("ntk_positive_control")
def _positive_control(datas: list[dict[str, Any]], path: Path) -> None:
    """Fig 7: actual vs finite-NTK loss curves of the decoder positive control and the longer run."""
    _ntk_curve(datas, path, "Finite-NTK positive-control curve (000 Fig 7, eq 25)")


@renderer("ntk_gp")
def _gp(datas: list[dict[str, Any]], path: Path) -> None:
    """Fig 8: the same on the GP/KRR posterior latent solve."""
    _ntk_curve(datas, path, "Finite-NTK curve, Flexformer on the GP/KRR posterior latent solve (000 Fig 8, eq 27)")


@renderer("ntk_order")
def _order(datas: list[dict[str, Any]], path: Path) -> None:
    """max_{t<=s} ||r_t - r_t^NTK|| against eta (log-log) for several s, with the least-squares slope
    and the certified order interval; dotted: the derived rounding floor."""
    datas = sorted(datas, key=lambda d: d["label"])
    fig, axes = plt.subplots(1, len(datas), figsize=(4.8 * len(datas), 3.8), squeeze=False)
    for ax, d in zip(axes[0], datas):
        etas = np.asarray(d["etas"]) * d["lambda_max"]
        for i, s in enumerate(d["prefixes"]):
            D = np.asarray(d["devs"][str(s)])
            n = d["admitted"][str(s)]
            col = f"C{i}"
            iv = d["interval"][str(s)]
            lab = f"s = {s}: LS slope {d['ols'][str(s)]:.3f}" if d["ols"][str(s)] is not None else f"s = {s}"
            if iv is not None:
                lab += f", order in [{iv[0]:.3f}, {iv[1]:.3f}]"
            ax.loglog(etas[:n], D[:n], "o-", color=col, ms=4, label=lab)
            if n < len(D):
                ax.loglog(etas[n:], D[n:], "x", color=col, ms=4)
            ax.loglog(etas, d["floors"][str(s)], ":", color=col, lw=0.8)
            ref = D[0] * (etas / etas[0]) ** 2
            ax.loglog(etas, ref, "--", color="gray", lw=0.6)
        ax.plot([], [], "--", color="gray", label="slope 2")
        ax.set_xlabel("eta lambda_max(Theta_0)")
        ax.set_ylabel("max_{t<=s} ||r_t - r_t^NTK||")
        ax.set_title(f"{d['label']}: NTK deviation vs step size (x: below 16x floor)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle("Order of the finite-NTK deviation in eta (2: second-order agreement)", fontsize=9)
    _save(fig, path)


@renderer("global_theory_gap")
def _gap(datas: list[dict[str, Any]], path: Path) -> None:
    """Flexformer eq-24 loss curve against the free-P prediction (closed form at L = 1, free-P
    descent at L = 6), the best step-size-rescaled free-P curve, and the relative gap over s."""
    datas = sorted(datas, key=lambda d: d["L"])
    fig, axes = plt.subplots(2, len(datas), figsize=(4.8 * len(datas), 6.4), squeeze=False)
    for j, d in enumerate(datas):
        s = np.asarray(d["steps"])
        ax, ax2 = axes[0][j], axes[1][j]
        ax.semilogy(s, d["flexformer"], "-", color="C0", label="Flexformer (eq 24)")
        ax.semilogy(s, d["free_P"], "k--", label=d["free_P_label"])
        ax.semilogy(s, d["free_P_rescaled"], ":", color="C3", label=f"free P, eta x {d['best_c']:.3g} (best)")
        ax.set_title(f"depth L = {d['L']}", fontsize=8)
        ax.set_xlabel("outer step s")
        ax.set_ylabel("L_N")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
        ax2.plot(s, d["gap"], "-", color="C0", label=f"gap to free P (max {d['max_gap']:.3g})")
        ax2.plot(s, d["gap_rescaled"], ":", color="C3", label=f"gap to best rescaled (max {d['best_gap']:.3g})")
        ax2.set_xlabel("outer step s")
        ax2.set_ylabel("|L_flex - L_free| / L_free")
        ax2.legend(fontsize=6)
        ax2.grid(alpha=0.3)
    fig.suptitle("Global outer training: Flexformer vs the quadratic free-P theory (000 sec 9: open)", fontsize=9)
    _save(fig, path)
