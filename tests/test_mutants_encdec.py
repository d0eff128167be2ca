"""The encoder + decoder certificates can fail: mutants planted (monkeypatched, never by
editing files) in models.encdec / models.richardson / models.eb or in the reference code
(properties.encdec) must make the matching certificate of certify/test_encdec.py fail.

Every mutant that changes what the trainer or the evaluation produces clears the run
caches of certify.sut_encdec before and after (the `fresh` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from certify import sut_encdec
from certify import test_encdec as cert
from certify.backend import Backend
from certify.plugin import Recorder
from models import eb as eb_mod
from models import encdec as enc_mod
from models import richardson as rich_mod
from properties import encdec as ref

CPU64 = Backend("cpu", "float64")


def rec(cid: str) -> Recorder:
    return Recorder(cid)


def no_golden(*args, **kwargs) -> None:
    return None


@pytest.fixture
def fresh():
    sut_encdec.clear()
    yield
    sut_encdec.clear()


# --------------------------------------------------------------------------- #
# encdec.latent_identity
# --------------------------------------------------------------------------- #
def _transposed_apply(P: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    if P.dim() == 2:
        return r @ P  # P^T r instead of P r
    return torch.bmm(P.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)


def test_transposed_latent_P_fails_latent_identity(monkeypatch, fresh):
    monkeypatch.setattr(rich_mod, "apply", _transposed_apply)
    with pytest.raises(AssertionError, match="exceeds the derived tolerance"):
        cert.test_latent_identity(backend=CPU64, record=rec("encdec.latent_identity"))


def test_transposed_latent_system_fails_latent_identity(monkeypatch, fresh):
    """A wrong latent right-hand side d_s = (1 + 1e-6) U^T c: the Richardson identity still
    holds for the system the SUT solves, so the latent-system check must catch it."""
    orig = enc_mod.latent_system

    def wrong(U, H, c):
        A, d = orig(U, H, c)
        return A, d * (1 + 1e-6)

    monkeypatch.setattr(enc_mod, "latent_system", wrong)
    with pytest.raises(AssertionError, match="A_s or d_s is not"):
        cert.test_latent_identity(backend=CPU64, record=rec("encdec.latent_identity"))


# --------------------------------------------------------------------------- #
# encdec.risk_decomposition
# --------------------------------------------------------------------------- #
def test_cross_term_dropped_in_sut_fails_risk_decomposition(monkeypatch, fresh):
    orig = enc_mod.risk_decomposition

    def no_cross(terms):
        out = orig(terms)
        out["cross"] = 0.0
        return out

    monkeypatch.setattr(enc_mod, "risk_decomposition", no_cross)
    with pytest.raises(AssertionError, match="cross"):
        cert.test_risk_decomposition(backend=CPU64, record=rec("encdec.risk_decomposition"))


def test_cross_term_dropped_in_reference_fails_risk_decomposition(monkeypatch):
    monkeypatch.setattr(ref, "decomposition_identity", lambda m: m["e2e"] - (m["floor"] + m["dec"]))
    with pytest.raises(AssertionError, match="reference decomposition broken"):
        cert.test_risk_decomposition(backend=CPU64, record=rec("encdec.risk_decomposition"))


def test_unweighted_floor_fails_risk_decomposition(monkeypatch, fresh):
    """The floor measured in the Euclidean instead of the Sigma_x norm."""
    orig = enc_mod.heldout_terms

    def euclid_floor(run, s, tasks, L=None):
        t = orig(run, s, tasks, L)
        t["floor"] = t["f2"]
        return t

    monkeypatch.setattr(enc_mod, "heldout_terms", euclid_floor)
    with pytest.raises(AssertionError, match="floor"):
        cert.test_risk_decomposition(backend=CPU64, record=rec("encdec.risk_decomposition"))


# --------------------------------------------------------------------------- #
# encdec.decoder_bound
# --------------------------------------------------------------------------- #
def test_float_norms_fail_decoder_bound(monkeypatch):
    def float_norm(M):
        return float(np.linalg.norm(np.asarray(M, np.float64), 2))

    def float_rho(P, A):
        P, A = np.asarray(P, np.float64), np.asarray(A, np.float64)
        return float(np.linalg.norm(np.eye(A.shape[0]) - P @ A, 2))

    monkeypatch.setattr(ref, "rigorous_norm", float_norm)
    monkeypatch.setattr(ref, "rho_z_upper", float_rho)
    with pytest.raises(AssertionError, match="below a rigorous lower bound"):
        cert.test_decoder_bound(backend=CPU64, record=rec("encdec.decoder_bound"))


def test_missing_sigma_norm_fails_decoder_bound(monkeypatch):
    """A norm that is not an upper bound (||Sigma_x||_2 taken as 1/2)."""
    monkeypatch.setattr(ref, "rigorous_norm", lambda M: 0.5)
    with pytest.raises(AssertionError, match="below a rigorous lower bound|exceeds"):
        cert.test_decoder_bound(backend=CPU64, record=rec("encdec.decoder_bound"))


# --------------------------------------------------------------------------- #
# oracle.tracking
# --------------------------------------------------------------------------- #
def test_stop_gradient_removed_fails_triangular_check(monkeypatch, fresh):
    monkeypatch.setattr(enc_mod, "stop_gradient", lambda U: U)
    with pytest.raises(AssertionError, match="stop-gradient is missing"):
        cert.test_triangular_stop_gradient(backend=CPU64, record=rec("oracle.tracking"))


def test_wrong_decoder_step_fails_oracle_tracking(monkeypatch, fresh):
    monkeypatch.setattr(enc_mod, "decoder_step", lambda P, C, B, eta: P - (eta * (1 + 1e-9)) * (P @ C - B))
    with pytest.raises(AssertionError, match="rounding bound"):
        cert.test_oracle_tracking(backend=CPU64, record=rec("oracle.tracking"))


def test_pstar_with_C_instead_of_pinv_fails_oracle_tracking(monkeypatch, fresh):
    """P_z* = B_s C_s (no pseudo-inverse); the explicit example is the singular C_s."""
    monkeypatch.setattr(enc_mod, "latent_oracle", lambda B, C: B @ C)
    with pytest.raises(AssertionError, match="logged P_z"):
        cert.test_oracle_tracking(backend=CPU64, record=rec("oracle.tracking"))


def test_pstar_with_inverse_on_singular_C_fails(monkeypatch, fresh):
    """P_z* = B_s C_s^{-1}: on the exactly singular C_s of the commuting_singular run the
    inverse does not exist (an error) -- only the pseudo-inverse defines the oracle there."""
    monkeypatch.setattr(enc_mod, "latent_oracle", lambda B, C: B @ torch.linalg.inv(C))
    with pytest.raises((AssertionError, RuntimeError)):
        cert.test_oracle_tracking_every_step("commuting_singular", backend=CPU64, record=rec("oracle.tracking"),
                                             golden=no_golden)


def test_regularized_inverse_on_singular_C_fails(monkeypatch, fresh):
    """P_z* = B_s (C_s + 1e-8 I)^{-1}: finite, but not B_s C_s^+ where C_s is singular."""
    monkeypatch.setattr(enc_mod, "latent_oracle",
                        lambda B, C: B @ torch.linalg.inv(C + 1e-8 * torch.eye(C.shape[0], dtype=C.dtype)))
    with pytest.raises(AssertionError, match="logged P_z"):
        cert.test_oracle_tracking_every_step("commuting", backend=CPU64, record=rec("oracle.tracking"),
                                             golden=no_golden)


# --------------------------------------------------------------------------- #
# dynamics.noncommuting
# --------------------------------------------------------------------------- #
def test_reversed_product_in_reference_fails_noncommuting(monkeypatch):
    def reversed_product(factors):
        out = factors[-1]
        for M in reversed(factors[:-1]):
            out = out * M
        return out

    monkeypatch.setattr(ref, "ordered_product", reversed_product)
    with pytest.raises(AssertionError, match="closed form"):
        cert.test_noncommuting_closed_form(backend=CPU64, record=rec("dynamics.noncommuting"))


def test_reversed_product_in_trainer_fails_noncommuting(monkeypatch, fresh):
    """The trainer's step with (I - eta C_s) on the left: P - eta (C P - B)."""
    monkeypatch.setattr(enc_mod, "decoder_step", lambda P, C, B, eta: P - eta * (C @ P - B))
    with pytest.raises(AssertionError, match="closed form"):
        cert.test_noncommuting_closed_form(backend=CPU64, record=rec("dynamics.noncommuting"))


def test_commuting_C_detected(monkeypatch, fresh):
    """A trainer whose C_s all commute (diagonal part only) cannot show non-commutation."""
    orig_train = enc_mod.train_encdec

    def train_diag(cfg):
        run = orig_train(cfg)
        run.C = torch.diag_embed(torch.diagonal(run.C, dim1=-2, dim2=-1))
        return run

    monkeypatch.setattr(enc_mod, "train_encdec", train_diag)
    with pytest.raises(AssertionError, match="non-commuting"):
        cert.test_noncommuting_commutators("lowrank", backend=CPU64, record=rec("dynamics.noncommuting"),
                                           golden=no_golden)


# --------------------------------------------------------------------------- #
# dynamics.commuting_scalar
# --------------------------------------------------------------------------- #
def test_wrong_weights_fail_commuting_scalar(monkeypatch):
    """w_i without the Sigma_x-mass (U^T Sx U)_ii of the mode: w_i = c_i / a_i^2."""
    orig = ref.commuting_weights
    monkeypatch.setattr(ref, "commuting_weights", lambda W, C, a, dps=ref.MP_DPS: orig([1.0] * len(C), C, a, dps))
    with pytest.raises(AssertionError, match="R_dec"):
        cert.test_commuting_scalar_closure(backend=CPU64, record=rec("dynamics.commuting_scalar"))


def test_normalized_weights_fail_commuting_scalar(monkeypatch):
    """The normalized spectral weights of 002 sec 3.1 (summing to 1) in place of the mode masses."""
    orig = ref.commuting_weights

    def normalized(W, C, a, dps=ref.MP_DPS):
        w = orig(W, C, a, dps)
        tot = sum(w)
        return [x / tot for x in w]

    monkeypatch.setattr(ref, "commuting_weights", normalized)
    with pytest.raises(AssertionError, match="R_dec"):
        cert.test_commuting_scalar_closure(backend=CPU64, record=rec("dynamics.commuting_scalar"))


def test_wrong_gain_closed_form_fails_commuting_scalar(monkeypatch):
    orig = ref.gain_closed_form
    monkeypatch.setattr(ref, "gain_closed_form", lambda g0, sg, b, eta, s, dps=ref.MP_DPS: orig(g0, sg, b, eta, s + 1, dps))
    with pytest.raises(AssertionError, match="encoder gain"):
        cert.test_commuting_scalar_closure(backend=CPU64, record=rec("dynamics.commuting_scalar"))


# --------------------------------------------------------------------------- #
# eb.heldout (the encoder + decoder checkpoints)
# --------------------------------------------------------------------------- #
def test_ddof0_fails_encdec_heldout_eb(monkeypatch, fresh):
    monkeypatch.setattr(eb_mod, "VARIANCE_DDOF", 0)
    with pytest.raises(AssertionError, match="reported EB"):
        cert.test_eb_heldout_encdec("flexformer", backend=CPU64, record=rec("eb.heldout"), golden=no_golden)


# --------------------------------------------------------------------------- #
# the run files (safetensors): a corrupt or mismatched file is an error naming it
# --------------------------------------------------------------------------- #
def test_run_file_roundtrip_and_corruption(tmp_path):
    from models.checkpoints import CheckpointError

    cfg = sut_encdec.config("commuting", CPU64)
    run = enc_mod.train_encdec(cfg)
    path = tmp_path / "run.safetensors"
    enc_mod.save_run(path, run)
    back = enc_mod.load_run(path, cfg)
    assert torch.equal(back.P, run.P) and torch.equal(back.U, run.U) and torch.equal(back.A_pop, run.A_pop)
    other = sut_encdec.config("commuting_singular", CPU64)
    with pytest.raises(CheckpointError, match="run.safetensors.*config does not match"):
        enc_mod.load_run(path, other)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip a byte of the tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="run.safetensors"):
        enc_mod.load_run(path, cfg)
