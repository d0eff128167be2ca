"""Fixtures of the suite's own tests.

Mutants are planted in the SUT by monkeypatching; a certificate called under a mutant that
finds a checkpoint missing would train it with the mutant active.  So every test here trains
missing checkpoints into its own temporary folder (certify.sut.PRIVATE_TRAINING_DIR), never
into the shared cache the certificates read, and the mutant modules first make sure the
standard checkpoints exist there, trained by the unmutated code (`standard_checkpoints`).
"""

from __future__ import annotations

import pytest

from certify import sut
from certify.backend import Backend


@pytest.fixture(scope="session")
def standard_checkpoints() -> None:
    """The default tier's cpu-float64 checkpoints, trained clean into the shared cache before any
    mutant is planted (the first worker to need one trains it; the others wait and load)."""
    from certify import sut_families

    sut.prewarm(sut_families.standard_configs(Backend("cpu", "float64")))


@pytest.fixture(autouse=True)
def private_training(tmp_path, monkeypatch) -> None:
    # session fixtures are set up before this one, so prewarming still writes the shared cache
    monkeypatch.setattr(sut, "PRIVATE_TRAINING_DIR", tmp_path / "private-checkpoints")


@pytest.fixture(autouse=True)
def no_reference_memo(monkeypatch) -> None:
    """The suite's own tests recompute every reference: a mutant planted in properties/ by
    monkeypatching leaves the source hash of the memo's key unchanged (properties.reference.memo)."""
    from properties.reference import memo

    monkeypatch.setenv(memo.ENV, "0")
