"""High-precision references and strategies for the equilibrium-propagation claims (seed 003).
No torch: the blocks of models.ep.blocks are re-evaluated here in mpmath (>= 50 digits) from the
SUT's own float parameters and inputs, taken exactly, for tiny sizes (a state of a few tokens).

* `MPBlock`: the force F(z; x) of the energy block (with the optional rotational drift) and of
  the damped softmax-attention block, written out again from their definitions (not from the
  SUT's code), the readout cost and its gradient;
* derivatives by central differences at step 10^-(dps/2.5) (truncation ~h^2, rounding
  ~10^-dps / h: both below 10^-28 at 50 digits, far under float64's 10^-16);
* `equilibrium` (Newton in mpmath from the SUT's float equilibrium), `ift_gradient` (the
  implicit-function-theorem gradient), `antisymmetric_product` (2 A v = (J - J^T) v) and
  `spectral_abscissa` (mpmath eigenvalues) at that precision.

Tolerances for the SUT's float results are first-order rounding bounds (Higham ch. 3) from the
unit roundoff, the sizes and the conditioning, each with its one-line derivation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mpmath
import numpy as np
from hypothesis import strategies as st

from .strategies import SEEDS
from .tolerances import gamma

DPS = 50


def _mp(a) -> list:
    """Exact conversion of a float array (float32 values are exact in float64) to nested mpf lists."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return mpmath.mpf(float(a))
    return [_mp(v) for v in a]


def _flat(a) -> list:
    if isinstance(a, list):
        return [v for x in a for v in _flat(x)]
    return [a]


def _shape(flat: list, shape: tuple[int, ...]) -> list:
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_shape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def to_numpy(v: Sequence) -> np.ndarray:
    return np.array([float(x) for x in _flat(list(v))], dtype=np.float64)


# --------------------------------------------------------------------------- #
# the blocks in mpmath
# --------------------------------------------------------------------------- #
@dataclass
class MPBlock:
    """A tiny block re-evaluated in mpmath.  kind: "energy" (alpha: the rotational drift;
    0 = conservative) or "damped" (damped softmax attention).  params: name -> float array, as
    the SUT holds them (W_Q (h,d,k), W_K, [W_V, W_O | Xi], W_out (d,o), [Omega (d,d)])."""

    kind: str
    params: dict[str, np.ndarray]
    hp: dict[str, float]
    T: int
    d: int
    fixed: dict[str, np.ndarray] | None = None  # buffers (the drift's Omega): not parameters

    def __post_init__(self) -> None:
        if self.kind not in ("energy", "damped"):
            raise ValueError(f"unknown block kind {self.kind!r}")
        self.names = list(self.params)
        self.shapes = {k: np.asarray(v).shape for k, v in self.params.items()}
        self._fixed = {k: _mp(v) for k, v in (self.fixed or {}).items()}

    # parameters as one flat mp vector (the SUT's named_parameters order) --------------------
    def theta(self) -> list:
        return [v for k in self.names for v in _flat(_mp(self.params[k]))]

    def unpack(self, theta: list) -> dict[str, list]:
        out, at = dict(self._fixed), 0
        for k in self.names:
            n = math.prod(self.shapes[k]) if self.shapes[k] else 1
            out[k] = _shape(theta[at:at + n], self.shapes[k])
            at += n
        return out

    # the force -------------------------------------------------------------------------------
    def force(self, z: list, x: list, theta: list | None = None) -> list:
        """F(z; x) for one sample, z and x flat (T*d), returned flat."""
        P = self.unpack(self.theta() if theta is None else theta)
        T, d = self.T, self.d
        Z = [z[t * d:(t + 1) * d] for t in range(T)]
        X = [x[t * d:(t + 1) * d] for t in range(T)]
        return _flat(_energy_force(Z, X, P, self.hp, T, d) if self.kind == "energy"
                     else _damped_force(Z, X, P, self.hp, T, d))

    def cost(self, z: list, y: list, theta: list | None = None) -> mpmath.mpf:
        P = self.unpack(self.theta() if theta is None else theta)
        o = _readout(z, P["W_out"], self.T, self.d)
        return sum((oi - yi) ** 2 for oi, yi in zip(o, y)) / 2

    def cost_grad_z(self, z: list, y: list) -> list:
        """dC/dz = (o - y) W_out^T / T for every token."""
        W = _mp(self.params["W_out"])
        o = _readout(z, W, self.T, self.d)
        r = [oi - yi for oi, yi in zip(o, y)]
        g = [sum(r[j] * W[i][j] for j in range(len(r))) / self.T for i in range(self.d)]
        return g * self.T


def _readout(z: list, W: list, T: int, d: int) -> list:
    mean = [sum(z[t * d + i] for t in range(T)) / T for i in range(d)]
    return [sum(mean[i] * W[i][j] for i in range(d)) for j in range(len(W[0]))]


def _softmax_row(logits: list, allowed: list[bool]) -> list:
    m = max(l for l, a in zip(logits, allowed) if a)
    e = [mpmath.exp(l - m) if a else mpmath.mpf(0) for l, a in zip(logits, allowed)]
    s = sum(e)
    return [v / s for v in e]


def _proj(Z: list, W: list) -> list:
    """rows z_t W: (T, d) x (d, k)."""
    return [[sum(zt[i] * W[i][j] for i in range(len(zt))) for j in range(len(W[0]))] for zt in Z]


def _energy_force(Z, X, P, hp, T, d) -> list:
    """F = x - kappa z + sum_h [W_Q^h (A k)_i + W_K^h (A^T q)_i] + lam tanh(z Xi^T) Xi + alpha z Omega."""
    b, kappa, lam, alpha = (mpmath.mpf(hp[k]) for k in ("beta_att", "kappa", "lam_hop", "alpha"))
    F = [[X[t][i] - kappa * Z[t][i] for i in range(d)] for t in range(T)]
    for h in range(len(P["W_Q"])):
        q, k = _proj(Z, P["W_Q"][h]), _proj(Z, P["W_K"][h])
        A = [_softmax_row([b * sum(qi * kj for qi, kj in zip(q[i], k[j])) for j in range(T)], [True] * T)
             for i in range(T)]
        dk_ = len(q[0])
        Ak = [[sum(A[i][j] * k[j][c] for j in range(T)) for c in range(dk_)] for i in range(T)]
        Atq = [[sum(A[i][j] * q[i][c] for i in range(T)) for c in range(dk_)] for j in range(T)]
        for t in range(T):
            for i in range(d):
                F[t][i] += sum(P["W_Q"][h][i][c] * Ak[t][c] for c in range(dk_))
                F[t][i] += sum(P["W_K"][h][i][c] * Atq[t][c] for c in range(dk_))
    Xi = P.get("Xi", [])
    for t in range(T):
        for mu in range(len(Xi)):
            u = sum(Xi[mu][i] * Z[t][i] for i in range(d))
            th = lam * mpmath.tanh(u)
            for i in range(d):
                F[t][i] += th * Xi[mu][i]
    if alpha != 0:
        Om = P["Omega"]
        for t in range(T):
            row = [sum(Z[t][j] * Om[j][i] for j in range(d)) for i in range(d)]
            for i in range(d):
                F[t][i] += alpha * row[i]
    return F


def _damped_force(Z, X, P, hp, T, d) -> list:
    """F = lam (x - z) + s (attn(z) - c z), attn_i = sum_h sum_j softmax_j(q_i.k_j / sqrt(d_k)) (v_j W_O^h)."""
    s, c, lam = (mpmath.mpf(hp[k]) for k in ("s", "c", "lam"))
    causal = bool(hp.get("causal", 0))
    att = [[mpmath.mpf(0)] * d for _ in range(T)]
    for h in range(len(P["W_Q"])):
        q, k, v = _proj(Z, P["W_Q"][h]), _proj(Z, P["W_K"][h]), _proj(Z, P["W_V"][h])
        dk_ = len(q[0])
        scale = 1 / mpmath.sqrt(dk_)
        for i in range(T):
            A = _softmax_row([scale * sum(qi * kj for qi, kj in zip(q[i], k[j])) for j in range(T)],
                             [(not causal) or j <= i for j in range(T)])
            head = [sum(A[j] * v[j][c_] for j in range(T)) for c_ in range(dk_)]
            for o in range(d):
                att[i][o] += sum(head[c_] * P["W_O"][h][c_][o] for c_ in range(dk_))
    return [[lam * (X[t][i] - Z[t][i]) + s * (att[t][i] - c * Z[t][i]) for i in range(d)] for t in range(T)]


# --------------------------------------------------------------------------- #
# derivatives, equilibrium, IFT gradient, antisymmetric product, eigenvalues
# --------------------------------------------------------------------------- #
def _step() -> mpmath.mpf:
    return mpmath.mpf(10) ** (-int(mpmath.mp.dps / 2.5))


def jacobian(blk: MPBlock, z: list, x: list) -> mpmath.matrix:
    """J_ij = dF_i/dz_j by central differences (truncation h^2 |F'''|, rounding 10^-dps / h)."""
    h = _step()
    n = len(z)
    J = mpmath.matrix(n, n)
    for j in range(n):
        zp, zm = list(z), list(z)
        zp[j] += h
        zm[j] -= h
        Fp, Fm = blk.force(zp, x), blk.force(zm, x)
        for i in range(n):
            J[i, j] = (Fp[i] - Fm[i]) / (2 * h)
    return J


def vjp_theta(blk: MPBlock, z: list, x: list, a: list) -> list:
    """(dF/dtheta)^T a = d/dtheta (a . F(z; x, theta)), one central difference per parameter."""
    h = _step()
    th = blk.theta()
    out = []
    for k in range(len(th)):
        tp, tm = list(th), list(th)
        tp[k] += h
        tm[k] -= h
        Fp, Fm = blk.force(z, x, tp), blk.force(z, x, tm)
        out.append(sum(ai * (p - m) for ai, p, m in zip(a, Fp, Fm)) / (2 * h))
    return out


def equilibrium(blk: MPBlock, z0: Sequence[float], x: Sequence[float], steps: int = 12) -> tuple[list, mpmath.mpf]:
    """Newton in mpmath from the SUT's float equilibrium: (z*, ||z* - z0||)."""
    with mpmath.workdps(DPS):
        z = [mpmath.mpf(float(v)) for v in z0]
        xs = [mpmath.mpf(float(v)) for v in x]
        for _ in range(steps):
            F = blk.force(z, xs)
            if max(abs(f) for f in F) < mpmath.mpf(10) ** (-DPS + 8):
                break
            dz = mpmath.lu_solve(jacobian(blk, z, xs), mpmath.matrix(F))
            z = [zi - dz[i] for i, zi in enumerate(z)]
        dist = mpmath.sqrt(sum((zi - mpmath.mpf(float(v))) ** 2 for zi, v in zip(z, z0)))
        return z, dist


@dataclass
class IFTReference:
    """The exact IFT gradient at the exact equilibrium, and the norms its tolerance needs."""

    grad: np.ndarray  # float64 rounding of the 50-digit gradient
    z_star: list
    dist_sut_equilibrium: float  # ||z*_exact - z0_SUT||
    norm_Jinv: float  # ||J^-1||_2
    cond_J: float
    norm_P: float  # ||dF/dtheta||_2 upper bound (Frobenius)
    norm_a: float
    norm_J: float


def ift_gradient(blk: MPBlock, z0: Sequence[float], x: Sequence[float], y: Sequence[float]) -> IFTReference:
    """dC/dtheta(z*) - (dF/dtheta(z*))^T J^-T dC/dz(z*), all at 50 digits, one sample."""
    with mpmath.workdps(DPS):
        z, dist = equilibrium(blk, z0, x)
        xs = [mpmath.mpf(float(v)) for v in x]
        ys = [mpmath.mpf(float(v)) for v in y]
        J = jacobian(blk, z, xs)
        c = blk.cost_grad_z(z, ys)
        a = mpmath.lu_solve(J.T, mpmath.matrix(c))
        a = [a[i] for i in range(len(z))]
        implicit = vjp_theta(blk, z, xs, a)
        explicit = _explicit(blk, z, ys)
        g = [e - i for e, i in zip(explicit, implicit)]
        Jn = np.array([[float(J[i, j]) for j in range(J.cols)] for i in range(J.rows)])
        sv = np.linalg.svd(Jn, compute_uv=False)
        # ||dF/dtheta||_F from its columns' vjps would cost p more solves: bound it by the
        # Frobenius norm of the central-difference Jacobian in theta, one force pair per parameter
        norm_P = _theta_jacobian_fro(blk, z, xs)
        return IFTReference(np.array([float(v) for v in g]), z, float(dist), float(1 / sv[-1]),
                            float(sv[0] / sv[-1]), norm_P, float(mpmath.sqrt(sum(v * v for v in a))), float(sv[0]))


def _explicit(blk: MPBlock, z: list, y: list) -> list:
    """dC/dtheta at z: only W_out enters C; dC/dW_out[i, j] = mean(z)_i (o - y)_j."""
    T, d = blk.T, blk.d
    W = _mp(blk.params["W_out"])
    mean = [sum(z[t * d + i] for t in range(T)) / T for i in range(d)]
    o = _readout(z, W, T, d)
    out = []
    for k in blk.names:
        n = math.prod(blk.shapes[k])
        if k == "W_out":
            out += [mean[i] * (o[j] - y[j]) for i in range(d) for j in range(len(o))]
        else:
            out += [mpmath.mpf(0)] * n
    return out


def _theta_jacobian_fro(blk: MPBlock, z: list, x: list) -> float:
    h = _step()
    th = blk.theta()
    tot = mpmath.mpf(0)
    for k in range(len(th)):
        tp, tm = list(th), list(th)
        tp[k] += h
        tm[k] -= h
        Fp, Fm = blk.force(z, x, tp), blk.force(z, x, tm)
        tot += sum(((p - m) / (2 * h)) ** 2 for p, m in zip(Fp, Fm))
    return float(mpmath.sqrt(tot))


def antisymmetric_product(blk: MPBlock, z: Sequence[float], x: Sequence[float], v: Sequence[float]) -> tuple[np.ndarray, float]:
    """((J - J^T) v at 50 digits, rounded to float64; ||J||_F) at the SUT's exact state z."""
    with mpmath.workdps(DPS):
        zs = [mpmath.mpf(float(t)) for t in z]
        xs = [mpmath.mpf(float(t)) for t in x]
        vs = [mpmath.mpf(float(t)) for t in v]
        J = jacobian(blk, zs, xs)
        n = len(zs)
        out = [sum((J[i, j] - J[j, i]) * vs[j] for j in range(n)) for i in range(n)]
        fro = mpmath.sqrt(sum(J[i, j] ** 2 for i in range(n) for j in range(n)))
        return np.array([float(t) for t in out]), float(fro)


def spectral_abscissa(blk: MPBlock, z: Sequence[float], x: Sequence[float]) -> tuple[float, float]:
    """(max Re lambda(J(z*)) at 50 digits, its distance from the nearest other eigenvalue real part)
    at the exact equilibrium Newton reaches from the SUT's z."""
    with mpmath.workdps(DPS):
        zs, _ = equilibrium(blk, z, x)
        J = jacobian(blk, zs, [mpmath.mpf(float(t)) for t in x])
        ev = mpmath.eig(J, left=False, right=False)
        re = sorted((float(mpmath.re(e)) for e in ev), reverse=True)
        return re[0], (re[0] - re[1]) if len(re) > 1 else math.inf


# --------------------------------------------------------------------------- #
# derived tolerances
# --------------------------------------------------------------------------- #
def ift_tolerance(u: float, n: int, p: int, ref: IFTReference, terms: int) -> float:
    """Bound on ||g_SUT - g_exact|| for the SUT's dense IFT gradient at its own equilibrium z0.

    First order: the SUT's z0 is ||z0 - z*|| = dist from the exact equilibrium, which moves the
    gradient by at most L dist with L <= ||P|| ||J^-1|| (||J|| ||J^-1|| ||a|| / ||z|| scale) -- taken
    as cond(J) ||P|| ||a|| dist; J by forward mode carries |dJ| <= gamma_terms |J| (each entry an
    inner product of <= `terms` products), the solve with J^T adds gamma_{3n} cond(J) (backward
    stable LU), so ||da|| <= cond(J) (gamma_terms + gamma_{3n}) ||a||; the vjp P^T a carries
    gamma_terms ||P|| ||a||; together ||dg|| <= ||P|| ||a|| [cond(J) (gamma_terms + gamma_{3n} + dist)
    + gamma_terms], doubled for the products of first-order terms."""
    g_t, g_s = gamma(terms, u), gamma(3 * n, u)
    return 2.0 * ref.norm_P * ref.norm_a * (ref.cond_J * (g_t + g_s + ref.dist_sut_equilibrium) + g_t) + \
        gamma(terms + p, u) * float(np.linalg.norm(ref.grad))


def product_tolerance(u: float, n: int, terms: int, J_fro: float, v_norm: float) -> float:
    """Bound on ||(Jv - J^T v)_SUT - (J - J^T) v||: each of the jvp and the vjp is a sum over the
    force's computation graph with <= `terms` products per output entry, so each carries
    gamma_terms |J| |v| <= gamma_terms ||J||_F ||v||; their difference one more rounding."""
    return (2 * gamma(terms, u) + u) * J_fro * v_norm


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class EPCase:
    """One tiny EP problem: block kind, sizes, strengths/scales and a seed for weights and data."""

    kind: str  # "energy" | "skewed" | "damped" | "thick"
    T: int
    d: int
    heads: int
    B: int
    seed: int
    scale: float = 1.0  # Q/K scale (energy: qk_scale; damped/thick: logit scale)
    s: float = 1.0  # damped: attention strength
    c: float = 1.0  # damped / thick: damping
    alpha: float = 0.0  # skewed: rotational drift
    v_scale: float = 1.0  # damped: value scale


@st.composite
def ep_cases(draw: st.DrawFn, kinds: tuple[str, ...], max_T: int = 3, max_d: int = 4) -> EPCase:
    kind = draw(st.sampled_from(kinds))
    T = draw(st.integers(1, max_T))
    d = draw(st.integers(2, max_d))
    heads = draw(st.integers(1, 2)) if kind != "thick" else 1
    # energy blocks: query/key scales up to 0.35 keep kappa/2 ||z||^2 dominant (larger ones make the
    # landscape nearly flat or unbounded: no strict minimum, the claim's premise fails)
    top = 0.35 if kind in ("energy", "skewed") else 1.0
    return EPCase(kind, T, d, heads, draw(st.integers(1, 2)), draw(SEEDS),
                  scale=draw(st.floats(0.05, top)), s=draw(st.floats(0.25, 4.0)), c=draw(st.floats(1.0, 2.0)),
                  alpha=draw(st.floats(0.05, 0.5)) if kind == "skewed" else 0.0,
                  v_scale=draw(st.floats(0.25, 1.0)))
