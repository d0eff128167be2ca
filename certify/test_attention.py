"""Family F (attention): the Q/K gauge and linear-vs-nonlinear update maps (seed 002 sec 8, 12.10).

SUT: models.preconditioners.Flexformer (kernel "exp" and "rbf"), FreeLinear, Diagonal,
SoftmaxUpdate at seeded initializations, and models.attention.gauge_transform.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given, target

from models import attention as attn
from models import preconditioners as pc
from properties import attention as ref
from properties import tolerances
from properties.reference.convert import workdps
from properties.tolerances import gamma


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _flex(K: int, m: int, seed: int, kernel: str, backend) -> pc.Flexformer:
    return pc.Flexformer(K, device=backend.torch_device, dtype=backend.torch_dtype, seed=seed, m=m,
                         kernel=kernel)


# --------------------------------------------------------------------------- #
# attention.qk_gauge
# --------------------------------------------------------------------------- #
def _gauge_examples(test):
    test = example(case=ref.GaugeCase(16, 16, 7, 11, 1e4))(test)
    return example(case=ref.GaugeCase(2, 1, 3, 5, 1.0))(test)


@pytest.mark.claim("attention.qk_gauge")
@given(case=ref.gauge_cases())
@_gauge_examples
def test_qk_gauge_exp_kernel(case: ref.GaugeCase, backend, record) -> None:
    """attention.qk_gauge: "W_Q -> A W_Q, W_K -> A^{-T} W_K leaves W_Q^T W_K and the attention
    output unchanged" (002 sec 12.10), for the Flexformer's q.k kernel ("exp"); the check is
    `_check_gauge_exp` (shared with attention.qk_gauge_dot_kernel)."""
    _check_gauge_exp(case, backend, record)


@pytest.mark.claim("attention.qk_gauge_dot_kernel")
@given(case=ref.gauge_cases())
@_gauge_examples
def test_qk_gauge_dot_kernel(case: ref.GaugeCase, backend, record) -> None:
    """attention.qk_gauge_dot_kernel: "for attention whose kernel is a function of q.k (softmax /
    exp kernel), W_Q -> A W_Q, W_K -> A^{-T} W_K (A invertible) leaves W_Q^T W_K, the attention
    matrix, P_theta and the update output unchanged; for distance kernels (rbf) only orthogonal
    A does" (002 sec 12.10, corrected).  q.k kernels: `_check_gauge_exp`; the rbf half is the
    counterexample / orthogonal check of test_qk_gauge_rbf_kernel (recorded under
    attention.qk_gauge)."""
    _check_gauge_exp(case, backend, record)


def _check_gauge_exp(case: ref.GaugeCase, backend, record) -> None:
    """W_Q -> A W_Q, W_K -> A^{-T} W_K on a Flexformer with the "exp" kernel.

    Flexformer convention: q_i = W_Q E_i, k_j = W_K E_j (rows of E W_Q^T, E W_K^T), so the
    logit is E_i W_Q^T W_K E_j^T / sqrt(m) and the transform is W_Q -> A W_Q, W_K -> A^{-T} W_K
    (models.attention.gauge_transform).  Checked: the transformed module's fl(W_Q'^T W_K')
    against the original W_Q^T W_K in arb; its attention matrix, P_theta and update P r
    against the original module's.  Tolerances (properties.attention): parameter rounding of
    A W_Q and of the LU solve (scaling with ||A^{-1}||_2), the product, the logits and the
    softmax propagation (e^{2 delta} - 1), then P = a A v + diag(s) and P r.
    """
    u = backend.unit_roundoff
    A = case.A
    f0 = _flex(case.K, case.m, case.seed, "exp", backend)
    f1 = attn.gauge_transform(f0, torch.from_numpy(A))
    Wq, Wk, Wq1, Wk1, E = (_np(x) for x in (f0.W_Q, f0.W_K, f1.W_Q, f1.W_K, f0.E))
    m, K = case.m, case.K
    # tolerance: parameter rounding (dQ, dK) propagated through the product, + gamma_m(u) |Q'||K'|
    dQ, dK = ref.gauge_param_errors(A, Wq, Wk, Wq1, Wk1, u)
    qn, kn = float(np.linalg.norm(Wq1)), float(np.linalg.norm(Wk1))
    params_M, tol_M = ref.gauge_product_tolerance(dQ, dK, qn, kn, m, u)
    M1 = _np(f1.W_Q.T @ f1.W_K)
    err_M = ref.gauge_invariant_error_upper(Wq, Wk, M1)
    ratio_M = err_M / tol_M

    # attention matrices: logit rounding of each module + the parameter change in the logits
    A0, A1 = _np(f0.attention_matrix()), _np(f1.attention_matrix())
    e_max = float((E * E).sum(1).max())
    delta = (ref.exp_logit_error(E, Wq, Wk, u) + ref.exp_logit_error(E, Wq1, Wk1, u)
             + e_max * params_M / math.sqrt(m))
    q0, k0 = (_np(x) for x in f0.queries_keys())
    logits = q0 @ k0.T / math.sqrt(m)
    spread = float((logits.max(1, keepdims=True) - logits).max()) + delta
    tol_A = ref.softmax_tolerance(delta, K, u, spread)
    ratio_A = float(np.abs(A1 - A0).max()) / tol_A

    # P_theta = a A v + diag(s): two products (gamma_3 covers them with the input error) + the sum
    P0, P1 = _np(f0.matrix()), _np(f1.matrix())
    a, v = np.abs(_np(f0.a)), np.abs(_np(f0.v))
    tol_P = np.outer(a, v) * (tol_A + 3 * gamma(3, u)) * (1 + gamma(3, u)) + 3 * u * np.abs(P0)
    ratio_P = float((np.abs(P1 - P0) / tol_P).max())

    # update output P r on the same (bitwise identical) residual r: |dP||r| + gamma_K (|P0|+|P1|)|r|
    g = np.random.default_rng(case.seed ^ 0x5A5A)
    z = torch.from_numpy(g.standard_normal(K)).to(backend.torch_device, backend.torch_dtype)
    d = torch.from_numpy(g.standard_normal(K)).to(backend.torch_device, backend.torch_dtype)
    H = torch.from_numpy(np.eye(K) + g.standard_normal((K, K)) / math.sqrt(K)).to(
        backend.torch_device, backend.torch_dtype)
    with torch.no_grad():
        D0, D1 = _np(f0.update(z, H, d)), _np(f1.update(z, H, d))
        r = np.abs(_np(d - H @ z))
    tol_D = tol_P @ r + gamma(K, u) * (np.abs(P0) + np.abs(P1)) @ r
    ratio_D = float((np.abs(D1 - D0) / tol_D).max())

    ratio = max(ratio_M, ratio_A, ratio_P, ratio_D)
    record.example()
    record.max("max_error_over_tolerance", ratio)
    record.max("max_WqTWk_error_over_tolerance", ratio_M)
    record.max("max_attention_error_over_tolerance", ratio_A)
    record.max("max_cond_A", float(np.linalg.cond(A)))
    record.max("max_W_Q_change_rel", float(np.linalg.norm(Wq1 - Wq) / max(np.linalg.norm(Wq), 1e-300)))
    target(ratio, label="error/tolerance")
    assert ratio_M <= 1, f"{case}: ||W_Q'^T W_K' - W_Q^T W_K||_F <= {err_M:.3e} exceeds the derived tolerance {tol_M:.3e}"
    assert ratio_A <= 1, f"{case}: attention matrix changed by {np.abs(A1 - A0).max():.3e} > derived tolerance {tol_A:.3e}"
    assert ratio_P <= 1, f"{case}: P_theta changed beyond the derived tolerance (ratio {ratio_P:.3g})"
    assert ratio_D <= 1, f"{case}: update output changed beyond the derived tolerance (ratio {ratio_D:.3g})"


@pytest.mark.claim("attention.qk_gauge")
def test_qk_gauge_rbf_kernel(backend, record) -> None:
    """attention.qk_gauge for the Flexformer's "rbf" kernel exp(-||q - k||^2 / (2m)), which is not
    a function of q.k alone: the statement fails for non-orthogonal A and holds for orthogonal A
    (then A^{-T} = A and ||A q - A k|| = ||q - k||).

    Counterexample: A = diag(2, 1, ..., 1) (A^{-T} = diag(1/2, 1, ..., 1): the SUT's transform is
    exact in floating point); W_Q^T W_K is unchanged exactly (checked in arb: error 0), but the
    attention matrices of the two modules, computed in mpmath at 50 digits from their exact
    float parameters, differ by far more than 1e-6.  Orthogonal A: a signed permutation (exact
    in floats) leaves the SUT's rbf attention unchanged within the rounding of the m-term
    squared-distance sums (gamma_{m+3} of each logit) propagated through the softmax.
    Verdict: conditional (holds for kernels that depend on q.k only, e.g. "exp").
    """
    u = backend.unit_roundoff
    K, m, seed = 6, 4, 2026
    f0 = _flex(K, m, seed, "rbf", backend)
    Ad = np.eye(m)
    Ad[0, 0] = 2.0
    f1 = attn.gauge_transform(f0, torch.from_numpy(Ad))
    Wq, Wk, Wq1, Wk1, E = (_np(x) for x in (f0.W_Q, f0.W_K, f1.W_Q, f1.W_K, f0.E))
    M_err = ref.gauge_exact_change_upper(Wq, Wk, Wq1, Wk1)  # exact products in arb
    with workdps():
        diff = ref.mp_max_abs_diff(ref.rbf_attention_mp(E, Wq, Wk), ref.rbf_attention_mp(E, Wq1, Wk1))
    diff_f = float(diff)
    sut_diff = float(np.abs(_np(f1.attention_matrix()) - _np(f0.attention_matrix())).max())

    # orthogonal (signed permutation) A: rbf attention unchanged up to rounding
    g = np.random.default_rng(seed)
    perm = g.permutation(m)
    Ao = np.zeros((m, m))
    Ao[np.arange(m), perm] = g.choice([-1.0, 1.0], m)
    f2 = attn.gauge_transform(f0, torch.from_numpy(Ao))
    q0, k0 = (_np(x) for x in f0.queries_keys())
    sq = ((q0[:, None, :] - k0[None, :, :]) ** 2).sum(-1) / (2 * m)
    # each logit: m squared differences summed (gamma_{m+3} relative, incl. the division), both modules
    delta = 2 * gamma(m + 3, u) * float(sq.max()) * (1 + 1e-6)
    tol_o = ref.softmax_tolerance(delta, K, u, float(sq.max()) + delta)
    err_o = float(np.abs(_np(f2.attention_matrix()) - _np(f0.attention_matrix())).max())

    record.example()
    record.set("rbf_diag2_attention_change_mp", diff_f)
    record.set("rbf_diag2_attention_change_sut", sut_diff)
    record.set("rbf_diag2_WqTWk_change_arb_upper", M_err)
    record.set("rbf_orthogonal_error_over_tolerance", err_o / tol_o)
    record.verdict(
        "conditional",
        reason="holds for kernels that are functions of q.k (Flexformer 'exp'); for the 'rbf' kernel "
               "exp(-||q-k||^2/(2m)) it holds only for orthogonal A: with A = diag(2,1,..,1) W_Q^T W_K is "
               f"unchanged exactly but the attention matrix changes by {diff_f:.4g} (mpmath, 50 digits)",
        counterexample={"kernel": "rbf", "K": K, "m": m, "seed": seed, "A": Ad.tolist(),
                        "max_attention_change_mp": diff_f, "WqTWk_change_upper": M_err},
    )
    assert M_err == 0.0, f"rbf counterexample: W_Q^T W_K should be unchanged exactly, got {M_err:.3e}"
    assert diff_f > 1e-6 and abs(sut_diff - diff_f) <= 1e-3 * diff_f + 1e-5, (
        f"rbf counterexample not confirmed: mp change {diff_f:.3e}, SUT change {sut_diff:.3e}")
    assert err_o <= tol_o, f"rbf with orthogonal A: attention changed by {err_o:.3e} > {tol_o:.3e}"


# --------------------------------------------------------------------------- #
# attention.linear_iff_global
# --------------------------------------------------------------------------- #
def _build(cls: str, K: int, seed: int, backend) -> pc.Preconditioner:
    kw = dict(device=backend.torch_device, dtype=backend.torch_dtype, seed=seed)
    if cls.startswith("flexformer_"):
        return pc.Flexformer(K, m=4, kernel=cls.split("_")[1], **kw)
    if cls == "softmax":
        return pc.SoftmaxUpdate(K, m=4, embed=3, **kw)
    return pc.build_preconditioner(cls, K, **kw)


def _inputs(case: ref.MapCase, backend):
    z, H, d = case.inputs()
    t = [torch.from_numpy(x).to(backend.torch_device, backend.torch_dtype) for x in (z, H, d)]
    return t, [_np(x) for x in t]  # the dtype-rounded inputs, exact in float64


@pytest.mark.claim("attention.linear_iff_global")
@given(case=ref.map_cases(ref.LINEAR_CLASSES))
@example(case=ref.MapCase("flexformer_exp", 8, 1, 2, 24))
def test_linear_update_is_global_P(case: ref.MapCase, backend, record) -> None:
    """attention.linear_iff_global, direction "linear => global P": "Delta(z,H,d) = P r for all
    inputs iff the attention is linear; ... P_proj = E[Delta r^T] E[r r^T]^+ is only a
    diagnostic" (002 sec 8).

    For the linear classes (free P, diagonal, Flexformer exp / rbf) the SUT's update(z, H, d)
    equals P (d - H z) with P = frozen_matrix() for every drawn input, against arb;
    tolerance `tolerances.richardson_step_error` (rounding of r = d - Hz and of P r).  The
    projection P_proj of the N = 3K samples (computed in arb against the exact residuals) then
    leaves a residual sum_n ||Delta_n - P_proj r_n||^2 <= sum_n tol_n^2 (P itself attains it):
    zero up to rounding.
    """
    u = backend.unit_roundoff
    pre = _build(case.cls, case.K, case.seed, backend)
    (z, H, d), (zn, Hn, dn) = _inputs(case, backend)
    with torch.no_grad():
        D = _np(pre.update(z, H, d))
        P = _np(pre.frozen_matrix())
    pf = float(np.linalg.norm(P))
    ratio, tols = 0.0, []
    for n in range(case.N):
        tol = tolerances.richardson_step_error(u, case.K, pf, float(np.linalg.norm(Hn[n])),
                                               float(np.linalg.norm(dn[n])), float(np.linalg.norm(zn[n])))
        err = ref.update_identity_error(P, Hn[n], zn[n], dn[n], D[n])
        tols.append(tol)
        ratio = max(ratio, err / tol)
    lo, hi, _ = ref.projection_residual(D, zn, Hn, dn)
    floor = float(sum(t * t for t in tols))
    ratio_proj = hi / floor
    record.example()
    record.max("max_error_over_tolerance", max(ratio, ratio_proj))
    record.max("linear_max_identity_error_over_tolerance", ratio)
    record.max("linear_max_projection_residual_over_rounding_floor", ratio_proj)
    target(max(ratio, ratio_proj), label="error/tolerance")
    assert ratio <= 1, f"{case}: ||Delta - P r|| exceeds the derived tolerance (ratio {ratio:.3g})"
    assert ratio_proj <= 1, (
        f"{case}: projection residual {hi:.3e} exceeds the rounding floor {floor:.3e} of a linear class")


# the softmax map's rounding scale: a generous gamma of its longest chain (tokens -> q, k ->
# logits -> softmax -> weighted sum), used only for the margin of the counterexample
def _softmax_floor(pre: pc.SoftmaxUpdate, r: np.ndarray, u: float) -> float:
    width = 3 + pre.embed
    n = 4 * (width + pre.m + pre.K) + 16
    v, s = np.abs(_np(pre.v)), np.abs(_np(pre.s))
    return gamma(n, u) * (float(np.abs(v * r).sum()) * 10 + float(np.linalg.norm(s * r)))


MARGIN_H = 1e6
MARGIN_P = 1e3  # squared norms: the residual norm is >= ~32x the (already generous) rounding floor
SCALE = 4.0  # c in Delta(0, H, c d) = c Delta(0, H, d); a power of 2, so c d is exact


@pytest.mark.claim("attention.linear_iff_global")
@given(case=ref.map_cases(("softmax",)))
def test_softmax_update_not_global(case: ref.MapCase, backend, record) -> None:
    """attention.linear_iff_global, direction "softmax => no global P" (002 sec 8).

    (a) Homogeneity counterexample: a global P would give Delta(0, H, c d) = c Delta(0, H, d)
    (c = SCALE = 4).  Of the N drawn (H_n, d_n) the one with the largest SUT defect is taken; its
    defect ||Delta(0,H,cd) - c Delta(0,H,d)|| is computed by the SUT and in
    mpmath (50 digits, from the exact float parameters); the mp defect must exceed MARGIN_H = 1e6
    times (1 + c) x the map's double-precision rounding scale (a generous gamma of its longest
    chain at u = 2^-53: the defect is no rounding artefact), and the SUT's defect must
    agree with it to 1e-3 relative + that scale at the backend's u.
    (b) P_proj = E[Delta r^T] E[r r^T]^+ of N = 3K samples of the SUT's map (arb, exact residuals): the certified lower bound of the residual
    sum_n ||Delta_n - P_proj r_n||^2 exceeds MARGIN_P = 1e3 times
    sum_n floor_n^2 (backend u): P_proj is a diagnostic, not the map.
    """
    u = backend.unit_roundoff
    pre = _build("softmax", case.K, case.seed, backend)
    (z, H, d), (zn, Hn, dn) = _inputs(case, backend)
    with torch.no_grad():
        D = _np(pre.update(z, H, d))
        # search the N inputs (z = 0, H_n, d_n) for the largest SUT defect, confirm that one in mp
        z0 = torch.zeros_like(d)
        b1 = _np(pre.update(z0, H, d))
        b2 = _np(pre.update(z0, H, SCALE * d))
    defects = np.linalg.norm(b2 - SCALE * b1, axis=1)
    n0 = int(np.argmax(defects))
    a1 = b1[n0]
    sut_defect = float(defects[n0])
    E, Wq, Wk, v, s = (_np(x) for x in (pre.E, pre.W_Q, pre.W_K, pre.v, pre.s))
    h = np.diagonal(Hn[n0]).copy()
    zero = np.zeros(case.K)
    with workdps():
        m1 = ref.softmax_delta_mp(dn[n0], zero, h, E, Wq, Wk, v, s)
        m2 = ref.softmax_delta_mp(SCALE * dn[n0], zero, h, E, Wq, Wk, v, s)
        mp_defect = float(mpmath.sqrt(mpmath.fsum((m2[i] - SCALE * m1[i]) ** 2 for i in range(case.K))))
    fl = _softmax_floor(pre, SCALE * dn[n0], u) * (1 + SCALE)
    lo, hi, _ = ref.projection_residual(D, zn, Hn, dn)
    floor = sum(_softmax_floor(pre, dn[n] - Hn[n] @ zn[n], u) ** 2 for n in range(case.N))
    margin_h = mp_defect / (_softmax_floor(pre, SCALE * dn[n0], 2.0**-53) * (1 + SCALE))
    margin_p = lo / floor
    total = float(sum(np.linalg.norm(D, axis=1) ** 2))
    record.example()
    record.min("min_homogeneity_defect_over_rounding", margin_h)
    record.min("min_projection_residual_over_rounding_floor", margin_p)
    record.min("min_relative_projection_residual", lo / total)
    record.max("max_relative_projection_residual", hi / total)
    record.min("min_relative_homogeneity_defect", mp_defect / max(float(np.linalg.norm(SCALE * a1)), 1e-300))
    target(-min(math.log10(max(margin_h, 1e-300)), 0.5 * math.log10(max(margin_p, 1e-300))), label="-log margin")
    assert margin_h >= MARGIN_H, (
        f"{case}: no counterexample: homogeneity defect {mp_defect:.3e} is not {MARGIN_H:g} x above double rounding")
    assert abs(sut_defect - mp_defect) <= 1e-3 * mp_defect + fl, (
        f"{case}: SUT defect {sut_defect:.6e} disagrees with the mpmath defect {mp_defect:.6e}")
    assert margin_p >= MARGIN_P, (
        f"{case}: projection residual {lo:.3e} is not {MARGIN_P:g} x above the rounding floor {floor:.3e}")
