"""Mutants of family F (attention): each must make the matching certificate fail.

Planted with monkeypatch (never by editing files); the certificates are called as pytest
would (the hypothesis search included).
"""

from __future__ import annotations

import pytest
import torch

from certify import test_attention as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import attention as attn
from models import preconditioners as pc
from models import richardson as rich_mod
from properties import attention as prop

CPU64 = Backend("cpu", "float64")


def _inverse_not_inverse_transpose(A: torch.Tensor, W_K: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(A.to(torch.float64), W_K.detach().to(torch.float64))  # A^{-1} W_K


def _orthogonal_assumed(A: torch.Tensor, W_K: torch.Tensor) -> torch.Tensor:
    return A.to(torch.float64) @ W_K.detach().to(torch.float64)  # A W_K (= A^{-T} W_K only if A orthogonal)


def test_gauge_with_A_inverse_fails_qk_gauge(monkeypatch):
    monkeypatch.setattr(attn, "gauge_key", _inverse_not_inverse_transpose)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_qk_gauge_exp_kernel(backend=CPU64, record=Recorder("attention.qk_gauge"))


def test_gauge_with_A_inverse_fails_dot_kernel_claim(monkeypatch):
    monkeypatch.setattr(attn, "gauge_key", _inverse_not_inverse_transpose)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_qk_gauge_dot_kernel(backend=CPU64, record=Recorder("attention.qk_gauge_dot_kernel"))


def test_gauge_assuming_orthogonal_A_fails_rbf_check(monkeypatch):
    monkeypatch.setattr(attn, "gauge_key", _orthogonal_assumed)
    with pytest.raises(AssertionError, match="should be unchanged exactly"):
        cert.test_qk_gauge_rbf_kernel(backend=CPU64, record=Recorder("attention.qk_gauge"))


def test_tiny_nonlinearity_in_linear_class_fails_identity(monkeypatch):
    orig = rich_mod.apply

    def nonlinear_apply(P, r):
        return orig(P, r) + 1e-3 * r**2

    monkeypatch.setattr(rich_mod, "apply", nonlinear_apply)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_linear_update_is_global_P(backend=CPU64, record=Recorder("attention.linear_iff_global"))


def test_projection_without_inverse_fails(monkeypatch):
    monkeypatch.setattr(prop, "projection_matrix", lambda D, R: D * R.transpose())  # E[Delta r^T] only
    with pytest.raises(AssertionError, match="exceeds the rounding floor"):
        cert.test_linear_update_is_global_P(backend=CPU64, record=Recorder("attention.linear_iff_global"))


def test_projection_with_swapped_factors_fails(monkeypatch):
    def swapped(D, R):  # E[r r^T]^{-1} E[Delta r^T]: the two factors in the wrong order
        G = R * R.transpose()
        return prop.arb_solve(G, D * R.transpose())

    monkeypatch.setattr(prop, "projection_matrix", swapped)
    with pytest.raises(AssertionError, match="exceeds the rounding floor"):
        cert.test_linear_update_is_global_P(backend=CPU64, record=Recorder("attention.linear_iff_global"))


def test_softmax_with_frozen_weights_fails_counterexample(monkeypatch):
    orig = pc.SoftmaxUpdate.attention

    def frozen(self, r, z, h_diag):  # attention weights at r = 0: the map becomes linear in r
        return orig(self, torch.zeros_like(r), z, h_diag)

    monkeypatch.setattr(pc.SoftmaxUpdate, "attention", frozen)
    with pytest.raises(AssertionError, match="disagrees with the mpmath defect|projection residual"):
        cert.test_softmax_update_not_global(backend=CPU64, record=Recorder("attention.linear_iff_global"))
