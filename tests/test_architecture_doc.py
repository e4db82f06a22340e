"""docs/architecture.md tells the truth: its layers are import-linter's, its modules exist.

A page that names modules goes stale when code moves; this keeps it honest.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_the_layer_picture_is_the_import_contract_in_order() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    drawn = re.findall(r"^ (netlet(?:\.\w+)?)\s", DOC, flags=re.M)
    assert drawn == layers


def test_every_module_the_page_names_exists() -> None:
    named = set(re.findall(r"src/netlet/[\w/]+\.py", DOC))
    assert len(named) > 20
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that are gone: {missing}"
    short = set(re.findall(r"`(_[a-z_]+\.py)`", DOC))  # named beside their package
    packages = ROOT / "src" / "netlet"
    gone = sorted(n for n in short if not any(packages.rglob(n)))
    assert not gone, gone


def test_the_docs_index_links_it() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
