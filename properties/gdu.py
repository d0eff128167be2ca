"""References and derived tolerances for ep.gdu (Ernoult, Grollier, Querlioz, Bengio & Scellier,
NeurIPS 2019, "Updates of Equilibrium Prop Match Gradients of Backprop Through Time in an RNN with
Static Input"; seed 003 Background).  No torch.

Claim ep.gdu: "discrete-time EP updates equal BPTT gradients step by step in the first nudged
steps, as beta -> 0 (Ernoult 2019)".  GDU theorem (Ernoult 2019, Thm 1): if the transition derives
from a primitive function, F = dPhi/ds, and the free phase has converged (s_t = s* on the last K
steps), then lim_{beta->0} Delta^EP(beta, t) = -grad^BPTT(t) for every t, s and theta parts.

The same three tiny RNNs as models.ep.rnn, written out in mpmath (MP_DPS = 50 digits) from the SUT's
exact float weights, with nothing shared with the SUT's code:

* `fixed_point`: s* = F(s*) by Newton's method from the SUT's float state, certified a posteriori
  by ||s - s*|| <= ||F(s) - s|| / (1 - q) (q the contraction factor, `contraction_factor`);
* `bptt`: the adjoint recursion lambda_0 = dl/ds(s_K), lambda_{t+1} = J(s_{K-t-1})^T lambda_t,
  grad_theta(t) = (dF/dtheta)(s_{K-t-1})^T lambda_t, along given states (the SUT's trajectory, or
  s* repeated for the converged trajectory);
* `ep_limit`: the exact beta -> 0 limit of the EP updates from the linearized nudged dynamics at s*:
  s^beta_t = s* + beta sigma_t + O(beta^2), sigma_0 = 0, sigma_{t+1} = J sigma_t - dl/ds(s*), so
  Lambda_s(t) = sigma_{t+1} - sigma_t = -J^t dl/ds(s*) and Lambda_theta(t) = (d^2 Phi/dtheta ds)(s*)
  Lambda_s(t);
* `ep_exact`: the nudged phase and one-sided updates at a finite beta from a given start.

Tolerances are first-order rounding bounds (Higham 2nd ed., ch. 3): gamma_k = k u/(1 - k u) for an
operation chain of k roundings, with tanh assumed within TANH_ULPS ulps (2 u each).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import mpmath
import numpy as np
from hypothesis import strategies as st

from .ntk import ADMIT, OrderFit, order_fit  # noqa: F401  (ADMIT re-exported for the certificate)
from .reference.convert import MP_DPS, to_mpf, workdps
from .strategies import SEEDS
from .tolerances import gamma

KINDS = ("primitive", "prototypical", "untied")
# max |tanh''| = max |2 tanh sech^2| = 4/(3 sqrt 3), attained at tanh^2 = 1/3
RHO_DDOT_MAX = 4.0 / (3.0 * math.sqrt(3.0))
F64_U = 2.0**-53
# libm / SLEEF tanh are within 1 ulp (= 2u) in float64 and float32; we allow 2 ulps
TANH_ULPS = 2
# digits a 50-digit evaluation of these short recursions (n <= 8, K <= 8, Newton residual
# <= 10^-(dps-3)) can lose: the reference's relative error is below 10^-(dps - REF_DIGITS_LOST)
REF_DIGITS_LOST = 10

BETA_0 = 2.0**-2  # top of the beta grid: nudges of a quarter of dl/ds, where O(beta) terms are mild


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class GDUCase:
    """One RNN of models.ep.rnn (RNNConfig fields) and the number K of nudged / BPTT steps."""

    kind: str
    n: int
    n_in: int
    n_out: int
    K: int
    coupling: float
    input_scale: float
    eps: float
    seed: int


@st.composite
def gdu_cases(draw: st.DrawFn, kinds: Sequence[str] = ("primitive",)) -> GDUCase:
    kind = draw(st.sampled_from(tuple(kinds)))
    n = draw(st.integers(2, 8))
    if kind == "primitive":
        # the coupling a bounds ||d^2E/ds^2 - I||; input share of it in [0.5, 1.5]
        coupling, scale = draw(st.floats(0.2, 0.8)), draw(st.floats(0.5, 1.5))
    else:
        # ||W||_2 = coupling; inputs W_x x + b of O(input_scale) saturate tanh unevenly
        coupling, scale = draw(st.floats(0.2, 0.9)), draw(st.floats(0.5, 2.5))
    return GDUCase(kind, n, draw(st.integers(1, 3)), draw(st.integers(1, n)), draw(st.integers(2, 5)),
                   coupling, scale, draw(st.sampled_from((0.5, 0.75, 1.0))), draw(SEEDS))


def beta_grid(order: int, u: float) -> list[float]:
    """beta_k = BETA_0 2^-k down to u^(1/(order+1)), where the O(beta^order) error meets the O(u/beta)
    rounding floor; every beta is a power of 2, so beta * v and v / beta are exact in the SUT."""
    if order not in (1, 2):
        raise ValueError(f"beta_grid: order must be 1 (one-sided) or 2 (symmetric), got {order}")
    lo = u ** (1.0 / (order + 1))
    return [BETA_0 * 2.0**-k for k in range(math.ceil(math.log2(BETA_0 / lo)) + 1)]


def free_steps(q: float, r0: float, u: float, K: int) -> int:
    """Free-phase length T with q^T ||s_0 - s*|| <= u: ||s_0 - s*|| = ||s*|| <= ||F(0)|| / (1 - q)."""
    if not 0 < q < 1:
        raise ValueError(f"free_steps: contraction factor {q} not in (0, 1)")
    if r0 <= 0:
        return K
    return max(K, math.ceil(math.log(u * (1 - q) / r0) / math.log(q)) + 1)


# --------------------------------------------------------------------------- #
# the network in mpmath
# --------------------------------------------------------------------------- #
Vec = list  # of mpmath.mpf


@dataclass
class Net:
    """Exact copy of one SUT RNN at `dps` digits: W = (A + A^T)/2 (tied) or A, W_x, b, x, y."""

    kind: str
    n: int
    n_in: int
    n_out: int
    dps: int
    W: list[Vec]
    Wx: list[Vec]
    b: Vec
    x: Vec
    y: Vec
    eps: mpmath.mpf
    c: Vec  # W_x x + b
    # float copies for the tolerances
    Wf: np.ndarray = field(repr=False, default=None)
    Wxf: np.ndarray = field(repr=False, default=None)
    bf: np.ndarray = field(repr=False, default=None)
    xf: np.ndarray = field(repr=False, default=None)

    @property
    def tied(self) -> bool:
        return self.kind != "untied"

    @property
    def p(self) -> int:
        return self.n * self.n + self.n * self.n_in + self.n


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def net_from_floats(kind: str, A, W_x, b, x, y, eps: float, dps: int = MP_DPS) -> Net:
    """The reference network from the SUT's float parameters (converted exactly)."""
    if kind not in KINDS:
        raise ValueError(f"unknown RNN kind {kind!r}; choose one of {', '.join(KINDS)}")
    A, W_x, b, x, y = (_f64(v) for v in (A, W_x, b, x, y))
    n, n_in = W_x.shape
    if A.shape != (n, n) or b.shape != (n,) or x.shape != (n_in,) or y.ndim != 1 or not 1 <= y.size <= n:
        raise ValueError(f"net_from_floats: inconsistent shapes A {A.shape}, W_x {W_x.shape}, b {b.shape}, "
                         f"x {x.shape}, y {y.shape}")
    with workdps(dps):
        Am = [[to_mpf(v) for v in row] for row in A.tolist()]
        W = [[(Am[i][j] + Am[j][i]) / 2 for j in range(n)] for i in range(n)] if kind != "untied" else Am
        Wx = [[to_mpf(v) for v in row] for row in W_x.tolist()]
        bm, xm, ym = ([to_mpf(v) for v in a.tolist()] for a in (b, x, y))
        c = [mpmath.fdot(Wx[i], xm) + bm[i] for i in range(n)]
        Wf = (A + A.T) / 2 if kind != "untied" else A
        return Net(kind, n, n_in, y.size, dps, W, Wx, bm, xm, ym, to_mpf(eps), c, Wf, W_x, b, x)


def to_mp_vec(v) -> Vec:
    """Exact mpf copies of a float vector: mpmath.mpf(float) is exact at >= 53 bits (MP_DPS = 50
    digits is 169 bits), so after one finiteness check no per-element validation is needed."""
    a = _f64(v).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"to_mp_vec: non-finite entries in {a}")
    with workdps(MP_DPS):
        return [mpmath.mpf(x) for x in a.tolist()]


def to_np(v: Vec) -> np.ndarray:
    return np.array([float(a) for a in v], dtype=np.float64)


def _mv(M: list[Vec], v: Vec) -> Vec:
    return [mpmath.fdot(row, v) for row in M]


def _mtv(M: list[Vec], v: Vec) -> Vec:
    """M^T v."""
    return [mpmath.fdot([M[i][j] for i in range(len(M))], v) for j in range(len(M[0]))]


def _norm(v: Vec) -> mpmath.mpf:
    return mpmath.sqrt(mpmath.fdot(v, v))


def diff_norm(a: Vec, b) -> float:
    """||a - b||_2 for a reference vector a and a float vector b (converted exactly)."""
    bv = to_mp_vec(b)
    if len(a) != len(bv):
        raise ValueError(f"diff_norm: sizes {len(a)} and {len(bv)} differ")
    with workdps(MP_DPS):
        return float(_norm([x - y for x, y in zip(a, bv)]))


def mp_diff_norm(a: Vec, b: Vec, dps: int = MP_DPS) -> mpmath.mpf:
    """||a - b||_2 of two reference vectors, at `dps` digits."""
    with workdps(dps):
        return _norm([x - y for x, y in zip(a, b)])


def mp_sum_norm(a: Vec, b: Vec, dps: int = MP_DPS) -> mpmath.mpf:
    """||a + b||_2 of two reference vectors (the EP-BPTT gap Lambda + grad), at `dps` digits."""
    with workdps(dps):
        return _norm([x + y for x, y in zip(a, b)])


def transition(net: Net, s: Vec) -> Vec:
    """F(s): primitive (1 - eps) s + eps rho'(s) (W rho(s) + c); prototypical / untied tanh(W s + c)."""
    with workdps(net.dps):
        if net.kind == "primitive":
            r = [mpmath.tanh(v) for v in s]
            h = _mv(net.W, r)
            e = net.eps
            return [(1 - e) * s[i] + e * (1 - r[i] ** 2) * (h[i] + net.c[i]) for i in range(net.n)]
        h = _mv(net.W, s)
        return [mpmath.tanh(h[i] + net.c[i]) for i in range(net.n)]


def jacobian(net: Net, s: Vec) -> list[Vec]:
    """dF/ds at s (rows): primitive (1-eps) I + eps (diag(rho'' h) + diag(rho') W diag(rho')),
    rho'' = -2 rho rho'; prototypical diag(1 - F^2) W."""
    with workdps(net.dps):
        n = net.n
        if net.kind == "primitive":
            r = [mpmath.tanh(v) for v in s]
            d1 = [1 - v * v for v in r]
            h = [a + c for a, c in zip(_mv(net.W, r), net.c)]
            e = net.eps
            J = [[e * d1[i] * net.W[i][j] * d1[j] for j in range(n)] for i in range(n)]
            for i in range(n):
                J[i][i] += (1 - e) + e * (-2 * r[i] * d1[i]) * h[i]
            return J
        F = transition(net, s)
        return [[(1 - F[i] ** 2) * net.W[i][j] for j in range(n)] for i in range(n)]


def adjoint_step(J: list[Vec], lam: Vec) -> Vec:
    """lambda <- J^T lambda: one step of the BPTT adjoint recursion (dL/ds_k = J_k^T dL/ds_{k+1})."""
    return _mtv(J, lam)


def loss_grad(net: Net, s: Vec) -> Vec:
    return [s[i] - net.y[i] if i < net.n_out else mpmath.mpf(0) for i in range(net.n)]


def _theta_flat(net: Net, GW: list[Vec], gx: list[Vec], gb: Vec) -> Vec:
    """Flatten (grad_W full, grad_W_x, grad_b) into the SUT's theta order (A, W_x, b), mapping
    grad_W to grad_A = (G + G^T)/2 when W = (A + A^T)/2."""
    n = net.n
    if net.tied:
        GA = [[(GW[i][j] + GW[j][i]) / 2 for j in range(n)] for i in range(n)]
    else:
        GA = GW
    return [v for row in GA for v in row] + [v for row in gx for v in row] + list(gb)


def theta_vjp(net: Net, s: Vec, lam: Vec) -> Vec:
    """(dF/dtheta)(s)^T lambda: the parameter gradient of the step s -> F(s) for cotangent lambda.
    primitive: grad_W = eps (rho' lambda) rho^T, grad_W_x = eps (rho' lambda) x^T, grad_b = eps rho' lambda;
    prototypical: grad_W = (D lambda) s^T, grad_W_x = (D lambda) x^T, grad_b = D lambda, D = 1 - F^2."""
    with workdps(net.dps):
        if net.kind == "primitive":
            r = [mpmath.tanh(v) for v in s]
            a = [net.eps * (1 - r[i] ** 2) * lam[i] for i in range(net.n)]
            left = r
        else:
            F = transition(net, s)
            a = [(1 - F[i] ** 2) * lam[i] for i in range(net.n)]
            left = s
        GW = [[a[i] * left[j] for j in range(net.n)] for i in range(net.n)]
        gx = [[a[i] * net.x[k] for k in range(net.n_in)] for i in range(net.n)]
        return _theta_flat(net, GW, gx, a)


def phi_theta(net: Net, s: Vec) -> Vec:
    """dPhi/dtheta at s: primitive Phi = (1-eps)/2 ||s||^2 + eps (1/2 rho^T W rho + rho^T c) gives
    (eps/2 rho rho^T, eps rho x^T, eps rho); prototypical (Ernoult's approximate primitive
    1/2 s^T W s + s^T c) gives (1/2 s s^T, s x^T, s)."""
    if not net.tied:
        raise ValueError("the untied RNN has no primitive function")
    with workdps(net.dps):
        if net.kind == "primitive":
            v = [net.eps * mpmath.tanh(a) for a in s]
            r = [mpmath.tanh(a) for a in s]
            GW = [[v[i] * r[j] / 2 for j in range(net.n)] for i in range(net.n)]
        else:
            v = list(s)
            GW = [[s[i] * s[j] / 2 for j in range(net.n)] for i in range(net.n)]
        gx = [[v[i] * net.x[k] for k in range(net.n_in)] for i in range(net.n)]
        return _theta_flat(net, GW, gx, v)


def phi_theta_jvp(net: Net, s: Vec, w: Vec) -> Vec:
    """(d/ds dPhi/dtheta)(s) w, the mixed second derivative along w: primitive
    (eps/2 (rho' w rho^T + rho (rho' w)^T), eps (rho' w) x^T, eps rho' w); prototypical
    (1/2 (w s^T + s w^T), w x^T, w)."""
    if not net.tied:
        raise ValueError("the untied RNN has no primitive function")
    with workdps(net.dps):
        n = net.n
        if net.kind == "primitive":
            r = [mpmath.tanh(a) for a in s]
            dw = [net.eps * (1 - r[i] ** 2) * w[i] for i in range(n)]
            GW = [[(dw[i] * r[j] + r[i] * dw[j]) / 2 for j in range(n)] for i in range(n)]
        else:
            dw = list(w)
            GW = [[(w[i] * s[j] + s[i] * w[j]) / 2 for j in range(n)] for i in range(n)]
        gx = [[dw[i] * net.x[k] for k in range(net.n_in)] for i in range(n)]
        return _theta_flat(net, GW, gx, dw)


# --------------------------------------------------------------------------- #
# contraction, fixed point
# --------------------------------------------------------------------------- #
def contraction_factor(net: Net) -> float:
    """An upper bound q < 1 on the Lipschitz constant of F on all of R^n.

    primitive: dF/ds = (1 - eps) I + eps H, H symmetric with ||H||_2 <= a = C'' max_i(sum_j |W_ij| +
      |c_i|) + ||W||_2 (|rho| <= 1, |rho'| <= 1, |rho''| <= C''), so q = max(1 - eps(1 - a),
      |1 - eps(1 + a)|); prototypical: ||diag(tanh') W||_2 <= ||W||_2.
    ||W||_2 from LAPACK in float64 (largest |eigenvalue| when tied, singular value when untied) plus
    16 n u ||W||_F (backward-stable eigen/SVD solvers, Weyl) and u ||W||_F (W rounded to float64);
    the remaining float64 sums are O(n u) relative, covered by the final widening 2^-40 (n <= 2^20).
    """
    u = F64_U
    W = net.Wf
    wf = float(np.linalg.norm(W))
    sv = np.abs(np.linalg.eigvalsh(W)) if net.tied else np.linalg.svd(W, compute_uv=False)
    w2 = float(np.max(sv)) + (16 * net.n + 1) * u * wf
    if net.kind == "primitive":
        c = np.abs(to_np(net.c))
        a = RHO_DDOT_MAX * float(np.max(np.abs(W).sum(axis=1) + c)) + w2
        e = float(net.eps)
        q = max(1 - e * (1 - a), abs(1 - e * (1 + a)))
    else:
        q = w2
    q = q * (1 + 2.0**-40)
    if not q < 1:
        raise ValueError(f"{net.kind} RNN is not a contraction: Lipschitz bound {q:.6g} >= 1")
    return q


@dataclass
class FixedPoint:
    s: Vec  # the reference fixed point (dps digits)
    residual: float  # ||F(s) - s||
    error: float  # bound on ||s - s*||: residual / (1 - q)
    q: float
    newton_steps: int


def fixed_point(net: Net, s0, q: float | None = None, max_steps: int = 60) -> FixedPoint:
    """s* = F(s*) by Newton's method (I - J) delta = F(s) - s from the float state s0; stops when
    ||F(s) - s|| <= 10^-(dps - 3) ||s*||-scale; certified by ||s - s*|| <= ||F(s) - s|| / (1 - q)."""
    q = contraction_factor(net) if q is None else q
    with workdps(net.dps):
        s = to_mp_vec(s0)
        target = mpmath.mpf(10) ** (-(net.dps - 3))
        for k in range(max_steps + 1):
            r = [a - b for a, b in zip(transition(net, s), s)]
            res = _norm(r)
            if res <= target * (1 + _norm(s)):
                return FixedPoint(s, float(res), float(res) / (1 - q), q, k)
            J = jacobian(net, s)
            I_J = mpmath.matrix([[(1 if i == j else 0) - J[i][j] for j in range(net.n)] for i in range(net.n)])
            delta = mpmath.lu_solve(I_J, mpmath.matrix(r))
            s = [s[i] + delta[i] for i in range(net.n)]
    raise ValueError(f"fixed_point: Newton did not reach 10^-{net.dps - 3} in {max_steps} steps (residual {res})")


# --------------------------------------------------------------------------- #
# BPTT and EP references
# --------------------------------------------------------------------------- #
@dataclass
class Grads:
    """grad_s[t] = dL/ds_{T-t} (t = 0..K), grad_theta[t] = dL/dtheta_{T-t} (t = 0..K-1)."""

    grad_s: list[Vec]
    grad_theta: list[Vec]


def bptt(net: Net, states: Sequence[Vec]) -> Grads:
    """The adjoint recursion along states s_{T-K}, ..., s_T (K+1 of them)."""
    K = len(states) - 1
    jac: dict[int, list[Vec]] = {}  # a repeated state (s* of the converged trajectory) is one Jacobian
    with workdps(net.dps):
        lam = loss_grad(net, states[K])
        gs, gth = [lam], []
        for t in range(K):
            s_in = states[K - 1 - t]  # the step s_{T-t-1} -> s_{T-t}
            gth.append(theta_vjp(net, s_in, lam))
            if id(s_in) not in jac:
                jac[id(s_in)] = jacobian(net, s_in)
            lam = adjoint_step(jac[id(s_in)], lam)
            gs.append(lam)
        return Grads(gs, gth)


def bptt_at(net: Net, s_star: Vec, K: int) -> Grads:
    """BPTT over K steps of the converged trajectory s_t = s*."""
    return bptt(net, [s_star] * (K + 1))


def ep_limit(net: Net, s_star: Vec, K: int) -> Grads:
    """lim_{beta -> 0} of the one-sided (and symmetric) EP updates, t = 0..K-1, from the linearized
    nudged dynamics at s*: Lambda_s(t) = -J^t dl/ds(s*), Lambda_theta(t) = d^2Phi/dtheta ds Lambda_s(t).
    (Returned in a Grads: grad_s[t] = Lambda_s(t), grad_theta[t] = Lambda_theta(t).)"""
    with workdps(net.dps):
        J = jacobian(net, s_star)
        v = [-a for a in loss_grad(net, s_star)]
        ls, lth = [], []
        for _ in range(K):
            ls.append(v)
            lth.append(phi_theta_jvp(net, s_star, v))
            v = _mv(J, v)
        return Grads(ls, lth)


def ep_exact(net: Net, start, beta: float, K: int) -> Grads:
    """One-sided EP updates at a finite beta from `start` (float, exact): the nudged phase
    s_{t+1} = F(s_t) - beta dl/ds(s_t) and the difference quotients, in `dps` digits."""
    with workdps(net.dps):
        b = to_mpf(beta)
        s = to_mp_vec(start) if not isinstance(start, list) else start
        states = [s]
        for _ in range(K):
            F, g = transition(net, s), loss_grad(net, s)
            s = [F[i] - b * g[i] for i in range(net.n)]
            states.append(s)
        G = [phi_theta(net, x) for x in states]
        ds = [[(a - c) / b for a, c in zip(states[t + 1], states[t])] for t in range(K)]
        dth = [[(a - c) / b for a, c in zip(G[t + 1], G[t])] for t in range(K)]
        return Grads(ds, dth)


def ref_error(*vectors: Vec, dps: int = MP_DPS) -> float:
    """Bound on the reference's own error for quantities of the size of `vectors`:
    10^-(dps - REF_DIGITS_LOST) (1 + sum of their norms)."""
    with workdps(dps):
        scale = 1 + sum(float(_norm(v)) for v in vectors)
    return 10.0 ** (-(dps - REF_DIGITS_LOST)) * scale


# --------------------------------------------------------------------------- #
# rounding-error bounds of the SUT (numpy, first order)
# --------------------------------------------------------------------------- #
def _rounds(net: Net) -> int:
    """k of gamma_k for one transition, per component, relative to the magnitude sum of `_mags`
    (T = TANH_ULPS, one ulp <= 2u; first order):
    primitive: h = fl(W) rho^ + c: W = fl((A + A^T)/2) 1, W rho n, |W| |d rho| 2T, c = W_x x + b
      n_in + 1, the add 1 -> (n + n_in + 2T + 3) u H; rho' = 1 - rho^2: |d(rho^2)| <= 2|rho||d rho| +
      u rho^2, the subtraction u -> (4T + 2) u (rho^2, rho' <= 1) times |h| <= H; the product rho' h
      1; eps (.) and (1 - eps) s (dyadic eps) 2, the sum 1 -> n + n_in + 6T + 9;
    prototypical: h as above without the rho error (n + n_in + 3), tanh 2T relative to |F| ->
      n + n_in + 2T + 3 (times H + |F|)."""
    if net.kind == "primitive":
        return net.n + net.n_in + 6 * TANH_ULPS + 9
    return net.n + net.n_in + 2 * TANH_ULPS + 3


def _mags(net: Net, s: np.ndarray) -> np.ndarray:
    """|| |W| |v| + |W_x| |x| + |b| ||_2 (+ the primitive's (1 - eps)|s| term): the magnitude every
    rounding of one transition at s is relative to (v = rho(s) or s); s (..., n) -> (...)."""
    s = _f64(s)
    eps = float(net.eps)
    v = np.tanh(s) if net.kind == "primitive" else s
    H = np.abs(v) @ np.abs(net.Wf).T + (np.abs(net.Wxf) @ np.abs(net.xf) + np.abs(net.bf))
    if net.kind == "primitive":
        return eps * np.linalg.norm(H, axis=-1) + (1 - eps) * np.linalg.norm(s, axis=-1)
    return np.linalg.norm(H, axis=-1) + np.linalg.norm(np.tanh(H), axis=-1)


def step_error(u: float, net: Net, s: np.ndarray) -> np.ndarray:
    """Bound on ||fl(F(s)) - F(s)||_2 for one SUT transition at each float state s (..., n):
    gamma_k times the magnitude sum (`_rounds`, `_mags`; |rho'| <= 1, |rho| <= 1, |tanh| <= 1)."""
    return gamma(_rounds(net), u) * _mags(net, s)


def free_phase_tolerance(u: float, net: Net, q: float, T: int, s_star_norm: float) -> float:
    """Bound on ||s^_T - s*||: the float iteration s^_{t+1} = F(s^_t) + e_t, ||e_t|| <= delta, gives
    ||s^_T - s*|| <= q^T ||s*|| + delta / (1 - q); delta from `step_error` at the largest state
    along the way (||s_t|| <= ||s*|| + q^t ||s*|| <= 2 ||s*||, so |s| <= 2||s*|| entrywise and
    the magnitude sum is evaluated at the worst corner of that box; tanh-bounded states by 1)."""
    box = np.full(net.n, 2 * s_star_norm)
    if net.kind != "primitive":
        box = np.minimum(box, 1.0)
    delta = float(step_error(u, net, box))
    return (q**T * s_star_norm + delta / (1 - q)) * (1 + gamma(_rounds(net), u))


def _theta_lipschitz(net: Net, state_norm):
    """Bound on ||d/ds dPhi/dtheta||_2 (and on ||dF/dtheta||_2): primitive eps (||rho|| + ||x|| + 1),
    ||rho|| <= min(||s||, sqrt n); prototypical ||s|| + ||x|| + 1 (from the formulas of `phi_theta_jvp`
    / `theta_vjp`: each block is an outer product with one unit-bounded factor).  Elementwise in
    state_norm (a float or an array)."""
    xn = float(np.linalg.norm(net.xf))
    if net.kind == "primitive":
        return float(net.eps) * (np.minimum(state_norm, math.sqrt(net.n)) + xn + 1)
    return state_norm + xn + 1


def _jacobian_magnitude(net: Net, s: np.ndarray) -> float:
    """|| |J~| ||_F for the terms the VJP through one transition sums: primitive (1-eps) I + eps
    (C'' diag(H) + |W|); prototypical |W| (|tanh'| <= 1)."""
    if net.kind == "primitive":
        eps = float(net.eps)
        H = np.abs(net.Wf) @ np.abs(np.tanh(_f64(s))) + np.abs(net.Wxf) @ np.abs(net.xf) + np.abs(net.bf)
        return (1 - eps) * math.sqrt(net.n) + eps * (RHO_DDOT_MAX * float(np.linalg.norm(H))
                                                     + float(np.linalg.norm(net.Wf)))
    return float(np.linalg.norm(net.Wf))


@dataclass
class BPTTTolerance:
    grad_s: np.ndarray  # (K+1,) bounds on ||grad_s^(t) - grad_s(t)||
    grad_theta: np.ndarray  # (K,)


def bptt_tolerance(u: float, net: Net, q: float, states: np.ndarray, grad_s: np.ndarray) -> BPTTTolerance:
    """Bound on the SUT's autograd BPTT against the exact adjoint recursion along the same states.

    lambda^_0 = fl(s_out - y): u ||lambda_0||; a VJP through one transition has relative error
    gamma_k (k = `_rounds` + 2 for the backward's own products) on each summed term, so
    ||d lambda_{t+1}|| <= q ||d lambda_t|| + gamma_k || |J~| ||_F ||lambda^_t|| (q >= ||J||_2);
    grad_theta(t) = (dF/dtheta)^T lambda_t: ||d g(t)|| <= B (||d lambda_t|| + gamma_k ||lambda^_t||),
    B = `_theta_lipschitz` at the step's input state.  Times (1 + gamma_k) for products of
    first-order terms.
    """
    states, grad_s = _f64(states), _f64(grad_s)
    K = states.shape[0] - 1
    k = _rounds(net) + 2
    gk = gamma(k, u)
    ln = np.linalg.norm(grad_s, axis=1)
    dl = [u * ln[0]]
    dth = []
    for t in range(K):
        s_in = states[K - 1 - t]
        B = _theta_lipschitz(net, float(np.linalg.norm(s_in)))
        dth.append(B * (dl[t] + gk * ln[t]))
        dl.append(q * dl[t] + gk * _jacobian_magnitude(net, s_in) * ln[t])
    f = 1 + gk
    return BPTTTolerance(np.asarray(dl) * f, np.asarray(dth) * f)


@dataclass
class EPTolerance:
    """Per beta (B,) and t (K,): bounds on the SUT's one-sided updates against the exact ones from the
    same start (`round_*`), and on the exact ones from the SUT's start against those from s*
    (`offset_*`, from d >= ||s^_T - s*||)."""

    round_s: np.ndarray  # (K, B)
    round_theta: np.ndarray
    offset_s: np.ndarray
    offset_theta: np.ndarray

    @property
    def s(self) -> np.ndarray:
        return self.round_s + self.offset_s

    @property
    def theta(self) -> np.ndarray:
        return self.round_theta + self.offset_theta


def ep_tolerance(u: float, net: Net, q: float, betas: np.ndarray, states: np.ndarray, phis: np.ndarray,
                 d: float) -> EPTolerance:
    """Bounds for the one-sided EP updates of nudged SUT states (K+1, B, n) and dPhi/dtheta (K+1, B, p).

    One nudged step s' = F(s) - beta (s_out - y): delta_t = `step_error` + u |beta| ||g|| (fl(s_out - y);
    beta a power of 2, so beta g is exact) + u ||s'||; the errors propagate by L = q + |beta|
    (dl/ds is 1-Lipschitz): e_0 = 0, e_{t+1} = L e_t + delta_t.
    Delta_s = fl(fl(s_{t+1} - s_t)/beta): (e_{t+1} + e_t + u ||s^_{t+1} - s^_t||)/|beta| (division exact).
    Delta_theta: (M (e_{t+1} + e_t) + gamma_k (||G^_{t+1}|| + ||G^_t||) + u ||G^_{t+1} - G^_t||)/|beta|,
    G = dPhi/dtheta by autograd (two tanh factors 4 TANH_ULPS, the products, eps/2 and the
    symmetrization (G + G^T)/2 of W = (A + A^T)/2: gamma_{4 TANH_ULPS + 6}), M =
    `_theta_lipschitz` (the Lipschitz constant of s -> dPhi/dtheta).
    Offset: the exact nudged trajectories from s^_T and from s* differ by <= L^t d, so the exact
    updates differ by (L^{t+1} + L^t) d / |beta| (times M for theta).
    Times (1 + gamma) for products of first-order terms.
    """
    betas, states, phis = np.abs(_f64(betas)), _f64(states), _f64(phis)
    K = states.shape[0] - 1
    f = 1 + gamma(_rounds(net), u)
    L = q + betas  # (B,)
    gnorm = np.linalg.norm(states[:K, :, : net.n_out] - to_np(net.y), axis=-1)
    delta = step_error(u, net, states[:K]) + u * betas * gnorm + u * np.linalg.norm(states[1:], axis=-1)
    e = np.zeros((K + 1, betas.size))
    for t in range(K):
        e[t + 1] = L * e[t] + delta[t]
    esum = e[1:] + e[:-1]  # (K, B)
    M = _theta_lipschitz(net, np.max(np.linalg.norm(states, axis=-1), axis=0))  # (B,)
    dsn = np.linalg.norm(states[1:] - states[:-1], axis=-1)
    gn = np.linalg.norm(phis[1:], axis=-1) + np.linalg.norm(phis[:-1], axis=-1)
    dgn = np.linalg.norm(phis[1:] - phis[:-1], axis=-1)
    kphi = 4 * TANH_ULPS + 6
    rs = (esum + u * dsn) / betas * f
    rth = (M * esum + gamma(kphi, u) * gn + u * dgn) / betas * f
    t = np.arange(K)[:, None]
    off = (L ** (t + 1) + L**t) * d / betas * f
    return EPTolerance(rs, rth, off, M * off)


def symmetric_tolerance(u: float, plus: np.ndarray, minus: np.ndarray, value_norm: np.ndarray) -> np.ndarray:
    """Bound for (Delta(beta) + Delta(-beta))/2 from the one-sided bounds at +-beta: their mean plus
    the rounding of the average, u ||value||."""
    return (_f64(plus) + _f64(minus)) / 2 + u * _f64(value_norm)


# --------------------------------------------------------------------------- #
# order fits
# --------------------------------------------------------------------------- #
HALFWIDTH_GOAL = 0.05  # refine until the order interval is this narrow (or the floor is reached)


def fit_order(betas: Sequence[float], devs: Sequence[float], floors: Sequence[float]) -> OrderFit:
    """`properties.ntk.order_fit` on growing prefixes of the halving grid (>= 5 points), refined as
    the finite-NTK order checks refine theirs: stop at the first prefix in its asymptotic regime
    with a halfwidth <= HALFWIDTH_GOAL, or when the last point comes within 16x of its rounding
    floor; return the narrowest resolved fit seen, else the last (unresolved) one.

    A small O(beta^p) coefficient can meet the floor after 4 points (3 local slopes): there only the
    "converged within rounding" branch of order_fit is used (both slope differences <= 2 max h, the
    interval last slope +- 6 max h); a regime of still-moving slopes needs the full 4 slopes."""
    n_all = len(betas)
    best = last = None
    for n in range(min(5, n_all), n_all + 1):
        last = order_fit(betas[:n], devs[:n], floors[:n])
        if last.resolved:
            if best is None or last.halfwidth < best.halfwidth:
                best = last
            if last.halfwidth <= HALFWIDTH_GOAL:
                break
        if last.admitted < n:  # the n-th point is already too close to its floor
            break
    if best is None and last is not None and last.admitted == 4:
        sl, h = last.local_slopes, max(last.rounding)
        if np.all(np.abs(np.diff(sl)) <= 2 * h):
            return dataclasses.replace(last, contraction=0.0, interval=(sl[-1] - 6 * h, sl[-1] + 6 * h))
    return best if best is not None else last
