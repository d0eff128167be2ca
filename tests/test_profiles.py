"""The ci profile is a function of the commit: example generation does not depend on which local
modules the process happens to have imported (certify.profiles.freeze_local_constants)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter: draw 300 floats under a derandomized profile, optionally after
# importing a local module full of float literals (as a worker that ran another test first has).
SCRIPT = textwrap.dedent("""
    import json, sys
    freeze, extra = sys.argv[1] == "1", sys.argv[2] == "1"
    if freeze:
        from certify import profiles
        profiles.freeze_local_constants()
    from hypothesis import given, settings, strategies as st
    settings.register_profile("p", derandomize=True, database=None, deadline=None, max_examples=300)
    settings.load_profile("p")
    if extra:
        sys.path.insert(0, sys.argv[3])
        import literals_here  # noqa: F401
    drawn = []

    @given(st.floats(0.0, 1.0))
    def draw(x):
        drawn.append(x)

    draw()
    print(json.dumps(drawn))
""")

LITERALS = "VALUES = [" + ", ".join(f"0.{k:04d}{k:03d}1" for k in range(1, 200)) + "]\n"


def drawn(tmp_path, freeze: bool, extra: bool) -> list[float]:
    (tmp_path / "literals_here.py").write_text(LITERALS)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(int(freeze)), str(int(extra)), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_generation_ignores_imported_local_modules(tmp_path) -> None:
    assert drawn(tmp_path, True, False) == drawn(tmp_path, True, True)


def test_without_the_freeze_generation_would_depend_on_them(tmp_path) -> None:
    """The check above can fail: hypothesis' own harvest makes the two draws differ."""
    from hypothesis.internal.conjecture import providers

    if not hasattr(providers, "_get_local_constants"):
        pytest.skip("this hypothesis harvests no local constants")
    assert drawn(tmp_path, False, False) != drawn(tmp_path, False, True)
