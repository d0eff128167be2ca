"""The encoder-family SUTs as the certificates see them: problems, cached trainer runs,
held-out evaluations, subspace estimates and prompt samplers (models.encoder,
models.gaussian_prompts, models.tasks).

Configuration of the measured runs (the seeds do not give theirs; stated once here):
* Table 1 (001 sec 3): K = 16 (dim b), r = 4 (dim z), sigma = 0.02 (floor 4e-4 as 001),
  Sigma_z log-spaced in [1/50, 1], G_0 ~ N(0, 1/r), eta = 0.5, 800 population GD steps,
  4096 held-out samples; the online variant uses minibatches of 64, the finite variant a
  fixed training set of N = 16 samples (r = 8: strongly overfit, which is the point).
* Table 3 (001 sec 5.2 / 002 sec 5.2): K = 8, r = 2, M = 32, N = 420 prompts,
  Sigma_x log-spaced in [1/20, 1], Sigma_z log-spaced in [1/4, 1], noise 0.1, ridge 1e-3
  (a ridge of 1e-2 would shrink beta_hat by ~17% along the weakest design direction and
  make ||S_N - Sigma_beta|| exceed the gap: the bound would be vacuous).
Every run is a pure function of its arguments, so functools.cache is safe; mutant tests
clear these caches.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from certify.backend import Backend
from models import encoder as enc
from models.gaussian_prompts import GaussianPrompts
from models.tasks import LeastSquaresPrompts, TaskConfig

TABLE1 = enc.EncoderConfig(K=16, r=4, sigma=0.02, kappa_z=50.0, z_scale=1.0, seed=0)
TABLE1_ETA = 0.5
TABLE1_STEPS = 800
TABLE1_HELDOUT = 4096
HELDOUT_SEED = 30_000
# The finite-sample variant: r = 8 latent dimensions fitted from N = 16 samples.
FINITE = enc.EncoderConfig(K=16, r=8, sigma=0.02, kappa_z=10.0, z_scale=1.0, seed=1)
FINITE_N = 16
ONLINE_BATCH = 64

TABLE3 = enc.SubspaceConfig(K=8, r=2, M=32, N=420, kappa_x=20.0, kappa_z=4.0, noise=0.1, ridge=1e-3, seed=0)
TABLE3_CHECKPOINTS = (10, 20, 40, 80, 160, 320, 420)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


@functools.cache
def problem(cfg: enc.EncoderConfig, backend: Backend) -> enc.EncoderProblem:
    return enc.EncoderProblem(cfg, backend.device, backend.torch_dtype)


@functools.cache
def run(cfg: enc.EncoderConfig, eta: float, steps: int, backend: Backend, mode: str = "population",
        seed: int = 0) -> np.ndarray:
    """The trainer's trajectory (steps+1, K, r) of a measured configuration, as float64 numpy
    (float32 values exact).  Hypothesis-drawn runs call models.encoder.train directly (uncached)."""
    pr = problem(cfg, backend)
    traj = enc.train(pr, eta, steps, mode=mode, batch=ONLINE_BATCH, N=FINITE_N, seed=seed)
    return to_numpy(traj)


def population_risk(cfg: enc.EncoderConfig, G: np.ndarray, backend: Backend) -> float:
    """The SUT's population risk of one G (float64 numpy -> backend -> float)."""
    pr = problem(cfg, backend)
    Gt = torch.tensor(G).to(backend.device, backend.torch_dtype)
    return float(enc.population_risk(pr, Gt))


def heldout(cfg: enc.EncoderConfig, G: np.ndarray, backend: Backend, n: int = TABLE1_HELDOUT,
            seed: int = HELDOUT_SEED) -> tuple[np.ndarray, int]:
    """The SUT's held-out risk of each G in G (..., K, r), one held-out sample for all."""
    pr = problem(cfg, backend)
    Gt = torch.tensor(G).to(backend.device, backend.torch_dtype)
    risk, count = enc.heldout_risk(pr, Gt, n, seed)
    return to_numpy(risk), count


@functools.cache
def table1(backend: Backend) -> dict[str, float]:
    """The 001 Table 1 metrics (models.encoder.encoder_metrics) of the population run."""
    pr = problem(TABLE1, backend)
    G = torch.tensor(run(TABLE1, TABLE1_ETA, TABLE1_STEPS, backend)[-1]).to(backend.device, backend.torch_dtype)
    return enc.encoder_metrics(pr, G, TABLE1_HELDOUT, HELDOUT_SEED)


@functools.cache
def subspace(cfg: enc.SubspaceConfig, checkpoints: tuple[int, ...], backend: Backend, seed: int = 0):
    """(S_n, U_n) at the checkpoints as float64 numpy, plus the model's U_*, Sigma_z (float64)."""
    out = enc.subspace_estimates(cfg, list(checkpoints), backend.device, backend.torch_dtype, seed=seed)
    pr = GaussianPrompts(cfg.task_config(), "cpu", torch.float64, rank=cfg.r, kappa_z=cfg.kappa_z)
    return (to_numpy(out.S), to_numpy(out.U), pr.U_star64.numpy().copy(), pr.Sigma_z64.numpy().copy(),
            list(out.ns))


@functools.cache
def gaussian_prompts(K: int, M: int, kappa: float, backend: Backend, ridge: float = 1e-2,
                     seed: int = 0) -> GaussianPrompts:
    cfg = TaskConfig(K=K, M=M, kappa=kappa, ridge=ridge, seed=seed)
    return GaussianPrompts(cfg, backend.device, backend.torch_dtype)


def whitened_trials(K: int, M: int, kappa: float, trials: int, seed: int, backend: Backend):
    """The SUT's whitened covariances of `trials` fresh designs, as float64 numpy:
    (W (n,K,K), X (n,M,K), Sigma_x^{-1/2} (K,K))."""
    pr = gaussian_prompts(K, M, kappa, backend)
    X = pr.design(trials, seed)
    W = pr.whitened(X)
    return to_numpy(W), to_numpy(X), to_numpy(pr.Sigma_x_inv_sqrt)


def prompt_H(source: str, K: int, M: int, ridge: float, kappa: float, seed: int,
             backend: Backend) -> tuple[np.ndarray, np.ndarray]:
    """(H_M, H_inf) of one prompt from the decoder's sampler (models.tasks) or the Gaussian one."""
    cfg = TaskConfig(K=K, M=M, kappa=kappa, ridge=ridge, seed=seed % 1000)
    if source == "lsq":
        pr = LeastSquaresPrompts(cfg, backend.device, backend.torch_dtype)
        H = pr.sample(1, seed).H[0]
    else:
        pr = GaussianPrompts(cfg, backend.device, backend.torch_dtype)
        H = pr.prompts(1, seed).H[0]
    return to_numpy(H), to_numpy(pr.population_H())


def clear_caches() -> None:
    for f in (problem, run, table1, subspace, gaussian_prompts):
        f.cache_clear()
