"""The outer-dynamics SUTs (models.outer) as the certificates see them: cases of
properties.outer materialized on a backend, and the cached fixed-configuration runs
(the seed-comparison online run, the trajectory figure runs, the finite-task rate sweep).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from certify.backend import Backend
from models import outer
from models.tasks import TaskConfig

# Seeds of the fixed configurations (parameters, never random values).
EVAL_SEED = 30_000
MOMENT_SEED = 31_000
ONLINE_SEED = 32_000
RATE_SEED = 33_000


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


def checkpoints(steps: int) -> list[int]:
    """0, 1, 2, 4, ... and steps: a log-spaced set of outer times."""
    cps = {0, steps}
    s = 1
    while s < steps:
        cps.add(s)
        s *= 2
    return sorted(cps)


# --------------------------------------------------------------------------- #
# hypothesis cases
# --------------------------------------------------------------------------- #
def linear_tasks(K: int, rank: int, kind: str, kappa: float, noise: float, base: str, seed: int,
                 backend: Backend) -> outer.LinearTasks:
    cfg = outer.LinearTaskConfig(K=K, rank=rank, kind=kind, kappa=kappa, noise=noise, base=base, seed=seed)
    return outer.LinearTasks(cfg, backend.device, backend.torch_dtype)


@functools.cache
def population_run(case, backend: Backend):
    """(moments, run) of a properties.outer.PopulationCase (cached: the trajectory and the
    mode checks may share a case)."""
    tasks = linear_tasks(case.K, case.rank, case.kind, case.kappa, case.noise, "gaussian", case.seed, backend)
    mom = tasks.moments()
    eta = outer.step_size(mom, case.c_eta)
    if case.init == "zero":
        P0 = torch.zeros(case.K, case.K, device=backend.device, dtype=backend.torch_dtype)
    else:
        P0 = outer.initial_P(case.K, case.seed, device=backend.device, dtype=backend.torch_dtype)
    run = outer.train_population(mom, eta, case.steps, P0, checkpoints(case.steps))
    return mom, run


def moments_numpy(mom: outer.Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return to_numpy(mom.C), to_numpy(mom.B), to_numpy(mom.S)


def finite_data(case, backend: Backend):
    """(moments, D, Z, P_N, P*_SUT) of a properties.outer.FiniteCase (tasks as columns)."""
    tasks = linear_tasks(case.K, case.rank, case.kind, case.kappa, case.noise, case.base, case.seed, backend)
    d, z = tasks.sample(case.N, case.seed)
    D, Z = d.T.contiguous(), z.T.contiguous()
    mom = tasks.moments()
    return mom, D, Z, outer.fit_finite(D, Z), outer.oracle(mom)


def online_replicates(case, backend: Backend, replicates: int, n_eval: int):
    """(moments, eta, P0, run, eval_set) of a properties.outer.OnlineCase: `replicates`
    independent online runs with a shared held-out evaluation set of n_eval tasks."""
    tasks = linear_tasks(case.K, case.rank, "generic", case.kappa, case.noise, "gaussian", case.seed, backend)
    mom = tasks.moments()
    eta = outer.step_size(mom, case.c_eta)
    if case.init == "zero":
        P0 = torch.zeros(case.K, case.K, device=backend.device, dtype=backend.torch_dtype)
    else:
        P0 = outer.initial_P(case.K, case.seed, device=backend.device, dtype=backend.torch_dtype)
    ev = tasks.sample(n_eval, EVAL_SEED + case.seed % 1000)
    cps = sorted({case.steps // 4, case.steps // 2, case.steps} - {0})
    run = outer.train_online(tasks, eta, case.steps, case.batch, P0, seed=case.seed, replicates=replicates,
                             eval_set=ev, checkpoints=cps)
    return mom, eta, P0, run, ev


# --------------------------------------------------------------------------- #
# fixed configurations
# --------------------------------------------------------------------------- #
# The trajectory figure: a full-rank and a singular C (K = 8), 400 outer steps at
# eta = 1/lambda_max(C), P_0 random (so the singular run keeps a null-space component).
TRAJECTORY_CONFIGS = {
    "full_rank_K8_kappa100": dict(K=8, rank=8, kind="generic", kappa=100.0),
    "singular_K8_rank5": dict(K=8, rank=5, kind="integer", kappa=1.0),
}
TRAJECTORY_STEPS = 400
TRAJECTORY_SEED = 7


@functools.cache
def trajectory_run(name: str, backend: Backend):
    c = TRAJECTORY_CONFIGS[name]
    tasks = linear_tasks(c["K"], c["rank"], c["kind"], c["kappa"], 0.5, "gaussian", TRAJECTORY_SEED, backend)
    mom = tasks.moments()
    eta = outer.step_size(mom, 1.0)
    P0 = outer.initial_P(c["K"], TRAJECTORY_SEED, device=backend.device, dtype=backend.torch_dtype)
    cps = sorted(set(range(0, TRAJECTORY_STEPS + 1, 10)) | set(checkpoints(TRAJECTORY_STEPS)))
    return mom, outer.train_population(mom, eta, TRAJECTORY_STEPS, P0, cps)


# The seed-comparison online run (seed 002 sec 11 / 12.5): in-context least-squares
# prompts (K = 8, M = 32, kappa = 20, noise 0.1, ridge 1e-2: the foundation's task
# config), d = c_M, z* = x*; moments estimated once from 2^16 prompts and treated as the
# population; eta = 1/lambda_max(C); batches of 256 prompts; 800 outer steps (the seed's
# s = 800); observed risk on 8192 held-out prompts every 20 steps; P_0 = 0.
LSQ_TASK = TaskConfig(K=8, M=32, kappa=20.0)
LSQ_MOMENT_SAMPLES = 1 << 16
LSQ_BATCH = 256
LSQ_STEPS = 800
LSQ_EVAL = 8192
LSQ_EVERY = 20
LSQ_NAME = "lsq_K8_M32_b256_S800"


@functools.cache
def lsq_moments64() -> outer.Moments:
    """The prompt distribution's moments, estimated once from 2^16 prompts (float64, CPU)."""
    return outer.PromptTasks(LSQ_TASK).estimated_moments(LSQ_MOMENT_SAMPLES, MOMENT_SEED)


@functools.cache
def lsq_online(backend: Backend) -> dict:
    """Online vs population curves of the seed-comparison configuration (floats only)."""
    tasks = outer.PromptTasks(LSQ_TASK, backend.device, backend.torch_dtype)
    mom = lsq_moments64().to(backend.device, backend.torch_dtype)
    eta = outer.step_size(mom, 1.0)
    K = LSQ_TASK.K
    P0 = torch.zeros(K, K, device=backend.device, dtype=backend.torch_dtype)
    cps = list(range(0, LSQ_STEPS + 1, LSQ_EVERY))
    ev = tasks.sample(LSQ_EVAL, EVAL_SEED)
    online = outer.train_online(tasks, eta, LSQ_STEPS, LSQ_BATCH, P0, seed=ONLINE_SEED, eval_set=ev,
                                checkpoints=cps)
    pop = outer.train_population(mom, eta, LSQ_STEPS, P0, cps)
    Pstar = pop.P_star
    observed = [float(r[0]) for r in online.observed_risk]
    predicted = list(pop.risk)
    final_online = online.P[-1][0]
    norm_star = float(torch.linalg.norm(Pstar))
    rel_online = [float(torch.linalg.norm(P[0] - Pstar)) / norm_star for P in online.P]
    rel_pop = [float(torch.linalg.norm(P - Pstar)) / norm_star for P in pop.P]
    abs_gap = [abs(o - p) for o, p in zip(observed, predicted)]
    return {
        "steps": cps, "observed": observed, "predicted": predicted, "oracle_risk": pop.risk_star,
        "eta": eta, "rel_online": rel_online, "rel_population": rel_pop,
        "max_abs_discrepancy": max(abs_gap),
        "max_rel_discrepancy": max(g / p for g, p in zip(abs_gap, predicted)),
        "final_observed_risk": observed[-1], "final_predicted_risk": predicted[-1],
        "rel_dist_oracle_final": float(torch.linalg.norm(final_online - Pstar)) / norm_star,
    }


@functools.cache
def lsq_sandwich() -> dict:
    """The asymptotic constant of finite_task.rate on the prompt distribution, which is
    misspecified (z* = H^{-1} d is not linear in d): N E[excess] -> E[||eps||^2 d^T C^+ d] / K
    (the sandwich) instead of sigma_task^2 rank(C) / K, eps = z* - P* d, sigma_task^2 =
    E||eps||^2.  Estimated from a fresh sample of 2^15 prompts in float64 with the
    estimated moments (the population of the seed-comparison run)."""
    mom = lsq_moments64()
    d, z = outer.PromptTasks(LSQ_TASK).sample(1 << 15, MOMENT_SEED + 1)
    Pstar = outer.oracle(mom)
    Cp = torch.linalg.pinv(mom.C, hermitian=True)
    eps = z - d @ Pstar.T
    e2 = (eps * eps).sum(-1)
    lev = ((d @ Cp) * d).sum(-1)
    K = LSQ_TASK.K
    rank = int(torch.linalg.matrix_rank(mom.C))
    sandwich = float((e2 * lev).mean()) / K
    homo = float(e2.mean()) * rank / K
    return {"sandwich": sandwich, "homoscedastic": homo, "ratio": sandwich / homo, "rank": rank}


# The finite-task rate sweep: N in 128..4096 (x2), 200 replicate task sets per N; two
# Gaussian distributions with exact expectation sigma^2 r / (N - r - 1): full rank K = 6
# (kappa 100) and rank 3 in K = 8 (d_eff = rank(C) = 3 < K).
RATE_NS = (128, 256, 512, 1024, 2048, 4096)
RATE_REPLICATES = 200
RATE_CONFIGS = {
    "full_rank_K6": dict(K=6, rank=6, kind="generic", kappa=100.0, noise=0.5),
    "rank3_K8": dict(K=8, rank=3, kind="generic", kappa=10.0, noise=0.5),
}


@functools.cache
def rate_sweep(name: str, backend: Backend) -> dict:
    """Exact population excess K^{-1} Tr[(P_N - P*) C (P_N - P*)^T] of the SUT's fit on
    RATE_REPLICATES independent task sets per N (float64 evaluation of the SUT's P_N)."""
    c = RATE_CONFIGS[name]
    tasks = linear_tasks(c["K"], c["rank"], c["kind"], c["kappa"], c["noise"], "gaussian", RATE_SEED, backend)
    mom = tasks.moments()
    C, B, S = moments_numpy(mom)
    Pstar = to_numpy(outer.oracle(mom))
    K, R = c["K"], RATE_REPLICATES
    excess = {}
    for N in RATE_NS:
        d, z = tasks.sample(N * R, RATE_SEED + N)
        D = d.view(R, N, K).transpose(1, 2)
        Z = z.view(R, N, K).transpose(1, 2)
        PN = to_numpy(outer.fit_finite(D, Z))  # batched over the R task sets
        E = PN - Pstar
        excess[N] = np.einsum("rij,jk,rik->r", E, C, E) / K
    return {"excess": excess, "C": C, "P_star": Pstar, **c}


def total_noise(name: str) -> float:
    """sigma_task^2 = E||z* - P* d||^2 = K sigma^2 of a rate configuration."""
    c = RATE_CONFIGS[name]
    return c["K"] * c["noise"] ** 2


def rank_of(name: str) -> int:
    return RATE_CONFIGS[name]["rank"]

