"""Large receive buffers are kept and reused (``_pool``): only once nothing refers to
them, never under a value still in use, and always within the node's budget."""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable
from typing import Any

import pytest

import netlet
from tests._support import wait_until

MiB = 1024 * 1024
np = pytest.importorskip("numpy")


@netlet.expose
class Store:
    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, value: Any) -> int:
        self.kept.append(value)
        return len(self.kept)

    def kept_digest(self) -> list[bytes]:
        return [bytes(memoryview(v).cast("B")[:64]) + bytes(memoryview(v).cast("B")[-64:])
                for v in self.kept]

    def where(self, value: Any) -> int:
        """Where the value's memory is (a buffer reused for the next value is found again)."""
        if isinstance(value, bytes):
            return id(value)
        return int(value.__array_interface__["data"][0])

    def hash_ok(self, value: bytes) -> bool:
        h = hash(value)  # cached in the object: a reused one must not keep the old hash
        return h == hash(bytes(bytearray(value)))



def _payload(kind: str, seed: int) -> Any:
    data = bytes([seed]) * (2 * MiB)
    return data if kind == "bytes" else np.frombuffer(data, dtype=np.uint8).copy()


def _call(proxy: Any, path: str, method: str, *args: Any) -> Any:
    """A call on the direct path (blocking) or on the main link (a future)."""
    m = getattr(proxy, method)
    return m(*args) if path == "direct" else m.future(*args).result(30)


@pytest.fixture
def store(node_factory: Callable[..., Any]) -> tuple[Any, Any]:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Store(), "store")
    client = node_factory()
    return server, client.proxy(server.address, "store")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["direct", "link"])
@pytest.mark.parametrize("kind", ["bytes", "numpy"])
def test_values_still_held_are_never_overwritten(store: tuple[Any, Any], path: str,
                                                 kind: str) -> None:
    _, proxy = store
    for seed in range(1, 6):
        _call(proxy, path, "keep", _payload(kind, seed))
    digests = _call(proxy, path, "kept_digest")
    assert digests == [bytes([s]) * 128 for s in range(1, 6)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["direct", "link"])
def test_a_buffer_nothing_holds_is_reused(store: tuple[Any, Any], path: str) -> None:
    """numpy arrays (both paths) and bytes (direct path) land in the buffer of the last
    value of that size once it is gone (no page faults, no zeroing): the cache does not
    fill up with one buffer per value."""
    server, proxy = store
    kinds = ["numpy", "bytes"] if path == "direct" else ["numpy"]
    for i, kind in enumerate(kinds, 1):
        for seed in range(6):
            _call(proxy, path, "where", _payload(kind, seed))
        # The value of a call may outlive its reply for a moment: at most two per kind.
        assert server.budget.cached <= 2 * i * (2 * MiB + 4096), (
            f"{kind}: {server.budget.cached / MiB:.1f} MiB kept after 6 values of 2 MiB")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "path"), [("bytes", "direct"), ("numpy", "direct"),
                                            ("numpy", "link")])
def test_large_values_cost_no_page_faults_once_warm(store: tuple[Any, Any], path: str,
                                                    kind: str) -> None:
    """README: large values arrive "without page faults per value". A value in fresh
    memory costs a fault per page: 40 MiB is above the size glibc ever serves from its
    heap (32 MiB), so each fresh one is a new mapping, 10,240 faults. (The direct
    path's byte counter once read a call's buffers before the decoder asked for them,
    so bytes landed in a map and were copied into fresh memory: W5 bytes ran at a third
    of numpy's speed.) Bytes on the main link are copied out of the map: not promised."""
    _, proxy = store
    data = bytes(range(256)) * (40 * MiB // 256)
    value = data if kind == "bytes" else np.frombuffer(data, dtype=np.uint8)
    for _ in range(2):  # warm: the cache holds this size now
        _call(proxy, path, "where", value)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        _call(proxy, path, "where", value)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 2560, f"{faults} page faults for 3 values of 40 MiB ({kind}, {path})"


@pytest.mark.timeout(60)
def test_a_reused_bytes_object_hashes_its_new_content(store: tuple[Any, Any]) -> None:
    _, proxy = store
    for seed in range(4):
        assert proxy.hash_ok(_payload("bytes", seed))


@pytest.mark.timeout(60)
def test_kept_buffers_count_in_the_budget_and_give_way(
        node_factory: Callable[..., Any]) -> None:
    """What the cache keeps counts in the total and stays under half of it; a frame that
    needs the room makes it drop buffers instead of waiting."""
    server = node_factory("tcp://127.0.0.1:0", max_memory=24 * MiB,
                          max_connection_memory=12 * MiB)
    store = Store()
    server.serve(store, "store")
    proxy = node_factory().proxy(server.address, "store")
    budget = server.budget
    for size in (3, 4, 5, 6, 7):  # each too unlike the others to reuse their buffer
        proxy.where(bytes(size * MiB))
        wait_until(lambda: budget.cached > 0)  # kept once the call's thread is done
        assert budget.cached <= 12 * MiB
    # Hold 10 MiB in a running call while 10 MiB more arrive: only the cache can give way.
    release = threading.Event()

    @netlet.expose
    class Hold:
        def hold(self, data: bytes) -> int:
            release.wait(30)
            return len(data)

    server.serve(Hold(), "hold")
    holder = node_factory().proxy(server.address, "hold")
    first = holder.hold.future(bytes(10 * MiB))
    try:
        assert proxy.where(np.zeros(10 * MiB, dtype=np.uint8)) > 0
        assert budget.used + budget.set_aside + budget.cached <= budget.total
    finally:
        release.set()
    assert first.result(30) == 10 * MiB
