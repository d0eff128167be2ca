"""Figures of claim ep.training (seed 003, 2026-06-09): the EP char-LM against its BPTT twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("ep_training_curves")
def _curves(datas: list[dict[str, Any]], path: Path) -> None:
    """Per tier: validation CE of both twins with the corpus baselines; cos(g_EP, g_BPTT) at the
    logged steps (open markers: residual above the validity threshold); free-phase residual and the
    controller's lam along training."""
    datas = sorted(datas, key=lambda d: d["tier"])
    fig, axes = plt.subplots(len(datas), 3, figsize=(14, 3.8 * len(datas)), squeeze=False)
    for row, d in zip(axes, datas):
        ax, ax2, ax3 = row
        ax.plot(d["log_steps"], d["val_bptt"], "o-", ms=3, color="C0", label="BPTT twin")
        ax.plot(d["log_steps"], d["val_ep"], "s--", ms=3, color="C3", label="EP twin (symmetric AEP)")
        b = d["baselines"]
        for key, ls, lab in (("unigram_entropy", ":", "unigram H1"), ("bigram_window", "-.", "bigram (window)"),
                             ("bayes_window", "--", "Bayes-optimal T-context")):
            ax.axhline(b[key], color="gray", ls=ls, lw=1, label=f"{lab} {b[key]:.3f}")
        ax.set_xlabel("training step")
        ax.set_ylabel("validation CE (nats/char)")
        ax.set_title(f"{d['tier']} tier ({d['backend']}): validation cross-entropy", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        res = np.asarray(d["cos_res"], dtype=float)
        cos = np.asarray(d["cos"], dtype=float)
        steps = np.asarray(d["cos_steps"])
        valid = res <= d["tau"]
        one_minus = np.maximum(1.0 - cos, 1e-17)
        ax2.semilogy(steps[valid], one_minus[valid], "o", color="C2", label=f"residual <= {d['tau']:g}")
        ax2.semilogy(steps[~valid], one_minus[~valid], "o", mfc="none", color="C1", label="residual above")
        ax2.axhline(1.0 - d["cos_min"], color="k", ls="--", lw=1, label=f"1 - cos = {1 - d['cos_min']:.2g} (criterion)")
        ax2.set_xlabel("training step")
        ax2.set_ylabel("1 - cos(g_EP, g_BPTT)")
        ax2.set_title("EP vs BPTT task gradient on the step's batch", fontsize=9)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3, which="both")
        ax3.semilogy(d["steps"], np.maximum(d["res_bptt"], 1e-17), "-", color="C0", lw=1, label="residual, BPTT twin")
        ax3.semilogy(d["steps"], np.maximum(d["res_ep"], 1e-17), "-", color="C3", lw=1, label="residual, EP twin")
        ax3.axhline(d["tau"], color="k", ls="--", lw=1, label=f"validity threshold {d['tau']:g}")
        ax3.axhline(d["target"], color="gray", ls=":", lw=1, label=f"controller target {d['target']:g}")
        ax3.set_xlabel("training step")
        ax3.set_ylabel("free-phase residual at T1")
        t3 = ax3.twinx()
        t3.plot(d["steps"], d["lam_ep"], color="C4", lw=0.8, alpha=0.6)
        t3.set_ylabel("lam (EP twin)", color="C4", fontsize=8)
        ax3.set_title("free-phase residual and the controller", fontsize=9)
        ax3.legend(fontsize=7, loc="lower right")
        ax3.grid(alpha=0.3, which="both")
    fig.suptitle("ep.training: EP-trained equilibrium char-LM against its BPTT twin (seed 003)", fontsize=10)
    _save(fig, path)


@renderer("ep_validity_probe")
def _probe(datas: list[dict[str, Any]], path: Path) -> None:
    """cos with the exact gradient against the free-phase residual of truncated free phases."""
    datas = sorted(datas, key=lambda d: d["tier"])
    fig, axes = plt.subplots(1, len(datas), figsize=(5.5 * len(datas), 4), squeeze=False)
    for ax, d in zip(axes[0], datas):
        res = np.asarray(d["res"], dtype=float)
        ax.loglog(res, np.maximum(1 - np.asarray(d["cos_ep"]), 1e-17), "o-", color="C3", label="EP (AEP) at z_t")
        ax.loglog(res, np.maximum(1 - np.asarray(d["cos_bptt"]), 1e-17), "s--", color="C0", label="BPTT through t steps")
        for r, t in zip(res, d["t"]):
            ax.annotate(f"t={t}", (r, max(1 - d["cos_ep"][d["t"].index(t)], 1e-17)), fontsize=6)
        ax.axvline(d["tau"], color="k", ls="--", lw=1, label=f"validity threshold {d['tau']:g}")
        ax.axhline(0.01, color="gray", ls=":", lw=1, label="cos = 0.99")
        ax.set_xlabel("free-phase residual res(z_t)")
        ax.set_ylabel(f"1 - cos(g, g_{d['reference']})")
        ax.set_title(f"{d['tier']} tier ({d['backend']}): gradient validity vs residual", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    _save(fig, path)
