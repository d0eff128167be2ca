"""The data flow of DESIGN.md: references never import torch."""

from __future__ import annotations

import ast
from pathlib import Path

import properties


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_properties_never_import_torch_models_or_certify():
    root = Path(properties.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert files
    for f in files:
        bad = imported_roots(f) & {"torch", "models", "certify"}
        assert not bad, f"{f.relative_to(root.parent)} imports {sorted(bad)}"
