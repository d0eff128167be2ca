"""Figures of the encoder / subspace / prompt claims (certify/test_encoder.py, test_prompt.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from certify.figures import plt, renderer


@renderer("encoder_risk_curve")
def _encoder_risk_curve(datas: list[dict[str, Any]], path: Path) -> None:
    """Held-out encoder risk of the trainer's checkpoints against the exact population curve
    R_enc(G_s) = sigma^2 + K^-1 Tr[...] over s (population GD and online SGD)."""
    d = datas[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    s2 = d["sigma2"]
    for mode, style in (("population", "o"), ("online", "s")):
        c = d["curves"].get(mode)
        if not c:
            continue
        ax = axes[0]
        ax.semilogy(c["s"], np.array(c["exact"]) - s2 + 1e-300, "-", label=f"{mode}: exact R_enc(G_s) - sigma^2")
        ax.semilogy(c["s"], np.abs(np.array(c["heldout"]) - s2) + 1e-300, style, ms=2.5, alpha=0.6,
                    label=f"{mode}: |held-out - sigma^2|")
        axes[1].plot(c["s"], np.array(c["heldout"]) / np.array(c["exact"]), style, ms=2.5, label=f"{mode}")
    axes[0].axhline(s2 * np.sqrt(2 / (d["n_heldout"] * d["K"])), color="k", ls=":", lw=1,
                    label="held-out sampling sd")
    axes[0].set_xlabel("outer step s")
    axes[0].set_ylabel("excess risk over the floor sigma^2")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3, which="both")
    sd = np.sqrt(2 / (d["n_heldout"] * d["K"]))
    axes[1].axhline(1, color="k", lw=1)
    axes[1].axhspan(1 - 3 * sd, 1 + 3 * sd, color="grey", alpha=0.2, label="+/- 3 sd (sigma^2 floor)")
    axes[1].set_xlabel("outer step s")
    axes[1].set_ylabel("held-out / exact R_enc(s)")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    fig.suptitle(f"Encoder dictionary trainer (K={d['K']}, r={d['r']}, eta={d['eta']}, "
                 f"{d['n_heldout']} held-out samples): held-out vs exact population risk", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("davis_kahan")
def _davis_kahan(datas: list[dict[str, Any]], path: Path) -> None:
    """Left: sin Theta Delta / ||E|| over random perturbations against the seed's 1 and the
    corrected 2, with the counterexamples. Middle: the violation margin vs ||E||/Delta in the
    2 x 2 family. Right: the SUT's subspace encoder, sin^2 vs the seed's and corrected bounds."""
    by = {d["kind"]: d for d in datas}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    if "ratios" in by:
        bins = np.linspace(0, 2.1, 64)
        for kind, vals in by["ratios"]["ratios"].items():
            ax.hist(vals, bins=bins, histtype="step", label=f"random {kind} E")
    ax.axvline(1, color="r", ls="--", label="seed's bound (ratio 1)")
    ax.axvline(2, color="g", ls="--", label="Yu-Wang-Samworth (ratio 2)")
    if "counterexample" in by:
        c = by["counterexample"]
        ax.axvline(c["shrunk"]["seed_ratio"], color="m", lw=2, label=f"shrunk counterexample {c['shrunk']['seed_ratio']:.3f}")
        ax.axvline(c["example_2x2"]["seed_ratio"], color="c", lw=2,
                   label=f"2x2 example {c['example_2x2']['seed_ratio']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("sin Theta_op * Delta / ||E||_op")
    ax.set_ylabel("count")
    ax.legend(fontsize=6)
    ax = axes[1]
    if "counterexample" in by:
        sc = by["counterexample"]["scales"]
        es = sorted(float(k) for k in sc)
        ax.loglog(es, [sc[f"{e:g}"] for e in es], "o-", label="certified (arb) relative violation")
        ee = np.logspace(np.log10(min(es)), np.log10(max(es)), 50)
        ax.loglog(ee, ee**2 / 2, "k:", label="e^2 / 2")
    ax.set_xlabel("||E||_op / Delta (2x2 family)")
    ax.set_ylabel("sin Theta / (||E|| / Delta) - 1")
    ax.set_title("violated at every scale", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    if "sut" in by:
        rows = by["sut"]["rows"]
        N = [r["N"] for r in rows]
        ax.loglog(N, [r["sin2"] for r in rows], "o-", label="true sin^2 Theta(U_N, U_*)")
        ax.loglog(N, [r["seed_bound"] for r in rows], "s--", label="seed's (||E||/Delta)^2")
        ax.loglog(N, [r["yws_bound"] for r in rows], "^--", label="corrected (2||E||/Delta)^2")
        seed = by["sut"]["seed"]
        ax.axhline(seed["sin2"], color="C0", ls=":", lw=1, label="001 Table 3 true sin^2")
        ax.axhline(seed["bound"], color="C1", ls=":", lw=1, label="001 Table 3 DK bound")
    ax.set_xlabel("N prompts")
    ax.set_ylabel("sin^2 Theta")
    ax.set_title("SUT subspace encoder U_N = Top_r(S_N)", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle("Davis-Kahan with the population gap: the seed's form (no factor 2) vs the corrected bound",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@renderer("prompt_mp_window")
def _prompt_mp_window(datas: list[dict[str, Any]], path: Path) -> None:
    """Observed extreme eigenvalues of the whitened prompt covariance vs g = K/M, with the MP
    edges and the windows (seed's lower end vs the corrected max(0, .)^2)."""
    d = datas[0]
    rows = sorted(d["rows"], key=lambda r: r["g"])
    g = np.array([r["g"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        ax.scatter([r["g"]] * len(r["lam_min"]), np.maximum(r["lam_min"], 1e-6), s=4, color="C0", alpha=0.4)
        ax.scatter([r["g"]] * len(r["lam_max"]), r["lam_max"], s=4, color="C3", alpha=0.4)
    ax.plot(g, [r["mp"][0] for r in rows], "C0-", lw=1, label="MP edge (1 - sqrt g)^2")
    ax.plot(g, [r["mp"][1] for r in rows], "C3-", lw=1, label="MP edge (1 + sqrt g)^2")
    ax.plot(g, [r["window"][1] for r in rows], "k--", lw=1, label=f"window high (p0 = {d['p0']})")
    ax.plot(g, [max(r["window"][0], 1e-6) for r in rows], "g--", lw=1.5, label="corrected low max(0, 1-sqrt g-t)^2")
    ax.plot(g, [max(r["seed_low"], 1e-6) for r in rows], "m:", lw=2, label="seed's low (1-sqrt g-t)^2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("g = K / M")
    ax.set_ylabel("eigenvalue of the whitened covariance (floored at 1e-6)")
    ax.set_title(f"K = {d['K']}, {d['trials']} designs per M: blue lambda_min, red lambda_max", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
