"""Tests of models.ep.rnn (the ep.gdu SUT) and of its reference properties.gdu: shapes,
determinism, symmetry and contraction by construction, convergence, F = dPhi/ds, the BPTT time
decomposition, the reference's derivatives against difference quotients, and bad input named in
the error."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from models.ep import rnn
from properties import gdu as ref

CFG = {kind: rnn.RNNConfig(kind, n=5, n_in=2, n_out=2, coupling=0.7, input_scale=1.3, eps=0.5, seed=4)
       for kind in rnn.KINDS}


def _model(kind: str, dtype=torch.float64, **kw) -> rnn.EquilibriumRNN:
    cfg = CFG[kind] if not kw else rnn.RNNConfig(**{**CFG[kind].__dict__, **kw})
    return rnn.EquilibriumRNN(cfg, dtype=dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --- construction --------------------------------------------------------------------

@pytest.mark.parametrize("kind", rnn.KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shapes_and_dtypes(kind, dtype):
    m = _model(kind, dtype)
    n, K = 5, 3
    assert m.A.shape == (n, n) and m.W_x.shape == (n, 2) and m.b.shape == (n,) and m.x.shape == (2,)
    assert m.y.shape == (2,) and m.A.dtype == dtype and m.num_theta == n * n + 2 * n + n
    traj = rnn.free_phase(m, 40, K)
    assert traj.shape == (K + 1, n) and traj.dtype == dtype
    bp = rnn.bptt(m, traj[0], K)
    assert bp.states.shape == (K + 1, n) and bp.grad_s.shape == (K + 1, n)
    assert bp.grad_theta.shape == (K, m.num_theta)
    if kind == "untied":
        return
    betas = [0.25, 0.125, 2.0**-10]
    st = rnn.nudged_phase(m, traj[-1], betas, K)
    assert st.shape == (K + 1, 3, n)
    for upd in (rnn.ep_one_sided(m, traj[-1], betas, K), rnn.ep_symmetric(m, traj[-1], betas, K)):
        assert upd.ds.shape == (K, 3, n) and upd.dtheta.shape == (K, 3, m.num_theta)
        assert upd.ds.dtype == dtype


def test_deterministic_and_seeded():
    a, b = _model("primitive"), _model("primitive")
    for p, q in zip(a.theta(), b.theta()):
        assert torch.equal(p, q)
    assert torch.equal(rnn.free_phase(a, 50, 2), rnn.free_phase(b, 50, 2))
    c = _model("primitive", seed=5)
    assert not torch.equal(a.A, c.A)
    # float32 is the float64 draw rounded (draws on the CPU in float64, then cast)
    d = _model("primitive", torch.float32)
    assert torch.equal(d.A, a.A.float())


def test_weights_symmetric_by_construction_and_untied_asymmetric():
    for kind in ("primitive", "prototypical"):
        m = _model(kind)
        W = rnn.weight(m, m.A)
        assert torch.equal(W, W.T)
    m = _model("untied")
    W = rnn.weight(m, m.A)
    assert not torch.allclose(W, W.T)


def test_contraction_budget_by_construction():
    """primitive: C'' max_i(sum_j |W_ij| + |c_i|) + ||W||_2 = coupling; prototypical: ||W||_2 = coupling."""
    for kind in rnn.KINDS:
        m = _model(kind)
        W = rnn.weight(m, m.A).detach()
        w2 = float(torch.linalg.matrix_norm(W, 2))
        if kind == "primitive":
            c = (m.W_x @ m.x + m.b).detach()
            a = rnn.RHO_DDOT_MAX * float((W.abs().sum(1) + c.abs()).max()) + w2
            assert math.isclose(a, 0.7, rel_tol=1e-12)
        else:
            assert math.isclose(w2, 0.7, rel_tol=1e-12)


@pytest.mark.parametrize("kind", rnn.KINDS)
def test_free_phase_converges(kind):
    m = _model(kind)
    traj = rnn.free_phase(m, 300, 2)
    res = float((rnn.transition(m, traj[-1]) - traj[-1]).detach().norm())
    assert res <= 1e-14
    # the last K + 1 = 3 states are s_298, s_299, s_300
    assert torch.equal(rnn.free_phase(m, 298, 1)[-1], traj[0])


def test_primitive_transition_is_gradient_of_phi():
    """F = dPhi/ds for the energy-based RNN (and not for the prototypical one with its approximate Phi)."""
    for kind, exact in (("primitive", True), ("prototypical", False)):
        m = _model(kind)
        s = torch.linspace(-0.8, 0.9, 5, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(rnn.primitive(m, s), s)
        F = rnn.transition(m, s).detach()
        assert torch.allclose(g, F, rtol=0, atol=1e-14) == exact


def test_bptt_time_decomposition():
    """grad_s(0) = dl/ds(s_T); the per-step theta gradients sum to the gradient with shared theta;
    grad_s(K) is the gradient with respect to the start state."""
    m = _model("prototypical")
    K = 4
    traj = rnn.free_phase(m, 30, K)  # not converged: the trajectory moves
    bp = rnn.bptt(m, traj[0], K)
    assert torch.equal(bp.grad_s[0], rnn.loss_grad(m, bp.states[-1]))
    s = traj[0].clone().requires_grad_(True)
    x = s
    for _ in range(K):
        x = rnn.transition(m, x)
    gs = torch.autograd.grad(rnn.loss(m, x), [s, *m.theta()])
    assert torch.allclose(bp.grad_s[K], gs[0], rtol=1e-13, atol=1e-15)
    total = rnn.flat(tuple(gs[1:]))
    assert torch.allclose(bp.grad_theta.sum(0), total, rtol=1e-13, atol=1e-15)
    assert torch.equal(bp.states[1:], traj[1:]), "BPTT must unroll the free phase's own last K steps"


def test_ep_symmetric_is_mean_of_plus_minus_and_t0_is_exact():
    m = _model("primitive")
    K = 3
    s_T = rnn.free_phase(m, 300, K)[-1]
    b = [2.0**-5]
    one = rnn.ep_one_sided(m, s_T, [b[0], -b[0]], K)
    sym = rnn.ep_symmetric(m, s_T, b, K)
    assert torch.allclose(sym.ds[:, 0], (one.ds[:, 0] + one.ds[:, 1]) / 2, rtol=0, atol=0)
    # Delta_s(beta, 0) = -dl/ds(s*) up to the free-phase residual / beta
    g = rnn.loss_grad(m, s_T)
    assert torch.allclose(one.ds[0, 0], -g, rtol=0, atol=1e-12)


def test_phi_theta_matches_autograd_per_state():
    m = _model("prototypical")
    S = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    G = rnn.phi_theta(m, S)
    for i in range(3):
        gs = torch.autograd.grad(rnn.primitive(m, S[i]), list(m.theta()))
        assert torch.allclose(G[i], rnn.flat(tuple(gs)), rtol=0, atol=1e-15)


# --- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"kind": "hopfield"}, "unknown RNN kind"),
    ({"n": 0}, "n must be an integer >= 1"),
    ({"n_out": 6}, "exceeds the number of units"),
    ({"coupling": 1.0}, "coupling must lie in"),
    ({"coupling": 0.0}, "coupling must lie in"),
    ({"eps": 0.0}, "eps"),
    ({"eps": 1.5}, "eps"),
    ({"input_scale": float("nan")}, "input_scale"),
    ({"n_in": 2.0}, "n_in must be an integer"),
])
def test_bad_config_named(kw, match):
    with pytest.raises(ValueError, match=match):
        rnn.RNNConfig(**{**CFG["primitive"].__dict__, **kw})


def test_bad_calls_named():
    m = _model("primitive")
    s = rnn.free_phase(m, 10, 2)[-1]
    with pytest.raises(ValueError, match="K <= T"):
        rnn.free_phase(m, 2, 3)
    with pytest.raises(TypeError, match="integers"):
        rnn.free_phase(m, 10.0, 2)
    with pytest.raises(ValueError, match="nonzero"):
        rnn.nudged_phase(m, s, [0.1, 0.0], 2)
    with pytest.raises(ValueError, match="finite"):
        rnn.nudged_phase(m, s, [float("inf")], 2)
    with pytest.raises(ValueError, match="no nudging strengths"):
        rnn.ep_one_sided(m, s, [], 2)
    with pytest.raises(ValueError, match="n = 5"):
        rnn.bptt(m, torch.zeros(4, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="dtype"):
        rnn.nudged_phase(m, s.float(), [0.1], 2)
    with pytest.raises(ValueError, match="one state"):
        rnn.nudged_phase(m, s[None], [0.1], 2)
    with pytest.raises(ValueError, match="betas"):
        rnn.ep_updates(m, rnn.nudged_phase(m, s, [0.1, 0.2], 2), [0.1])
    u = _model("untied")
    with pytest.raises(ValueError, match="no primitive function"):
        rnn.ep_one_sided(u, rnn.free_phase(u, 10, 2)[-1], [0.1], 2)


# --- the reference (properties.gdu) --------------------------------------------------

def _net(kind: str, dps: int = 50) -> tuple[rnn.EquilibriumRNN, ref.Net]:
    m = _model(kind)
    return m, ref.net_from_floats(kind, _np(m.A), _np(m.W_x), _np(m.b), _np(m.x), _np(m.y), m.cfg.eps, dps)


FD_STEP = mpmath.mpf(10) ** -25


def _fd(f, s: list, v: list, h=FD_STEP) -> list:
    """Central difference (f(s + h v) - f(s - h v)) / 2h at 80 digits: truncation O(h^2) = 1e-50,
    rounding 1e-80 / h = 1e-55."""
    with mpmath.workdps(80):
        a = f([x + h * y for x, y in zip(s, v)])
        b = f([x - h * y for x, y in zip(s, v)])
        return [(p - q) / (2 * h) for p, q in zip(a, b)]


@pytest.mark.parametrize("kind", rnn.KINDS)
def test_reference_derivatives_against_difference_quotients(kind):
    _, net = _net(kind, dps=80)
    with mpmath.workdps(80):
        s = ref.to_mp_vec(np.linspace(-0.7, 0.6, 5))
        v = ref.to_mp_vec(np.array([0.3, -1.0, 0.2, 0.5, -0.4]))
        Jv = [mpmath.fdot(row, v) for row in ref.jacobian(net, s)]
        fd = _fd(lambda x: ref.transition(net, x), s, v)
        assert float(ref.mp_diff_norm(Jv, fd, 80)) < 1e-40
        if kind != "untied":
            jvp = ref.phi_theta_jvp(net, s, v)
            fd = _fd(lambda x: ref.phi_theta(net, x), s, v)
            assert float(ref.mp_diff_norm(jvp, fd, 80)) < 1e-40
            if kind == "primitive":  # symmetric Jacobian: F = dPhi/ds
                J = ref.jacobian(net, s)
                assert max(abs(J[i][j] - J[j][i]) for i in range(5) for j in range(5)) < 1e-45


def test_reference_theta_vjp_matches_sut_autograd():
    """theta_vjp(s, lambda) is the theta-gradient of lambda . F(s) (the SUT's autograd at a float state)."""
    for kind in rnn.KINDS:
        m, net = _net(kind)
        s = torch.linspace(-0.7, 0.6, 5, dtype=torch.float64)
        lam = torch.tensor([0.3, -1.0, 0.2, 0.5, -0.4], dtype=torch.float64)
        gs = torch.autograd.grad((lam * rnn.transition(m, s)).sum(), list(m.theta()))
        r = ref.theta_vjp(net, ref.to_mp_vec(_np(s)), ref.to_mp_vec(_np(lam)))
        assert ref.diff_norm(r, _np(rnn.flat(tuple(gs)))) < 1e-14


@pytest.mark.parametrize("kind", ["primitive", "prototypical"])
def test_reference_limit_is_the_small_beta_limit_of_ep_exact(kind):
    """ep_limit (linearized dynamics) against ep_exact at beta = 10^-20 from s*: the O(beta) gap."""
    m, net = _net(kind)
    fp = ref.fixed_point(net, _np(rnn.free_phase(m, 200, 1)[-1]))
    lim = ref.ep_limit(net, fp.s, 3)
    ex = ref.ep_exact(net, fp.s, 1e-20, 3)
    for t in range(3):
        assert float(ref.mp_diff_norm(lim.grad_s[t], ex.grad_s[t])) < 1e-18
        assert float(ref.mp_diff_norm(lim.grad_theta[t], ex.grad_theta[t])) < 1e-18


def test_reference_fixed_point_and_gdu_identity():
    """Newton's fixed point is one to 50 digits; for the primitive RNN Lambda(t) = -grad*(t) exactly,
    for the prototypical one not beyond t = 0."""
    for kind in ("primitive", "prototypical"):
        _, net = _net(kind)
        fp = ref.fixed_point(net, np.zeros(5))
        assert fp.residual < 1e-45 and fp.error < 1e-44
        G, L = ref.bptt_at(net, fp.s, 3), ref.ep_limit(net, fp.s, 3)
        gaps = [float(ref.mp_sum_norm(L.grad_s[t], G.grad_s[t])) for t in range(3)]
        assert gaps[0] < 1e-45
        assert (max(gaps[1:]) < 1e-40) == (kind == "primitive")


def test_reference_bad_input_named():
    m = _model("untied")
    net = ref.net_from_floats("untied", _np(m.A), _np(m.W_x), _np(m.b), _np(m.x), _np(m.y), 0.5)
    with pytest.raises(ValueError, match="no primitive function"):
        ref.phi_theta(net, ref.to_mp_vec(np.zeros(5)))
    with pytest.raises(ValueError, match="unknown RNN kind"):
        ref.net_from_floats("hopfield", _np(m.A), _np(m.W_x), _np(m.b), _np(m.x), _np(m.y), 0.5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        ref.net_from_floats("untied", _np(m.A)[:4], _np(m.W_x), _np(m.b), _np(m.x), _np(m.y), 0.5)
    big = ref.net_from_floats("untied", 3 * _np(m.A), _np(m.W_x), _np(m.b), _np(m.x), _np(m.y), 0.5)
    with pytest.raises(ValueError, match="not a contraction"):
        ref.contraction_factor(big)
    with pytest.raises(ValueError, match="order must be 1"):
        ref.beta_grid(3, 2.0**-53)
    assert ref.beta_grid(1, 2.0**-53)[-1] <= 2.0**-26.5 < ref.beta_grid(1, 2.0**-53)[-2] * 2
