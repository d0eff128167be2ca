"""Hypothesis strategies: what the certificates draw (numpy only, no torch).

Everything random is a drawn seed fed to numpy's Generator, so a shrunk example
is a handful of integers and floats that reproduce the case exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@dataclass(frozen=True)
class LossCase:
    """Losses for the EB formula check; `kind` says how they were generated."""

    kind: str
    n: int
    seed: int
    c: float
    delta: float

    @property
    def losses(self) -> np.ndarray:
        g = np.random.default_rng(self.seed)
        if self.kind == "uniform":
            return g.uniform(0, 1.5 * self.c, self.n)  # a third of them clip
        if self.kind == "heavy":
            return self.c * g.pareto(1.5, self.n)
        if self.kind == "constant":
            return np.full(self.n, 0.3 * self.c)
        if self.kind == "bernoulli":
            return self.c * (g.random(self.n) < 0.1)
        if self.kind == "tiny":
            return self.c * 1e-12 * g.random(self.n)
        raise ValueError(self.kind)


LOSS_KINDS = ("uniform", "heavy", "constant", "bernoulli", "tiny")


@st.composite
def loss_cases(draw: st.DrawFn) -> LossCase:
    return LossCase(
        kind=draw(st.sampled_from(LOSS_KINDS)),
        n=draw(st.integers(min_value=2, max_value=2000)),
        seed=draw(SEEDS),
        c=draw(st.floats(min_value=1e-3, max_value=1e3)),
        delta=draw(st.floats(min_value=1e-9, max_value=0.5)),
    )


PRECONDITIONER_CLASSES = ("free_linear", "diagonal", "flexformer", "softmax")
# Trained checkpoint families and their prompt sizes (least squares has one tier, size 0):
# models.gp.PROMPT_SIZES and models.pde.PROMPT_SIZES (a test asserts they agree; properties
# does not import the torch models).
CHECKPOINT_FAMILIES = {"lsq": (0,), "gp": (16, 64), "pde": (4, 16)}


@dataclass(frozen=True)
class RichardsonCase:
    """One decoder run: a preconditioner (trained checkpoint or seeded init), a system, L, x_0.

    source "checkpoint": the trained decoder of `cls` on a held-out task (index `task`) of a
    checkpoint family (`family` "lsq": the in-context least-squares decoders; "gp" / "pde": the
    GP posterior-latent and PDE query decoders at prompt size `size`);
    source "init": the class at a seeded initialization of size K on an SPD system of
    condition `kappa`.  x0 "zero" starts at 0, "random" at a seeded Gaussian vector.
    """

    source: str
    cls: str
    L: int
    seed: int
    K: int = 0
    kappa: float = 1.0
    task: int = 0
    x0: str = "zero"
    family: str = "lsq"
    size: int = 0


@st.composite
def richardson_cases(draw: st.DrawFn, sources: tuple[str, ...] = ("checkpoint", "init"),
                     max_K: int = 64, max_L: int = 12, x0: tuple[str, ...] = ("zero", "random")
                     ) -> RichardsonCase:
    source = draw(st.sampled_from(sources))
    cls = draw(st.sampled_from(PRECONDITIONER_CLASSES))
    L = draw(st.integers(min_value=1, max_value=max_L))
    seed = draw(SEEDS)
    start = draw(st.sampled_from(x0))
    if source == "checkpoint":
        family = draw(st.sampled_from(tuple(CHECKPOINT_FAMILIES)))
        size = draw(st.sampled_from(CHECKPOINT_FAMILIES[family]))
        return RichardsonCase(source, cls, L, seed, task=draw(st.integers(0, 511)), x0=start,
                              family=family, size=size)
    # sampled_from draws sizes uniformly (integers() favours small values), shrinking to K = 2
    K = draw(st.sampled_from(range(2, max_K + 1)))
    # log-uniform condition number in [1, 1e4]
    kappa = 10.0 ** draw(st.floats(min_value=0.0, max_value=4.0))
    return RichardsonCase(source, cls, L, seed, K=K, kappa=kappa, x0=start)
