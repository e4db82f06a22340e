"""Your code on every worker: packages of source, content-addressed, imported per version.

A client with ``working_dir=`` or ``py_modules=`` zips that code (sorted
entries, fixed timestamps and modes, so the same files always give the same
bytes), names each zip by its SHA-256, and uploads to the head only the ones
it lacks. A task names the packages it needs in its function id
(``"mytasks:crunch@w<sha256>,m<sha256>"``); a worker fetches a package on
first use, checks its hash, extracts it into a directory of its own per hash,
and runs the task with that version's modules in ``sys.modules`` (and, for a
working dir, as the current directory), then puts them aside again. Two
versions of ``mytasks`` thus coexist in one worker: an edited module is a new
package, and tasks of the old one keep the old code.

Shipping code is running code, so it needs a keyed cluster; every size a
peer can make the head or a worker hold is capped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import sys
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netlet.errors import ConfigError

if TYPE_CHECKING:
    from netlet.node import Node, Proxy

__all__ = [
    "CHUNK",
    "DEFAULT_EXCLUDES",
    "MAX_PACKAGE",
    "CodeCache",
    "CodeStore",
    "Package",
    "build_packages",
    "split_code",
    "upload_packages",
]

MAX_PACKAGE = 64 << 20
"""Default cap on one package's files (uncompressed bytes)."""
MAX_FILES = 100_000
"""Most entries one package may have."""
MAX_TOTAL = 512 << 20
"""Default cap on what the head holds for all packages together."""
CHUNK = 4 << 20
"""Bytes per upload or download message (well under a frame's 64 MiB)."""
DEFAULT_EXCLUDES = (".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "*.pyc", "*.pyo",
                    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "*.egg-info")
MISSING_WAIT = 10.0
"""Seconds a worker waits for a package the head does not have (yet) before failing."""
_EPOCH = (1980, 1, 1, 0, 0, 0)
_DIGEST_LEN = 64


@dataclass(frozen=True, slots=True)
class Package:
    """One zip of code: ``kind`` is ``"w"`` (a working dir) or ``"m"`` (a module)."""

    kind: str
    digest: str
    data: bytes
    source: str

    @property
    def ref(self) -> str:
        return self.kind + self.digest


# -- packaging (the client) ----------------------------------------------------------------


def _gitignore(root: Path) -> list[str]:
    try:
        lines = (root / ".gitignore").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines
            if ln.strip() and not ln.lstrip().startswith(("#", "!"))]


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    """fnmatch semantics: a pattern with a ``/`` matches the path from the root (and what
    is under it), one without matches any single component."""
    parts = rel.split("/")
    for raw in patterns:
        p = raw.strip().rstrip("/")
        if not p:
            continue
        if "/" in p:
            p = p.lstrip("/")
            if fnmatch.fnmatchcase(rel, p) or rel.startswith(p + "/") or any(
                    fnmatch.fnmatchcase("/".join(parts[:i]), p) for i in range(1, len(parts))):
                return True
        elif any(fnmatch.fnmatchcase(c, p) for c in parts):
            return True
    return False


def _files(root: Path, prefix: str, patterns: list[str]) -> list[tuple[str, Path]]:
    """(name in the zip, file) for every file under ``root`` not excluded, sorted."""
    if root.is_file():
        return [(prefix or root.name, root)]
    out: list[tuple[str, Path]] = []
    for here, dirs, names in os.walk(root):  # symlinked directories are not followed
        rel_here = Path(here).relative_to(root).as_posix()
        rel_here = "" if rel_here == "." else rel_here + "/"
        dirs[:] = [d for d in dirs if not _excluded(rel_here + d, patterns)]
        for n in names:
            rel = rel_here + n
            if not _excluded(rel, patterns) and os.path.isfile(os.path.join(here, n)):
                out.append(((prefix + "/" if prefix else "") + rel, Path(here) / n))
    return sorted(out)


def _zip(files: list[tuple[str, Path]], source: str, cap: int) -> bytes:
    sizes = [(p.stat().st_size, name) for name, p in files]
    total = sum(s for s, _ in sizes)
    if total > cap or len(files) > MAX_FILES:
        biggest = ", ".join(f"{n} ({s / 2**20:.1f} MiB)" for s, n in sorted(sizes)[::-1][:5])
        raise ConfigError(
            f"the code in {source} is {total / 2**20:.1f} MiB in {len(files)} files, over the "
            f"cap of {cap / 2**20:.0f} MiB per package (max_code_bytes=) or {MAX_FILES} files; "
            f"the biggest: {biggest}. Exclude data and environments with excludes=[...] or a "
            ".gitignore, or ship a smaller directory")
    import zipfile  # only when shipping: not on every import of the cluster

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=6)
    return buf.getvalue()


def _module_root(mod: Any) -> tuple[Path, str]:
    """Where a ``py_modules`` entry lives, and its top-level name."""
    if isinstance(mod, types.ModuleType):
        name = mod.__name__
        if "." in name:
            raise ConfigError(f"py_modules takes top-level modules; give {name.split('.')[0]!r}, "
                              f"not {name!r}")
        paths = list(getattr(mod, "__path__", []) or [])
        if paths:
            return Path(paths[0]), name
        file = getattr(mod, "__file__", None)
        if not file or not file.endswith(".py"):
            raise ConfigError(f"module {name!r} has no Python source file to ship "
                              "(built-in or compiled modules must be installed on the workers)")
        return Path(file), name + ".py"
    path = Path(os.fspath(mod))
    if not path.exists():
        raise ConfigError(f"py_modules: {path} does not exist")
    return path, path.name


def build_packages(working_dir: str | os.PathLike[str] | None, py_modules: Iterable[Any],
                   excludes: Iterable[str] = (), cap: int = MAX_PACKAGE) -> list[Package]:
    """Zip a working dir and modules (one package each), honouring the excludes."""
    extra = list(excludes)
    out: list[Package] = []
    if working_dir is not None:
        root = Path(working_dir).resolve()
        if not root.is_dir():
            raise ConfigError(f"working_dir {root} is not a directory")
        patterns = [*DEFAULT_EXCLUDES, *_gitignore(root), *extra]
        data = _zip(_files(root, "", patterns), str(root), cap)
        out.append(Package("w", hashlib.sha256(data).hexdigest(), data, str(root)))
    for mod in py_modules:
        path, name = _module_root(mod)
        patterns = [*DEFAULT_EXCLUDES, *extra]
        data = _zip(_files(path, name, patterns), str(path), cap)
        out.append(Package("m", hashlib.sha256(data).hexdigest(), data, str(path)))
    return out


def split_code(fn_id: str) -> tuple[str, list[str]]:
    """``"mod:fn@wHASH,mHASH"`` -> (``"mod:fn"``, [refs]); no ``@``: no packages."""
    base, sep, refs = fn_id.rpartition("@")
    if not sep:
        return fn_id, []
    parts = refs.split(",")
    if not base or not all(len(r) == _DIGEST_LEN + 1 and r[0] in "wm"
                           and all(c in "0123456789abcdef" for c in r[1:]) for r in parts):
        return fn_id, []  # not ours: leave it to the import, which will say what is wrong
    return base, parts


# -- the head's store -----------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    data: bytearray
    size: int
    owners: set[str] = field(default_factory=set)
    used: float = field(default_factory=time.monotonic)

    @property
    def complete(self) -> bool:
        return len(self.data) == self.size


class CodeStore:
    """The head's packages: each once per hash, within a size cap per package and in all.

    Clients that use a package own it; a package no live client owns is dropped,
    least recently used first, when room is needed.
    """

    def __init__(self, max_package: int = MAX_PACKAGE, max_total: int = MAX_TOTAL) -> None:
        self.max_package = max_package
        self.max_total = max_total
        self._packages: dict[str, _Stored] = {}

    @property
    def held(self) -> int:
        """Bytes held or promised: an upload in progress counts at its full size."""
        return sum(p.size for p in self._packages.values())

    def missing(self, client: str, digests: list[str]) -> list[str]:
        """Claim the packages the client will use; return those it must upload."""
        out = []
        for d in digests:
            p = self._packages.get(_digest(d))
            if p is not None and p.complete:
                p.owners.add(client)
                p.used = time.monotonic()
            else:
                out.append(d)
        return out

    def put(self, client: str, digest: str, size: int, offset: int, chunk: bytes) -> int:
        """Take the chunk at ``offset``; returns the bytes held so far (``size``: complete)."""
        digest = _digest(digest)
        if not isinstance(size, int) or not 0 < size <= self.max_package:
            raise ConfigError(f"a code package is 1 byte to {self.max_package} bytes "
                              f"(this head's cap), not {size}")
        if not isinstance(chunk, bytes) or len(chunk) > CHUNK or not isinstance(offset, int):
            raise ConfigError(f"a code chunk is bytes, at most {CHUNK} at a time")
        p = self._packages.get(digest)
        if p is not None and p.complete:
            p.owners.add(client)
            return p.size
        if p is None or p.size != size:
            partial = sum(1 for q in self._packages.values()
                          if not q.complete and client in q.owners)
            if partial >= 4:
                raise ConfigError("at most 4 code uploads per client at once")
            self._make_room(size)
            p = self._packages[digest] = _Stored(bytearray(), size, {client})
        if offset != len(p.data) or offset + len(chunk) > size:
            raise ConfigError(f"code chunk at {offset} does not follow the {len(p.data)} "
                              f"bytes held of {size}")
        p.owners.add(client)
        p.data += chunk
        p.used = time.monotonic()
        if p.complete and hashlib.sha256(p.data).hexdigest() != digest:
            del self._packages[digest]
            raise ConfigError(f"the package sent as {digest[:12]} has another SHA-256: dropped")
        return len(p.data)

    def _make_room(self, size: int) -> None:
        free = sorted((p.used, d) for d, p in self._packages.items() if not p.owners)
        while self.held + size > self.max_total and free:
            del self._packages[free.pop(0)[1]]
        if self.held + size > self.max_total:
            raise ConfigError(
                f"the head's code store is full ({self.held / 2**20:.0f} of "
                f"{self.max_total / 2**20:.0f} MiB, all used by connected clients); "
                "close old clients or ship less code")

    def get(self, digest: str, offset: int, length: int) -> bytes:
        p = self._packages.get(_digest(digest))
        if p is None or not p.complete:
            raise ConfigError(f"the head has no code package {str(digest)[:12]} (a head "
                              "restarted since the client uploaded it?)")
        p.used = time.monotonic()
        length = max(0, min(int(length), CHUNK))
        return bytes(p.data[int(offset):int(offset) + length])

    def size(self, digest: str) -> int:
        p = self._packages.get(_digest(digest))
        return p.size if p is not None and p.complete else -1

    def forget_client(self, client: str) -> None:
        for d, p in list(self._packages.items()):
            p.owners.discard(client)
            if not p.complete and not p.owners:
                del self._packages[d]


def _digest(d: Any) -> str:
    if (not isinstance(d, str) or len(d) != _DIGEST_LEN
            or not all(c in "0123456789abcdef" for c in d)):
        raise ConfigError("a code package is named by its SHA-256 in lowercase hex")
    return d


# -- the worker's cache and importer --------------------------------------------------------


Fetch = Callable[[str, int, int], bytes]
"""``fetch(digest, offset, length)``: bytes of a package from the head."""
Size = Callable[[str], int]


class CodeCache:
    """A worker's extracted packages, at most ``keep`` of them (least recently used go)."""

    def __init__(self, fetch: Fetch, size: Size, keep: int = 32,
                 max_package: int = MAX_PACKAGE, parent: str | None = None) -> None:
        self._parent = parent
        self._fetch = fetch
        self._size = size
        self._keep = keep
        self._max = max_package
        self._dir: str | None = None
        self._roots: OrderedDict[str, tuple[str, list[str]]] = OrderedDict()
        self._modules: dict[str, dict[str, types.ModuleType]] = {}
        self._lock = threading.RLock()
        self._current: tuple[str, ...] = ()
        self._undo: tuple[Any, ...] | None = None

    def _root(self, digest: str) -> tuple[str, list[str]]:
        """(directory, top-level names) of a package, fetched and extracted on first use."""
        found = self._roots.get(digest)
        if found is not None:
            self._roots.move_to_end(digest)
            return found
        size = self._size(digest)
        deadline = time.monotonic() + MISSING_WAIT
        while size < 0 and time.monotonic() < deadline:  # a restarted head: the client
            time.sleep(0.2)                               # uploads again when it is back
            size = self._size(digest)
        if not 0 < size <= self._max:
            raise ConfigError(f"the head has no code package {digest[:12]} (size {size}; a "
                              "head restarted since the client uploaded it?)")
        data = bytearray()
        while len(data) < size:
            chunk = self._fetch(digest, len(data), min(CHUNK, size - len(data)))
            if not chunk:
                raise ConfigError(f"code package {digest[:12]} ended early")
            data += chunk
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConfigError(f"code package {digest[:12]} came with another SHA-256")
        import shutil  # only with shipped code: ~1.5 ms of every worker's start otherwise
        import tempfile

        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="netlet-code-", dir=self._parent)
        root = os.path.join(self._dir, digest)
        names = _extract(bytes(data), root, self._max)
        self._roots[digest] = (root, names)
        while len(self._roots) > self._keep:
            old, (old_root, _) = self._roots.popitem(last=False)
            self._modules.pop(old, None)
            shutil.rmtree(old_root, ignore_errors=True)
        return root, names

    @property
    def current(self) -> tuple[str, ...]:
        """The packages whose modules are in place now (they stay between tasks)."""
        return self._current

    @contextlib.contextmanager
    def active(self, refs: list[str]) -> Iterator[None]:
        """Run with these packages' versions of their modules (and the working dir as cwd).

        The switch is made only when the packages differ from the last task's
        (a run of tasks of one version costs nothing), and one thread at a
        time: an actor created from shipped code waits for the worker's running
        task (``sys.modules`` is one per process).
        """
        with self._lock:
            wanted = tuple(refs)
            if wanted != self._current:
                self._restore()
                if wanted:
                    self._apply(wanted)
            yield

    def _apply(self, refs: tuple[str, ...]) -> None:
        roots = [(r[0], r[1:], *self._root(r[1:])) for r in refs]
        tops = {n for *_, names in roots for n in names}
        saved = {k: m for k, m in sys.modules.items() if k.partition(".")[0] in tops}
        for k in saved:
            del sys.modules[k]
        for _, digest, _, _ in roots:
            sys.modules.update(self._modules.get(digest, {}))
        paths = [root for *_, root, _ in roots]
        sys.path[:0] = paths
        cwd = None
        workdir = next((root for kind, _, root, _ in roots if kind == "w"), None)
        if workdir is not None:
            cwd = os.getcwd()
            os.chdir(workdir)
        self._current = refs
        self._undo = (roots, tops, saved, paths, cwd)

    def _restore(self) -> None:
        """Put the worker's own modules, path and directory back."""
        if self._undo is None:
            return
        roots, tops, saved, paths, cwd = self._undo
        self._undo, self._current = None, ()
        if cwd is not None:
            with contextlib.suppress(OSError):
                os.chdir(cwd)
        for p in paths:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
        mine = {k: m for k, m in sys.modules.items() if k.partition(".")[0] in tops}
        for k in mine:
            del sys.modules[k]
        for _kind, digest, _, names in roots:
            self._modules[digest] = {k: m for k, m in mine.items()
                                     if k.partition(".")[0] in names}
        sys.modules.update(saved)

    def close(self) -> None:
        with self._lock:
            self._restore()
        if self._dir is not None:  # made by _root, which imported shutil
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _extract(data: bytes, root: str, cap: int) -> list[str]:
    """Extract a package safely (no absolute or ``..`` names, within the size cap);
    returns the top-level module names it provides."""
    import shutil
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > cap:
            raise ConfigError(f"a code package over {cap} bytes or {MAX_FILES} files")
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        tops: set[str] = set()
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if (name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts)
                    or info.is_dir()):
                continue
            target = os.path.join(tmp, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            top = parts[0]
            if len(parts) == 1:
                if top.endswith(".py"):
                    tops.add(top[:-3])
                elif top.endswith((".so", ".pyd")):
                    tops.add(top.split(".")[0])
            elif top.isidentifier() and name.endswith(".py"):
                tops.add(top)  # a package (or namespace package) of Python files; a
                # directory of data named like a module (logging/) shadows nothing
    shutil.rmtree(root, ignore_errors=True)
    os.rename(tmp, root)
    return sorted(tops)


def upload_packages(node: Node, head: Proxy, packages: list[Package]) -> None:
    """Send the head the packages it lacks (each once per hash, in chunks)."""
    if not packages:
        return
    peer = node.peer_of(head.__netlet_ref__())
    if node.config.transport.key is None or (peer is not None and not peer.authenticated):
        raise ConfigError(
            "shipping code (working_dir=, py_modules=) runs it on every worker, so it "
            "needs a keyed cluster: give the head's key (key_file=, or $NETLET_KEY_FILE) "
            "and start the head with --key-file")
    head = head.with_options(timeout=60)
    missing = set(head.code_missing(node.id, [p.digest for p in packages]))
    for p in packages:
        if p.digest in missing:
            for off in range(0, len(p.data), CHUNK):
                head.code_put(node.id, p.digest, len(p.data), off, p.data[off:off + CHUNK])
