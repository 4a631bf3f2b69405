"""The docs name tests as evidence: every test they name must exist (and so runs in CI)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_test_named_in_reliability_md_exists():
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = set(NAMED.findall(text))
    assert len(named) >= 40, f"docs/reliability.md names {len(named)} distinct tests"
    missing = [
        f"{file}::{name}"
        for file, name in sorted(named)
        if not (REPO / file).is_file() or name not in _test_functions(REPO / file)
    ]
    assert not missing, missing


def test_the_readme_links_the_reliability_page():
    assert "docs/reliability.md" in (REPO / "README.md").read_text(encoding="utf-8")
