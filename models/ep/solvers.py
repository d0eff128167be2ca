"""Free- and nudged-phase solvers: find z with G(z) = 0 for a force G (003 "free phase").

* `euler`: relaxation z <- z + eps G(z) (the seed's solver; converges when I + eps dG/dz is a
  contraction), T steps or until the residual is below tol;
* `anderson`: Anderson acceleration (type II, memory m) of the same fixed-point map;
* `newton`: Newton's method with the dense Jacobian built from forward-mode products (tiny
  states only; quadratic convergence for the order checks' tight free phases);
* `chord`: Newton with a fixed Jacobian (a nudged phase reuses the free equilibrium's).

All work on real or complex states of any shape (complex for holomorphic EP: the forces are
holomorphic, so forward-mode products give the complex derivative).  The residual reported is
res = ||G(z)|| / max(||z||, 1) per sample, the largest over the batch (003's res_F).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Force = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Solve:
    """A solve's end state, its step count, final residual and the residual history."""

    z: torch.Tensor
    steps: int
    residual: float
    history: list[float] = field(default_factory=list)

    @property
    def converged_to(self) -> float:
        return self.residual


def residual(G: torch.Tensor, z: torch.Tensor) -> float:
    """max over samples of ||G(z)|| / max(||z||, 1) (leading axis = samples)."""
    g = G.detach().reshape(G.shape[0], -1).abs().pow(2).sum(-1).sqrt()
    n = z.detach().reshape(z.shape[0], -1).abs().pow(2).sum(-1).sqrt().clamp_min(1.0)
    return float((g / n).max())


def _check(steps: int, tol: float | None) -> None:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")


@torch.no_grad()
def euler(G: Force, z0: torch.Tensor, eps: float, steps: int, tol: float | None = None) -> Solve:
    """z_{t+1} = z_t + eps G(z_t), at most `steps` steps, stopping once res <= tol."""
    _check(steps, tol)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    z = z0.clone()
    g = G(z)
    hist = [residual(g, z)]
    t = 0
    while t < steps and not (tol is not None and hist[-1] <= tol):
        z = euler_step(z, g, eps)
        g = G(z)
        hist.append(residual(g, z))
        t += 1
    return Solve(z, t, hist[-1], hist)


def euler_step(z: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * g


@torch.no_grad()
def anderson(G: Force, z0: torch.Tensor, eps: float, steps: int, tol: float | None = None,
             m: int = 5, reg: float = 1e-12) -> Solve:
    """Anderson acceleration of f(z) = z + eps G(z): the next iterate mixes the last m
    images with weights alpha minimising ||sum alpha_i g_i|| (sum alpha = 1), g_i = eps G(z_i);
    a Tikhonov term reg * ||dG||^2 keeps the least-squares problem well posed.  Per sample."""
    _check(steps, tol)
    if not eps > 0 or m < 1:
        raise ValueError(f"need eps > 0 and m >= 1, got eps={eps!r}, m={m!r}")
    B = z0.shape[0]
    shape = z0.shape
    z = z0.reshape(B, -1).clone()
    Gf = lambda v: G(v.reshape(shape)).reshape(B, -1)  # noqa: E731
    g = eps * Gf(z)
    hist = [residual(g / eps, z)]
    Zs, Fs = [z], [g]  # iterates and their residual images
    t = 0
    while t < steps and not (tol is not None and hist[-1] <= tol):
        k = len(Zs)
        if k == 1:
            z = z + g
        else:
            dF = torch.stack([Fs[i + 1] - Fs[i] for i in range(k - 1)], -1)  # (B, n, k-1)
            dZ = torch.stack([Zs[i + 1] - Zs[i] for i in range(k - 1)], -1)
            gram = dF.mH @ dF
            scale = gram.diagonal(dim1=-2, dim2=-1).real.amax(-1, keepdim=True).clamp_min(1e-300)
            eye = torch.eye(k - 1, dtype=gram.dtype, device=gram.device)
            # Tikhonov weight at least n eps of the Gram scale: below it the Gram matrix of
            # (nearly) collinear differences is singular to working precision
            lam = max(reg, z.shape[-1] * torch.finfo(z.real.dtype if z.is_complex() else z.dtype).eps)
            gam, info = torch.linalg.solve_ex(gram + lam * scale.unsqueeze(-1) * eye, dF.mH @ Fs[-1].unsqueeze(-1))
            # a sample whose differences all vanished (stagnation) takes the plain fixed-point step
            gam = torch.where((info != 0).view(-1, 1, 1) | ~torch.isfinite(gam), torch.zeros_like(gam), gam)
            z = Zs[-1] + Fs[-1] - ((dZ + dF) @ gam).squeeze(-1)
        g = eps * Gf(z)
        Zs.append(z)
        Fs.append(g)
        if len(Zs) > m + 1:
            Zs.pop(0)
            Fs.pop(0)
        hist.append(residual(g / eps, z))
        t += 1
    return Solve(z.reshape(shape), t, hist[-1], hist)


def jacobian(G: Force, z: torch.Tensor) -> torch.Tensor:
    """Dense dG/dz at z as an (N, N) matrix over the flattened state (all samples): real z by
    reverse mode (jacrev: vmapped vjps, about 3x faster here than jacfwd, whose decompositions
    run in Python); complex z by vmapped jvps, correct when G is holomorphic."""
    shape = z.shape
    f = lambda v: G(v.reshape(shape)).reshape(-1)  # noqa: E731
    flat = z.reshape(-1).detach()
    if not flat.is_complex():
        return torch.func.jacrev(f)(flat).detach()
    # jacfwd refuses complex inputs; the same vmapped jvps over the unit vectors do not
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    return torch.func.vmap(lambda e: torch.func.jvp(f, (flat,), (e,))[1])(eye).mT.detach()


@torch.no_grad()
def newton(G: Force, z0: torch.Tensor, steps: int = 20, tol: float | None = None) -> Solve:
    """Newton's method on the flattened state (dense Jacobian; tiny problems only), with
    backtracking: the step is halved (up to 30 times) until ||G|| decreases, so it cannot cycle."""
    _check(steps, tol)
    z = z0.clone()
    g = G(z)
    hist = [residual(g, z)]
    t = 0
    while t < steps and not (tol is not None and hist[-1] <= tol):
        with torch.enable_grad():
            J = jacobian(G, z)
        step, info = torch.linalg.solve_ex(J, g.reshape(-1))
        if int(info) != 0 or not bool(torch.isfinite(step).all()):
            break  # a singular Jacobian: stop here, the residual says how far it got
        step = step.reshape(z.shape)
        norm = float(g.abs().pow(2).sum())
        lam = 1.0
        for _ in range(30):
            z_new = z - lam * step
            g_new = G(z_new)
            if float(g_new.abs().pow(2).sum()) < norm or norm == 0.0:
                break
            lam *= 0.5
        z, g = z_new, g_new
        hist.append(residual(g, z))
        t += 1
    return Solve(z, t, hist[-1], hist)


@torch.no_grad()
def chord(G: Force, z0: torch.Tensor, J: torch.Tensor, steps: int = 30, tol: float | None = None) -> Solve:
    """The chord method: Newton with one fixed Jacobian J (factored once), z <- z - J^-1 G(z).

    For a nudged phase J is the free equilibrium's (corrected) Jacobian, off the nudged one by
    O(beta), so the iteration contracts by O(beta) per step at the cost of one force evaluation."""
    _check(steps, tol)
    if J.shape != (z0.numel(), z0.numel()):
        raise ValueError(f"J must be ({z0.numel()}, {z0.numel()}), got {tuple(J.shape)}")
    LU, piv = torch.linalg.lu_factor(J.to(z0.dtype) if z0.is_complex() else J)
    z = z0.clone()
    g = G(z)
    hist = [residual(g, z)]
    t = 0
    while t < steps and not (tol is not None and hist[-1] <= tol):
        z = z - torch.linalg.lu_solve(LU, piv, g.reshape(-1, 1)).reshape(z.shape)
        g = G(z)
        hist.append(residual(g, z))
        t += 1
    return Solve(z, t, hist[-1], hist)


SOLVERS = {"euler": euler, "anderson": anderson, "newton": newton}
