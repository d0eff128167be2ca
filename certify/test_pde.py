"""Family P: the PDE prompt encoder (000 sec 5, eqs 10-12; 001 sec 5.4, Table 5; 002 sec 1.1).

SUT: models.pde.GalerkinFamily (P1 finite elements, n = 24, for -(a u')' + c u on [0, 1] with
K = 4 affine coefficient modes, A(z) = A_0 + sum_k z_k A_k SPD on z in [-1, 1]^4), its prompts
(f_i from a squared-exponential GP, u_i = A(z)^{-1} f_i by Cholesky, test functions
v_r = sqrt(2) sin(r pi x)), its weak-form assembly (G, b) and the ridge encoder models.pde.encode;
the query decoders of every preconditioner class trained on its encoded tasks (models.pde.PDEPrompts)
by certify.sut_families.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, target
from hypothesis import strategies as st

from certify import registry, sut
from certify import sut_families as sf
from certify.test_gp import check_best_method
from models import pde as pde_mod
from properties import pde as ref
from properties import tolerances
from properties.pde import PDECase, pde_cases
from properties.reference.convert import precision, to_arb_mat


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _family(backend) -> pde_mod.GalerkinFamily:
    return pde_mod.GalerkinFamily(pde_mod.N_NODES, backend.device, backend.torch_dtype)


def _prompt_arrays(p: pde_mod.Prompt) -> dict[str, np.ndarray]:
    return {k: _np(getattr(p, k)) for k in ("A0", "Ak", "z", "V", "F", "U", "G", "b")}


def _seed_sizes(test):
    """The seed's setting (K = 4) at both prompt sizes, extreme z and q, always run."""
    for M in pde_mod.PROMPT_SIZES:
        for q in (1, 8, 24):
            test = example(case=PDECase(z=(1.0, -1.0, 1.0, -1.0), M=M, q=q, seed=0))(test)
            test = example(case=PDECase(z=(0.0, 0.0, 0.0, 0.0), M=M, q=q, seed=1))(test)
    return test


@pytest.mark.claim("pde.weak_form")
@given(case=pde_cases())
@_seed_sizes
def test_pde_weak_form(case: PDECase, backend, record) -> None:
    """pde.weak_form: "noise-free prompts satisfy G z = b with G_{(i,r),k} = <A_k u_i, v_r>,
    b_{(i,r)} = <f_i - A_0 u_i, v_r>" (000 sec 5 eq 11; 001 sec 5.4; 002 sec 1.1).

    From the SUT's own A_0, A_k, z, V, F and computed U: (1) its G and b against the arb
    (212-bit) evaluation of eq 11 at that U, within the assembly rounding bounds; (2) the exact
    weak-form residual G(U) z - b(U) = V^T (A(z) U - F) within the projected residual of the
    float Cholesky solve; (3) the SUT's own G z - b (evaluated exactly) against 0 within the sum.
    Tolerance: `properties.pde.weak_form_tolerance` (gamma_{2K} for A(z), Higham Thm 10.4 for
    the solve, gamma_{2n+1} for the projections; SAFETY 2).
    """
    fam = _family(backend)
    p = fam.prompt(case.z, case.M, case.q, case.seed)
    a = _prompt_arrays(p)
    u = backend.unit_roundoff
    tol = ref.weak_form_tolerance(a["A0"], a["Ak"], a["z"], a["V"], a["F"], a["U"], u)
    assert tol.cholesky_guaranteed, f"{case}: A(z) too ill-conditioned for the derived bound"
    cols, b_exact = ref.weak_form_reference(a["A0"], a["Ak"], a["V"], a["F"], a["U"])
    G_exact = ref.matrix_from_cols(cols)
    errs = {
        "G": (ref.error_upper(G_exact, a["G"]), tol.G),
        "b": (ref.error_upper(b_exact, a["b"]), tol.b),
        "exact_residual": (ref.vec_norm_upper(G_exact * to_arb_mat(a["z"]) - b_exact), tol.solve_residual),
        "Gz_minus_b": (ref.residual_upper(a["G"], a["b"], a["z"]), tol.Gz_minus_b),
    }
    ratios = {k: e / t for k, (e, t) in errs.items()}
    worst = max(ratios.values())
    scale = float(np.linalg.norm(a["V"].T @ a["F"]))  # the size of the terms that cancel in G z - b
    record.example()
    record.max("max_error_over_tolerance", worst)
    record.max("max_Gz_minus_b", errs["Gz_minus_b"][0])
    record.max("max_rel_Gz_minus_b", errs["Gz_minus_b"][0] / scale if scale > 0 else 0.0)
    record.max(f"M{case.M}.max_Gz_minus_b", errs["Gz_minus_b"][0])
    target(worst, label="error/tolerance")
    for k, (e, t) in errs.items():
        assert e <= t, f"{case}: {k} error <= {e:.3e} exceeds the derived tolerance {t:.3e}"


def _ridge_checks(p: pde_mod.Prompt, lam: float, u: float):
    """SUT z_enc at lambda, its arb ridge reference and the derived bounds."""
    a = _prompt_arrays(p)
    ze = _np(pde_mod.encode(p.G, p.b, lam))
    lam_sut = float(torch.tensor(lam, dtype=p.G.dtype))  # lambda as the SUT's dtype holds it
    r = ref.ridge_reference(a["G"], a["b"], a["z"], lam_sut)
    tol_ridge = ref.ridge_tolerance(a["G"], a["b"], ze, lam_sut, r.sinv_norm, u)
    wtol = ref.weak_form_tolerance(a["A0"], a["Ak"], a["z"], a["V"], a["F"], a["U"], u)
    # z_enc - z + lambda S^-1 z = (z_enc - z_ridge) + S^-1 G^T (b - G z): the second term is
    # bounded by ||S^-1 G^T|| times the certified weak-form bound on ||G z - b||
    tol_bias = tol_ridge + r.sinv_gt_norm * wtol.Gz_minus_b
    return a, ze, lam_sut, r, tol_ridge, tol_bias


@pytest.mark.claim("pde.encoder_recovery")
@given(case=pde_cases(), log10_lam=st.floats(-8.0, 0.0, allow_nan=False))
@example(case=PDECase(z=(1.0, -1.0, 1.0, -1.0), M=4, q=1, seed=0), log10_lam=-8.0)
@example(case=PDECase(z=(0.5, 0.5, -0.5, 0.25), M=16, q=8, seed=0), log10_lam=-4.0)
def test_pde_encoder_identity_and_bias(case: PDECase, log10_lam: float, backend, record) -> None:
    """pde.encoder_recovery (identity and bias): "z_enc = (G^T G + lambda_z I)^{-1} G^T b
    recovers z, bias O(lambda_z)" (000 sec 5 eq 12; 001 sec 5.4).

    (i) The SUT's z_enc equals the arb ridge solution for its own G, b, lambda within
    `properties.pde.ridge_tolerance` (||S^-1|| certified in arb).  (ii) Noise-free prompts:
    z_enc - z = -lambda (G^T G + lambda I)^{-1} z exactly (arb), so the SUT's z_enc - z matches
    it within tol_ridge + ||S^-1 G^T|| * (certified bound on ||G z - b||), and
    ||z_enc - z|| <= lambda ||z|| / sigma_min(G)^2 + that tolerance, sigma_min(G)^2 certified
    from below in arb.
    """
    lam = 10.0**log10_lam
    fam = _family(backend)
    p = fam.prompt(case.z, case.M, case.q, case.seed)
    u = backend.unit_roundoff
    a, ze, lam_sut, r, tol_ridge, tol_bias = _ridge_checks(p, lam, u)
    err_ridge = ref.error_upper(r.z_ridge, ze)
    # exact bias -lambda S^-1 z against the SUT's z_enc - z (taken exactly via arb)
    with precision():
        dz = to_arb_mat(ze) - to_arb_mat(a["z"])
        err_bias = ref.vec_norm_upper(dz - r.bias)
        dz_norm = ref.vec_norm_upper(dz)
    z_norm = float(np.linalg.norm(a["z"])) * (1 + 2.0**-50)
    bound = lam_sut * z_norm / r.sigma_min2_lower + tol_bias if r.sigma_min2_lower > 0 else np.inf
    ratios = {"ridge": err_ridge / tol_ridge, "bias_identity": err_bias / tol_bias}
    worst = max(ratios.values())
    record.example()
    record.max("max_error_over_tolerance", worst)
    record.max("max_bias_over_bound", dz_norm / bound if np.isfinite(bound) else 0.0)
    target(worst, label="error/tolerance")
    assert err_ridge <= tol_ridge, (
        f"{case} lambda={lam:.3e}: ridge error <= {err_ridge:.3e} exceeds tolerance {tol_ridge:.3e}")
    assert err_bias <= tol_bias, (
        f"{case} lambda={lam:.3e}: bias identity error <= {err_bias:.3e} exceeds tolerance {tol_bias:.3e}")
    assert dz_norm <= bound, f"{case} lambda={lam:.3e}: bias {dz_norm:.3e} exceeds lambda||z||/sigma_min^2 bound {bound:.3e}"


ORDER_CASE = PDECase(z=(0.6, -0.4, 0.8, -0.7), M=16, q=8, seed=7)


@pytest.mark.claim("pde.encoder_recovery")
def test_pde_encoder_bias_order(backend, record) -> None:
    """pde.encoder_recovery (order): bias O(lambda_z).  Fit the slope of log||z_enc - z|| on
    log lambda over 9 lambdas, geometric from lambda_max u^{1/4} to lambda_max = 0.05
    sigma_min(G)^2 (sigma_min certified from below in arb; u^{1/4} keeps the bias well above
    the rounding floor: 4 decades in float64, 1.8 in float32).  Interval
    (`properties.pde.bias_slope`): the order lies in [s - hw, s + hw + curvature] with certainty,
    hw from rigorous arb bounds on |log e_j - log||lambda_j S_j^-1 z|||, curvature <=
    lambda_max/(sigma_min^2 + lambda_max) <= 0.048.  Asserted: the fit is resolved (hw <= 0.05)
    and 1 lies in the interval.
    """
    fam = _family(backend)
    p = fam.prompt(ORDER_CASE.z, ORDER_CASE.M, ORDER_CASE.q, ORDER_CASE.seed)
    u = backend.unit_roundoff
    _, _, _, r0, _, _ = _ridge_checks(p, 1.0, u)
    smin2 = r0.sigma_min2_lower
    assert smin2 > 0, "sigma_min(G) not certified positive"
    lam_hi = 0.05 * smin2
    lam_lo = lam_hi * u**0.25
    grid = np.geomspace(lam_lo, lam_hi, 9)
    ys, devs, errs = [], [], []
    for lam in grid:
        a, ze, lam_sut, r, _, _ = _ridge_checks(p, float(lam), u)
        y, dev = ref.log_ratio_bounds(ze, a["z"], r.bias)
        ys.append(y)
        devs.append(dev)
        errs.append(float(np.exp(y)))
    grid_sut = [float(torch.tensor(float(lam), dtype=p.G.dtype)) for lam in grid]
    curvature = lam_hi / (smin2 + lam_hi)
    fit = ref.bias_slope(grid_sut, ys, devs, curvature)
    record.example(len(grid))
    record.set("order_slope", fit.slope)
    record.set("order_ci_lo", fit.lo)
    record.set("order_ci_hi", fit.hi)
    record.set("order_lambda_range", f"[{lam_lo:.3e}, {lam_hi:.3e}]")
    record.max("order_max_log_deviation", max(devs))
    assert fit.rounding_halfwidth <= 0.05, (
        f"bias order: fit not resolved, |log e_j - log e*_j| up to {max(devs):.3e} "
        f"(half-width {fit.rounding_halfwidth:.3e}); SUT bias norms {errs}")
    assert fit.lo <= 1.0 <= fit.hi, (
        f"bias order: slope {fit.slope:.4f}, certified interval [{fit.lo:.4f}, {fit.hi:.4f}] excludes 1 "
        f"(lambda in [{lam_lo:.3e}, {lam_hi:.3e}])")


@pytest.mark.claim("pde.encoder_recovery")
def test_pde_encoder_heldout_metrics(backend, record, golden) -> None:
    """pde.encoder_recovery (measured, 001 Table 5: z MSE 6.1356e-8, A rel 6.0764e-5): on a
    fixed held-out set of 64 noise-free prompts (M = 16, q = 8, z ~ U[-1,1]^4, seed 0) at
    lambda_z = 1e-4, z MSE and mean ||A(z_enc) - A(z)||_F / ||A(z)||_F, pinned in golden/pde.json
    (band sqrt(u)).
    """
    fam = _family(backend)
    m = pde_mod.heldout_metrics(fam, pde_mod.LAMBDA_Z)
    record.example(64)
    record.set("lambda_z", pde_mod.LAMBDA_Z)
    record.set("z_mse", m["z_mse"])
    record.set("A_rel_err", m["A_rel_err"])
    assert np.isfinite(m["z_mse"]) and np.isfinite(m["A_rel_err"])
    golden("pde", m, rtol=tolerances.relative_band_golden(backend.dtype),
           seeds=registry.CLAIMS["pde.encoder_recovery"].seed_values, seed=0)


# --------------------------------------------------------------------------- #
# pde.method_comparison: the query decoder after the prompt encoder, per class
# --------------------------------------------------------------------------- #
def _rows():
    return [pytest.param(size, cls, marks=pytest.mark.xdist_group(sf.group("pde", size)),
                         id=f"{sf.label('pde', size)}-{cls}")
            for size in sf.PROMPT_SIZES["pde"] for cls in sut.CLASSES]


ROW_METRICS = ("e2e_mse", "risk", "e2e_eb_upper", "rigorous_violation_rate", "error_bound_ratio", "mean_contraction")
ENCODER_METRICS = ("floor_mse", "z_mse", "A_rel_err")


@pytest.mark.claim("pde.method_comparison")
@pytest.mark.parametrize(("size", "cls"), _rows())
def test_pde_method_row(size: int, cls: str, backend, record, golden) -> None:
    """pde.method_comparison (table and bound): "query decoder u_{l+1} = u_l + P(f* - A(z_enc) u_l)
    per preconditioner class; best free_linear MSE 5.976e-6, encoded-solve floor 1.7e-9,
    violation 0" (001 Table 5; 000 sec 5 eq 13).

    One row per class and PDE prompt size (M = 4, 16 solution pairs; K = 4 coefficients; 24
    nodes): on 512 held-out encoded tasks, the end-to-end query MSE ||u_L - u*||^2/n against the
    true solution u* = A(z)^-1 f*, the decoder MSE against x* = A(z_enc)^-1 f*, the clipped EB
    upper bound of the end-to-end losses (c = 1, delta = 0.05), the encoder's z MSE and A
    relative error and the encoded-solve floor ||x* - u*||^2/n (shared by the classes), and the
    rigorous norm-bound violation rate of 000 eq 4 on A(z_enc) (every task; softmax in Jacobian
    form), which must be 0.  Pinned in golden/pde.json with the setup stated there.
    """
    t = sf.table("pde", size, cls, backend)
    lab = sf.label("pde", size)
    metrics = {f"{lab}.{cls}.{k}": t[k] for k in ROW_METRICS}
    metrics.update({f"{lab}.{k}": t[k] for k in ENCODER_METRICS})
    for k, v in metrics.items():
        record.set(k, v)
    record.max("max_violation_rate", t["rigorous_violation_rate"])
    record.min("best_eb_upper", t["e2e_eb_upper"])
    record.example(t["n_tasks"])
    record.figure("pde_method_comparison", {"size": size, "cls": cls, "K": t["K"],
                                            **{k: t[k] for k in ROW_METRICS + ENCODER_METRICS}, **t["curves"]})
    assert t["rigorous_violations"] == 0, f"{lab} {cls}: {t['rigorous_violations']} held-out tasks violate 000 eq 4"
    golden("pde", metrics, rtol=tolerances.relative_band_golden(backend.dtype),
           atol=64 * backend.unit_roundoff,  # violation rates that are exactly 0 stay 0
           seeds=registry.CLAIMS["pde.method_comparison"].seed_values, seed=sut.HELDOUT_SEED,
           setup=sf.setup("pde"))


@pytest.mark.claim("pde.method_comparison")
@pytest.mark.parametrize("size", [pytest.param(s, marks=pytest.mark.xdist_group(sf.group("pde", s)),
                                               id=sf.label("pde", s)) for s in sf.PROMPT_SIZES["pde"]])
def test_pde_best_method(size: int, backend, record) -> None:
    """pde.method_comparison (ranking): "best free_linear" (001 Table 5), by end-to-end query MSE
    at each PDE prompt size on the 512 common held-out tasks (test_gp.check_best_method)."""
    check_best_method("pde", size, backend, record, "e2e_mse", lambda cls: sf.e2e_losses(size, cls, backend))
