"""Tests of the EP char-LM SUT (models.ep.charlm_data, models.ep.charlm; claim ep.training):
data determinism and exact corpus statistics, shapes, the analytic cost gradient against
autograd (real and holomorphic), the fast estimator paths against the core's, checkpoints
(round trip, corrupt and mismatched files), the private-training cache rule and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from certify import sut, sut_ep
from certify import test_ep_training as cert
from certify.backend import Backend
from models.checkpoints import CheckpointError
from models.ep import charlm as C
from models.ep import charlm_data as D
from models.ep import estimators, references, solvers
from properties.tolerances import gamma

U64 = 2.0**-53
CFG = C.TwinConfig()
# a tiny run for the checkpoint and twin tests (a few hundred milliseconds)
TINY = dataclasses.replace(CFG, model=C.ModelConfig(d=8, heads=2, mlp=2, T=8), steps=3, T1=4,
                           nudge=C.NudgeConfig(T2=3), log_every=1, n_val=8, batch=4)


def _block(cfg: C.TwinConfig = CFG) -> C.CharLMBlock:
    return C.build_block(cfg)


def _batch(cfg: C.TwinConfig = CFG, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return C.train_batch(cfg, step)


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
def test_corpus_is_deterministic_and_seeded():
    a = D._text(D.CorpusConfig(seed=0))
    D._text.cache_clear()
    D.grammar.cache_clear()
    b = D._text(D.CorpusConfig(seed=0))
    assert a == b and len(a) == 66_000
    assert D._text(D.CorpusConfig(seed=1)) != a
    c = D.Corpus(D.CorpusConfig())
    x1, y1 = c.batch(4, 16, seed=5)
    x2, y2 = c.batch(4, 16, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (4, 16) and x1.dtype == torch.int64
    assert not torch.equal(c.batch(4, 16, seed=6)[0], x1)
    assert torch.equal(x1[:, 1:], y1[:, :-1]), "targets are the inputs shifted by one"
    v1, v2 = c.val_windows(8, 16), c.val_windows(8, 16)
    assert torch.equal(v1[0], v2[0]) and torch.equal(v1[1], v2[1])


def test_corpus_text_is_words_of_the_lexicon():
    c = D.Corpus(D.CorpusConfig())
    words = set(w.strip() for w in D.grammar(0).words)
    assert set(c.train_text.split()[:-1]) <= words  # the last word may be cut at n_train
    assert D.decode(D.encode(c.val_text[:200])) == c.val_text[:200]


def test_corpus_law_is_exact():
    """pi P = pi, M stochastic with its stationary law, H1 >= H2 >= h > 0, and the Bayes-optimal
    window CE below the measured unigram CE (exact algebra on float64 matrices: residuals within a
    few ulps times the state count)."""
    g = D.grammar(0)
    n = len(g.words)
    assert np.allclose(g.P.sum(1), 1.0, atol=n * U64, rtol=0)
    pi = g.pi
    assert np.abs(pi @ g.P - pi).max() <= 8 * n * U64
    ch = D.HiddenChain(g)
    N = len(ch.states)
    assert np.abs(ch.M.sum(1) - 1).max() <= N * U64
    assert np.abs(ch.stationary @ ch.M - ch.stationary).max() <= 8 * N * U64
    st = ch.stats()
    assert st.unigram >= st.bigram >= st.rate > 0
    c = D.Corpus(D.CorpusConfig())
    assert c.bayes_window_ce(64, 16) < c.unigram_window_ce(64, 16)


def test_corpus_bad_input():
    with pytest.raises(ValueError, match="alphabet"):
        D.encode("Hello")
    with pytest.raises(ValueError, match="indices"):
        D.decode([0, 99])
    with pytest.raises(ValueError, match="n_train"):
        D.CorpusConfig(n_train=10)
    c = D.Corpus(D.CorpusConfig())
    with pytest.raises(ValueError, match="integers >= 1"):
        c.batch(0, 16, seed=0)
    with pytest.raises(ValueError, match="longer"):
        c.batch(2, 10**6, seed=0)
    with pytest.raises(ValueError, match="do not fit"):
        c.val_windows(10**5, 16)


# --------------------------------------------------------------------------- #
# the block
# --------------------------------------------------------------------------- #
def test_shapes_and_param_groups():
    blk = _block()
    ids, y = _batch()
    z = torch.randn(ids.shape[0], blk.T, blk.d, dtype=torch.float64)
    assert blk.force(z, ids).shape == z.shape
    assert blk.readout(z).shape == (ids.shape[0], blk.T, len(D.ALPHABET))
    assert blk.cost(z, y).shape == (ids.shape[0],)
    names = [n for names in blk.param_groups().values() for n in names]
    assert sorted(names) == sorted(n for n, _ in blk.named_parameters()), "every parameter in one group"
    sl = estimators.group_slices(blk)
    assert sum(s.stop - s.start for ss in sl.values() for s in ss) == sum(p.numel() for p in blk.parameters())


def test_injection_enters_the_force():
    """force(z, ids) is ThickBlock's force at x = E[ids] + P."""
    blk = _block()
    ids, _ = _batch()
    z = torch.randn(ids.shape[0], blk.T, blk.d, dtype=torch.float64)
    x = blk.tok_emb[ids] + blk.pos_emb
    assert torch.equal(blk.force(z, ids), blk.force(z, x))


def _cost_grad_tolerance(blk: C.CharLMBlock, z: torch.Tensor, y: torch.Tensor, u: float) -> torch.Tensor:
    # first-order bound: r = softmax - onehot has |fl(r) - r| <= gamma_{V+4} (p + onehot) componentwise
    # (exp, a V-term sum, a division), then r W^T / T an inner product of length V:
    # |err| <= (gamma_{V+4} + gamma_V) (|r| + 2 p) |W|^T / T, doubled for the two computations compared
    V = blk.vocab
    p = torch.softmax(blk.readout(z).real, -1)
    r = (p - torch.nn.functional.one_hot(y, V)).abs()
    return 2 * (gamma(V + 4, u) + gamma(V, u)) * ((r + 2 * p) @ blk.W_out.abs().mT) / blk.T


def test_cost_grad_z_matches_autograd():
    blk = _block()
    ids, y = _batch()
    z = C.relax(blk, ids, CFG.eps, CFG.T1).z.requires_grad_(True)
    (auto,) = torch.autograd.grad(blk.cost(z, y).sum(), z)
    diff = (blk.cost_grad_z(z, y) - auto).abs()
    assert (diff <= _cost_grad_tolerance(blk, z.detach(), y, U64)).all(), float(diff.max())


def test_cost_grad_z_is_the_holomorphic_derivative():
    """For complex z the cost is holomorphic: its jvp along v is sum(dC/dz * v) (no conjugate)."""
    blk = _block()
    ids, y = _batch()
    ids, y = ids[:2], y[:2]
    gen = torch.Generator().manual_seed(3)
    z0 = C.relax(blk, ids, CFG.eps, CFG.T1).z
    z = torch.complex(z0, 0.01 * torch.randn(z0.shape, generator=gen, dtype=torch.float64))
    v = torch.complex(torch.randn(z0.shape, generator=gen, dtype=torch.float64),
                      torch.randn(z0.shape, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        _, jv = torch.func.jvp(lambda w: blk.cost(w, y), (z,), (v,))
    pred = (blk.cost_grad_z(z, y) * v).sum((1, 2))
    # per sample: an inner product of T d terms of the derivative's error bound times |v|
    tol = (_cost_grad_tolerance(blk, z, y, U64) * v.abs()).sum((1, 2)) + gamma(blk.T * blk.d, U64) * (
        blk.cost_grad_z(z, y).abs() * v.abs()).sum((1, 2))
    assert ((jv - pred).abs() <= 2 * tol).all()


def test_fast_antisymmetric_product_matches_the_dense_one():
    """charlm.antisymmetric_product (double backward) against (J - J^T) v with J the core's dense
    Jacobian (solvers.jacobian, forward mode), tiny state; real and complex v."""
    cfg = dataclasses.replace(CFG, model=C.ModelConfig(d=8, heads=2, mlp=2, T=4), batch=1)
    blk = _block(cfg)
    ids, _ = _batch(cfg)
    z0 = C.relax(blk, ids, cfg.eps, cfg.T1).z
    F = estimators.free_force(blk, ids)
    with torch.enable_grad():
        J = solvers.jacobian(F, z0)
    two_A = C.antisymmetric_product(F, z0)
    gen = torch.Generator().manual_seed(1)
    N = z0.numel()
    for v in (torch.randn(z0.shape, generator=gen, dtype=torch.float64),
              torch.complex(torch.randn(z0.shape, generator=gen, dtype=torch.float64),
                            torch.randn(z0.shape, generator=gen, dtype=torch.float64))):
        dense = ((J - J.mT).to(v.dtype) @ v.reshape(-1)).reshape(v.shape)
        # each of J v, J^T v is an AD product through the force (inner products of length <= mlp d,
        # the N-term dense matvec): first-order bound gamma_{N + mlp d} (|J| + |J^T|) |v| per entry
        bound = gamma(N + 2 * cfg.model.d, U64) * ((J.abs() + J.abs().mT) @ v.abs().reshape(-1)).reshape(v.shape)
        assert ((two_A(v) - dense).abs() <= 4 * bound).all()


@pytest.mark.parametrize("nudge", [C.NudgeConfig(), C.NudgeConfig(correction=None),
                                   C.NudgeConfig(estimator="holomorphic", N=4)],
                         ids=["symmetric-aep", "symmetric-plain", "holomorphic4-aep"])
def test_stacked_estimate_equals_the_core_estimators(nudge):
    """The training path (stacked phases, one readout) is the core's estimate (estimators.symmetric /
    holomorphic through a Nudger).  Tolerance: the nudged displacement z_k - z0 carries an absolute
    rounding error of at most ~2 T2 u ||z0|| (T2 Euler updates, each rounding z at u), relative to
    ||z_+ - z_-|| that is the estimate's relative error (the readout is linear)."""
    blk = _block()
    ids, y = _batch()
    z0 = C.relax(blk, ids, CFG.eps, CFG.T1).z
    core = C.ep_estimate(blk, ids, y, z0, nudge)
    fast = C.stacked_estimate(blk, ids, y, z0, nudge)
    nud = C.CharLMNudger(blk, ids, y, z0, C.ep_config(nudge))
    zp, zm = nud.phase(nudge.beta).z, nud.phase(-nudge.beta).z
    bound = 8 * nudge.T2 * U64 * float(z0.norm() / (zp - zm).norm())
    rel = float((core.grad - fast.grad).norm() / core.grad.norm())
    assert rel <= bound, (rel, bound)
    assert fast.imag <= bound * float(fast.grad.norm())  # real parameters: the imaginary readout is rounding


def test_bptt_task_gradient_is_the_reference():
    """The BPTT twin's gradient is models.ep.references.bptt_gradient (the same unroll, bitwise)."""
    blk = _block()
    ids, y = _batch()
    g, z = C.bptt_task_gradient(blk, ids, y, CFG.eps, CFG.T1)
    ref = references.bptt_gradient(blk, ids, y, C.zero_state(blk, ids.shape[0]), CFG.eps, CFG.T1)
    assert torch.equal(g, ref)
    assert torch.equal(z, C.relax(blk, ids, CFG.eps, CFG.T1).z), "the EP free phase is the BPTT forward"


def test_ep_gives_the_embedding_gradient_at_convergence():
    """dL/dx through the vector-field readout: at a tightly converged free phase the EP estimate of
    the embedding group agrees with the implicit-function-theorem gradient (cos >= the claim's 0.99;
    with the readout over x missing the group would be 0)."""
    cfg = dataclasses.replace(CFG, model=C.ModelConfig(d=8, heads=2, mlp=2, T=8), batch=2)
    blk = _block(cfg)
    ids, y = _batch(cfg)
    free = estimators.free_phase(blk, ids, solver="euler", eps=cfg.eps, steps=2000, tol=1e-13,
                                 z_init=C.zero_state(blk, 2))
    g_ift = references.ift_gradient(blk, ids, y, free.z)
    g_ep = C.stacked_estimate(blk, ids, y, free.z, dataclasses.replace(cfg.nudge, T2=60)).grad
    sl = estimators.group_slices(blk)["embeddings"]
    a, b = estimators.group_vector(g_ep, sl), estimators.group_vector(g_ift, sl)
    assert float(b.norm()) > 0
    assert C.cosine(a, b) >= cert.COS_MIN


# --------------------------------------------------------------------------- #
# training, twins, checkpoints
# --------------------------------------------------------------------------- #
def test_twins_share_init_batches_and_step0():
    ep, bp = C.train(TINY), C.train(TINY.twin("bptt"))
    assert cert.twin_problems(ep.history, bp.history) == []
    assert len(ep.history["cos"]) == TINY.steps and len(ep.history["val_ce"]) == TINY.steps + 1
    other = C.train(dataclasses.replace(TINY, seed=1).twin("bptt"))
    assert any("init" in p for p in cert.twin_problems(ep.history, other.history))


def test_checkpoint_round_trip(tmp_path):
    tw = C.load_or_train(TINY, tmp_path)
    path = C.checkpoint_path(TINY, tmp_path)
    assert path.exists()
    back = C.load_or_train(TINY, tmp_path)  # loaded, not retrained
    assert back.history == json_roundtrip(tw.history)
    for (k, a), (_, b) in zip(tw.block.state_dict().items(), back.block.state_dict().items()):
        assert torch.equal(a, b), k
    assert back.cfg == TINY


def json_roundtrip(h):
    import json

    return json.loads(json.dumps(h))


def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path):
    C.load_or_train(TINY, tmp_path)
    path = C.checkpoint_path(TINY, tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # a data byte
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(path.name)) as exc:
        C.load_or_train(TINY, tmp_path)
    assert "SHA-256" in str(exc.value)
    path.write_bytes(bytes(raw[:100]))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        C.load_twin(path)
    with pytest.raises(CheckpointError, match="no such file"):
        C.load_twin(tmp_path / "missing.safetensors")


def test_mismatched_checkpoint_is_an_error(tmp_path):
    C.load_or_train(TINY, tmp_path)
    path = C.checkpoint_path(TINY, tmp_path)
    with pytest.raises(CheckpointError, match="does not match the requested"):
        C.load_twin(path, dataclasses.replace(TINY, lr=1e-2))


def test_private_training_never_writes_the_shared_cache(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    monkeypatch.setenv("CERTIFY_CACHE", str(shared))
    sut_ep.clear()
    try:
        sut_ep.load_twin(TINY)
        assert sut.PRIVATE_TRAINING_DIR is not None
        assert C.checkpoint_path(TINY, sut.PRIVATE_TRAINING_DIR).exists()
        assert not C.checkpoint_path(TINY, shared).exists()
    finally:
        sut_ep.clear()


def test_source_hash_covers_the_ep_sources():
    from pathlib import Path

    names = {p.name for p in Path(C.__file__).parent.glob("*.py")}
    assert {"charlm.py", "charlm_data.py", "blocks.py", "estimators.py", "solvers.py"} <= names
    assert len(C.source_hash()) == 64


def test_controller_moves_lam_towards_the_target():
    ctl = C.ResidualController(CFG.control)
    for _ in range(50):
        ctl.update(1e-1)  # far above target: lam rises to its cap
    assert ctl.lam == CFG.control.lam_max
    for _ in range(200):
        ctl.update(1e-12)  # far below: back to the floor
    assert ctl.lam == pytest.approx(CFG.control.lam_floor, rel=1e-12)
    off = C.ResidualController(dataclasses.replace(CFG.control, reg="none"))
    off.update(1.0)
    assert off.lam == 0.0


def test_gpu_tier_config_builds():
    cfg = sut_ep.tier_config("gpu", Backend("cpu", "float64"))
    assert (cfg.model.d, cfg.model.heads, cfg.model.T) == (128, 4, 64)
    blk = C.build_block(dataclasses.replace(cfg, dtype="float32"))
    ids = torch.zeros(1, cfg.model.T, dtype=torch.int64)
    z = C.zero_state(blk, 1)
    assert blk.force(z, ids).shape == (1, 64, 128)
    assert sut_ep.gpu_tier_reason(Backend("cpu", "float64")) is not None


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_token_ids_and_targets():
    blk = _block()
    ids, y = _batch()
    bad = ids.clone()
    bad[0, 0] = len(D.ALPHABET)
    with pytest.raises(ValueError, match=r"lie in \[0, 21\)"):
        C.relax(blk, bad, CFG.eps, 2)
    with pytest.raises(ValueError, match="targets"):
        C.bptt_task_gradient(blk, ids, bad, CFG.eps, 2)
    with pytest.raises(ValueError, match="int64"):
        C.relax(blk, ids.to(torch.int32), CFG.eps, 2)
    z = C.zero_state(blk, ids.shape[0])
    with pytest.raises(ValueError, match="token ids must have shape"):
        blk.force(z, ids[:, :5])
    with pytest.raises(ValueError, match="injection"):
        blk.force(z, torch.zeros(ids.shape[0], blk.T, dtype=torch.float64))


@pytest.mark.parametrize("bad", [dict(rule="fa"), dict(steps=0), dict(eps=0.0), dict(warmup=-1),
                                 dict(T1=2.5), dict(dtype="float16")])
def test_bad_twin_config(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(CFG, **bad)


@pytest.mark.parametrize("make", [lambda: C.NudgeConfig(estimator="onesided"), lambda: C.NudgeConfig(beta=0.0),
                                  lambda: C.NudgeConfig(correction="tracking"), lambda: C.ControlConfig(reg="l2"),
                                  lambda: C.ControlConfig(lam_floor=2.0, lam0=1.0, lam_max=1.0),
                                  lambda: C.CharLMBlock(1, 4, 8)])
def test_bad_components(make):
    with pytest.raises(ValueError):
        make()


def test_validity_probe_rejects_unknown_reference():
    with pytest.raises(ValueError, match="reference"):
        C.validity_probe(_block(TINY), TINY, [1], reference="dense")


def test_assessment_flags_each_criterion():
    """The certificate's criteria on synthetic histories: a clean pair passes; a low cosine at a
    valid step, a residual above the threshold everywhere and a large CE gap are each reported."""
    base = {"unigram_entropy": 2.7, "bayes_window": 0.5}
    steps = list(range(10))

    def hist(val, res, cos):
        return {"step": steps, "res": res, "log_step": [0, 5, 10], "cos": cos, "val_ce": val,
                "norm_ratio": [1.0] * len(cos), "group_cos": [], "lam": [0.1] * 10, "diverged_at": None}

    good = cert.assess(hist([3.2, 2.0, 1.50], [1e-6] * 10, [1.0, 0.999]), hist([3.2, 2.0, 1.49], [1e-6] * 10, []),
                       base)
    assert good["failures"] == []
    low = cert.assess(hist([3.2, 2.0, 1.50], [1e-6] * 10, [1.0, 0.95]), hist([3.2, 2.0, 1.49], [1e-6] * 10, []),
                      base)
    assert any("cos(g_EP, g_BPTT)" in f for f in low["failures"])
    out = cert.assess(hist([3.2, 2.0, 1.50], [1e-2] * 10, [1.0, 0.5]), hist([3.2, 2.0, 1.49], [1e-6] * 10, []),
                      base)
    assert any("validity region" in f for f in out["failures"])
    assert not any("cos(g_EP" in f for f in out["failures"]), "invalid steps are not held to the cosine"
    gap = cert.assess(hist([3.2, 2.0, 1.60], [1e-6] * 10, [1.0, 1.0]), hist([3.2, 2.0, 1.30], [1e-6] * 10, []),
                      base)
    assert any("final validation CE gap" in f for f in gap["failures"])
    assert math.isnan(cert.residual_levels([1e-3], [0.95])["max_res_cos_ge_0.99"])
