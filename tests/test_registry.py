"""The claim registry is the single source of ids: complete, unique, and enforced."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from certify import registry

CLAIMS_MD = Path(__file__).resolve().parents[2] / "shared" / "CLAIMS.md"


def catalog_ids() -> list[str]:
    text = CLAIMS_MD.read_text(encoding="utf-8")
    return re.findall(r"^\| ([a-z_]+\.[a-z_]+) \|", text, re.M)


@pytest.mark.skipif(not CLAIMS_MD.exists(), reason="../shared/CLAIMS.md not beside this checkout")
def test_every_catalog_id_registered_once():
    ids = catalog_ids()
    assert len(ids) == len(set(ids)) == 50
    catalogued = [c for c in registry.CLAIMS if registry.CLAIMS[c].corrects is None]
    assert catalogued == ids
    for c in registry.CLAIMS.values():  # corrected statements name the claim they correct
        if c.corrects is not None:
            assert c.corrects in ids and c.id not in ids


def test_expected_verdicts_are_statuses():
    for c in registry.CLAIMS.values():
        assert c.expected in registry.STATUSES and c.expected not in ("failed", "unchecked"), c.id
        assert c.family in registry.FAMILIES
        assert c.statement and c.source


def test_select_by_prefix_and_unknown():
    assert [c.id for c in registry.select(["eb"])] == ["eb.formula", "eb.coverage", "eb.heldout"]
    assert [c.id for c in registry.select(["richardson.identity"])] == ["richardson.identity"]
    # a prefix matches whole components only
    assert registry.select(["richardson"]) == registry.select(["richardson."])
    with pytest.raises(registry.UnknownClaimError, match="rich"):
        registry.select(["rich"])
    with pytest.raises(registry.UnknownClaimError):
        registry.get("no.such")


def test_unknown_claim_marker_is_a_collection_error(pytester):
    pytester.makepyfile(
        test_bad=textwrap.dedent(
            """
            import pytest

            @pytest.mark.claim("richardson.identiy")
            def test_x():
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "certify.plugin")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*unknown claim id 'richardson.identiy'*"])


def test_certificate_without_claim_is_an_error(pytester, monkeypatch):
    """Inside certify/ every test must name its claim (checked on the real package)."""
    import certify.plugin as plugin

    pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    monkeypatch.setattr(plugin, "CERTIFY_DIR", pytester.path.parent)
    result = pytester.runpytest_inprocess("-p", "certify.plugin")
    assert result.ret != 0
