"""Families F and G: finite-NTK curves of fixed-set Flexformer decoder training (seed 000 sec 9,
eqs 20-27, Figs 6-8).

SUT: models.finite_set (eq-24 gradient descent on a fixed set of N tasks with the adjoint
gradient of models.adjoint) and models.ntk (J_0 by reverse mode, Theta_0 = J_0 J_0^T / m, the
linear curve r_s^NTK = (I - eta Theta_0)^s r_0) with the Flexformer of models.preconditioners,
on least-squares prompts (flexformer.ntk_local) and GP posterior-latent tasks (gp.ntk_local).

Checks per run: (j) J_0 is the Jacobian the certified adjoint computes (J_0^T w = m DP^*[grad_P
L_N] with z* = z_L - w); (t) Theta_0 and (c) the float NTK curve against arb from the SUT's own
J_0, r_0, eta; (o) the order of the deviation max_{t<=s} ||r_t - r_t^NTK|| in eta is 2 (the
claim's "locally": exact second-order agreement); measured relative errors pinned in golden/ntk.json.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, target
from hypothesis.control import currently_in_test_context

import models
from certify import registry
from models import adjoint as adj
from models import finite_set as fs
from models import ntk
from models.gp import GPTaskConfig
from properties import adjoint as adj_ref
from properties import ntk as ref
from properties.ntk import NTKCase, ntk_cases
from properties.reference.normbound import rho_upper
from properties.tolerances import gamma, relative_band_golden

# The seed's setup (000 sec 9 names none): K = 4 tokens, N = 8 tasks (m = 32), depth L = 6, width 4,
# eta = 0.01 / lambda_max(Theta_0); the positive control runs 25 steps (NTK time eta lambda_max s
# = 0.25), the longer run 4x as long (100 steps, NTK time 1).
SETUP = NTKCase("lsq", K=4, N=8, L=6, width=4, kernel="exp", frac=0.01, steps=100, seed=0)
GP_SETUP = NTKCase("gp", K=4, N=8, L=6, width=4, kernel="exp", frac=0.01, steps=25, seed=0, n_prompt=16)
POSITIVE_STEPS = 25
HELDOUT_SEED = 30_000  # GP held-out tasks: a seed no other run uses
ORDER_GRID = 6  # fixed order fits: eta_0 .. eta_0 / 32
ORDER_PREFIXES = (5, 10, 25)  # s of the fixed order fits (prefixes of one run per eta)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def task_set(case: NTKCase, backend) -> models.Tasks:
    dev, dt = backend.device, backend.torch_dtype
    if case.family == "gp":
        return GPTaskConfig(m=case.K, n=case.n_prompt).sampler(dev, dt).sample(case.N, case.seed)
    return models.LeastSquaresPrompts(models.TaskConfig(K=case.K, M=4 * case.K), dev, dt).sample(case.N, case.seed)


def flexformer(case: NTKCase, backend) -> models.Flexformer:
    return models.Flexformer(case.K, device=backend.device, dtype=backend.torch_dtype, seed=case.seed,
                             m=case.width, kernel=case.kernel)


# --------------------------------------------------------------------------- #
# shared checks
# --------------------------------------------------------------------------- #
@dataclass
class RunChecks:
    vjp_ratio: float
    theta_ratio: float
    curve_ratio: float
    forward_err: float  # bound on the forward error of f at theta_0 (for the order floor)
    rho: float  # rigorous upper bound on ||I - eta_0 Theta_0||_2


def _grad_count(case: NTKCase) -> int:
    """Roundings along one gradient: L adjoint steps (2K+2 each, twice with the forward), the
    N L-term accumulation and the VJP through P_theta (2W+16, flexformer.adjoint_gradient)."""
    return case.L * (4 * case.K + 4) + case.N * case.L + 2 * case.width + 16


def run_checks(case: NTKCase, pc: models.Flexformer, tasks: models.Tasks, run: ntk.NTKRun, backend,
               w_seed: int) -> RunChecks:
    """(j), (t), (c) for one NTK run from pc (at theta_0)."""
    u = backend.unit_roundoff
    L, (N, K) = case.L, tasks.d.shape
    m = N * K
    H, d = _np(tasks.H), _np(tasks.d)
    # (j) J_0 against the adjoint: z* = z_L - w makes the terminal adjoint w/m
    w = torch.as_tensor(np.random.default_rng(w_seed).standard_normal(m), dtype=backend.torch_dtype,
                        device=backend.device)
    P_t = pc.matrix()
    with torch.no_grad():
        zstar_w = (fs.stacked_outputs(P_t, tasks, L) - w).reshape(N, K)
    tr = adj.adjoint_trajectory(P_t, tasks.H, tasks.d, zstar_w, L)
    G, grads = adj.theta_gradient(pc, tasks.H, tasks.d, zstar_w, L)
    g = torch.cat([x.reshape(-1) for x in grads])
    lhs, rhs = _np(run.J.T @ w), m * _np(g)
    P = _np(P_t)
    rhos = [rho_upper(P, H[i]) for i in range(N)]
    zs, rs, lams = (np.stack([_np(x) for x in tr[k]]) for k in ("z", "r", "lam"))
    Jp = _np(ntk.matrix_jacobian(pc))
    J = _np(run.J)
    vjp_tol = ref.vjp_tolerance(u, P, H, d, _np(w), _np(zstar_w), zs, rs, lams, rhos, J, Jp, _np(G), case.width)
    vjp_ratio = float(np.linalg.norm(lhs - rhs)) / vjp_tol
    # (t) Theta_0 = J J^T / m entrywise against arb
    Theta = _np(run.Theta)
    theta_ratio = adj_ref.entrywise_excess(ref.exact_ntk(J), Theta, ref.ntk_matrix_tolerance(u, J))
    # (c) the float NTK curve against (I - eta Theta_0)^s r_0 in arb
    r_ntk = _np(run.ntk_residuals)
    rho = ref.contraction_upper(J, run.eta)
    tol_c = ref.ntk_curve_tolerance(u, J, Theta, r_ntk, run.eta, rho)
    # from the actual r_0 = f(theta_0) - y of the run, not from the curve's own first point
    r0 = _np(run.history.residuals[0])
    err_c = ref.curve_errors(ref.exact_ntk_curve(J, r0, run.eta, run.history.steps), r_ntk)
    curve_ratio = float(np.max(err_c / np.maximum(tol_c, np.finfo(float).tiny)))
    # forward error of f at theta_0, with P_theta's own rounding (for the order floor)
    prm = {k: _np(v) for k, v in pc.named_parameters()}
    dP = adj_ref.P_theta_tolerance(u, prm["E"], prm["W_Q"], prm["W_K"], prm["a"], prm["v"], prm["s"],
                                   case.kernel, P)
    fwd = ref.forward_error_bound(u, P, H, d, zs, rs, rhos, float(np.linalg.norm(dP)))
    return RunChecks(vjp_ratio, theta_ratio, curve_ratio, fwd, rho)


def sut_ntk(case, J: torch.Tensor) -> torch.Tensor:
    """The SUT's Theta_0 from its J_0, which must be the (m, m) kernel of the stacked outputs."""
    Theta = ntk.ntk_matrix(J)
    m = J.shape[0]
    assert tuple(Theta.shape) == (m, m), (
        f"{case}: the SUT's NTK has shape {tuple(Theta.shape)}, not (m, m) = ({m}, {m}) for J_0 {tuple(J.shape)}")
    return Theta


def assert_run_checks(case, chk: RunChecks) -> None:
    assert chk.vjp_ratio <= 1, (f"{case}: J_0^T w differs from m x the adjoint theta-gradient "
                                f"({chk.vjp_ratio:.3e} x tolerance): J_0 is not the Jacobian of f at theta_0")
    assert chk.theta_ratio <= 1, f"{case}: Theta_0 differs from J_0 J_0^T / m ({chk.theta_ratio:.3e} x tolerance)"
    assert chk.curve_ratio <= 1, (f"{case}: the NTK curve differs from (I - eta Theta_0)^s r_0 in arb "
                                  f"({chk.curve_ratio:.3e} x tolerance)")


def order_check(case: NTKCase, runs: list[ntk.NTKRun], chk: RunChecks, backend, upto: int | None = None
                ) -> ref.OrderFit:
    """The order fit of D(eta) = max_{t<=upto} ||r_t - r_t^NTK|| over the runs' eta grid."""
    u = backend.unit_roundoff
    J = _np(runs[0].J)
    Theta = _np(runs[0].Theta)
    s = runs[0].history.steps if upto is None else upto
    devs, floors = [], []
    for run in runs:
        r_ntk = _np(run.ntk_residuals)[: s + 1]
        # for eta <= eta_0 the spectrum of I - eta Theta lies in [1 - eta_0 lambda_max, 1]: max(1, rho_0) bounds it
        tol_c = ref.ntk_curve_tolerance(u, J, Theta, r_ntk, run.eta, max(1.0, chk.rho))
        devs.append(run.max_deviation(s))
        floors.append(ref.deviation_floor(u, J, tol_c, chk.forward_err, _np(run.history.thetas)[: s + 1],
                                          _grad_count(case)))
    return ref.order_fit([r.eta for r in runs], devs, floors)


def refine(case: NTKCase, pc, tasks, runs: list[ntk.NTKRun], chk: RunChecks, backend,
           prefixes: tuple[int | None, ...] = (None,)) -> dict:
    """Order fits at each prefix s, halving eta (up to ref.MAX_POINTS grid points) until every fit
    is in its asymptotic regime or the next point would be too close to the rounding floor."""
    while True:
        fits = {s: order_check(case, runs, chk, backend, upto=s) for s in prefixes}
        todo = [f for f in fits.values() if not f.resolved and f.admitted == len(runs)]
        if not todo or len(runs) >= ref.MAX_POINTS:
            return fits
        runs.append(ntk.ntk_run(pc, tasks, case.L, runs[-1].eta / 2, runs[0].history.steps, J=runs[0].J))


def _record_order(record, prefix: str, fit: ref.OrderFit) -> None:
    record.set(f"{prefix}.order_points_admitted", fit.admitted)
    if fit.resolved:
        lo, hi = fit.interval
        record.set(f"{prefix}.order_interval", f"[{lo:.5f}, {hi:.5f}]")
        record.set(f"{prefix}.order_ols_slope", fit.ols_slope)
        record.set(f"{prefix}.local_slopes", " ".join(f"{x:.4f}" for x in fit.local_slopes))


# --------------------------------------------------------------------------- #
# hypothesis properties
# --------------------------------------------------------------------------- #
def _property(case: NTKCase, backend, record) -> None:
    tasks, pc = task_set(case, backend), flexformer(case, backend)
    J = ntk.jacobian(pc, tasks, case.L)
    etas = ntk.eta_grid(ntk.step_size(sut_ntk(case, J), case.frac), ref.ORDER_POINTS)
    runs = [ntk.ntk_run(pc, tasks, case.L, eta, case.steps, J=J) for eta in etas]
    chk = run_checks(case, pc, tasks, runs[0], backend, case.seed)
    record.example()
    record.max("max_vjp_error_over_tolerance", chk.vjp_ratio)
    record.max("max_ntk_error_over_tolerance", chk.theta_ratio)
    record.max("max_curve_error_over_tolerance", chk.curve_ratio)
    if currently_in_test_context():  # not when a mutant test calls the inner test directly
        target(max(chk.vjp_ratio, chk.theta_ratio, chk.curve_ratio), label="error/tolerance")
    assert_run_checks(case, chk)
    fit = refine(case, pc, tasks, runs, chk, backend)[None]
    record.max("max_order_grid_points", len(runs))
    if not fit.resolved:
        # float64 reaches the regime far above its rounding floor; float32 may not
        assert backend.dtype != "float64", (
            f"{case}: order check unresolved in float64: {fit.admitted} grid points above 16 x the rounding "
            f"floor, local slopes {fit.local_slopes} (contraction {fit.contraction}) not in the asymptotic regime")
        record.sum("order_unresolved_examples", 1)
        record.set("order_unresolved_reason", f"{backend.dtype}: the deviation reaches 1/16 of its rounding floor "
                   "(u ||theta|| ||J_0|| per step) before the local slopes reach their asymptotic regime")
        return
    record.sum("order_resolved_examples", 1)
    lo, hi = fit.interval
    record.min("min_order_interval_low", lo)
    record.max("max_order_interval_high", hi)
    record.max("max_order_halfwidth", fit.halfwidth)
    dev = runs[fit.admitted - 1].deviations.numpy()
    record.sum("examples_deviation_monotone_in_s_at_smallest_eta", int(bool(np.all(np.diff(dev) >= 0))))
    assert fit.contains(2.0), (
        f"{case}: the NTK deviation is not second order in eta: local slopes {fit.local_slopes}, "
        f"order interval [{lo:.5f}, {hi:.5f}] excludes 2")


@pytest.mark.claim("flexformer.ntk_local")
@given(case=ntk_cases("lsq"))
def test_ntk_local_property(case: NTKCase, backend, record) -> None:
    """flexformer.ntk_local: "decoder training follows the finite-NTK curve locally (000: rel err
    5.6e-3, 1.9e-2 on a longer run)" (seed 000 sec 9, eqs 24-25).

    Drawn: least-squares tasks (K 2..4, N 1..6, seeds), Flexformer (width 2/4, exp/rbf kernel,
    seeded init), depth L 1..6, s 1..6 steps, eta_0 = frac / lambda_max(Theta_0) with eta_0
    lambda_max s <= 1/2.  (j) ||J_0^T w - m DP^*[grad_P L_N(z_L - w)]|| <= `vjp_tolerance`;
    (t) Theta_0 entrywise within gamma_{p+1} |J||J|^T / m of arb; (c) the float curve within
    `ntk_curve_tolerance` (first-order, propagated by a rigorous ||I - eta Theta||_2) of arb;
    (o) on eta_k = eta_0 2^-k (k < 5, halved further up to k < 10 until the local slopes are in
    their asymptotic regime) the order interval of max_{t<=s} ||r_t - r_t^NTK|| contains 2
    (`properties.ntk.order_fit`); unresolved (the regime not reached above 16x the rounding
    floor) is an error in float64 and counted, with its reason, in float32.
    """
    _property(case, backend, record)


@pytest.mark.claim("gp.ntk_local")
@given(case=ntk_cases("gp"))
def test_gp_ntk_local_property(case: NTKCase, backend, record) -> None:
    """gp.ntk_local: "Flexformer training on the posterior solve follows r_s = (I - eta J_0 J_0^T / m)^s
    r_0 locally (000: rel err 6.8e-4) and the error grows with eta*s" (seed 000 sec 9, eqs 26-27).

    The checks of test_ntk_local_property on GP posterior-latent tasks (models.gp.GPTaskConfig,
    rank K 2..4, prompt sizes 16 and 64, N 1..6 tasks, y = z_post): (j), (t), (c), and (o) the
    deviation is second order in eta at fixed s, so it grows with eta at fixed s like (eta s)^2
    near 0.
    """
    _property(case, backend, record)


# --------------------------------------------------------------------------- #
# the measured curves (Figs 6-8)
# --------------------------------------------------------------------------- #
@functools.cache
def measured(case: NTKCase, backend) -> tuple[ntk.NTKRun, RunChecks]:
    tasks, pc = task_set(case, backend), flexformer(case, backend)
    J = ntk.jacobian(pc, tasks, case.L)
    eta = ntk.step_size(sut_ntk(case, J), case.frac)
    run = ntk.ntk_run(pc, tasks, case.L, eta, case.steps, J=J)
    return run, run_checks(case, pc, tasks, run, backend, w_seed=case.seed + 1)


def _rel_errs(run: ntk.NTKRun, upto: int) -> tuple[float, float]:
    L, Ln = _np(run.history.losses)[: upto + 1], _np(run.ntk_losses)[: upto + 1]
    dev = run.deviations.numpy()[: upto + 1]
    rn = np.linalg.norm(_np(run.ntk_residuals)[: upto + 1], axis=1)
    return float(np.max(np.abs(L - Ln) / Ln)), float(np.max(dev / rn))


def _seeds(cid: str) -> dict[str, float]:
    return registry.CLAIMS[cid].seed_values


@pytest.mark.claim("flexformer.ntk_local")
def test_ntk_measured_curves(backend, record, golden) -> None:
    """flexformer.ntk_local (measured, Fig 7): the positive-control run (25 steps at eta = 0.01 /
    lambda_max(Theta_0), K = 4, N = 8, L = 6) and the 4x longer run (100 steps): relative error
    max_s |L_s - L_s^NTK| / L_s^NTK (the seed's 5.6e-3 and 1.9e-2 beside ours) and the residual
    version max_s ||r_s - r_s^NTK|| / ||r_s^NTK||, pinned in golden/ntk.json; (j), (t), (c) on the
    whole run; the longer run deviates more (the error grows with eta s)."""
    run, chk = measured(SETUP, backend)
    assert_run_checks(SETUP, chk)
    pc_loss, pc_res = _rel_errs(run, POSITIVE_STEPS)
    lr_loss, lr_res = _rel_errs(run, SETUP.steps)
    metrics = {"positive_control.ntk_rel_err": pc_loss, "positive_control.ntk_residual_rel_err": pc_res,
               "longer_run.ntk_rel_err": lr_loss, "longer_run.ntk_residual_rel_err": lr_res}
    record.example()
    for k, v in metrics.items():
        record.set(k, v)
    record.set("eta", run.eta)
    record.set("lambda_max_Theta_0", ntk.lambda_max(run.Theta))
    record.set("setup", f"lsq K={SETUP.K} M={4 * SETUP.K} N={SETUP.N} L={SETUP.L} width={SETUP.width} "
                        f"eta=0.01/lambda_max, {POSITIVE_STEPS} and {SETUP.steps} steps")
    record.max("max_vjp_error_over_tolerance", chk.vjp_ratio)
    record.max("max_curve_error_over_tolerance", chk.curve_ratio)
    record.figure("ntk_positive_control", {
        "title": "Flexformer decoder, least-squares tasks", "steps": list(range(SETUP.steps + 1)),
        "actual": _np(run.history.losses).tolist(), "ntk": _np(run.ntk_losses).tolist(),
        "deviation": run.deviations.tolist(), "marks": [POSITIVE_STEPS, SETUP.steps],
        "rel_err": [pc_loss, lr_loss], "seed_rel_err": [5.572e-3, 1.906e-2]})
    assert lr_loss > pc_loss, (f"the longer run's NTK error {lr_loss:.3e} is not above the positive "
                               f"control's {pc_loss:.3e}")
    golden("ntk", metrics, relative_band_golden(backend.dtype), seeds=_seeds("flexformer.ntk_local"), seed=SETUP.seed)


def _tolerance_theta(pc, tasks, L: int, G: torch.Tensor, u: float, width: int) -> float:
    """flexformer.adjoint_gradient's (c) tolerance for adjoint vs autograd theta-gradients."""
    P = _np(pc.matrix())
    H, d, zs = _np(tasks.H), _np(tasks.d), _np(tasks.xstar)
    N, K = d.shape
    tr = adj.adjoint_trajectory(pc.matrix(), tasks.H, tasks.d, tasks.xstar, L)
    rhos = [rho_upper(P, H[i]) for i in range(N)]
    tol = adj_ref.grad_P_tolerance(u, P, H, d, zs, [_np(z) for z in tr["z"]], [_np(r) for r in tr["r"]],
                                   [_np(x) for x in tr["lam"]], rhos)
    Jp = _np(ntk.matrix_jacobian(pc))
    absvjp = float(np.linalg.norm(np.abs(Jp).T @ np.abs(_np(G)).reshape(-1)))
    return (np.linalg.norm(Jp) * 2 * tol + 2 * gamma(2 * K + 2 * width + 16, u) * absvjp) * (1 + gamma(2 * K + 2, u))


@pytest.mark.claim("flexformer.ntk_local")
def test_finite_set_dynamics(backend, record) -> None:
    """flexformer.ntk_local (Fig 6, "exact nonlinear finite-set Flexformer gradient dynamics"): along
    the longer run's eq-24 trajectory (every 10th step) the adjoint theta-gradient the trainer steps
    with equals autograd through the forward recursion within flexformer.adjoint_gradient's
    derived tolerance (Jn 2 tol_P + 2 gamma_{2K+2W+16} || |J_P|^T |G| ||), and L_N decreases."""
    u = backend.unit_roundoff
    tasks = task_set(SETUP, backend)
    run, _ = measured(SETUP, backend)
    pc = flexformer(SETUP, backend)
    names = [n for n, _ in pc.named_parameters()]
    steps, rel, ratios = [], [], []
    for s in range(0, SETUP.steps + 1, 10):
        theta = run.history.thetas[s]
        at = 0
        with torch.no_grad():
            for n in names:
                p = getattr(pc, n)
                p.copy_(theta[at:at + p.numel()].reshape(p.shape))
                at += p.numel()
        G, g_adj = fs.adjoint_gradient(pc, tasks, SETUP.L)
        g_auto = fs.autograd_gradient(pc, tasks, SETUP.L)
        err = float(np.linalg.norm(_np(g_adj) - _np(g_auto)))
        steps.append(s)
        rel.append(err / float(np.linalg.norm(_np(g_auto))))
        ratios.append(err / _tolerance_theta(pc, tasks, SETUP.L, G, u, SETUP.width))
    losses = _np(run.history.losses)
    record.example(len(steps))
    record.max("trajectory.max_rel_err_adjoint_vs_autograd", max(rel))
    record.max("trajectory.max_gradient_error_over_tolerance", max(ratios))
    record.figure("ntk_dynamics", {"steps": list(range(len(losses))), "loss": losses.tolist(),
                                   "grad_steps": steps, "grad_rel_err": rel, "u": u})
    assert max(ratios) <= 1, f"adjoint vs autograd theta-gradient along the trajectory: {max(ratios):.3e} x tolerance"
    assert np.all(np.diff(losses) < 0), "L_N does not decrease monotonically along the small-step eq-24 run"


def _fixed_order(case: NTKCase, backend, record, label: str) -> None:
    tasks, pc = task_set(case, backend), flexformer(case, backend)
    run0, chk = measured(case, backend)
    etas = ntk.eta_grid(run0.eta, ORDER_GRID)
    s_max = max(ORDER_PREFIXES)
    runs = ntk.order_runs(pc, tasks, case.L, etas, s_max)
    fits = refine(case, pc, tasks, runs, chk, backend, ORDER_PREFIXES)
    etas = [r.eta for r in runs]
    record.example(len(fits))
    data = {"label": label, "etas": etas, "prefixes": list(ORDER_PREFIXES), "lambda_max": ntk.lambda_max(run0.Theta),
            "devs": {str(s): list(f.devs) for s, f in fits.items()},
            "floors": {str(s): list(f.floors) for s, f in fits.items()},
            "admitted": {str(s): f.admitted for s, f in fits.items()},
            "ols": {str(s): f.ols_slope for s, f in fits.items()},
            "interval": {str(s): f.interval for s, f in fits.items()}}
    record.figure("ntk_order", data)
    unresolved = [s for s, f in fits.items() if not f.resolved]
    for s, f in fits.items():
        _record_order(record, f"{label}.s{s}", f)
    # at fixed eta the deviation grows with s (eta s): D(eta, s) increases along the prefixes by more
    # than the two rounding floors (comparisons the floors cannot resolve are counted, not passed)
    resolved = unresolvable = 0
    for k in range(len(etas)):
        for s1, s2 in zip(ORDER_PREFIXES, ORDER_PREFIXES[1:]):
            a, b = fits[s1].devs[k], fits[s2].devs[k]
            margin = fits[s1].floors[k] + fits[s2].floors[k]
            if abs(b - a) <= margin:
                unresolvable += 1
                continue
            resolved += 1
            assert b > a, (f"{label}: at eta = {etas[k]:.3e} the deviation does not grow from s = {s1} "
                           f"to {s2}: {a:.3e} -> {b:.3e}")
    record.set(f"{label}.growth_in_s_comparisons", f"{resolved} increasing, {unresolvable} within the rounding floor")
    assert resolved > 0, f"{label}: no growth-in-s comparison is resolved above the rounding floor"
    if unresolved:
        assert backend.dtype != "float64", f"{label}: order fit unresolved in float64 at s = {unresolved}"
        reason = (f"{backend.dtype}: order fit unresolved at s = {unresolved} (fewer than 4 of the "
                  f"{ORDER_GRID} grid points have D >= 16 x the rounding floor)")
        record.set(f"{label}.order_check", reason)
    for s, f in fits.items():
        if f.resolved:
            assert f.contains(2.0), (f"{label}, s = {s}: the NTK deviation is not second order in eta: local "
                                     f"slopes {f.local_slopes}, order interval {f.interval} excludes 2")
    if len(unresolved) == len(fits):
        pytest.skip(f"{label}: the eta-order fit cannot be resolved in {backend.dtype} (rounding floor); "
                    "the hypothesis property counts it per example")


@pytest.mark.claim("flexformer.ntk_local")
def test_ntk_order_fit(backend, record) -> None:
    """flexformer.ntk_local (order): at the positive-control setup, eta_k = eta_0 2^-k (k < 6, refined
    up to k < 10; eta_0 = 0.01 / lambda_max), s = 5, 10, 25: max_{t<=s} ||r_t - r_t^NTK|| has order 2
    in eta (its `order_fit` interval contains 2), and at each eta it grows with s.  In float32 the
    rounding floor leaves too few grid points: that part is skipped with the reason recorded."""
    _fixed_order(SETUP, backend, record, "lsq")


@pytest.mark.claim("gp.ntk_local")
def test_gp_ntk_order_fit(backend, record) -> None:
    """gp.ntk_local (order, "the error grows with eta*s"): the fixed GP setup (n = 16, K = 4, N = 8,
    L = 6), eta_k = eta_0 2^-k (k < 6, refined up to k < 10; eta_0 = 0.01 / lambda_max), s = 5, 10,
    25: the deviation is second order in eta at each s (its `order_fit` interval contains 2) and
    grows with s at each eta by more than the rounding floors."""
    _fixed_order(GP_SETUP, backend, record, "gp")


@pytest.mark.claim("gp.ntk_local")
def test_gp_ntk_measured_curve(backend, record, golden) -> None:
    """gp.ntk_local (measured, Fig 8): Flexformer training on the GP posterior solve (n = 16, K = 4,
    N = 8, L = 6, 25 steps at eta = 0.01 / lambda_max(Theta_0)): relative error max_s |L_s -
    L_s^NTK| / L_s^NTK (seed 6.8e-4) and its residual version, and the held-out posterior-mean MSE
    of the trained local-diagnostic model, mean over 64 held-out tasks x 8 queries of
    (phi_q^T (z_L - z_post))^2 (seed 7.309), pinned in golden/ntk.json; (j), (t), (c) on the run;
    the deviation ||r_s - r_s^NTK|| grows with s (eta s) over the run."""
    run, chk = measured(GP_SETUP, backend)
    assert_run_checks(GP_SETUP, chk)
    loss_rel, res_rel = _rel_errs(run, GP_SETUP.steps)
    sampler = GPTaskConfig(m=GP_SETUP.K, n=GP_SETUP.n_prompt).sampler(backend.device, backend.torch_dtype)
    held = ntk.posterior_mean_mse(run.model.matrix().detach(), sampler, GP_SETUP.L, 64, HELDOUT_SEED)
    metrics = {"gp.ntk_rel_err": loss_rel, "gp.ntk_residual_rel_err": res_rel,
               "gp.heldout_posterior_mean_mse": held["posterior_mean_mse"]}
    record.example()
    for k, v in metrics.items():
        record.set(k, v)
    record.set("gp.heldout_exact_posterior_vs_truth_mse", held["exact_posterior_mse"])
    record.set("gp.eta", run.eta)
    record.max("max_vjp_error_over_tolerance", chk.vjp_ratio)
    record.max("max_curve_error_over_tolerance", chk.curve_ratio)
    dev = run.deviations.numpy()
    record.figure("ntk_gp", {
        "title": "Flexformer on the GP/KRR posterior latent solve", "steps": list(range(GP_SETUP.steps + 1)),
        "actual": _np(run.history.losses).tolist(), "ntk": _np(run.ntk_losses).tolist(),
        "deviation": dev.tolist(), "marks": [GP_SETUP.steps], "rel_err": [loss_rel], "seed_rel_err": [6.829e-4]})
    assert np.all(np.diff(dev) > 0), f"the NTK deviation does not grow with s along the GP run: {dev}"
    golden("ntk", metrics, relative_band_golden(backend.dtype), seeds=_seeds("gp.ntk_local"), seed=GP_SETUP.seed)
