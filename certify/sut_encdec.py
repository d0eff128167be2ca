"""The encoder + decoder systems under test as the certificates see them (models.encdec).

Five joint runs, trained once per process (about 0.1 s each; the Flexformer one ~1-2 s)
and cached here; `clear()` drops every cache (mutant tests call it after planting a mutant
in the trainer):

* "lowrank": Oja encoder + free latent decoder P_{z,s} (001 sec 5.2, 002 sec 6), the
  Gaussian design, K = 8, r = 3, M = 128, 256 training prompts, 300 outer steps;
* "lowrank_p0": the same with another decoder start P_0 (the triangular-dynamics check);
* "flexformer": the same encoder with a latent Flexformer decoder (001 sec 5.3), 200 steps;
* "commuting": orthogonal design (fixed diagonal H), gain encoder, diagonal P_0,
  population moments: every matrix diagonal in one basis (002 sec 6.5), K = 6, r = 3;
* "commuting_singular": the same with a dead latent mode (Sigma_z = diag(1, .5, 0), noise
  0), so that C_s is exactly singular and P_z* needs the pseudo-inverse.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from certify.backend import Backend
from models import encdec
from models.tasks import TaskConfig
from properties import encdec as ref

HELDOUT_SEED = 10_000
N_HELDOUT = 512
EB_CLIP = 1.0  # c of the clipped EB certificate on the per-task prediction losses
EB_DELTA = 0.05

RUNS = ("lowrank", "lowrank_p0", "flexformer", "commuting", "commuting_singular")
ORTHONORMAL_RUNS = ("lowrank", "flexformer")  # U_s^T U_s = I: the decomposition claims' SUTs
COMMUTING_RUNS = ("commuting", "commuting_singular")
TRACKING_RUNS = ("lowrank", "commuting", "commuting_singular")  # free decoders


def config(name: str, backend: Backend) -> encdec.EncDecConfig:
    dev, dt = backend.device, backend.dtype
    lowrank = encdec.LowRankTaskConfig(task=TaskConfig(K=8, M=128, kappa=20.0, noise=0.1, ridge=1e-2),
                                       z_var=(1.0, 0.5, 0.25))
    # eta values are dyadic, so float32 and float64 runs use the same step exactly
    common = dict(prompts=lowrank, n_train=256, eta_enc=0.25, eta_dec=4.0, L=6, seed=0, device=dev, dtype=dt)
    if name == "lowrank":
        return encdec.EncDecConfig(steps=300, **common)
    if name == "lowrank_p0":
        return encdec.EncDecConfig(steps=300, p0_noise=0.3, **common)
    if name == "flexformer":
        return encdec.EncDecConfig(decoder="flexformer", steps=200, lr=2e-2, **common)
    if name in COMMUTING_RUNS:
        singular = name == "commuting_singular"
        prompts = encdec.LowRankTaskConfig(
            task=TaskConfig(K=6, M=32, kappa=20.0, noise=0.0 if singular else 0.1, ridge=1e-2),
            z_var=(1.0, 0.5, 0.0) if singular else (1.0, 0.5, 0.25), design="orthogonal")
        return encdec.EncDecConfig(prompts=prompts, encoder="gain", moments="population", steps=150,
                                   eta_enc=0.25, eta_dec=0.5, g0=(0.3, 1.5, 0.8), p0=(0.5, 0.2, 1.0),
                                   L=6, seed=0, device=dev, dtype=dt)
    raise KeyError(name)


@functools.cache
def run(name: str, backend: Backend) -> encdec.EncDecRun:
    return encdec.train_encdec(config(name, backend))


@functools.cache
def heldout(name: str, backend: Backend) -> encdec.LowRankTasks:
    cfg = config(name, backend)
    return encdec.LowRankPrompts(cfg.prompts, backend.device, backend.torch_dtype).sample(N_HELDOUT, HELDOUT_SEED)


def final(name: str, backend: Backend) -> int:
    return run(name, backend).steps


@functools.cache
def terms(name: str, backend: Backend, s: int) -> dict[str, np.ndarray]:
    """models.encdec.heldout_terms at checkpoint s, as float64 numpy arrays, plus the SUT's
    means (risk_decomposition) under the key 'means'."""
    t = encdec.heldout_terms(run(name, backend), s, heldout(name, backend))
    out = {k: to_numpy(v) for k, v in t.items()}
    out["means"] = encdec.risk_decomposition(t)
    return out


@functools.cache
def metrics(name: str, backend: Backend, s: int) -> dict[str, float]:
    return encdec.checkpoint_metrics(run(name, backend), s, heldout(name, backend), EB_CLIP, EB_DELTA)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


@functools.cache
def logged(name: str, backend: Backend) -> dict[str, np.ndarray]:
    """The run's logged trajectory as float64 arrays (float32 values kept exactly)."""
    r = run(name, backend)
    out = {k: to_numpy(getattr(r, k)) for k in ("U", "P", "C", "B", "Pstar", "Sigma_x", "U_star")}
    if r.A_pop is not None:
        out["A_pop"] = to_numpy(r.A_pop)
    for k, v in r.pop.items():
        out[f"pop.{k}"] = to_numpy(v)
    return out


@functools.cache
def exact_oracles(name: str, backend: Backend) -> tuple[ref.ExactOracle, ...]:
    """P_z*(U_s) = B_s C_s^+ exactly (rationals) for every logged checkpoint."""
    lg = logged(name, backend)
    return tuple(ref.exact_oracle(B, C) for B, C in zip(lg["B"], lg["C"]))


@functools.cache
def step_tolerances(name: str, backend: Backend) -> tuple[float, ...]:
    """Derived rounding bound of each decoder step s -> s+1 (properties.encdec.update_tolerance)."""
    lg, r = logged(name, backend), run(name, backend)
    return tuple(ref.update_tolerance(lg["P"][s], lg["C"][s], lg["B"][s], r.eta_dec, backend.unit_roundoff)
                 for s in range(r.steps))


@functools.cache
def contractions(name: str, backend: Backend) -> tuple[float, ...]:
    """Rigorous ||I - eta C_s||_2 for every step."""
    lg, r = logged(name, backend), run(name, backend)
    return tuple(ref.contraction_upper(lg["C"][s], r.eta_dec) for s in range(r.steps))


def clear() -> None:
    for f in (run, heldout, terms, metrics, logged, exact_oracles, step_tolerances, contractions):
        f.cache_clear()
