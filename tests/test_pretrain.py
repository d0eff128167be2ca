"""certify.pretrain: the checkpoint jobs sharded over torch.distributed ranks (torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from certify import pretrain, sut
from certify import sut_families as sf
from certify.backend import Backend
from safetensors import safe_open


def check_shards(n: int, world: int) -> None:
    """Every job trained exactly once over the ranks, and no rank more than one job behind another."""
    items = list(range(n))
    parts = [pretrain.shard(items, r, world) for r in range(world)]
    assert sorted(i for p in parts for i in p) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced to one job


@given(n=st.integers(0, 40), world=st.integers(1, 9))
def test_shards_are_disjoint_and_cover(n: int, world: int) -> None:
    check_shards(n, world)


@pytest.mark.parametrize("mutant", [
    lambda items, rank, world: items[rank * (len(items) // world):(rank + 1) * (len(items) // world)],  # drops the tail
    lambda items, rank, world: items[rank::world] + items[:1] * (rank > 0),  # job 0 twice
    lambda items, rank, world: items[rank:rank + 1] + items[world:] * (rank == 0),  # rank 0 takes the rest
])
def test_bad_sharding_is_caught(monkeypatch, mutant) -> None:
    monkeypatch.setattr(pretrain, "shard", mutant)
    with pytest.raises(AssertionError):
        for n, world in ((5, 2), (7, 3), (9, 2)):
            check_shards(n, world)


def test_shard_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="outside"):
        pretrain.shard([1, 2], 2, 2)


def test_jobs_are_the_reports_checkpoints() -> None:
    be = Backend("cpu", "float64")
    default, slow = pretrain.jobs(be), pretrain.jobs(be, slow=True)
    assert len({j.label for j in slow}) == len(slow) and len({j.path for j in slow}) == len(slow)
    expected = {sut.checkpoint_path(c, sut.cache_dir()) for c in sf.standard_configs(be)}
    assert expected <= {j.path for j in default}
    assert len(default) == len(expected) + 2  # + the EP char-LM twins of the toy tier
    assert len(slow) - len(default) == len(sf.FAMILIES) * 2 * len(sut.CLASSES) * (len(sf.DEPTHS) - 1)


def test_cuda_absent_is_a_clear_error(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pretrain.main(["--device", "cuda", "--list"]) == 2
    assert "cuda" in capsys.readouterr().err


def test_torchrun_two_ranks_train_the_same_files(tmp_path) -> None:
    """Two gloo ranks on this machine split the 4 least-squares decoders 2/2; each file is the
    checkpoint a single process trains (same tensor digest), so the report can load either."""
    env = {**os.environ, "CERTIFY_CACHE": str(tmp_path / "dist"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "records.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "certify.pretrain", "--only", "lsq-", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["world"] == 2 and len(doc["records"]) == 4
    assert sorted(r["rank"] for r in doc["records"]) == [0, 0, 1, 1]
    assert not any(r["cached"] for r in doc["records"])
    single = tmp_path / "single"
    be = Backend("cpu", "float64")
    for cls in sut.CLASSES:
        cfg = sut.train_config(cls, be)
        sut._load_trained(cfg, single)
        assert digest(sut.checkpoint_path(cfg, tmp_path / "dist")) == digest(sut.checkpoint_path(cfg, single)), (
            f"{cls}: the rank-trained checkpoint differs from the single-process one")


def digest(path) -> str:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["sha256"]
