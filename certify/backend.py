"""Backend selection: device cpu|cuda and dtype float64|float32.

Chosen by pytest options (--device, --dtype) or the environment variables
CERTIFY_DEVICE / CERTIFY_DTYPE; options win.  Asking for cuda where none exists
is an error, never a silent fallback to the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DEVICES = ("cpu", "cuda")
DTYPES = ("float64", "float32")


class BackendError(ValueError):
    """A backend that was asked for but cannot be used."""


class DeviceUnavailable(BackendError):
    """A valid device that this machine does not have."""


@dataclass(frozen=True)
class Backend:
    device: str
    dtype: str

    @property
    def name(self) -> str:
        return f"{self.device}-{self.dtype}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def unit_roundoff(self) -> float:
        return torch.finfo(self.torch_dtype).eps / 2

    def as_dict(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype}


def resolve(device: str | None = None, dtype: str | None = None) -> Backend:
    """The backend from explicit arguments, else the environment, else cpu/float64."""
    device = (device or os.environ.get("CERTIFY_DEVICE") or "cpu").strip().lower()
    dtype = (dtype or os.environ.get("CERTIFY_DTYPE") or "float64").strip().lower()
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "device cuda was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); use --device cpu or run on a machine with a GPU"
        )
    return Backend(device, dtype)


def available() -> list[Backend]:
    """Every backend this machine can run, cpu first."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [Backend(dev, dt) for dev in devices for dt in DTYPES]
