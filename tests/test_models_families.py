"""The GP/KRR and PDE decoder task families (models.gp.GPPrompts, models.pde.PDEPrompts), their
trainer configs, the batched Galerkin operator / weak form / encoder, and the checkpoint lock."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
import torch

from models import gp as gp_mod
from models import pde as pde_mod
from models.checkpoints import load_checkpoint, save_checkpoint
from models.train import TrainConfig, checkpoint_path, load_or_train, train
from properties.strategies import CHECKPOINT_FAMILIES


def _solves(t) -> float:
    r = t.d - (t.H @ t.xstar.unsqueeze(-1)).squeeze(-1)
    return float(r.abs().max() / t.d.abs().max())


# --- GP posterior-latent tasks ------------------------------------------------------------

@pytest.mark.parametrize("n", gp_mod.PROMPT_SIZES)
def test_gp_tasks_are_the_normalised_posterior_system(n):
    cfg = gp_mod.GPTaskConfig(n=n)
    t = cfg.sampler().sample(16, 3)
    assert t.H.shape == (16, 4, 4) and t.d.shape == (16, 4) and t.aux["z_true"].shape == (16, 4)
    assert torch.equal(t.H, t.H.mT), "H must be exactly symmetric"
    assert torch.linalg.eigvalsh(t.H).min() > 0
    assert _solves(t) < 1e-13
    # every task rebuilt from its prompt with the GP module: H = (s^2/n) A, x* = z_post of eq 8
    x, y, _ = cfg.sampler().prompts(16, 3)
    gp = gp_mod.FiniteRankGP(4, cfg.sigma)
    for i in range(16):
        A, dA = gp.primal_system(gp.features(x[i]), y[i])
        c = cfg.sigma**2 / n
        assert torch.allclose(t.H[i], c * A, rtol=1e-15, atol=0) and torch.allclose(t.d[i], c * dA, rtol=1e-14)
        z_post = gp.primal_posterior(x[i], y[i], x[i][:2])["z_post"]
        assert float((t.xstar[i] - z_post).norm() / z_post.norm()) < 1e-12


def test_gp_tasks_deterministic_and_backend_consistent():
    cfg = gp_mod.GPTaskConfig(n=16)
    a, b, c = cfg.sampler().sample(8, 1), cfg.sampler().sample(8, 1), cfg.sampler().sample(8, 2)
    assert torch.equal(a.H, b.H) and torch.equal(a.xstar, b.xstar) and not torch.equal(a.H, c.H)
    a32 = cfg.sampler(dtype=torch.float32).sample(8, 1)
    assert a32.H.dtype == torch.float32
    # the same prompts: float32 differs from float64 only by rounding of H (condition <= ~1e2)
    assert float((a32.H.double() - a.H).abs().max()) < 1e-5


def test_gp_task_config_rejects_bad_input():
    for kw in ({"m": 0}, {"n": 0}, {"sigma": 0.0}, {"sigma": math.inf}):
        with pytest.raises(ValueError):
            gp_mod.GPTaskConfig(**kw)
    with pytest.raises(ValueError, match="N must be"):
        gp_mod.GPTaskConfig().sampler().sample(0, 0)


def test_gp_features_batch_like_single():
    gp = gp_mod.FiniteRankGP(5, 0.1)
    x = torch.rand(3, 7, dtype=torch.float64)
    batched = gp.features(x)
    assert batched.shape == (3, 7, 5)
    for i in range(3):
        assert torch.equal(batched[i], gp.features(x[i]))


# --- PDE encoded query tasks ----------------------------------------------------------------

@pytest.mark.parametrize("M", pde_mod.PROMPT_SIZES)
def test_pde_tasks_encode_then_pose_the_query(M):
    cfg = pde_mod.PDETaskConfig(M=M)
    t = cfg.sampler().sample(8, 5)
    n = pde_mod.N_NODES
    assert t.H.shape == (8, n, n) and set(t.aux) == {"z", "z_enc", "u_true"}
    assert torch.equal(t.H, t.H.mT) and _solves(t) < 1e-12
    fam = pde_mod.GalerkinFamily()
    a = pde_mod.operator_scale()
    for i in range(8):
        # H is the encoded operator, scaled; u_true solves the true operator with the same load
        assert torch.allclose(t.H[i] * a, fam.operator(t.aux["z_enc"][i]), rtol=0, atol=1e-12)
        f = t.d[i] * a
        r = fam.operator(t.aux["z"][i]) @ t.aux["u_true"][i] - f
        assert float(r.abs().max()) < 1e-14
    assert float(((t.aux["z_enc"] - t.aux["z"]) ** 2).mean()) < 1e-3  # the encoder recovers z


def test_pde_batched_encoder_equals_per_prompt():
    """The batched operator / solve / weak form / encoder of the sampler equal GalerkinFamily.prompt
    and encode applied one prompt at a time."""
    fam = pde_mod.GalerkinFamily()
    z = pde_mod.sample_z(3, 2)
    V = fam._t(pde_mod.test_functions(8))
    F = torch.stack([fam._t(pde_mod.gp_loads(5, s)) for s in (11, 12)])
    U = fam.solve(z, F)
    G, b = fam.weak_form(U, F, V)
    ze = pde_mod.encode(G, b, 1e-4)
    for i in range(2):
        Ui = fam.solve(z[i], F[i])
        Gi, bi = fam.weak_form(Ui, F[i], V)
        def close(a, b, rel):  # norm-wise: entries of G cancel down to ~1e-6 of its norm
            return float((a - b).norm()) <= rel * float(b.norm())

        assert close(U[i], Ui, 1e-14) and close(G[i], Gi, 1e-13) and close(b[i], bi, 1e-13)
        assert close(ze[i], pde_mod.encode(Gi, bi, 1e-4), 1e-10)
        assert torch.equal(fam.operator(z)[i], fam.operator(z[i]))


def test_pde_query_metrics_need_encoded_tasks():
    t = gp_mod.GPTaskConfig().sampler().sample(4, 0)
    dec = TrainConfig("free_linear", task=gp_mod.GPTaskConfig(), steps=0)
    from models.train import build_decoder

    with pytest.raises(ValueError, match="PDEPrompts"):
        pde_mod.query_metrics(build_decoder(dec), t, 1.0, 0.05)


def test_pde_task_config_rejects_bad_input():
    for kw in ({"M": 0}, {"q": 0}, {"q": 99}, {"lam_z": 0.0}, {"lam_z": -1.0}):
        with pytest.raises(ValueError):
            pde_mod.PDETaskConfig(**kw)


def test_cholesky_failure_is_reported_for_a_batch():
    fam = pde_mod.GalerkinFamily()
    S = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    S[1, 2, 2] = -1.0
    with pytest.raises(torch.linalg.LinAlgError, match="Cholesky failed"):
        fam._chol(S)


# --- trainer configs and checkpoints of the families -----------------------------------------

@pytest.mark.parametrize("task", [gp_mod.GPTaskConfig(n=16), pde_mod.PDETaskConfig(M=4)])
def test_family_config_round_trip_and_checkpoint(task, tmp_path):
    cfg = TrainConfig("flexformer", task=task, L=3, steps=3, batch=8)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["task"]["family"] == task.family and TrainConfig.from_dict(d) == cfg
    assert cfg.key() != TrainConfig("flexformer", L=3, steps=3, batch=8).key()
    dec, hist = train(cfg)
    assert dec.precond.K == task.dim and len(hist) == 3 and all(np.isfinite(h["risk"]) for h in hist)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, dec, cfg.to_dict())
    dec2, stored = load_checkpoint(path, expect_config=cfg.to_dict())
    assert TrainConfig.from_dict(stored) == cfg
    assert all(torch.equal(a, b) for a, b in zip(dec.state_dict().values(), dec2.state_dict().values()))


def test_unknown_task_family_is_an_error():
    d = TrainConfig("free_linear").to_dict()
    d["task"]["family"] = "heat"
    with pytest.raises(ValueError, match="unknown task family 'heat'"):
        TrainConfig.from_dict(d)


def test_checkpoint_families_of_the_strategies_match_the_models():
    assert CHECKPOINT_FAMILIES["gp"] == gp_mod.PROMPT_SIZES
    assert CHECKPOINT_FAMILIES["pde"] == pde_mod.PROMPT_SIZES


def test_concurrent_load_or_train_trains_once(tmp_path, monkeypatch):
    """Two workers asking for one config: the second waits on the lock and loads the first's file."""
    import models.train as train_mod

    calls = []
    real = train_mod.train

    def counting(cfg, progress=None, before_step=None):
        calls.append(cfg)
        time.sleep(0.2)
        return real(cfg, progress, before_step)

    monkeypatch.setattr(train_mod, "train", counting)
    cfg = TrainConfig("diagonal", task=gp_mod.GPTaskConfig(), L=2, steps=2, batch=4)
    out = []
    threads = [threading.Thread(target=lambda: out.append(load_or_train(cfg, tmp_path))) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(calls) == 1 and len(out) == 2 and checkpoint_path(cfg, tmp_path).exists()
    assert torch.equal(out[0].precond.p, out[1].precond.p)


@pytest.mark.parametrize("family", ["gp", "pde"])
@pytest.mark.parametrize("cls", ["free_linear", "diagonal", "flexformer"])
def test_eq24_finite_set_trainer_on_the_family_tasks(family, cls):
    """The fixed-set eq-24 trainer (models.finite_set, adjoint gradient of models.adjoint) runs for
    every class with a global P on both families' tasks: its gradient is autograd's, and small steps
    decrease L_N.  (The softmax map has no global P, so eqs 20-24 do not apply to it; it trains by
    autograd through the unrolled map in models.train.)"""
    from models import finite_set
    from models.preconditioners import build_preconditioner

    task = gp_mod.GPTaskConfig(n=16) if family == "gp" else pde_mod.PDETaskConfig(M=4)
    tasks = task.sampler().sample(6, 2)
    pc = build_preconditioner(cls, task.dim, seed=1)
    _, g_adj = finite_set.adjoint_gradient(pc, tasks, 4)
    g_auto = finite_set.autograd_gradient(pc, tasks, 4)
    assert float((g_adj - g_auto).norm()) <= 1e-12 * float(g_auto.norm())
    eta = 0.1 / float(g_auto.norm())  # a step of length 0.1 in theta: first-order descent
    _, hist = finite_set.train(pc, tasks, 4, eta, 5)
    assert bool((hist.losses[1:] < hist.losses[:-1]).all()), hist.losses
