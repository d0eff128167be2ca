"""Golden files: drift is a readable failure, malformed files name themselves, and
regeneration is refused where it must be."""

from __future__ import annotations

import subprocess
import sys

import pytest

from certify.golden import (GOLDEN_DIR, GoldenDrift, GoldenError, GoldenStore, GoldenUnpinned, load_document,
                            load_file)

PROV = {"commit": "test", "device": "cpu", "dtype": "float64"}


def pin(tmp_path, metrics, backend="cpu-float64"):
    store = GoldenStore(tmp_path, backend, update=True)
    store.check("fam", metrics, rtol=1e-8, atol=0.0, seeds={"a": 0.5}, provenance=PROV)
    return store.write_pending()


def test_round_trip_and_band(tmp_path):
    (path,) = pin(tmp_path, {"a": 1.0, "b": 2.0})
    table = load_file(path)["cpu-float64"]
    assert table["a"].value == 1.0 and table["a"].seed == 0.5 and table["a"].provenance == PROV
    store = GoldenStore(tmp_path, "cpu-float64")
    store.check("fam", {"a": 1.0 + 5e-9, "b": 2.0}, rtol=1e-8)  # inside the band
    with pytest.raises(GoldenDrift) as exc:
        store.check("fam", {"a": 1.1, "b": 2.0}, rtol=1e-8)
    text = str(exc.value)
    assert "golden/fam.json [cpu-float64]" in text and "a" in text and "1.1" in text
    assert "b " not in text.split("\n", 2)[2]  # only drifting metrics are listed


def test_nan_never_matches(tmp_path):
    pin(tmp_path, {"a": 1.0})
    with pytest.raises(GoldenDrift):
        GoldenStore(tmp_path, "cpu-float64").check("fam", {"a": float("nan")}, rtol=1.0)


def test_unpinned_metric_and_backend(tmp_path):
    pin(tmp_path, {"a": 1.0})
    with pytest.raises(GoldenDrift, match="no value for c"):
        GoldenStore(tmp_path, "cpu-float64").check("fam", {"c": 1.0}, rtol=1e-8)
    with pytest.raises(GoldenUnpinned, match="cuda-float32"):
        GoldenStore(tmp_path, "cuda-float32").check("fam", {"a": 1.0}, rtol=1e-8)


def test_update_keeps_other_backends(tmp_path):
    pin(tmp_path, {"a": 1.0}, backend="cpu-float64")
    (path,) = pin(tmp_path, {"a": 3.0}, backend="cpu-float32")
    tables = load_file(path)
    assert tables["cpu-float64"]["a"].value == 1.0 and tables["cpu-float32"]["a"].value == 3.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"schema": 1}', "'backends'"),
        ('{"schema": 99, "backends": {}}', "schema 99"),
        ('{"schema": 1, "backends": {"cpu-float64": {"a": {"value": "1", "rtol": 0, "atol": 0}}}}', "must be a number"),
        ('{"schema": 1, "backends": {"cpu-float64": {"a": {"value": 1, "rtol": -1, "atol": 0}}}}', "negative"),
        ('{"schema": 1, "backends": {"cpu-float64": []}}', "must be an object"),
    ],
)
def test_malformed_file_names_itself(tmp_path, content, message):
    path = tmp_path / "fam.json"
    path.write_text(content)
    with pytest.raises(GoldenError, match=message) as exc:
        load_file(path)
    assert str(path) in str(exc.value)


def test_shipped_golden_files_parse():
    files = sorted(GOLDEN_DIR.glob("*.json"))
    assert files, "golden/ ships no files"
    for f in files:
        tables = load_file(f)
        assert "cpu-float64" in tables, f
        for metrics in tables.values():
            for m in metrics.values():
                assert {"commit", "versions", "device", "dtype", "seed", "command"} <= set(m.provenance)


def _certify(*args, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "certify", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_update_golden_refused_in_ci(tmp_path):
    out = _certify("--only", "eb.formula", "--update-golden", "--out", str(tmp_path),
                   env_extra={"CI": "true"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "refused in CI" in out.stdout + out.stderr


def test_update_golden_refused_with_workers(tmp_path):
    out = _certify("--only", "eb.formula", "--update-golden", "-n", "2", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "refused under -n > 1" in out.stderr
    assert not any(tmp_path.iterdir())


def test_setup_is_stated_and_compared(tmp_path):
    store = GoldenStore(tmp_path, "cpu-float64", update=True)
    store.check("fam", {"a": 1.0}, rtol=1e-8, provenance=PROV, setup={"prior": "diag((1+j)^-2)", "sigma": 0.1})
    (path,) = store.write_pending()
    _, setup = load_document(path)
    assert setup == {"prior": "diag((1+j)^-2)", "sigma": 0.1}
    GoldenStore(tmp_path, "cpu-float64").check("fam", {"a": 1.0}, rtol=1e-8, setup={"sigma": 0.1})
    with pytest.raises(GoldenDrift, match="another setup") as exc:
        GoldenStore(tmp_path, "cpu-float64").check("fam", {"a": 1.0}, rtol=1e-8, setup={"sigma": 0.2})
    assert "sigma: golden 0.1, this run 0.2" in str(exc.value)
    with pytest.raises(GoldenDrift, match="<not stated>"):
        GoldenStore(tmp_path, "cpu-float64").check("fam", {"a": 1.0}, rtol=1e-8, setup={"kernel": "rbf"})
    # a second backend's pin keeps the stated setup
    other = GoldenStore(tmp_path, "cpu-float32", update=True)
    other.check("fam", {"a": 2.0}, rtol=1e-4, provenance=PROV)
    other.write_pending()
    assert load_document(path)[1] == setup


@pytest.mark.parametrize("setup", ['[1, 2]', '{"a": [1]}', '{"a": true}'])
def test_malformed_setup_names_the_file(tmp_path, setup):
    path = tmp_path / "fam.json"
    path.write_text('{"schema": 1, "setup": %s, "backends": {}}' % setup)
    with pytest.raises(GoldenError, match="'setup'") as exc:
        load_file(path)
    assert str(path) in str(exc.value)
