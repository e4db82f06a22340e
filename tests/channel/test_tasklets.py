"""Tasklets: start, join, results and exceptions, cancel (waking a blocked channel wait)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import netlet
from netlet import ChannelTimeout, TaskletExit, WouldBlock
from tests.channel.conftest import STEP, OwnerProcess, outcome, wait_until


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(STEP):
            return await coro

    return asyncio.run(bounded())


async def _until(predicate: Any) -> None:
    """Wait until ``predicate`` holds (there is no event to await), off the loop."""
    await asyncio.to_thread(wait_until, predicate)


# -- starting and joining ----------------------------------------------------------------------


def test_spawn_and_join_return_the_result() -> None:
    t = netlet.spawn(lambda a, b=0: a + b, 2, b=3)
    assert t.join(STEP) == 5
    assert t.done
    assert not t.alive
    assert t.exception() is None


def test_stackless_style_tasklet_call() -> None:
    ch = netlet.channel()

    def producer(n: int) -> str:
        for i in range(n):
            ch.send(i, STEP)
        return "sent"

    t = netlet.tasklet(producer, name="producer")(3)
    assert "producer" in repr(t)
    assert [ch.receive(STEP) for _ in range(3)] == [0, 1, 2]
    assert t.join(STEP) == "sent"


def test_a_tasklet_starts_once() -> None:
    t = netlet.tasklet(lambda: None)
    assert not t.alive
    assert not t.done
    assert "new" in repr(t)
    t()
    with pytest.raises(netlet.ConfigError):
        t()
    t.join(STEP)


def test_a_non_callable_is_refused_cleanly() -> None:
    # The refused handle must not fail again when it is collected (that would be
    # an "Exception ignored in __del__", an error under filterwarnings=error).
    with pytest.raises(netlet.ConfigError):
        netlet.tasklet(42)  # type: ignore[arg-type]
    gc.collect()


def test_join_with_a_timeout_while_running() -> None:
    release = threading.Event()
    t = netlet.spawn(release.wait, STEP)
    assert t.alive
    assert "running" in repr(t)
    with pytest.raises(TimeoutError):
        t.join(0.01)
    release.set()
    assert t.join(STEP) is True


def test_exception_surfaces_on_join() -> None:
    def fail() -> None:
        raise ValueError("from the tasklet")

    t = netlet.spawn(fail)
    with pytest.raises(ValueError, match="from the tasklet"):
        t.join(STEP)
    assert isinstance(t.exception(), ValueError)


def test_async_tasklet_on_the_running_loop() -> None:
    async def main() -> Any:
        ch = netlet.channel()

        async def double(x: int) -> int:
            return x + 2 * await ch.receive.aio(STEP)

        t = netlet.spawn(double, 1)
        await ch.send.aio(21, STEP)
        return await t.join_aio()

    assert _run(main()) == 43


def test_async_tasklet_started_from_plain_code_runs_on_the_default_node() -> None:
    async def where() -> int:
        await asyncio.sleep(0)
        return threading.get_ident()

    try:
        t = netlet.spawn(where)
        assert t.join(STEP) == netlet.default_node().loop_thread_id
    finally:
        netlet.default_node().close()


# -- unjoined failures are logged, not lost -------------------------------------------------


def _forget(t: netlet.Tasklet) -> weakref.ref[netlet.Tasklet]:
    """Wait for ``t`` to finish without observing it; a weak reference to it."""
    wait_until(lambda: t.done, what="the tasklet to finish")
    return weakref.ref(t)


def _collect(ref: weakref.ref[netlet.Tasklet]) -> None:
    """Collect garbage until the tasklet ``ref`` points to is gone."""
    wait_until(lambda: gc.collect() >= 0 and ref() is None,
               what="the tasklet handle to be collected")


def _fail() -> None:
    raise ValueError("nobody asked")


def test_exception_never_joined_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="netlet.channel")
    _collect(_forget(netlet.tasklet(_fail, name="forgotten")()))
    [record] = [r for r in caplog.records if r.name == "netlet.channel"]
    assert record.levelno == logging.ERROR
    assert "forgotten" in record.getMessage()
    assert "nobody joined it" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_observed_or_cancelled_failures_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="netlet.channel")
    joined = netlet.spawn(_fail)
    with pytest.raises(ValueError, match="nobody asked"):
        joined.join(STEP)
    refs = [weakref.ref(joined)]
    del joined
    inspected = netlet.spawn(_fail)
    refs.append(_forget(inspected))
    assert isinstance(inspected.exception(), ValueError)
    del inspected
    ch = netlet.channel()
    cancelled = netlet.spawn(ch.receive)
    wait_until(lambda: ch.balance == -1)
    cancelled.cancel()
    refs.append(_forget(cancelled))
    del cancelled
    ch.close()
    refs.append(_forget(netlet.spawn(lambda: 1)))
    for ref in refs:
        _collect(ref)
    assert [r for r in caplog.records if r.name == "netlet.channel"] == []


# -- cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize("blocked_in", ["receive", "send", "receive with timeout", "select"])
def test_cancel_wakes_a_tasklet_blocked_on_a_channel(blocked_in: str) -> None:
    ch, other = netlet.channel(), netlet.channel()
    reached = []

    def body() -> None:
        if blocked_in == "receive":
            ch.receive()
        elif blocked_in == "send":
            ch.send("never taken")
        elif blocked_in == "receive with timeout":
            ch.receive(STEP)
        else:
            netlet.select(ch.receiving(), other.receiving())
        reached.append("after the wait")

    t = netlet.spawn(body)
    expected = 1 if blocked_in == "send" else -1
    wait_until(lambda: ch.balance == expected, what="the tasklet to block")
    assert t.cancel() is True
    with pytest.raises(TaskletExit):
        t.join(STEP)
    assert reached == []
    # The cancelled wait is withdrawn: nothing is left parked on the channels.
    assert ch.balance == other.balance == 0
    if blocked_in == "send":
        assert outcome(ch.receive.nowait) is WouldBlock
    else:
        assert outcome(lambda: ch.send.nowait("x")) is WouldBlock
        assert outcome(lambda: other.send.nowait("x")) is WouldBlock


def test_cancel_before_the_tasklet_blocks() -> None:
    ch = netlet.channel()
    go = threading.Event()
    reached = []

    def body() -> None:
        go.wait(STEP)
        reached.append("before the wait")
        ch.receive(STEP)
        reached.append("after the wait")

    t = netlet.spawn(body)
    assert t.cancel() is True
    go.set()
    with pytest.raises(TaskletExit):
        t.join(STEP)
    assert reached == ["before the wait"]
    assert ch.balance == 0


def test_tasklet_may_catch_taskletexit_and_finish() -> None:
    ch = netlet.channel()

    def body() -> str:
        try:
            ch.receive()
        except TaskletExit:
            return "cleaned up"
        return "not cancelled"

    t = netlet.spawn(body)
    wait_until(lambda: ch.balance == -1)
    t.cancel()
    assert t.join(STEP) == "cleaned up"


def test_cancel_after_the_end_is_a_no_op() -> None:
    t = netlet.spawn(lambda: "done")
    assert t.join(STEP) == "done"
    assert t.cancel() is False
    assert t.join(STEP) == "done"


def test_cancel_an_async_tasklet_blocked_on_a_channel() -> None:
    async def main() -> None:
        ch = netlet.channel()

        async def body() -> Any:
            return await ch.receive.aio()

        t = netlet.spawn(body)
        await _until(lambda: ch.balance == -1)
        assert t.cancel() is True
        with pytest.raises(TaskletExit):
            await t.join_aio()
        assert ch.balance == 0
        assert outcome(lambda: ch.send.nowait("x")) is WouldBlock

    _run(main())


def test_a_cancelled_tasklet_does_not_swallow_a_value() -> None:
    # Race a cancel against a send: either the tasklet got the value (and returns
    # it) and the send went through, or the tasklet exits and the send finds nobody.
    for i in range(100):
        ch = netlet.channel()
        t = netlet.spawn(ch.receive, STEP)
        wait_until(lambda ch=ch: ch.balance == -1)
        sender = netlet.spawn(ch.send.nowait, i)
        t.cancel()
        pair = (outcome(lambda t=t: t.join(STEP)), outcome(lambda s=sender: s.join(STEP)))
        assert pair in ((i, None), (TaskletExit, WouldBlock))
        assert outcome(ch.receive.nowait) is WouldBlock
        assert ch.balance == 0


# -- a tasklet blocked on a remote channel ------------------------------------------------------


@pytest.fixture
def remote_channel(owner: OwnerProcess, client: netlet.Node) -> Iterator[Any]:
    name = owner.control(client).new_channel(0)
    rc = netlet.connect_channel(owner.address, name, node=client)
    try:
        yield rc
    finally:
        rc.close()  # releases whatever still waits on it


def test_cancel_wakes_a_tasklet_blocked_on_a_remote_channel(remote_channel: Any) -> None:
    rc = remote_channel
    t = netlet.spawn(rc.receive, STEP)
    wait_until(lambda: rc.balance == -1, what="the tasklet to block remotely")
    assert t.cancel() is True
    with pytest.raises(TaskletExit):
        t.join(2.0)
    wait_until(lambda: rc.balance == 0, what="the owner to withdraw the remote receive")
    with pytest.raises(ChannelTimeout):
        rc.send("nobody waits", 0.1)


def test_cancel_an_async_tasklet_blocked_on_a_remote_channel(remote_channel: Any) -> None:
    rc = remote_channel

    async def main() -> None:
        async def body() -> Any:
            return await rc.receive.aio(STEP)

        t = netlet.spawn(body)
        await _until(lambda: rc.balance == -1)
        t.cancel()
        with pytest.raises(TaskletExit):
            await t.join_aio()

    _run(main())
    wait_until(lambda: rc.balance == 0, what="the owner to withdraw the remote receive")
