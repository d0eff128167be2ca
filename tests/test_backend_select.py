"""Backend selection: options beat environment variables; bad or absent devices are errors."""

from __future__ import annotations

import pytest
import torch

from certify import backend as be


def test_defaults_and_environment(monkeypatch):
    monkeypatch.delenv("CERTIFY_DEVICE", raising=False)
    monkeypatch.delenv("CERTIFY_DTYPE", raising=False)
    assert be.resolve() == be.Backend("cpu", "float64")
    monkeypatch.setenv("CERTIFY_DTYPE", "float32")
    assert be.resolve().dtype == "float32"
    assert be.resolve(dtype="float64").dtype == "float64"  # an option wins over the environment


def test_unit_roundoff_per_dtype():
    assert be.Backend("cpu", "float64").unit_roundoff == 2.0**-53
    assert be.Backend("cpu", "float32").unit_roundoff == 2.0**-24


@pytest.mark.parametrize("kwargs, message", [({"device": "tpu"}, "unknown device"),
                                             ({"dtype": "float16"}, "unknown dtype")])
def test_invalid_choices(kwargs, message):
    with pytest.raises(be.BackendError, match=message):
        be.resolve(**kwargs)


def test_cuda_without_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(be.DeviceUnavailable, match="cuda"):
        be.resolve(device="cuda")
    assert [b.device for b in be.available()] == ["cpu", "cpu"]


def test_pytest_option_selects_backend(pytester):
    pytester.makepyfile(test_b="def test_b(backend):\n    assert backend.name == 'cpu-float32'\n")
    assert pytester.runpytest_subprocess("-p", "certify.plugin", "--dtype", "float32").ret == 0
    bad = pytester.runpytest_subprocess("-p", "certify.plugin", "--device", "tpu")
    assert bad.ret != 0
    bad.stderr.fnmatch_lines(["*unknown device 'tpu'*"])
