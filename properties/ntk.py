"""References and derived tolerances for the finite-NTK claims (seed 000 sec 9, eqs 24-27) and
the depth-1 quadratic free-P theory of flexformer.global_theory.  No torch.

Inputs are the SUT's own float arrays (its J_0, r_0, eta, trajectories), carried into arb
exactly; tolerances are first-order rounding bounds (Higham 2nd ed., ch. 3) from the unit
roundoff u, the sizes and the norms involved, each with its derivation.

* `exact_ntk`, `exact_ntk_curve`: Theta_0 = J_0 J_0^T / m and r_s = (I - eta Theta_0)^s r_0 in arb.
* `vjp_tolerance`: the SUT's J_0 against the certified adjoint: J_0^T w = m DP^*[grad_P L_N(z* =
  z_L - w)] (the terminal adjoint is then w/m), both float results bounded against the exact
  reverse pass.
* `order_fit`: the order of max_{t<=s} ||r_t - r_t^NTK|| in eta (2 under the claim) from a
  geometric eta grid, with the points too close to the rounding floor left out.
* `exact_free_P`, `closed_form_tolerance`, `free_P_train_tolerance`: depth-1 free-P descent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flint import arb, arb_mat
from hypothesis import strategies as st

from .adjoint import grad_P_tolerance
from .order import ADMIT, MAX_POINTS, Q_MAX, Q_MIN, OrderFit, order_fit  # noqa: F401  (re-exported)
from .reference.ball import identity, norm2_diff_upper, vec_norm2
from .reference.convert import arb_upper, precision, to_arb, to_arb_mat, working_prec
from .reference.normbound import norm2_upper
from .strategies import SEEDS
from .tolerances import gamma, richardson_forward_error


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _fro(a) -> float:
    return float(np.linalg.norm(_f64(a)))


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class NTKCase:
    """One fixed-set Flexformer run: tasks (family, K, N, seed), decoder depth L, attention width,
    kernel, eta_0 = frac / lambda_max(Theta_0), s steps, and the order grid eta_0 2^-k."""

    family: str  # "lsq" (least squares) or "gp" (posterior latent)
    K: int
    N: int
    L: int
    width: int
    kernel: str
    frac: float
    steps: int
    seed: int
    n_prompt: int = 16  # GP prompt size (PROMPT_SIZES of models.gp)


ORDER_POINTS = 5  # eta_0 .. eta_0/16 first: four local slopes (refined up to MAX_POINTS)
ORDER_TIME = 0.5  # largest NTK time eta_0 lambda_max s on the grid: the local regime


@st.composite
def ntk_cases(draw: st.DrawFn, family: str) -> NTKCase:
    steps = draw(st.integers(1, 6))
    # frac s <= ORDER_TIME keeps the whole grid local (the top NTK mode moves by <= 1 - e^-1/2);
    # log-uniform down to 100x smaller
    frac = (ORDER_TIME / steps) * 10.0 ** draw(st.floats(-2.0, 0.0))
    return NTKCase(family, draw(st.sampled_from((2, 3, 4))), draw(st.integers(1, 6)),
                   draw(st.integers(1, 6)), draw(st.sampled_from((2, 4))),
                   draw(st.sampled_from(("exp", "rbf"))), frac, steps, draw(SEEDS),
                   draw(st.sampled_from((16, 64))))


@dataclass(frozen=True)
class FreePCase:
    """Depth-1 free-P descent on N >= K least-squares tasks: eta = frac K / lambda_max(C_N)."""

    K: int
    N: int
    frac: float
    steps: int
    seed: int


@st.composite
def free_P_cases(draw: st.DrawFn) -> FreePCase:
    K = draw(st.sampled_from((2, 3, 4)))
    # 0 < frac < 2 is the contracting range of I - (eta/K) C_N
    return FreePCase(K, draw(st.integers(K, 8)), draw(st.floats(0.05, 1.9)), draw(st.integers(0, 60)),
                     draw(SEEDS))


# --------------------------------------------------------------------------- #
# the NTK and its linear curve
# --------------------------------------------------------------------------- #
def exact_ntk(J: np.ndarray) -> arb_mat:
    """Theta_0 = J J^T / m in arb from the SUT's exact float J (m, p)."""
    m = J.shape[0]
    with precision(working_prec(None)):
        Jm = to_arb_mat(_f64(J))
        return Jm * Jm.transpose() * (arb(1) / m)


def ntk_matrix_tolerance(u: float, J: np.ndarray) -> np.ndarray:
    """Entrywise bound on |fl(J J^T / m) - J J^T / m|: a p-term inner product and one division,
    gamma_{p+1} (|J||J|^T)_ij / m (Higham (3.13))."""
    J = _f64(J)
    m, p = J.shape
    return gamma(p + 1, u) * (np.abs(J) @ np.abs(J).T) / m


def contraction_upper(J: np.ndarray, eta: float) -> float:
    """Rigorous upper bound on ||I - eta J J^T / m||_2 (exact J, eta)."""
    with precision(working_prec(None)):
        B = identity(J.shape[0]) - exact_ntk(J) * to_arb(eta)
    return norm2_upper(B)


def exact_ntk_curve(J: np.ndarray, r0: np.ndarray, eta: float, steps: int) -> list[arb_mat]:
    """[r_0, ..., r_steps], r_{s+1} = (I - eta Theta_0) r_s, exactly from the SUT's J, r_0, eta."""
    with precision(working_prec(None)):
        B = identity(J.shape[0]) - exact_ntk(J) * to_arb(eta)
        rs = [to_arb_mat(_f64(r0).reshape(-1, 1))]
        for _ in range(int(steps)):
            rs.append(B * rs[-1])
        return rs


def ntk_curve_tolerance(u: float, J: np.ndarray, Theta: np.ndarray, r_hat: np.ndarray, eta: float,
                        rho: float) -> np.ndarray:
    """Bound on ||r^_s - r_s|| for the float recursion r <- r - eta (Theta^ r), s = 0..S.

    Theta^ differs from J J^T/m by E (`ntk_matrix_tolerance`, ||E||_2 <= ||E||_F); one step:
    fl(Theta^ r^) has gamma_m |Theta^||r^|, the product with eta (a float cast once to the dtype)
    2u, the subtraction u |r^_{s+1}|, so delta_s <= eta (||E||_F + gamma_{m+2} ||Theta^||_F) ||r^_s||
    + u ||r^_{s+1}||.  The exact recursion propagates the error by rho >= ||I - eta Theta||_2:
    e_{s+1} <= rho e_s + delta_s, e_0 = 0 (r_0 is the SUT's own).  Times (1 + gamma_{m+2}) for
    the products of first-order terms.
    """
    r_hat = _f64(r_hat)
    m = r_hat.shape[1]
    Ef = _fro(ntk_matrix_tolerance(u, J))
    tn = _fro(Theta)
    norms = np.linalg.norm(r_hat, axis=1)
    e = [0.0]
    for s in range(len(norms) - 1):
        delta = eta * (Ef + gamma(m + 2, u) * tn) * norms[s] + u * norms[s + 1]
        e.append(rho * e[-1] + delta)
    return np.asarray(e) * (1 + gamma(m + 2, u))


def curve_errors(exact: Sequence[arb_mat], r_hat: np.ndarray) -> np.ndarray:
    """Rigorous upper bounds on ||r^_s - r_s||_2 against the arb curve."""
    return np.array([norm2_diff_upper(e, _f64(r).reshape(-1, 1)) for e, r in zip(exact, r_hat)])


# --------------------------------------------------------------------------- #
# J_0 against the certified adjoint
# --------------------------------------------------------------------------- #
def _forward_errors(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, zs: np.ndarray,
                    rhos: Sequence[float]) -> list[list[float]]:
    """eps_{i,l}: bound on ||z^_{i,l} - z_{i,l}|| (tolerances.richardson_forward_error per prefix)."""
    K = P.shape[0]
    p = _fro(P)
    out = []
    for i in range(d.shape[0]):
        norms = [float(np.linalg.norm(zs[l][i])) for l in range(zs.shape[0])]
        out.append([richardson_forward_error(u, K, float(rhos[i]), p, _fro(H[i]), float(np.linalg.norm(d[i])),
                                             norms[: l + 1]) for l in range(len(norms))])
    return out


def _unit_cotangent_errors(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, zs: np.ndarray,
                           rs: np.ndarray, rhos: Sequence[float], eps: list[list[float]]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Per task i, for a unit cotangent at z_{i,L}: (bound on ||G^ - G||_F, bound on ||G||_F) of
    the reverse pass G = sum_l lambda_{l+1} r_l^T, lambda_L = c, lambda_l = (I - P H_i)^T lambda_{l+1}.

    As `properties.adjoint.grad_P_tolerance` with the exact terminal c (mu_L = 0) and the adjoint
    norms bounded by ||lambda_l|| <= rho^(L-l) (||c|| = 1):  mu_l = rho mu_{l+1} + gamma_{2K+2}
    (1 + h p) rho^(L-1-l); forward residual errors eta_l = h eps_l + gamma_{K+1}(||d|| + h ||z^_l||);
    sum_l mu_{l+1} ||r^_l|| + rho^(L-1-l) eta_l + mu_{l+1} eta_l + gamma_{NL+1} rho^(L-1-l) ||r^_l||.
    """
    N, K = d.shape
    L = rs.shape[0]
    p = _fro(P)
    g_adj = gamma(2 * K + 2, u)
    errs, norms = np.zeros(N), np.zeros(N)
    for i in range(N):
        h, dn, rho = _fro(H[i]), float(np.linalg.norm(d[i])), float(rhos[i])
        lam = [rho ** (L - l) for l in range(L + 1)]
        mu = [0.0] * (L + 1)
        for l in range(L - 1, -1, -1):
            mu[l] = rho * mu[l + 1] + g_adj * (1 + h * p) * lam[l + 1]
        total = plain = 0.0
        for l in range(L):
            rn = float(np.linalg.norm(rs[l][i]))
            et = h * eps[i][l] + gamma(K + 1, u) * (dn + h * float(np.linalg.norm(zs[l][i])))
            total += mu[l + 1] * rn + lam[l + 1] * et + mu[l + 1] * et
            plain += lam[l + 1] * rn
        errs[i] = (total + gamma(N * L + 1, u) * plain) * (1 + g_adj)
        norms[i] = plain
    return errs, norms


def vjp_tolerance(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, w: np.ndarray,
                  zstar_shift: np.ndarray, zs: np.ndarray, rs: np.ndarray, lams: np.ndarray,
                  rhos: Sequence[float], J: np.ndarray, Jp: np.ndarray, G: np.ndarray, width: int) -> float:
    """Bound on ||J^^T w - m g^||_2: J^ the SUT's Jacobian (reverse mode, one cotangent e_j per row),
    g^ = DP^*[G^] the adjoint theta-gradient of L_N with z* = fl(z^_L - w) (terminal adjoint w/m).

    Both are compared with the exact reverse pass J^T w at the SUT's P (Jp = dP/dtheta, K^2 x p):
    adjoint side: m (||Jp||_2 (tol_P + tau) + gamma_{2K+2W+16} ||Jp||_F ||G^||_F), tol_P =
      `grad_P_tolerance` for the given z*, tau = the exact adjoint of the terminal mismatch
      (z_L - z* - w)/m, ||.|| <= (eps_L + u (||z^_L|| + ||w||))/m per task, through
      sum_l rho^(L-1-l) ||r^_l||; the VJP constant is the one of flexformer.adjoint_gradient (c);
    Jacobian side: sum_j |w_j| (row error of a unit cotangent in task i(j), `_unit_cotangent_errors`,
      mapped by ||Jp||_2 plus the VJP's gamma_{2K+2W+16} ||Jp||_F ||G_j||) + gamma_m ||J^||_F ||w||
      (the product J^^T w).
    Times (1 + gamma_{2K+2}) for the products of first-order terms.
    """
    P, H, d, w = _f64(P), _f64(H), _f64(d), _f64(w)
    N, K = d.shape
    m = N * K
    L = rs.shape[0]
    Jp2 = float(np.linalg.norm(_f64(Jp), 2))
    Jpf = _fro(Jp)
    g_vjp = gamma(2 * K + 2 * width + 16, u)
    eps = _forward_errors(u, P, H, d, zs, rhos)
    tol_P = grad_P_tolerance(u, P, H, d, _f64(zstar_shift), list(zs), list(rs), list(lams), list(rhos))
    W = w.reshape(N, K)
    tau = 0.0
    for i in range(N):
        mis = (eps[i][L] + u * (float(np.linalg.norm(zs[L][i])) + float(np.linalg.norm(W[i])))) / m
        tau += mis * sum(float(rhos[i]) ** (L - 1 - l) * float(np.linalg.norm(rs[l][i])) for l in range(L))
    adjoint_side = m * (Jp2 * (tol_P + tau) + g_vjp * Jpf * _fro(G)) * (1 + u)
    row_err, row_norm = _unit_cotangent_errors(u, P, H, d, zs, rs, rhos, eps)
    w1 = np.abs(W).sum(axis=1)  # sum_j |w_j| per task
    jac_side = float(np.sum(w1 * (Jp2 * row_err + g_vjp * Jpf * row_norm)))
    jac_side += gamma(m, u) * _fro(J) * float(np.linalg.norm(w))
    return (adjoint_side + jac_side) * (1 + gamma(2 * K + 2, u))


# --------------------------------------------------------------------------- #
# the order of the NTK deviation in eta
# --------------------------------------------------------------------------- #
def deviation_floor(u: float, J: np.ndarray, curve_tol: np.ndarray, forward_err: float,
                    thetas: np.ndarray, grad_count: int) -> float:
    """Rounding floor of max_{t<=s} ||r^_t - r^NTK_t||, a first-order estimate (no rigorous
    propagation through the nonlinear GD map exists):

      NTK curve rounding (`ntk_curve_tolerance`, rigorous) + forward error of f at theta_t and of
      r_0 (2 forward_err, the bound at theta_0: a local run moves P by a small relative amount)
      + ||J_0||_2 sum_{tau<t} (u ||theta^_{tau+1}|| + gamma_g ||theta^_{tau+1} - theta^_tau||):
      the rounding of each update theta - eta g^ and the gradient's own relative error
      (gamma_g, g = grad_count roundings along the adjoint and the VJP), mapped to r by J_0 (the
      Gauss-Newton part of the GD map contracts; its curvature part is the O(eta) effect under test).
    """
    thetas = _f64(thetas)
    Jn = float(np.linalg.norm(_f64(J), 2))
    steps = thetas.shape[0] - 1
    upd = np.concatenate([[0.0], np.cumsum(
        u * np.linalg.norm(thetas[1:], axis=1)
        + gamma(grad_count, u) * np.linalg.norm(np.diff(thetas, axis=0), axis=1))]) if steps else np.zeros(1)
    return float(np.max(_f64(curve_tol) + 2 * forward_err + Jn * upd))


def forward_error_bound(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, zs: np.ndarray,
                        rs: np.ndarray, rhos: Sequence[float], dP_fro: float) -> float:
    """Bound on ||f^ - f||_2 for the stacked z_L: per task the Richardson forward error
    (tolerances.richardson_forward_error) plus the error dP of P_theta itself propagated as
    sum_l rho^(L-1-l) dP ||r^_l|| (z_L is linear in each step's P r_l)."""
    eps = _forward_errors(u, _f64(P), _f64(H), _f64(d), zs, rhos)
    L = rs.shape[0]
    tot = 0.0
    for i in range(d.shape[0]):
        prop = sum(float(rhos[i]) ** (L - 1 - l) * float(np.linalg.norm(rs[l][i])) for l in range(L))
        tot += (eps[i][L] + dP_fro * prop) ** 2
    return math.sqrt(tot)


# --------------------------------------------------------------------------- #
# depth 1: quadratic free-P theory
# --------------------------------------------------------------------------- #
# The arb references are 212-bit balls of short recursions (>= 150 bits left): their radius is
# below 2^-100 relative, added to the tolerances so that an exact agreement (P_0 itself) certifies.
ENCLOSURE_SLACK = 2.0**-100


@dataclass
class ExactFreeP:
    """Arb closed form P_s = P* + (P_0 - P*)(I - (eta/K) C_N)^s and L_N(P_s), s = 0..S."""

    C: arb_mat
    B: arb_mat
    P_star: arb_mat
    M: arb_mat
    P: list[arb_mat]
    losses: list[arb]
    rho: float  # rigorous upper bound on ||M||_2
    cinv: float  # rigorous upper bound on ||C_N^-1||_2


def exact_free_P(P0: np.ndarray, d: np.ndarray, zstar: np.ndarray, eta: float, steps: int) -> ExactFreeP:
    """The depth-1 closed form in arb from exact float P_0, d_i, z_i*, eta (N >= K, C_N invertible)."""
    d, zstar = _f64(d), _f64(zstar)
    N, K = d.shape
    with precision(working_prec(None)):
        D, Z = to_arb_mat(d), to_arb_mat(zstar)
        C = D.transpose() * D * (arb(1) / N)
        B = Z.transpose() * D * (arb(1) / N)
        Cinv = C.inv()
        P_star = B * Cinv
        M = identity(K) - C * (to_arb(eta) / K)
        E = to_arb_mat(_f64(P0)) - P_star
        Ps = [P_star + E]
        for _ in range(int(steps)):
            E = E * M
            Ps.append(P_star + E)
        losses = []
        for P in Ps:
            R = D * P.transpose() - Z  # rows P d_i - z_i*
            acc = arb(0)
            for x in R.entries():
                acc += x * x
            losses.append(acc / (2 * N * K))
    return ExactFreeP(C, B, P_star, M, Ps, losses, norm2_upper(M), norm2_upper(Cinv))


def closed_form_tolerance(u: float, ex: ExactFreeP, d: np.ndarray, zstar: np.ndarray, eta: float,
                          C_hat: np.ndarray, P_star_hat: np.ndarray, P_hat: np.ndarray) -> np.ndarray:
    """Bound on ||P^_s - P_s||_F for the SUT's float closed form (s = 0..S).

    C^ = fl(D^T D / N), B^ = fl(Z^T D / N): |C^ - C| <= gamma_{N+1} |D|^T|D| / N (likewise B).
    P*^ by Cholesky: each column solves (C^ + dC) x = b with ||dC||_2 <= gamma_{3K+1} K ||C^||_2 /
      (1 - gamma_{K+1}) (Higham Thm 10.4 and || |R^T||R| ||_2 <= K ||C||_2), so ||P*^ - P*||_F <=
      ||C^-1||_2 ((||dC|| + ||C^ - C||_2) ||P*^||_F + ||B^ - B||_F) =: e*.
    M^ = fl(I - fl(eta/K) C^): |M^ - M| <= (eta/K)(|C^ - C| + 3u |C^|) + u |M^|.
    E^_{s+1} = fl(E^_s M^): e_{s+1} <= rho e_s + ||E^_s||_F (||M^ - M||_F + gamma_K ||M^||_F), e_0 <=
      e* + u ||E^_0||; P^_s = fl(P*^ + E^_s): ||P^_s - P_s|| <= e* + e_s + u ||P^_s||_F.
    Times (1 + gamma_{3K+1}) for the products of first-order terms.
    """
    d, zstar, C_hat = _f64(d), _f64(zstar), _f64(C_hat)
    P_star_hat, P_hat = _f64(P_star_hat), _f64(P_hat)
    N, K = d.shape
    absD = np.abs(d)
    dC = gamma(N + 1, u) * (absD.T @ absD) / N
    dB = gamma(N + 1, u) * (np.abs(zstar).T @ absD) / N
    Cn = float(np.linalg.norm(C_hat, 2))
    back = gamma(3 * K + 1, u) * K * Cn / (1 - gamma(K + 1, u))
    e_star = ex.cinv * ((back + _fro(dC)) * _fro(P_star_hat) + _fro(dB))
    M_hat = np.eye(K) - (eta / K) * C_hat
    dM = _fro((eta / K) * (dC + 3 * u * np.abs(C_hat)) + u * np.abs(M_hat))
    Mf = _fro(M_hat)
    E_hat = P_hat - P_star_hat  # ||E^_s|| up to u ||P^_s||, absorbed by the final factor
    e = e_star + u * _fro(E_hat[0])
    out = []
    for s in range(P_hat.shape[0]):
        out.append(e_star + e + u * _fro(P_hat[s]))
        e = ex.rho * e + _fro(E_hat[s]) * (dM + gamma(K, u) * Mf)
    slack = ENCLOSURE_SLACK * np.linalg.norm(P_hat.reshape(P_hat.shape[0], -1), axis=1)
    return np.asarray(out) * (1 + gamma(3 * K + 1, u)) + slack


def free_P_train_tolerance(u: float, rho: float, d: np.ndarray, P_hat: np.ndarray, R_hat: np.ndarray,
                           eta: float) -> np.ndarray:
    """Bound on ||P^_s - P_s||_F for depth-1 free-P training by models.adjoint.train_step, against
    the exact descent P_{s+1} = P_s - (eta/K)(P_s C_N - B_N) = P_s M + (eta/K) B_N from the same P_0.

    One step at P^ (L = 1: r_0 = d exactly, z = fl(d P^T)): |z^ - z| <= gamma_K |P^||d|; the terminal
    fl(fl(z^ - z*)/(NK)) adds u |e^| / (NK) + u |lambda^|; grad = fl(Lambda^T D) adds gamma_N
    |Lambda^|^T |D|.  So ||G^ - G||_F <= ||dLambda||_F ||D||_F + gamma_N ||Lambda^||_F ||D||_F with
    ||dLambda||_F <= (gamma_K ||P^||_F ||D||_F + u ||E^||_F)/(NK) + u ||Lambda^||_F; the update
    fl(P^ - fl(fl(eta) G^)) adds 2u eta ||G^|| + u ||P^_{s+1}||.  Errors propagate by
    rho >= ||M||_2 (the exact map is affine in P with linear part P -> P M); e_0 = 0.
    R_hat: the SUT's residual rows E^_s = z^_s - z* (S+1, N, K), P_hat (S+1, K, K).
    Times (1 + gamma_{2K+2}) for the products of first-order terms.
    """
    d, P_hat, R_hat = _f64(d), _f64(P_hat), _f64(R_hat)
    N, K = d.shape
    Dn = _fro(d)
    out = [0.0]
    for s in range(P_hat.shape[0] - 1):
        En = _fro(R_hat[s])
        Ln = En / (N * K)
        dLam = (gamma(K, u) * _fro(P_hat[s]) * Dn + u * En) / (N * K) + u * Ln
        dG = dLam * Dn + gamma(N, u) * Ln * Dn
        Gn = Ln * Dn  # ||Lambda^T D||_F <= ||Lambda||_F ||D||_F
        delta = eta * dG + 2 * u * eta * Gn + u * _fro(P_hat[s + 1])
        out.append(rho * out[-1] + delta)
    slack = ENCLOSURE_SLACK * np.linalg.norm(P_hat.reshape(P_hat.shape[0], -1), axis=1)
    return np.asarray(out) * (1 + gamma(2 * K + 2, u)) + slack


def loss_tolerance(u: float, ex: ExactFreeP, d: np.ndarray, zstar: np.ndarray, P_hat: np.ndarray,
                   P_tol: np.ndarray, loss_hat: np.ndarray) -> np.ndarray:
    """Bound on |L^_s - L_N(P_s)| for the SUT's depth-1 loss of its float P^_s (models.adjoint.loss).

    |fl L(P^) - L(P^)|: z = fl(d P^T) gamma_K |P^||d|, e = fl(z - z*) u |e|, the sum of m squares and
    the division gamma_{m+2} L^: <= (1/(NK)) sum_i ||e_i|| (gamma_K ||P^||_F ||d_i|| + u ||e_i||) +
    gamma_{m+2} L^ (first order, e_i the float residual rows).
    |L(P^) - L(P)| for ||P^ - P||_F <= t: L is quadratic, L(P + D) - L(P) = (1/K) tr(D (P C - B)^T) +
    (1/(2K)) tr(D C D^T) <= t ||grad L(P)||_F + t^2 ||C||_2/(2K), grad L(P) = (P C - B)/K, bounded in
    arb at the exact P_s.
    """
    d, zstar, P_hat = _f64(d), _f64(zstar), _f64(P_hat)
    N, K = d.shape
    dn = np.linalg.norm(d, axis=1)
    Cn = norm2_upper(ex.C)
    out = []
    with precision(working_prec(None)):
        for s in range(P_hat.shape[0]):
            E = d @ P_hat[s].T - zstar
            en = np.linalg.norm(E, axis=1)
            ev = float(np.sum(en * (gamma(K, u) * _fro(P_hat[s]) * dn + u * en))) / (N * K)
            ev += gamma(N * K + 2, u) * float(loss_hat[s])
            g = arb_upper(vec_norm2((ex.P[s] * ex.C - ex.B) * (arb(1) / K)))
            t = float(P_tol[s])
            out.append((ev + t * g + t * t * Cn / (2 * K)) * (1 + gamma(2 * K + 2, u)))
    return np.asarray(out)


def matrix_errors(exact: Sequence[arb_mat], P_hat: np.ndarray) -> np.ndarray:
    """Rigorous upper bounds on ||P^_s - P_s||_F."""
    return np.array([norm2_diff_upper(e, _f64(P)) for e, P in zip(exact, P_hat)])


def scalar_errors(exact: Sequence[arb], values: Sequence[float]) -> np.ndarray:
    """Rigorous upper bounds on |v_s - x_s|."""
    with precision(working_prec(None)):
        return np.array([arb_upper(abs(e - to_arb(float(v)))) for e, v in zip(exact, values)])
