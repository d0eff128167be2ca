"""Tests of models.finite_set and models.ntk: shapes, determinism, agreement with plain
autograd / finite differences, and bad input named in the error."""

from __future__ import annotations

import math

import pytest
import torch

import models
from models import adjoint as adj
from models import finite_set as fs
from models import ntk
from models.gp import GPTaskConfig

K, N, L = 3, 4, 3


def _tasks(dtype=torch.float64, n=N, seed=1):
    return models.LeastSquaresPrompts(models.TaskConfig(K=K, M=4 * K), "cpu", dtype).sample(n, seed)


def _pc(dtype=torch.float64, seed=2, kernel="exp"):
    return models.Flexformer(K, dtype=dtype, seed=seed, m=4, kernel=kernel)


# --- finite_set --------------------------------------------------------------------

def test_stacked_outputs_are_task_major_z_L():
    tasks, pc = _tasks(), _pc()
    f = fs.stacked_outputs(pc.matrix().detach(), tasks, L)
    zs, _ = adj.forward(pc.matrix().detach(), tasks.H, tasks.d, L)
    assert f.shape == (N * K,)
    for i in range(N):
        assert torch.equal(f[i * K:(i + 1) * K], zs[-1][i])


def test_finite_loss_is_eq21():
    tasks, pc = _tasks(), _pc()
    r = fs.residual_vector(pc, tasks, L)
    ref = adj.loss(pc.matrix().detach(), tasks.H, tasks.d, tasks.xstar, L)
    assert math.isclose(float(fs.finite_loss(r)), float(ref), rel_tol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_train_history_shapes_and_input_untouched(dtype):
    tasks, pc = _tasks(dtype), _pc(dtype)
    before = fs.flat_parameters(pc).clone()
    model, hist = fs.train(pc, tasks, L, 0.1, 5)
    p = before.numel()
    assert hist.thetas.shape == (6, p) and hist.residuals.shape == (6, N * K) and hist.losses.shape == (6,)
    assert hist.steps == 5 and hist.thetas.dtype == dtype
    assert torch.equal(fs.flat_parameters(pc), before), "train must not modify its input"
    assert torch.equal(fs.flat_parameters(model), hist.thetas[-1])
    assert torch.equal(hist.thetas[0], before)
    assert bool((hist.losses[1:] < hist.losses[:-1]).all()), "a small step must decrease L_N"


def test_train_is_deterministic():
    tasks = _tasks()
    _, h1 = fs.train(_pc(), tasks, L, 0.2, 4)
    _, h2 = fs.train(_pc(), tasks, L, 0.2, 4)
    assert torch.equal(h1.thetas, h2.thetas) and torch.equal(h1.residuals, h2.residuals)


def test_train_zero_steps():
    tasks, pc = _tasks(), _pc()
    _, hist = fs.train(pc, tasks, L, 0.1, 0)
    assert hist.steps == 0 and hist.residuals.shape == (1, N * K)


def test_adjoint_and_autograd_gradients_agree():
    tasks, pc = _tasks(), _pc()
    _, g = fs.adjoint_gradient(pc, tasks, L)
    ga = fs.autograd_gradient(pc, tasks, L)
    assert g.shape == ga.shape == (fs.flat_parameters(pc).numel(),)
    assert torch.allclose(g, ga, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad, match", [
    (dict(eta=0.0), "step size eta"), (dict(eta=-1.0), "step size eta"), (dict(eta=math.nan), "step size eta"),
    (dict(steps=-1), "number of steps"), (dict(steps=1.5), "number of steps"), (dict(L=0), "depth L"),
])
def test_train_bad_input_named(bad, match):
    args = dict(eta=0.1, steps=2, L=L)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        fs.train(_pc(), _tasks(), args["L"], args["eta"], args["steps"])


def test_train_rejects_mismatched_K_and_empty_set():
    with pytest.raises(ValueError, match="K = 5 but the tasks have K = 3"):
        fs.train(models.Flexformer(5, seed=0, m=4), _tasks(), L, 0.1, 1)
    with pytest.raises(ValueError, match="empty"):
        fs.train(_pc(), _tasks()[0:0], L, 0.1, 1)


# --- depth 1: the quadratic free-P closed form ---------------------------------------

def test_quadratic_free_P_matches_free_linear_training():
    tasks = _tasks(n=6)
    P0 = models.FreeLinear(K, seed=3).P.detach()
    C, B = fs.task_moments(tasks)
    eta = 0.8 * K / float(torch.linalg.eigvalsh(C).max())
    pred = fs.quadratic_free_P(P0, tasks, eta, 30)
    free = models.FreeLinear(K, seed=3)
    _, hist = fs.train(free, tasks, 1, eta, 30)
    assert pred.P.shape == (31, K, K) and pred.losses.shape == (31,)
    assert torch.equal(pred.P[0], P0)
    assert torch.allclose(pred.P, hist.thetas.reshape(-1, K, K), rtol=0, atol=1e-12)
    assert torch.allclose(pred.losses, hist.losses, rtol=1e-10)
    assert torch.allclose(pred.P_star @ C, B, atol=1e-12)  # P_N* C_N = B_N
    assert float(pred.loss_star) <= float(pred.losses.min()) + 1e-15


def test_quadratic_free_P_bad_input_named():
    tasks = _tasks(n=2)  # N < K: C_N singular
    with pytest.raises(ValueError, match="N >= K"):
        fs.quadratic_free_P(torch.eye(K, dtype=torch.float64), tasks, 0.1, 3)
    with pytest.raises(ValueError, match=r"P_0 must be \(3, 3\)"):
        fs.quadratic_free_P(torch.eye(4, dtype=torch.float64), _tasks(n=6), 0.1, 3)


# --- ntk ---------------------------------------------------------------------------

def test_jacobian_shape_and_finite_differences():
    tasks, pc = _tasks(), _pc(kernel="rbf")
    J = ntk.jacobian(pc, tasks, L)
    theta = fs.flat_parameters(pc)
    assert J.shape == (N * K, theta.numel())
    P_of, theta0 = ntk.matrix_of_theta(pc)
    assert torch.equal(theta0, theta)
    h = 1e-6
    for j in (0, theta.numel() // 2, theta.numel() - 1):
        e = torch.zeros_like(theta)
        e[j] = h
        fd = (fs.stacked_outputs(P_of(theta + e), tasks, L) - fs.stacked_outputs(P_of(theta - e), tasks, L)) / (2 * h)
        assert torch.allclose(J[:, j], fd, rtol=1e-6, atol=1e-8)


def test_jacobian_deterministic_and_leaves_model_alone():
    tasks, pc = _tasks(), _pc()
    before = fs.flat_parameters(pc).clone()
    J1, J2 = ntk.jacobian(pc, tasks, L), ntk.jacobian(pc, tasks, L)
    assert torch.equal(J1, J2) and not J1.requires_grad
    assert torch.equal(fs.flat_parameters(pc), before)


def test_matrix_jacobian_shape():
    pc = _pc()
    Jp = ntk.matrix_jacobian(pc)
    assert Jp.shape == (K * K, fs.flat_parameters(pc).numel())


def test_ntk_matrix_symmetric_psd():
    J = ntk.jacobian(_pc(), _tasks(), L)
    T = ntk.ntk_matrix(J)
    assert T.shape == (N * K, N * K)
    assert torch.allclose(T, T.T, atol=0)
    assert float(torch.linalg.eigvalsh(T).min()) > -1e-12
    with pytest.raises(ValueError, match="J must be a matrix"):
        ntk.ntk_matrix(J[0])


def test_linearized_residuals():
    J = ntk.jacobian(_pc(), _tasks(), L)
    T = ntk.ntk_matrix(J)
    r0 = torch.ones(N * K, dtype=torch.float64)
    rs = ntk.linearized_residuals(T, r0, 0.3, 4)
    assert rs.shape == (5, N * K) and torch.equal(rs[0], r0)
    B = torch.eye(N * K, dtype=torch.float64) - 0.3 * T
    assert torch.allclose(rs[4], torch.linalg.matrix_power(B, 4) @ r0, atol=1e-13)
    assert ntk.linearized_losses(rs).shape == (5,)
    with pytest.raises(ValueError, match="Theta must be"):
        ntk.linearized_residuals(T[:-1, :-1], r0, 0.3, 2)


def test_step_size_and_grid_bad_input_named():
    T = ntk.ntk_matrix(ntk.jacobian(_pc(), _tasks(), L))
    assert math.isclose(ntk.step_size(T, 0.5) * ntk.lambda_max(T), 0.5, rel_tol=1e-14)
    with pytest.raises(ValueError, match="fraction"):
        ntk.step_size(T, 0.0)
    with pytest.raises(ValueError, match="lambda_max"):
        ntk.step_size(torch.zeros(3, 3, dtype=torch.float64), 0.5)
    assert ntk.eta_grid(1.0, 3) == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="points"):
        ntk.eta_grid(1.0, 0)


def test_ntk_run_is_exact_at_s0_and_small_for_small_eta():
    tasks, pc = _tasks(), _pc()
    J = ntk.jacobian(pc, tasks, L)
    eta = ntk.step_size(ntk.ntk_matrix(J), 0.01)
    run = ntk.ntk_run(pc, tasks, L, eta, 5, J=J)
    assert float(run.deviations[0]) == 0.0
    assert torch.equal(run.ntk_residuals[0], run.history.residuals[0])
    assert 0 < run.loss_rel_err < 1e-2 and 0 < run.residual_rel_err < 1e-2
    assert run.max_deviation(2) <= run.max_deviation()
    runs = ntk.order_runs(pc, tasks, L, [eta, eta / 2], 3)
    ratio = runs[0].max_deviation() / runs[1].max_deviation()
    assert 3 < ratio < 5, "the deviation is second order in eta"


def test_posterior_mean_mse():
    sampler = GPTaskConfig(m=4, n=16).sampler()
    P = models.Flexformer(4, seed=0, m=4).matrix().detach()
    a = ntk.posterior_mean_mse(P, sampler, 6, 5, seed=9, n_query=3)
    b = ntk.posterior_mean_mse(P, sampler, 6, 5, seed=9, n_query=3)
    assert a == b and set(a) == {"posterior_mean_mse", "exact_posterior_mse"}
    assert all(v > 0 and math.isfinite(v) for v in a.values())
    with pytest.raises(ValueError, match="n_tasks"):
        ntk.posterior_mean_mse(P, sampler, 6, 0, seed=9)
