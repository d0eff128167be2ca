"""Family F: a closed global theory of nonlinear Flexformer outer training (seed 000 sec 9: open).

The only exact closed theory at hand is the quadratic free-P one: at depth L = 1 the fixed-set
loss is L_N(P) = (1/(2NK)) sum_i ||P d_i - z_i*||^2, so free-P gradient descent has the closed
form P_s - P_N* = (P_0 - P_N*)(I - (eta/K) C_N)^s (models.finite_set.quadratic_free_P).  The
positive control (free P, where the theory is exact) is certified against arb; the Flexformer,
trained by eq 24 from P_theta_0 = P_0, is then compared with it (and at the decoder's depth
L = 6 with free-P descent), and the measured gap is the evidence of the `open` verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, target
from hypothesis.control import currently_in_test_context
from scipy.optimize import minimize_scalar

import models
from models import finite_set as fs
from models import ntk
from properties import ntk as ref
from properties.ntk import FreePCase, free_P_cases
from properties.tolerances import relative_band_golden

K, N, WIDTH, SEED = 4, 8, 4, 0  # the flexformer.ntk_local setup (least-squares tasks, M = 4K)
GAP_STEPS = 200
GAP_FRAC = 0.25  # eta = 0.25 / max(lambda_max of the Flexformer and free-P NTKs): both runs stable


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def positive_control(P0: torch.Tensor, tasks: models.Tasks, eta: float, steps: int, backend
                     ) -> dict[str, float]:
    """(i) the SUT's closed form and its loss, (ii) FreeLinear trained by models.adjoint.train_step,
    both against the arb closed form; returns the error/tolerance ratios."""
    u = backend.unit_roundoff
    pred = fs.quadratic_free_P(P0, tasks, eta, steps)
    free = models.FreeLinear(tasks.K, device=backend.device, dtype=backend.torch_dtype)
    with torch.no_grad():
        free.P.copy_(P0)
    _, hist = fs.train(free, tasks, 1, eta, steps)
    d, zs = _np(tasks.d), _np(tasks.xstar)
    ex = ref.exact_free_P(_np(P0), d, zs, eta, steps)
    P_hat = _np(pred.P)
    tol_cf = ref.closed_form_tolerance(u, ex, d, zs, eta, _np(pred.C), _np(pred.P_star), P_hat)
    err_cf = ref.matrix_errors(ex.P, P_hat)
    tol_loss = ref.loss_tolerance(u, ex, d, zs, P_hat, tol_cf, _np(pred.losses))
    err_loss = ref.scalar_errors(ex.losses, _np(pred.losses))
    P_tr = _np(hist.thetas).reshape(-1, tasks.K, tasks.K)
    tol_tr = ref.free_P_train_tolerance(u, ex.rho, d, P_tr, _np(hist.residuals).reshape(-1, *d.shape), eta)
    err_tr = ref.matrix_errors(ex.P, P_tr)
    tiny = np.finfo(float).tiny
    return {"closed_form": float(np.max(err_cf / np.maximum(tol_cf, tiny))),
            "closed_form_loss": float(np.max(err_loss / np.maximum(tol_loss, tiny))),
            "free_P_training": float(np.max(err_tr / np.maximum(tol_tr, tiny))),
            "rho": ex.rho}


def _assert_control(label, ratios: dict[str, float]) -> None:
    assert ratios["closed_form"] <= 1, (
        f"{label}: the SUT's closed form P_s differs from P_N* + (P_0 - P_N*)(I - (eta/K) C_N)^s in arb "
        f"({ratios['closed_form']:.3e} x tolerance)")
    assert ratios["closed_form_loss"] <= 1, (
        f"{label}: the closed form's loss L_N(P_s) differs from arb ({ratios['closed_form_loss']:.3e} x tolerance)")
    assert ratios["free_P_training"] <= 1, (
        f"{label}: free-P training by train_step leaves the closed form ({ratios['free_P_training']:.3e} x tolerance)")


@pytest.mark.claim("flexformer.global_theory")
@given(case=free_P_cases())
def test_free_P_positive_control(case: FreePCase, backend, record) -> None:
    """flexformer.global_theory (positive control, where the quadratic theory is exact): "a closed
    global theory of nonlinear outer training (000: open)" (seed 000 sec 9).

    Depth 1, N >= K least-squares tasks (K 2..4, seeds), P_0 a seeded FreeLinear init, eta = frac K /
    lambda_max(C_N) (frac 0.05..1.9), s <= 60: (i) models.finite_set.quadratic_free_P against the arb
    closed form within `closed_form_tolerance` (Cholesky backward error through ||C_N^-1||, the
    propagated products by a rigorous ||I - (eta/K) C_N||_2) and its loss within `loss_tolerance`;
    (ii) FreeLinear trained by models.adjoint.train_step against the same closed form within
    `free_P_train_tolerance` (per-step rounding of the L = 1 adjoint gradient, propagated).
    """
    tasks = models.LeastSquaresPrompts(models.TaskConfig(K=case.K, M=4 * case.K), backend.device,
                                       backend.torch_dtype).sample(case.N, case.seed)
    P0 = models.FreeLinear(case.K, device=backend.device, dtype=backend.torch_dtype, seed=case.seed).P.detach()
    C, _ = fs.task_moments(tasks)
    eta = case.frac * case.K / float(torch.linalg.eigvalsh(C.double()).max())
    ratios = positive_control(P0, tasks, eta, case.steps, backend)
    record.example()
    record.max("positive_control.max_closed_form_error_over_tolerance", ratios["closed_form"])
    record.max("positive_control.max_closed_form_loss_error_over_tolerance", ratios["closed_form_loss"])
    record.max("positive_control.max_free_P_training_error_over_tolerance", ratios["free_P_training"])
    if currently_in_test_context():  # not when a mutant test calls the inner test directly
        target(max(ratios["closed_form"], ratios["closed_form_loss"], ratios["free_P_training"]),
               label="error/tolerance")
    _assert_control(case, ratios)


# --------------------------------------------------------------------------- #
# the measured gap of the Flexformer
# --------------------------------------------------------------------------- #
def _rel_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / b


def best_rescaling(flex: np.ndarray, free_losses, c_hi: float) -> tuple[float, float, np.ndarray]:
    """min over c in [1/64, c_hi] of max_s |L_flex_s - L_free(c eta)_s| / L_free(c eta)_s: the free-P
    run with step c eta (= its gradient flow at time c s).  A factor-2 grid in c brackets the
    minimum; a bounded scalar search in log c (to 2% in c) refines it; the best evaluated c wins.
    Returns (c*, gap, the free-P curve at c*)."""
    tried: dict[float, tuple[float, np.ndarray]] = {}

    def gap_at(logc: float) -> float:
        if logc not in tried:
            curve = free_losses(math.exp(logc))
            tried[logc] = (float(np.max(_rel_gap(flex, curve))), curve)
        return tried[logc][0]

    grid = [math.log(c_hi) - k * math.log(2) for k in range(int(math.log2(64 * c_hi)) + 1)]
    vals = [gap_at(x) for x in grid]
    k = int(np.argmin(vals))
    lo, hi = grid[min(k + 1, len(grid) - 1)], grid[max(k - 1, 0)]
    if hi > lo:
        minimize_scalar(gap_at, bounds=(lo, hi), method="bounded", options={"xatol": 0.02})
    best = min(tried, key=lambda x: tried[x][0])
    return math.exp(best), tried[best][0], tried[best][1]


@pytest.mark.claim("flexformer.global_theory")
@pytest.mark.parametrize("L", (1, 6))
def test_global_theory_gap(L: int, backend, record, golden) -> None:
    """flexformer.global_theory: "a closed global theory of nonlinear outer training (000: open)"
    (seed 000 sec 9), check `open`: the measured gap between the quadratic free-P prediction and
    nonlinear training.

    Flexformer (K = 4, width 4, N = 8 least-squares tasks) trained by eq 24 for 200 steps at
    eta = 0.25 / max(lambda_max(Theta_0^flex), lambda_max(Theta_0^free)) from P_theta_0 = P_0, against
    free P from P_0 with the same eta: at L = 1 the exact closed form (its positive control
    certified here at this setup: closed form and FreeLinear train_step vs arb), at L = 6 free-P
    descent by train_step (no closed form exists there).  Evidence: max_s and final relative loss
    gap, and the best gap over a step-size (time) rescaling eta -> c eta of the free-P run, which
    stays large: the gap is not a learning-rate rescaling.  Verdict: open.
    """
    dev, dt = backend.device, backend.torch_dtype
    tasks = models.LeastSquaresPrompts(models.TaskConfig(K=K, M=4 * K), dev, dt).sample(N, SEED)
    pc = models.Flexformer(K, device=dev, dtype=dt, seed=SEED, m=WIDTH)
    P0 = pc.matrix().detach()
    free = models.FreeLinear(K, device=dev, dtype=dt)
    with torch.no_grad():
        free.P.copy_(P0)
    lam_flex = ntk.lambda_max(ntk.ntk_matrix(ntk.jacobian(pc, tasks, L)))
    lam_free = ntk.lambda_max(ntk.ntk_matrix(ntk.jacobian(free, tasks, L)))
    eta = GAP_FRAC / max(lam_flex, lam_free)
    _, hist = fs.train(pc, tasks, L, eta, GAP_STEPS)
    flex = _np(hist.losses)
    record.example()
    if L == 1:
        ratios = positive_control(P0, tasks, eta, GAP_STEPS, backend)
        record.max("positive_control.max_closed_form_error_over_tolerance", ratios["closed_form"])
        record.max("positive_control.max_free_P_training_error_over_tolerance", ratios["free_P_training"])
        _assert_control("L = 1 gap setup", ratios)

        def free_losses(c: float) -> np.ndarray:
            return _np(fs.quadratic_free_P(P0, tasks, c * eta, GAP_STEPS).losses)
        label = "quadratic free-P closed form"
    else:
        def free_losses(c: float) -> np.ndarray:
            return _np(fs.train(free, tasks, L, c * eta, GAP_STEPS)[1].losses)
        label = "free-P descent (train_step)"
    free_curve = free_losses(1.0)
    gap = _rel_gap(flex, free_curve)
    c_best, best_gap, best_curve = best_rescaling(flex, free_losses, 1.9 / (eta * lam_free))
    p = f"L{L}"
    metrics = {f"{p}.max_rel_gap": float(gap.max()), f"{p}.final_rel_gap": float(gap[-1]),
               f"{p}.best_rescaled_max_rel_gap": best_gap, f"{p}.best_rescaling_c": c_best,
               f"{p}.flexformer_final_loss": float(flex[-1]), f"{p}.free_P_final_loss": float(free_curve[-1])}
    for k_, v in metrics.items():
        record.set(k_, v)
    record.set(f"{p}.eta", eta)
    record.set(f"{p}.flexformer_loss_monotone", int(bool(np.all(np.diff(flex) < 0))))
    record.set(f"{p}.lambda_max_ntk_flexformer_over_free", lam_flex / lam_free)
    record.figure("global_theory_gap", {
        "L": L, "steps": list(range(GAP_STEPS + 1)), "flexformer": flex.tolist(), "free_P": free_curve.tolist(),
        "free_P_label": label, "free_P_rescaled": best_curve.tolist(), "best_c": c_best, "gap": gap.tolist(),
        "gap_rescaled": _rel_gap(flex, best_curve).tolist(), "max_gap": float(gap.max()), "best_gap": best_gap})
    record.verdict("open", (
        f"no closed global theory of nonlinear Flexformer outer training: at L = {L} its eq-24 loss curve "
        f"leaves the {label} by up to {gap.max():.3g} (relative; final {gap[-1]:.3g}), and by {best_gap:.3g} "
        f"even after the best step-size rescaling c = {c_best:.3g}"), None)
    golden("flexformer", metrics, relative_band_golden(backend.dtype), seed=SEED)
