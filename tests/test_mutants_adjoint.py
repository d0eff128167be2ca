"""Mutants of the adjoint-gradient SUT (models.adjoint) and of the Flexformer normaliser:
each must make certify/test_adjoint.py::test_adjoint_gradient fail (monkeypatched, never edited)."""

from __future__ import annotations

import math

import pytest
import torch

from certify import test_adjoint as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import adjoint as adj
from models import preconditioners as pcs

# checkpoints are trained by the unmutated code before any mutant is planted (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("standard_checkpoints")

CPU64 = Backend("cpu", "float64")


def _run():
    cert.test_adjoint_gradient(backend=CPU64, record=Recorder("flexformer.adjoint_gradient"))


def test_mutant_no_transpose(monkeypatch):
    def step(P, H, lam):  # lambda_l = (I - P H) lambda_{l+1}
        return lam - (P @ (H @ lam.unsqueeze(-1))).squeeze(-1)
    monkeypatch.setattr(adj, "adjoint_step", step)
    with pytest.raises(AssertionError, match="grad_P vs"):
        _run()


def test_mutant_missing_1_over_NK(monkeypatch):
    monkeypatch.setattr(adj, "terminal", lambda zL, zstar: zL - zstar)
    with pytest.raises(AssertionError, match="grad_P vs"):
        _run()


def test_mutant_lambda_off_by_one(monkeypatch):
    def acc(lams, rs):  # lambda_l r_l^T instead of lambda_{l+1} r_l^T
        G = torch.zeros(rs[0].shape[-1], rs[0].shape[-1], dtype=lams[0].dtype)
        for l, r in enumerate(rs):
            G = G + lams[l].transpose(0, 1) @ r
        return G
    monkeypatch.setattr(adj, "accumulate", acc)
    with pytest.raises(AssertionError, match="grad_P vs"):
        _run()


def test_mutant_normaliser_over_queries(monkeypatch):
    def attention_matrix(self):
        q, k = self.queries_keys()
        if self.kernel == "exp":
            logits = q @ k.T / math.sqrt(self.m)
        else:
            logits = -(q[:, None, :] - k[None, :, :]).pow(2).sum(-1) / (2 * self.m)
        return torch.softmax(logits, dim=0)  # normalised over the queries i
    monkeypatch.setattr(pcs.Flexformer, "attention_matrix", attention_matrix)
    with pytest.raises(AssertionError, match="P_theta differs from eq 18"):
        _run()
