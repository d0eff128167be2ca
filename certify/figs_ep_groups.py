"""Figures of the E-family claims fa.upstream_failure and aep.tracking (seed 003): per-group gradient
cosines of FA, plain EP and AEP against BP / the implicit gradient (003 TL;DR 1's tables), the
frozen-vs-tracking AEP error against the free-phase error, and the drawn cases of aep.tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("ep_group_cosines")
def _groups(datas: list[dict[str, Any]], path: Path) -> None:
    """Bars per parameter group: FA at the BP-trained point (mean over feedback draws, +- sd, and
    mean |cos|), FA after FA training (mean over runs), plain EP and AEP on the ThickBlock (mean over
    seeds, min as a tick), the seed's values as crosses."""
    parts = {d["part"]: d for d in datas}
    groups = next(iter(parts.values()))["groups"]
    x = np.arange(len(groups))
    series = []
    if "fa_bp" in parts:
        d = parts["fa_bp"]
        series.append(("FA, BP-trained point (mean cos)", d["mean"], d["sd"], "C0"))
        series.append(("FA, BP-trained point (mean |cos|)", d["abs_mean"], None, "C9"))
    if "fa_trained" in parts:
        d = parts["fa_trained"]
        series.append(("FA after FA training (own feedback)", d["mean"], d["sd"], "C1"))
    if "ep" in parts:
        d = parts["ep"]
        idx = {g: i for i, g in enumerate(d["groups"])}
        for key, lab, col in (("ep", "EP, uncorrected (ThickBlock)", "C3"), ("aep", "AEP symmetric", "C2"),
                              ("aep_holo", "AEP holomorphic N=4", "C4")):
            vals = np.array(d[key])
            series.append((lab, [float(vals[:, idx[g]].mean()) if g in idx else np.nan for g in groups],
                           None, col))
    w = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for i, (lab, vals, sd, col) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, vals, w, yerr=sd, label=lab, color=col, alpha=0.85,
               capsize=2 if sd is not None else 0)
    if "fa_bp" in parts:
        seed = parts["fa_bp"].get("seed", {})
        for g, v in seed.items():
            if g in groups:
                ax.plot([groups.index(g)], [v], "kx", ms=8)
        ax.plot([], [], "kx", label="seed 003 (FA)")
    if "ep" in parts and "energy" in parts["ep"]:
        en = parts["ep"]["energy"]
        ax.text(0.01, 0.02, "EnergyBlock, plain EP: " + ", ".join(f"{k} {v:.4f}" for k, v in en.items()),
                transform=ax.transAxes, fontsize=7)
    ax.axhline(0.99, color="gray", ls=":", lw=0.8)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel("cos(estimate, exact gradient)")
    ax.set_ylim(-1.05, 1.1)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.set_title("Per-group gradient cosines: FA vs BP (feedforward block), EP / AEP vs IFT (equilibrium block)",
                 fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


@renderer("aep_tracking_order")
def _order(datas: list[dict[str, Any]], path: Path) -> None:
    """Relative error against the exact gradient vs the free-phase error ||e0||, frozen AEP (grows
    linearly) and tracking AEP (flat), on the canonical far case."""
    d = datas[0]
    fig, ax = plt.subplots(figsize=(5.6, 4))
    e0 = np.asarray(d["e0"])
    ax.loglog(e0, d["frozen_rel_err"], "o-", color="C3", ms=4, label="frozen AEP")
    ax.loglog([d["e0_h1"]], [d["frozen_rel_err_h1"]], "o", color="C3", mfc="none", ms=7,
              label="frozen AEP, pinned far case")
    ax.loglog(d["track_e0"], np.maximum(d["track_rel_err"], 1e-300), "s-", color="C2", ms=5, label="tracking AEP")
    ax.axhline(d["frozen_rel_err_h0"], color="C3", ls=":", lw=0.8, label="frozen at e0 = 0 (AEP at z*)")
    ax.axhline(d["track_rel_err_h0"], color="C2", ls=":", lw=0.8, label="tracking at e0 = 0")
    ref = np.asarray(d["frozen_rel_err"])[-1] * e0 / e0[-1]
    ax.loglog(e0, ref, "--", color="gray", lw=0.7, label="slope 1")
    iv = d.get("interval")
    ax.set_title("aep.tracking: error vs free-phase error (beta = {:g}, {}){}".format(
        d["beta"], d["dtype"], "" if iv is None else f"\nfrozen order in [{iv[0]:.3f}, {iv[1]:.3f}]"), fontsize=8)
    ax.set_xlabel("||z0 - z*|| (where the free phase stopped)")
    ax.set_ylabel("||g - g_IFT|| / ||g_IFT||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    _save(fig, path)


@renderer("aep_tracking_cases")
def _cases(datas: list[dict[str, Any]], path: Path) -> None:
    """The drawn cases of the property: cos with the exact gradient against the free-phase residual
    where it stopped, frozen (o) and tracking (s), per block kind; the confirmed counterexamples (X,
    joined to their frozen cos)."""
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for d in datas:
        if d.get("counterexample"):
            ax.semilogx([d["res0"]] * 2, [d["cos_frozen"], d["cos_tracking"]], "-", color="C3", lw=0.8)
            ax.semilogx([d["res0"]], [d["cos_tracking"]], "X", color="C3", ms=9)
            ax.annotate(f"{d['counterexample']} (beta {d['beta']:g})", (d["res0"], d["cos_tracking"]), fontsize=6,
                        xytext=(4, -10), textcoords="offset points")
    ax.plot([], [], "X", color="C3", label="confirmed counterexample: tracking")
    for kind, col in (("damped", "C0"), ("thick", "C1")):
        pts = [d for d in datas if d["kind"] == kind and not d.get("counterexample")]
        if not pts:
            continue
        ax.semilogx([p["res0"] for p in pts], [p["cos_frozen"] for p in pts], "o", color=col, mfc="none",
                    label=f"{kind}: frozen AEP")
        ax.semilogx([p["res0"] for p in pts], [p["cos_tracking"] for p in pts], "s", color=col, ms=4,
                    label=f"{kind}: tracking AEP")
    ax.axhline(0.9, color="C3", ls=":", lw=0.8, label="frozen fails below 0.9")
    ax.axhline(0.99, color="C2", ls=":", lw=0.8, label="restored above 0.99")
    ax.set_xlabel("free-phase residual res0 where it stopped")
    ax.set_ylabel("cos(estimate, g_IFT)")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.set_title("aep.tracking: drawn blocks far from linear response", fontsize=9)
    _save(fig, path)
