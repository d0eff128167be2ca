"""Family D (encoder + decoder) and the joint outer dynamics of family O
(001 sec 5.1-5.3 Tables 3-4; 002 sec 1.2, 6.1-6.6, 11, 12.4, 12.7, 12.8).

SUT: models.encdec -- the joint low-rank encoder + latent decoder trainer with the
stop-gradient triangular coupling of 002 sec 6.4 (Oja encoder U_s, free latent decoder
P_{z,s} tracking its moving oracle P_z*(U_s) = B_s C_s^+), its latent-Flexformer variant
(001 sec 5.3), and a commuting configuration (everything diagonal in one basis, 002 sec
6.5).  Runs, held-out tasks and exact oracles are cached in certify.sut_encdec.

Configuration (stated once; the seeds do not give theirs): K = 8, r = 3, M = 128,
Sigma_x eigenvalues log-spaced in [1/20, 1], Sigma_z = diag(1, .5, .25), noise 0.1, ridge
1e-2, 256 training prompts, eta_enc = 0.25, eta_dec = 4, L = 6, 300 outer steps (200 for
the Flexformer, Adam lr 2e-2), 512 held-out prompts; commuting runs K = 6, M = 32,
orthogonal design, population moments, 150 steps.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given, target
from hypothesis import strategies as st

from certify import registry
from certify import sut_encdec as S
from models import encdec
from properties import eb as eb_ref
from properties import encdec as ref
from properties import richardson as rich_ref
from properties import tolerances
from properties.reference import normbound
from properties.reference.convert import arb_upper, precision

STEPS = {"lowrank": 300, "lowrank_p0": 300, "flexformer": 200, "commuting": 150, "commuting_singular": 150}


def _steps(name: str, backend) -> int:
    n = S.final(name, backend)
    assert n == STEPS[name], f"{name}: run has {n} steps, strategies assume {STEPS[name]}"
    return n


@st.composite
def checkpoint_cases(draw, runs: tuple[str, ...], last: int = 0):
    """(run, checkpoint s in 0..steps-last)."""
    name = draw(st.sampled_from(runs))
    s = draw(st.integers(0, STEPS[name] - last))
    return name, s


def _gold_rtol(backend) -> float:
    return tolerances.relative_band_golden(backend.dtype)


# =========================================================================== #
# encdec.latent_identity
# =========================================================================== #
def _latent_identity_one(name: str, s: int, task: int, L: int, z0: str, backend):
    run = S.run(name, backend)
    tasks = S.heldout(name, backend)
    dev, dt = backend.device, backend.torch_dtype
    U = run.U[s]
    A, d = encdec.latent_system(U, tasks.H[task], tasks.c[task])
    dec = run.latent_decoder(s, L)
    P = dec.precond.frozen_matrix()
    if z0 == "zero":
        x0 = torch.zeros_like(d)
    else:
        g = torch.Generator().manual_seed(1000 * s + task)
        x0 = torch.randn(d.shape[-1], generator=g, dtype=torch.float64).to(device=dev, dtype=dt)
    with torch.no_grad():
        zs = [S.to_numpy(z[0]) for z in dec(A[None], d[None], x0=x0[None], trajectory=True)]
    An, dn, Pn = S.to_numpy(A), S.to_numpy(d), S.to_numpy(P)
    u = backend.unit_roundoff
    sysA, sysd = ref.latent_system_check(S.to_numpy(U), S.to_numpy(tasks.H[task]), S.to_numpy(tasks.c[task]),
                                         An, dn, u)
    ident, rho = rich_ref.identity_check(Pn, An, dn, zs, u)
    return ident, sysA, sysd, rho


@pytest.mark.claim("encdec.latent_identity")
@given(case=checkpoint_cases(("lowrank", "flexformer", "commuting", "commuting_singular")),
       task=st.integers(0, S.N_HELDOUT - 1), L=st.integers(1, 12), z0=st.sampled_from(("zero", "random")))
@example(case=("lowrank", 300), task=0, L=6, z0="zero")
@example(case=("flexformer", 200), task=0, L=6, z0="zero")
def test_latent_identity(case, task, L, z0, backend, record) -> None:
    """encdec.latent_identity: "z_L - z* = (I - P_s A_s)^L (z_0 - z*), A_s = U_s^T H U_s
    (001: max gap 2.8e-17)" (001 sec 5.2; 002 sec 6.1).

    The checkpoint's latent decoder (free P_{z,s} or the Flexformer with theta_s) run for L
    steps from z_0 on the SUT's latent system; z_L against z* + (I - P A_s)^L (z_0 - z*) in
    arb from the SUT's own P, A_s, d_s (tolerance: richardson_forward_error with K = r);
    A_s, d_s against U_s^T H U_s, U_s^T c in arb (gamma_{2K} || |U|^T|H||U| ||_F, gamma_K).
    """
    name, s = case
    ident, sysA, sysd, rho = _latent_identity_one(name, s, task, L, z0, backend)
    record.example()
    record.max("max_error_over_tolerance", ident.ratio)
    record.max("max_latent_system_error_over_tolerance", max(sysA.ratio, sysd.ratio))
    target(ident.ratio, label="error/tolerance")
    assert sysA.ok and sysd.ok, (
        f"{name} s={s} task={task}: A_s or d_s is not U^T H U / U^T c: {sysA.error:.3e} (tol {sysA.tolerance:.3e}), "
        f"{sysd.error:.3e} (tol {sysd.tolerance:.3e})")
    assert ident.ok, (
        f"{name} s={s} task={task} L={L} z0={z0}: ||z_L - z* - (I - P A_s)^L (z_0 - z*)|| <= {ident.error:.3e} "
        f"exceeds the derived tolerance {ident.tolerance:.3e} (rho <= {rho:.4g})")


@pytest.mark.claim("encdec.latent_identity")
@pytest.mark.parametrize("name", ("lowrank", "flexformer"))
def test_latent_identity_every_checkpoint(name: str, backend, record) -> None:
    """encdec.latent_identity at every checkpoint s = 0..S of the run: the rigorous identity on
    one held-out task per checkpoint (task s mod 512), and the seed's float statistic on 128
    held-out tasks: |observed risk - exact identity risk| with the identity risk from
    z_L = z_dag - (I - P A_s)^L z_dag (001 Table 3 "max identity absolute gap")."""
    n = _steps(name, backend)
    worst = 0.0
    for s in range(n + 1):
        ident, sysA, sysd, _ = _latent_identity_one(name, s, s % S.N_HELDOUT, 6, "zero", backend)
        assert sysA.ok and sysd.ok, f"{name} s={s}: latent system off by {sysA.error:.3e} / {sysd.error:.3e}"
        assert ident.ok, f"{name} s={s}: identity error {ident.error:.3e} > derived tolerance {ident.tolerance:.3e}"
        worst = max(worst, ident.ratio)
    run, tasks = S.run(name, backend), S.heldout(name, backend)[slice(0, 128)]
    gaps = []
    for s in range(n + 1):
        m = encdec.checkpoint_metrics(run, s, tasks, S.EB_CLIP, S.EB_DELTA)
        gaps.append(m["identity_gap"])
    record.example(2 * (n + 1))
    record.max("max_error_over_tolerance", worst)
    record.set(f"{name}.checkpoints_checked", n + 1)
    record.max("max_identity_gap", max(gaps))
    record.set(f"{name}.max_identity_gap", max(gaps))


# =========================================================================== #
# encdec.risk_decomposition
# =========================================================================== #
def _risk_check(name: str, s: int, idx: slice, backend, L: int | None = None):
    run = S.run(name, backend)
    tasks = S.heldout(name, backend)[idx]
    t = encdec.heldout_terms(run, s, tasks, L)
    means = encdec.risk_decomposition(t)
    tn = {k: S.to_numpy(v) for k, v in t.items()}
    chk = ref.risk_decomposition_check(S.to_numpy(run.U[s]), S.to_numpy(run.Sigma_x), S.to_numpy(tasks.beta),
                                       tn["zL"], tn["zdag"], means, tn, backend.unit_roundoff)
    return chk, means


def _assert_risk(chk: ref.RiskCheck, means: dict[str, float], where: str) -> None:
    assert chk.identity_exact_holds, (
        f"{where}: exact R_e2e - R_floor - R_dec - cross != 0 (reference decomposition broken)")
    for k in ref.RISK_TERMS:
        assert chk.errors[k] <= chk.tolerances[k], (
            f"{where}: SUT {k} mean {means[k]!r} off the exact value by {chk.errors[k]:.3e} > derived "
            f"tolerance {chk.tolerances[k]:.3e}")
    assert chk.sut_identity_residual <= chk.identity_tolerance, (
        f"{where}: SUT R_e2e - (R_floor + R_dec + cross) = {chk.sut_identity_residual:.3e} exceeds the rounding "
        f"bound {chk.identity_tolerance:.3e} (means {means})")
    assert chk.bound_exact_holds, f"{where}: ||x_L - x*||^2 > 2||dec||^2 + 2||enc||^2 for an exact task"
    assert chk.bound_sut_violations == 0, f"{where}: {chk.bound_sut_violations} tasks violate the bound (SUT floats)"


@pytest.mark.claim("encdec.risk_decomposition")
@given(case=checkpoint_cases(S.ORTHONORMAL_RUNS), block=st.integers(0, S.N_HELDOUT // 32 - 1))
def test_risk_decomposition(case, block, backend, record) -> None:
    """encdec.risk_decomposition: "R_e2e = R_floor + R_dec + 2 E<beta_dagger - beta,
    U(z_L - z_dagger)>_{Sigma_x} exactly; ||x_L - x*||^2 <= 2||dec||^2 + 2||enc||^2"
    (002 sec 6.3; 001 sec 5.1), on blocks of 32 held-out tasks at any checkpoint.

    The SUT's four sample means (models.encdec.risk_decomposition) against their exact values
    from the SUT's latent vectors (arb), each within its derived rounding tolerance (lifting
    gamma_{r+1}, Sigma-quadratic gamma_{2K}, mean gamma_n; see properties.encdec); the exact
    means satisfy the identity (a ball containing 0), the SUT's floats within the sum of the
    four tolerances; the per-task Euclidean bound exactly and for the SUT's floats.
    """
    name, s = case
    chk, means = _risk_check(name, s, slice(32 * block, 32 * block + 32), backend)
    ratio = max(chk.errors[k] / chk.tolerances[k] for k in ref.RISK_TERMS)
    record.example()
    record.max("max_error_over_tolerance", ratio)
    record.max("max_identity_residual_over_tolerance", chk.sut_identity_residual / chk.identity_tolerance)
    record.max("max_bound_ratio", chk.max_bound_ratio)
    target(ratio, label="error/tolerance")
    _assert_risk(chk, means, f"{name} s={s} block={block}")


TABLE_KEYS = ("heldout_risk", "identity_risk", "floor_risk", "decoder_risk", "cross_term", "decoder_certified",
              "violation_rate", "error_bound_ratio", "mean_contraction", "sin2_true")


@pytest.mark.claim("encdec.risk_decomposition")
@pytest.mark.parametrize("name", S.ORTHONORMAL_RUNS)
def test_risk_decomposition_table(name: str, backend, record, golden) -> None:
    """encdec.risk_decomposition (measured part): the final checkpoint on all 512 held-out
    tasks -- the identity and bound as above, and the 001 Table 3 (low-rank) / Table 4
    (Flexformer) and 002 sec 11 quantities pinned in golden/encdec.json, seed values beside
    them; the violation rate of the latent Richardson bound ||z_L - z_dag|| <=
    rho_z^L ||z_dag|| is recounted rigorously (arb) on every task.  Figure: R_e2e, R_floor,
    R_dec and |cross| over the outer time s."""
    n = _steps(name, backend)
    chk, means = _risk_check(name, n, slice(0, S.N_HELDOUT), backend)
    _assert_risk(chk, means, f"{name} s={n} (all tasks)")
    m = S.metrics(name, backend, n)
    # rigorous recount of the latent norm-bound violations (Table 4 "optimization violation rate")
    tn = S.terms(name, backend, n)
    dec = S.run(name, backend).latent_decoder(n)
    P = S.to_numpy(dec.precond.frozen_matrix())
    with torch.no_grad():
        traj = [S.to_numpy(z) for z in dec(S.run(name, backend).U.new_tensor(tn["A"]),
                                           S.run(name, backend).U.new_tensor(tn["d"]), trajectory=True)]
    viol = 0
    for i in range(S.N_HELDOUT):
        bc = rich_ref.norm_bound_check(P, tn["A"][i], tn["d"][i], [z[i] for z in traj], backend.unit_roundoff)
        viol += int(not (bc.exact_holds and bc.sut_holds and bc.rho_certified))
    metrics = {k: m[k] for k in TABLE_KEYS}
    metrics["rigorous_violation_rate"] = viol / S.N_HELDOUT
    for k, v in metrics.items():
        record.set(f"{name}.{k}", v)
    record.set(f"{name}.checkpoint", n)
    record.example(S.N_HELDOUT)
    record.max("max_error_over_tolerance", max(chk.errors[k] / chk.tolerances[k] for k in ref.RISK_TERMS))
    series = {"s": [], "e2e": [], "floor": [], "dec": [], "cross": []}
    for s in list(range(0, n, max(1, n // 60))) + [n]:
        mm = S.terms(name, backend, s)["means"]
        series["s"].append(s)
        for k, kk in (("e2e", "e2e"), ("floor", "floor"), ("dec", "dec"), ("cross", "cross")):
            series[k].append(mm[kk])
    record.figure("encdec_risk_decomposition", {"run": name, **series})
    assert viol == 0, f"{name}: {viol} held-out tasks violate ||z_L - z_dag|| <= rho_z^L ||z_dag||"
    golden("encdec", {f"{name}.{k}": v for k, v in metrics.items()}, rtol=_gold_rtol(backend),
           seeds=registry.CLAIMS["encdec.risk_decomposition"].seed_values,
           seed=S.HELDOUT_SEED)


# =========================================================================== #
# encdec.decoder_bound
# =========================================================================== #
def _decoder_bound_block(name: str, s: int, idx: slice, L: int, backend):
    run = S.run(name, backend)
    tasks = S.heldout(name, backend)[idx]
    t = encdec.heldout_terms(run, s, tasks, L)
    Sx = S.to_numpy(run.Sigma_x)
    sigma_norm = ref.rigorous_norm(Sx)
    P = S.to_numpy(run.latent_decoder(s, L).precond.frozen_matrix())
    U = S.to_numpy(run.U[s])
    A, d = S.to_numpy(t["A"]), S.to_numpy(t["d"])
    res = [ref.decoder_bound_task(U, Sx, P, A[i], d[i], L, sigma_norm) for i in range(len(tasks))]
    return res, sigma_norm, Sx, S.to_numpy(t["dec"])


def _assert_decoder_bound(res, sigma_norm, Sx, where):
    assert normbound.certify_upper_bound(Sx, sigma_norm), (
        f"{where}: ||Sigma_x||_2 <= {sigma_norm!r} is below a rigorous lower bound")
    bad_rho = [i for i, r in enumerate(res) if not r.rho_certified]
    assert not bad_rho, f"{where}: rho_z of tasks {bad_rho} is below a rigorous lower bound on ||I - P A||_2"
    bad = [i for i, r in enumerate(res) if not r.exact_holds]
    assert not bad, f"{where}: exact decoder loss exceeds ||Sx|| rho^2L ||z_dag||^2 on tasks {bad}"


@pytest.mark.claim("encdec.decoder_bound")
@given(case=checkpoint_cases(S.ORTHONORMAL_RUNS), block=st.integers(0, S.N_HELDOUT // 8 - 1),
       L=st.integers(1, 12))
@example(case=("lowrank", 300), block=0, L=6)
def test_decoder_bound(case, block, L, backend, record) -> None:
    """encdec.decoder_bound: "R_dec <= ||Sigma_x||_2 E[rho_z^{2L} ||z_dagger||^2]" (002 sec 6.3),
    blocks of 8 held-out tasks at any checkpoint and depth L = 1..12.

    Per task, in arb: the exact decoder loss ||U_s(z_L - z_dag)||^2_Sx of the checkpoint's
    latent decoder (z_L - z_dag = -(I - P A_s)^L z_dag exactly) against ||Sx||_2 rho_z^{2L}
    ||z_dag||^2 with rigorous upper bounds on ||Sigma_x||_2 and rho_z = ||I - P A_s||_2, each
    checked against a rigorous lower bound (a float norm can undercut the true one); the
    per-task inequality implies the one for the mean.
    """
    name, s = case
    res, sn, Sx, sut_dec = _decoder_bound_block(name, s, slice(8 * block, 8 * block + 8), L, backend)
    tight = max(r.actual_upper / r.bound_lower if r.bound_lower > 0 else 0.0 for r in res)
    record.example()
    record.max("max_tightness", tight)
    record.sum("violations", sum(not r.exact_holds for r in res))
    target(tight, label="decoder loss / bound")
    _assert_decoder_bound(res, sn, Sx, f"{name} s={s} block={block} L={L}")


@pytest.mark.claim("encdec.decoder_bound")
@pytest.mark.parametrize("name", S.ORTHONORMAL_RUNS)
def test_decoder_bound_final(name: str, backend, record, golden) -> None:
    """encdec.decoder_bound at the final checkpoint on all 512 held-out tasks (L = 6): the
    actual decoder risk against the certified one (001 Table 3: 7.2394e-7 vs 7.1221e-4),
    pinned in golden/encdec.json."""
    n = _steps(name, backend)
    res, sn, Sx, sut_dec = _decoder_bound_block(name, n, slice(0, S.N_HELDOUT), 6, backend)
    _assert_decoder_bound(res, sn, Sx, f"{name} s={n}")
    certified = sum(r.bound for r in res) / len(res)
    actual = float(np.mean(sut_dec))
    record.set(f"{name}.decoder_actual", actual)
    record.set(f"{name}.decoder_certified", certified)
    record.set(f"{name}.actual_over_certified", actual / certified)
    record.example(len(res))
    assert actual <= certified, f"{name}: SUT decoder risk {actual:.4e} above the certified {certified:.4e}"
    golden("encdec", {f"{name}.decoder_actual": actual, f"{name}.decoder_certified_rigorous": certified},
           rtol=_gold_rtol(backend), seeds=registry.CLAIMS["encdec.decoder_bound"].seed_values,
           seed=S.HELDOUT_SEED)


# =========================================================================== #
# oracle.tracking
# =========================================================================== #
def _tracking_one(name: str, s: int, backend):
    lg, run = S.logged(name, backend), S.run(name, backend)
    ex = S.exact_oracles(name, backend)
    resid = ref.tracking_residual(lg["P"][s], lg["P"][s + 1], lg["C"][s], run.eta_dec, ex[s].Pstar, ex[s + 1].Pstar)
    tol = S.step_tolerances(name, backend)[s]
    u = backend.unit_roundoff
    oerr = [ref.oracle_error(lg["Pstar"][t], ex[t]) for t in (s, s + 1)]
    otol = [ref.oracle_tolerance(lg["B"][t], lg["C"][t], ex[t].cplus_norm, u) for t in (s, s + 1)]
    return resid, tol, oerr, otol, ex[s]


def _assert_tracking(name, s, resid, tol, oerr, otol, exs):
    assert exs.consistent, (
        f"{name} s={s}: B_s C_s^+ C_s != B_s exactly, so P*(U_s) C_s != B_s and the identity acquires "
        f"eta (B_s - P* C_s)")
    for t, (e, tt) in enumerate(zip(oerr, otol)):
        assert e <= tt, (f"{name} s={s + t}: logged P_z*(U_s) off B_s C_s^+ by {e:.3e} > derived tolerance "
                         f"{tt:.3e}")
    assert resid <= tol, (
        f"{name} s={s}: P_(s+1) - P*(U_(s+1)) - [(P_s - P*(U_s))(I - eta C_s) + P*(U_s) - P*(U_(s+1))] "
        f"= {resid:.3e} exceeds the step's rounding bound {tol:.3e}")


@pytest.mark.claim("oracle.tracking")
@given(case=checkpoint_cases(S.TRACKING_RUNS, last=1))
@example(case=("commuting_singular", 0))
def test_oracle_tracking(case, backend, record) -> None:
    """oracle.tracking: "P_{z,s+1} - P*(U_{s+1}) = (P_{z,s} - P*(U_s))(I - eta C_s) + P*(U_s) -
    P*(U_{s+1})" (002 sec 6.2), on the trainer's logged P_{z,s}, C_s, B_s.

    P*(U_s) = B_s C_s^+ exactly (rational pseudo-inverse, so a singular C_s is handled), with
    B_s C_s^+ C_s = B_s checked exactly; the identity residual in arb must be within the
    rounding of one decoder step (gamma_{r+3}(|P| + eta|P||C| + eta|B|)); the logged
    P_z*(U_s) within the pinv perturbation bound (properties.encdec.oracle_tolerance).
    """
    name, s = case
    resid, tol, oerr, otol, exs = _tracking_one(name, s, backend)
    record.example()
    ratio = max(resid / tol, *(e / t for e, t in zip(oerr, otol)))
    record.max("max_error_over_tolerance", ratio)
    record.max("max_oracle_error_over_tolerance", max(e / t for e, t in zip(oerr, otol)))
    record.sum("singular_C_examples", int(exs.rank < S.run(name, backend).P.shape[-1]))
    target(ratio, label="error/tolerance")
    _assert_tracking(name, s, resid, tol, oerr, otol, exs)


@pytest.mark.claim("oracle.tracking")
@pytest.mark.parametrize("name", S.TRACKING_RUNS)
def test_oracle_tracking_every_step(name: str, backend, record, golden) -> None:
    """oracle.tracking at every step of each free-decoder run; the tracking error
    ||P_{z,s} - P*(U_s)||_F / ||P*(U_s)||_F and the oracle drift ||P*(U_s) - P*(U_{s+1})||_F
    over s (figure), the final relative tracking error pinned (002 sec 11: 3.1937e-2 at
    s = 420)."""
    n = _steps(name, backend)
    run, lg = S.run(name, backend), S.logged(name, backend)
    worst = 0.0
    for s in range(n):
        resid, tol, oerr, otol, exs = _tracking_one(name, s, backend)
        _assert_tracking(name, s, resid, tol, oerr, otol, exs)
        worst = max(worst, resid / tol, *(e / t for e, t in zip(oerr, otol)))
    rel = [float(np.linalg.norm(lg["P"][s] - lg["Pstar"][s]) / np.linalg.norm(lg["Pstar"][s])) for s in range(n + 1)]
    drift = [float(np.linalg.norm(lg["Pstar"][s] - lg["Pstar"][s + 1])) for s in range(n)]
    sin2 = [encdec.sin2_theta(run.U[s], run.U_star) for s in range(0, n + 1)]
    record.example(n)
    record.max("max_error_over_tolerance", worst)
    record.set(f"{name}.tracking_rel", rel[-1])
    record.set(f"{name}.max_oracle_drift", max(drift))
    record.figure("oracle_tracking", {"run": name, "tracking_rel": rel, "drift": drift, "sin2": sin2})
    golden("oracle", {f"{name}.tracking_rel": rel[-1], f"{name}.max_oracle_drift": max(drift)},
           rtol=_gold_rtol(backend),
           seeds=registry.CLAIMS["oracle.tracking"].seed_values, seed=S.HELDOUT_SEED)


@pytest.mark.claim("oracle.tracking")
def test_triangular_stop_gradient(backend, record) -> None:
    """The SUT's stop-gradient (002 sec 6.4, "encoder drives the moving decoder distribution"):
    with L = L_enc(U) + L_dec(P; sg(U)) the encoder never sees the decoder, so the encoder
    trajectory U_s is bitwise the same for another decoder start P_0 and for the Flexformer
    decoder, while the decoder trajectories differ."""
    a, b, f = (S.run(n, backend) for n in ("lowrank", "lowrank_p0", "flexformer"))
    record.example(3)
    assert not torch.equal(a.P[0], b.P[0]) and not torch.equal(a.P[-1], b.P[-1]), "decoder starts do not differ"
    nf = f.steps + 1
    same_p0 = torch.equal(a.U, b.U)
    same_flex = torch.equal(a.U[:nf], f.U)
    record.set("encoder_independent_of_decoder", int(same_p0 and same_flex))
    assert same_p0, (f"U_s depends on the decoder start P_0: max |dU| = "
                     f"{float((a.U - b.U).abs().max()):.3e} (the stop-gradient is missing)")
    assert same_flex, (f"U_s differs between the free and the Flexformer decoder: max |dU| = "
                       f"{float((a.U[:nf] - f.U).abs().max()):.3e} (the stop-gradient is missing)")


# =========================================================================== #
# dynamics.noncommuting
# =========================================================================== #
def _noncommuting_one(name: str, s: int, backend):
    lg, run = S.logged(name, backend), S.run(name, backend)
    ex = S.exact_oracles(name, backend)
    eta = run.eta_dec
    with precision():
        r = lg["P"].shape[-1]
        eye = ref._eye(r)
        Ms = [eye - ref.to_arb(eta) * ref._arb(lg["C"][t]) for t in range(s)]
        Ds = [ex[t].Pstar - ex[t + 1].Pstar for t in range(s)]
        E0 = ref._arb(lg["P"][0]) - ex[0].Pstar
        Es = ref.noncommuting_closed_form(E0, Ms, Ds)
        sut_E = ref._arb(lg["P"][s]) - ex[s].Pstar
        err = arb_upper(ref.ball.vec_norm2(Es - sut_E))
        scale = arb_upper(ref.ball.vec_norm2(sut_E))
    tol = ref.propagated_tolerance(list(S.step_tolerances(name, backend)[:s]), list(S.contractions(name, backend)[:s]))
    # plus the 212-bit reference's own ball radius (the exact oracles are non-dyadic rationals)
    return err, tol + 2.0**-150 * (1 + scale)


@pytest.mark.claim("dynamics.noncommuting")
@given(case=checkpoint_cases(S.TRACKING_RUNS))
@example(case=("lowrank", 300))
@example(case=("lowrank", 2))
def test_noncommuting_closed_form(case, backend, record) -> None:
    """dynamics.noncommuting: "E_{s+1} = E_s (I - eta C_s) + D_s  =>  E_s = E_0 prod_{t<s}(I -
    eta C_t) + sum_tau D_tau prod_{t=tau+1}^{s-1}(I - eta C_t) (ordered products
    M_a M_{a+1} ... M_b)" (002 sec 6.6), with E_s = P_{z,s} - P*(U_s), D_s = P*(U_s) - P*(U_{s+1}).

    The closed form in arb from the logged C_t and the exact oracles, against the trainer's
    E_s; tolerance: the trainer's per-step rounding (update_tolerance) propagated through the
    later factors, sum_t tol_t prod_{t'>t} ||I - eta C_t'||_2 (rigorous norms).
    """
    name, s = case
    err, tol = _noncommuting_one(name, s, backend)
    ratio = err / tol if tol > 0 else (0.0 if err == 0 else math.inf)
    record.example()
    record.max("max_error_over_tolerance", ratio)
    target(ratio, label="error/tolerance")
    assert err <= tol, (f"{name} s={s}: ||E_s(closed form) - E_s(trainer)|| <= {err:.3e} exceeds the propagated "
                        f"rounding bound {tol:.3e}")


@pytest.mark.claim("dynamics.noncommuting")
@pytest.mark.parametrize("name", S.TRACKING_RUNS)
def test_noncommuting_commutators(name: str, backend, record, golden) -> None:
    """dynamics.noncommuting: the C_t of the low-rank run do not commute (max ||[C_t, C_t']||_F
    over the trajectory, certified positive in arb), so no fixed-basis scalar closure applies;
    in the commuting configurations every commutator is exactly zero."""
    lg = S.logged(name, backend)
    cmax, (a, b) = ref.commutator_norms(lg["C"])
    record.set(f"{name}.max_commutator", cmax)
    record.example()
    if name in S.COMMUTING_RUNS:
        assert cmax == 0.0, f"{name}: commutator {cmax:.3e} in the commuting configuration"
        return
    lo = ref.commutator_lower(lg["C"][a], lg["C"][b])
    record.set(f"{name}.max_commutator_rigorous_lower", lo)
    assert lo > 0, f"{name}: no certified non-commuting pair C_t, C_t'"
    golden("dynamics", {f"{name}.max_commutator": cmax}, rtol=_gold_rtol(backend),
           seeds=registry.CLAIMS["dynamics.noncommuting"].seed_values, seed=S.HELDOUT_SEED)


# =========================================================================== #
# dynamics.commuting_scalar
# =========================================================================== #
def _offdiag_max(X: np.ndarray) -> float:
    return float(np.max(np.abs(X - np.diag(np.diag(X))))) if X.size else 0.0


def _ladder_one(name: str, s: int, L: int, backend):
    """(g, p, R) errors and tolerances at checkpoint s, depth L; structure violations."""
    lg, run = S.logged(name, backend), S.run(name, backend)
    u, r = backend.unit_roundoff, lg["P"].shape[-1]
    U, P, C, B, A = lg["U"][s], lg["P"][s], lg["C"][s], lg["B"][s], lg["A_pop"][s]
    Sx = lg["Sigma_x"]
    Us = lg["U_star"]
    structure = max(_offdiag_max(P), _offdiag_max(C), _offdiag_max(B), _offdiag_max(A), _offdiag_max(Sx),
                    float(np.max(np.abs(U - Us * np.diag(Us.T @ U)))))
    sz, sbz = np.diag(lg["pop.Sigma_z"]), np.diag(Us.T @ lg["pop.Sigma_bz"])
    cfg = run.config
    out = {"structure": structure}
    with mpmath.workdps(ref.MP_DPS):
        g_err, g_tol, p_err, p_tol = [], [], [], []
        for i in range(r):
            gs = [float(lg["U"][t][i, i]) for t in range(s)]
            gc = ref.gain_closed_form(lg["U"][0][i, i], sz[i], sbz[i], cfg.eta_enc, s)
            g_err.append(float(abs(gc - ref.to_mpf(float(U[i, i])))))
            g_tol.append(ref.gain_tolerance(gs, sz[i], sbz[i], cfg.eta_enc, u))
            cs = [float(lg["C"][t][i, i]) for t in range(s)]
            bs = [float(lg["B"][t][i, i]) for t in range(s)]
            ps = [float(lg["P"][t][i, i]) for t in range(s)]
            pc = ref.p_closed_form(lg["P"][0][i, i], cs, bs, cfg.eta_dec)
            p_err.append(float(abs(pc - ref.to_mpf(float(P[i, i])))))
            p_tol.append(ref.p_tolerance(ps, cs, bs, cfg.eta_dec, r, u))
        W = np.diag(U.T @ Sx @ U)
        w = _weights_exact(U, Sx, C, A)
        pd, ad = np.diag(P), np.diag(A)
        R_cf = ref.rdec_closed_form(w, pd, ad, L)
        R_sut = float(encdec.population_decoder_risk(run, s, L))
        R_err = float(abs(R_cf - ref.to_mpf(R_sut)))
        Zd = np.diag(C) / ad**2
        R_tol = ref.rdec_tolerance(w, pd, ad, L, u, W, Zd)
    out.update(g_err=g_err, g_tol=g_tol, p_err=p_err, p_tol=p_tol, R_err=R_err, R_tol=R_tol,
               R_sut=R_sut, R_cf=float(R_cf), W=W)
    return out


def _weights_exact(U: np.ndarray, Sx: np.ndarray, C: np.ndarray, A: np.ndarray) -> list:
    """w_i = (U^T Sx U)_ii C_ii / a_i^2 from the exact logged U (diagonal structure), Sx, C, A."""
    r = C.shape[0]
    with mpmath.workdps(ref.MP_DPS):
        Wd = [mpmath.fsum(ref.to_mpf(float(U[k, i])) ** 2 * ref.to_mpf(float(Sx[k, k])) for k in range(U.shape[0]))
              for i in range(r)]
        return ref.commuting_weights(Wd, np.diag(C), np.diag(A))


def _assert_ladder(out, name, s, L):
    assert out["structure"] == 0.0, f"{name} s={s}: not diagonal in one basis (off-diagonal {out['structure']:.3e})"
    for i, (e, t) in enumerate(zip(out["g_err"], out["g_tol"])):
        assert e <= t, f"{name} s={s} mode {i}: encoder gain g_i(s) off its closed form by {e:.3e} > {t:.3e}"
    for i, (e, t) in enumerate(zip(out["p_err"], out["p_tol"])):
        assert e <= t, f"{name} s={s} mode {i}: p_i(s) off its closed form by {e:.3e} > {t:.3e}"
    assert out["R_err"] <= out["R_tol"], (
        f"{name} s={s} L={L}: trainer R_dec(s, L) = {out['R_sut']!r} vs sum_i w_i (1 - p_i a_i)^(2L) = "
        f"{out['R_cf']!r}: error {out['R_err']:.3e} > {out['R_tol']:.3e}")


@pytest.mark.claim("dynamics.commuting_scalar")
@given(case=checkpoint_cases(S.COMMUTING_RUNS), L=st.integers(0, 12))
@example(case=("commuting", 150), L=6)
def test_commuting_scalar_closure(case, L, backend, record) -> None:
    """dynamics.commuting_scalar: "diagonal case: p_i(s) closed form and R_dec(s, L) =
    sum_i w_i(s)(1 - p_i(s) a_i(s))^{2L} (002 sec 6.5; proof-ladder errors ~1e-17)".

    In the commuting configuration (orthogonal design, gain encoder, diagonal P_0; the run's
    matrices checked exactly diagonal), against mpmath (50 digits): the encoder gains
    g_i(s) = g_i* + (g_i(0) - g_i*)(1 - eta_e sigma_i)^s; p_i(s) = p_i(0) prod_{t<s}(1 - eta
    c_i(t)) + sum_tau eta b_i(tau) prod_{t=tau+1}^{s-1}(1 - eta c_i(t)) with the logged c_i, b_i;
    the trainer's population R_dec(s, L) (matrix form) against sum_i w_i (1 - p_i a_i)^{2L} with
    w_i(s) = E[(U_s^T Sx U_s)_ii z_dag_i^2] = (U^T Sx U)_ii c_i / a_i^2 (the Sigma_x-mass of
    latent mode i, as 002 sec 6.3 defines R_dec).  Tolerances: the trainer's rounding
    propagated through the scalar recursions; for R_dec, gamma_N on the product chains and
    gamma_2 on 1 - p a (properties.encdec.rdec_tolerance).
    """
    name, s = case
    out = _ladder_one(name, s, L, backend)
    ratios = [e / t for e, t in zip(out["g_err"] + out["p_err"] + [out["R_err"]],
                                    out["g_tol"] + out["p_tol"] + [out["R_tol"]]) if t > 0]
    ratio = max(ratios) if ratios else 0.0
    record.example()
    record.max("max_error_over_tolerance", ratio)
    target(ratio, label="error/tolerance")
    _assert_ladder(out, name, s, L)


@pytest.mark.claim("dynamics.commuting_scalar")
@pytest.mark.parametrize("name", S.COMMUTING_RUNS)
def test_commuting_ladder(name: str, backend, record, golden) -> None:
    """dynamics.commuting_scalar over the whole run (L = 6): the proof ladder's max errors
    (002 sec 11: 4.337e-18, 6.939e-18, 5.551e-17; here encoder gains, decoder p_i, R_dec)
    and the figure of closed form vs trainer; R_dec(S, 6) pinned in golden/dynamics.json."""
    n = _steps(name, backend)
    g_max = p_max = R_max = 0.0
    fig = {"run": name, "s": [], "R_sut": [], "R_cf": [], "p_sut": [], "g_sut": []}
    lg = S.logged(name, backend)
    for s in range(0, n + 1):
        out = _ladder_one(name, s, 6, backend)
        _assert_ladder(out, name, s, 6)
        g_max, p_max, R_max = max(g_max, *out["g_err"]), max(p_max, *out["p_err"]), max(R_max, out["R_err"])
        if s % 3 == 0 or s == n:
            fig["s"].append(s)
            fig["R_sut"].append(out["R_sut"])
            fig["R_cf"].append(out["R_cf"])
            fig["p_sut"].append(np.diag(lg["P"][s]).tolist())
            fig["g_sut"].append(np.diag(lg["U"][s]).tolist())
    fig["p_star"] = np.diag(lg["Pstar"][n]).tolist()
    record.example(n + 1)
    record.max("max_gain_closure_error", g_max)
    record.max("max_p_closure_error", p_max)
    record.max("max_rdec_closure_error", R_max)
    fig.update(g_max=g_max, p_max=p_max, R_max=R_max)
    record.figure("commuting_ladder", fig)
    Rn = fig["R_sut"][-1]
    record.set(f"{name}.rdec_final", Rn)
    golden("dynamics", {f"{name}.rdec_final": Rn}, rtol=_gold_rtol(backend),
           seeds=registry.CLAIMS["dynamics.commuting_scalar"].seed_values, seed=0)


# =========================================================================== #
# eb.heldout for the encoder + decoder checkpoints
# =========================================================================== #
@pytest.mark.claim("eb.heldout")
@pytest.mark.parametrize("name", S.ORTHONORMAL_RUNS)
def test_eb_heldout_encdec(name: str, backend, record, golden) -> None:
    """eb.heldout: "every trained checkpoint reports its clipped EB upper bound (001: decoder
    0.1771, Flexformer enc+dec 0.1751, PDE 0.0842)" -- the encoder + decoder checkpoints
    (low-rank and Flexformer, final s), on the 512 held-out per-task prediction losses
    ||U z_L - beta||^2_Sx, c = 1, delta = 0.05.

    The SUT's reported bound (models.encdec.checkpoint_metrics -> models.eb) against the
    mpmath evaluation on the checkpoint's own losses within eb_float_tolerance; above the
    clipped mean; pinned in golden/eb.json.  (The seed's 0.1751 is dominated by the range
    term 7c log(2/delta)/(3(n-1)), which implies n of about 52 held-out tasks; with n = 512 that
    term is 0.017.)
    """
    n = _steps(name, backend)
    losses = S.terms(name, backend, n)["e2e"]
    reported = S.metrics(name, backend, n)["eb_upper"]
    exact = eb_ref.eb_upper_reference(losses, S.EB_CLIP, S.EB_DELTA)
    tol = tolerances.eb_float_tolerance(losses, S.EB_CLIP, S.EB_DELTA)
    err = float(abs(mpmath.mpf(reported) - exact))
    key = f"encdec_{name}.eb_upper"
    record.example(len(losses))
    record.set(key, reported)
    record.set(f"encdec_{name}.heldout_clipped_mean", float(np.minimum(losses, S.EB_CLIP).mean()))
    record.max("encdec.max_error_over_tolerance", err / tol)
    assert err <= tol, f"{name}: reported EB {reported!r} vs mpmath {mpmath.nstr(exact, 17)} (tol {tol:.2e})"
    assert reported >= np.minimum(losses, S.EB_CLIP).mean()
    golden("eb", {key: reported}, rtol=_gold_rtol(backend), seeds=registry.CLAIMS["eb.heldout"].seed_values,
           seed=S.HELDOUT_SEED)
