"""The overlap family's SUT as the certificates see it: logged decoder training trajectories.

models.overlap.train_logged trains each preconditioner class exactly like models.train.train
(same init, batches and Adam steps) and logs a checkpoint plus its overlap order parameters
every few steps on a fixed evaluation set (the first held-out tasks of certify.sut, or of
certify.sut_families for the GP/KRR and PDE trajectories of 000 sec 8).  Cached per process
with functools.cache, like certify.sut.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

import numpy as np

import models
from certify import sut, sut_families
from certify.backend import Backend
from models import overlap
from properties import overlap as ref

CLASSES = sut.CLASSES  # free_linear, diagonal, flexformer, softmax (Jacobian form)
# (family, prompt size) of the logged trajectories: the least-squares decoders and, as in 000
# sec 8, the GP/KRR (n = 64) and PDE (M = 16) decoders of certify.sut_families.
TRAJECTORY_FAMILIES = (("lsq", 0), ("gp", 64), ("pde", 16))


def schedule(backend: Backend, family: str = "lsq") -> tuple[int, int, int]:
    """(steps, every, n_eval): 120 Adam steps logged every 20 on 64 tasks on the CPU tier (PDE,
    K = 24: 16 tasks, the arb references cost ~K^3 per task); 600 every 100 on 32 tasks at the
    cuda tier."""
    if backend.device == "cuda":
        return 600, 100, 32
    return 120, 20, (16 if family == "pde" else 64)


def trajectory_config(cls: str, backend: Backend, family: str = "lsq", size: int = 0) -> models.TrainConfig:
    """The checkpoint's training config with the logged schedule's number of steps."""
    steps, _, _ = schedule(backend, family)
    base = sut.train_config(cls, backend) if family == "lsq" else sut_families.train_config(family, size, cls, backend)
    return dataclasses.replace(base, steps=steps)


@functools.cache
def eval_tasks(backend: Backend, family: str = "lsq", size: int = 0) -> models.Tasks:
    _, _, n = schedule(backend, family)
    held = sut.heldout(backend) if family == "lsq" else sut_families.heldout(family, size, backend)
    return held[0:n]


@functools.cache
def trajectory(cls: str, backend: Backend, family: str = "lsq", size: int = 0) -> overlap.LoggedRun:
    """The logged training run of `cls` on `backend` (tasks of `family` at prompt `size`)."""
    cfg = trajectory_config(cls, backend, family, size)
    t0 = time.perf_counter()
    run = overlap.train_logged(cfg, eval_tasks(backend, family, size), schedule(backend, family)[1])
    if time.perf_counter() - t0 > 2:
        print(f"\n[certify] logged {family} {cls} trajectory ({cfg.steps} steps) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return run


@functools.cache
def labels(backend: Backend, family: str = "lsq", size: int = 0) -> np.ndarray:
    """Rigorous ||x^*_i - H_i^{-1} d_i|| of the evaluation tasks' labels."""
    t = eval_tasks(backend, family, size)
    return ref.label_errors(sut.to_numpy(t.H), sut.to_numpy(t.d), sut.to_numpy(t.xstar))
