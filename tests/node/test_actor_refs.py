"""A served object's thread keeps no reference to a finished call's arguments: a large
value the method did not keep is freed once the call is over, not when the next call
comes (its memory, maybe a shared-memory map, goes with it)."""

from __future__ import annotations

import weakref
from typing import Any

import pytest

import netlet
from tests._support import wait_until

np = pytest.importorskip("numpy")


@netlet.expose
class Peek:
    def __init__(self) -> None:
        self.ref: Any = None

    def look(self, arr: Any) -> int:
        self.ref = weakref.ref(arr)
        return int(arr.nbytes)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["blocking", "future", "oneway"])
def test_arguments_die_with_their_call(node_factory: Any, style: str) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    peek = Peek()
    server.serve(peek, "peek")
    proxy = node_factory().proxy(server.address, "peek")
    arr = np.ones(1 << 18)
    if style == "blocking":
        assert proxy.look(arr) == arr.nbytes
    elif style == "future":
        assert proxy.look.future(arr).result(10) == arr.nbytes
    else:
        proxy.look.oneway(arr)
        wait_until(lambda: peek.ref is not None, what="the oneway call ran")
    wait_until(lambda: peek.ref() is None, what="the argument freed after its call")
