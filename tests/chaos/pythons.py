"""Another Python version for the chaos suite, found or provisioned on a fresh machine.

Fallacy 8 wants a worker on another Python version than the test's. Where one
comes from, first found wins:

1. ``$NETLET_CHAOS_PYTHONS`` (interpreter paths, ``:``-separated);
2. ``python3.N`` on PATH, then pyenv's interpreters (``$PYENV_ROOT`` or
   ``~/.pyenv``, ``versions/3.N.*/bin/python3``);
3. else ``uv`` (pip-installed into this venv when missing) installs CPython
   3.12 into the cache below.

The interpreter runs netlet from this checkout (``PYTHONPATH``) in a
throwaway venv holding netlet's core dependencies (``[project]
dependencies`` of pyproject.toml), made once and kept in
``.venv/chaos-pythons/`` (``make clean`` removes it): the first run pays a
pip install, later ones nothing. Test processes running in parallel share it
under a file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.chaos.hosts import ROOT

__all__ = ["CACHE", "mine", "other_python"]

CACHE = ROOT / ".venv" / "chaos-pythons"
PREFERRED = ("3.12", "3.11", "3.13", "3.10")  # the issue names 3.11 and 3.12
PROBE = "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"


def mine() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _version(exe: str) -> str | None:
    try:
        done = subprocess.run([exe, "-c", PROBE], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _candidates() -> list[str]:
    listed = [p for p in os.environ.get("NETLET_CHAOS_PYTHONS", "").split(":") if p]
    if listed:
        return listed
    found = [p for v in PREFERRED if (p := shutil.which(f"python{v}")) is not None]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for v in PREFERRED:
        found += [str(exe) for exe in sorted(pyenv.glob(f"{v}.*/bin/python3"), reverse=True)]
    return found


def _dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [str(d) for d in project["dependencies"]]


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str | None:
    """Run a provisioning step; ``None`` and the reason on stderr if it failed."""
    try:
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=300, check=False, env={**os.environ, **(env or {})})
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"chaos pythons: {args[0]} ...: {e}", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"chaos pythons: {' '.join(map(str, args))} failed: {done.stderr.strip()[-500:]}",
              file=sys.stderr)
        return None
    return done.stdout


def _uv_python(version: str) -> str | None:
    """CPython ``version`` installed by uv into the cache (uv pip-installed if missing)."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists() and (
            _run(sys.executable, "-m", "pip", "install", "--quiet", "uv") is None
            or not Path(uv).exists()):
        return None
    env = {"UV_PYTHON_INSTALL_DIR": str(CACHE / "uv"), "UV_CACHE_DIR": str(CACHE / "uv-cache")}
    if _run(uv, "python", "install", version, env=env) is None:
        return None
    found = _run(uv, "python", "find", "--no-project", version, env=env)
    return found.strip() if found else None


def _venv(base: str, version: str) -> str | None:
    """A venv of ``base`` with netlet's core dependencies, made once (see the docstring)."""
    deps = _dependencies()
    tag = hashlib.sha256("\n".join([base, *deps]).encode()).hexdigest()[:10]
    where = CACHE / f"py{version}-{tag}"
    python = where / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"py{version}-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be making it
        if (where / ".ready").exists():
            return str(python)
        shutil.rmtree(where, ignore_errors=True)
        if (_run(base, "-m", "venv", where) is None
                or _run(python, "-m", "pip", "install", "--quiet", *deps) is None):
            return None
        (where / ".ready").touch()
    return str(python)


def other_python() -> tuple[str | None, str]:
    """An interpreter of another version that runs netlet, and what was tried.

    Returns ``(path, "")`` or ``(None, why)``.
    """
    tried: list[str] = []
    for exe in _candidates():
        version = _version(exe)
        if version is None or version == mine():
            tried.append(f"{exe} ({version or 'does not run'})")
            continue
        python = _venv(exe, version)
        if python is not None:
            return python, ""
        tried.append(f"{exe} (a venv with {', '.join(_dependencies())} could not be made)")
    want = next(v for v in PREFERRED if v != mine())
    base = _uv_python(want)
    if base is not None and (python := _venv(base, want)) is not None:
        return python, ""
    tried.append(f"uv python install {want} (failed: see stderr)")
    return None, "tried " + "; ".join(tried)
