"""The main job: report schema (DESIGN.md contract 2), exit status, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from certify import cli, registry
from certify.results import ClaimResult, falsifying_example
from models import eb as eb_mod

CLAIM_KEYS = {"id", "title", "source", "status", "evidence", "checks", "examples", "counterexample", "seconds"}
SUITE_KEYS = {"version", "git_commit", "backend", "hypothesis_profile", "versions", "started", "seconds"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run([sys.executable, "-m", "certify", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def eb_formula_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    proc = run_cli("--only", "eb.formula", "--out", str(out))
    return proc, out


def test_report_schema(eb_formula_report):
    proc, out = eb_formula_report
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "claims.json").read_text())
    assert SUITE_KEYS <= set(doc["suite"])
    assert doc["suite"]["backend"] == {"device": "cpu", "dtype": "float64"}
    assert {"python", "numpy", "scipy", "mpmath", "torch"} <= set(doc["suite"]["versions"])
    ids = [c["id"] for c in doc["claims"]]
    assert ids == list(registry.CLAIMS)  # every registered claim, in registry order
    for c in doc["claims"]:
        assert CLAIM_KEYS <= set(c), c["id"]
        assert all(isinstance(v, (int, float, str)) for v in c["evidence"].values()), c["id"]
        if c["id"] != "eb.formula":
            assert c["status"] == "unchecked" and c["evidence"]["reason"], c["id"]
    ebf = next(c for c in doc["claims"] if c["id"] == "eb.formula")
    assert ebf["status"] == "verified" and ebf["examples"] >= 100 and ebf["checks"] == 1
    assert 0 <= ebf["evidence"]["max_error_over_tolerance"] <= 1
    md = (out / "CLAIMS.md").read_text()
    assert "| eb.formula | verified |" in md
    assert "[certify  1/1] eb.formula" in proc.stdout  # the progress line


def test_unknown_only_is_usage_error(tmp_path):
    proc = run_cli("--only", "richardson.identiy", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "matches no registered claim" in proc.stderr
    assert not (tmp_path / "claims.json").exists()


@pytest.mark.parametrize("device, message", [("tpu", "unknown device 'tpu'"), ("cuda", "cuda")])
def test_bad_device(tmp_path, device, message):
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has cuda")
    proc = run_cli("--only", "eb.formula", "--device", device, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert message in proc.stderr


def test_bad_dtype_and_profile(tmp_path):
    assert run_cli("--dtype", "float16", "--out", str(tmp_path)).returncode == 2
    assert run_cli("--profile", "fast", "--out", str(tmp_path)).returncode == 2


def test_missed_verdict_exits_1(tmp_path, monkeypatch, capsys):
    """A regression (a mutant in the SUT) turns the claim `failed` and the exit status 1."""
    monkeypatch.setattr(eb_mod, "BERNSTEIN_CONSTANT", 7 / 6)
    monkeypatch.delenv("CI", raising=False)
    rc = cli.main(["--only", "eb.formula", "--out", str(tmp_path)])
    assert rc == 1
    doc = json.loads((tmp_path / "claims.json").read_text())
    ebf = next(c for c in doc["claims"] if c["id"] == "eb.formula")
    assert ebf["status"] == "failed"
    assert ebf["counterexample"] and "falsifying_example" in ebf["counterexample"]
    assert "MISS eb.formula" in capsys.readouterr().err


def test_status_rules():
    r = ClaimResult("x.y")
    assert r.status()[0] == "unchecked"
    r.skip("t1", "no GPU")
    assert r.status() == ("unchecked", "no GPU")
    r.passed.add("t2")
    assert r.status()[0] == "verified"
    r.verdicts.append({"status": "disproved", "reason": "counterexample", "counterexample": {"k": 1}})
    assert r.status()[0] == "disproved" and r.counterexample() == {"k": 1}
    r.fail("t3", "call", "boom")
    assert r.status()[0] == "failed"


def test_falsifying_example_extraction():
    text = "E   assert False\nFalsifying example: test_f(\n    case=1,\n)\n\nYou can reproduce"
    assert falsifying_example(text) == "test_f(\n    case=1,\n)"
    assert falsifying_example("no example here") is None


def test_recorder_payload_is_plain_python():
    """xdist ships evidence through execnet, which serializes no numpy scalar (np.float64 is
    a float subclass, so isinstance checks alone let it through)."""
    import numpy as np

    from certify.plugin import Recorder

    rec = Recorder("eb.formula")
    rec.max("a", np.float64(1.5))
    rec.set("b", np.int64(3))
    rec.figure("f", {"x": np.arange(3, dtype=np.float32), "y": np.float64(2.0)})
    rec.verdict("open", "r", counterexample={"v": np.float64(0.25), "t": (np.int32(1),)})
    payload = rec.payload()

    def walk(x):
        assert type(x) in (dict, list, str, int, float, bool, type(None)), type(x)
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(payload)
    assert payload["figures"][0]["data"]["x"] == [0.0, 1.0, 2.0]


def test_claim_map_is_reused_for_an_identical_collection(tmp_path, monkeypatch):
    """The progress map's collection runs once per (arguments, sources); a second run copies it."""
    import json
    from pathlib import Path

    from certify import cli

    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    calls = []

    def fake_collect(cmd, **kwargs):
        calls.append(cmd)
        Path(cmd[cmd.index("--certify-write-claim-map") + 1]).write_text(json.dumps({"t::a": "eb.formula"}))
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr(cli.subprocess, "run", fake_collect)
    first = cli._claim_map(["certify", "--device", "cpu"])
    second = cli._claim_map(["certify", "--device", "cpu"])
    assert len(calls) == 1 and json.loads(second.read_text()) == json.loads(first.read_text()) == {"t::a": "eb.formula"}
    cli._claim_map(["certify", "--device", "cpu", "--slow"])  # other arguments: collected again
    monkeypatch.setattr(cli, "_claim_map_key", lambda args: "a-changed-source")
    cli._claim_map(["certify", "--device", "cpu"])  # changed sources: collected again
    assert len(calls) == 3
    for p in (first, second):
        p.unlink()
