"""The EP char-LM twins as the certificates see them (claim ep.training; seed 003, 2026-06-09).

Two tiers, each a pair of twins (models.ep.charlm.TwinConfig, rule "ep" and rule "bptt", equal
in everything else):

* "toy" (CPU, CI): width C = d = 16, 2 heads, context T = 16, T1 = 12 free-phase Euler steps,
  T2 = 8 nudged steps, 150 Adam steps of 16 windows; both twins together train in ~25-30 s of
  one core, the validity probe adds ~2 s;
* "gpu" (only with --device cuda): the seed's C = 128, H = 4 and context T = 64 (seed 003's S0),
  T1 = 24, T2 = 16, 3000 Adam steps of 32 windows on a longer text of the same corpus law.

Trained twins are cached like certify.sut's checkpoints: in-process (functools.cache, keyed by
config and folder) and on disk under the certify cache (env CERTIFY_CACHE) through
models.ep.charlm.load_or_train (safetensors, config + source hash key, file lock).  A twin
missing from the shared cache is trained into certify.sut.PRIVATE_TRAINING_DIR when that is set
(the suite's own tests set it, so a planted mutant never trains into the shared cache).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

from certify import sut
from certify.backend import Backend
from models.ep import charlm
from models.ep.charlm_data import CorpusConfig

TIERS = ("toy", "gpu")
PROBE_SEED = 10_000  # probe windows: a seed no training step uses
TOY_PROBE_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 24)  # free-phase lengths t of the validity probe
GPU_PROBE_LENGTHS = (2, 4, 8, 12, 16, 24, 48)

_CONTROL = charlm.ControlConfig(reg="jacreg", target=1e-4, lam0=0.1, lam_floor=0.1, lam_max=1.0,
                                gain=0.05, prop=1.0, ema=0.5)


def tier_config(tier: str, backend: Backend) -> charlm.TwinConfig:
    """The EP twin's config of a tier on `backend` (the BPTT twin is .twin("bptt"))."""
    if tier == "toy":
        return charlm.TwinConfig(
            rule="ep",
            model=charlm.ModelConfig(d=16, heads=2, mlp=4, T=16, c=1.0, qk_norm=True, resinit=0.1),
            corpus=CorpusConfig(seed=0, n_train=60_000, n_val=6_000),
            nudge=charlm.NudgeConfig(estimator="symmetric", beta=0.02, N=2, T2=8, eps=0.5, correction="aep"),
            control=_CONTROL, eps=0.5, T1=12, steps=150, batch=16, lr=3e-3, warmup=0, seed=0,
            log_every=10, n_val=128, device=backend.device, dtype=backend.dtype)
    if tier == "gpu":
        return charlm.TwinConfig(
            rule="ep",
            model=charlm.ModelConfig(d=128, heads=4, mlp=4, T=64, c=1.0, qk_norm=True, resinit=0.1),
            corpus=CorpusConfig(seed=0, n_train=400_000, n_val=40_000),
            nudge=charlm.NudgeConfig(estimator="symmetric", beta=0.02, N=2, T2=16, eps=0.5, correction="aep"),
            control=_CONTROL, eps=0.5, T1=24, steps=3000, batch=32, lr=1e-3, warmup=200, seed=0,
            log_every=100, n_val=256, device=backend.device, dtype=backend.dtype)
    raise ValueError(f"unknown tier {tier!r}; choose from {TIERS}")


def probe_lengths(tier: str) -> tuple[int, ...]:
    return TOY_PROBE_LENGTHS if tier == "toy" else GPU_PROBE_LENGTHS


def gpu_tier_reason(backend: Backend) -> str | None:
    """Why the GPU tier does not run on `backend`, or None."""
    if backend.device != "cuda":
        return (f"GPU tier (C=128, H=4, T=64, 3000 steps; seed 003's scale) runs only with --device cuda; "
                f"this run is {backend.name}")
    return None


def load_twin(cfg: charlm.TwinConfig) -> charlm.TrainedTwin:
    """The twin of `cfg` from the shared cache, else trained now into it -- or into
    certify.sut.PRIVATE_TRAINING_DIR when that is set and the shared cache lacks it."""
    shared = sut.cache_dir()
    if sut.PRIVATE_TRAINING_DIR is not None and not charlm.checkpoint_path(cfg, shared).exists():
        return _load(cfg, Path(sut.PRIVATE_TRAINING_DIR))
    return _load(cfg, shared)


@functools.cache
def _load(cfg: charlm.TwinConfig, directory: Path) -> charlm.TrainedTwin:
    path = charlm.checkpoint_path(cfg, directory)
    label = f"EP char-LM {cfg.rule} twin (d={cfg.model.d}, T={cfg.model.T}, {cfg.steps} steps, {cfg.device}-{cfg.dtype})"
    if not path.exists():
        print(f"\n[certify] training {label} -> {path}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    twin = charlm.load_or_train(cfg, directory)
    if time.perf_counter() - t0 > 1:
        print(f"[certify] {label} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return twin


def twins(tier: str, backend: Backend) -> tuple[charlm.TrainedTwin, charlm.TrainedTwin]:
    """(EP twin, BPTT twin) of a tier."""
    cfg = tier_config(tier, backend)
    return load_twin(cfg), load_twin(cfg.twin("bptt"))


def probe(tier: str, backend: Backend) -> dict[str, Any]:
    """The validity probe at the trained EP twin (models.ep.charlm.validity_probe): cos of EP and of
    BPTT at truncated free phases against the exact gradient.  The toy's reference is the
    implicit-function-theorem gradient (dense Jacobian of 2 windows, float64); the GPU tier's state
    is too large for a dense Jacobian, so its reference is BPTT through 8 T1 steps."""
    ep, _ = twins(tier, backend)
    return _probe(ep.cfg, ep, tier)


_PROBES: dict[int, tuple[charlm.TrainedTwin, dict[str, Any]]] = {}


def _probe(cfg: charlm.TwinConfig, ep: charlm.TrainedTwin, tier: str) -> dict[str, Any]:
    """Once per loaded twin (the twin is kept with its result, so its id cannot be reused)."""
    if id(ep) not in _PROBES:
        ref = "ift" if tier == "toy" else "bptt"
        _PROBES[id(ep)] = (ep, charlm.validity_probe(ep.block, cfg, list(probe_lengths(tier)), seed=PROBE_SEED,
                                                     reference=ref))
    return _PROBES[id(ep)][1]


@functools.cache
def baselines(cfg: charlm.TwinConfig) -> dict[str, float]:
    """Cross-entropies (nats/char) of the corpus law and its baselines on the validation windows:
    exact unigram entropy H1, bigram conditional entropy H2, entropy rate h, the window-averaged
    bigram baseline (H1 + (T-1) H2) / T, the train-frequency unigram CE measured on the windows,
    and the Bayes-optimal T-context CE of the windows (exact forward filter), plus ln V."""
    import math

    corpus = charlm.corpus(cfg.corpus)
    st = corpus.stats
    T = cfg.model.T
    return {"unigram_entropy": st.unigram, "bigram_entropy": st.bigram, "entropy_rate": st.rate,
            "bigram_window": (st.unigram + (T - 1) * st.bigram) / T,
            "unigram_measured": corpus.unigram_window_ce(cfg.n_val, T),
            "bayes_window": corpus.bayes_window_ce(cfg.n_val, T), "uniform": math.log(corpus.vocab)}


def setup(tier: str) -> dict[str, str | float]:
    """What golden/ep_training.json states about the tier it pins (backend independent)."""
    cfg = tier_config(tier, Backend("cpu", "float64"))
    d = cfg.to_dict()
    for k in ("rule", "device", "dtype"):
        d.pop(k)
    return {f"{tier}.config": str(d)}


def clear() -> None:
    """Drop every in-process cache (mutant tests plant a mutant, then retrain)."""
    _load.cache_clear()
    baselines.cache_clear()
    _PROBES.clear()


def short(cfg: charlm.TwinConfig, steps: int) -> charlm.TwinConfig:
    """The same tier trained for fewer steps (mutant tests)."""
    return dataclasses.replace(cfg, steps=steps)
