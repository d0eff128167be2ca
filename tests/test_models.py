"""Tests of the systems under test in `models` (fast: CPU, K = 8)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import models
from models import (PRECONDITIONERS, CheckpointError, FrozenLinear, LeastSquaresPrompts,
                    RichardsonDecoder, TaskConfig, TrainConfig, build_decoder, build_preconditioner,
                    checkpoint_metrics, depth_risk, eb_upper, load_checkpoint, load_or_train,
                    oracle_P, save_checkpoint, spd_system)
from models import checkpoints as ckpt_mod
from models import eb as eb_mod
from models import richardson
from models import train as train_mod
from models.train import train

DTYPES = [torch.float64, torch.float32]
CLASSES = sorted(PRECONDITIONERS)
LINEAR = [c for c in CLASSES if PRECONDITIONERS[c].is_linear]
EPS = {torch.float64: torch.finfo(torch.float64).eps, torch.float32: torch.finfo(torch.float32).eps}
HELDOUT_SEED = 987_654_321


def _tasks(n=16, dtype=torch.float64, K=8, seed=1):
    return LeastSquaresPrompts(TaskConfig(K=K), "cpu", dtype).sample(n, seed)


# --- package boundaries -----------------------------------------------------------

def test_models_never_imports_properties_or_certify():
    for f in Path(models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("properties", "certify"), f"{f.name} imports {name}"


# --- tasks ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_tasks_shapes_and_exact_solution(dtype):
    t = _tasks(32, dtype)
    assert t.H.shape == (32, 8, 8) and t.d.shape == (32, 8) and t.xstar.shape == (32, 8)
    assert len(t) == 32 and all(x.dtype == dtype for x in (t.H, t.d, t.xstar))
    assert torch.equal(t.H, t.H.transpose(-1, -2))
    assert torch.linalg.eigvalsh(t.H.double()).min() > 0
    # x* is H^{-1} d of the SUT's own (rounded) H, d up to one rounding of x*:
    # ||H x* - d|| <= ||H|| ||x*|| u (+ float64 solve error, negligible).
    res = (t.H.double() @ t.xstar.double().unsqueeze(-1)).squeeze(-1) - t.d.double()
    bound = 4 * EPS[dtype] * torch.linalg.matrix_norm(t.H.double(), 2) * t.xstar.double().norm(dim=-1)
    assert (res.norm(dim=-1) <= bound + 1e-300).all()


def test_tasks_float32_are_float64_tasks_rounded():
    t64, t32 = _tasks(8, torch.float64), _tasks(8, torch.float32)
    assert torch.equal(t64.H.float(), t32.H) and torch.equal(t64.d.float(), t32.d)


def test_population_H_and_design_conditioning():
    p = LeastSquaresPrompts(TaskConfig(K=8, kappa=20.0), "cpu", torch.float64)
    eig = torch.linalg.eigvalsh(p.Sigma_x)
    assert math.isclose(float(eig.max() / eig.min()), 20.0, rel_tol=1e-12)
    assert torch.allclose(p.population_H(), p.Sigma_x + 1e-2 * torch.eye(8, dtype=torch.float64), atol=0, rtol=0)
    # Monte Carlo mean of H approaches the population H (loose, 4000 tasks)
    Hbar = p.sample(4000, 3).H.mean(0)
    assert torch.linalg.matrix_norm(Hbar - p.population_H(), 2) < 0.05


@pytest.mark.parametrize("K", [2, 3, 8, 17, 64])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 1e4])
def test_spd_system_condition_number(K, kappa):
    H, d = spd_system(K, kappa, seed=5, device="cpu", dtype=torch.float64)
    assert H.shape == (K, K) and d.shape == (K,)
    assert torch.equal(H, H.T)
    eig = torch.linalg.eigvalsh(H)
    assert math.isclose(float(eig.max() / eig.min()), kappa, rel_tol=K * 1e-12 * kappa)
    H2, d2 = spd_system(K, kappa, seed=5, device="cpu", dtype=torch.float64)
    assert torch.equal(H, H2) and torch.equal(d, d2)


# --- preconditioners and decoder --------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CLASSES)
def test_shapes_and_dtypes(name, dtype):
    t = _tasks(5, dtype)
    pc = build_preconditioner(name, 8, device="cpu", dtype=dtype, seed=0)
    assert all(p.dtype == dtype for p in pc.parameters())
    z = torch.zeros_like(t.d)
    delta = pc.update(z, t.H, t.d)
    assert delta.shape == (5, 8) and delta.dtype == dtype
    if pc.is_linear:
        P = pc.frozen_matrix()
        assert P.shape == (8, 8)
        assert torch.allclose(delta, t.d @ P.T, rtol=0, atol=0)
    else:
        P = pc.frozen_matrix(z, t.H, t.d)
        assert P.shape == (5, 8, 8)
    assert P.dtype == dtype and not P.requires_grad
    dec = RichardsonDecoder(pc, L=4)
    xs = dec(t.H, t.d, trajectory=True)
    assert len(xs) == 5 and torch.equal(xs[0], torch.zeros_like(t.d))
    assert torch.equal(xs[-1], dec(t.H, t.d)) and xs[-1].dtype == dtype


@pytest.mark.parametrize("name", LINEAR)
def test_linear_classes_satisfy_richardson_identity(name):
    """e_L = (I - P H)^L e_0 (float64; error budget ~ L * K * u * growth)."""
    t = _tasks(8)
    pc = build_preconditioner(name, 8, device="cpu", dtype=torch.float64, seed=2)
    L = 5
    x0 = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xL = RichardsonDecoder(pc, L)(t.H, t.d, x0=x0)
    T = torch.eye(8, dtype=torch.float64) - pc.frozen_matrix() @ t.H
    eL = (torch.linalg.matrix_power(T, L) @ (x0 - t.xstar).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(xL - t.xstar, eL, rtol=0, atol=1e-12)


def test_apply_is_the_live_hook_for_mutants(monkeypatch):
    t = _tasks(4)
    pc = build_preconditioner("free_linear", 8, device="cpu", dtype=torch.float64, seed=0)
    good = pc.update(torch.zeros_like(t.d), t.H, t.d)
    monkeypatch.setattr(richardson, "apply", lambda P, r: r @ P)  # planted transposed P
    assert not torch.allclose(good, pc.update(torch.zeros_like(t.d), t.H, t.d))


def test_decoder_iteration_count_is_L():
    t = _tasks(4)
    calls = []
    pc = build_preconditioner("diagonal", 8, device="cpu", dtype=torch.float64, seed=0)
    orig = pc.update
    pc.update = lambda z, H, d: calls.append(1) or orig(z, H, d)
    RichardsonDecoder(pc, 7)(t.H, t.d)
    assert len(calls) == 7


def test_flexformer_attention_rows_and_hooks(monkeypatch):
    for kernel in ("exp", "rbf"):
        pc = build_preconditioner("flexformer", 8, device="cpu", dtype=torch.float64, seed=0, kernel=kernel)
        A = pc.attention_matrix()
        assert (A > 0).all() and torch.allclose(A.sum(-1), torch.ones(8, dtype=torch.float64))
        ref = torch.diag(pc.a) @ A @ torch.diag(pc.v) + torch.diag(pc.s)
        assert torch.allclose(pc.matrix(), ref, rtol=0, atol=1e-15)
    monkeypatch.setattr(type(pc), "attention_matrix", lambda self: torch.zeros(8, 8, dtype=torch.float64))
    assert torch.equal(pc.matrix(), torch.diag(pc.s))


def test_flexformer_qk_gauge_invariance():
    """W_Q -> A W_Q, W_K -> A^{-T} W_K leaves q.k and so P_theta unchanged (exp kernel)."""
    pc = build_preconditioner("flexformer", 8, device="cpu", dtype=torch.float64, seed=4)
    P = pc.matrix().detach().clone()
    A = torch.randn(16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 4 * torch.eye(16)
    with torch.no_grad():
        pc.W_Q.copy_(A @ pc.W_Q)
        pc.W_K.copy_(torch.linalg.inv(A).T @ pc.W_K)
    assert torch.allclose(pc.matrix(), P, rtol=0, atol=1e-12)


def _softmax_point(seed=0, n=3):
    t = _tasks(n, seed=seed)
    pc = build_preconditioner("softmax", 8, device="cpu", dtype=torch.float64, seed=seed)
    z = 0.3 * torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return pc, z, t


def test_softmax_jacobian_matches_finite_differences():
    """Central differences: error <= h^2 |Delta'''| / 6 + u |Delta| / h; h = 1e-5 -> ~1e-10."""
    pc, z, t = _softmax_point()
    J = pc.frozen_matrix(z, t.H, t.d)
    h = 1e-5
    eye = torch.eye(8, dtype=torch.float64)
    with torch.no_grad():
        cols = [(pc.update(z, t.H, t.d + h * eye[k]) - pc.update(z, t.H, t.d - h * eye[k])) / (2 * h)
                for k in range(8)]
    J_fd = torch.stack(cols, dim=-1)  # perturbing d perturbs r = d - H z only
    assert torch.allclose(J, J_fd, rtol=0, atol=1e-8)
    # unbatched call agrees with the batched one
    assert torch.allclose(pc.frozen_matrix(z[0], t.H[0], t.d[0]), J[0], rtol=0, atol=1e-15)


def test_softmax_update_is_genuinely_nonlinear():
    pc, z, t = _softmax_point()
    r = richardson.residual(z, t.H, t.d)
    with torch.no_grad():
        hd = torch.diagonal(t.H, dim1=-2, dim2=-1)
        gap = pc.delta(2 * r, z, hd) - 2 * pc.delta(r, z, hd)
    assert gap.norm() > 1e-3 * pc.delta(r, z, hd).norm()


def test_frozen_linear_with_softmax_jacobian_reproduces_linear_step():
    pc, z, t = _softmax_point()
    J = pc.frozen_matrix(z, t.H, t.d)
    lin = FrozenLinear(J)
    assert lin.is_linear and torch.equal(lin.frozen_matrix(), J)
    r = richardson.residual(z, t.H, t.d)
    assert torch.allclose(lin.update(z, t.H, t.d), torch.einsum("bij,bj->bi", J, r), rtol=0, atol=1e-15)
    # first order: Delta(d + e u) - Delta(d) = J e u + O(e^2); the remainder shrinks 4x per halving
    u = torch.randn(3, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        base = pc.update(z, t.H, t.d)
        rem = [(pc.update(z, t.H, t.d + e * u) - base - lin.update(torch.zeros_like(z), t.H, e * u)).norm()
               for e in (1e-2, 5e-3)]
    assert 3.0 < float(rem[0] / rem[1]) < 5.0
    # the decoder in Jacobian form satisfies e_L = (I - J H)^L e_0
    L = 4
    xL = RichardsonDecoder(lin, L)(t.H, t.d, x0=z)
    T = torch.eye(8, dtype=torch.float64) - J @ t.H
    eL = (torch.linalg.matrix_power(T, L) @ (z - t.xstar).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(xL - t.xstar, eL, rtol=0, atol=1e-12)


# --- training ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    """Every class trained at the default config (K = 8, L = 6, 300 steps)."""
    out = {}
    for name in CLASSES:
        cfg = TrainConfig(name)
        out[name] = (cfg, *train(cfg))
    return out


@pytest.mark.parametrize("name", CLASSES)
def test_training_improves_heldout_risk(trained, name):
    cfg, dec, history = trained[name]
    held = LeastSquaresPrompts(cfg.task, "cpu", torch.float64).sample(1000, HELDOUT_SEED)
    with torch.no_grad():
        before = float(depth_risk(build_decoder(cfg), held))
        after = float(depth_risk(dec, held))
    assert len(history) == cfg.steps and history[0]["step"] == 0
    assert after < 0.6 * before, (name, before, after)


def test_training_is_deterministic():
    cfg = TrainConfig("flexformer", steps=5)
    (d1, h1), (d2, h2) = train(cfg), train(cfg)
    assert h1 == h2
    for (k, a), (_, b) in zip(d1.state_dict().items(), d2.state_dict().items()):
        assert torch.equal(a, b), k
    d3, _ = train(TrainConfig("flexformer", steps=5, seed=1))
    assert not torch.equal(d1.precond.W_Q, d3.precond.W_Q)


def test_sampling_and_init_are_deterministic():
    p = LeastSquaresPrompts(TaskConfig(), "cpu", torch.float64)
    a, b, c = p.sample(10, 7), p.sample(10, 7), p.sample(10, 8)
    assert torch.equal(a.H, b.H) and torch.equal(a.xstar, b.xstar) and not torch.equal(a.H, c.H)
    for name in CLASSES:
        s1 = build_preconditioner(name, 8, device="cpu", dtype=torch.float64, seed=3).state_dict()
        s2 = build_preconditioner(name, 8, device="cpu", dtype=torch.float64, seed=3).state_dict()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_train_float32_runs():
    dec, hist = train(TrainConfig("softmax", steps=3, dtype="float32"))
    assert all(p.dtype == torch.float32 for p in dec.parameters()) and len(hist) == 3


def test_train_config_key_and_dict_round_trip():
    cfg = TrainConfig("flexformer", options=(("kernel", "rbf"),))
    assert cfg.key() == TrainConfig("flexformer", options=[("kernel", "rbf")]).key()
    assert cfg.key() != TrainConfig("flexformer").key()
    assert cfg.key() != TrainConfig("flexformer", options=(("kernel", "rbf"),), L=5).key()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert build_decoder(cfg).precond.kernel == "rbf"


# --- checkpoints ------------------------------------------------------------------

@pytest.mark.parametrize("name", CLASSES)
def test_checkpoint_round_trip_bit_exact(trained, tmp_path, name):
    cfg, dec, _ = trained[name]
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, dec, cfg.to_dict())
    dec2, config = load_checkpoint(path, "cpu", torch.float64, expect_config=cfg.to_dict())
    assert config == cfg.to_dict() and dec2.L == dec.L and type(dec2.precond) is type(dec.precond)
    s1, s2 = dec.state_dict(), dec2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    t = _tasks(6)
    with torch.no_grad():
        assert torch.equal(dec(t.H, t.d), dec2(t.H, t.d))
    dec32, _ = load_checkpoint(path, "cpu", torch.float32)
    assert all(p.dtype == torch.float32 for p in dec32.parameters())


def test_frozen_linear_checkpoint_round_trip(tmp_path):
    pc, z, t = _softmax_point()
    dec = RichardsonDecoder(FrozenLinear(pc.frozen_matrix(z, t.H, t.d)), 3)
    save_checkpoint(tmp_path / "f.safetensors", dec, {"what": "jacobian"})
    dec2, cfg = load_checkpoint(tmp_path / "f.safetensors", "cpu", torch.float64)
    assert cfg == {"what": "jacobian"} and torch.equal(dec2.precond.P, dec.precond.P)


@pytest.fixture
def saved(trained, tmp_path):
    cfg, dec, _ = trained["flexformer"]
    path = tmp_path / "flex.safetensors"
    save_checkpoint(path, dec, cfg.to_dict())
    return cfg, dec, path


def _raises_naming(path, **kw):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "cpu", torch.float64, **kw)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_and_garbage_files_raise(tmp_path):
    _raises_naming(tmp_path / "nope.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a safetensors file" * 10)
    _raises_naming(bad)
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"x": torch.ones(2)}, pickled)
    _raises_naming(pickled)


def test_truncated_checkpoint_raises(saved):
    _, _, path = saved
    data = path.read_bytes()
    for cut in (len(data) - 8, len(data) // 2, 20, 4):
        path.write_bytes(data[:cut])
        _raises_naming(path)


def test_corrupt_data_byte_raises(saved):
    _, _, path = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    assert "SHA-256" in _raises_naming(path)


def _rewrite(path, mutate):
    """Rewrite a checkpoint with mutated tensors and a recomputed, consistent digest."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    mutate(tensors)
    meta["sha256"] = ckpt_mod.tensor_digest(tensors)
    save_file(tensors, str(path), metadata=meta)


def test_missing_tensor_raises(saved):
    _, _, path = saved
    _rewrite(path, lambda t: t.pop("precond.W_K"))
    assert "precond.W_K" in _raises_naming(path)


def test_wrong_shape_raises(saved):
    _, _, path = saved
    _rewrite(path, lambda t: t.__setitem__("precond.E", torch.zeros(3, 16, dtype=torch.float64)))
    assert "shape" in _raises_naming(path)


def test_non_finite_tensor_raises(saved):
    _, _, path = saved
    _rewrite(path, lambda t: t["precond.s"].__setitem__(0, float("nan")))
    assert "non-finite" in _raises_naming(path)


def test_config_mismatch_raises(saved, tmp_path, monkeypatch):
    cfg, dec, path = saved
    _raises_naming(path, expect_config=TrainConfig("flexformer", L=5).to_dict())
    # load_or_train: a cached file holding another config is an error, never a retrain
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / f"{cfg.key()}.safetensors"
    save_checkpoint(target, dec, TrainConfig("flexformer", seed=99).to_dict())
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("silent retrain"))
    with pytest.raises(CheckpointError, match=str(target).replace(".", r"\.")):
        load_or_train(cfg, cache)


def test_load_or_train_caches(tmp_path, monkeypatch):
    cfg = TrainConfig("diagonal", steps=4)
    dec = load_or_train(cfg, tmp_path)
    assert (tmp_path / f"{cfg.key()}.safetensors").is_file()
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("retrained"))
    dec2 = load_or_train(cfg, tmp_path)
    assert torch.equal(dec.precond.p, dec2.precond.p)


# --- empirical Bernstein ----------------------------------------------------------

def test_eb_upper_formula_and_live_constants(monkeypatch):
    x = np.array([0.1, 0.5, 2.0, 0.3, 0.0, 1.2])
    c, delta = 1.0, 0.05
    xc = np.clip(x, 0, c)
    lg = math.log(2 / delta)
    ref = xc.mean() + math.sqrt(2 * xc.var(ddof=1) * lg / 6) + 7 * c * lg / (3 * 5)
    assert math.isclose(eb_upper(x, c, delta), ref, rel_tol=1e-14)
    monkeypatch.setattr(eb_mod, "BERNSTEIN_CONSTANT", 1.0)
    assert eb_upper(x, c, delta) < ref
    monkeypatch.setattr(eb_mod, "BERNSTEIN_CONSTANT", 7 / 3)
    monkeypatch.setattr(eb_mod, "VARIANCE_DDOF", 0)
    assert eb_upper(x, c, delta) < ref


@pytest.mark.parametrize("losses, c, delta", [
    ([0.1], 1.0, 0.05), ([], 1.0, 0.05), ([0.1, 0.2], 0.0, 0.05), ([0.1, 0.2], -1.0, 0.05),
    ([0.1, 0.2], float("inf"), 0.05), ([0.1, 0.2], 1.0, 0.0), ([0.1, 0.2], 1.0, 1.0),
    ([0.1, float("nan")], 1.0, 0.05), ([0.1, float("inf")], 1.0, 0.05),
])
def test_eb_upper_rejects_bad_input(losses, c, delta):
    with pytest.raises(ValueError):
        eb_upper(losses, c, delta)


# --- metrics ----------------------------------------------------------------------

@pytest.mark.parametrize("name", CLASSES)
def test_checkpoint_metrics(trained, name):
    cfg, dec, _ = trained[name]
    prompts = LeastSquaresPrompts(cfg.task, "cpu", torch.float64)
    held = prompts.sample(400, HELDOUT_SEED)
    Pstar = oracle_P(prompts, 2000, seed=HELDOUT_SEED + 1)
    m = checkpoint_metrics(dec, held, c=1.0, delta=0.05, oracle_P=Pstar)
    assert m["n"] == 400 and m["heldout_risk"] > 0 and m["eb_upper"] > min(m["heldout_risk"], 1.0)
    assert m["stable_rank"] >= 1.0 - 1e-12 and m["mean_contraction"] > 0
    if PRECONDITIONERS[name].is_linear:
        assert m["violation_rate"] == 0.0 and m["error_bound_ratio"] <= 1.0
        assert m["rel_dist_oracle"] is not None and m["rel_dist_oracle"] > 0
    else:
        assert m["rel_dist_oracle"] is None
    json.dumps(m)


def test_oracle_is_the_depth1_least_squares_solution():
    prompts = LeastSquaresPrompts(TaskConfig(), "cpu", torch.float64)
    Pstar = oracle_P(prompts, 3000, seed=11)
    t = prompts.sample(3000, 11)
    # normal equations of min_P sum ||P d - x*||^2: (P D^T - X^T) D = 0
    grad = (t.d @ Pstar.T - t.xstar).T @ t.d / 3000
    assert torch.linalg.matrix_norm(grad) < 1e-10
