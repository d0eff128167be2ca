"""Overlap family: R_L reconstructed from logged overlap order parameters (000 sec 7-8).

SUT: models.overlap -- the logging trainer (trains like models.train.train), the order
parameters Omega_{a,b} = K^{-1} E Tr((PH)^a S ((PH)^b)^T) it logs at each checkpoint, the
binomial reconstruction of R_l, and the decoder's directly measured risks.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, target

import models
from certify import sut, sut_overlap
from models import overlap
from properties import overlap as ref
from properties import tolerances
from properties.reference.convert import arb_lower, arb_upper


def _dist(x: float, lo: float, hi: float) -> float:
    """Distance from x to the interval [lo, hi] (0 inside)."""
    return max(x - hi, lo - x, 0.0)


def check_row(row: overlap.OverlapRow, tasks: models.Tasks, labels: np.ndarray, u: float,
              where: str) -> dict:
    """Every check of one logged checkpoint; returns the numbers (asserts inside).

    1. logged Omega^ vs the exact Omega (arb) within eps_ab (`ref.omega_tolerance`);
    2. the SUT's reconstruction fl(w^T Omega^ w) vs its exact evaluation on the logged Omega^
       (`ref.evaluation_tolerance`);
    3. reconstructed R_l vs the exact R_l = K^{-1} mean ||(I - PH)^l x*||^2 (recursion, arb)
       within sum |w_a w_b| eps_ab + rounding (`ref.reconstruction_tolerance`; <= 4^l max eps);
    4. the decoder's directly measured R_l vs the exact R_l (`ref.direct_risk_tolerance`);
    5. the reconstruction error |R^_rec - R^_dir| within the sum of both tolerances.
    """
    P, om = sut.to_numpy(row.P), sut.to_numpy(row.omega)
    rec, direct = sut.to_numpy(row.reconstructed), sut.to_numpy(row.direct)
    H, d, X = sut.to_numpy(tasks.H), sut.to_numpy(tasks.d), sut.to_numpy(tasks.xstar)
    L = om.shape[0] - 1
    ex = ref.exact_row(P, H, X, L)
    assert ref.binomial_identity_holds(ex), f"{where}: reference self-check failed (binomial identity in arb)"
    eps = ref.omega_tolerance(u, P, H, X, L)
    lo, hi = ex.omega_bounds()
    om_err = np.maximum(np.maximum(om - hi, lo - om), 0.0)
    om_ratio = float(np.max(om_err / eps))
    a, b = np.unravel_index(int(np.argmax(om_err / eps)), om.shape)
    assert om_ratio <= 1, (f"{where}: logged Omega[{a},{b}] = {om[a, b]:.17g} differs from the exact "
                           f"[{lo[a, b]:.17g}, {hi[a, b]:.17g}] by more than {eps[a, b]:.3e}")
    tol_dir = ref.direct_risk_tolerance(u, P, H, d, X, ex, labels, direct)
    out = {"omega_ratio": om_ratio, "rec_ratio": 0.0, "dir_ratio": 0.0, "gap_ratio": 0.0, "max_gap": 0.0,
           "max_rec_error": 0.0, "max_tol": 0.0, "rows": 0}
    for l in range(1, L + 1):
        r_lo, r_hi = arb_lower(ex.risks[l]), arb_upper(ex.risks[l])
        ev = float(abs(Fraction(float(rec[l])) - ref.reconstruct_exact(om, l)))
        ev_tol = ref.evaluation_tolerance(u, om, l)
        assert ev <= ev_tol, (f"{where}, l={l}: reconstruction {rec[l]:.17g} is not sum w_a w_b Omega_ab of the "
                              f"logged Omega ({float(ref.reconstruct_exact(om, l)):.17g}, tol {ev_tol:.2e})")
        tol_rec = ref.reconstruction_tolerance(u, eps, om, l)
        e_rec = _dist(float(rec[l]), r_lo, r_hi)
        assert e_rec <= tol_rec, (f"{where}, l={l}: reconstructed R_l {rec[l]:.17g} vs exact "
                                  f"[{r_lo:.17g}, {r_hi:.17g}]: error {e_rec:.3e} > tolerance {tol_rec:.3e}")
        e_dir = _dist(float(direct[l]), r_lo, r_hi)
        assert e_dir <= tol_dir[l], (f"{where}, l={l}: direct R_l {direct[l]:.17g} vs exact "
                                     f"[{r_lo:.17g}, {r_hi:.17g}]: error {e_dir:.3e} > tolerance {tol_dir[l]:.3e}")
        gap = abs(float(rec[l]) - float(direct[l]))
        assert gap <= tol_rec + tol_dir[l], f"{where}, l={l}: |R_rec - R_dir| = {gap:.3e} > {tol_rec + tol_dir[l]:.3e}"
        out["rec_ratio"] = max(out["rec_ratio"], e_rec / tol_rec)
        out["dir_ratio"] = max(out["dir_ratio"], e_dir / tol_dir[l])
        out["gap_ratio"] = max(out["gap_ratio"], gap / (tol_rec + tol_dir[l]))
        out["max_gap"] = max(out["max_gap"], gap)
        out["max_rec_error"] = max(out["max_rec_error"], e_rec)
        out["max_tol"] = max(out["max_tol"], tol_rec + tol_dir[l])
        out["rows"] += 1
    return out


def _trajectories():
    return [pytest.param(family, size, cls, marks=pytest.mark.xdist_group(f"overlap-{family}{size}"),
                         id=f"{family}{size or ''}-{cls}")
            for family, size in sut_overlap.TRAJECTORY_FAMILIES for cls in sut_overlap.CLASSES]


@pytest.mark.claim("overlap.reconstruction")
@pytest.mark.parametrize(("family", "size", "cls"), _trajectories())
def test_overlap_trajectory(family: str, size: int, cls: str, backend, record, golden) -> None:
    """overlap.reconstruction: "R_L(P) = K^{-1} E||(I - P H)^L x*||^2 is reproduced from logged overlap
    order parameters (Tr(PH), Tr(PHPH), Tr(PH S H^T P^T), ...; 000 sec 8: error 1.1e-12 over 108 rows)".

    On the logged training trajectory of `cls` (checkpoints every 20 of 120 Adam steps, L = 6;
    softmax in Jacobian form at x_0 = 0) of the least-squares decoders (64 held-out tasks, K = 8)
    and, as in 000 sec 8, the GP/KRR (n = 64, K = 4, 64 tasks) and PDE (M = 16, K = 24, 16 tasks)
    decoders: every checkpoint and depth l = 1..6 is a row, checked by `check_row`.  The row count,
    the largest |R_rec - R_dir| (000's "reconstruction error") and the final risk are pinned in
    golden/overlap.json.
    """
    run = sut_overlap.trajectory(cls, backend, family, size)
    tasks = sut_overlap.eval_tasks(backend, family, size)
    labels = sut_overlap.labels(backend, family, size)
    steps, every, _ = sut_overlap.schedule(backend, family)
    name = cls if family == "lsq" else f"{family}{size}_{cls}"  # least-squares names predate the families
    assert [r.step for r in run.rows] == list(range(0, steps + 1, every)), "checkpoints not logged every few steps"
    final = run.rows[-1]
    assert all(torch.equal(final.state[k], v) for k, v in run.decoder.state_dict().items()), \
        "the last logged checkpoint is not the trained decoder"
    u = backend.unit_roundoff
    totals = {"rows": 0, "max_gap": 0.0, "max_tol": 0.0, "ratio": 0.0, "max_rec_error": 0.0}
    fig = {"cls": cls, "family": family, "size": size, "steps": [], "omega01": [], "omega11": [], "omega02": [], "omegaLL": [],
           "direct_L": [], "rec_L": [], "gap": [], "tol": []}
    for row in run.rows:
        res = check_row(row, tasks, labels, u, f"{name} step {row.step}")
        totals["rows"] += res["rows"]
        totals["max_gap"] = max(totals["max_gap"], res["max_gap"])
        totals["max_tol"] = max(totals["max_tol"], res["max_tol"])
        totals["max_rec_error"] = max(totals["max_rec_error"], res["max_rec_error"])
        totals["ratio"] = max(totals["ratio"], res["omega_ratio"], res["rec_ratio"], res["dir_ratio"], res["gap_ratio"])
        om = sut.to_numpy(row.omega)
        L = om.shape[0] - 1
        fig["steps"].append(row.step)
        fig["omega01"].append(float(om[0, 1]))
        fig["omega11"].append(float(om[1, 1]))
        fig["omega02"].append(float(om[0, 2]))
        fig["omegaLL"].append(float(om[L, L]))
        fig["direct_L"].append(float(row.direct[L]))
        fig["rec_L"].append(float(row.reconstructed[L]))
        fig["gap"].append(res["max_gap"])
        fig["tol"].append(res["max_tol"])
    record.example(totals["rows"])
    record.sum("rows", totals["rows"])
    record.max("max_reconstruction_error", totals["max_gap"])
    record.max("max_reconstruction_error_vs_exact", totals["max_rec_error"])
    record.max("max_error_over_tolerance", totals["ratio"])
    record.max("max_derived_tolerance", totals["max_tol"])
    record.set(f"{name}.rows", totals["rows"])
    record.set(f"{name}.max_reconstruction_error", totals["max_gap"])
    record.set("order_parameters_logged", f"Omega_ab, 0 <= a <= b <= L = {L}: {(L + 1) * (L + 2) // 2} numbers "
                                          "per checkpoint (every binomial weight w_a w_b is nonzero, so all are needed)")
    record.set(f"{name}.trajectory", f"{steps} Adam steps (models.train.train schedule), checkpoints every {every}, "
                                     f"{len(tasks)} held-out tasks, K = {tasks.K}, L = {L}")
    fig.update({"K": tasks.K, "L": L, "backend": backend.name})
    record.figure("overlap_trajectories", fig)
    golden("overlap", {f"{name}.rows": totals["rows"]}, rtol=0.0, atol=0.0, seed=sut.HELDOUT_SEED)
    golden("overlap", {f"{name}.final_risk_L": float(final.direct[-1])},
           rtol=tolerances.relative_band_golden(backend.dtype), seed=sut.HELDOUT_SEED)
    # a rounding-level number: its band is the derived tolerance, not a relative one
    golden("overlap", {f"{name}.max_reconstruction_error": totals["max_gap"]},
           rtol=tolerances.relative_band_golden(backend.dtype), atol=totals["max_tol"], seed=sut.HELDOUT_SEED)


@pytest.mark.claim("overlap.reconstruction")
@given(case=ref.overlap_cases())
@example(case=ref.OverlapCase("free_linear", K=12, L=10, n=12, kappa=1e3, seed=3))
@example(case=ref.OverlapCase("softmax", K=2, L=1, n=1, kappa=1.0, seed=0))
def test_overlap_any_decoder(case: ref.OverlapCase, backend, record) -> None:
    """overlap.reconstruction for any decoder: a seeded class at its initialization, K = 2..12,
    L = 1..10 (binomial amplification up to 4^10), n = 1..12 tasks of condition 1..1e3; the
    SUT's logged row (models.overlap.log_checkpoint) passes every check of `check_row`."""
    dev, dt = backend.device, backend.torch_dtype
    pc = models.build_preconditioner(case.cls, case.K, device=dev, dtype=dt, seed=case.seed)
    pc.requires_grad_(False)
    dec = models.RichardsonDecoder(pc, case.L)
    prompts = models.LeastSquaresPrompts(models.TaskConfig(K=case.K, M=max(2 * case.K, 8), kappa=case.kappa,
                                                           seed=case.seed % 1000), dev, dt)
    tasks = prompts.sample(case.n, case.seed)
    row = overlap.log_checkpoint(dec, tasks, 0)
    labels = ref.label_errors(sut.to_numpy(tasks.H), sut.to_numpy(tasks.d), sut.to_numpy(tasks.xstar))
    res = check_row(row, tasks, labels, backend.unit_roundoff, str(case))
    ratio = max(res["omega_ratio"], res["rec_ratio"], res["dir_ratio"], res["gap_ratio"])
    record.example()
    record.max("max_error_over_tolerance", ratio)
    record.max("max_depth_checked", case.L)
    target(ratio, label="error/tolerance")


@pytest.mark.claim("overlap.reconstruction")
def test_eq17_triple_does_not_determine_RL(backend, record) -> None:
    """overlap.reconstruction, which parameters are needed: 000 eq 17's three
    (Tr(P Hbar)/K, Tr(P Hbar P Hbar)/K, Tr(P Hbar Sbar Hbar^T P^T)/K) do not determine R_L for L >= 2.

    P_A = diag(0, 1/2, 1/2), P_B = diag(2/3, 1/6, 1/6), H = I_3, tasks x* = e_1, e_2, e_3: the
    triple (1/3, 1/6, 1/18) and R_1 = 1/6 coincide exactly, R_2 = 1/8 vs 211/1944.  The SUT's
    logged Omega (Omega_01, Omega_02, Omega_11 carry the triple here) and reconstructed R_l show
    the same within the derived tolerance; R_2 needs Omega_12 and Omega_22.
    """
    pair = ref.Eq17Pair()
    K = pair.K
    assert pair.triple(pair.m_A) == pair.triple(pair.m_B), "the exact triples differ"
    assert pair.risk(pair.m_A, 1) == pair.risk(pair.m_B, 1) == Fraction(1, 6)
    assert (pair.risk(pair.m_A, 2), pair.risk(pair.m_B, 2)) == (Fraction(1, 8), Fraction(211, 1944))
    dev, dt = backend.device, backend.torch_dtype
    H = torch.eye(K, dtype=torch.float64).expand(K, K, K).contiguous().to(dev, dt)
    X = torch.eye(K, dtype=torch.float64).to(dev, dt)
    tasks = models.Tasks(H, X.clone(), X)
    u = backend.unit_roundoff
    rec, tol2 = {}, {}
    for name, m in (("A", pair.m_A), ("B", pair.m_B)):
        P = torch.diag(torch.tensor([float(x) for x in m], dtype=torch.float64)).to(dev, dt)
        om = sut.to_numpy(overlap.order_parameters(P, tasks.H, tasks.xstar, 2))
        r = sut.to_numpy(overlap.reconstruct_risks(torch.as_tensor(om, dtype=dt, device=dev)))
        Pn = sut.to_numpy(P)
        m_hat = tuple(Fraction(float(x)) for x in np.diag(Pn))  # the SUT's rounded P, exactly
        eps = ref.omega_tolerance(u, Pn, sut.to_numpy(H), sut.to_numpy(X), 2)
        for (a, b) in ((0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
            want = pair.omega(m_hat, a, b)
            assert abs(Fraction(float(om[a, b])) - want) <= Fraction(eps[a, b]), (
                f"P_{name}: logged Omega[{a},{b}] = {om[a, b]!r} vs exact {float(want)!r} (tol {eps[a, b]:.2e})")
        for l in (1, 2):
            want = pair.risk(m_hat, l)
            tol = ref.reconstruction_tolerance(u, eps, om, l)
            assert abs(Fraction(float(r[l])) - want) <= Fraction(tol), (
                f"P_{name}: reconstructed R_{l} = {r[l]!r} vs exact {float(want)!r} (tol {tol:.2e})")
            tol2[name] = tol
        rec[name] = r
    # certified different: the SUT's two R_2 are further apart than their two tolerances
    assert abs(rec["A"][2] - rec["B"][2]) > tol2["A"] + tol2["B"], (
        f"R_2 = {rec['A'][2]:.6g} and {rec['B'][2]:.6g} are not certified different")
    record.example(2)
    record.set("eq17_triple_determines_R_L", "L = 1 only, and only when H is fixed and S is a known multiple of I "
               "(then Omega_01 = Tr(PH) Tr(S)/K^2); for L >= 2 no: P = diag(0,1/2,1/2) vs diag(2/3,1/6,1/6), "
               "H = I, S = I/3 have equal triples (1/3, 1/6, 1/18) and R_1 = 1/6 but R_2 = 1/8 vs 211/1944")
    record.set("eq17_counterexample_R2", f"{float(rec['A'][2]):.6g} vs {float(rec['B'][2]):.6g} (SUT, logged Omega)")
