"""Gradient estimators of the equilibrium blocks (seed 003; Scellier-Bengio 2017, Laborieux et al.
2021, Laborieux-Zenke 2022, Scurria et al. 2026 "AsymEP").

Loss L(theta) = sum_b C(z*_b, y_b) at the free equilibrium F(z*) = 0.  A nudged phase relaxes
the nudged force

    G_beta(z) = F(z) - beta dC/dz(z) - corr(z)

from a start state (the free equilibrium), where corr = 0 (plain EP), the frozen AEP correction
2 A_0 (z - z_0) with A_0 = (J - J^T)/2 at the free equilibrium (matrix-free: J v - J^T v by one
jvp and one vjp), or -- for a pair of phases at +-beta -- the tracking correction re-linearised at
their common mode zbar = (z_+ + z_-)/2, 2 A(zbar)(z_+- - zbar).

Readouts h(beta), analytic in beta with h(0) = 0:
  * "classic" (conservative blocks): h = dE/dtheta(z_beta) - dE/dtheta(z_0) (the EP readout);
  * "vf" (any block): h = -(dF/dtheta(z_0))^T (z_beta - z_0), the vector-field readout.
Estimates of dL/dtheta = dC/dtheta(z_0) + lim h(beta)/beta:
  one-sided  dC/dtheta + h(beta)/beta,             error O(beta);
  symmetric  dC/dtheta + (h(beta) - h(-beta))/2beta, error O(beta^2);
  holomorphic dC/dtheta + Re (1/N) sum_k h(beta_k)/beta_k, beta_k = r e^{2 pi i k/N}, error O(r^N).
The explicit term dC/dtheta is taken at z_0 exactly; only the implicit part is estimated.

Each step is a small function so tests can plant mutants (a dropped or sign-flipped correction,
the 1/beta_k weights, the nudged start, the free-phase tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import solvers
from .blocks import EquilibriumBlock

Force = Callable[[torch.Tensor], torch.Tensor]
CORRECTIONS = (None, "aep", "tracking")
READOUTS = ("classic", "vf")


# --------------------------------------------------------------------------- #
# parameters as flat vectors
# --------------------------------------------------------------------------- #
def params(block: EquilibriumBlock) -> list[torch.nn.Parameter]:
    return [p for p in block.parameters()]


def flat(grads: list[torch.Tensor | None], ps: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, ps)])


def group_slices(block: EquilibriumBlock) -> dict[str, list[slice]]:
    """Slices of the flat parameter vector per parameter group (block.param_groups())."""
    offs, at = {}, 0
    for name, p in block.named_parameters():
        offs[name] = slice(at, at + p.numel())
        at += p.numel()
    return {g: [offs[n] for n in names] for g, names in block.param_groups().items()}


def group_vector(v: torch.Tensor, slices: list[slice]) -> torch.Tensor:
    return torch.cat([v[s] for s in slices])


# --------------------------------------------------------------------------- #
# phases
# --------------------------------------------------------------------------- #
@dataclass
class Phase:
    """A solved phase: state, its solve record, and the nudge it was solved for."""

    z: torch.Tensor
    solve: solvers.Solve
    beta: complex = 0.0


def free_force(block: EquilibriumBlock, x: torch.Tensor) -> Force:
    return lambda z: block.force(z, x)


class NotConverged(RuntimeError):
    """A free phase that stopped above its residual tolerance (when convergence was required)."""


def free_phase(block: EquilibriumBlock, x: torch.Tensor, *, solver: str = "newton", eps: float = 0.2,
               steps: int = 50, tol: float | None = 1e-14, z_init: torch.Tensor | None = None,
               require: bool = True) -> Phase:
    """The free equilibrium F(z*) = 0 from z_init (default: the input injection x).

    With `require` (the default) a solve that ends above tol raises NotConverged: EP's premise is
    a converged free phase; pass require=False to study estimators from an unconverged one."""
    z_init = x.clone() if z_init is None else z_init
    G = free_force(block, x)
    if solver == "newton":
        res = solvers.newton(G, z_init, steps=steps, tol=tol)
    elif solver in ("euler", "anderson"):
        res = solvers.SOLVERS[solver](G, z_init, eps, steps, tol)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose from {sorted(solvers.SOLVERS)}")
    if require and tol is not None and not res.residual <= tol:
        raise NotConverged(f"{type(block).__name__}: free phase stopped at residual {res.residual:.3e} > tol "
                           f"{tol:.1e} after {res.steps} {solver} steps")
    return Phase(res.z, res, 0.0)


def _jacobian_products(F: Force, z0: torch.Tensor) -> tuple[Callable, Callable]:
    """(v -> J^T v, v -> J v) at z0, both recorded once and replayed per v.  J v is the vjp of the
    linear map w -> J^T w (reverse over reverse): the same products as forward mode, but through
    the autograd engine; torch.func.jvp runs these ops' decompositions in Python, 5-10x slower."""
    z0 = z0.detach()
    _, vjp_fn = torch.func.vjp(F, z0)
    _, jv_fn = torch.func.vjp(lambda w: vjp_fn(w)[0], torch.zeros_like(z0))
    return (lambda v: vjp_fn(v)[0]), (lambda v: jv_fn(v)[0])


def antisymmetric_product(F: Force, z0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> 2 A_J v = J v - J^T v at z0, matrix-free (one Jacobian product each way; J real at a real z0, so a
    complex v is applied to its real and imaginary parts separately)."""
    vjp_fn, jv_fn = _jacobian_products(F, z0)

    def real_apply(v: torch.Tensor) -> torch.Tensor:
        return jv_fn(v) - vjp_fn(v)

    def apply(v: torch.Tensor) -> torch.Tensor:
        if v.is_complex():
            return torch.complex(real_apply(v.real), real_apply(v.imag))
        return real_apply(v)

    return apply


def aep_correction(two_A: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """The frozen AEP correction term 2 A_0 (z - z_0), subtracted from the nudged force."""
    return two_A(z - z0)


def antisymmetric_matrix(F: Force, z0: torch.Tensor) -> torch.Tensor:
    """The dense 2 A_J = J - J^T at z0 from the same two primitives, jvp minus vjp, batched over
    the unit vectors (tiny states: solvers that need the nudged force's Jacobian use it)."""
    z0 = z0.detach()
    shape, n = z0.shape, z0.numel()
    f = lambda v: F(v.reshape(shape)).reshape(-1)  # noqa: E731
    flat = z0.reshape(-1)
    eye = torch.eye(n, dtype=z0.dtype, device=z0.device)
    vjp_fn, jv_fn = _jacobian_products(f, flat)
    Jcols = torch.func.vmap(jv_fn)(eye)  # row i: J e_i
    JTcols = torch.func.vmap(vjp_fn)(eye)  # row i: J^T e_i
    return (Jcols - JTcols).mT.detach()


def nudged_force(block: EquilibriumBlock, x: torch.Tensor, y: torch.Tensor, beta: complex,
                 z0: torch.Tensor | None = None, correction: str | None = None,
                 two_A: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Force:
    """G(z) = F(z) - beta dC/dz(z) [- 2 A_0 (z - z0) for "aep", with the product v -> 2 A_0 v given
    or built matrix-free at z0]."""
    if correction not in (None, "aep"):
        raise ValueError(f"nudged_force takes correction None or 'aep' (tracking is a pair: tracking_pair), "
                         f"got {correction!r}")
    F = free_force(block, x)
    if correction is None:
        return lambda z: F(z) - beta * block.cost_grad_z(z, y)
    if z0 is None:
        raise ValueError("the AEP correction needs the free equilibrium z0")
    two_A = antisymmetric_product(F, z0) if two_A is None else two_A
    return lambda z: F(z) - beta * block.cost_grad_z(z, y) - aep_correction(two_A, z, z0)


def nudge_start(z0: torch.Tensor, beta: complex) -> torch.Tensor:
    """The nudged phase starts at the free equilibrium (complex when beta is)."""
    return z0.to(torch.result_type(z0, torch.tensor(beta))) if isinstance(beta, complex) else z0.clone()


def _relax(G: Force, start: torch.Tensor, solver: str, eps: float, steps: int, tol: float | None,
           J: torch.Tensor | None = None) -> solvers.Solve:
    if solver == "newton":
        return solvers.newton(G, start, steps=steps, tol=tol)
    if solver == "chord":
        return solvers.chord(G, start, J, steps=steps, tol=tol)
    if solver not in solvers.SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {sorted(solvers.SOLVERS)}")
    return solvers.SOLVERS[solver](G, start, eps, steps, tol)


def tracking_pair(block: EquilibriumBlock, x: torch.Tensor, y: torch.Tensor, z0: torch.Tensor, beta: float,
                  *, eps: float = 0.2, steps: int = 200, solver: str = "euler",
                  tol: float | None = None) -> tuple[Phase, Phase]:
    """The +-beta pair with the correction re-linearised at the moving common mode zbar:
    G_+- = F(z_+-) -+ beta dC/dz(z_+-) - 2 A(zbar)(z_+- - zbar), relaxed jointly from (z0, z0).
    Summing the two equations, the corrections cancel: zbar relaxes to the free equilibrium
    itself (to O(|z_+ - z_-|^2)), wherever the free phase stopped."""
    B = z0.shape[0]
    F = free_force(block, x)
    xx, yy = torch.cat([x, x]), torch.cat([y, y])
    sign = torch.cat([torch.ones(B), -torch.ones(B)]).to(z0.dtype).to(z0.device).view(-1, 1, 1)

    def G(Z: torch.Tensor) -> torch.Tensor:
        zp, zm = Z[:B], Z[B:]
        zbar = 0.5 * (zp + zm)
        # 2 A(zbar)(z_+ - zbar), re-linearised at the common mode every evaluation, matrix-free
        # (two Jacobian products instead of a dense Jacobian of n products at n state entries)
        corr = antisymmetric_product(F, zbar)(0.5 * (zp - zm))
        return block.force(Z, xx) - beta * sign * block.cost_grad_z(Z, yy) - sign * torch.cat([corr, corr])

    if solver == "newton":
        raise ValueError("tracking AEP re-linearises at every evaluation: relax it (euler / anderson)")
    res = _relax(G, torch.cat([z0, z0]).clone(), solver, eps, steps, tol)
    return Phase(res.z[:B], res, beta), Phase(res.z[B:], res, -beta)


@dataclass
class EPConfig:
    """How the nudged phases are run and read: correction, readout, solver, Euler step, T2 / tol.

    solver "euler" relaxes `steps` steps from the free equilibrium (the seed's T2); "newton" and
    "chord" (Newton with the free equilibrium's corrected Jacobian J_0 - 2 A_0, factored once) solve
    to tol, with the dense 2 A_0 assembled once from the matrix-free product."""

    correction: str | None = None
    readout: str = "classic"
    eps: float = 0.2
    steps: int = 200
    solver: str = "euler"
    tol: float | None = None

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")


class Nudger:
    """The nudged phases of one free equilibrium: what every beta shares (the free force, the
    correction operator 2 A_0, dC/dtheta at z0) is built once."""

    def __init__(self, block: EquilibriumBlock, x: torch.Tensor, y: torch.Tensor, z0: torch.Tensor,
                 cfg: EPConfig) -> None:
        self.block, self.x, self.y, self.z0, self.cfg = block, x, y, z0.detach(), cfg
        self.two_A = None
        dense = cfg.solver in ("newton", "chord")
        F = free_force(block, x)
        if cfg.correction == "aep":
            if dense:
                M = antisymmetric_matrix(F, self.z0)
                self.two_A = lambda v: (M.to(v.dtype) @ v.reshape(-1)).reshape(v.shape)
            else:
                self.two_A = antisymmetric_product(F, self.z0)
        self.J_chord = None
        if cfg.solver == "chord":
            J = solvers.jacobian(F, self.z0)
            self.J_chord = J - M if cfg.correction == "aep" else J  # the nudged Jacobian at beta = 0
        self.explicit = dC_dtheta(block, self.z0, y)

    def phase(self, beta: complex) -> Phase:
        c = self.cfg
        if c.correction == "tracking":
            raise ValueError("tracking AEP needs the +-beta pair: use pair()")
        G = nudged_force(self.block, self.x, self.y, beta, self.z0, c.correction, self.two_A)
        res = _relax(G, nudge_start(self.z0, beta), c.solver, c.eps, c.steps, c.tol, self.J_chord)
        return Phase(res.z, res, beta)

    def pair(self, beta: float) -> tuple[Phase, Phase]:
        c = self.cfg
        if c.correction == "tracking":
            return tracking_pair(self.block, self.x, self.y, self.z0, beta, eps=c.eps, steps=c.steps,
                                 solver=c.solver, tol=c.tol)
        return self.phase(beta), self.phase(-beta)

    def readout(self, ph: Phase, at: torch.Tensor | None = None) -> torch.Tensor:
        return readout(self.block, self.x, self.z0 if at is None else at, ph.z, self.cfg.readout)


# --------------------------------------------------------------------------- #
# readouts
# --------------------------------------------------------------------------- #
def dC_dtheta(block: EquilibriumBlock, z0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ps = params(block)
    with torch.enable_grad():
        g = torch.autograd.grad(block.cost(z0.detach(), y).sum(), ps, allow_unused=True)
    return flat(list(g), ps)


def dE_dtheta(block: EquilibriumBlock, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dE/dtheta at z (complex z: the holomorphic extension, real and imaginary parts of E)."""
    if not block.conservative:
        raise ValueError(f"{type(block).__name__} has no energy: use the 'vf' readout")
    ps = params(block)
    with torch.enable_grad():
        E = block.energy(z.detach(), x).sum()
        if E.is_complex():
            gr = flat(list(torch.autograd.grad(E.real, ps, retain_graph=True, allow_unused=True)), ps)
            gi = flat(list(torch.autograd.grad(E.imag, ps, allow_unused=True)), ps)
            return torch.complex(gr, gi)
        return flat(list(torch.autograd.grad(E, ps, allow_unused=True)), ps)


def vf_readout(block: EquilibriumBlock, x: torch.Tensor, z0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """-(dF/dtheta(z0))^T delta (complex delta: real and imaginary parts)."""
    ps = params(block)

    def real(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            Fz = block.force(z0.detach(), x)
            g = torch.autograd.grad(Fz, ps, grad_outputs=v, allow_unused=True)
        return -flat(list(g), ps)

    return torch.complex(real(delta.real), real(delta.imag)) if delta.is_complex() else real(delta)


def readout(block: EquilibriumBlock, x: torch.Tensor, z0: torch.Tensor, zb: torch.Tensor, kind: str) -> torch.Tensor:
    """h(beta) for the nudged state zb."""
    if kind == "classic":
        return dE_dtheta(block, zb, x) - dE_dtheta(block, z0, x)
    if kind == "vf":
        return vf_readout(block, x, z0, zb - z0)
    raise ValueError(f"unknown readout {kind!r}; choose from {READOUTS}")


# --------------------------------------------------------------------------- #
# estimators
# --------------------------------------------------------------------------- #
@dataclass
class Estimate:
    """An estimated dL/dtheta (flat, real) with what produced it."""

    grad: torch.Tensor
    kind: str
    beta: float
    imag: float = 0.0  # holomorphic: norm of the imaginary part of the readout (should be ~0)
    nudged_residuals: list[float] = field(default_factory=list)


def one_sided(nudger: Nudger, beta: float) -> Estimate:
    """dC/dtheta + h(beta)/beta."""
    ph = nudger.phase(beta)
    return Estimate(nudger.explicit + nudger.readout(ph) / beta, "one_sided", beta,
                    nudged_residuals=[ph.solve.residual])


def symmetric(nudger: Nudger, beta: float) -> Estimate:
    """dC/dtheta + (h(beta) - h(-beta)) / (2 beta); tracking AEP reads out at the common mode."""
    zp, zm = nudger.pair(beta)
    at = 0.5 * (zp.z + zm.z) if nudger.cfg.correction == "tracking" else None
    h = nudger.readout(zp, at) - nudger.readout(zm, at)
    explicit = nudger.explicit if at is None else dC_dtheta(nudger.block, at, nudger.y)
    return Estimate(explicit + h / (2 * beta), "symmetric", beta,
                    nudged_residuals=[zp.solve.residual, zm.solve.residual])


def cauchy_weights(r: float, N: int) -> tuple[list[complex], list[complex]]:
    """(beta_k, w_k): the N points r e^{2 pi i k/N} and the readout weights 1/(N beta_k)."""
    betas = [r * complex(math.cos(2 * math.pi * k / N), math.sin(2 * math.pi * k / N)) for k in range(N)]
    return betas, [1.0 / (N * b) for b in betas]


def holomorphic(nudger: Nudger, r: float, N: int) -> Estimate:
    """dC/dtheta + Re sum_k w_k h(beta_k): the Cauchy-integral readout of h'(0)."""
    if N < 1 or not r > 0:
        raise ValueError(f"need N >= 1 and r > 0, got N={N}, r={r}")
    if nudger.cfg.correction == "tracking":
        raise ValueError("holomorphic EP is defined here with the frozen correction (aep) or none")
    betas, ws = cauchy_weights(r, N)
    acc, res = None, []
    for b, w in zip(betas, ws):
        ph = nudger.phase(b)
        term = w * nudger.readout(ph)
        acc = term if acc is None else acc + term
        res.append(ph.solve.residual)
    if not acc.is_complex():  # N = 1: one real point
        acc = torch.complex(acc, torch.zeros_like(acc))
    return Estimate(nudger.explicit + acc.real, "holomorphic", r, imag=float(acc.imag.norm()), nudged_residuals=res)
