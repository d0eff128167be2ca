"""The GP/KRR and PDE decoder checkpoints as the certificates see them (000 sec 4-6; 001 sec 5.4).

One decoder per (family, prompt size, preconditioner class, depth L), trained by
models.train.train on the family's task sampler (models.gp.GPTaskConfig: posterior-latent
solves, K = 4; models.pde.PDETaskConfig: encoded query solves on 24 nodes, K = 4 coefficients)
and cached like certify.sut's.  `table` is the one place where a checkpoint's metrics and its
rigorous norm-bound verdicts are computed; gp.method_comparison, pde.method_comparison,
sweep.scaling and eb.heldout all read it, so each checkpoint is certified once per process.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

import models
from certify import sut
from certify.backend import Backend
from models import gp as gp_mod
from models import pde as pde_mod

FAMILIES = ("gp", "pde")
PROMPT_SIZES = {"gp": gp_mod.PROMPT_SIZES, "pde": pde_mod.PROMPT_SIZES}  # 000 sec 6: [16, 64], [4, 16]
SIZE_LABEL = {"gp": "n", "pde": "M"}  # prompt size symbols: GP points n, PDE solution pairs M
DEPTHS = (1, 2, 3, 4, 6, 8)  # the sweep's depths; 2 families x 2 sizes x 4 classes x 6 depths = 96 rows
DEFAULT_L = 6  # the method-comparison depth (that of the least-squares decoders)
N_HELDOUT = 512
N_FIGURE = 128  # tasks whose error curves go into the figures


def task_config(family: str, size: int) -> gp_mod.GPTaskConfig | pde_mod.PDETaskConfig:
    if family == "gp":
        return gp_mod.GPTaskConfig(m=gp_mod.RANK, n=size, sigma=gp_mod.SIGMA)
    if family == "pde":
        return pde_mod.PDETaskConfig(M=size)
    raise ValueError(f"unknown task family {family!r}; choose from {FAMILIES}")


def train_config(family: str, size: int, cls: str, backend: Backend, L: int = DEFAULT_L) -> models.TrainConfig:
    """CPU tier: 300 Adam steps of 128 tasks (as the least-squares decoders); cuda tier: 1000 of 512."""
    steps, batch = (1000, 512) if backend.device == "cuda" else (300, 128)
    return models.TrainConfig(cls=cls, task=task_config(family, size), L=L, steps=steps, batch=batch,
                              lr=1e-2, seed=0, device=backend.device, dtype=backend.dtype)


def trained(family: str, size: int, cls: str, backend: Backend, L: int = DEFAULT_L) -> models.RichardsonDecoder:
    return sut.load_trained(train_config(family, size, cls, backend, L))


@functools.cache
def heldout(family: str, size: int, backend: Backend) -> models.Tasks:
    """Held-out tasks of the family at this prompt size (a seed no trainer uses)."""
    sampler = task_config(family, size).sampler(backend.device, backend.torch_dtype)
    return sampler.sample(N_HELDOUT, sut.HELDOUT_SEED)


def label(family: str, size: int) -> str:
    return f"{SIZE_LABEL[family]}{size}"


@functools.cache
def losses(family: str, size: int, cls: str, backend: Backend, L: int = DEFAULT_L) -> np.ndarray:
    """Per-task held-out decoder losses ||x_L - x*||^2 / K (what the decoder's EB bound certifies)."""
    return sut.to_numpy(models.metrics.depth_losses(trained(family, size, cls, backend, L),
                                                    heldout(family, size, backend)))


@functools.cache
def table(family: str, size: int, cls: str, backend: Backend, L: int = DEFAULT_L) -> dict[str, Any]:
    """The checkpoint's metrics (models.checkpoint_metrics; for PDE also models.pde.query_metrics)
    and the rigorous norm-bound verdict of every held-out task (certify.sut.certify_heldout)."""
    dec = trained(family, size, cls, backend, L)
    tasks = heldout(family, size, backend)
    out: dict[str, Any] = {k: v for k, v in models.checkpoint_metrics(dec, tasks, sut.EB_CLIP, sut.EB_DELTA).items()
                           if isinstance(v, float)}
    out["risk"] = out.pop("heldout_risk")
    if family == "pde":
        out.update(pde_mod.query_metrics(dec, tasks, sut.EB_CLIP, sut.EB_DELTA))
    chk = sut.certify_heldout(dec, tasks, backend.unit_roundoff, N_FIGURE)
    if chk["uncertified_rho"]:
        raise AssertionError(f"{family} {label(family, size)} {cls} L={L} tasks {chk['uncertified_rho']}: rho "
                             "is below a rigorous lower bound on ||I - PH||_2")
    out["rigorous_violations"] = chk["violations"]
    out["rigorous_violation_rate"] = chk["violations"] / len(tasks)
    out["max_tightness"] = chk["max_tightness"]
    out["n_tasks"] = len(tasks)
    out["K"] = tasks.K
    out["curves"] = chk["curves"]
    return out


def group(family: str, size: int, L: int = DEFAULT_L) -> str:
    """The xdist group of one (family, prompt size, depth): its checkpoints' tests share a worker."""
    return f"{family}-{label(family, size)}-L{L}"


def setup(family: str) -> dict[str, str | float]:
    """What golden files pinning these checkpoints state about them (backend independent)."""
    task = task_config(family, PROMPT_SIZES[family][0])
    return {
        **task.describe(),
        f"{family}.prompt_sizes": ", ".join(str(s) for s in PROMPT_SIZES[family]),
        f"{family}.training": "Adam lr 1e-2, seed 0: 300 steps x 128 tasks (CPU tier), 1000 x 512 (cuda tier)",
        f"{family}.heldout": f"{N_HELDOUT} tasks, seed {sut.HELDOUT_SEED}; EB c = {sut.EB_CLIP}, delta = {sut.EB_DELTA}",
    }


@functools.cache
def e2e_losses(size: int, cls: str, backend: Backend, L: int = DEFAULT_L) -> np.ndarray:
    """Per-task end-to-end PDE query losses ||u_L - u*||^2 / n (models.pde.query_losses)."""
    return sut.to_numpy(pde_mod.query_losses(trained("pde", size, cls, backend, L), heldout("pde", size, backend)))


def standard_configs(backend: Backend) -> list[models.TrainConfig]:
    """Every checkpoint the default tier trains on `backend`: the least-squares decoders of
    certify.sut and the GP/PDE decoders at the method-comparison depth."""
    return [sut.train_config(cls, backend) for cls in sut.CLASSES] + [
        train_config(family, size, cls, backend) for family in FAMILIES for size in PROMPT_SIZES[family]
        for cls in sut.CLASSES]
