"""A worker joins once at a time: callers that ask while a join goes share it.

A failed pull and a heartbeat the head did not know both ask the worker to
join again, often at the same moment (the head restarted, or took the worker
for dead). Two joins give two epochs; the hand-out asked under the first is
then refused whole, and the head runs its tasks again. About 0.2 s.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable, Iterator

import pytest

import netlet
from netlet.cluster import Head, HeadConfig
from netlet.cluster._worker import Worker, WorkerOptions

KEY = bytes(range(32))

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def head(node_factory: Callable[..., netlet.Node]) -> Iterator[str]:
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None)
    head = Head(node, HeadConfig(dead_after=30.0))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    yield node.address
    head.stop()


def test_joins_asked_at_once_are_one_join(head: str) -> None:
    worker = Worker(WorkerOptions(head, key=KEY))
    try:
        worker.join()
        first = worker.book.epoch

        async def three_at_once() -> None:
            await asyncio.gather(*(worker._join() for _ in range(3)))

        asyncio.run_coroutine_threadsafe(three_at_once(), worker.node.get_loop()).result(30)
        assert worker.book.epoch == first + 1
        worker.join()  # a join asked after the shared one ended is a join of its own
        assert worker.book.epoch == first + 2
    finally:
        worker.close()


def test_a_worker_closed_before_it_runs_stops_without_a_stray_coroutine(head: str) -> None:
    """``close()`` from another thread can come before ``run()`` reaches its first step
    (a test's teardown, a signal at start-up): ``run`` then returns, and leaves no
    coroutine that was never awaited (an unraisable warning, an error in this suite)."""
    worker = Worker(WorkerOptions(head, key=KEY))
    worker.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worker.run()
        gc.collect()
