"""Mutants of the PDE encoder-decoder SUT (models/pde.py): each must fail its certificate."""

from __future__ import annotations

import pytest
import torch

from certify import test_pde as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import pde

CPU64 = Backend("cpu", "float64")


@pytest.fixture(autouse=True)
def fresh_family():
    """certify/test_pde.py caches the Galerkin family per backend; mutants need a fresh one."""
    clear = getattr(cert._family, "cache_clear", None)
    if clear:
        clear()
    yield
    if clear:
        clear()


def _weak_form_plus_sign(self, U, F, V):
    """b = <f + A_0 u, v> instead of <f - A_0 u, v>."""
    AU = self.Ak @ U
    G = (V.T @ AU).permute(2, 1, 0).reshape(-1, pde.K)
    b = (V.T @ (F + self.A0 @ U)).T.reshape(-1)
    return G, b


def _weak_form_rows_swapped(self, U, F, V):
    """G and b with rows ordered (r, i) instead of (i, r)."""
    AU = self.Ak @ U
    G = (V.T @ AU).permute(1, 2, 0).reshape(-1, pde.K)
    b = (V.T @ (F - self.A0 @ U)).reshape(-1)
    return G, b


def _operator_missing_last(self, z):
    A = self.A0.clone()
    for k in range(pde.K - 1):  # z_K A_K dropped
        A = A + z[k] * self.Ak[k]
    return A


def _ridge_dropped(G, b, lam):
    return G.T @ G, G.T @ b


def _ridge_squared(G, b, lam):
    S = G.T @ G + lam**2 * torch.eye(G.shape[1], device=G.device, dtype=G.dtype)
    return S, G.T @ b


@pytest.mark.parametrize("mutant", [_weak_form_plus_sign, _weak_form_rows_swapped])
def test_weak_form_mutants_fail(monkeypatch, mutant):
    monkeypatch.setattr(pde.GalerkinFamily, "weak_form", mutant)
    with pytest.raises(AssertionError):
        cert.test_pde_weak_form(backend=CPU64, record=Recorder("pde.weak_form"))


def test_operator_missing_term_fails_weak_form(monkeypatch):
    monkeypatch.setattr(pde.GalerkinFamily, "operator", _operator_missing_last)
    with pytest.raises(AssertionError):
        cert.test_pde_weak_form(backend=CPU64, record=Recorder("pde.weak_form"))


@pytest.mark.parametrize("mutant", [_ridge_dropped, _ridge_squared])
def test_ridge_mutants_fail_encoder_identity(monkeypatch, mutant):
    monkeypatch.setattr(pde, "ridge_system", mutant)
    with pytest.raises(AssertionError, match="ridge error"):
        cert.test_pde_encoder_identity_and_bias(backend=CPU64, record=Recorder("pde.encoder_recovery"))


def test_ridge_squared_fails_bias_order(monkeypatch):
    monkeypatch.setattr(pde, "ridge_system", _ridge_squared)
    with pytest.raises(AssertionError):
        cert.test_pde_encoder_bias_order(backend=CPU64, record=Recorder("pde.encoder_recovery"))
