"""Decoder checkpoints in safetensors (never pickle).

A file holds the decoder's state dict plus metadata: the training config (JSON), the
preconditioner class, K, L, its hyper-parameters and a SHA-256 of the tensor bytes
(safetensors has no checksum of its own, so a flipped data byte would otherwise load).
Anything wrong with a file raises CheckpointError naming it: never a silent retrain.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .dtypes import as_device, as_dtype
from .preconditioners import PRECONDITIONERS, FrozenLinear, build_preconditioner
from .richardson import RichardsonDecoder

FORMAT = "models.checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted: unreadable, incomplete, inconsistent or mismatched."""


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes (safetensors itself has no checksum)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def save_checkpoint(path: str | Path, decoder: RichardsonDecoder, config: dict[str, Any]) -> None:
    """Write decoder + config atomically (temp file then rename: safe under parallel workers)."""
    path = Path(path)
    precond = decoder.precond
    tensors = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "class": precond.name,
        "K": str(precond.K),
        "L": str(decoder.L),
        "hparams": json.dumps(precond.hparams(), sort_keys=True),
        "config": _canonical(config),
        "sha256": tensor_digest(tensors),
    }
    atomic_save(path, tensors, metadata)


def atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file via a temporary file and a rename, so concurrent writers
    (xdist workers training the same config) never leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    if not metadata:
        raise CheckpointError(f"checkpoint {path}: no metadata (not written by save_checkpoint)")
    return metadata, tensors


def _field(path: Path, metadata: dict[str, str], key: str) -> str:
    if key not in metadata:
        raise CheckpointError(f"checkpoint {path}: metadata lacks {key!r}")
    return metadata[key]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float64,
                    expect_config: dict[str, Any] | None = None
                    ) -> tuple[RichardsonDecoder, dict[str, Any]]:
    """Rebuild the decoder from a file and return (decoder, stored config).

    Raises CheckpointError (message names the file) if the file is missing, corrupt,
    truncated, has missing/unexpected/mis-shaped/non-finite tensors, or its config
    differs from `expect_config`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    metadata, tensors = _read(path)
    if _field(path, metadata, "format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {metadata['format']!r}, expected {FORMAT!r}")
    if tensor_digest(tensors) != _field(path, metadata, "sha256"):
        raise CheckpointError(f"checkpoint {path}: tensor data does not match its SHA-256 (corrupt file)")
    try:
        name = _field(path, metadata, "class")
        K, L = int(_field(path, metadata, "K")), int(_field(path, metadata, "L"))
        hparams = json.loads(_field(path, metadata, "hparams"))
        config = json.loads(_field(path, metadata, "config"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: malformed metadata ({exc})") from exc
    if expect_config is not None and _canonical(config) != _canonical(expect_config):
        raise CheckpointError(
            f"checkpoint {path}: stored config does not match the requested one\n"
            f"  stored:    {_canonical(config)}\n  requested: {_canonical(expect_config)}")

    dev, dt = as_device(device), as_dtype(dtype)
    if name == FrozenLinear.name:
        if "precond.P" not in tensors:
            raise CheckpointError(f"checkpoint {path}: missing tensor 'precond.P'")
        precond = FrozenLinear(torch.zeros(tensors["precond.P"].shape, device=dev, dtype=dt))
    elif name in PRECONDITIONERS:
        try:
            precond = build_preconditioner(name, K, device=dev, dtype=dt, **hparams)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: cannot build {name!r} with {hparams} ({exc})") from exc
    else:
        raise CheckpointError(f"checkpoint {path}: unknown preconditioner class {name!r}")
    decoder = RichardsonDecoder(precond, L)

    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: missing tensors {missing}, unexpected tensors {unexpected}")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} has shape "
                                  f"{tuple(tensors[key].shape)}, expected {tuple(ref.shape)}")
        if not torch.isfinite(tensors[key]).all():
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} has non-finite entries")
    decoder.load_state_dict({k: v.to(device=dev, dtype=dt) for k, v in tensors.items()})
    return decoder, config
