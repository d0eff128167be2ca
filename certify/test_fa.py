"""Family E: fa.upstream_failure (seed 003 TL;DR 1, "Why FA failed").

Claim: "feedback alignment's gradient is faithful only next to the loss (output projection cos
~1.0) and near-random upstream (Q/K/V ~0.25, FFN fc ~ -0.01), while EP/AEP stay >= 0.99 (003 TL;DR
1)".

SUT: models.ep.fa -- a small feedforward pre-LN transformer block (T 4, d 8, 2 heads, GELU FFN of
width 32, residuals, token-mean readout W_out, squared loss), exact backprop by autograd, and its
explicit backward recursion with feedback matrices: the transposes (= backprop) or fixed random
matrices in place of W_out^T, W_pj^T, W_fc^T, W_O^T (feedback alignment, Lillicrap et al. 2016; the
readout's own gradient uses the true error; Q/K/V need no feedback matrix in a single block); its
Adam trainer with the BP or the FA gradient.  For EP/AEP: the equilibrium counterpart
models.ep.blocks.ThickBlock (same sizes and parameter groups) at a converged free phase, plain EP
and AEP (symmetric; holomorphic N = 4) per group (estimators.group_slices) against the dense IFT
gradient (references.ift_gradient; BPTT cross-check), and the conservative EnergyBlock with plain
EP (the seed's "EP" components are energy-based: CET attention, Hopfield FFN).

Operating points: (a) after 100 BP Adam steps on a teacher task (so the random feedback has not
aligned: B is independent of the weights); (b) after 60 FA Adam steps from the initial weights,
one run per feedback seed (the setting FA is used in: Lillicrap's alignment can develop).

Derived facts and checks:
* readout: its FA gradient IS its BP gradient (same local product mean^T e): equal within
  2 gamma_B |mean|^T |e|, cos = 1;
* upstream groups at (a): every FA gradient except the readout's is linear in B_out, so B -> -B
  flips it while the forward pass does not see B: cos(g_FA, g_BP) has a symmetric law, mean 0
  EXACTLY; checked as |mean over 2048 feedback seeds| <= the Hoeffding halfwidth at false-alarm
  rate 1e-6 (Bonferroni over the 6 groups); mean |cos| (the typical size of a random direction's
  cosine) is reported beside the seed's 0.25 / -0.01;
* upstream groups at (b): a sign test over 20 independent FA runs (p = 2^-20 <= 1e-6 when all 20
  mean Q/K/V cosines are positive) -- if it rejects "near-random", the claim holds only at
  operating points whose feedback is not the trained one: verdict conditional, the runs as the
  counterexample;
* BP recursion with the transposes = autograd within the running-error bound 2 gamma_k |.|-chain;
* EP/AEP: AEP (symmetric; holomorphic on the first) >= 0.99 in every group of three ThickBlocks, plain EP
  >= 0.99 in every group of the EnergyBlock; plain EP on the ThickBlock is measured and shown
  (it is not >= 0.99: the asymmetry aep.exact_gradient corrects).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from certify import ep_blocks, registry
from certify.backend import Backend
from models.ep import blocks, fa, references
from models.ep import estimators as est
from models.seeding import cpu_generator, derive_seed
from properties import ep_tracking as pt
from properties.tolerances import gamma, relative_band_golden

CLAIM = "fa.upstream_failure"
GOLDEN = "fa"
SETUP = fa.FAConfig(T=4, d=8, d_out=4, heads=2, mlp=4, causal=False, seed=0)
TRAIN_N, TRAIN_SEED = 16, 1  # teacher-task training set
EVAL_N, EVAL_SEED = 16, 2  # the batch the gradients are measured on
BP_STEPS, FA_STEPS, LR = 100, 60, 1e-2
N_FEEDBACK = 2048  # independent feedback draws at the BP operating point
FEEDBACK_SEEDS = range(N_FEEDBACK)
FA_RUN_SEEDS = tuple(10_000 + r for r in range(pt.sign_test_runs(pt.FALSE_ALARM)))  # 20 FA runs
FRESH_OFFSET = 50_000  # a fresh (untrained) feedback seed per FA run: the control
UPSTREAM = ("Q", "K", "V", "O", "FFN_fc", "FFN_proj")
QKV = ("Q", "K", "V")
# EP/AEP: ThickBlock counterparts of the same sizes, three seeds; the conservative EnergyBlock
EP_SEEDS = (0, 1, 2)
def ep_beta(u: float, terms: int) -> float:
    """The symmetric nudge: max(1e-3, tau^(1/3)), tau = 16 gamma_terms the nudged solves' residual.
    The estimate's error is ~ a beta^2 (bias) + b tau / beta (solve floor), balanced at beta ~
    tau^(1/3); float64 keeps 1e-3 (bias ~1e-6, far inside the 0.99 threshold), float32 needs ~0.05
    so that beta dC/dz is well above the solve tolerance."""
    return max(1e-3, pt.stop_tolerance(u, terms) ** (1.0 / 3.0))
HOLO_R, HOLO_N = 1e-2, 4  # holomorphic: error O(r^N) = 1e-8 (plus the solve floor tau / r)
BPTT_EPS, BPTT_STEPS = 0.3, 100
THRESHOLD = 0.99  # the claim's "EP/AEP stay >= 0.99"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").to(torch.float64).numpy()


def _seeds() -> dict[str, float]:
    return registry.CLAIMS[CLAIM].seed_values


def _data(n: int, seed: int, backend) -> tuple[torch.Tensor, torch.Tensor]:
    return fa.teacher_task(SETUP, n, seed, device=backend.device, dtype=backend.torch_dtype)


def _cos_rows(g_fa: dict[str, torch.Tensor], g_bp: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """group -> cos(g_FA[s], g_BP) over the feedback sets s."""
    a, b = fa.group_vectors(g_fa, lead=1), fa.group_vectors(g_bp)
    return {k: _np(fa.cosine(a[k], b[k])) for k in fa.GROUPS}


# --------------------------------------------------------------------------- #
# (a) the BP-trained operating point
# --------------------------------------------------------------------------- #
@functools.cache
def bp_point(dtype_name: str) -> dict:
    be = Backend("cpu", dtype_name)
    x, y = _data(TRAIN_N, TRAIN_SEED, be)
    run = fa.train(SETUP, x, y, steps=BP_STEPS, lr=LR, rule="bp")
    xe, ye = _data(EVAL_N, EVAL_SEED, be)
    blk = run.block(0)
    g_bp = fa.bp_gradient(blk, xe, ye)
    g_fa = fa.fa_gradient(blk, xe, ye, FEEDBACK_SEEDS)
    return {"run": run, "blk": blk, "x": xe, "y": ye, "g_bp": g_bp, "g_fa": g_fa, "cos": _cos_rows(g_fa, g_bp)}


def _recursion_check(blk: fa.TransformerBlock, x, y, g_bp, u: float) -> float:
    """max over parameters of ||g_rec - g_BP|| / (2 gamma_k ||g_abs||): the recursion with the true
    transposes against autograd (both from bitwise-identical forward passes; each backward product
    chain is within gamma_k of its |.|-chain g_abs, so they differ by <= 2 gamma_k g_abs)."""
    W = {n: w.detach() for n, w in blk.weights().items()}
    fb = fa.transposed_feedback(blk)
    g_rec = fa.backward_weights(W, x, y, SETUP, fb)
    g_abs = fa.backward_weights(W, x, y, SETUP, fb, absolute=True)
    k = fa.recursion_terms(SETUP, x.shape[0])
    return max(float((g_rec[n][0] - g_bp[n]).double().norm()) / (2 * gamma(k, u) * float(g_abs[n][0].double().norm()))
               for n in fa.PARAM_NAMES)


def _readout_ratio(blk: fa.TransformerBlock, x, y, g_fa, g_bp, u: float) -> float:
    """max over feedback sets of ||g_FA(W_out) - g_BP(W_out)|| / (2 gamma_B || |mean|^T |e| ||): both
    are the B-term inner products mean^T e (the readout's own gradient uses the true error), each
    within gamma_B of its |.|-product."""
    with torch.no_grad():
        cc = blk.forward(x)
        tol = 2 * gamma(x.shape[0], u) * float((cc.mean.abs().mT @ (cc.o - y).abs()).double().norm())
    diff = float((g_fa["W_out"] - g_bp["W_out"].unsqueeze(0)).double().flatten(1).norm(dim=1).max())
    return diff / tol if tol > 0 else (0.0 if diff == 0 else math.inf)


@pytest.mark.claim(CLAIM)
def test_fa_at_bp_operating_point(backend, record, golden) -> None:
    """fa.upstream_failure (measured + statistical), operating point (a): the block after 100 BP
    Adam steps (loss falls ~100x), 2048 independent feedback draws.  (r) the recursion with the true
    transposes equals autograd within 2 gamma_k of its |.|-chain (it is backprop; FA differs only in
    the matrices); (o) the readout's FA gradient equals its BP gradient within 2 gamma_B
    || |mean|^T |e| || for every draw, so fa.cos_out = 1; (u) for every upstream group |mean_s
    cos(g_FA, g_BP)| <= t = 2 sqrt(ln(2/alpha) / 2n), alpha = 1e-6 / 6 (Hoeffding, Bonferroni): the
    exact mean is 0 by the B_out -> -B_out symmetry.  fa.cos_qkv = the mean over Q, K, V, fa.cos_ffn_fc
    (seed: 0.25 / -0.01), the mean |cos| per group, pinned in golden/fa.json."""
    u = backend.unit_roundoff
    c = bp_point(backend.dtype)
    run, blk, x, y, g_bp, g_fa, cos = c["run"], c["blk"], c["x"], c["y"], c["g_bp"], c["g_fa"], c["cos"]
    L = _np(run.losses[:, 0])
    record.set("bp_point.loss_initial", float(L[0]))
    record.set("bp_point.loss_final", float(L[-1]))
    assert L[-1] < L[0], f"BP training did not decrease the loss ({L[0]:.3e} -> {L[-1]:.3e})"
    # (r)
    r_ratio = _recursion_check(blk, x, y, g_bp, u)
    record.max("bp_recursion_error_over_running_error_bound", r_ratio)
    assert r_ratio <= 1, f"the backward recursion with W^T is not backprop ({r_ratio:.3e} x the rounding bound)"
    # (o) the readout's gradient: the same local product mean^T e in both
    o_ratio = _readout_ratio(blk, x, y, g_fa, g_bp, u)
    record.max("readout_fa_minus_bp_over_tolerance", o_ratio)
    assert o_ratio <= 1, f"the readout's FA gradient differs from BP ({o_ratio:.3e} x the rounding bound)"
    # (u) upstream: mean cos 0 by symmetry, Hoeffding at 1e-6 / 6
    t = pt.hoeffding_halfwidth(N_FEEDBACK, pt.FALSE_ALARM / len(UPSTREAM))
    record.set("upstream_mean_cos_hoeffding_halfwidth", t)
    record.set("feedback_draws", N_FEEDBACK)
    record.example(N_FEEDBACK)
    metrics = {"fa.cos_out": float(cos["readout"].mean()),
               "fa.cos_qkv": float(np.mean([cos[g].mean() for g in QKV])),
               "fa.cos_ffn_fc": float(cos["FFN_fc"].mean())}
    for g in fa.GROUPS:
        metrics[f"fa.cos_{g}"] = float(cos[g].mean())
        metrics[f"fa.abs_cos_{g}"] = float(np.abs(cos[g]).mean())
    metrics["fa.abs_cos_qkv"] = float(np.mean([np.abs(cos[g]).mean() for g in QKV]))
    for k, v in metrics.items():
        record.set(k, v)
    record.set("fa.max_cos_upstream", float(max(cos[g].max() for g in UPSTREAM)))
    record.set("fa.faithful_draws_upstream", int(sum(int((cos[g] >= THRESHOLD).sum()) for g in UPSTREAM)))
    record.set("setup", f"{SETUP}; BP point: {BP_STEPS} Adam steps lr {LR} on {TRAIN_N} teacher samples; "
                        f"gradients on {EVAL_N} held-out samples")
    record.figure("ep_group_cosines", {"part": "fa_bp", "dtype": backend.dtype, "groups": list(fa.GROUPS),
                                       "mean": [float(cos[g].mean()) for g in fa.GROUPS],
                                       "abs_mean": [float(np.abs(cos[g]).mean()) for g in fa.GROUPS],
                                       "sd": [float(cos[g].std()) for g in fa.GROUPS], "n": N_FEEDBACK,
                                       "seed": {"readout": 1.0, "Q": 0.25, "K": 0.25, "V": 0.25, "FFN_fc": -0.01}})
    for g in UPSTREAM:
        m = float(cos[g].mean())
        assert abs(m) <= t, (f"FA upstream group {g}: mean cos {m:.4f} over {N_FEEDBACK} feedback draws is outside "
                             f"+-{t:.4f} (Hoeffding, 1e-6): the FA gradient is not unaligned at an operating point "
                             f"independent of its feedback")
    golden(GOLDEN, metrics, relative_band_golden(backend.dtype), atol=relative_band_golden(backend.dtype),
           seeds=_seeds(), seed=SETUP.seed)


# --------------------------------------------------------------------------- #
# (b) FA-trained operating points: does the feedback align?
# --------------------------------------------------------------------------- #
@functools.cache
def fa_runs(dtype_name: str) -> dict:
    be = Backend("cpu", dtype_name)
    x, y = _data(TRAIN_N, TRAIN_SEED, be)
    run = fa.train(SETUP, x, y, steps=FA_STEPS, lr=LR, rule="fa", feedback_seeds=FA_RUN_SEEDS)
    xe, ye = _data(EVAL_N, EVAL_SEED, be)
    own, fresh, readout = [], [], []
    for r, s in enumerate(FA_RUN_SEEDS):
        blk = run.block(r)
        g_bp = fa.bp_gradient(blk, xe, ye)
        g = fa.fa_gradient(blk, xe, ye, [s, s + FRESH_OFFSET])  # its own feedback, and a fresh draw
        cr = _cos_rows(g, g_bp)
        own.append({k: float(v[0]) for k, v in cr.items()})
        fresh.append({k: float(v[1]) for k, v in cr.items()})
        readout.append(_readout_ratio(blk, xe, ye, g, g_bp, be.unit_roundoff))
    return {"run": run, "own": own, "fresh": fresh, "readout_ratio": max(readout)}


@pytest.mark.claim(CLAIM)
def test_fa_trained_alignment(backend, record, golden) -> None:
    """fa.upstream_failure, operating point (b): 20 FA runs (60 Adam steps from the initial weights,
    each with its own fixed feedback), the cosine of each run's FA gradient (its own feedback) with
    BP per group, and, as the control, with a fresh feedback draw.  Sign test on the mean Q/K/V
    cosine: under "near-random" (a law symmetric about 0, as at an operating point independent of
    the feedback) P(k of 20 positive) = P(Bin(20, 1/2) >= k); p <= 1e-6 rejects it -- then the seed's
    "near-random upstream" holds only where the feedback has not been trained against (verdict
    conditional, the measured runs as counterexample, recomputed in float64 when the backend is
    float32).  The readout stays exact (cos 1) in every run; no upstream group is faithful (mean
    cos < 0.99).  Pinned: fa_trained.* in golden/fa.json."""
    c = fa_runs(backend.dtype)
    own, fresh, run = c["own"], c["fresh"], c["run"]
    n = len(own)
    qkv = np.array([np.mean([o[g] for g in QKV]) for o in own])
    qkv_fresh = np.array([np.mean([o[g] for g in QKV]) for o in fresh])
    k = int((qkv > 0).sum())
    p = pt.sign_test_pvalue(k, n)
    k_fresh = int((qkv_fresh > 0).sum())
    L = _np(run.losses)
    record.example(n)
    metrics = {"fa_trained.cos_qkv": float(qkv.mean()), "fa_trained.cos_qkv_fresh_feedback": float(qkv_fresh.mean())}
    for g in fa.GROUPS:
        metrics[f"fa_trained.cos_{g}"] = float(np.mean([o[g] for o in own]))
    metrics["fa_trained.loss_final_mean"] = float(L[-1].mean())
    for key, v in metrics.items():
        record.set(key, v)
    record.set("fa_trained.runs", n)
    record.set("fa_trained.qkv_positive_runs", k)
    record.set("fa_trained.sign_test_p", p)
    record.set("fa_trained.qkv_positive_runs_fresh_feedback", k_fresh)
    record.set("fa_trained.loss_initial", float(L[0].mean()))
    record.figure("ep_group_cosines", {"part": "fa_trained", "dtype": backend.dtype, "groups": list(fa.GROUPS),
                                       "mean": [metrics[f"fa_trained.cos_{g}"] for g in fa.GROUPS],
                                       "sd": [float(np.std([o[g] for o in own])) for g in fa.GROUPS], "n": n})
    record.max("readout_fa_minus_bp_over_tolerance", c["readout_ratio"])
    assert c["readout_ratio"] <= 1, "the readout's FA gradient is not its BP gradient in an FA-trained run"
    for g in UPSTREAM:
        assert metrics[f"fa_trained.cos_{g}"] < THRESHOLD, f"FA upstream group {g} is faithful after FA training"
    if p <= pt.FALSE_ALARM:
        conf = fa_runs("float64") if backend.dtype != "float64" else c
        qkv64 = np.array([np.mean([o[g] for g in QKV]) for o in conf["own"]])
        k64 = int((qkv64 > 0).sum())
        if pt.sign_test_pvalue(k64, n) <= pt.FALSE_ALARM:
            record.verdict(
                "conditional",
                "FA's upstream gradient is near-random only at operating points independent of its feedback "
                "(after BP training: mean cos 0 exactly by the B -> -B symmetry, certified); after FA training the "
                f"forward weights align with the feedback (Lillicrap 2016): mean Q/K/V cos {qkv64.mean():.3f} > 0 in "
                f"{k64}/{n} runs (sign test p = {pt.sign_test_pvalue(k64, n):.1e} <= 1e-6), still far from "
                "faithful (< 0.99)",
                {"setup": str(SETUP), "fa_steps": FA_STEPS, "lr": LR, "feedback_seeds": list(FA_RUN_SEEDS),
                 "mean_cos_qkv_per_run": [round(float(v), 6) for v in qkv64],
                 "mean_cos_per_group": {g: round(float(np.mean([o[g] for o in conf["own"]])), 6) for g in fa.GROUPS},
                 "control_fresh_feedback_mean_cos_qkv": round(float(np.mean(
                     [np.mean([o[g] for g in QKV]) for o in conf["fresh"]])), 6)})
    golden(GOLDEN, metrics, relative_band_golden(backend.dtype), atol=relative_band_golden(backend.dtype),
           seeds=_seeds(), seed=FA_RUN_SEEDS[0])


# --------------------------------------------------------------------------- #
# EP / AEP on the equilibrium counterparts
# --------------------------------------------------------------------------- #
def _ep_inputs(seed: int, T: int, d: int, d_out: int, backend) -> tuple[torch.Tensor, torch.Tensor]:
    g = cpu_generator(derive_seed(CLAIM, "ep", seed, T, d))
    x = torch.randn(1, T, d, generator=g, dtype=torch.float64)
    y = torch.randn(1, d_out, generator=g, dtype=torch.float64)
    return x.to(backend.device, backend.torch_dtype), y.to(backend.device, backend.torch_dtype)


def _group_cos(blk, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    out = {}
    for g, sl in est.group_slices(blk).items():
        va, vb = est.group_vector(a, sl).double(), est.group_vector(b, sl).double()
        out[g] = float(va @ vb / (va.norm() * vb.norm()))
    return out


@functools.cache
def ep_groups(dtype_name: str) -> dict:
    be = Backend("cpu", dtype_name)
    rows = []
    for seed in EP_SEEDS:
        blk = blocks.ThickBlock(SETUP.T, SETUP.d, SETUP.d_out, heads=SETUP.heads, mlp=SETUP.mlp, c=1.0,
                                causal=SETUP.causal, dtype=be.torch_dtype, seed=seed)
        x, y = _ep_inputs(seed, SETUP.T, SETUP.d, SETUP.d_out, be)
        ph = ep_blocks.free_equilibrium(blk, x, be)
        g_ift = references.ift_gradient(blk, x, y, ph.z)
        terms = ep_blocks.force_terms(blk)
        tol, beta = pt.stop_tolerance(be.unit_roundoff, terms), ep_beta(be.unit_roundoff, terms)
        row = {"seed": seed, "free_residual": ph.solve.residual, "beta": beta}
        for name, corr in (("ep", None), ("aep", "aep")):
            nud = est.Nudger(blk, x, y, ph.z, est.EPConfig(correction=corr, readout="vf", solver="newton", steps=20,
                                                          tol=tol))
            row[name] = _group_cos(blk, est.symmetric(nud, beta).grad, g_ift)
        if seed == EP_SEEDS[0]:  # holomorphic (4 complex Newton phases) and BPTT on the first block
            nud = est.Nudger(blk, x, y, ph.z, est.EPConfig(correction="aep", readout="vf", solver="newton", steps=20,
                                                          tol=tol))
            row["aep_holo"] = _group_cos(blk, est.holomorphic(nud, max(HOLO_R, beta), HOLO_N).grad, g_ift)
            g_bptt = references.bptt_gradient(blk, x, y, x, BPTT_EPS, BPTT_STEPS)
            row["bptt_vs_ift"] = _group_cos(blk, g_bptt, g_ift)
            row["aep_vs_bptt"] = _group_cos(blk, est.symmetric(
                est.Nudger(blk, x, y, ph.z, est.EPConfig(correction="aep", readout="vf", solver="newton", steps=20,
                                                         tol=tol)), beta).grad, g_bptt)
        rows.append(row)
    # the conservative counterpart: energy attention + Hopfield memory, plain EP (classic readout)
    eblk = blocks.EnergyBlock(SETUP.T, SETUP.d, SETUP.d_out, heads=SETUP.heads, memories=SETUP.d,
                              dtype=be.torch_dtype, seed=EP_SEEDS[0])
    x, y = _ep_inputs(EP_SEEDS[0], SETUP.T, SETUP.d, SETUP.d_out, be)
    ph = ep_blocks.free_equilibrium(eblk, x, be)
    terms = ep_blocks.force_terms(eblk)
    nud = est.Nudger(eblk, x, y, ph.z, est.EPConfig(correction=None, readout="classic", solver="newton", steps=20,
                                                    tol=pt.stop_tolerance(be.unit_roundoff, terms)))
    energy = _group_cos(eblk, est.symmetric(nud, ep_beta(be.unit_roundoff, terms)).grad,
                        references.ift_gradient(eblk, x, y, ph.z))
    return {"rows": rows, "energy": energy}


@pytest.mark.claim(CLAIM)
def test_ep_aep_per_group(backend, record, golden) -> None:
    """fa.upstream_failure ("while EP/AEP stay >= 0.99"): three ThickBlocks (T 4, d 8, 2 heads, FFN
    32, c 1; the equilibrium counterparts of the FA block, same parameter groups) at a converged free
    phase (residual <= 64 n u): AEP symmetric (beta = max(1e-3, tau^(1/3)): 1e-3 in float64; and
    holomorphic, N 4, r 1e-2, on the first)
    against the dense IFT gradient, cos >= 0.99 in every group (the BPTT unroll, 100 Euler steps of
    0.3 on the first, agrees with the IFT gradient: recorded); the conservative EnergyBlock (energy attention + Hopfield
    memory) with plain EP, cos >= 0.99 in every group.  Plain EP on the ThickBlock is measured and
    drawn (its asymmetric Jacobian biases it: aep.exact_gradient).  aep.cos_min pinned."""
    c = ep_groups(backend.dtype)
    rows, energy = c["rows"], c["energy"]
    groups = list(rows[0]["aep"])
    aep_min = min(min(r["aep"].values()) for r in rows)
    holo_min = min(rows[0]["aep_holo"].values())
    ep_min = min(min(r["ep"].values()) for r in rows)
    record.example(len(rows) + 1)
    metrics = {"aep.cos_min": min(aep_min, holo_min), "aep.cos_min_symmetric": aep_min,
               "aep.cos_min_holomorphic": holo_min, "ep_energy.cos_min": min(energy.values())}
    for g in groups:
        metrics[f"aep.cos_{g}"] = min(r["aep"][g] for r in rows)
        metrics[f"ep_thick.cos_{g}"] = float(np.mean([r["ep"][g] for r in rows]))
    for k, v in metrics.items():
        record.set(k, v)
    record.set("ep_thick.cos_min", ep_min)
    record.set("bptt_vs_ift.cos_min", min(rows[0]["bptt_vs_ift"].values()))
    record.set("aep_vs_bptt.cos_min", min(rows[0]["aep_vs_bptt"].values()))
    record.max("max_free_phase_residual", max(r["free_residual"] for r in rows))
    record.set("ep_beta", rows[0]["beta"])
    record.figure("ep_group_cosines", {
        "part": "ep", "dtype": backend.dtype, "groups": groups,
        "ep": [[r["ep"][g] for g in groups] for r in rows], "aep": [[r["aep"][g] for g in groups] for r in rows],
        "aep_holo": [[rows[0]["aep_holo"][g] for g in groups]], "energy": energy})
    for r in rows:
        for kind in ("aep", "aep_holo"):
            bad = {g: v for g, v in r.get(kind, {}).items() if not v >= THRESHOLD}
            assert not bad, f"ThickBlock seed {r['seed']}: {kind} cosine below 0.99 in groups {bad}"
    bad = {g: v for g, v in energy.items() if not v >= THRESHOLD}
    assert not bad, f"EnergyBlock: plain EP cosine below 0.99 in groups {bad}"
    golden(GOLDEN, {"aep.cos_min": metrics["aep.cos_min"], "ep_energy.cos_min": metrics["ep_energy.cos_min"]},
           relative_band_golden(backend.dtype), atol=relative_band_golden(backend.dtype), seeds=_seeds(),
           seed=EP_SEEDS[0])
