"""References for the finite-set adjoint gradient of seed 000 sec 9 (eqs 18-24), no torch.

grad_P of L_N = (1/(2NK)) sum_i ||z_{i,L} - z_i*||^2 in arb two independent ways from the
SUT's exact float P, H_i, d_i, z_i*:
  * `exact_grad_P_adjoint`: the adjoint recursion of eqs 22-23 in ball arithmetic;
  * `exact_grad_P_direct`: d/dP of the loss expanded directly,
    sum_i sum_l ((M_i^T)^{L-1-l} e_i) r_{i,l}^T / (NK), M_i = I - P H_i, e_i = z_{i,L} - z_i*,
    with z_{i,l} from the closed form sum_{j<l} M_i^j P d_i (properties.reference.ball).
`exact_P_theta` builds P_theta = D_a A_theta D_v + D_s of eq 18 from the Flexformer's
parameters (E, W_Q, W_K, a, v, s) without the SUT's attention code, so a wrong normaliser
in the SUT shows up as a mismatch in P itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flint import arb, arb_mat

from .reference.ball import identity, richardson_closed_form
from .reference.convert import arb_upper, precision, to_arb, to_arb_mat, working_prec
from .tolerances import gamma, richardson_step_error


def _vecs(a: np.ndarray) -> list[arb_mat]:
    """The slices a[i] (vectors or matrices) as exact arb matrices."""
    return [to_arb_mat(np.asarray(a[i])) for i in range(a.shape[0])]


def exact_grad_P_adjoint(P: np.ndarray, H: np.ndarray, d: np.ndarray, zstar: np.ndarray, L: int,
                         *, prec: int | None = None) -> arb_mat:
    """Eqs 20-23 in arb: forward, lambda_L = e/(NK), lambda_l = M^T lambda_{l+1}, sum lambda r^T."""
    N, K = d.shape
    with precision(working_prec(prec)):
        Pm = to_arb_mat(P)
        G = arb_mat(K, K)
        for Hi, di, zi in zip(_vecs(H), _vecs(d), _vecs(zstar)):
            z = arb_mat(K, 1)
            rs = []
            for _ in range(L):
                r = di - Hi * z
                rs.append(r)
                z = z + Pm * r
            lam = (z - zi) * arb(1) / (N * K)
            MT = (identity(K) - Pm * Hi).transpose()
            for l in range(L - 1, -1, -1):  # lam = lambda_{l+1}
                G = G + lam * rs[l].transpose()
                lam = MT * lam
        return G


def exact_grad_P_direct(P: np.ndarray, H: np.ndarray, d: np.ndarray, zstar: np.ndarray, L: int,
                        *, prec: int | None = None) -> arb_mat:
    """d/dP L_N written out: sum_i sum_l ((M_i^T)^{L-1-l} e_i) r_{i,l}^T / (NK)."""
    N, K = d.shape
    with precision(working_prec(prec)):
        Pm = to_arb_mat(P)
        G = arb_mat(K, K)
        for Hi, di, zi in zip(_vecs(H), _vecs(d), _vecs(zstar)):
            MT = (identity(K) - Pm * Hi).transpose()
            e = richardson_closed_form(P, Hi, di, L) - zi
            for l in range(L):
                r = di - Hi * richardson_closed_form(P, Hi, di, l)
                w = e
                for _ in range(L - 1 - l):
                    w = MT * w
                G = G + w * r.transpose() * arb(1) / (N * K)
        return G


def exact_loss(P: np.ndarray, H: np.ndarray, d: np.ndarray, zstar: np.ndarray, L: int) -> arb:
    """L_N of eq 21 in arb."""
    N, K = d.shape
    with precision(working_prec(None)):
        s = arb(0)
        for Hi, di, zi in zip(_vecs(H), _vecs(d), _vecs(zstar)):
            e = richardson_closed_form(to_arb_mat(P), Hi, di, L) - zi
            for x in e.entries():
                s += x * x
        return s / (2 * N * K)


def grad_P_tolerance(u: float, P: np.ndarray, H: np.ndarray, d: np.ndarray, zstar: np.ndarray,
                     zs: Sequence[np.ndarray], rs: Sequence[np.ndarray], lams: Sequence[np.ndarray],
                     rhos: Sequence[float]) -> float:
    """Bound on ||G^ - nabla_P L_N||_F for the float adjoint recursion (first order in u).

    Per task i (p = ||P||_F, h = ||H_i||_F, rho >= ||I - P H_i||_2 = ||(I - P H_i)^T||_2):
      forward:  eps_{l+1} = rho eps_l + delta_l (tolerances.richardson_step_error), eps_0 = 0;
      residual: eta_l = h eps_l + gamma_{K+1}(||d|| + h ||z^_l||);
      terminal: mu_L = (eps_L + gamma_2 (||z^_L|| + ||z*||)) / (NK);
      adjoint:  mu_l = rho mu_{l+1} + gamma_{2K+2} (1 + h p) ||lam^_{l+1}||  (P^T lam, H^T w, one subtraction);
      sum:      sum_l mu_{l+1} ||r^_l|| + ||lam^_{l+1}|| eta_l + mu_{l+1} eta_l, plus the rounding of the
                N L-term sum of outer products, gamma_{NL+1} sum ||lam^|| ||r^||.
    The total is multiplied by (1 + gamma_{2K+2}) for the products of first-order terms.
    """
    N, K = d.shape
    L = len(rs)
    p = float(np.linalg.norm(P))
    g_adj = gamma(2 * K + 2, u)
    total = 0.0
    plain = 0.0
    for i in range(N):
        h = float(np.linalg.norm(H[i]))
        dn = float(np.linalg.norm(d[i]))
        rho = float(rhos[i])
        eps = [0.0]
        for l in range(L):
            eps.append(rho * eps[-1] + richardson_step_error(u, K, p, h, dn, float(np.linalg.norm(zs[l][i]))))
        eta = [h * eps[l] + gamma(K + 1, u) * (dn + h * float(np.linalg.norm(zs[l][i]))) for l in range(L)]
        mu = [0.0] * (L + 1)
        mu[L] = (eps[L] + gamma(2, u) * (float(np.linalg.norm(zs[L][i])) + float(np.linalg.norm(zstar[i])))) / (N * K)
        for l in range(L - 1, -1, -1):
            mu[l] = rho * mu[l + 1] + g_adj * (1 + h * p) * float(np.linalg.norm(lams[l + 1][i]))
        for l in range(L):
            ln, rn = float(np.linalg.norm(lams[l + 1][i])), float(np.linalg.norm(rs[l][i]))
            total += mu[l + 1] * rn + ln * eta[l] + mu[l + 1] * eta[l]
            plain += ln * rn
    total += gamma(N * L + 1, u) * plain
    return total * (1 + g_adj)


def diff_fro_upper(a: arb_mat, b: np.ndarray) -> float:
    """Rigorous upper bound on ||a - b||_F (b taken exactly)."""
    with precision(working_prec(None)):
        dm = a - to_arb_mat(np.asarray(b))
        s = arb(0)
        for x in dm.entries():
            s += x * x
        return arb_upper(s.nonnegative_part().sqrt())


def fro_mid(a: arb_mat) -> float:
    with precision(working_prec(None)):
        s = arb(0)
        for x in a.entries():
            s += x * x
        return float(s.nonnegative_part().sqrt().mid())


# --------------------------------------------------------------------------- #
# P_theta of eq 18 from the Flexformer parameters
# --------------------------------------------------------------------------- #
def exact_P_theta(E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, a: np.ndarray, v: np.ndarray,
                  s: np.ndarray, kernel: str) -> arb_mat:
    """P = D_a A D_v + D_s, A(i,j) = k(q_i,k_j) / sum_j' k(q_i,k_j') (rows normalised over keys)."""
    K, m = E.shape
    with precision(working_prec(None)):
        Em = to_arb_mat(E)
        q = Em * to_arb_mat(W_Q).transpose()
        k = Em * to_arb_mat(W_K).transpose()
        kern = arb_mat(K, K)
        for i in range(K):
            for j in range(K):
                if kernel == "exp":
                    t = arb(0)
                    for c in range(m):
                        t += q[i, c] * k[j, c]
                    kern[i, j] = (t / arb(m).sqrt()).exp()
                elif kernel == "rbf":
                    t = arb(0)
                    for c in range(m):
                        t += (q[i, c] - k[j, c]) ** 2
                    kern[i, j] = (-t / (2 * m)).exp()
                else:
                    raise ValueError(kernel)
        P = arb_mat(K, K)
        for i in range(K):
            row = sum((kern[i, j] for j in range(K)), arb(0))
            for j in range(K):
                P[i, j] = to_arb(a[i]) * (kern[i, j] / row) * to_arb(v[j])
            P[i, i] = P[i, i] + to_arb(s[i])
        return P


def P_theta_tolerance(u: float, E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, a: np.ndarray,
                      v: np.ndarray, s: np.ndarray, kernel: str, P_sut: np.ndarray) -> np.ndarray:
    """Entrywise bound on |P^_ij - P_ij| for the float evaluation of eq 18 (first order in u).

    q = E W_Q^T: |dq| <= gamma_m Qa, Qa = |E||W_Q|^T (likewise k, Ka).
    logits: exp kernel q k^T/sqrt(m): |dl_ij| <= gamma_{3m+3} (Qa Ka^T)_ij / sqrt(m);
            rbf -||q_i - k_j||^2/(2m): |dl_ij| <= gamma_{3m+9} sum_c (Qa_ic + Ka_jc)^2 / (2m).
    softmax (max subtracted, one exp and a K-term sum per row): relative error of A_ij at most
      expm1(2 max_j (|dl_ij| + u |l_ij - max_j l_ij| + 2u) + gamma_{K+1}); A_ij <= the SUT's
      |P_ij| / (|a_i||v_j|) is replaced by the exact bound A_ij <= 1.
    P_ij = a_i A_ij v_j (+ s_i): |dP_ij| <= |a_i||v_j| A^_ij (epsA (1 + epsA) + gamma_3) + u (|P^_ij| + |s_i|).
    """
    K, m = E.shape
    Qa = np.abs(E) @ np.abs(W_Q).T
    Ka = np.abs(E) @ np.abs(W_K).T
    q, k = E @ W_Q.T, E @ W_K.T
    if kernel == "exp":
        dl = gamma(3 * m + 3, u) * (Qa @ Ka.T) / math.sqrt(m)
        logits = q @ k.T / math.sqrt(m)
    else:
        dl = gamma(3 * m + 9, u) * ((Qa[:, None, :] + Ka[None, :, :]) ** 2).sum(-1) / (2 * m)
        logits = -((q[:, None, :] - k[None, :, :]) ** 2).sum(-1) / (2 * m)
    spread = np.abs(logits - logits.max(axis=1, keepdims=True))
    # the logits here are float values; their own error is dl, counted once more (factor 2 below covers it)
    row = 2 * (dl + u * (spread + 2 * dl) + 2 * u).max(axis=1) + gamma(K + 1, u)
    epsA = np.expm1(row)[:, None]
    A_hat = np.exp(logits - logits.max(axis=1, keepdims=True))
    A_hat = A_hat / A_hat.sum(axis=1, keepdims=True)
    A_up = np.minimum(1.0, A_hat * (1 + 2 * epsA))
    tol = np.abs(a)[:, None] * np.abs(v)[None, :] * A_up * (epsA * (1 + epsA) + gamma(3, u))
    tol = tol + u * (np.abs(P_sut) + np.diag(np.abs(s)))
    return tol * (1 + gamma(4, u))


def entrywise_excess(a: arb_mat, b: np.ndarray, tol: np.ndarray) -> float:
    """max_ij (upper bound of |a_ij - b_ij|) / tol_ij."""
    K = b.shape[0]
    worst = 0.0
    with precision(working_prec(None)):
        for i in range(K):
            for j in range(K):
                err = arb_upper((a[i, j] - to_arb(float(b[i, j]))).abs_upper())
                worst = max(worst, err / tol[i, j] if tol[i, j] > 0 else (math.inf if err > 0 else 0.0))
    return worst
