"""Family E (eigen utilities): references, strategies and tolerances of certify/test_eig.py.

Claim eig.power_iteration_artifact (seed 003, 2026-07-03): plain power iteration on an indefinite
symmetric matrix converges to the largest-|lambda| end, not lambda_max; shifted iteration or
Lanczos is needed.  numpy / mpmath / python-flint only (no torch).

References are taken from the SUT's own matrices, converted exactly (every float is a dyadic
rational):
- symmetric A: residual-certified enclosures.  From a float eigh (w, Q), the rigorous arb residual
  r_i = ||A q_i - w_i q_i|| / ||q_i|| puts an eigenvalue of A in [w_i - r_i, w_i + r_i] (residual
  bound; holds for any vector and any number).  When the n intervals are pairwise disjoint each
  holds exactly one eigenvalue (n disjoint intervals, n eigenvalues, at least one each), so the
  i-th interval encloses lambda_i.  Cross-checked against mpmath.eigsy at 50 digits on small n.
- general A: similarity-certified enclosures.  From a float eig (w, X), F = X^-1 (A X) is formed
  in acb with a rigorous inverse, so F is exactly similar to A; disjoint Gershgorin discs of F hold
  one eigenvalue each, and kappa(X) <= ||X||_F ||X^-1||_F gives Bauer-Fike radii for Ritz values
  (~12 ms at n = 32 where flint's acb_mat.eig takes ~75 ms; acb_mat.eig and mpmath.eig at 50 digits
  cross-check on small n).  kappa_i = ||y_i|| ||x_i|| / |y_i x_i| are reported as evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from flint import acb, acb_mat, arb, arb_mat
from hypothesis import strategies as st

from properties.reference.convert import (
    _as_exact_float64,
    arb_lower,
    arb_upper,
    precision,
    to_arb_mat,
    to_mpf_matrix,
    workdps,
    working_prec,
)
from properties.strategies import SEEDS
from properties.tolerances import gamma

MP_DPS_EIG = 50


def _haar(n: int, g: np.random.Generator) -> np.ndarray:
    """Haar orthogonal matrix: QR of a Gaussian with diag(R)'s signs folded into Q."""
    Q, R = np.linalg.qr(g.standard_normal((n, n)))
    s = np.sign(np.diag(R))
    s[s == 0] = 1.0
    return Q * s


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SymCase:
    """Indefinite symmetric A = 2^e Q diag(lambda) Q^T with a controlled spectrum.

    Before scaling, the largest-|lambda| end is -1 and the other end t (0 < t < 1): lambda_min = -1,
    lambda_max = t ("min" orientation, the 003 artifact) or the spectrum negated ("max": then
    lambda_max = 1 dominates and plain power iteration does find lambda_max).  Interior
    eigenvalues sit in [-(1 - gap_end), t - gap_top (1 + t)], one per cell of an even grid with
    jitter (spacing >= 0.2 cell), so |lambda_i| <= max(t, 1 - gap_end) for i interior and the top
    gap is >= gap_top (1 + t).
    """

    n: int
    seed: int
    t: float
    gap_end: float
    gap_top: float
    exponent: int
    dominant: str = "min"

    def spectrum(self) -> np.ndarray:
        g = np.random.default_rng([self.seed, 1])
        m = self.n - 2
        lo, hi = -(1 - self.gap_end), self.t - self.gap_top * (1 + self.t)
        cells = (np.arange(m) + 0.5 + 0.4 * g.uniform(-1, 1, m)) / max(m, 1)
        lam = np.concatenate([[-1.0], lo + (hi - lo) * cells, [self.t]])
        return np.sort(-lam if self.dominant == "max" else lam)

    def matrix(self) -> np.ndarray:
        Q = _haar(self.n, np.random.default_rng([self.seed, 2]))
        A = (Q * self.spectrum()) @ Q.T
        return np.ldexp((A + A.T) / 2, self.exponent)  # exactly symmetric; 2^e scaling is exact


@st.composite
def sym_cases(draw: st.DrawFn, min_n: int = 2, max_n: int = 32,
              dominant: tuple[str, ...] = ("min", "max")) -> SymCase:
    return SymCase(
        n=draw(st.integers(min_n, max_n)),
        seed=draw(SEEDS),
        t=draw(st.floats(0.1, 0.8)),
        gap_end=draw(st.floats(0.2, 0.5)),
        gap_top=draw(st.floats(0.05, 0.4)),
        exponent=draw(st.integers(-10, 10)),
        dominant=draw(st.sampled_from(dominant)),
    )


def pythagorean_rotated(a: float = 3.0, b: float = -5.0) -> np.ndarray:
    """R diag(a, b) R^T with the Pythagorean rotation cos = 3/5, sin = 4/5 (the canonical 2x2)."""
    c, s = 3 / 5, 4 / 5
    R = np.array([[c, -s], [s, c]])
    A = (R * np.array([a, b])) @ R.T
    return (A + A.T) / 2


def canonical_sym8() -> np.ndarray:
    """n = 8: lambda = (3, -5) and six interior eigenvalues in (-2.5, 2), Haar-rotated (seed 8)."""
    lam = np.array([-5.0, -2.4, -1.5, -0.7, 0.1, 0.9, 1.6, 3.0])
    Q = _haar(8, np.random.default_rng(8))
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


@dataclass(frozen=True)
class NonNormalCase:
    """A = 2^e Q (D + nu N) Q^T: real Schur-like form with block-diagonal D (1x1 reals, 2x2 blocks
    [[a, b], [-b, a]] for pairs a +- ib) and strictly block-upper-triangular Gaussian N / sqrt(n).

    The leading eigenvalue (by modulus) is a real +-1 ("real") or a pair e^{+-i phi} ("pair");
    every other eigenvalue has modulus <= 1 - gap, so the leading group is separated in modulus.
    nu sets the departure from normality (nu = 0: normal).
    """

    n: int
    seed: int
    lead: str
    gap: float
    nu: float
    exponent: int

    def blocks(self) -> list[tuple[float, float]]:
        """(a, b) per diagonal block: b = 0 a 1x1 block a, b > 0 a 2x2 block of a +- ib."""
        g = np.random.default_rng([self.seed, 3])
        out: list[tuple[float, float]] = []
        if self.lead == "pair" and self.n >= 2:
            phi = g.uniform(0.3, math.pi - 0.3)
            out.append((math.cos(phi), math.sin(phi)))
            left = self.n - 2
        else:
            out.append((float(g.choice((-1.0, 1.0))), 0.0))
            left = self.n - 1
        rmax = 1 - self.gap
        while left > 0:
            r = rmax * math.sqrt(g.uniform(0.0, 1.0))
            if left >= 2 and g.uniform() < 0.5:
                phi = g.uniform(0.1, math.pi - 0.1)
                out.append((r * math.cos(phi), r * math.sin(phi)))
                left -= 2
            else:
                out.append((float(r * g.choice((-1.0, 1.0))), 0.0))
                left -= 1
        return out

    def matrix(self) -> np.ndarray:
        g = np.random.default_rng([self.seed, 4])
        T = np.zeros((self.n, self.n))
        i = 0
        starts = []
        for a, b in self.blocks():
            starts.append(i)
            if b == 0.0:
                T[i, i] = a
                i += 1
            else:
                T[i:i + 2, i:i + 2] = [[a, b], [-b, a]]
                i += 2
        # strictly block-upper part: the eigenvalues stay those of the diagonal blocks
        N = np.triu(g.standard_normal((self.n, self.n)), 1) / math.sqrt(self.n)
        T = T + self.nu * N * _outside_blocks(self.n, starts)
        Q = _haar(self.n, g)
        return np.ldexp(Q @ T @ Q.T, self.exponent)


def _outside_blocks(n: int, starts: list[int]) -> np.ndarray:
    """Mask that zeroes the (i, i+1) entries inside each 2x2 diagonal block."""
    mask = np.ones((n, n))
    for a, b in zip(starts, starts[1:] + [n]):
        if b - a == 2:
            mask[a, a + 1] = 0.0
    return mask


@st.composite
def nonnormal_cases(draw: st.DrawFn, min_n: int = 2, max_n: int = 32) -> NonNormalCase:
    n = draw(st.integers(min_n, max_n))
    return NonNormalCase(
        n=n,
        seed=draw(SEEDS),
        lead=draw(st.sampled_from(("real", "pair"))),
        gap=draw(st.floats(0.05, 0.5)),
        nu=draw(st.floats(0.0, 1.0)),
        exponent=draw(st.integers(-6, 6)),
    )


@dataclass(frozen=True)
class JacobianCase:
    """A toy non-conservative Jacobian J = -delta I + G / sqrt(n) (G Gaussian, seeded).

    Sym(J) = -delta I + Sym(G)/sqrt(n) has its spectrum near -delta + [-sqrt 2, sqrt 2], so for
    0 < delta < sqrt 2 it is indefinite with |lambda_min| > lambda_max > 0: the numerical abscissa
    omega = lambda_max(Sym J) is positive while plain power iteration returns lambda_min < 0.  The
    eigenvalues of J fill the disc |z + delta| <= 1, so for delta > 1 J is stable (alpha < 0):
    the 003 situation (stable but non-normal operator, omega > 0 > alpha, wrong-signed PI omega).
    """

    n: int
    seed: int
    delta: float

    def matrix(self) -> np.ndarray:
        g = np.random.default_rng([self.seed, 5])
        return -self.delta * np.eye(self.n) + g.standard_normal((self.n, self.n)) / math.sqrt(self.n)


def sym_part(A: np.ndarray) -> np.ndarray:
    """(A + A^T)/2, exact in floating point (the sum is commutative, /2 exact barring underflow)."""
    A = _as_exact_float64(A, "sym_part")
    return (A + A.T) / 2


# --------------------------------------------------------------------------- #
# references
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SymSpectrum:
    """Rigorous enclosures lambda_i in [lo_i, hi_i] (ascending, disjoint) of a symmetric A, with the
    float eigenvectors that produced them (used only for a priori convergence predictions)."""

    mid: np.ndarray
    rad: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    vectors: np.ndarray

    @property
    def n(self) -> int:
        return self.mid.size

    def gap_below(self, i: int) -> float:
        """Lower bound on lambda_i - lambda_{i-1} (inf for i = 0)."""
        return math.inf if i == 0 else float(self.lo[i] - self.hi[i - 1])

    def gap_above(self, i: int) -> float:
        return math.inf if i == self.n - 1 else float(self.lo[i + 1] - self.hi[i])

    def isolation(self, i: int) -> float:
        """Lower bound on the distance from lambda_i to every other eigenvalue."""
        return min(self.gap_below(i), self.gap_above(i))

    @property
    def spread_upper(self) -> float:
        return float(self.hi[-1] - self.lo[0])


def residual_upper(A: np.ndarray | arb_mat, v: np.ndarray, theta: float, *, prec: int | None = None) -> float:
    """Rigorous upper bound on ||A v - theta v|| / ||v|| for exact A, v, theta (real)."""
    return residual_upper_batch(A, np.asarray(v, dtype=np.float64).reshape(-1, 1), [theta], prec=prec)[0]


def residual_upper_batch(A: np.ndarray | arb_mat, V: np.ndarray, thetas, *, prec: int | None = None) -> list[float]:
    """Rigorous upper bounds on ||A v_j - theta_j v_j|| / ||v_j|| for the columns v_j of V (one arb
    matrix product for all of them)."""
    V = np.asarray(V, dtype=np.float64)
    with precision(working_prec(prec)):
        Am, Vm = to_arb_mat(A), to_arb_mat(V)
        W = Am * Vm
        out = []
        for j, theta in enumerate(thetas):
            th = arb(float(theta))
            num, den = arb(0), arb(0)
            for i in range(Vm.nrows()):
                x = Vm[i, j]
                d = W[i, j] - th * x
                num += d * d
                den += x * x
            out.append(arb_upper((num.nonnegative_part() / den).sqrt()))
        return out


def complex_residual_upper(A: np.ndarray | arb_mat, z: np.ndarray, theta: complex, *,
                           prec: int | None = None) -> float:
    """Rigorous upper bound on ||A z - theta z|| / ||z|| for exact real A and complex z, theta."""
    return complex_residual_upper_batch(A, np.asarray(z).reshape(-1, 1), [theta], prec=prec)[0]


def complex_residual_upper_batch(A: np.ndarray | arb_mat, Z: np.ndarray, thetas, *,
                                 prec: int | None = None) -> list[float]:
    """Rigorous ||A z_j - theta_j z_j|| / ||z_j|| bounds for the complex columns z_j of Z, in real arb
    arithmetic: with z = x + iy, theta = a + ib, A z - theta z = (A x - a x + b y) + i (A y - a y - b x)."""
    Z = np.asarray(Z, dtype=np.complex128)
    m = Z.shape[1]
    X = np.concatenate([Z.real, Z.imag], axis=1)  # [x_1..x_m, y_1..y_m]
    with precision(working_prec(prec)):
        Am, Xa = to_arb_mat(A), to_arb_mat(X)
        W = Am * Xa
        out = []
        for j, theta in enumerate(thetas):
            a, b = arb(float(np.real(theta))), arb(float(np.imag(theta)))
            num, den = arb(0), arb(0)
            for i in range(Xa.nrows()):
                x, y = Xa[i, j], Xa[i, m + j]
                re = W[i, j] - a * x + b * y
                im = W[i, m + j] - a * y - b * x
                num += re * re + im * im
                den += x * x + y * y
            out.append(arb_upper((num.nonnegative_part() / den).sqrt()))
        return out


def sym_spectrum(A: np.ndarray, *, prec: int | None = None) -> SymSpectrum:
    """Residual-certified disjoint enclosures of every eigenvalue of an exactly symmetric A."""
    A = _as_exact_float64(A, "sym_spectrum")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.array_equal(A, A.T):
        raise ValueError(f"sym_spectrum: expected an exactly symmetric square matrix, got shape {A.shape}")
    w, Q = np.linalg.eigh(A)
    n = w.size
    with precision(working_prec(prec)):
        Am, Qm = to_arb_mat(A), to_arb_mat(Q)
        R = Am * Qm
        rad = np.empty(n)
        for j in range(n):
            num, den = arb(0), arb(0)
            wj = arb(float(w[j]))
            for i in range(n):
                d = R[i, j] - wj * Qm[i, j]
                num += d * d
                den += Qm[i, j] * Qm[i, j]
            rad[j] = arb_upper((num.nonnegative_part() / den).sqrt())
        lo = np.array([arb_lower(arb(float(w[j])) - arb(float(rad[j]))) for j in range(n)])
        hi = np.array([arb_upper(arb(float(w[j])) + arb(float(rad[j]))) for j in range(n)])
    if n > 1 and not np.all(lo[1:] > hi[:-1]):
        i = int(np.argmin(lo[1:] - hi[:-1]))
        raise ValueError(f"sym_spectrum: enclosures {i} and {i + 1} overlap (eigenvalues "
                         f"{w[i]!r}, {w[i + 1]!r} not separated beyond radii {rad[i]:.2e}, {rad[i + 1]:.2e})")
    return SymSpectrum(w, rad, lo, hi, Q)


def mp_eigsy(A: np.ndarray, dps: int = MP_DPS_EIG) -> list[mpmath.mpf]:
    """mpmath.eigsy eigenvalues (ascending) of an exactly converted symmetric A, at `dps` digits."""
    with workdps(dps):
        E = mpmath.eigsy(to_mpf_matrix(A), eigvals_only=True)
        return sorted(E[i] for i in range(E.rows))


def mp_eig(A: np.ndarray, dps: int = MP_DPS_EIG) -> list[mpmath.mpc]:
    """mpmath.eig eigenvalues of an exactly converted general A, at `dps` digits."""
    with workdps(dps):
        return list(mpmath.eig(to_mpf_matrix(A), left=False, right=False))


def enclosures_contain_mp(spec: SymSpectrum, mp_values: list[mpmath.mpf]) -> bool:
    """Two engines agree: every mpmath eigenvalue (sorted) lies in its arb enclosure."""
    with workdps(MP_DPS_EIG):
        return all(mpmath.mpf(lo) <= v <= mpmath.mpf(hi) for lo, hi, v in zip(spec.lo, spec.hi, mp_values))


@dataclass(frozen=True)
class GeneralSpectrum:
    """Rigorous eigenvalue enclosures of a general A: lambda_i in the disc |z - values_i| <= rad_i
    (pairwise disjoint), from F = X^-1 A X with X a float eigenvector matrix (similar to A exactly).

    kappa_X >= ||X||_2 ||X^-1||_2 and offdiag >= ||F - diag F||_2 + max ball radius of diag F give
    the Bauer-Fike radius `bf_radius(r)` of a Ritz value with residual r (see general_match);
    kappa holds the eigenvalue condition numbers kappa_i = ||y_i|| ||x_i|| / |y_i x_i| (float).
    """

    values: np.ndarray  # complex centres (midpoints of F_ii)
    rad: np.ndarray  # rigorous: Gershgorin radius + ball radius of F_ii
    kappa: np.ndarray
    kappa_X: float
    offdiag: float

    @property
    def n(self) -> int:
        return self.values.size

    def bf_radius(self, r: float) -> float:
        """theta with ||A z - theta z|| <= r ||z|| is an eigenvalue of A + E, ||E||_2 <= r, and
        X^-1 (A + E) X = diag F + (F - diag F + X^-1 E X): Bauer-Fike for the (normal) diagonal
        puts theta within ||F - diag F||_2 + kappa(X) r of some F_ii, i.e. of some centre."""
        with precision(64):
            return arb_upper(arb(self.kappa_X) * arb(r) + arb(self.offdiag))

    def leading_group(self, which: str) -> list[int]:
        """Indices whose key (|lambda| for "LM", Re lambda for "LR") cannot be separated from the
        maximum (a conjugate pair shares both keys)."""
        key = np.abs(self.values) if which == "LM" else self.values.real
        top = int(np.argmax(key))
        lo_top = key[top] - self.rad[top]
        return [i for i in range(self.n) if key[i] + self.rad[i] >= lo_top]

    def separated(self, group: list[int], which: str) -> float:
        """Lower bound on (min key in group) - (max key outside): > 0 certifies the group leads."""
        key = np.abs(self.values) if which == "LM" else self.values.real
        rest = [i for i in range(self.n) if i not in group]
        if not rest:
            return math.inf
        return float(min(key[i] - self.rad[i] for i in group) - max(key[i] + self.rad[i] for i in rest))

    def isolation(self, i: int) -> float:
        """Lower bound on min_{j != i} |centre_i - centre_j| minus both enclosure radii."""
        d = [abs(self.values[i] - self.values[j]) - self.rad[i] - self.rad[j] for j in range(self.n) if j != i]
        return float(min(d)) * (1 - 2.0**-50) if d else math.inf


def _acb_matrix(X: np.ndarray) -> acb_mat:
    """Exact acb_mat copy of a complex float64 array (real and imaginary parts are dyadic)."""
    Z = np.asarray(X, dtype=np.complex128)
    return acb_mat([[acb(float(z.real), float(z.imag)) for z in row] for row in Z.tolist()])


def _abs_sum_upper(xs) -> arb:
    s = arb(0)
    for x in xs:
        s += abs(x)
    return s


def general_spectrum(A: np.ndarray, *, prec: int = 128) -> GeneralSpectrum:
    """Similarity-certified enclosures: with (w, X) a float eigendecomposition, F = X^-1 (A X) is
    formed in acb (X^-1 a rigorous inverse) and is exactly similar to A.  Gershgorin's row discs
    D(F_ii, sum_{j != i} |F_ij|), if pairwise disjoint, hold exactly one eigenvalue each."""
    A = _as_exact_float64(A, "general_spectrum")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"general_spectrum: expected a square matrix, got shape {A.shape}")
    n = A.shape[0]
    w, X = np.linalg.eig(A)
    X = X / np.linalg.norm(X, axis=0)
    with precision(prec):
        Xm = _acb_matrix(X)
        try:
            Xi = Xm.inv()
        except ZeroDivisionError:
            raise ValueError("general_spectrum: eigenvector matrix not certified invertible "
                             "(defective or nearly defective matrix)") from None
        F = Xi * (acb_mat(to_arb_mat(A)) * Xm)
        rows = F.tolist()
        centres = np.array([complex(float(rows[i][i].real.mid()), float(rows[i][i].imag.mid())) for i in range(n)])
        ball = [arb_upper(abs(rows[i][i] - acb(rows[i][i].real.mid(), rows[i][i].imag.mid()))) for i in range(n)]
        gersh = [arb_upper(_abs_sum_upper(rows[i][j] for j in range(n) if j != i)) for i in range(n)]
        off2 = arb(0)
        for i in range(n):
            for j in range(n):
                if i != j:
                    off2 += abs(rows[i][j]) ** 2
        offdiag = arb_upper(off2.nonnegative_part().sqrt() + arb(max(ball)))  # a ball straddling 0 squares below 0
        xf = arb(0)
        yf = arb(0)
        for row in Xi.tolist():
            for x in row:
                yf += abs(x) ** 2
        for row in Xm.tolist():
            for x in row:
                xf += abs(x) ** 2
        kappa_X = max(1.0, arb_upper((xf * yf).sqrt()))
    rad = np.array([arb_upper(arb(b) + arb(g)) for b, g in zip(ball, gersh)])
    for i in range(n):
        for j in range(i + 1, n):
            if not abs(centres[i] - centres[j]) * (1 - 2.0**-50) > rad[i] + rad[j]:
                raise ValueError(f"general_spectrum: Gershgorin discs {i} and {j} overlap "
                                 f"(eigenvalues {w[i]!r}, {w[j]!r} not isolated)")
    Y = np.linalg.inv(X)
    kap = np.linalg.norm(Y, axis=1) * np.linalg.norm(X, axis=0) / np.abs(np.einsum("ij,ji->i", Y, X))
    return GeneralSpectrum(centres, rad, kap, kappa_X, offdiag)


def acb_eig_values(A: np.ndarray, *, prec: int = 128) -> list:
    """flint's own rigorous acb_mat.eig enclosures (an independent engine for cross-checks)."""
    with precision(prec):
        return list(acb_mat(to_arb_mat(A)).eig())


def general_contains(spec: GeneralSpectrum, values) -> bool:
    """Two engines agree: every acb ball or mpmath mpc value meets a distinct enclosure disc
    (slack: the ball's radius plus the rounding of its midpoint to a complex double, 2^-52 |z|)."""
    used = set()
    for b in values:
        z = complex(float(b.real.mid()), float(b.imag.mid())) if isinstance(b, acb) else complex(b)
        errs = [abs(z - spec.values[i]) - spec.rad[i] for i in range(spec.n)]
        i = int(np.argmin(errs))
        extra = (arb_upper(b.rad()) if isinstance(b, acb) else 0.0) + 2.0**-52 * abs(z)
        if i in used or errs[i] > extra:
            return False
        used.add(i)
    return len(used) == spec.n


def map_matrix(J: np.ndarray, eps: float, *, prec: int | None = None) -> arb_mat:
    """M = I + eps J in arb from exact J, eps (exact at 212 bits for float64 data)."""
    with precision(working_prec(prec)):
        Jm = to_arb_mat(J)
        n = Jm.nrows()
        M = Jm * arb(float(eps))
        for i in range(n):
            M[i, i] = M[i, i] + 1
        return M


# --------------------------------------------------------------------------- #
# identification checks
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SymMatch:
    """theta (a SUT estimate, rigorous residual r) against the enclosure [lo_i, hi_i] of lambda_i.

    The residual interval [theta - r, theta + r] holds at least one eigenvalue, and every
    eigenvalue lies in its own enclosure; so if the residual interval meets the enclosure of
    lambda_i and no other, it holds lambda_i: |theta - lambda_i| <= r is then certified.
    """

    theta: float
    r: float
    distance: float  # rigorous upper bound on |theta - lambda_i|
    distance_lower: float  # rigorous lower bound on |theta - lambda_i|
    rad: float  # enclosure radius of lambda_i
    mid_distance: float  # |theta - mid_i| (float)
    others_met: int  # how many other enclosures the residual interval meets

    @property
    def within(self) -> bool:
        """The residual interval meets lambda_i's enclosure (necessary for |theta - lambda_i| <= r)."""
        return self.distance_lower <= self.r

    @property
    def exclusive(self) -> bool:
        """The residual interval meets no other enclosure: with `within`, theta approximates
        lambda_i and no other eigenvalue (the estimate has converged to lambda_i)."""
        return self.others_met == 0

    @property
    def excluded(self) -> bool:
        """|theta - lambda_i| > r certainly: lambda_i is NOT the residual bound's eigenvalue."""
        return self.distance_lower > self.r

    @property
    def ratio(self) -> float:
        """|theta - mid_i| / (r + rad_i): <= 1 when theta is consistent with lambda_i."""
        den = self.r + self.rad
        return self.mid_distance / den if den > 0 else (0.0 if self.mid_distance == 0 else math.inf)


def sym_match(spec: SymSpectrum, index: int, theta: float, r: float) -> SymMatch:
    """Compare theta +- r with the enclosures (rigorous, directed rounding through arb)."""
    lo, hi, th = arb(float(spec.lo[index])), arb(float(spec.hi[index])), arb(float(theta))
    with precision(64):
        up = arb_upper(max(th - lo, hi - th))
        low = 0.0
        if theta < spec.lo[index]:
            low = arb_lower(lo - th)
        elif theta > spec.hi[index]:
            low = arb_lower(th - hi)
        left, right = arb_lower(th - arb(float(r))), arb_upper(th + arb(float(r)))
    met = sum(1 for j in range(spec.n) if j != index and spec.lo[j] <= right and spec.hi[j] >= left)
    return SymMatch(float(theta), float(r), up, max(low, 0.0), float(spec.rad[index]),
                    abs(float(theta) - float(spec.mid[index])), met)


@dataclass(frozen=True)
class GeneralMatch:
    """A Ritz value theta with residual r against the leading group of a GeneralSpectrum."""

    theta: complex
    r: float
    radius: float  # Bauer-Fike radius kappa_X r + ||offdiag F|| about the member's centre
    distance: float  # |theta - centre of the nearest group member| (upper bound)
    member: int
    isolation: float  # lower bound on the member's distance to the other eigenvalues
    separation: float  # key separation of the group from the rest (> 0 certifies it leads)

    @property
    def within(self) -> bool:
        return self.distance <= self.radius

    @property
    def isolated(self) -> bool:
        """The member's Bauer-Fike disc meets no other eigenvalue's: theta identifies it."""
        return 2 * self.radius < self.isolation

    @property
    def ratio(self) -> float:
        return self.distance / self.radius if self.radius > 0 else math.inf


def general_match(spec: GeneralSpectrum, which: str, theta: complex, r: float) -> GeneralMatch:
    """theta (residual r) against the nearest member of the leading group: `within` when theta is
    inside that member's Bauer-Fike disc (spec.bf_radius(r) about its centre)."""
    group = spec.leading_group(which)
    d = [abs(theta - spec.values[i]) for i in group]
    k = int(np.argmin(d))
    i = group[k]
    radius = spec.bf_radius(r)
    with precision(64):
        dist = arb_upper(arb(float(d[k])) * (1 + arb(2.0**-50)))
    return GeneralMatch(complex(theta), r, radius, dist, i, spec.isolation(i), spec.separated(group, which))


# --------------------------------------------------------------------------- #
# tolerances (each with its derivation)
# --------------------------------------------------------------------------- #
def residual_target(u: float) -> float:
    """The SUT's stopping tolerance, relative to ||A||: sqrt(u) (half the working digits).

    Reachable: the computed residual's rounding floor `residual_floor` is gamma_{n+4}(||A||_F +
    |theta|) <= (n + 4) u (sqrt(n) + 1) ||A||_2 / (1 - (n+4)u), below sqrt(u) ||A||_2 for
    n <= 32 in float64 (5e-13 vs 1.5e-8) and float32 (1.5e-5 vs 2.4e-4).
    """
    return math.sqrt(u)


def residual_floor(n: int, u: float, a_abs: float, theta: float, r: float = 0.0) -> float:
    """Bound on |computed ||fl(A v) - fl(theta v)|| / ||v|| - exact residual|.

    fl(A v) = A v + e, |e| <= gamma_n |A||v| (||e|| <= gamma_n || |A| || ||v||, || |A| || <= a_abs);
    fl(theta v) and the subtraction add u(|theta||v| + |A v - theta v| + |e|); the norm and the
    division by ||v|| are relative gamma_{n+2}: total <= gamma_{n+4}(a_abs + |theta| + r) to first
    order.  a_abs bounds || |A_op| || of the operator as the SUT applies it (||A||_F for a dense
    matvec; 1 + |eps| ||J||_F for v + eps J v).
    """
    return gamma(n + 4, u) * (a_abs + abs(theta) + r)


@dataclass(frozen=True)
class StepsBound:
    """A priori step count of (shifted) power iteration (None: the rounding floor of the angle
    recursion lies above the target, so no count is guaranteed)."""

    steps: int | None
    q: float  # contraction max_{i != e} |lambda_i + s| / |lambda_e + s|
    tan0: float  # tan angle(v_0, x_e)
    end: int  # index e of the eigenvalue the iteration converges to


def power_iteration_steps_bound(spec: SymSpectrum, v0: np.ndarray, shift: float, target: float,
                                u: float, a_abs: float, max_steps: int = 100_000) -> StepsBound:
    """Steps after which the computed residual of (shifted) power iteration is <= target.

    B = A + s I; lambda_e the eigenvalue of largest |lambda_i + s|, x_e its eigenvector.  For a unit
    v = c x_e + s' y (y unit, orthogonal): exactly, tan(B v) <= q tan(v); with the rounding e of
    fl(fl(A v) + s v), ||e|| <= gamma_{n+2}(||A||_F + |s|) =: eps_B, and the normalization (u per entry),
    tan_{k+1} <= (q tan_k + delta_k) / (1 - delta_k), delta_k = (eps_B / |lambda_e + s| + u)
    sqrt(1 + t_k^2) with t_k >= tan_k the running bound (|c| >= 1/sqrt(1 + t_k^2)).  The residual of the Rayleigh quotient
    obeys ||A v - theta v|| <= spread |s'| sqrt(1 + c^2 s'^2) <= 2 spread tan (theta in [lambda_min,
    lambda_max], |lambda_e - theta| <= spread s'^2), so the returned count is the first k with
    2 spread tan_k <= target.  Float eigenvectors give tan_0 to O(u / gap), negligible here.
    """
    n = spec.n
    lam = spec.mid + shift
    e = int(np.argmax(np.abs(lam)))
    others = np.delete(np.abs(lam), e)
    q = float(others.max() / abs(lam[e])) if others.size else 0.0
    x = spec.vectors[:, e]
    v = np.asarray(v0, dtype=np.float64)
    c = abs(float(x @ v)) / float(np.linalg.norm(v))
    tan0 = math.sqrt(max(0.0, 1 - c * c)) / c if c > 0 else math.inf
    spread2 = 2 * spec.spread_upper
    if not math.isfinite(tan0) or target <= 0:
        return StepsBound(None, q, tan0, e)
    eps_rel = gamma(n + 2, u) * (a_abs + abs(shift)) / abs(lam[e]) + u
    t = tan0
    for k in range(max_steps + 1):
        if spread2 * t <= target:
            return StepsBound(k, q, tan0, e)
        delta = eps_rel * math.sqrt(1 + t * t)
        if delta >= 1:
            break
        t_next = (q * t + delta) / (1 - delta)
        if t_next >= t:  # reached the rounding floor of the recursion above the target
            break
        t = t_next
    return StepsBound(None, q, tan0, e)


def golden_value_atol(u: float, a_norm: float, n: int, a_abs: float) -> float:
    """Band of a pinned converged eigenvalue estimate: two runs that both meet the stopping rule
    (computed residual <= sqrt(u) ||A||) hold estimates within r + floor of the same isolated
    eigenvalue (residual bound), so they differ by <= 2 (sqrt(u) ||A||_2 + gamma_{n+4}(||A||_F +
    ||A||_2))."""
    return 2 * (residual_target(u) * a_norm + residual_floor(n, u, a_abs, a_norm))


ITERATION_COUNT_ATOL = 1.0
"""Band of a pinned iteration count: the stopping test compares a geometrically decaying residual
with a fixed threshold; a rounding-level change of the residual (relative gamma_{n+4}, far below
the per-step contraction 1 - q >= 0.05 here) moves the crossing by at most one step."""


def dense_eig_tolerance(n: int, u: float, a_fro: float, kappa_X: float) -> float:
    """Bound on |lambda_hat - lambda| for a backward-stable dense eigensolver (QR algorithm):
    lambda_hat is an eigenvalue of A + E with ||E||_2 <= p(n) u ||A||_F (Golub & Van Loan, sec.
    7.5.6), p(n) taken as n^2 (Householder reduction plus QR sweeps, each O(n) rotations per
    entry); Bauer-Fike turns it into kappa(X) gamma_{n^2} ||A||_F."""
    return kappa_X * gamma(n * n, u) * a_fro
