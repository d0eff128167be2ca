"""Tests of models.ep.fa: the backward recursion with the true transposes is backprop, the FA
gradient's structure (the readout exact, everything upstream odd in B_out), batched replicas,
the local vjps, determinism, training, and bad input named in the error."""

from __future__ import annotations

import math

import pytest
import torch

from models.ep import fa

CFG = fa.FAConfig(T=3, d=4, d_out=2, heads=2, mlp=2, causal=False, seed=3)


def _data(cfg=CFG, n=5, seed=1, dtype=torch.float64):
    return fa.teacher_task(cfg, n, seed, dtype=dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("causal", (False, True))
def test_recursion_with_transposes_is_backprop(causal):
    cfg = fa.FAConfig(T=3, d=4, d_out=2, heads=2, mlp=2, causal=causal, seed=3)
    blk = fa.TransformerBlock(cfg)
    x, y = _data(cfg)
    g_bp = fa.bp_gradient(blk, x, y)
    g_rec = fa.backward(blk, x, y, fa.transposed_feedback(blk))
    for n in fa.PARAM_NAMES:
        assert g_rec[n].shape == (1, *g_bp[n].shape)
        assert _rel(g_rec[n][0], g_bp[n]) < 1e-12, n


def test_recursion_float32_within_running_error_bound():
    blk = fa.TransformerBlock(CFG, dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    W = {n: w.detach() for n, w in blk.weights().items()}
    fb = fa.transposed_feedback(blk)
    g_rec = fa.backward_weights(W, x, y, CFG, fb)
    g_abs = fa.backward_weights(W, x, y, CFG, fb, absolute=True)
    g_bp = fa.bp_gradient(blk, x, y)
    k = fa.recursion_terms(CFG, x.shape[0])
    u = 2.0**-24
    for n in fa.PARAM_NAMES:
        assert float((g_rec[n][0] - g_bp[n]).norm()) <= 2 * k * u / (1 - k * u) * float(g_abs[n][0].norm()), n


def test_absolute_chain_dominates_the_gradient():
    blk = fa.TransformerBlock(CFG)
    x, y = _data()
    W = {n: w.detach() for n, w in blk.weights().items()}
    fb = fa.random_feedback(CFG, [0, 1])
    g = fa.backward_weights(W, x, y, CFG, fb)
    ga = fa.backward_weights(W, x, y, CFG, fb, absolute=True)
    for n in fa.PARAM_NAMES:
        assert torch.all(g[n].abs() <= ga[n] * (1 + 1e-12) + 1e-300), n


def test_readout_gradient_is_exact_and_upstream_odd_in_B_out():
    blk = fa.TransformerBlock(CFG)
    x, y = _data()
    fb = fa.random_feedback(CFG, [7])
    flipped = fa.Feedback({**fb.mats, "W_out": -fb.mats["W_out"]})
    g = fa.backward(blk, x, y, fb)
    gm = fa.backward(blk, x, y, flipped)
    g_bp = fa.bp_gradient(blk, x, y)
    assert _rel(g["W_out"][0], g_bp["W_out"]) < 1e-14
    assert torch.equal(g["W_out"], gm["W_out"])
    for n in fa.PARAM_NAMES:
        if n != "W_out":
            assert torch.allclose(gm[n], -g[n], rtol=0, atol=1e-14 * float(g[n].abs().max())), n


def test_fa_differs_from_bp_upstream():
    blk = fa.TransformerBlock(CFG)
    x, y = _data()
    g = fa.group_vectors(fa.fa_gradient(blk, x, y, [0]), lead=1)
    b = fa.group_vectors(fa.bp_gradient(blk, x, y))
    for grp in ("Q", "FFN_fc", "FFN_proj"):
        assert float(fa.cosine(g[grp][0], b[grp])) < 0.999, grp


def test_batched_replicas_and_feedback_sets_match_single_runs():
    x, y = _data()
    run = fa.train(CFG, x, y, steps=3, lr=1e-2, rule="fa", feedback_seeds=[5, 6, 7])
    fb = fa.random_feedback(CFG, [5, 6, 7])
    gb = fa.backward_weights(run.weights, x, y, CFG, fb)
    for r, s in enumerate((5, 6, 7)):
        g1 = fa.fa_gradient(run.block(r), x, y, [s])
        for n in fa.PARAM_NAMES:
            assert torch.allclose(gb[n][r], g1[n][0], rtol=1e-12, atol=1e-15), (r, n)


def test_random_feedback_shapes_seeds_and_determinism():
    a = fa.random_feedback(CFG, [0, 1])
    b = fa.random_feedback(CFG, [0, 1])
    c = fa.random_feedback(CFG, [1])
    assert a.S == 2
    for n, shape in fa.feedback_shapes(CFG).items():
        assert a.mats[n].shape == (2, *shape)
        assert torch.equal(a.mats[n], b.mats[n])
        assert torch.equal(a.mats[n][1], c.mats[n][0])
        assert not torch.equal(a.mats[n][0], a.mats[n][1])
    blk = fa.TransformerBlock(CFG)
    for n, m in fa.transposed_feedback(blk).mats.items():
        assert m.shape == (1, *fa.feedback_shapes(CFG)[n])


def test_local_vjps_match_autograd():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(fa.gelu(p).sum(), p)
    assert torch.allclose(fa.gelu_prime(p.detach()), d, rtol=1e-13, atol=1e-15)
    dy = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = fa.layer_norm(p, fa.LN_EPS)
    (dx,) = torch.autograd.grad(y, p, grad_outputs=dy)
    assert torch.allclose(fa.layer_norm_vjp(p.detach(), y.detach(), dy), dx, rtol=1e-12, atol=1e-14)
    logits = torch.randn(2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    A = fa.softmax(logits)
    dA = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    (dl,) = torch.autograd.grad(A, logits, grad_outputs=dA)
    assert torch.allclose(fa.softmax_vjp(A.detach(), dA), dl, rtol=1e-12, atol=1e-15)


def test_training_is_deterministic_and_decreases_the_loss():
    x, y = _data(n=8)
    a = fa.train(CFG, x, y, steps=30, lr=1e-2, rule="bp")
    b = fa.train(CFG, x, y, steps=30, lr=1e-2, rule="bp")
    assert torch.equal(a.losses, b.losses)
    assert float(a.losses[-1, 0]) < 0.5 * float(a.losses[0, 0])
    f = fa.train(CFG, x, y, steps=30, lr=1e-2, rule="fa", feedback_seeds=[1, 2])
    assert f.losses.shape == (30, 2)
    assert torch.all(f.losses[-1] < f.losses[0])


def test_fa_training_reuses_one_feedback(monkeypatch):
    seen = []
    orig = fa.training_feedback

    def spy(fb, step):
        seen.append(fb)
        return orig(fb, step)

    monkeypatch.setattr(fa, "training_feedback", spy)
    x, y = _data()
    fa.train(CFG, x, y, steps=4, lr=1e-2, rule="fa", feedback_seeds=[3])
    assert len(seen) == 4 and all(s is seen[0] for s in seen)


def test_float32_block_and_data():
    blk = fa.TransformerBlock(CFG, dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    assert blk.forward(x).o.dtype == torch.float32
    assert fa.fa_gradient(blk, x, y, [0])["W_Q"].dtype == torch.float32


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="multiple of heads"):
        fa.FAConfig(d=5, heads=2)
    with pytest.raises(ValueError, match="FAConfig.T"):
        fa.FAConfig(T=0)
    blk = fa.TransformerBlock(CFG)
    with pytest.raises(ValueError, match=r"input must be \(B, 3, 4\)"):
        blk.forward(torch.zeros(2, 4, 4, dtype=torch.float64))
    x, y = _data()
    with pytest.raises(ValueError, match="rule must be"):
        fa.train(CFG, x, y, steps=1, lr=1e-2, rule="dfa")
    with pytest.raises(ValueError, match="feedback seed"):
        fa.train(CFG, x, y, steps=1, lr=1e-2, rule="fa")
    with pytest.raises(ValueError, match="steps"):
        fa.train(CFG, x, y, steps=-1, lr=1e-2)
    with pytest.raises(ValueError, match="at least one seed"):
        fa.random_feedback(CFG, [])
    with pytest.raises(ValueError, match="n >= 1"):
        fa.teacher_task(CFG, 0, 1)


def test_cosine_batched():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(fa.cosine(a, b), torch.full((2,), 1 / math.sqrt(2), dtype=torch.float64))
