"""The shared checkpoint cache stays clean: inside the suite's own tests a missing checkpoint is
trained into a private folder (a mutant could be active), and prewarming writes the shared one."""

from __future__ import annotations

import models
from certify import sut
from models.gp import GPTaskConfig
from models.train import checkpoint_path


def _cfg(steps: int) -> models.TrainConfig:
    return models.TrainConfig("diagonal", task=GPTaskConfig(n=16), L=2, steps=steps, batch=4)


def test_missing_checkpoint_is_trained_privately_in_tests(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    monkeypatch.setenv("CERTIFY_CACHE", str(shared))
    cfg = _cfg(3)
    sut.load_trained(cfg)
    assert sut.PRIVATE_TRAINING_DIR is not None
    assert checkpoint_path(cfg, sut.PRIVATE_TRAINING_DIR).exists()
    assert not checkpoint_path(cfg, shared).exists(), "a test trained into the shared cache"


def test_prewarm_writes_the_shared_cache_and_is_then_read(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    monkeypatch.setenv("CERTIFY_CACHE", str(shared))
    cfg = _cfg(4)
    sut.prewarm([cfg])
    assert checkpoint_path(cfg, shared).exists()
    dec = sut.load_trained(cfg)  # found in the shared cache: loaded from there, not retrained
    assert not checkpoint_path(cfg, sut.PRIVATE_TRAINING_DIR).exists()
    assert dec.precond.K == 4
