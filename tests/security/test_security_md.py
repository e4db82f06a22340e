"""SECURITY.md's attack table names real tests, and every attack module is in it.

A row citing a test that was renamed or removed would be a promise no test
checks; a module missing from the table would be an attack the reader never
hears of.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
_CITE = re.compile(r"`((?:[\w/]+\.py)?)(?:::(\w+))?(?:\[[^\]]*\])?`")


def _table_rows() -> list[str]:
    text = (ROOT / "SECURITY.md").read_text()
    table = text[text.index("## The attack suite"):]
    return [line for line in table.splitlines() if line.startswith("| ") and "`" in line]


def _citations() -> list[tuple[Path, str | None]]:
    cited: list[tuple[Path, str | None]] = []
    for row in _table_rows():
        test_cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        current: Path | None = None
        for module, name in _CITE.findall(test_cell):
            if module:
                current = ROOT / module if module.startswith("tests/") else HERE / module
            if current is not None and (module or name):
                cited.append((current, name or None))
    return cited


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_cited_test_exists() -> None:
    cited = _citations()
    assert len(cited) > 30, "the table was not found or not parsed"
    for path, name in cited:
        assert path.is_file(), f"SECURITY.md cites {path.relative_to(ROOT)}, which does not exist"
        if name is not None:
            assert name in _test_names(path), (
                f"SECURITY.md cites {path.relative_to(ROOT)}::{name}, which is not a test there")


def test_every_attack_module_is_in_the_table() -> None:
    cited = {path.name for path, _ in _citations() if path.parent == HERE}
    modules = {p.name for p in HERE.glob("test_*.py")} - {Path(__file__).name}
    assert modules <= cited, f"attack modules missing from SECURITY.md: {sorted(modules - cited)}"
