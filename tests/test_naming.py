"""One naming style for async twins: ``<name>_aio`` (docs/architecture.md, "Sync and async").

A blocking method's async twin is named ``<name>_aio`` (or is a ``.aio`` attribute
of a call object, as ``proxy.m.aio`` and ``ch.send.aio``); ``astart``/``aclose``
are the only ``a``-prefixed names, the asyncio convention for a lifecycle. This
reads every module's source, so a twin named otherwise fails here. (Under a second.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE = {"astart", "aclose"}


def _defs(tree: ast.AST) -> list[tuple[str, set[str]]]:
    """(name of each function, names defined beside it), for modules and classes."""
    found: list[tuple[str, set[str]]] = []
    scopes: list[ast.AST] = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]
    for scope in scopes:
        body = getattr(scope, "body", [])
        names = {n.name for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        found.extend((name, names) for name in names)
    return found


def _misnamed(path: Path) -> list[str]:
    bad = []
    for name, beside in _defs(ast.parse(path.read_text())):
        bare = name.lstrip("_")
        if name.startswith("__"):  # Python's own protocols: __aiter__, __aenter__
            continue
        if bare.endswith("_async"):
            bad.append(f"{path.relative_to(ROOT)}: {name} (name it {name[:-6]}_aio)")
        elif (bare.startswith("a") and bare not in LIFECYCLE
              and name.replace(bare, bare[1:]) in beside):
            bad.append(f"{path.relative_to(ROOT)}: {name} (twin of {name.replace(bare, bare[1:])})")
    return bad


@pytest.mark.timeout(30)
def test_async_twins_are_named_aio() -> None:
    files = [p for d in ("src", "tests", "examples") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 100
    bad = [line for p in files for line in _misnamed(p)]
    assert not bad, "async twins named otherwise than <name>_aio:\n" + "\n".join(bad)


@pytest.mark.timeout(30)
def test_the_rule_catches_both_old_styles(tmp_path: Path) -> None:
    old = tmp_path / "old.py"
    old.write_text("def select(): ...\nasync def aselect(): ...\n"
                   "class C:\n    def send(self): ...\n    async def send_async(self): ...\n"
                   "    async def astart(self): ...\n    def start(self): ...\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert sorted(_misnamed(old)) == ["old.py: aselect (twin of select)",
                                          "old.py: send_async (name it send_aio)"]
    finally:
        ROOT = saved
