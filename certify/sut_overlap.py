"""The overlap family's SUT as the certificates see it: logged decoder training trajectories.

models.overlap.train_logged trains each preconditioner class exactly like models.train.train
(same init, batches and Adam steps) and logs a checkpoint plus its overlap order parameters
every EVERY steps on a fixed evaluation set (the first N_EVAL held-out tasks of certify.sut).
Cached per process with functools.cache, like certify.sut.
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np

import models
from certify import sut
from certify.backend import Backend
from models import overlap
from properties import overlap as ref

CLASSES = sut.CLASSES  # free_linear, diagonal, flexformer, softmax (Jacobian form)
PENDING = ("GP/KRR and PDE checkpoint trajectories (000 sec 8): pending -- those trainers do not exist "
           "yet (a later issue); certified here on the decoder trajectories of every preconditioner class "
           "(softmax in Jacobian form)")


def schedule(backend: Backend) -> tuple[int, int, int]:
    """(steps, every, n_eval): 120 Adam steps logged every 20 on 64 tasks on the CPU tier;
    600 every 100 on 32 tasks at the cuda tier's K = 64."""
    if backend.device == "cuda":
        return 600, 100, 32
    return 120, 20, 64


def trajectory_config(cls: str, backend: Backend) -> models.TrainConfig:
    steps, _, _ = schedule(backend)
    base = sut.train_config(cls, backend)
    return models.TrainConfig(cls=cls, task=base.task, L=base.L, steps=steps, batch=base.batch, lr=base.lr,
                              seed=base.seed, device=backend.device, dtype=backend.dtype)


@functools.cache
def eval_tasks(backend: Backend) -> models.Tasks:
    _, _, n = schedule(backend)
    return sut.heldout(backend)[0:n]


@functools.cache
def trajectory(cls: str, backend: Backend) -> overlap.LoggedRun:
    """The logged training run of `cls` on `backend`."""
    cfg = trajectory_config(cls, backend)
    t0 = time.perf_counter()
    run = overlap.train_logged(cfg, eval_tasks(backend), schedule(backend)[1])
    if time.perf_counter() - t0 > 2:
        print(f"\n[certify] logged {cls} trajectory ({cfg.steps} steps) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return run


@functools.cache
def labels(backend: Backend) -> np.ndarray:
    """Rigorous ||x^*_i - H_i^{-1} d_i|| of the evaluation tasks' labels."""
    t = eval_tasks(backend)
    return ref.label_errors(sut.to_numpy(t.H), sut.to_numpy(t.d), sut.to_numpy(t.xstar))
