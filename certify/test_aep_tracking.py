"""Family E: aep.tracking (seed 003, 2026-06-17 round 2, "the plateau bias floor IS the frozen AEP
linearization; tracking-AEP fixes it").

Claim: "re-linearizing the correction at the moving common mode (z+ + z-)/2 restores the gradient
where the frozen linearization fails (003: cos -0.045 -> 0.997 at a plateau checkpoint)".

SUT: models.ep.estimators -- the frozen AEP pair (correction 2 A(z0)(z - z0), A = (J - J^T)/2 at
the point z0 where the free phase stopped, nudged phases solved by Newton) and the tracking pair
`tracking_pair` (correction 2 A(zbar)(z+- - zbar) re-linearised at the common mode at every
evaluation, relaxed by Euler), both read out symmetrically with the vector-field readout -- on the
non-conservative blocks of models.ep.blocks (DampedAttention, ThickBlock).

"Far from linear response" (the named notion): the free phase is the seed's Euler relaxation from
the injection x, STOPPED at a residual res0 = ||F(z0)|| / max(||z0||, 1) between 1e-4 (003's
validity threshold "res <~ few 1e-4") and ~3 (unrelaxed states), so z0 = z* + e0 with e0 up to
O(||z*||); the nudge beta spans 1e-3 .. 0.3; the blocks' Jacobians are strongly non-normal
(||J - J^T||_F / ||J||_F and the seed's |Jv - J^T v| / |Jv| are recorded: 0.3 .. 1.4).

Reference: the dense implicit-function-theorem gradient (models.ep.references.ift_gradient) at the
free equilibrium z* the SUT's free phase converges to (Euler continued, Newton-polished), in
float64 on an exact float64 twin of the block; its first-order error bound is asserted to be
<= 1e-3 ||g*|| (so cos thresholds of 0.9 / 0.99 are decided by the estimators, not the reference);
the canonical case is confirmed against the 50-digit mpmath IFT gradient (properties.ep).

The derived statement (properties.ep_tracking, first order in e0 and beta):
  tracking  g_t = g_IFT(zbar) - P(zbar)^T J(zbar)^-T (R_diff - r3) / beta EXACTLY (c = dC/dz is
            affine), R_diff the pair's difference residual, r3 = (F(z+) - F(z-))/2 - J(zbar) delta
            = O(beta^3), and zbar = z* + O(beta^2): every term is a function of the pair's root,
            z0 enters none of them -- tracking's error bound does not grow with the free-phase
            error;
  frozen    g_f - g* = D_f e0 + O(|e0|^2 + beta^2): linear in e0.
Checks: (r) reference valid; (e) the SUT's tracking state satisfies the tracking equations as
stated (re-linearised at ITS common mode) within the solve tolerance; (i) its estimate equals
g_IFT(zbar) - P^T J^-T (R_diff - r3)/beta within the SUT's rounding; (o) on the canonical case the
frozen error is first order in e0 (order interval contains 1) while tracking relaxed from z* and
from z0 ends at the same root (within the root-gap bound); (p) wherever frozen's cos < 0.9:
tracking's cos >= 0.99, certified under two named conditions --
  C1 the common mode relaxed to the free equilibrium z* itself ((m): ||zbar - z*|| <= 2 ||J*^-1||
     ||F(zbar)||), and
  C2 the nudge inside tracking's window: the two O(beta^2) parts of its error in (i) -- the
     common-mode offset ||g_IFT(zbar) - g*|| (NOT cancelled by the symmetric readout, unlike
     symmetric AEP at z*, whose readout point does not move) and the cubic remainder -- are
     <= 0.1 ||g*||.
Verdict: conditional.  test_counterexamples confirms one case violating each condition (frozen
fails, tracking does not restore): C1 -- the pair relaxes to ANOTHER stable equilibrium and
returns its exact gradient; C2 -- beta = 0.3 on a damped block, tracking cos 0.86 where AEP at
the converged z* with the same beta has cos >= 0.99; both restore at beta / 3.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import assume, given, target
from hypothesis.control import currently_in_test_context

from certify import ep_blocks, registry
from models.ep import blocks, references, solvers
from models.ep import estimators as est
from models.seeding import cpu_generator, derive_seed
from properties import ep_tracking as pt
from properties.ep_tracking import TrackingCase, tracking_cases
from properties.order import order_fit
from properties.tolerances import gamma, relative_band_golden

CLAIM = "aep.tracking"
GOLDEN = "ep_tracking"
D_OUT = 2
FREE_STEPS = 2000  # Euler budget of the reference free phase (it must converge well inside it)
FREE_TOL = 1e-10  # Euler target of the reference free phase before the Newton polish
FREE_CHUNK = 250
U64 = 2.0**-53
RHO_MAX = 0.95  # slower tracking relaxations (> ~1100 Euler steps) are left out, counted
REF_ACCURACY = 1e-3  # the reference's error bound must be <= this x ||g*|| (cos resolved to 1e-6)
# the predicate is judged where tracking's solve/rounding floor is <= 1e-2 ||g*||: that floor alone
# moves cos by <= 1e-4/2, so a cos < 0.99 there is the method's, not the arithmetic's
RESOLVED = 1e-2
WINDOW = 0.1  # C2: tracking's O(beta^2) error parts <= 0.1 ||g*||  <=>  cos >= sqrt(1 - 0.1^2) > 0.99
NEWTON_STEPS = 30
CHORD_STEPS = 100  # chord: contracts by O(beta + |e0|) per step near z*




def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").to(torch.float64).numpy()


# --------------------------------------------------------------------------- #
# the SUT and its float64 twin
# --------------------------------------------------------------------------- #
def make_block(case: TrackingCase, dtype: torch.dtype, device: str = "cpu") -> blocks.EquilibriumBlock:
    kw = {"device": device, "dtype": dtype, "seed": case.seed, "causal": case.causal}
    if case.kind == "damped":
        return blocks.DampedAttention(case.T, case.d, D_OUT, s=case.s, c=case.c, lam=case.lam,
                                      qk_scale=case.qk_scale, v_scale=case.v_scale, **kw)
    if case.kind == "thick":
        return blocks.ThickBlock(case.T, case.d, D_OUT, c=case.c, resinit=case.resinit, **kw)
    raise ValueError(f"unknown block kind {case.kind!r}")


def twin64(blk: blocks.EquilibriumBlock) -> blocks.EquilibriumBlock:
    """The same block in float64 with the SUT's parameters upcast exactly."""
    return copy.deepcopy(blk).to(torch.float64)


def inputs(case: TrackingCase) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) in float64 on the CPU, drawn from the case's seed."""
    g = cpu_generator(derive_seed(CLAIM, case.seed, case.T, case.d, case.B))
    x = case.x_scale * torch.randn(case.B, case.T, case.d, generator=g, dtype=torch.float64)
    y = torch.randn(case.B, D_OUT, generator=g, dtype=torch.float64)
    return x, y


def dense_jacobian(G, z: torch.Tensor) -> np.ndarray:
    """dG/dz at z as an (N, N) float64 matrix by vectorised reverse mode (torch.autograd.functional;
    an implementation independent of the SUT's forward-mode solvers.jacobian, and ~4x faster here)."""
    with torch.enable_grad():
        Jt = torch.autograd.functional.jacobian(G, z.detach(), vectorize=True)
    return _np(Jt).reshape(z.numel(), z.numel())


def theta_jacobian(blk: blocks.EquilibriumBlock, x: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """P = dF/dtheta at z, dense (N x p), one vjp per state entry (tiny states)."""
    ps = est.params(blk)
    rows = []
    with torch.enable_grad():
        Fz = blk.force(z.detach(), x).reshape(-1)
        for j in range(Fz.numel()):
            gs = torch.autograd.grad(Fz[j], ps, retain_graph=True, allow_unused=True)
            rows.append(_np(est.flat(list(gs), ps)))
    return np.stack(rows)


def cost_hessian(blk: blocks.EquilibriumBlock, y: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """M = d(dC/dz)/dz (constant: C is quadratic in z)."""
    return dense_jacobian(lambda v: blk.cost_grad_z(v, y), z)


@dataclass
class Reference:
    z: torch.Tensor  # float64 free equilibrium
    g: np.ndarray  # IFT gradient at z
    J: np.ndarray
    M: np.ndarray
    eig: np.ndarray
    inv_norm: float  # ||J^-1||_2
    cond: float
    abscissa: float
    nonnormal: float  # ||J - J^T||_F / ||J||_F
    nonnormal_v: float  # the seed's |J v - J^T v| / |J v|, v seeded
    fth_fro: float
    a_norm: float
    error_bound: float
    free_steps: int


def relax_free_phase(blk64, x: torch.Tensor, eps: float) -> est.Phase:
    """The SUT's Euler free phase continued to FREE_TOL, in chunks of FREE_CHUNK steps; it gives up
    when a chunk does not halve the residual (then reaching FREE_TOL would take > FREE_STEPS steps,
    or the relaxation has no fixed point: a limit cycle or divergence, 003 2026-06-24)."""
    z, steps, res = x, 0, math.inf
    while steps < FREE_STEPS:
        ph = est.free_phase(blk64, x, solver="euler", eps=eps, steps=FREE_CHUNK, tol=FREE_TOL, z_init=z,
                            require=False)
        steps += ph.solve.steps
        new = ph.solve.residual
        if not math.isfinite(new) or new <= FREE_TOL or not new <= 0.5 * res:
            break
        z, res = ph.z, new
    ph.solve.steps = steps
    return ph


def reference(case: TrackingCase, blk64: blocks.EquilibriumBlock, x: torch.Tensor, y: torch.Tensor
              ) -> Reference | str:
    """The free equilibrium the SUT's free phase heads to and the IFT gradient there, or the reason
    there is none (the Euler free phase does not converge, or converges to an unstable point)."""
    fl = relax_free_phase(blk64, x, case.eps)
    if not fl.solve.residual <= FREE_TOL:
        return (f"the Euler free phase (eps {case.eps:.3g}) does not converge: residual {fl.solve.residual:.2e} "
                f"after {fl.solve.steps} steps")
    tol = ep_blocks.free_tol(x, _B64)
    nz = est.free_phase(blk64, x, solver="newton", steps=8, tol=tol, z_init=fl.z, require=False)
    if not nz.solve.residual <= max(tol, fl.solve.residual):
        return "the Newton polish of the free equilibrium diverged"
    z = nz.z
    F = est.free_force(blk64, x)
    J = dense_jacobian(F, z)
    ev = np.linalg.eigvals(J)
    if not ev.real.max() < 0:
        return f"the free equilibrium is not stable (spectral abscissa {ev.real.max():.3g})"
    sv = np.linalg.svd(J, compute_uv=False)
    g = _np(references.ift_gradient(blk64, x, y, z))
    c = _np(blk64.cost_grad_z(z, y)).reshape(-1)
    a = np.linalg.solve(J.T, c)
    P = theta_jacobian(blk64, x, z)
    v = np.random.default_rng(case.seed % 2**32).standard_normal(J.shape[0])
    dist = float(nz.solve.residual) * max(float(z.norm()), 1.0) / sv[-1]
    bound = pt.ift_reference_error(U64, J.shape[0], float(sv[0] / sv[-1]), float(np.linalg.norm(P)),
                                   float(np.linalg.norm(a)), dist, ep_blocks.force_terms(blk64))
    return Reference(z, g, J, cost_hessian(blk64, y, z), ev, float(1 / sv[-1]), float(sv[0] / sv[-1]),
                     float(ev.real.max()), float(np.linalg.norm(J - J.T) / np.linalg.norm(J)),
                     float(np.linalg.norm((J - J.T) @ v) / np.linalg.norm(J @ v)),
                     float(np.linalg.norm(P)), float(np.linalg.norm(a)), bound, fl.solve.steps)


class _Backend64:
    unit_roundoff = U64


_B64 = _Backend64()


# --------------------------------------------------------------------------- #
# the estimators under test
# --------------------------------------------------------------------------- #
class PairRecorder(est.Nudger):
    """A Nudger that keeps the last pair it solved (the SUT's own code path, observed)."""

    last: tuple[est.Phase, est.Phase] | None = None

    def pair(self, beta: float) -> tuple[est.Phase, est.Phase]:
        self.last = super().pair(beta)
        return self.last


def tracking_step(ref: Reference, eps0: float) -> tuple[float, float]:
    """(eps, rho): the Euler step minimising rho = max |1 + eps lambda(J*)| on eps0 2^(k/4), |k| <= 8
    (the pair's linearisation has J's spectrum twice: blockdiag(J, J^T) to first order)."""
    best = min((float(np.abs(1 + e * ref.eig).max()), e) for e in (eps0 * 2.0 ** (k / 4) for k in range(-8, 9)))
    return best[1], best[0]


@dataclass
class Run:
    """One SUT measurement: the stopped free phase, the frozen and the tracking estimates."""

    z0: torch.Tensor
    res0: float
    steps0: int
    g_frozen: np.ndarray | None
    frozen_residual: float
    frozen_error: str
    g_track: np.ndarray
    zp: torch.Tensor
    zm: torch.Tensor
    track_residual: float
    track_steps: int
    eps_t: float
    rho_t: float
    tau: float
    cap: int


def stopped_free_phase(case: TrackingCase, blk: blocks.EquilibriumBlock, x: torch.Tensor) -> est.Phase:
    return est.free_phase(blk, x, solver="euler", eps=case.eps, steps=FREE_STEPS, tol=case.stop_residual,
                          require=False)


def frozen_estimate(blk, x, y, z0, beta: float, tau: float, solver: str = "newton"
                    ) -> tuple[np.ndarray | None, float, str]:
    """Frozen AEP, symmetric, vf readout, nudged phases solved by Newton (or the chord method) to tau."""
    cfg = est.EPConfig(correction="aep", readout="vf", solver=solver,
                       steps=NEWTON_STEPS if solver == "newton" else CHORD_STEPS, tol=tau)
    try:
        e = est.symmetric(est.Nudger(blk, x, y, z0, cfg), beta)
    except (RuntimeError, torch.linalg.LinAlgError) as exc:  # a singular nudged Jacobian: no estimate
        return None, math.inf, f"{type(exc).__name__}: {exc}"[:200]
    g = _np(e.grad)
    if not np.all(np.isfinite(g)):
        return None, math.inf, "non-finite frozen estimate"
    return g, max(e.nudged_residuals), ""


def tracking_estimate(blk, x, y, z0, beta: float, eps: float, steps: int, tau: float
                      ) -> tuple[np.ndarray, est.Phase, est.Phase, int]:
    cfg = est.EPConfig(correction="tracking", readout="vf", solver="euler", eps=eps, steps=steps, tol=tau)
    nud = PairRecorder(blk, x, y, z0, cfg)
    e = est.symmetric(nud, beta)
    zp, zm = nud.last
    return _np(e.grad), zp, zm, zp.solve.steps


def run_sut(case: TrackingCase, blk, x, y, ref: Reference, u: float, z0: torch.Tensor | None = None,
            cap_factor: int = 1, frozen: bool = True) -> Run:
    """Stop the free phase (or start from z0), then the frozen and the tracking estimates."""
    terms = ep_blocks.force_terms(blk)
    tau = pt.stop_tolerance(u, terms)
    if z0 is None:
        ph = stopped_free_phase(case, blk, x)
        z0, res0, steps0 = ph.z, ph.solve.residual, ph.solve.steps
    else:
        res0 = solvers.residual(blk.force(z0, x), z0)
        steps0 = 0
    gf, fres, ferr = frozen_estimate(blk, x, y, z0, case.beta, tau) if frozen else (None, math.nan, "not run")
    eps_t, rho_t = tracking_step(ref, case.eps)
    # Euler contracts by rho per step: from res ~ max(res0, 1) to tau in log(tau)/log(rho) steps;
    # non-normal transients (003: |Jv - J^T v|/|Jv| ~ 1.4) may delay it: twice that, plus 50
    cap = cap_factor * (2 * math.ceil(math.log(tau / max(res0, 1.0)) / math.log(rho_t)) + 50)
    gt, zp, zm, tsteps = tracking_estimate(blk, x, y, z0, case.beta, eps_t, cap, tau)
    return Run(z0, float(res0), int(steps0), gf, fres, ferr, gt, zp.z, zm.z, float(zp.solve.residual),
               int(tsteps), eps_t, rho_t, tau, cap)


# --------------------------------------------------------------------------- #
# checks (e), (m), (i) on the SUT's tracking state, in float64
# --------------------------------------------------------------------------- #
@dataclass
class PairChecks:
    equation_ratio: float  # (e) max_s ||R_s|| / allowed_s
    root_ratio: float  # (m) ||zbar - z*|| / (2 ||J*^-1|| ||F(zbar)|| + floor)
    identity_ratio: float  # (i) ||g_t - predicted|| / rounding tolerance
    zbar_dist: float
    r3_norm: float
    rdiff_norm: float
    offset_effect: float  # ||g_IFT(zbar) - g*|| / ||g*||: the common mode's O(beta^2) displacement
    cubic_effect: float  # ||P^T J^-T r3|| / (beta ||g*||): the nudge's cubic remainder
    g_ift_bar: np.ndarray = field(repr=False, default=None)

    @property
    def same_equilibrium(self) -> bool:
        """C1: the common mode relaxed to the free equilibrium z* itself (check (m))."""
        return self.root_ratio <= 1

    @property
    def in_window(self) -> bool:
        """C2: the nudge inside tracking's linear-response window: the two O(beta^2) parts of its
        error (identity (i)) move the estimate by <= 10% of ||g*|| (then cos >= 0.995)."""
        return self.offset_effect + self.cubic_effect <= WINDOW


def _weights_fro(blk) -> float:
    """sum over the branches of the products of their weights' Frobenius norms: a bound on the
    size of the attention / FFN outputs per unit (LN-normalised or O(||z||)) input."""
    n = lambda name: float(getattr(blk, name).detach().double().norm()) if hasattr(blk, name) else 0.0
    tot = n("W_V") * n("W_O")
    if hasattr(blk, "W_fc"):
        tot += n("W_fc") * n("W_pj") + float(blk.b_fc.detach().double().norm()) * n("W_pj")
    return tot * getattr(blk, "s", 1.0)


@torch.no_grad()
def pair_checks(case: TrackingCase, blk, blk64, x64, y64, run: Run, ref: Reference, u: float) -> PairChecks:
    beta = case.beta
    terms = ep_blocks.force_terms(blk)
    F = est.free_force(blk64, x64)
    Zp, Zm = run.zp.detach().to(torch.float64), run.zm.detach().to(torch.float64)
    # the SUT's own common mode: 0.5 (z+ + z-) rounded in its dtype, exactly what it linearised at
    at = (0.5 * (run.zp + run.zm)).detach().to(torch.float64)
    eps_mid = at - 0.5 * (Zp + Zm)
    D = 0.5 * (Zp - Zm)
    Jbn = dense_jacobian(F, at)
    Jb = torch.from_numpy(Jbn)
    twoA_D = ((Jb - Jb.mT) @ D.reshape(-1)).reshape(D.shape)
    Fp, Fm = F(Zp), F(Zm)
    Rp = Fp - beta * blk64.cost_grad_z(Zp, y64) - twoA_D
    Rm = Fm + beta * blk64.cost_grad_z(Zm, y64) + twoA_D
    # (e) the stated tracking equations at the SUT's state.  The SUT stopped at its own computed
    # residual <= tau; its evaluation of G carries gamma_terms of |F-terms| + beta |c| + |J| |delta|,
    # and |F-terms| <= (rate + ||J||_F) ||z|| + ||x|| + (branch weight norms) per sample: allowed_s =
    # 2 (tau + gamma_terms K_s) max(||Z_s||, 1), K_s that sum over max(||Z_s||, 1)
    g_t = gamma(terms, u)
    wf = _weights_fro(blk64)
    ratios = []
    for R, Z in ((Rp, Zp), (Rm, Zm)):
        for s in range(Z.shape[0]):
            zn = max(float(Z[s].norm()), 1.0)
            K = case.rate + float(np.linalg.norm(Jbn)) + (float(x64[s].norm()) + wf * math.sqrt(case.T)) / zn + \
                beta * float(np.linalg.norm(ref.M)) + 2 * float(np.linalg.norm(Jbn))
            ratios.append(float(R[s].norm()) / (2 * (run.tau + g_t * K) * zn))
    eq_ratio = max(ratios)
    # (m) a-posteriori root bound: F(at) = J*(at - z*) + O(|at - z*|^2), so ||at - z*|| <=
    # 2 ||J*^-1|| ||F(at)|| (first order, doubled); floor: z*'s own residual and float64 rounding
    # of F(at) (gamma_terms(u64) K ||at||)
    Fa = F(at)
    zbar_dist = float((at - ref.z).norm())
    floor_m = 2 * ref.inv_norm * (gamma(terms, U64) * (case.rate + float(np.linalg.norm(ref.J))) *
                                  max(float(at.norm()), 1.0)) + 2 * ref.inv_norm * FREE_TOL
    root_ratio = zbar_dist / (2 * ref.inv_norm * float(Fa.norm()) + floor_m)
    # (i) exact algebra (c affine, M = dc/dz): with R'_diff = (R+ - R-)/2 and r3 = (F(z+) - F(z-))/2 -
    # J(at) D, J(at)^T D = beta (c(at) - M eps_mid) + R'_diff - r3, so
    # g_t = g_IFT(at) - P(at)^T J(at)^-T [(R'_diff - r3)/beta - M eps_mid]
    Rd = 0.5 * (Rp - Rm)
    r3 = 0.5 * (Fp - Fm) - (Jb @ D.reshape(-1)).reshape(D.shape)
    P = theta_jacobian(blk64, x64, at)
    c_at = _np(blk64.cost_grad_z(at, y64)).reshape(-1)
    # the IFT gradient at at from the same dense J(at) and P(at) (references.ift_gradient's formula)
    g_ift_bar = _np(est.dC_dtheta(blk64, at, y64)) - P.T @ np.linalg.solve(Jbn.T, c_at)
    rhs = _np(Rd - r3).reshape(-1) / beta - ref.M @ _np(eps_mid).reshape(-1)
    w = np.linalg.solve(Jbn.T, rhs)
    pred = g_ift_bar - P.T @ w
    # rounding of the SUT's readout in its dtype: the differences z+- - at (u (||z+-|| + ||at||)), the
    # two vjps P^T v (gamma_terms ||P||_F ||v||), dC/dtheta(at) = mean(at) (o - y)^T (gamma_{T+d+2}
    # ||mean|| (||o|| + ||y||)), the sum and the 1/(2 beta) (u ||g||); the float64 side: the IFT
    # reference at at (ift_reference_error) and the small correction's solve (gamma_{3n} cond ||w||)
    Pn = float(np.linalg.norm(P))
    zs = float(Zp.norm() + Zm.norm() + 2 * at.norm())
    o = blk64.readout(at)
    tol_i = 2 * (g_t * Pn * float((Zp - Zm).norm()) / beta + Pn * u * zs / (2 * beta)
                 + gamma(case.T + case.d + 2, u) * float(at.mean(1).norm()) * float(o.norm() + y64.norm())
                 + u * float(np.linalg.norm(run.g_track)))
    sv = np.linalg.svd(Jbn, compute_uv=False)
    tol_i += pt.ift_reference_error(U64, Jbn.shape[0], float(sv[0] / sv[-1]), Pn,
                                    float(np.linalg.norm(np.linalg.solve(Jbn.T, c_at))),
                                    0.0, terms) + 2 * gamma(3 * Jbn.shape[0], U64) * float(sv[0] / sv[-1]) * Pn * float(np.linalg.norm(w))
    id_ratio = float(np.linalg.norm(run.g_track - pred)) / tol_i
    gn = float(np.linalg.norm(ref.g))
    offset = float(np.linalg.norm(g_ift_bar - ref.g)) / gn
    cubic = float(np.linalg.norm(P.T @ np.linalg.solve(Jbn.T, _np(r3).reshape(-1)))) / (beta * gn)
    return PairChecks(eq_ratio, root_ratio, id_ratio, zbar_dist, float(r3.norm()), float(Rd.norm()), offset, cubic,
                      g_ift_bar)


# --------------------------------------------------------------------------- #
# one case end to end
# --------------------------------------------------------------------------- #
@dataclass
class Outcome:
    case: TrackingCase
    ref: Reference
    run: Run
    cos_frozen: float
    rel_frozen: float
    cos_track: float
    rel_track: float
    e0: float
    checks: PairChecks | None

    @property
    def frozen_fails(self) -> bool:
        return not (self.cos_frozen >= pt.FROZEN_FAILS)  # nan (no frozen estimate) counts as failing

    @property
    def restored(self) -> bool:
        return self.cos_track >= pt.RESTORED

    @property
    def converged(self) -> bool:
        return self.run.track_residual <= self.run.tau


def evaluate(case: TrackingCase, dtype: torch.dtype, device: str = "cpu", u: float | None = None,
             z0: torch.Tensor | None = None, cap_factor: int = 1, ref: Reference | None = None) -> Outcome | str:
    u = torch.finfo(dtype).eps / 2 if u is None else u
    blk = make_block(case, dtype, device)
    blk64 = twin64(blk)
    x64, y64 = inputs(case)
    x64 = x64.to(dtype).to(torch.float64)  # the SUT's rounded inputs, exactly
    y64 = y64.to(dtype).to(torch.float64)
    ref = reference(case, blk64, x64, y64) if ref is None else ref
    if isinstance(ref, str):
        return ref
    if ref.error_bound > REF_ACCURACY * float(np.linalg.norm(ref.g)):
        return f"the float64 IFT reference is not resolved (bound {ref.error_bound:.2e})"
    if tracking_step(ref, case.eps)[1] >= RHO_MAX:
        return f"the tracking relaxation contracts too slowly (rho >= {RHO_MAX})"
    x, y = x64.to(device, dtype), y64.to(device, dtype)
    run = run_sut(case, blk, x, y, ref, u, None if z0 is None else z0.to(device, dtype), cap_factor)
    gf = run.g_frozen
    cf = pt.cosine(gf, ref.g) if gf is not None else math.nan
    rf = pt.rel_err(gf, ref.g) if gf is not None else math.nan
    e0 = float((run.z0.detach().to(torch.float64) - ref.z).norm())
    out = Outcome(case, ref, run, cf, rf, pt.cosine(run.g_track, ref.g), pt.rel_err(run.g_track, ref.g), e0, None)
    if out.converged:
        out.checks = pair_checks(case, blk, blk64, x64, y64, run, ref, u)
    return out


# --------------------------------------------------------------------------- #
# the hypothesis property
# --------------------------------------------------------------------------- #
def counterexample_record(o: Outcome) -> dict:
    c = o.checks
    return {"case": o.case.__dict__, "res0": o.run.res0, "e0": o.e0, "cos_frozen": o.cos_frozen,
            "cos_tracking": o.cos_track, "rel_err_tracking": o.rel_track,
            "tracking_residual": o.run.track_residual, "tracking_steps": o.run.track_steps,
            "common_mode_distance_to_z_star": c.zbar_dist, "root_bound_ratio": c.root_ratio,
            "offset_effect": c.offset_effect, "cubic_effect": c.cubic_effect,
            "violates": ("C1 (common mode left z*'s basin)" if not c.same_equilibrium else
                         "C2 (nudge outside tracking's window)" if not c.in_window else "none")}


def assert_pair_root(o: Outcome) -> None:
    c = o.checks
    assert c.same_equilibrium, (
        f"{o.case}: the tracking common mode is not the free equilibrium: ||zbar - z*|| = {c.zbar_dist:.3e}, "
        f"{c.root_ratio:.3e} x the a-posteriori root bound 2 ||J*^-1|| ||F(zbar)||")


def confirm(case: TrackingCase) -> Outcome | str:
    """A candidate counterexample recomputed in float64 with a 4x relaxation budget."""
    return evaluate(case, torch.float64, cap_factor=4)


def assert_pair_checks(o: Outcome) -> None:
    c = o.checks
    assert c.equation_ratio <= 1, (
        f"{o.case}: the SUT's tracking state does not satisfy the tracking equations re-linearised at its "
        f"common mode: residual {c.equation_ratio:.3e} x the allowed solve tolerance")
    assert c.identity_ratio <= 1, (
        f"{o.case}: the tracking estimate is not g_IFT(zbar) - P^T J^-T (R_diff - r3)/beta: "
        f"{c.identity_ratio:.3e} x the rounding tolerance")


@pytest.mark.claim(CLAIM)
@given(case=tracking_cases())
def test_tracking_restores_property(case: TrackingCase, backend, record) -> None:
    """aep.tracking: "re-linearizing the correction at the moving common mode (z+ + z-)/2 restores
    the gradient where the frozen linearization fails (003: cos -0.045 -> 0.997 at a plateau
    checkpoint)" (seed 003, 2026-06-17 round 2).

    Drawn (properties.ep_tracking.tracking_cases): DampedAttention (s 0.5..8, c 1..1.5, lam, Q/K and
    V scales 0.5..3) or ThickBlock (c 0..2, resinit 0.5..2.5), T 2..3, d 3..4, B 1..2, causal or
    not, x scale 0.5..3, the free phase stopped at res0 <= 10^(-4 .. 0.5), beta = 10^(-3 .. -0.5).
    Cases without a stable free equilibrium (the Euler free phase does not converge: 003's "no fixed
    point") or whose tracking relaxation contracts by rho >= 0.95 per step are left out and counted.
    The tracking relaxation must reach its tolerance (2 log(tau)/log(rho) + 50 Euler steps, else
    float64 with 4x that budget) near z*, where its linearisation has the free phase's spectrum: one
    that settles nowhere (C0) must settle from z* at some beta / 3^k, k <= 4 (else AssertionError), and where frozen fails
    it is a counterexample (verdict conditional, `unsettled`).

    (r) the float64 IFT reference's first-order error bound <= 1e-3 ||g*||;
    (e) tracking's final pair satisfies G+- = F(z+-) -+ beta c(z+-) -+ (J(zbar) - J(zbar)^T) delta = 0
        at its own common mode zbar within 2 (tau + gamma_terms K) max(||z||, 1) per sample;
    (i) g_t = g_IFT(zbar) - P(zbar)^T J(zbar)^-T [(R_diff - r3)/beta - M eps] within the SUT's
        readout rounding -- every term a function of the pair's root, none of z0: tracking's error
        bound does not grow with the free-phase error, while frozen's grows linearly (order test);
    (p) wherever frozen's cos < 0.9: a case where tracking's cos < 0.99 (judged where tracking's
        solve/rounding floor ||P|| (||J^-1|| tau + u) ||Z|| / beta is <= 1e-2 ||g*||; coarser float32
        cases are counted), confirmed in float64 with a 4x relaxation budget, must violate C1
        ((m): ||zbar - z*|| <= 2 ||J*^-1|| ||F(zbar)||, the common mode relaxed to z*) or C2 (its
        O(beta^2) error parts <= 0.1 ||g*||) -- then it is a counterexample to the unconditional
        claim (verdict conditional) -- else the conditional statement fails (AssertionError).
    Recorded: how often frozen fails and tracking restores, how often C1 / C2 fail, the lowest
    frozen cos (thorough: target(-cos_frozen) and target(frozen fails x tracking error)),
    non-normality and residual ranges.
    """
    o = evaluate(case, backend.torch_dtype, backend.device)
    if isinstance(o, str):
        record.sum("cases_left_out", 1)
        record.set("cases_left_out_last_reason", o)
        assume(False)
    if not o.converged:
        # the pair's linearisation contracts like the free phase (spectrum of J twice), so the
        # relaxation must reach tau; a non-normal transient may need more than the first budget
        record.sum("tracking_needed_the_4x_relaxation_budget", 1)
        conf = confirm(case)
        assert isinstance(conf, Outcome), f"{case}: not reproduced in float64: {conf}"
        if not conf.converged:
            unsettled(case, o, conf, record)
            return
        assert backend.dtype == "float64", (
            f"{case}: the tracking relaxation does not converge in {backend.dtype} (residual "
            f"{o.run.track_residual:.2e} > tau {o.run.tau:.2e}) where float64 does")
        o = conf
    record.example()
    record.min("min_cos_frozen", o.cos_frozen if o.run.g_frozen is not None else -1.0)
    record.min("min_cos_tracking", o.cos_track)
    record.max("max_rel_err_tracking", o.rel_track)
    record.max("max_free_phase_residual_res0", o.run.res0)
    record.min("min_free_phase_residual_res0", o.run.res0)
    record.max("max_nonnormality_Jv_minus_JTv_over_Jv", o.ref.nonnormal_v)
    record.max("max_track_relaxation_steps", o.run.track_steps)
    record.figure("aep_tracking_cases", {"kind": case.kind, "res0": o.run.res0, "beta": case.beta,
                                         "cos_frozen": o.cos_frozen if o.run.g_frozen is not None else -1.0,
                                         "cos_tracking": o.cos_track})
    if o.run.g_frozen is None:
        record.sum("frozen_no_nudged_solution", 1)
    elif not o.run.frozen_residual <= o.run.tau:
        record.sum("frozen_nudged_newton_not_converged", 1)  # its estimate is still what it returns
    if currently_in_test_context():
        target(-(o.cos_frozen if o.run.g_frozen is not None else -1.0), label="-cos_frozen")
    assert o.ref.error_bound <= REF_ACCURACY * float(np.linalg.norm(o.ref.g))
    c = o.checks
    record.max("max_tracking_equation_residual_over_tolerance", c.equation_ratio)
    record.max("max_tracking_identity_error_over_tolerance", c.identity_ratio)
    assert_pair_checks(o)
    if c.same_equilibrium:
        record.max("max_common_mode_distance_over_root_bound", c.root_ratio)
        record.max("max_common_mode_distance_over_beta2", c.zbar_dist / case.beta**2)
    else:
        record.sum("tracking_common_mode_left_the_basin_of_z_star", 1)
    if not c.in_window:
        record.sum("tracking_nudge_outside_window", 1)
    if currently_in_test_context():
        target(float(o.frozen_fails) * (1.0 - o.cos_track), label="frozen fails and tracking error")
    if not o.frozen_fails:
        record.sum("frozen_holds", 1)
        if not o.restored:
            record.sum("frozen_holds_tracking_does_not", 1)
        return
    record.sum("frozen_fails", 1)
    if o.restored:
        record.sum("frozen_fails_tracking_restores", 1)
        return
    if tracking_floor_rel(o, backend.unit_roundoff) > RESOLVED:
        record.sum("frozen_fails_unresolved_in_dtype", 1)  # tracking's solve/rounding floor too coarse
        return
    conf = confirm(case)
    assert isinstance(conf, Outcome) and conf.checks is not None, f"{case}: not reproduced in float64: {conf}"
    assert conf.frozen_fails and not conf.restored, (
        f"{case}: frozen cos {o.cos_frozen:.4f} < 0.9 and tracking cos {o.cos_track:.5f} < 0.99 in "
        f"{backend.dtype}, not reproduced in float64 with a 4x budget (cos {conf.cos_track:.5f})")
    record.sum("frozen_fails_tracking_does_not_restore", 1)
    # the certified conditional statement: under C1 and C2 tracking restores
    assert not (conf.checks.same_equilibrium and conf.checks.in_window), (
        f"{case}: frozen fails, tracking's common mode is z* and its O(beta^2) parts are inside the window, yet "
        f"tracking cos {conf.cos_track:.5f} < 0.99: the conditional statement fails")
    record.verdict("conditional", CONDITION, counterexample_record(conf))


def unsettled(case: TrackingCase, o: Outcome, conf: Outcome, record) -> None:
    """(C0) The tracking relaxation settles nowhere within 4x its budget in float64: tracking AEP returns
    an unsettled pair, no estimate.  Started from z* at a smaller beta it must settle (else the SUT's
    relaxation itself is broken: AssertionError); then the relaxation from this z0 at this beta finds
    no attracting pair equilibrium, and where frozen fails too it is a counterexample to the
    unconditional claim."""
    # near z* the pair's linearisation has the free spectrum (rho < RHO_MAX): started from z* with a
    # small enough nudge the SUT's relaxation must settle -- tried at beta / 3^k, k = 1..4
    small = None
    for k in range(1, 5):
        small = evaluate(dataclasses.replace(case, beta=case.beta / CE_SHRINK**k), torch.float64, cap_factor=4,
                         z0=conf.ref.z, ref=conf.ref)
        if isinstance(small, Outcome) and small.converged:
            break
    assert isinstance(small, Outcome) and small.converged, (
        f"{case}: the tracking relaxation does not converge (residual {o.run.track_residual:.2e} > tau "
        f"{o.run.tau:.2e} after {o.run.track_steps} Euler steps), nor in float64 with a 4x budget, nor from "
        f"z* at beta / {CE_SHRINK}**k, k <= 4")
    record.sum("tracking_relaxation_does_not_settle", 1)
    record.max("max_unsettled_tracking_residual", conf.run.track_residual)
    if not conf.frozen_fails:
        record.sum("frozen_holds_tracking_does_not_settle", 1)
        return
    record.sum("frozen_fails_tracking_does_not_settle", 1)
    record.verdict("conditional", CONDITION, c0_record(conf, small))


def c0_record(o: Outcome, settled: Outcome) -> dict:
    """A (C0) counterexample: `o` did not settle; `settled` is the same case at the smaller beta where it does
    (`counterexample_record` needs the pair checks, which an unsettled pair has none of)."""
    return {"case": o.case.__dict__, "res0": o.run.res0, "e0": o.e0, "cos_frozen": o.cos_frozen,
            "cos_tracking": o.cos_track, "tracking_residual": o.run.track_residual,
            "tracking_steps": o.run.track_steps, "tau": o.run.tau,
            "beta_where_it_settles": settled.case.beta, "cos_tracking_there": settled.cos_track,
            "violates": "C0 (the tracking relaxation does not settle at this beta; at beta_where_it_settles it does)"}


CONDITION = ("tracking AEP restores the gradient where frozen AEP fails only when (C0) its relaxation settles "
             "(at a large nudge the +-beta pair can have no attracting equilibrium: the Euler relaxation "
             "wanders at an O(1) residual), (C1) its common mode relaxes "
             "to the free equilibrium z* itself (it can relax to another equilibrium: the O(beta^2 |a|^2) "
             "forcing of the difference mode on the common mode, amplified along an unrelaxed trajectory) and "
             "(C2) beta is inside its linear-response window: its O(beta^2) common-mode offset, which the "
             "symmetric readout does not cancel, and the cubic remainder move the estimate by <= 10%")


def tracking_floor_rel(o: Outcome, u: float) -> float:
    """The tracking estimate's error floor relative to ||g*||, first order: the pair solved to tau
    moves delta by <= ||J^-1|| tau max(||z||, 1), the readout divides by beta and multiplies by
    ||P||; the stored states' rounding u ||Z|| / beta likewise."""
    zn = max(float(torch.cat([o.run.zp, o.run.zm]).double().norm()), 1.0)
    return o.ref.fth_fro * (o.ref.inv_norm * o.run.tau + u) * zn / (o.case.beta * float(np.linalg.norm(o.ref.g)))


# --------------------------------------------------------------------------- #
# the canonical far-from-linear-response case (pinned) and the order test
# --------------------------------------------------------------------------- #
# A DampedAttention block (003 TL;DR 2's damped real attention, strength s = 5, c = 1, leak 1, strong
# Q/K and V) whose free phase is stopped after 2 Euler steps (res0 ~ 1: far from linear response).
CANONICAL = TrackingCase("damped", T=3, d=3, B=1, seed=0, s=5.0, c=1.0, lam=1.0, qk_scale=2.5, v_scale=2.0,
                         x_scale=1.5, log_stop=0.0, beta=1e-2)
CANONICAL_STEPS = 2  # Euler steps of the stopped free phase (instead of the residual rule)
# e0 = h e_dir, h = 2^-k, k = 7..12: at h >= 1/8 the frozen nudged Newton solves find no root near
# z0 on this block (recorded), and the linear regime of D_f(h) starts below h ~ 1/32
ORDER_KS = tuple(range(7, 13))
TRACK_ORDER_H = (0.0,)  # tracking relaxed from z* (h = 1: the pinned run)


@functools.cache
def canonical(dtype_name: str) -> dict:
    dtype = getattr(torch, dtype_name)
    case = CANONICAL
    blk = make_block(case, dtype)
    blk64 = twin64(blk)
    x64, y64 = inputs(case)
    x64, y64 = x64.to(dtype).double(), y64.to(dtype).double()
    ref = reference(case, blk64, x64, y64)
    assert not isinstance(ref, str), f"canonical case: {ref}"
    x, y = x64.to(dtype), y64.to(dtype)
    ph = est.free_phase(blk, x, solver="euler", eps=case.eps, steps=CANONICAL_STEPS, tol=None, require=False)
    out = evaluate(case, dtype, z0=ph.z, ref=ref)
    assert isinstance(out, Outcome), f"canonical case: {out}"
    return {"case": case, "ref": ref, "out": out, "blk": blk, "blk64": blk64, "x": x, "y": y, "x64": x64,
            "y64": y64, "z0": ph.z}


def _seeds() -> dict[str, float]:
    return registry.CLAIMS[CLAIM].seed_values


@pytest.mark.claim(CLAIM)
def test_far_case(backend, record, golden) -> None:
    """aep.tracking (measured + order): the canonical far-from-linear-response case -- DampedAttention
    (T 3, d 3, s 5, c 1, lam 1, Q/K scale 2.5, V scale 2), free phase stopped after 2 Euler steps
    (res0 ~ 5), beta = 1e-2.

    Pinned: cosines of frozen and tracking AEP with the exact IFT gradient as far.cos_frozen /
    far.cos_tracking in golden/ep_tracking.json (seed: -0.045 -> 0.997 at a trained plateau
    checkpoint, which this suite does not have); checks (e), (m), (i) of the property; the float64
    IFT reference against the 50-digit mpmath IFT gradient (properties.ep) within
    properties.ep.ift_tolerance; frozen fails (cos < 0.9) and tracking restores (cos >= 0.99).

    Order: free-phase errors e0 = h e_dir (e_dir = the pinned stopped free phase's error z0 - z*,
    h = 2^-k, k = 7..12; at h >= 1/8 the frozen nudged Newton solves find no root near z0): the
    frozen estimate's deviation from its h = 0 value (AEP at z*), D_f(h) = ||g_f(h) - g_f(0)||, is
    first order in h (the order interval of properties.order.order_fit contains 1: "frozen's error
    grows linearly with the free-phase error"; the frozen nudged phases are solved by the chord
    method from J(z0) - 2 A(z0), the same roots as Newton's), while the tracking pair relaxed from
    h = 1 ends at the same root as the relaxation from z* (h = 0): their end states are within the
    root-gap bound 2 ||DG^-1|| (||G_h|| + ||G_0||) of each other and each passes (e), (m), (i)
    ("does not grow": z0 is only the start).  float32: the frozen order fit is unresolved above its
    rounding floor 4 ||P|| ||J^-1|| tau / beta (skipped with the reason); everything else runs."""
    from properties import ep as pep

    c = canonical(backend.dtype)
    o: Outcome = c["out"]
    ref: Reference = c["ref"]
    assert o.converged, f"canonical tracking relaxation did not converge ({o.run.track_residual:.2e})"
    assert_pair_checks(o)
    assert_pair_root(o)
    # the reference against 50 digits (one sample, B = 1)
    mp = ep_blocks.mp_block(c["blk64"])
    exact = pep.ift_gradient(mp, _np(ref.z).reshape(-1), _np(c["x64"]).reshape(-1), _np(c["y64"]).reshape(-1))
    tol_ref = pep.ift_tolerance(U64, ref.J.shape[0], len(ref.g), exact, ep_blocks.force_terms(c["blk64"]))
    ref_err = float(np.linalg.norm(ref.g - exact.grad))
    record.example()
    metrics = {"far.cos_frozen": o.cos_frozen, "far.cos_tracking": o.cos_track,
               "far.rel_err_frozen": o.rel_frozen, "far.rel_err_tracking": o.rel_track,
               "far.free_phase_residual": o.run.res0}
    for k, v in metrics.items():
        record.set(k, v)
    record.set("far.e0", o.e0)
    record.set("far.nonnormality_Jv_minus_JTv_over_Jv", ref.nonnormal_v)
    record.set("far.nonnormality_fro", ref.nonnormal)
    record.set("far.tracking_steps", o.run.track_steps)
    record.set("far.frozen_nudged_residual", o.run.frozen_residual)
    record.set("far.reference_vs_mpmath_over_tolerance", ref_err / tol_ref)
    record.set("far.setup", f"{CANONICAL}, free phase stopped after {CANONICAL_STEPS} Euler steps")
    assert ref_err <= tol_ref, f"float64 IFT reference vs 50-digit: {ref_err:.3e} > {tol_ref:.3e}"
    assert o.frozen_fails, f"canonical case: frozen AEP does not fail (cos {o.cos_frozen:.4f})"
    assert o.restored, f"canonical case: tracking AEP does not restore (cos {o.cos_track:.5f})"
    golden(GOLDEN, metrics, relative_band_golden(backend.dtype), atol=relative_band_golden(backend.dtype),
           seeds=_seeds(), seed=CANONICAL.seed)
    # ---- the order in the free-phase error ----

    case, ref, blk, x, y = c["case"], c["ref"], c["blk"], c["x"], c["y"]
    dtype = backend.torch_dtype
    u = backend.unit_roundoff
    terms = ep_blocks.force_terms(blk)
    tau = pt.stop_tolerance(u, terms)
    zs = ref.z.to(dtype)
    e_dir = c["z0"].detach() - zs
    hs = [2.0**-k for k in ORDER_KS]
    g0, _, err0 = frozen_estimate(blk, x, y, zs, case.beta, tau, "chord")
    assert g0 is not None, err0
    devs, floors, frozen_err = [], [], []
    n_f = float(np.linalg.norm(g0))
    for h in hs:
        g, fres, err = frozen_estimate(blk, x, y, zs + h * e_dir, case.beta, tau, "chord")
        assert g is not None and fres <= tau, f"frozen estimate at h = {h}: residual {fres:.2e} {err}"
        devs.append(float(np.linalg.norm(g - g0)))
        frozen_err.append(pt.rel_err(g, ref.g))
        # both estimates solved to tau: their nudged roots are within ||J^-1|| tau of exact, the
        # readout divides by beta: floor 4 ||P|| ||J^-1|| tau max(||z||, 1) / beta + rounding
        floors.append(4 * ref.fth_fro * ref.inv_norm * tau * max(float(zs.norm()), 1.0) / case.beta
                      + 4 * gamma(terms, u) * n_f)
    fit = order_fit(hs, devs, floors)
    t_hs = list(TRACK_ORDER_H) + [1.0]
    runs = [run_sut(case, blk, x, y, ref, u, z0=zs + h * e_dir, frozen=False) for h in TRACK_ORDER_H]
    runs.append(c["out"].run)
    x64, y64, blk64 = c["x64"], c["y64"], c["blk64"]
    inv = pt.pair_jacobian_inverse_norm(ref.J, ref.M, case.beta)
    gnorms, state_ratios, track_devs = [], [], []
    for h, run in zip(t_hs, runs):
        assert run.track_residual <= run.tau, f"tracking at h = {h} did not converge ({run.track_residual:.2e})"
        Z = torch.cat([run.zp, run.zm]).detach().double()
        gnorms.append(pt.residual_norm(run.track_residual, [float(v.norm()) for v in Z]))
        if run is not c["out"].run:  # the pinned run (h = 1) was checked by the canonical evaluation
            o = Outcome(case, ref, run, math.nan, math.nan, pt.cosine(run.g_track, ref.g),
                        pt.rel_err(run.g_track, ref.g), h * float(e_dir.double().norm()),
                        pair_checks(case, blk, blk64, x64, y64, run, ref, u))
            assert_pair_checks(o)
            assert_pair_root(o)
    Z0 = torch.cat([runs[0].zp, runs[0].zm]).detach().double()
    for run, gn in zip(runs[1:], gnorms[1:]):
        Z = torch.cat([run.zp, run.zm]).detach().double()
        # the two relaxations solve the same equations (z0 is only their start): their end states
        # are within root_gap_bound = 2 ||DG^-1|| (||G_h|| + ||G_0||) of each other, plus the
        # rounding of the stored states (u ||Z|| each)
        bound = pt.root_gap_bound(inv, gnorms[0], gn) + u * float(Z.norm() + Z0.norm())
        state_ratios.append(float((Z - Z0).norm()) / bound)
        track_devs.append(float(np.linalg.norm(run.g_track - runs[0].g_track)))
    gts = [r.g_track for r in runs]
    record.example(len(hs) + len(t_hs))
    record.set("order.frozen_local_slopes", " ".join(f"{s:.4f}" for s in fit.local_slopes))
    if fit.interval is not None:
        record.set("order.frozen_order_interval", f"[{fit.interval[0]:.4f}, {fit.interval[1]:.4f}]")
    record.max("order.tracking_state_gap_over_root_gap_bound", max(state_ratios))
    record.max("order.tracking_gradient_deviation_rel", max(track_devs) / float(np.linalg.norm(ref.g)))
    record.set("order.frozen_rel_err_at_h_1_128", frozen_err[0])
    record.figure("aep_tracking_order", {
        "dtype": backend.dtype, "h": hs, "e0": [h * float(e_dir.double().norm()) for h in hs],
        "frozen_rel_err": frozen_err, "frozen_dev": devs, "floors": floors,
        "track_h": t_hs[1:], "track_e0": [h * float(e_dir.double().norm()) for h in t_hs[1:]],
        "track_rel_err": [pt.rel_err(g, ref.g) for g in gts[1:]], "track_rel_err_h0": pt.rel_err(gts[0], ref.g),
        "frozen_rel_err_h0": pt.rel_err(g0, ref.g), "frozen_rel_err_h1": c["out"].rel_frozen,
        "e0_h1": c["out"].e0, "interval": fit.interval, "beta": case.beta})
    for r, h in zip(state_ratios, t_hs[1:]):
        assert r <= 1, (f"the tracking pair relaxed from z* + {h} e0 ends {r:.3e} x the root-gap bound away from the "
                        f"one relaxed from z*: tracking depends on where the free phase stopped")
    if not fit.resolved:
        assert backend.dtype != "float64", (f"frozen order fit unresolved in float64: local slopes {fit.local_slopes} "
                                            f"({fit.admitted} points above 16x the floor)")
        pytest.skip(f"{backend.dtype}: the frozen order fit is unresolved: the estimator's rounding floor "
                    f"4 ||P|| ||J^-1|| tau / beta exceeds 1/16 of D_f(h) on the grid ({fit.admitted} points admitted); "
                    "the tracking root check above ran")
    assert fit.contains(1.0), (f"frozen AEP's deviation is not first order in the free-phase error: local slopes "
                               f"{fit.local_slopes}, interval {fit.interval}")


# --------------------------------------------------------------------------- #
# confirmed counterexamples
# --------------------------------------------------------------------------- #
# found by the thorough profile's search and a targeted scan (thick: 1 Euler step from x; damped:
# the unrelaxed injection z0 = x), recomputed and confirmed here on every run
CE_BASIN = TrackingCase("thick", T=3, d=3, B=1, seed=540, c=0.8325374994095526, resinit=1.3757751873011441,
                        causal=False, x_scale=1.7395306034546265, log_stop=0.0, beta=0.1)
CE_WINDOW = TrackingCase("damped", T=2, d=3, B=1, seed=2222, s=6.077437771017302, c=1.420690591594231, lam=1.0,
                         qk_scale=1.772075469616343, v_scale=2.5774919788808526, x_scale=1.8796442958288513,
                         log_stop=0.5, beta=0.3)
# found by the ci profile's search (a worker whose local-module constants steered generation there)
CE_SETTLE = TrackingCase("thick", T=2, d=4, B=2, seed=337, c=0.0, resinit=1.0, causal=False, x_scale=1.0,
                         log_stop=0.0, beta=0.31622776601683794)
CE_SHRINK = 3.0  # the same cases at beta / 3: inside the conditions, tracking restores


def _other_equilibrium(case: TrackingCase, o: Outcome) -> tuple[torch.Tensor, float, float]:
    """Newton (float64) from tracking's common mode: (z**, its residual, its spectral abscissa)."""
    blk64 = twin64(make_block(case, torch.float64))
    x64, _ = inputs(case)
    at = (0.5 * (o.run.zp + o.run.zm)).detach().double()
    nz = est.free_phase(blk64, x64, solver="newton", steps=20, tol=ep_blocks.free_tol(x64, _B64), z_init=at,
                        require=False)
    J = dense_jacobian(est.free_force(blk64, x64), nz.z)
    return nz.z, float(nz.solve.residual), float(np.linalg.eigvals(J).real.max())


@pytest.mark.claim(CLAIM)
def test_counterexamples(backend, record) -> None:
    """aep.tracking (counterexample): three cases where frozen AEP fails and tracking AEP does NOT restore
    the gradient, in the backend dtype and confirmed in float64 -- so the claim holds only under the
    three conditions the property certifies (verdict conditional):

    C0 violated (thick block, width 4, no damping c = 0, beta 0.32): frozen cos -0.15; the tracking
    relaxation wanders at residual ~1 after 4x (and 40x) its Euler budget: no settled pair, no
    estimate (cos 0.30 at the budget's end).  At beta / 3 it settles and restores (cos 0.998).

    C1 violated (thick block, free phase stopped after one Euler step, res0 0.61, beta 0.1): frozen
    cos 0.63; the tracking pair relaxes -- with its optimal Euler step and with the free phase's own
    step alike -- to ANOTHER stable free equilibrium z** (||z** - z*|| ~ 3.4, Newton residual <=
    64 n u, spectral abscissa < 0) while the free phase from the same z0 converges to z*; its estimate
    is the exact IFT gradient at z** (cos >= 0.99), not at z* (cos 0.29).  At beta / 3 it stays in
    z*'s basin and restores.
    C2 violated (damped attention, z0 = x, beta 0.3): frozen cos -0.12; tracking's common mode is z*
    (C1 holds) but its O(beta^2) displacement, which the symmetric readout does not cancel, moves the
    estimate by > 10%: cos 0.86, while frozen AEP at the converged z* with the same beta has cos >=
    0.99 (its symmetric readout cancels the even orders).  At beta / 3 tracking restores.  The
    reference is confirmed against the 50-digit mpmath IFT gradient (properties.ep)."""
    from properties import ep as pep

    out = {}
    for name, case in (("C1", CE_BASIN), ("C2", CE_WINDOW)):
        for dt in dict.fromkeys((backend.torch_dtype, torch.float64)):
            o = evaluate(case, dt, cap_factor=4)
            assert isinstance(o, Outcome) and o.converged, f"{name}: {o if isinstance(o, str) else 'not converged'}"
            assert_pair_checks(o)
            assert o.frozen_fails and not o.restored, (
                f"{name} ({dt}): frozen cos {o.cos_frozen:.4f}, tracking cos {o.cos_track:.5f}: not a counterexample")
            if name == "C1":
                assert not o.checks.same_equilibrium, f"C1 ({dt}): the common mode is z* (ratio {o.checks.root_ratio:.2f})"
            else:
                assert o.checks.same_equilibrium and not o.checks.in_window, (
                    f"C2 ({dt}): same equilibrium {o.checks.same_equilibrium}, window {o.checks.offset_effect:.3f} + "
                    f"{o.checks.cubic_effect:.3f}")
            out[(name, str(dt))] = o
        o64 = out[(name, "torch.float64")]
        record.example(2)
        record.set(f"counterexample.{name}.cos_frozen", o64.cos_frozen)
        record.set(f"counterexample.{name}.cos_tracking", o64.cos_track)
        record.set(f"counterexample.{name}.common_mode_distance", o64.checks.zbar_dist)
        record.set(f"counterexample.{name}.offset_effect", o64.checks.offset_effect)
        record.figure("aep_tracking_cases", {"kind": case.kind, "res0": o64.run.res0, "beta": case.beta,
                                             "cos_frozen": o64.cos_frozen, "cos_tracking": o64.cos_track,
                                             "counterexample": name})
        small = evaluate(dataclasses.replace(case, beta=case.beta / CE_SHRINK), torch.float64, ref=o64.ref)
        assert isinstance(small, Outcome) and small.converged and small.restored and small.checks.same_equilibrium, (
            f"{name} at beta / {CE_SHRINK}: tracking does not restore")
        record.set(f"counterexample.{name}.cos_tracking_at_beta_over_3", small.cos_track)
    # C1: the other equilibrium, the step-size independence, the free phase's own limit
    o = out[("C1", "torch.float64")]
    z2, res2, absc2 = _other_equilibrium(CE_BASIN, o)
    blk64 = twin64(make_block(CE_BASIN, torch.float64))
    x64, y64 = inputs(CE_BASIN)
    tol = ep_blocks.free_tol(x64, _B64)
    assert res2 <= tol and absc2 < 0, f"C1: the common mode's limit is no stable equilibrium (res {res2:.2e}, {absc2:.3f})"
    dist2 = float((z2 - o.ref.z).norm())
    assert dist2 > 2 * o.ref.inv_norm * tol * 1e6, f"C1: z** is z* ({dist2:.3e})"
    g2 = _np(references.ift_gradient(blk64, x64, y64, z2))
    cos2 = pt.cosine(o.run.g_track, g2)
    assert cos2 >= pt.RESTORED, f"C1: tracking is not the gradient at z** either (cos {cos2:.5f})"
    free = est.free_phase(blk64, x64, solver="euler", eps=CE_BASIN.eps, steps=FREE_STEPS, tol=FREE_TOL,
                          z_init=o.run.z0.detach().double(), require=False)
    assert float((free.z - o.ref.z).norm()) <= 2 * o.ref.inv_norm * (FREE_TOL * max(float(free.z.norm()), 1.0)), \
        "C1: the free phase from z0 does not converge to z*"
    _g_f, zp, zm, _ = tracking_estimate(blk64, x64, y64, o.run.z0.detach().double(), CE_BASIN.beta, CE_BASIN.eps,
                                       o.run.cap * 4, o.run.tau)
    zb = 0.5 * (zp.z + zm.z)
    zb_opt = (0.5 * (o.run.zp + o.run.zm)).detach().double()
    # the same pair root with either step: their common modes agree far below their O(beta^2) offset
    # from z** and far below ||z** - z*||
    assert float((zb - zb_opt).norm()) <= 1e-6 * dist2, "C1: with the free phase's own Euler step tracking ends elsewhere"
    record.set("counterexample.C1.other_equilibrium_distance", dist2)
    record.set("counterexample.C1.cos_tracking_vs_gradient_at_other_equilibrium", cos2)
    record.set("counterexample.C1.other_equilibrium_abscissa", absc2)
    # C2: AEP at the converged free phase with the same beta, and the 50-digit reference
    o = out[("C2", "torch.float64")]
    blk64 = twin64(make_block(CE_WINDOW, torch.float64))
    x64, y64 = inputs(CE_WINDOW)
    g_star, _, err = frozen_estimate(blk64, x64, y64, o.ref.z, CE_WINDOW.beta, o.run.tau)
    assert g_star is not None, err
    cos_aep = pt.cosine(g_star, o.ref.g)
    assert cos_aep >= pt.RESTORED, f"C2: AEP at z* with beta {CE_WINDOW.beta} is off too (cos {cos_aep:.5f})"
    exact = pep.ift_gradient(ep_blocks.mp_block(blk64), _np(o.ref.z).reshape(-1), _np(x64).reshape(-1),
                             _np(y64).reshape(-1))
    tol_ref = pep.ift_tolerance(U64, o.ref.J.shape[0], len(o.ref.g), exact, ep_blocks.force_terms(blk64))
    assert float(np.linalg.norm(o.ref.g - exact.grad)) <= tol_ref, "C2: the float64 reference differs from 50 digits"
    record.set("counterexample.C2.cos_aep_at_converged_free_phase", cos_aep)
    ces = {k: counterexample_record(out[(k, "torch.float64")]) for k in ("C1", "C2")}
    # C0: the tracking relaxation settles nowhere, in the backend dtype and in float64 with 4x budget
    for dt in dict.fromkeys((backend.torch_dtype, torch.float64)):
        o = evaluate(CE_SETTLE, dt, cap_factor=4)
        assert isinstance(o, Outcome) and not o.converged and o.frozen_fails, (
            f"C0 ({dt}): {o if isinstance(o, str) else f'settled {o.converged}, frozen cos {o.cos_frozen:.4f}'}")
    # `o` is now the float64 outcome (float64 is the loop's last dtype): its reference serves beta / 3
    small = evaluate(dataclasses.replace(CE_SETTLE, beta=CE_SETTLE.beta / CE_SHRINK), torch.float64, ref=o.ref)
    assert isinstance(small, Outcome) and small.converged and small.restored and small.checks.same_equilibrium, (
        f"C0 at beta / {CE_SHRINK}: tracking does not settle and restore")
    record.example(2)
    record.set("counterexample.C0.cos_frozen", o.cos_frozen)
    record.set("counterexample.C0.tracking_residual_after_4x_budget", o.run.track_residual)
    record.set("counterexample.C0.cos_tracking_at_beta_over_3", small.cos_track)
    ces["C0"] = c0_record(o, small)
    record.verdict("conditional", CONDITION, ces)
