"""Figures of ep.gdu (Ernoult et al. 2019): the EP-BPTT mismatch against beta per nudged step t, and
the time-resolved EP updates against -BPTT over t, for the primitive-function and the prototypical
RNN (data recorded by certify/test_gdu.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer

_TITLES = {"primitive": "energy-based RNN (F = dPhi/ds)", "prototypical": "prototypical RNN tanh(W s + c)"}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_rnn(datas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {"primitive": 0, "prototypical": 1}
    seen: dict[str, dict[str, Any]] = {}
    for d in datas:
        seen.setdefault(d["rnn"], d)
    return sorted(seen.values(), key=lambda d: order.get(d["rnn"], 2))


@renderer("gdu_mismatch_vs_beta")
def _mismatch(datas: list[dict[str, Any]], path: Path) -> None:
    """||Delta^EP(beta, t) + grad^BPTT(t)|| against beta (log-log), one line per t; solid one-sided,
    dashed symmetric; grey: the rounding floor; dotted horizontal: the exact limit gap."""
    rows = _by_rnn(datas)
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for r, d in enumerate(rows):
        K = d["K"]
        for c, part in enumerate(("s", "theta")):
            ax = axes[r][c]
            for name, ls in (("one_sided", "-"), ("symmetric", "--")):
                est = d["estimators"][name]
                b = np.asarray(est["betas"])
                m, fl = np.asarray(est["m"][part]), np.asarray(est["m_floor"][part])
                for t in range(K):
                    # exact zeros (s part at t = 0) have no place on a log axis: left out
                    ax.loglog(b, np.where(m[t] > 0, m[t], np.nan), ls, color=f"C{t}", lw=1.2,
                              label=f"t = {t}" if name == "one_sided" else None)
                    if name == "one_sided" and t == K - 1:
                        ax.loglog(b, fl[t], ":", color="gray", lw=0.8, label="rounding floor (t = K-1)")
            gaps = d[f"gap_{part}"]
            for t in range(K):
                if gaps[t] > 1e-30:
                    ax.axhline(gaps[t], color=f"C{t}", ls=":", lw=0.8)
            ax.set_xlabel("beta")
            ax.set_ylabel(f"||Delta_{part}^EP + grad_{part}^BPTT||")
            ax.set_title(f"{_TITLES.get(d['rnn'], d['rnn'])}, {part} part", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle("EP vs BPTT mismatch per nudged step (solid: one-sided, dashed: symmetric; dotted: exact "
                 "beta -> 0 gap)", fontsize=9)
    _save(fig, path)


@renderer("gdu_updates_vs_bptt")
def _updates(datas: list[dict[str, Any]], path: Path) -> None:
    """Delta_s^EP(beta, t) per unit (markers, one-sided at the recorded beta) against -grad_s^BPTT(t)
    (lines) over t, and the theta parts' norms, for both RNNs (Ernoult 2019, Fig. 2 style)."""
    rows = _by_rnn(datas)
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for r, d in enumerate(rows):
        cv = d["curves"]
        t = np.asarray(cv["t"])
        ep, bp = np.asarray(cv["ep_s"]), np.asarray(cv["minus_bptt_s"])
        ax = axes[r][0]
        for i in range(ep.shape[1]):
            ax.plot(t, bp[:, i], "-", color=f"C{i}", lw=1.2, label=f"-grad^BPTT unit {i}")
            ax.plot(t, ep[:, i], "o", color=f"C{i}", ms=4, mfc="none", label=f"Delta^EP unit {i}")
        ax.set_xlabel("nudged step t")
        ax.set_ylabel("neural update")
        ax.set_title(f"{_TITLES.get(d['rnn'], d['rnn'])}: s part, beta = {cv['beta']:.3g}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5, ncol=2)
        ax2 = axes[r][1]
        ax2.plot(t, cv["bptt_theta_norm"], "k-", label="||grad_theta^BPTT(t)||")
        ax2.plot(t, cv["ep_theta_norm"], "o", color="C1", mfc="none", label="||Delta_theta^EP(t)||")
        ax2.semilogy(t, np.maximum(cv["ep_minus_bptt_theta"], 1e-300), "s--", color="C3", ms=3,
                     label="||Delta_theta^EP + grad_theta^BPTT||")
        ax2.set_xlabel("nudged step t")
        ax2.set_title("theta part (norms, log scale)", fontsize=8)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=6)
    fig.suptitle("Time-resolved EP updates against -BPTT gradients (ep.gdu)", fontsize=9)
    _save(fig, path)
