"""The public surface: what ``netlet`` and its layers export, and nothing more.

As trio's ``test_exports``: every name in an ``__all__`` resolves, ``__all__``
is sorted, every public name the package binds is listed, and ``import netlet``
pulls in neither the command line nor the cluster.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import netlet

SRC = Path(netlet.__file__).resolve().parent
PACKAGES = ["netlet", "netlet.errors", "netlet.codec", "netlet.transport", "netlet.node",
            "netlet.channel", "netlet.cluster", "netlet.cli", "netlet.clock", "netlet.testing"]


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then the rest, each alphabetical (ruff's RUF022 order)."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_unique_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_key), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    for attr in exported:
        assert getattr(module, attr) is not None, f"{name}.{attr} does not resolve"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_listed(name: str) -> None:
    module = importlib.import_module(name)
    public = {attr for attr, value in vars(module).items()
              if not attr.startswith("_") and not isinstance(value, types.ModuleType)
              and getattr(value, "__module__", "").startswith("netlet")}
    missing = public - set(module.__all__)
    assert not missing, f"{name} binds public names it does not export: {sorted(missing)}"


def _modules() -> list[str]:
    # A __main__ module runs a command when imported: it has nothing to export.
    return sorted(m.name for m in pkgutil.walk_packages([str(SRC)], "netlet.")
                  if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_every_module_says_what_it_is_for_and_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} has no docstring"
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"


def test_import_netlet_stays_light() -> None:
    """What a process that only makes calls never uses is not imported (cold start, W6):
    the cluster, the CLI, the statistics records, the fault transport, ..."""
    code = ("import sys, netlet; heavy = [m for m in ('netlet.cli', 'netlet.cluster', "
            "'netlet.apps', 'click', 'rich', 'cloudpickle', 'numpy', 'netlet.node._stats', "
            "'netlet.transport._faults', 'difflib', 'tempfile', 'ctypes') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "", f"import netlet imported {out.stdout.strip()}"


def test_a_worker_process_imports_only_the_worker() -> None:
    """``python -m netlet.cluster`` (every worker's start-up, W6's critical path) loads
    neither the head, its scheduler and store, nor the statistics records (~15 ms)."""
    code = ("import sys, netlet.cluster._worker; "
            "print(','.join(m for m in ('netlet.cluster._head', 'netlet.cluster._scheduler', "
            "'netlet.cluster._sched_records', 'netlet.cluster._store', 'netlet.cluster._stats', "
            "'netlet.cluster._client', 'sqlite3', 'difflib', 'shutil', 'tempfile', 'ctypes') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "", f"a worker imported {out.stdout.strip()}"


def test_the_cluster_package_imports_each_name_on_first_use() -> None:
    import netlet.cluster

    for name in netlet.cluster.__all__:
        assert getattr(netlet.cluster, name) is not None
    assert set(netlet.cluster.__all__) <= set(dir(netlet.cluster))
    with pytest.raises(AttributeError, match="no attribute 'Exectuor'"):
        netlet.cluster.Exectuor  # noqa: B018


@pytest.mark.timeout(60)
def test_an_executor_nobody_watches_never_loads_the_statistics_records() -> None:
    """W6 from start to shutdown (~0.3 s): the head counts and keeps events and dead
    workers raw; the frozen records (~5 ms to import) wait for a dashboard to ask."""
    code = ("import sys, netlet\n"
            "with netlet.Executor(max_workers=1) as ex:\n"
            "    assert ex.submit(abs, -1).result() == 1\n"
            "print('netlet.cluster._stats' in sys.modules, 'netlet.node._stats' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=50, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
