"""The systems under test as the certificates see them: trained tiers, held-out tasks.

The CPU tier trains at small K in seconds (and caches the checkpoints, keyed by
config and models source hash); the cuda tier trains at the seeds' size K = 64.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from models.metrics import depth_losses
from models.dtypes import as_dtype
from models.train import checkpoint_path
from certify.backend import Backend
from properties import richardson as ref
from properties.reference import memo

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("free_linear", "diagonal", "flexformer", "softmax")
# Held-out task seeds are far from the trainer's derived batch seeds.
HELDOUT_SEED = 10_000
ORACLE_SEED = 20_000
EB_CLIP = 1.0  # c of the clipped EB certificate (losses ||e_L||^2 / K); stated in golden/
EB_DELTA = 0.05


def cache_dir() -> Path:
    """Env CERTIFY_CACHE, else <repo>/.certify-cache (the references' memo lives there too)."""
    return memo.cache_root()


def task_config(backend: Backend) -> models.TaskConfig:
    if backend.device == "cuda":
        return models.TaskConfig(K=64, M=256, kappa=100.0)  # the seeds' K = 64 tier
    return models.TaskConfig(K=8, M=32, kappa=20.0)


def train_config(cls: str, backend: Backend) -> models.TrainConfig:
    steps = 600 if backend.device == "cuda" else 300
    return models.TrainConfig(cls=cls, task=task_config(backend), L=6, steps=steps,
                              batch=128, lr=1e-2, seed=0, device=backend.device, dtype=backend.dtype)


# Where a checkpoint missing from the shared cache is trained instead, when set.  The suite's
# own tests set it (per test) so that a mutant planted in the SUT can never train a poisoned
# checkpoint into the cache the certificates read; see tests/conftest.py.
PRIVATE_TRAINING_DIR: Path | None = None


def trained(cls: str, backend: Backend) -> models.RichardsonDecoder:
    """The trained checkpoint of `cls` on `backend` (from the cache, else trained now)."""
    return load_trained(train_config(cls, backend))


def load_trained(cfg: models.TrainConfig) -> models.RichardsonDecoder:
    """The checkpoint of `cfg` from the shared cache, else trained now (with a progress line) into
    the shared cache -- or into PRIVATE_TRAINING_DIR when that is set; frozen."""
    shared = cache_dir()
    if PRIVATE_TRAINING_DIR is not None and not checkpoint_path(cfg, shared).exists():
        return _load_trained(cfg, Path(PRIVATE_TRAINING_DIR))
    return _load_trained(cfg, shared)


@functools.cache
def _load_trained(cfg: models.TrainConfig, directory: Path) -> models.RichardsonDecoder:
    path = checkpoint_path(cfg, directory)
    label = f"{cfg.cls} decoder ({cfg.task.family}: {cfg.task}, L={cfg.L}, {cfg.steps} steps, " \
            f"{cfg.device}-{cfg.dtype})"
    if not path.exists():
        print(f"\n[certify] training {label} -> {path}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    dec = models.load_or_train(cfg, directory)
    dec.requires_grad_(False)
    if time.perf_counter() - t0 > 1:
        print(f"[certify] {label} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return dec


def prewarm(cfgs: list[models.TrainConfig]) -> None:
    """Train (or check) every config into the shared cache.  xdist workers walk the list from
    different offsets, so on an empty cache they train different checkpoints at once (the file
    lock of models.train.load_or_train makes a second asker wait and then load)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    k = int(worker[2:]) if worker[2:].isdigit() else 0
    n = len(cfgs)
    start = (k * n) // max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    for cfg in cfgs[start:] + cfgs[:start]:
        _load_trained(cfg, cache_dir())


# 002 sec 12.9: "Increasing prompt size improves the population contraction, for example from
# about 0.576 at M = 1024 to about 0.251 at M = 4096 in the checked K = 64, condition 100
# setting" -- the seeds' prompt sizes, trained in the cuda tier (certify/test_richardson.py::
# test_contraction_vs_prompt_size); the CPU tier's decoders stay at K = 8, M = 32.
SEED_SCALE_K, SEED_SCALE_KAPPA, SEED_SCALE_PROMPTS = 64, 100.0, (1024, 4096)


def prompt_scale_config(cls: str, M: int, backend: Backend, K: int = SEED_SCALE_K,
                        kappa: float = SEED_SCALE_KAPPA, steps: int = 600) -> models.TrainConfig:
    return models.TrainConfig(cls=cls, task=models.TaskConfig(K=K, M=M, kappa=kappa), L=6, steps=steps,
                              batch=128, lr=1e-2, seed=0, device=backend.device, dtype=backend.dtype)


def prompt_scale_row(cfg: models.TrainConfig, n: int = 512) -> dict[str, Any]:
    """A decoder trained at `cfg`'s prompt size on `n` held-out tasks of that size: the mean
    contraction E ||I - P H||_2 and the rigorous 000 eq 4 verdict of every task."""
    dec = load_trained(cfg)
    tasks = models.LeastSquaresPrompts(cfg.task, cfg.device, as_dtype(cfg.dtype)).sample(n, HELDOUT_SEED)
    m = models.checkpoint_metrics(dec, tasks, EB_CLIP, EB_DELTA)
    chk = certify_heldout(dec, tasks, Backend(cfg.device, cfg.dtype).unit_roundoff)
    return {"M": cfg.task.M, "K": cfg.task.K, "mean_contraction": m["mean_contraction"], "risk": m["heldout_risk"],
            "violations": chk["violations"], "uncertified_rho": chk["uncertified_rho"], "n_tasks": n}


@functools.cache
def heldout(backend: Backend, n: int = 512) -> models.Tasks:
    """Held-out prompts from the training distribution (a seed no trainer uses)."""
    prompts = models.LeastSquaresPrompts(task_config(backend), backend.device, backend.torch_dtype)
    return prompts.sample(n, HELDOUT_SEED)


@functools.cache
def oracle(backend: Backend) -> torch.Tensor:
    prompts = models.LeastSquaresPrompts(task_config(backend), backend.device, backend.torch_dtype)
    return models.oracle_P(prompts, 20_000, ORACLE_SEED)


def frozen_P(decoder: models.RichardsonDecoder, x0: torch.Tensor, H: torch.Tensor,
             d: torch.Tensor) -> torch.Tensor:
    """The matrix of the decoder's update: global P, or the softmax map's Jacobian at (x0,H,d)."""
    pc = decoder.precond
    if pc.is_linear:
        return pc.frozen_matrix()
    return pc.frozen_matrix(x0[None], H[None], d[None])[0]


def linear_decoder(decoder: models.RichardsonDecoder, P: torch.Tensor, L: int) -> models.RichardsonDecoder:
    """The decoder run for the Richardson claims: the module itself for linear classes,
    the Jacobian form (a FrozenLinear of the softmax Jacobian) for the nonlinear map."""
    if decoder.precond.is_linear:
        return models.RichardsonDecoder(decoder.precond, L)
    return models.RichardsonDecoder(models.FrozenLinear(P), L)


@torch.no_grad()
def run(decoder: models.RichardsonDecoder, H: torch.Tensor, d: torch.Tensor,
        x0: torch.Tensor) -> list[np.ndarray]:
    """[x_0, ..., x_L] of one task as float64 numpy arrays (float32 values kept exactly)."""
    xs = decoder(H[None], d[None], x0=x0[None], trajectory=True)
    return [to_numpy(x[0]) for x in xs]


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


def materialize(case, backend: Backend) -> tuple[models.RichardsonDecoder, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(decoder, H, d, x_0) of a `properties.strategies.RichardsonCase` on `backend`."""
    dev, dt = backend.device, backend.torch_dtype
    if case.source == "checkpoint":
        dec, tasks = checkpoint(case.family, case.size, case.cls, backend)
        H, d = tasks.H[case.task], tasks.d[case.task]
    else:
        pc = models.build_preconditioner(case.cls, case.K, device=dev, dtype=dt, seed=case.seed)
        pc.requires_grad_(False)
        dec = models.RichardsonDecoder(pc, case.L)
        H, d = models.spd_system(case.K, case.kappa, case.seed, device=dev, dtype=dt)
    if case.x0 == "zero":
        x0 = torch.zeros_like(d)
    else:
        g = torch.Generator().manual_seed(case.seed % (2**63))
        x0 = torch.randn(d.shape[-1], generator=g, dtype=torch.float64).to(device=dev, dtype=dt)
    return dec, H, d, x0


def checkpoint(family: str, size: int, cls: str, backend: Backend) -> tuple[models.RichardsonDecoder, models.Tasks]:
    """(trained decoder, its held-out tasks) of a checkpoint family: "lsq" (this module's
    least-squares decoders; size ignored) or "gp" / "pde" (certify.sut_families at prompt size)."""
    if family == "lsq":
        return trained(cls, backend), heldout(backend)
    from certify import sut_families  # it builds on this module

    return sut_families.trained(family, size, cls, backend), sut_families.heldout(family, size, backend)


@functools.cache
def table2(cls: str, backend: Backend) -> dict[str, float]:
    """The 001 Table 2 metrics (models.checkpoint_metrics) of a trained checkpoint, floats only."""
    m = models.checkpoint_metrics(trained(cls, backend), heldout(backend), EB_CLIP, EB_DELTA,
                                  oracle_P=oracle(backend))
    return {k: v for k, v in m.items() if isinstance(v, float)}


def certify_heldout(decoder: models.RichardsonDecoder, tasks: models.Tasks, u: float,
                    n_figure: int = 128) -> dict:
    """000 eq 4 on every held-out task, rigorously (properties.richardson.norm_bound_check: rho a
    certified upper bound on ||I - P H||_2, the exact e_L in arb, the SUT's e_L within its derived
    rounding tolerance; the softmax map in Jacobian form at x_0 = 0).

    Returns the violation count, the tasks whose rho failed its rigorous lower-bound check, the
    largest ||e_L|| / bound, and the median / 10-90% error curves and median bound curve over
    l = 0..L of the first `n_figure` tasks (figure data)."""
    violations, uncertified, tight, errs, bounds = 0, [], 0.0, [], []
    for i in range(len(tasks)):
        H, d = tasks.H[i], tasks.d[i]
        x0 = torch.zeros_like(d)
        P = frozen_P(decoder, x0, H, d)
        xs = run(linear_decoder(decoder, P, decoder.L), H, d, x0)
        Pn, Hn, dn = to_numpy(P), to_numpy(H), to_numpy(d)
        chk = ref.norm_bound_check(Pn, Hn, dn, xs, u)
        violations += int(not (chk.exact_holds and chk.sut_holds))
        if not chk.rho_certified:
            uncertified.append(i)
        tight = max(tight, chk.tightness)
        if i < n_figure:
            xstar = np.linalg.solve(Hn, dn)
            errs.append([float(np.linalg.norm(x - xstar)) for x in xs])
            bounds.append([chk.rho ** l * float(np.linalg.norm(xstar)) for l in range(len(xs))])
    e, b = np.array(errs), np.array(bounds)
    curves = {"median_error": np.median(e, 0).tolist(), "q10_error": np.quantile(e, 0.1, 0).tolist(),
              "q90_error": np.quantile(e, 0.9, 0).tolist(), "median_bound": np.median(b, 0).tolist()}
    return {"violations": violations, "uncertified_rho": uncertified, "max_tightness": tight,
            "n_figure": len(errs), "curves": curves}


@functools.cache
def heldout_losses(cls: str, backend: Backend) -> np.ndarray:
    """The per-task losses the SUT's EB bound is computed from (models.metrics.depth_losses)."""
    return to_numpy(depth_losses(trained(cls, backend), heldout(backend)))
