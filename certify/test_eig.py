"""Family E (eigen utilities): eig.power_iteration_artifact (seed 003, 2026-07-03).

Claim: "plain power iteration on an indefinite symmetric matrix converges to the largest-|lambda|
end, not lambda_max; shifted iteration or Lanczos is needed" (003, 2026-07-03: `num_abscissa` ran
plain power iteration on the indefinite Sym(J_nc); the audit with shifted power iteration and
Lanczos retracted the fingerprint story built on it).

SUT: models.ep.eig (plain and shifted power iteration, Lanczos with full reorthogonalization,
Arnoldi on M = I + eps J, dense eigvalsh/eigvals wrappers, numerical and spectral abscissa) on
drawn indefinite symmetric matrices (n = 2..32, |lambda_min| > lambda_max or the reverse),
drawn non-normal matrices, the canonical counterexamples and toy non-conservative Jacobians.

References: the SUT's own matrices, taken exactly, with rigorous eigenvalue enclosures
(properties.eig: residual-certified for symmetric, similarity + Gershgorin for general matrices;
mpmath.eigsy / mpmath.eig at 50 digits and flint's acb_mat.eig cross-check the canonical cases).
Every SUT estimate is judged by its rigorous residual ||A v - theta v|| / ||v|| (arb): for a
symmetric A some eigenvalue lies within it (Weyl / Bauer-Fike for normal matrices), for a general
A within kappa(X) times it (Bauer-Fike), and the enclosures say which eigenvalue that is.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, target
from hypothesis import strategies as st

from models.ep import eig
from properties import eig as pe
from properties.reference.normbound import norm2_upper
from properties.tolerances import gamma

CLAIM = "eig.power_iteration_artifact"
SEED = 3  # start-vector seed of every SUT run (a parameter, never random)
PLAIN_STEPS = 2000  # budgets; each run must meet its stopping rule well inside them
SHIFTED_STEPS = 5000
ARNOLDI_RESTARTS = 200
EPS_MAP = 0.1  # the Euler step of 003's eig_probe (M = I + eps J)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def _sut_matrix(A64: np.ndarray, backend) -> tuple[torch.Tensor, np.ndarray]:
    """The SUT's matrix on the backend and its exact float64 copy (what the references use)."""
    T = torch.from_numpy(np.ascontiguousarray(A64)).to(backend.torch_device, backend.torch_dtype)
    return T, _np(T).astype(np.float64)


def _kw(backend) -> dict:
    return {"seed": SEED, "dtype": backend.torch_dtype, "device": backend.torch_device}


@functools.lru_cache(maxsize=256)
def _sym_reference(key: tuple) -> pe.SymSpectrum:
    A = np.frombuffer(key[1], dtype=np.float64).reshape(key[0], key[0])
    return pe.sym_spectrum(A)


def sym_reference(A: np.ndarray) -> pe.SymSpectrum:
    return _sym_reference((A.shape[0], A.tobytes()))


@functools.lru_cache(maxsize=64)
def _general_reference(key: tuple) -> pe.GeneralSpectrum:
    return pe.general_spectrum(np.frombuffer(key[1], dtype=np.float64).reshape(key[0], key[0]))


def general_reference(A: np.ndarray) -> pe.GeneralSpectrum:
    return _general_reference((A.shape[0], A.tobytes()))


def _largest_abs_end(spec: pe.SymSpectrum) -> int:
    """Index of the certified largest-|lambda| end (0: lambda_min, n-1: lambda_max)."""
    n = spec.n
    if n == 1:
        return 0
    lo_abs_min, hi_abs_min = min(abs(spec.lo[0]), abs(spec.hi[0])), max(abs(spec.lo[0]), abs(spec.hi[0]))
    lo_abs_max, hi_abs_max = min(abs(spec.lo[-1]), abs(spec.hi[-1])), max(abs(spec.lo[-1]), abs(spec.hi[-1]))
    if lo_abs_min > hi_abs_max:
        return 0
    if lo_abs_max > hi_abs_min:
        return n - 1
    raise AssertionError(f"|lambda_min| and lambda_max are not separated: the case has no unique "
                         f"largest-|lambda| end ({spec.mid[0]!r}, {spec.mid[-1]!r})")


class Judged:
    """One SUT estimate (theta, vector, computed residual) judged against the reference; `r` is its
    rigorous residual (computed here unless given, e.g. from a batch)."""

    def __init__(self, A: np.ndarray, spec: pe.SymSpectrum, theta: float, v: torch.Tensor,
                 computed_r: float, u: float, what: str, a_abs: float | None = None, r: float | None = None):
        self.theta, self.what = float(theta), what
        self.v = _np(v).astype(np.float64)
        self.r = pe.residual_upper(A, self.v, self.theta) if r is None else float(r)
        n = A.shape[0]
        a_abs = float(np.linalg.norm(A)) * (1 + 2.0**-50) if a_abs is None else a_abs
        # the residual the SUT stopped on is the true one up to its rounding (properties.eig.residual_floor)
        self.slack = pe.residual_floor(n, u, a_abs, self.theta, float(computed_r))
        self.computed_r = float(computed_r)
        self.spec = spec

    @property
    def honest(self) -> bool:
        return self.r <= self.computed_r + self.slack

    @property
    def honesty_ratio(self) -> float:
        return self.r / (self.computed_r + self.slack)

    def match(self, index: int) -> pe.SymMatch:
        return pe.sym_match(self.spec, index, self.theta, self.r)


def _assert_identifies(j: Judged, index: int, case, label: str) -> pe.SymMatch:
    m = j.match(index)
    assert j.honest, (f"{case}: {j.what}: reported residual {j.computed_r:.3e} but the exact one is "
                      f"{j.r:.3e} > reported + rounding slack {j.slack:.3e}")
    assert m.within, (f"{case}: {j.what} = {j.theta!r} is not within its rigorous residual bound "
                      f"{j.r:.3e} of {label} = {j.spec.mid[index]!r} (distance >= {m.distance_lower:.3e})")
    assert m.exclusive, (f"{case}: {j.what}: residual interval {j.theta!r} +- {j.r:.3e} also meets "
                         f"{m.others_met} other eigenvalue(s): it does not single out {label} (not converged)")
    return m


def _steps_bound(spec: pe.SymSpectrum, A: np.ndarray, shift: float, backend, tol: float,
                 theta_max: float) -> pe.StepsBound:
    """Steps guaranteeing the SUT's stopping test computed_r <= tol * scale.  Its scale is a running
    max >= its computed ||A v_0|| >= ||A v_0|| (1 - gamma_2) - gamma_{n+2} ||A||_F (float64 norm
    here, the SUT's rounding there); its computed residual uses its rounded Rayleigh quotient, so
    computed_r <= exact residual of the exact Rayleigh quotient + 2 floor (the quotient's rounding
    and the residual's, each within `residual_floor`)."""
    n, u = A.shape[0], backend.unit_roundoff
    v0 = _np(eig.start_vector(n, SEED, backend.torch_dtype)).astype(np.float64)
    a_abs = float(np.linalg.norm(A)) * (1 + 2.0**-50)
    scale0 = float(np.linalg.norm(A @ v0)) * (1 - gamma(2, 2.0**-53)) - gamma(n + 2, u) * a_abs
    target_exact = tol * scale0 - 2 * pe.residual_floor(n, u, a_abs, theta_max, tol * scale0)
    return pe.power_iteration_steps_bound(spec, v0, shift, target_exact, u, a_abs)


# --------------------------------------------------------------------------- #
# (a) the artifact: plain power iteration converges to the largest-|lambda| end
# --------------------------------------------------------------------------- #
def check_plain_artifact(A: np.ndarray, T: torch.Tensor, backend, record, case) -> dict:
    """Plain power iteration (Rayleigh-quotient estimate, stopping at computed residual <= sqrt(u)
    ||A||) must converge, within its rigorous residual bound, to the largest-|lambda| end; when
    that end is lambda_min the estimate must be certified NOT lambda_max (|theta - lambda_max| >
    residual bound, i.e. farther from lambda_max than its error bound allows); and it must meet its
    stopping rule within the a priori step count of the convergence rate q = |lambda_2nd| / |lambda_end|."""
    u, n = backend.unit_roundoff, A.shape[0]
    tol = pe.residual_target(u)
    spec = sym_reference(A)
    end = _largest_abs_end(spec)
    res = eig.power_iteration(eig.dense_matvec(T), n, steps=PLAIN_STEPS, tol=tol, **_kw(backend))
    assert res.converged, f"{case}: plain power iteration did not meet its stopping rule in {PLAIN_STEPS} steps"
    j = Judged(A, spec, res.value, res.vector, res.residual, u, "plain power iteration")
    m_end = _assert_identifies(j, end, case, "the largest-|lambda| end")
    bound = _steps_bound(spec, A, 0.0, backend, tol, max(abs(spec.lo[0]), abs(spec.hi[-1])))
    assert bound.end == end
    if bound.steps is not None:
        assert res.iterations <= bound.steps, (
            f"{case}: plain power iteration took {res.iterations} steps, more than the {bound.steps} its "
            f"convergence rate q = {bound.q:.4f} guarantees")
        record.max("max_plain_iterations_over_predicted", res.iterations / max(bound.steps, 1))
    else:
        record.sum("steps_bound_void_rounding_floor", 1)
    out = {"estimate": j.theta, "residual_bound": j.r, "iterations": res.iterations, "end": end,
           "lambda_min": float(spec.mid[0]), "lambda_max": float(spec.mid[-1]), "history": res.rayleigh,
           "residuals": res.residuals}
    record.max("max_plain_distance_to_end_over_residual_bound", m_end.ratio)
    record.max("max_computed_residual_honesty_ratio", j.honesty_ratio)
    record.max("max_plain_iterations", res.iterations)
    if end == 0:
        m_max = j.match(n - 1)
        assert m_max.excluded, (
            f"{case}: plain power iteration's {j.theta!r} is not certified away from lambda_max = "
            f"{spec.mid[-1]!r} (distance >= {m_max.distance_lower:.3e} vs residual bound {j.r:.3e})")
        gap_ratio = m_max.distance_lower / j.r if j.r > 0 else math.inf
        record.sum("artifact_cases_plain_pi_gave_lambda_min", 1)
        record.min("min_lambda_max_distance_over_residual_bound", gap_ratio)
        out["lambda_max_distance_over_bound"] = gap_ratio
    else:
        record.sum("control_cases_lambda_max_dominant_plain_pi_gave_lambda_max", 1)
    return out


# --------------------------------------------------------------------------- #
# (b) the fixes: shifted power iteration and Lanczos find lambda_max
# --------------------------------------------------------------------------- #
def check_fixes(A: np.ndarray, T: torch.Tensor, backend, record, case, *, shift: str = "power") -> dict:
    """Shifted power iteration (matrix-free shift |theta| + r from plain power iteration, or the
    Gershgorin shift) and adaptive Lanczos (k <= n, full reorthogonalization) must find lambda_max
    within their rigorous residual bounds; a full Lanczos run (k = n) and the dense eigh wrapper
    must reproduce every eigenvalue (sorted) within their residual bounds: identity vs dense eig."""
    u, n = backend.unit_roundoff, A.shape[0]
    tol = pe.residual_target(u)
    spec = sym_reference(A)
    mv = eig.dense_matvec(T)
    kw = _kw(backend)
    s = (eig.power_shift(mv, n, steps=PLAIN_STEPS, tol=tol, **kw) if shift == "power"
         else eig.gershgorin_shift(T))
    sh = eig.shifted_power_iteration(mv, n, s, steps=SHIFTED_STEPS, tol=tol, **kw)
    assert sh.converged, f"{case}: shifted power iteration (shift {s:.4g}) did not converge in {SHIFTED_STEPS} steps"
    j_sh = Judged(A, spec, sh.value, sh.vector, sh.residual, u, f"shifted power iteration (shift {s:.4g})")
    m_sh = _assert_identifies(j_sh, n - 1, case, "lambda_max")
    bound = _steps_bound(spec, A, s, backend, tol, max(abs(spec.lo[0]), abs(spec.hi[-1])))
    assert bound.end == n - 1, f"{case}: shift {s} does not make lambda_max + shift the dominant eigenvalue"
    if bound.steps is not None:
        assert sh.iterations <= bound.steps, (
            f"{case}: shifted power iteration took {sh.iterations} steps > {bound.steps} guaranteed by q = {bound.q:.4f}")
        record.max("max_shifted_iterations_over_predicted", sh.iterations / max(bound.steps, 1))
    else:
        record.sum("steps_bound_void_rounding_floor", 1)

    lz = eig.lanczos(mv, n, n, tol=tol, which="LA", history=True, **kw)
    assert lz.converged, f"{case}: Lanczos did not converge with k <= n = {n}"
    j_lz = Judged(A, spec, lz.lambda_max, lz.ritz_vectors[:, -1], float(lz.residuals[-1]), u, "Lanczos theta_max")
    m_lz = _assert_identifies(j_lz, n - 1, case, "lambda_max")

    full = eig.lanczos(mv, n, n, **kw)
    assert full.steps == n, f"{case}: full Lanczos stopped at {full.steps} < n = {n} vectors"
    worst_full = _check_whole_spectrum(A, spec, full.ritz_values, full.ritz_vectors, full.residuals, u, case,
                                       "Lanczos (k = n) Ritz value")
    vals, vecs = eig.dense_eigh(T)
    computed = [eig.residual_norm(vecs[:, i], T @ vecs[:, i], float(vals[i])) for i in range(n)]
    worst_dense = _check_whole_spectrum(A, spec, vals, vecs, computed, u, case, "dense eigh eigenvalue")
    for name, m in (("shifted", m_sh), ("lanczos", m_lz)):
        record.max(f"max_{name}_distance_to_lambda_max_over_residual_bound", m.ratio)
    record.max("max_full_lanczos_distance_over_residual_bound", worst_full)
    record.max("max_dense_eigh_distance_over_residual_bound", worst_dense)
    record.max("max_shifted_iterations", sh.iterations)
    record.max("max_lanczos_steps", lz.steps)
    record.max("max_computed_residual_honesty_ratio", max(j_sh.honesty_ratio, j_lz.honesty_ratio))
    return {"shift": s, "shifted": j_sh.theta, "shifted_iterations": sh.iterations, "shifted_history": sh.rayleigh,
            "shifted_residuals": sh.residuals, "lanczos": j_lz.theta, "lanczos_steps": lz.steps,
            "lanczos_history": lz.history, "lambda_max": float(spec.mid[-1])}


def _check_whole_spectrum(A, spec, values, vectors, computed, u, case, what) -> float:
    """The i-th value (ascending) must be certified to approximate lambda_i (sorted identity)."""
    V = _np(vectors).astype(np.float64)
    thetas = [float(x) for x in values]
    rs = pe.residual_upper_batch(A, V, thetas)
    worst = 0.0
    for i, (th, r) in enumerate(zip(thetas, rs)):
        ji = Judged(A, spec, th, vectors[:, i], float(computed[i]), u, f"{what} {i}", r=r)
        worst = max(worst, _assert_identifies(ji, i, case, f"lambda_{i}").ratio)
    return worst


def _sym_examples(test):
    # the extremes of the size range in both orientations, a near-1 ratio t and a tiny top gap
    for case in (pe.SymCase(2, 0, 0.6, 0.3, 0.2, 0), pe.SymCase(32, 1, 0.8, 0.2, 0.05, 3),
                 pe.SymCase(32, 2, 0.5, 0.5, 0.4, -7, "max"), pe.SymCase(3, 4, 0.1, 0.5, 0.05, 9, "max")):
        test = example(case=case)(test)
    return test


@pytest.mark.claim(CLAIM)
@given(case=pe.sym_cases(dominant=("min",)))
@_sym_examples
def test_plain_power_iteration_finds_largest_abs_end(case: pe.SymCase, backend, record) -> None:
    """eig.power_iteration_artifact (a): "plain power iteration on an indefinite symmetric matrix
    converges to the largest-|lambda| end, not lambda_max" (003, 2026-07-03), on drawn
    A = 2^e Q diag(lambda) Q^T (n = 2..32) with |lambda_min| > lambda_max; the explicit examples and
    test_shifted_power_iteration_and_lanczos_find_lambda_max (both orientations drawn) add the
    reverse orientation as a control, where the end IS lambda_max.  Check: `check_plain_artifact`."""
    T, A = _sut_matrix(case.matrix(), backend)
    out = check_plain_artifact(A, T, backend, record, case)
    record.example()
    record.max("max_n", A.shape[0])
    record.min("min_n", A.shape[0])
    target(-out.get("lambda_max_distance_over_bound", 0.0), label="-(lambda_max distance / bound)")


@pytest.mark.claim(CLAIM)
@given(case=pe.sym_cases())
@_sym_examples
def test_shifted_power_iteration_and_lanczos_find_lambda_max(case: pe.SymCase, backend, record) -> None:
    """eig.power_iteration_artifact (b): "shifted iteration or Lanczos is needed" (003,
    2026-07-03): both find lambda_max within their rigorous residual bounds on drawn matrices of
    both orientations, and full Lanczos / dense eigh reproduce the whole spectrum.  Check:
    `check_fixes` with the matrix-free shift (`eig.power_shift`), plus `check_plain_artifact`
    (plain power iteration finds the largest-|lambda| end, lambda_max in the "max" orientation)."""
    T, A = _sut_matrix(case.matrix(), backend)
    check_plain_artifact(A, T, backend, record, case)
    check_fixes(A, T, backend, record, case, shift="power")
    record.example()


# --------------------------------------------------------------------------- #
# canonical counterexamples (evidence, figure, golden)
# --------------------------------------------------------------------------- #
CANONICAL = {
    "rot2": pe.pythagorean_rotated,  # R diag(3, -5) R^T, cos = 3/5, sin = 4/5
    "sym8": pe.canonical_sym8,  # lambda = (3, -5) + six interior eigenvalues, Haar-rotated
}


@pytest.mark.claim(CLAIM)
@pytest.mark.parametrize("name", tuple(CANONICAL))
def test_canonical_counterexample(name: str, backend, record, golden) -> None:
    """eig.power_iteration_artifact on the canonical counterexamples diag(3, -5) rotated (2x2) and
    an 8x8 with ends (3, -5): plain power iteration returns -5 (certified not lambda_max = 3);
    shifted power iteration with both shift rules and Lanczos return 3.  The references (arb
    enclosures) are cross-checked against mpmath.eigsy at 50 digits.  Numbers pinned in
    golden/eig.json: estimates within 2 (sqrt(u) ||A||_2 + rounding floor) (two converged runs
    bracket the same isolated eigenvalue), iteration counts within one step."""
    T, A = _sut_matrix(CANONICAL[name](), backend)
    spec = sym_reference(A)
    assert pe.enclosures_contain_mp(spec, pe.mp_eigsy(A)), f"{name}: arb enclosures and mpmath.eigsy disagree"
    plain = check_plain_artifact(A, T, backend, record, name)
    fix = check_fixes(A, T, backend, record, name, shift="power")
    gfix = check_fixes(A, T, backend, record, name, shift="gershgorin")
    assert plain["end"] == 0
    record.example()
    record.set(f"{name}_lambda_max", spec.mid[-1])
    record.set(f"{name}_lambda_min", spec.mid[0])
    record.set(f"{name}_plain_pi_estimate", plain["estimate"])
    record.set(f"{name}_plain_pi_residual_bound", plain["residual_bound"])
    record.set(f"{name}_plain_pi_distance_to_lambda_max_over_bound", plain["lambda_max_distance_over_bound"])
    record.set(f"{name}_shifted_pi_estimate", fix["shifted"])
    record.set(f"{name}_lanczos_estimate", fix["lanczos"])
    record.set(f"{name}_plain_pi_iterations", plain["iterations"])
    record.set(f"{name}_shifted_pi_iterations_power_shift", fix["shifted_iterations"])
    record.set(f"{name}_shifted_pi_iterations_gershgorin_shift", gfix["shifted_iterations"])
    record.set(f"{name}_gershgorin_shift", gfix["shift"])
    record.set(f"{name}_lanczos_steps", fix["lanczos_steps"])
    if name == "sym8":
        record.figure("eig_power_iteration", {
            "name": name, "dtype": backend.dtype, "lambda_max": plain["lambda_max"], "lambda_min": plain["lambda_min"],
            "plain": plain["history"], "plain_res": plain["residuals"],
            "shifted": gfix["shifted_history"], "shifted_res": gfix["shifted_residuals"], "shift": gfix["shift"],
            "shifted_power": fix["shifted_history"], "shifted_power_res": fix["shifted_residuals"],
            "power_shift": fix["shift"], "lanczos": fix["lanczos_history"],
        })
    u, n = backend.unit_roundoff, A.shape[0]
    a2, afro = norm2_upper(A), float(np.linalg.norm(A)) * (1 + 2.0**-50)
    golden("eig", {f"{name}_plain_pi_estimate": plain["estimate"], f"{name}_shifted_pi_estimate": fix["shifted"],
                   f"{name}_shifted_pi_estimate_gershgorin": gfix["shifted"], f"{name}_lanczos_estimate": fix["lanczos"]},
           rtol=0.0, atol=pe.golden_value_atol(u, a2, n, afro), seed=SEED)
    golden("eig", {f"{name}_plain_pi_iterations": plain["iterations"],
                   f"{name}_shifted_pi_iterations": fix["shifted_iterations"],
                   f"{name}_shifted_pi_iterations_gershgorin": gfix["shifted_iterations"],
                   f"{name}_lanczos_steps": fix["lanczos_steps"]},
           rtol=0.0, atol=pe.ITERATION_COUNT_ATOL, seed=SEED)


@pytest.mark.claim(CLAIM)
def test_exact_tie_is_a_mixture(backend, record) -> None:
    """eig.power_iteration_artifact, the boundary case |lambda_min| = lambda_max (003: "or a
    mixture"): on A = [[0, 1], [1, 0]] (eigenvalues -1, 1 exactly) plain power iteration swaps the
    two entries of v each step, so its Rayleigh quotient 2 v_1 v_2 stays at the start's mixture,
    strictly inside (-1, 1), and the residual sqrt(1 - theta^2) never decreases: it converges to
    neither end.  Exactly representable, so every step is exact up to the normalization."""
    T, A = _sut_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]), backend)
    res = eig.power_iteration(eig.dense_matvec(T), 2, steps=50, tol=pe.residual_target(backend.unit_roundoff),
                              **_kw(backend))
    th, rs = np.array(res.rayleigh), np.array(res.residuals)
    u = backend.unit_roundoff
    assert not res.converged, "plain power iteration claims convergence on an exact tie"
    # theta_k = 2 a_k b_k with (a, b) swapped each step: constant up to the rounding of the
    # normalization and the dot product (relative gamma_4 of |theta| <= 1, twice for a difference)
    assert float(np.ptp(th)) <= 2 * gamma(4, u), f"Rayleigh quotients drift on an exact tie: {th.min()}..{th.max()}"
    assert float(np.ptp(rs)) <= 2 * gamma(6, u), f"the residual changes on an exact tie: {rs.min()}..{rs.max()}"
    r = pe.residual_upper(A, _np(res.vector).astype(np.float64), res.value)
    assert abs(res.value) < 1 - pe.residual_target(u), f"tie: theta {res.value} reached an end"
    record.example()
    record.set("tie_rayleigh_quotient", res.value)
    record.set("tie_residual_bound", r)


# --------------------------------------------------------------------------- #
# (b') Arnoldi on non-normal matrices
# --------------------------------------------------------------------------- #
def check_arnoldi(A: np.ndarray, T: torch.Tensor, backend, record, case, k: int) -> dict:
    """Arnoldi (k = n, or k < n with explicit restarts) must meet its stopping rule; its leading Ritz
    value (by modulus) must lie in the Bauer-Fike disc (radius kappa(X) r + ||F - diag F||, r its
    rigorous residual) of the certified leading eigenvalue, and that disc must single it out
    (isolation > 2 radius) whenever the disc the stopping rule allows can (else the example is
    counted as not certifiable); the reported residual must be honest; with k = n every Ritz value
    lies in some eigenvalue's disc and every isolated eigenvalue is covered."""
    u, n = backend.unit_roundoff, A.shape[0]
    tol = pe.residual_target(u)
    spec = general_reference(A)
    mv = eig.dense_matvec(T)
    ar = eig.arnoldi(mv, n, k, which="LM", tol=tol, restarts=0 if k == n else ARNOLDI_RESTARTS, **_kw(backend))
    assert ar.converged, f"{case}: Arnoldi (k = {k}) did not converge ({ar.restarts} restarts): residual {ar.residuals[0]:.3e}"
    theta = complex(ar.ritz_values[0])
    z = _np(ar.ritz_vectors[:, 0]).astype(np.complex128)
    r = pe.complex_residual_upper(A, z, theta)
    m = pe.general_match(spec, "LM", theta, r)
    assert m.separation > 0, f"{case}: the reference cannot certify which eigenvalue leads"
    assert m.within, (f"{case}: Arnoldi leading Ritz value {theta} is {m.distance:.3e} from the leading eigenvalue "
                      f"{spec.values[m.member]}, beyond its Bauer-Fike radius {m.radius:.3e} (kappa_X {spec.kappa_X:.3g}, r {r:.3e})")
    # complex Ritz vector: A Re z and A Im z each round like a real matvec, theta z takes two
    # products per part: residual_floor with a_abs = 2 ||A||_F covers both
    slack = pe.residual_floor(n, u, float(np.linalg.norm(A)) * 2, abs(theta), float(ar.residuals[0]))
    assert r <= float(ar.residuals[0]) + slack, f"{case}: Arnoldi under-reports its residual ({ar.residuals[0]} vs {r})"
    # Bauer-Fike at the residual the stopping rule allows (tol * scale plus its rounding): when even
    # that disc is wider than half the distance to the next eigenvalue, kappa(X) r cannot rule out a
    # perturbed other eigenvalue, and the identification is not certifiable at this conditioning in
    # this dtype (theta must still lie in the leading eigenvalue's disc, asserted above)
    allowed = ar.scale * tol + slack
    if 2 * spec.bf_radius(allowed) < m.isolation:
        assert m.isolated, f"{case}: Bauer-Fike radius {m.radius:.3e} cannot single out the leading eigenvalue"
        record.sum("arnoldi_leading_identified", 1)
    else:
        record.sum(f"arnoldi_not_certifiable_kappa_X_r_{'full' if k == n else 'restarted'}", 1)
    worst = m.ratio
    if ar.ritz_values.numel() == n:
        # every Ritz value lies in the Bauer-Fike disc of some eigenvalue, and every eigenvalue whose
        # disc meets no other is covered by a Ritz value (a ghost or a missed eigenvalue fails)
        ths = [complex(x) for x in ar.ritz_values]
        rs = pe.complex_residual_upper_batch(A, _np(ar.ritz_vectors).astype(np.complex128), ths)
        covered: set[int] = set()
        rad_max = max(spec.bf_radius(ri) for ri in rs)
        for i, (th, ri) in enumerate(zip(ths, rs)):
            rad = spec.bf_radius(ri)
            d = np.abs(spec.values - th)
            near = [j for j in range(n) if d[j] <= rad]
            assert near, f"{case}: Ritz value {i} = {th} matches no eigenvalue (Bauer-Fike radius {rad:.3e})"
            covered |= set(near)
            worst = max(worst, float(d[near].min()) / rad)
        missed = [j for j in range(n) if spec.isolation(j) > 2 * rad_max and j not in covered]
        assert not missed, f"{case}: full Arnoldi misses eigenvalue(s) {spec.values[missed]} (ghost Ritz values?)"
        record.sum("full_arnoldi_spectra_matched", 1)
    record.max("max_arnoldi_distance_over_bauer_fike_radius", worst)
    record.max("max_kappa_X", spec.kappa_X)
    record.max("max_kappa_leading", float(spec.kappa[m.member]))
    return {"theta": theta, "residual": r, "radius": m.radius, "restarts": ar.restarts, "steps": ar.steps,
            "ratio": worst}


@pytest.mark.claim(CLAIM)
@given(case=pe.nonnormal_cases(), k_frac=st.floats(0.5, 1.0))
@example(case=pe.NonNormalCase(32, 5, "pair", 0.05, 1.0, 0), k_frac=1.0)
@example(case=pe.NonNormalCase(2, 6, "real", 0.5, 0.0, 0), k_frac=1.0)
def test_arnoldi_leading_eigenvalue_non_normal(case: pe.NonNormalCase, k_frac: float, backend, record) -> None:
    """eig.power_iteration_artifact, the EP tool (003 eig_probe: Arnoldi on M = I + eps J for the
    leading eigenvalue of a non-normal Jacobian): on drawn A = Q (D + nu N) Q^T (n = 2..32,
    leading real or complex pair, modulus gap >= 0.05) Arnoldi with k = n and restarted Arnoldi
    with k = max(4, k_frac n) find the leading eigenvalue within their Bauer-Fike radius; the dense
    eigvals wrapper within kappa(X) gamma_{n^2} ||A||_F.  Check: `check_arnoldi`."""
    T, A = _sut_matrix(case.matrix(), backend)
    n = A.shape[0]
    full = check_arnoldi(A, T, backend, record, case, n)
    k = min(n, max(4, math.ceil(k_frac * n)))
    if k < n:
        rs = check_arnoldi(A, T, backend, record, case, k)
        record.max("max_arnoldi_restarts", rs["restarts"])
        record.sum("restarted_arnoldi_examples", 1)
    spec = general_reference(A)
    lam = complex(eig.dense_eigvals(T)[0])
    tol = pe.dense_eig_tolerance(n, backend.unit_roundoff, float(np.linalg.norm(A)), spec.kappa_X)
    group = spec.leading_group("LM")
    err = min(abs(lam - spec.values[i]) - spec.rad[i] for i in group)
    assert err <= tol, f"{case}: dense eigvals leading {lam} is {err:.3e} from the leading eigenvalue > {tol:.3e}"
    record.max("max_dense_eigvals_error_over_tolerance", max(err, 0.0) / tol)
    record.example()
    target(full["ratio"], label="Ritz distance / Bauer-Fike radius")


@pytest.mark.claim(CLAIM)
@pytest.mark.parametrize("case", (pe.NonNormalCase(2, 6, "pair", 0.5, 0.0, 0), pe.NonNormalCase(8, 7, "real", 0.1, 1.0, 2),
                                  pe.JacobianCase(8, 4, 1.2), pe.JacobianCase(16, 3, 0.8)), ids=repr)
def test_general_reference_engines_agree(case, backend, record) -> None:
    """eig.power_iteration_artifact's general-matrix reference: the similarity-certified enclosures
    (properties.eig.general_spectrum) of the SUT's matrix contain flint's rigorous acb_mat.eig
    balls and (n <= 8) mpmath.eig's 50-digit eigenvalues, one disc each."""
    _, A = _sut_matrix(case.matrix(), backend)
    spec = pe.general_spectrum(A)
    assert pe.general_contains(spec, pe.acb_eig_values(A)), f"{case}: enclosures miss acb_mat.eig"
    if A.shape[0] <= 8:
        assert pe.general_contains(spec, pe.mp_eig(A)), f"{case}: enclosures miss mpmath.eig"
    record.example()
    record.max("max_general_enclosure_radius", float(spec.rad.max()))


# --------------------------------------------------------------------------- #
# (c) the 003 situation: wrong-signed numerical abscissa of a non-conservative Jacobian
# --------------------------------------------------------------------------- #
JACOBIANS = (pe.JacobianCase(32, 0, 1.2), pe.JacobianCase(32, 1, 1.2), pe.JacobianCase(24, 2, 1.1),
             pe.JacobianCase(16, 3, 0.8))


def _map_spectrum(spec: pe.GeneralSpectrum, eps: float, u64: float = 2.0**-53) -> pe.GeneralSpectrum:
    """Enclosures for M = I + eps J from J's: X^-1 M X = I + eps F exactly, so centres map to
    1 + eps c_i (rounded: + 4 u |centre| to the radius) and radii, offdiag scale by |eps|."""
    vals = 1 + eps * spec.values
    pad = 4 * u64 * np.abs(vals)
    return pe.GeneralSpectrum(vals, abs(eps) * spec.rad + pad, spec.kappa, spec.kappa_X,
                              abs(eps) * spec.offdiag + float(pad.max()))


@pytest.mark.claim(CLAIM)
@pytest.mark.parametrize("case", JACOBIANS, ids=lambda c: f"n{c.n}-seed{c.seed}-delta{c.delta}")
def test_ep_numerical_abscissa_sign(case: pe.JacobianCase, backend, record, golden) -> None:
    """eig.power_iteration_artifact in the 003 setting: J = -delta I + G / sqrt(n) is a toy
    non-conservative Jacobian with Sym(J) indefinite and |lambda_min| > lambda_max > 0 (certified
    from the enclosures).  Plain power iteration on the matrix-free Sym(J) v = (J v + J^T v)/2
    returns lambda_min < 0 -- a wrong-signed numerical abscissa, with even its residual interval
    below 0 -- while the dense eigvalsh wrapper, shifted power iteration and Lanczos give omega > 0
    (within their tolerances), and Arnoldi on M = I + eps J (eps = 0.1, k = n) gives the leading
    mu = (lambda - 1)/eps within its Bauer-Fike radius / eps; for delta > 1 the operator is stable
    (alpha < 0) although omega > 0, the s2000 pattern of 003's audit table."""
    Jt, J = _sut_matrix(case.matrix(), backend)
    u, n = backend.unit_roundoff, J.shape[0]
    tol = pe.residual_target(u)
    S = pe.sym_part(J)
    spec = sym_reference(S)
    assert spec.lo[-1] > 0 and -spec.hi[0] > spec.hi[-1], f"{case}: premise |lambda_min| > lambda_max > 0 fails"
    omega = float(spec.mid[-1])
    # the SUT applies Sym(J) matrix-free from a JVP and a VJP; its rounding: || |Sym J| || <= ||J||_F
    jv, jtv = eig.dense_matvec(Jt), eig.dense_matvec(Jt.mT.contiguous())
    mv = eig.sym_matvec(jv, jtv)
    a_abs = float(np.linalg.norm(J)) * (1 + 2.0**-50)
    kw = _kw(backend)
    plain = eig.power_iteration(mv, n, steps=PLAIN_STEPS, tol=tol, **kw)
    assert plain.converged, f"{case}: plain power iteration on Sym(J) did not converge"
    jp = Judged(S, spec, plain.value, plain.vector, plain.residual, u, "plain PI omega", a_abs=a_abs)
    _assert_identifies(jp, 0, case, "lambda_min(Sym J)")
    assert jp.theta + jp.r < 0 < spec.lo[-1], (
        f"{case}: plain PI omega {jp.theta} (+- {jp.r:.2e}) is not certified wrong-signed against omega = {omega}")
    # the fixes
    s = eig.power_shift(mv, n, steps=PLAIN_STEPS, tol=tol, **kw)
    sh = eig.shifted_power_iteration(mv, n, s, steps=SHIFTED_STEPS, tol=tol, **kw)
    assert sh.converged
    m_sh = _assert_identifies(Judged(S, spec, sh.value, sh.vector, sh.residual, u, "shifted PI omega", a_abs=a_abs),
                              n - 1, case, "omega")
    lz = eig.lanczos(mv, n, n, tol=tol, which="LA", **kw)
    assert lz.converged
    m_lz = _assert_identifies(Judged(S, spec, lz.lambda_max, lz.ritz_vectors[:, -1], float(lz.residuals[-1]), u,
                                     "Lanczos omega", a_abs=a_abs), n - 1, case, "omega")
    # dense wrappers: eigvalsh within the backward-error tolerance (kappa = 1 for symmetric)
    dense_tol = pe.dense_eig_tolerance(n, u, a_abs, 1.0)
    om_dense = eig.numerical_abscissa(Jt, "dense")
    assert abs(om_dense - omega) <= dense_tol + spec.rad[-1] and om_dense > 0, (
        f"{case}: dense eigvalsh omega {om_dense} vs {omega} (tolerance {dense_tol:.2e})")
    wrapper_tol = tol * norm2_upper(S) + pe.residual_floor(n, u, a_abs, abs(omega), tol * norm2_upper(S))
    for method in ("lanczos", "shifted_power"):
        om = eig.numerical_abscissa(Jt, method, tol=tol, seed=SEED)
        assert abs(om - omega) <= wrapper_tol + spec.rad[-1], f"{case}: numerical_abscissa({method}) = {om} vs {omega}"
    assert eig.numerical_abscissa(Jt, "power", tol=tol, seed=SEED) < 0  # the artifact, via the wrapper
    # Arnoldi on M = I + eps J: the continuous-time leading mu
    gJ = pe.general_spectrum(J)
    gM = _map_spectrum(gJ, EPS_MAP)
    mr = eig.map_leading_eigs(jv, n, EPS_MAP, n, tol=tol, **kw)
    theta = complex(mr.lam[0])
    M = pe.map_matrix(J, EPS_MAP)
    r = pe.complex_residual_upper(M, _np(mr.arnoldi.ritz_vectors[:, 0]).astype(np.complex128), theta)
    mm = pe.general_match(gM, "LM", theta, r)
    assert mm.separation > 0 and mm.within and mm.isolated, (
        f"{case}: Arnoldi on M: leading {theta} vs {gM.values[mm.member]} (distance {mm.distance:.3e}, radius "
        f"{mm.radius:.3e}, separation {mm.separation:.3e})")
    mu = complex(mr.mu[0])
    mu_ref = gJ.values[mm.member]
    # mu = (theta - 1)/eps: theta - 1 exact (Sterbenz), the division one rounding u |mu| per part
    mu_tol = (mm.radius + gM.rad[mm.member]) / EPS_MAP + gJ.rad[mm.member] + 2 * u * abs(mu)
    assert abs(mu - mu_ref) <= mu_tol, f"{case}: mu {mu} vs {mu_ref} beyond {mu_tol:.3e}"
    alpha_idx = gJ.leading_group("LR")
    alpha = float(gJ.values[alpha_idx[0]].real)
    alpha_dense = eig.spectral_abscissa(Jt)
    a_tol = pe.dense_eig_tolerance(n, u, a_abs, gJ.kappa_X) + float(gJ.rad[alpha_idx[0]])
    assert abs(alpha_dense - alpha) <= a_tol, f"{case}: spectral_abscissa {alpha_dense} vs {alpha} beyond {a_tol:.2e}"
    if case.delta > 1:
        assert gJ.values[alpha_idx[0]].real + gJ.rad[alpha_idx[0]] < 0, f"{case}: expected a stable J (alpha < 0)"
    tag = f"n{case.n}_seed{case.seed}"
    record.example()
    record.sum("ep_wrong_signed_omega_cases", 1)
    record.set(f"ep_{tag}_omega_true", omega)
    record.set(f"ep_{tag}_omega_plain_pi", jp.theta)
    record.set(f"ep_{tag}_lambda_min_sym", float(spec.mid[0]))
    record.set(f"ep_{tag}_alpha", alpha)
    record.set(f"ep_{tag}_leading_mu_re", mu.real)
    record.set(f"ep_{tag}_leading_mu_im", abs(mu.imag))
    record.set(f"ep_{tag}_leading_mu_is_alpha", int(mm.member in alpha_idx))
    record.max("max_ep_fix_distance_over_residual_bound", max(m_sh.ratio, m_lz.ratio))
    record.max("max_ep_mu_error_over_tolerance", abs(mu - mu_ref) / mu_tol)
    if case == JACOBIANS[0]:
        afro = a_abs
        a2 = norm2_upper(S)
        golden("eig", {f"ep_{tag}_omega_plain_pi": jp.theta, f"ep_{tag}_omega_lanczos": lz.lambda_max,
                       f"ep_{tag}_omega_shifted_pi": sh.value},
               rtol=0.0, atol=pe.golden_value_atol(u, a2, n, afro), seed=SEED)
        golden("eig", {f"ep_{tag}_plain_pi_iterations": plain.iterations,
                       f"ep_{tag}_shifted_pi_iterations": sh.iterations,
                       f"ep_{tag}_lanczos_steps": lz.steps},
               rtol=0.0, atol=pe.ITERATION_COUNT_ATOL, seed=SEED)
        # mu's band: both runs within (Bauer-Fike radius + enclosure)/eps of the same mu_ref
        golden("eig", {f"ep_{tag}_leading_mu_re": mu.real}, rtol=0.0, atol=2 * mu_tol, seed=SEED)
