"""Resolution of dtype and device arguments given as strings or torch objects."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Accept "float64"/"float32" or a torch dtype; reject anything else loudly."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use float64 or float32")
        return dtype
    try:
        return DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use 'float64' or 'float32'") from None


def dtype_name(dtype: str | torch.dtype) -> str:
    """The canonical string name ("float64"/"float32") of a dtype."""
    return str(as_dtype(dtype)).removeprefix("torch.")


def as_device(device: str | torch.device) -> torch.device:
    """A torch.device; asking for cuda where none exists is an error, never a fallback."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev
