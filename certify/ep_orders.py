"""Convergence orders of the EP estimators in beta, shared by ep.matches_implicit_gradient and
aep.exact_gradient: errors ||g(beta) - g_IFT|| on a halving beta grid, their derived rounding
floors, and `properties.order.order_fit` intervals for the one-sided (order 1) and symmetric
(order 2) estimators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from certify.ep_blocks import force_terms
from models.ep import estimators as est
from properties.order import ADMIT, MAX_POINTS, OrderFit, order_fit
from properties.tolerances import gamma

GRID_POINTS = 7  # beta_0 .. beta_0 / 64 first; halved further (up to MAX_POINTS) until resolved


@dataclass
class Scales:
    """Norms of one free equilibrium that the floors and the beta range are derived from."""

    n: int
    p: int
    terms: int
    norm_J: float
    norm_Jinv: float
    norm_P: float  # ||dF/dtheta||_F
    norm_c: float  # ||dC/dz||
    norm_g: float  # ||g_IFT||
    norm_readout: float  # ||dE/dtheta(z0)|| (classic) or ||P|| ||z0|| (vf): the readout's magnitude
    force_scale: float  # ||x|| + (||J|| + 1) ||z0||: the size of the terms summed into F


def scales(blk, x, y, z0, J: torch.Tensor, g_ift: torch.Tensor, readout: str) -> Scales:
    ps = est.params(blk)
    with torch.enable_grad():
        Fz = blk.force(z0.detach(), x)
        rows = []
        for i in range(Fz.numel()):  # ||dF/dtheta||_F row by row (tiny states)
            e = torch.zeros_like(Fz).reshape(-1)
            e[i] = 1
            gs = torch.autograd.grad(Fz, ps, grad_outputs=e.reshape(Fz.shape), retain_graph=True, allow_unused=True)
            rows.append(est.flat(list(gs), ps))
    P = torch.stack(rows)
    Jd = J.double()
    sv = torch.linalg.svdvals(Jd)
    z_norm = float(z0.double().norm())
    rd = float(est.dE_dtheta(blk, z0, x).double().norm()) if readout == "classic" else float(P.double().norm()) * z_norm
    return Scales(z0.numel(), sum(p.numel() for p in ps), force_terms(blk), float(sv[0]), float(1 / sv[-1]),
                  float(P.double().norm()), float(blk.cost_grad_z(z0, y).detach().double().norm()),
                  float(g_ift.double().norm()), rd, float(x.double().norm()) + (float(sv[0]) + 1) * z_norm)


def beta0(sc: Scales) -> float:
    """The grid's largest beta: the nudge moves the state by ~beta ||J^-1|| ||dC/dz||, so
    beta_0 = 1 / (2 ||J^-1|| ||dC/dz||) moves it by ~1/2 (the scale over which the force bends);
    the order fit only uses the grid's tail, so large-beta points cost nothing, while a smaller
    beta_0 leaves the O(beta^2) symmetric error under the rounding floor too soon."""
    return 1.0 / (2.0 * sc.norm_Jinv * max(sc.norm_c, 1e-300))


def floor(sc: Scales, u: float, beta: float, solve_tol: float, one_sided: bool) -> float:
    """Rounding floor of ||g(beta) - g_IFT|| (first order):

    the readout h is a difference of two float evaluations of magnitude R, each off by
    gamma_terms R; the nudged state is known to ||J^-1|| (solve_tol + gamma_terms F_scale) (the
    residual cannot be resolved below the rounding of the force's terms), which the readout
    (Lipschitz ||P||) turns into ||P|| ||J^-1|| (...); both divided by beta (the symmetric
    estimator: two phases, divided by 2 beta); plus the float IFT reference's own error,
    2 gamma_terms cond(J) ||P|| ||J^-1|| ||dC/dz||."""
    g = gamma(sc.terms, u)
    per_phase = phase_rounding(sc, u, solve_tol)
    est_err = per_phase / beta if one_sided else 2 * per_phase / (2 * beta)
    ref_err = 2 * g * (sc.norm_J * sc.norm_Jinv) * sc.norm_P * sc.norm_Jinv * sc.norm_c
    return est_err + ref_err


def phase_rounding(sc: Scales, u: float, solve_tol: float) -> float:
    """The rounding (and solve-tolerance) error of one phase's readout h, before the division by
    beta: 2 gamma_terms R for the two float gradient evaluations, plus ||P|| ||J^-1|| (solve_tol +
    gamma_terms F_scale) for the nudged state (see `floor`)."""
    g = gamma(sc.terms, u)
    return 2 * g * sc.norm_readout + sc.norm_P * sc.norm_Jinv * (solve_tol + g * sc.force_scale)


# The premise of an order fit: the nudged phases settle to the solve tolerance on the grid.  beta_0
# moves the state by ~1/2 (the scale over which the force bends); a block whose nudged phases only
# settle START_HALVINGS halvings lower bends on a scale below ~1/500 (pre-LN at width 2: LayerNorm is
# nearly a sign function there), and its window above the rounding floor can be too short to fit.
START_HALVINGS = 8
MAX_START_HALVINGS = 30  # beta_0 2^-30 ~ 1e-9 beta_0: a nudged phase that settles nowhere above is broken


@dataclass
class OrderRun:
    betas: list[float] = field(default_factory=list)
    one: list[float] = field(default_factory=list)
    sym: list[float] = field(default_factory=list)
    floor_one: list[float] = field(default_factory=list)
    floor_sym: list[float] = field(default_factory=list)
    nudged_residual: float = 0.0  # of the recorded points: <= the solve tolerance by construction
    start_halvings: int = 0  # halvings of beta_0 before both nudged phases settled
    unsettled_beta: float | None = None  # the grid point (after the first) whose phases did not settle

    def fits(self) -> tuple[OrderFit, OrderFit]:
        return (order_fit(self.betas, self.one, self.floor_one), order_fit(self.betas, self.sym, self.floor_sym))

    @property
    def basin_limited(self) -> bool:
        """The nudged phases settle only far below beta_0, or stop settling on the grid: the grid is cut
        by the premise, not by the rounding floor."""
        return self.start_halvings > START_HALVINGS or self.unsettled_beta is not None


def run_orders(nudger: est.Nudger, g_ift: torch.Tensor, sc: Scales, u: float, solve_tol: float,
               b0: float | None = None) -> OrderRun:
    """Errors of the one-sided and symmetric estimators on beta_k = beta_0 2^-k, extended (up to
    MAX_POINTS) while a fit is unresolved and the next point would still be admitted.

    Only points whose two nudged phases settled to `solve_tol` are estimates: the grid starts at the
    first such beta (halving from beta_0 up to MAX_START_HALVINGS times) and ends before a later
    point that does not settle."""
    b0 = beta0(sc) if b0 is None else b0
    run = OrderRun()
    ref = g_ift.double()
    k = 0
    while k < MAX_POINTS:
        beta = b0 * 2.0**-(k + run.start_halvings)
        zp, zm = nudger.pair(beta)
        if not (zp.solve.residual <= solve_tol and zm.solve.residual <= solve_tol):
            if k == 0 and run.start_halvings < MAX_START_HALVINGS:
                run.start_halvings += 1  # a beta too large for the nudged phase to settle: start lower
                continue
            run.unsettled_beta = beta
            break
        hp, hm = nudger.readout(zp), nudger.readout(zm)
        one = nudger.explicit + hp / beta
        sym = nudger.explicit + (hp - hm) / (2 * beta)
        run.betas.append(beta)
        run.one.append(float((one.double() - ref).norm()))
        run.sym.append(float((sym.double() - ref).norm()))
        run.floor_one.append(floor(sc, u, beta, solve_tol, True))
        run.floor_sym.append(floor(sc, u, beta, solve_tol, False))
        run.nudged_residual = max(run.nudged_residual, zp.solve.residual, zm.solve.residual)
        k += 1
        if k >= GRID_POINTS:
            f1, f2 = run.fits()
            if f1.resolved and f2.resolved:
                break
            # halving beta doubles the floor and halves (one-sided) or quarters (symmetric) the
            # error: stop once neither estimator could admit the next point
            nxt1 = 4 * run.floor_one[-1] / max(run.one[-1], 1e-300)
            nxt2 = 8 * run.floor_sym[-1] / max(run.sym[-1], 1e-300)
            if min(nxt1, nxt2) > ADMIT:
                break
    return run


def check_orders(record, run: OrderRun, what: str, case: object, dtype: str) -> tuple[OrderFit, OrderFit]:
    """Record the two fitted order intervals of `run` and assert one-sided ~ beta, symmetric ~ beta^2.

    A fit that never reaches its asymptotic regime above the rounding floor is a failure in float64,
    unless the grid was cut by the premise (`OrderRun.basin_limited`): then the example is counted
    (order_basin_limited_examples, the last such case kept) and left undecided, like every unresolved
    float32 example, whose rounding floor can swallow the grid.  A grid with no settled point at all
    fails: near a converged free phase with J nonsingular, small enough nudges always settle."""
    assert run.betas, (f"{case}: the {what} nudged phases settle at no beta down to beta_0 2^-{MAX_START_HALVINGS}: "
                       "the nudged dynamics do not reach the equilibrium near the free one")
    f1, f2 = run.fits()
    for fit, order, side, law in ((f1, 1.0, "one_sided", "O(beta)"), (f2, 2.0, "symmetric", "O(beta^2)")):
        if fit.resolved:
            record.min(f"min_{side}_order_low", fit.interval[0])
            record.max(f"max_{side}_order_high", fit.interval[1])
            assert fit.contains(order), (f"{case}: {side.replace('_', '-')} {what} error is not {law}: order interval "
                                         f"{fit.interval}, local slopes {fit.local_slopes}")
    if f1.resolved and f2.resolved:
        record.sum("order_resolved_examples", 1)
        return f1, f2
    record.sum("order_unresolved_examples", 1)
    if run.basin_limited:
        record.sum("order_basin_limited_examples", 1)
        record.set("order_basin_limited_case", f"{case}: settles from beta_0 2^-{run.start_halvings}"
                   + (f", not at {run.unsettled_beta:.3e}" if run.unsettled_beta is not None else ""))
        return f1, f2
    assert dtype == "float32", (
        f"{case}: the {what} beta-order fit did not reach its asymptotic regime above the rounding floor in "
        f"float64 (one-sided {admitted_range(f1)}, slopes {f1.local_slopes}; symmetric {admitted_range(f2)}, "
        f"slopes {f2.local_slopes})")
    return f1, f2


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / max(float(b.double().norm()), 1e-300))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / max(float(a.norm() * b.norm()), 1e-300))


def grid_summary(run: OrderRun) -> dict[str, list[float]]:
    return {"beta": run.betas, "one_sided": run.one, "symmetric": run.sym,
            "floor_one_sided": run.floor_one, "floor_symmetric": run.floor_sym}


def admitted_range(fit: OrderFit) -> str:
    return f"{fit.admitted} of {len(fit.etas)} grid points" + (
        f", beta down to {fit.etas[fit.admitted - 1]:.3e}" if fit.admitted else "")


def np_or_none(x) -> float | None:
    return None if x is None else float(np.float64(x))
