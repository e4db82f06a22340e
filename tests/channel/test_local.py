"""Channel semantics, as a table and as scenarios, for local and remote channels alike.

Every test here takes ``make_channel``, so it runs twice: on a ``netlet.Channel``
of this process (``local``) and on a ``RemoteChannel`` whose channel lives in a
real owner process reached over TCP (``remote``). Peers (the other side of a
rendezvous) are threads of this process using the same handle. Select is local
only and has its own table in ``test_select.py``.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import netlet
from netlet import ChannelClosed, ChannelTimeout, WouldBlock
from tests.channel.conftest import STEP, future_outcome, in_thread, outcome, wait_until

SHORT = 0.05
"""The timeout of an operation that is expected to time out."""

# -- the table -------------------------------------------------------------------------------
#
# A state is (buffer size, values put in the buffer, the parked peer, closed?).
# The peer is a thread parked before the operation: "receive" (it receives),
# "send" (it sends "p"), or None.

STATES: dict[str, tuple[int, tuple[str, ...], str | None, bool]] = {
    "empty": (0, (), None, False),
    "receiver waits": (0, (), "receive", False),
    "sender waits": (0, (), "send", False),
    "buffer has room": (2, ("b1",), None, False),
    "buffer full": (2, ("b1", "b2"), None, False),
    "buffer full, sender waits": (1, ("b1",), "send", False),
    "closed": (0, (), None, True),
    "closed with buffered values": (2, ("b1", "b2"), None, True),
}

# Operations: "send" / "receive" wait up to SHORT; "send0" / "receive0" use timeout=0;
# "*_nowait" never wait; "close". The value sent is "x".
BLOCKING_OPS = ("send", "send0", "receive", "receive0")

_NO_PEER = object()


@dataclass(frozen=True)
class Row:
    state: str
    op: str
    result: Any
    """What the operation returns, or the exception class it raises."""
    peer: Any = _NO_PEER
    """What the parked peer ends with (after the operation, the drain and a final close):
    the value it received, None for a send that went through, or an exception class."""
    balance: int = 0
    """``balance`` right after the operation."""
    drain: tuple[str, ...] = ()
    """What ``receive(timeout=0)`` gives afterwards, in order, until it stops..."""
    end: type[Exception] = ChannelTimeout
    """...with this: ChannelTimeout on an open channel, ChannelClosed on a closed one."""


def _rows() -> list[Row]:
    closed = ChannelClosed
    rw, sw, full_w = "receiver waits", "sender waits", "buffer full, sender waits"
    rows = [
        Row("empty", "send", ChannelTimeout),
        Row("empty", "send0", ChannelTimeout),
        Row("empty", "send_nowait", WouldBlock),
        Row("empty", "receive", ChannelTimeout),
        Row("empty", "receive0", ChannelTimeout),
        Row("empty", "receive_nowait", WouldBlock),
        Row("empty", "close", None, end=closed),

        Row(rw, "send", None, peer="x"),
        Row(rw, "send0", None, peer="x"),
        Row(rw, "send_nowait", None, peer="x"),
        Row(rw, "receive", ChannelTimeout, peer=closed, balance=-1),
        Row(rw, "receive0", ChannelTimeout, peer=closed, balance=-1),
        Row(rw, "receive_nowait", WouldBlock, peer=closed, balance=-1),
        Row(rw, "close", None, peer=closed, end=closed),

        Row(sw, "receive", "p", peer=None),
        Row(sw, "receive0", "p", peer=None),
        Row(sw, "receive_nowait", "p", peer=None),
        Row(sw, "send", ChannelTimeout, peer=None, balance=1, drain=("p",)),
        Row(sw, "send0", ChannelTimeout, peer=None, balance=1, drain=("p",)),
        Row(sw, "send_nowait", WouldBlock, peer=None, balance=1, drain=("p",)),
        Row(sw, "close", None, peer=closed, end=closed),

        Row("buffer has room", "send", None, drain=("b1", "x")),
        Row("buffer has room", "send0", None, drain=("b1", "x")),
        Row("buffer has room", "send_nowait", None, drain=("b1", "x")),
        Row("buffer has room", "receive", "b1"),
        Row("buffer has room", "receive0", "b1"),
        Row("buffer has room", "receive_nowait", "b1"),
        Row("buffer has room", "close", None, drain=("b1",), end=closed),

        Row("buffer full", "send", ChannelTimeout, drain=("b1", "b2")),
        Row("buffer full", "send0", ChannelTimeout, drain=("b1", "b2")),
        Row("buffer full", "send_nowait", WouldBlock, drain=("b1", "b2")),
        Row("buffer full", "receive", "b1", drain=("b2",)),
        Row("buffer full", "receive0", "b1", drain=("b2",)),
        Row("buffer full", "receive_nowait", "b1", drain=("b2",)),
        Row("buffer full", "close", None, drain=("b1", "b2"), end=closed),

        # Taking from a full buffer moves the parked sender's value in (and releases it).
        Row(full_w, "receive", "b1", peer=None, drain=("p",)),
        Row(full_w, "receive0", "b1", peer=None, drain=("p",)),
        Row(full_w, "receive_nowait", "b1", peer=None, drain=("p",)),
        Row(full_w, "send", ChannelTimeout, peer=None, balance=1, drain=("b1", "p")),
        Row(full_w, "send0", ChannelTimeout, peer=None, balance=1, drain=("b1", "p")),
        Row(full_w, "send_nowait", WouldBlock, peer=None, balance=1, drain=("b1", "p")),
        Row(full_w, "close", None, peer=closed, drain=("b1",), end=closed),
    ]
    for op in ("send", "send0", "send_nowait", "receive", "receive0", "receive_nowait"):
        rows.append(Row("closed", op, closed, end=closed))
    rows.append(Row("closed", "close", None, end=closed))
    for op in ("send", "send0", "send_nowait"):
        rows.append(Row("closed with buffered values", op, closed, drain=("b1", "b2"),
                        end=closed))
    for op in ("receive", "receive0", "receive_nowait"):
        rows.append(Row("closed with buffered values", op, "b1", drain=("b2",), end=closed))
    rows.append(Row("closed with buffered values", "close", None, drain=("b1", "b2"),
                    end=closed))
    return rows


def _params() -> list[Any]:
    params = []
    for row in _rows():
        for style in ("sync", "async") if row.op in BLOCKING_OPS else ("sync",):
            params.append(pytest.param(row, style, id=f"{row.state}|{row.op}|{style}"))
    return params


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(STEP):
            return await coro

    return asyncio.run(bounded())


def _op(ch: Any, op: str, style: str) -> Callable[[], Any]:
    timeout = 0 if op.endswith("0") else SHORT
    if op in ("send", "send0"):
        if style == "async":
            return lambda: _run(ch.send.aio("x", timeout))
        return lambda: ch.send("x", timeout)
    if op in ("receive", "receive0"):
        if style == "async":
            return lambda: _run(ch.receive.aio(timeout))
        return lambda: ch.receive(timeout)
    if op == "send_nowait":
        return lambda: ch.send.nowait("x")
    if op == "receive_nowait":
        return lambda: ch.receive.nowait()
    assert op == "close"
    return ch.close


def drain(ch: Any) -> tuple[tuple[Any, ...], type[Exception]]:
    """Receive with timeout=0 until that fails; the values and how it stopped."""
    got = []
    while True:
        try:
            got.append(ch.receive(0))
        except (ChannelTimeout, ChannelClosed) as e:
            return tuple(got), type(e)


def _buffered(ch: Any) -> int:
    stats = ch.statistics()
    return int(stats["buffered"] if isinstance(stats, dict) else stats.buffered)


def _setup(make_channel: Callable[..., Any], state: str) -> tuple[Any, Any]:
    buffer, values, peer, closed = STATES[state]
    ch = make_channel(buffer)
    for v in values:
        ch.send(v, 0)  # room in the buffer: returns at once
    # (A separate test checks that a returned send is already in the buffer; here the
    # state must be exact whatever that test says.)
    wait_until(lambda: _buffered(ch) == len(values), what="the buffer to fill")
    fut = None
    if peer == "receive":
        fut = in_thread(ch.receive, STEP)
        wait_until(lambda: ch.balance == -1, what="the peer to park in receive")
    elif peer == "send":
        fut = in_thread(ch.send, "p", STEP)
        wait_until(lambda: ch.balance == 1, what="the peer to park in send")
    if closed:
        ch.close()
    return ch, fut


def _bounded(fn: Callable[[], Any]) -> Any:
    """``outcome(fn)``, but TimeoutError if it hangs (so a hang fails the row, not the run)."""
    return future_outcome(in_thread(fn), 2.0)


@pytest.mark.parametrize(("row", "style"), _params())
def test_semantics_table(make_channel: Callable[..., Any], row: Row, style: str) -> None:
    ch, peer = _setup(make_channel, row.state)
    seen: dict[str, Any] = {"result": _bounded(_op(ch, row.op, style)), "balance": ch.balance}
    seen["drain"], seen["end"] = drain(ch)
    seen["final close"] = _bounded(ch.close)
    seen["peer"] = _NO_PEER if peer is None else future_outcome(peer)
    assert seen == {"result": row.result, "balance": row.balance, "drain": row.drain,
                    "end": row.end, "final close": None, "peer": row.peer}
    assert ch.closed


# -- rendezvous, buffering, balance ------------------------------------------------------------


def test_send_waits_for_its_receiver(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    sender = in_thread(ch.send, "v", STEP)
    wait_until(lambda: ch.balance == 1, what="the sender to park")
    assert not sender.done()
    assert ch.receive(STEP) == "v"
    assert sender.result(STEP) is None
    assert ch.balance == 0


def test_receive_waits_for_a_sender(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    receiver = in_thread(ch.receive, STEP)
    wait_until(lambda: ch.balance == -1, what="the receiver to park")
    assert not receiver.done()
    ch.send("v", STEP)
    assert receiver.result(STEP) == "v"
    assert ch.balance == 0


def test_buffer_makes_sends_asynchronous_up_to_its_size(
        make_channel: Callable[..., Any]) -> None:
    ch = make_channel(3)
    for i in range(3):
        ch.send(i, 0)  # timeout=0 would raise if the send had to wait
    fourth = in_thread(ch.send, 3, STEP)
    wait_until(lambda: ch.balance == 1, what="the fourth send to park")
    assert ch.receive(STEP) == 0
    assert fourth.result(STEP) is None  # its value moved into the freed slot
    assert [ch.receive(STEP) for _ in range(3)] == [1, 2, 3]


def test_a_buffered_send_that_returned_is_in_the_channel(
        make_channel: Callable[..., Any]) -> None:
    ch = make_channel(3)
    for i in range(3):
        ch.send(i, 0)
    assert [ch.receive(0) for _ in range(3)] == [0, 1, 2]
    for i in range(3):
        ch.send(i, 0)
    with pytest.raises(ChannelTimeout):
        ch.send("over capacity", SHORT)  # the buffer is full: nothing moved


def test_one_senders_values_keep_their_order_across_send_kinds(
        make_channel: Callable[..., Any]) -> None:
    rounds = 10
    ch = make_channel(4 * rounds)
    for r in range(rounds):
        ch.send(4 * r, 0)
        ch.send.nowait(4 * r + 1)
        _run(ch.send.aio(4 * r + 2, 0))
        ch.send_exception(ValueError(4 * r + 3), timeout=0)
    got = []
    for _ in range(4 * rounds):
        try:
            got.append(ch.receive(STEP))
        except ValueError as e:
            got.append(e.args[0])
    assert got == list(range(4 * rounds))


def test_parked_senders_are_served_in_arrival_order(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    senders = []
    for i in range(4):
        senders.append(in_thread(ch.send, i, STEP))
        wait_until(lambda n=i + 1: ch.balance == n, what=f"sender {i} to park")
    assert [ch.receive(STEP) for _ in range(4)] == [0, 1, 2, 3]
    assert all(s.result(STEP) is None for s in senders)


def test_parked_receivers_are_served_in_arrival_order(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    receivers = []
    for i in range(3):
        receivers.append(in_thread(ch.receive, STEP))
        wait_until(lambda n=i + 1: ch.balance == -n, what=f"receiver {i} to park")
    for v in "abc":
        ch.send(v, STEP)
    assert [r.result(STEP) for r in receivers] == ["a", "b", "c"]


def _bag(items: Any) -> list[str]:
    return sorted(map(repr, items))


def test_balance_sign_says_who_waits(make_channel: Callable[..., Any]) -> None:
    senders_side, receivers_side = make_channel(), make_channel()
    assert senders_side.balance == receivers_side.balance == 0
    senders = [in_thread(senders_side.send, i, STEP) for i in range(2)]
    receivers = [in_thread(receivers_side.receive, STEP) for _ in range(3)]
    wait_until(lambda: senders_side.balance == 2, what="two parked senders")
    wait_until(lambda: receivers_side.balance == -3, what="three parked receivers")
    assert senders_side.receive(STEP) in (0, 1)
    assert senders_side.balance == 1
    receivers_side.send("one", STEP)
    assert receivers_side.balance == -2
    senders_side.close()
    receivers_side.close()
    assert _bag(map(future_outcome, senders)) == _bag([None, ChannelClosed])
    assert _bag(map(future_outcome, receivers)) == _bag([ChannelClosed, ChannelClosed, "one"])
    assert senders_side.balance == receivers_side.balance == 0


def test_a_timed_out_receive_leaves_no_ghost(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    with pytest.raises(ChannelTimeout):
        ch.receive(SHORT)
    assert ch.balance == 0
    # Nobody is left waiting: a send with a timeout finds no receiver.
    with pytest.raises(ChannelTimeout):
        ch.send("lost?", SHORT)
    with pytest.raises(ChannelTimeout):
        ch.receive(0)


@pytest.mark.parametrize("side", ["receive", "send", "async receive", "select"])
def test_timed_out_waits_do_not_pile_up_on_an_idle_channel(side: str) -> None:
    # A loop polling an idle channel with a timeout must run in bounded memory:
    # each timed-out wait has to leave the channel's queue, not linger in it.
    ch = netlet.channel()

    async def poll_async(n: int) -> None:
        for _ in range(n):
            try:
                await ch.receive.aio(0)
            except ChannelTimeout:
                pass

    def poll(n: int) -> None:
        if side == "async receive":
            asyncio.run(poll_async(n))
            return
        for _ in range(n):
            try:
                if side == "receive":
                    ch.receive(0)
                elif side == "send":
                    ch.send("x", 0)
                else:
                    netlet.select(ch.receiving(), timeout=0)
            except (ChannelTimeout, WouldBlock):
                pass

    poll(100)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        poll(2000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes kept by 2000 timed-out waits"
    assert ch.balance == 0


def test_close_wakes_every_waiter(make_channel: Callable[..., Any]) -> None:
    a, b = make_channel(), make_channel()
    receivers = [in_thread(a.receive, STEP) for _ in range(3)]
    senders = [in_thread(b.send, i, STEP) for i in range(3)]
    wait_until(lambda: a.balance == -3 and b.balance == 3, what="everyone to park")
    a.close()
    b.close()
    assert [future_outcome(f) for f in receivers + senders] == [ChannelClosed] * 6
    assert a.closed
    assert b.closed


def test_statistics_snapshot(make_channel: Callable[..., Any]) -> None:
    ch = make_channel(2)
    fresh = ch.statistics()  # a frozen snapshot with named fields, local or remote
    assert (fresh.capacity, fresh.buffered, fresh.balance, fresh.sent, fresh.received,
            fresh.closed) == (2, 0, 0, 0, 0, False)
    assert fresh.name == ch.name
    ch.send(1, STEP)
    ch.send(2, STEP)
    assert ch.receive(STEP) == 1
    stats = ch.statistics()
    assert (stats.capacity, stats.buffered, stats.balance, stats.sent, stats.received,
            stats.closed) == (2, 1, 0, 2, 1, False)
    ch.close()
    assert ch.statistics().closed


def test_statistics_count_waiting_senders_and_receivers(make_channel: Callable[..., Any]) -> None:
    ch = make_channel(0)
    receivers = [in_thread(ch.receive, 10) for _ in range(2)]
    wait_until(lambda: ch.statistics().receivers_waiting == 2, what="two parked receivers")
    stats = ch.statistics()
    assert (stats.senders_waiting, stats.receivers_waiting, stats.buffered) == (0, 2, 0)
    for i in range(2):
        ch.send(i, STEP)
    assert sorted(f.result(STEP) for f in receivers) == [0, 1]
    senders = [in_thread(ch.send, i, 10) for i in range(3)]
    wait_until(lambda: ch.statistics().senders_waiting == 3, what="three parked senders")
    assert ch.statistics().receivers_waiting == 0
    assert sorted(ch.receive(STEP) for _ in range(3)) == [0, 1, 2]
    for f in senders:
        f.result(STEP)
    assert (ch.statistics().senders_waiting, ch.statistics().receivers_waiting) == (0, 0)


# -- send_exception --------------------------------------------------------------------------


def test_send_exception_is_raised_by_the_receiver(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    receiver = in_thread(ch.receive, STEP)
    wait_until(lambda: ch.balance == -1, what="the receiver to park")
    ch.send_exception(ValueError, "bad", 7, timeout=STEP)
    with pytest.raises(ValueError, match="bad") as err:
        receiver.result(STEP)
    assert err.value.args == ("bad", 7)


def test_send_exception_waits_like_a_send(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    with pytest.raises(ChannelTimeout):
        ch.send_exception(KeyError("k"), timeout=SHORT)  # no receiver: nothing moved
    sender = in_thread(ch.send_exception, KeyError("k"), timeout=STEP)
    wait_until(lambda: ch.balance == 1, what="the exception's sender to park")
    with pytest.raises(KeyError):
        ch.receive(STEP)
    assert sender.result(STEP) is None


def test_buffered_exception_keeps_its_place(make_channel: Callable[..., Any]) -> None:
    ch = make_channel(3)
    ch.send(1, 0)
    ch.send_exception(RuntimeError("in the middle"), timeout=0)
    ch.send(3, 0)
    assert ch.receive(0) == 1
    with pytest.raises(RuntimeError, match="in the middle"):
        ch.receive(0)
    assert ch.receive(0) == 3  # the channel goes on working


def test_iteration_raises_a_sent_exception(make_channel: Callable[..., Any]) -> None:
    ch = make_channel(3)
    ch.send("a", 0)
    ch.send_exception(ValueError("stop here"), timeout=0)
    values = iter(ch)
    assert next(values) == "a"
    with pytest.raises(ValueError, match="stop here"):
        next(values)


# -- iteration, threads and asyncio ------------------------------------------------------


def test_iteration_ends_when_closed_and_drained(make_channel: Callable[..., Any]) -> None:
    ch = make_channel(2)

    def produce() -> None:
        for i in range(10):
            ch.send(i, STEP)
        ch.close()

    producer = in_thread(produce)
    assert list(ch) == list(range(10))
    producer.result(STEP)


def test_async_iteration(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    producer = in_thread(lambda: ([ch.send(i, STEP) for i in range(10)], ch.close()))

    async def consume() -> list[int]:
        return [v async for v in ch]

    assert _run(consume()) == list(range(10))
    producer.result(STEP)


def test_threads_and_asyncio_meet_in_both_directions(make_channel: Callable[..., Any]) -> None:
    to_async, to_thread = make_channel(), make_channel()
    n = 50
    thread_sender = in_thread(lambda: [to_async.send(i, STEP) for i in range(n)])
    thread_receiver = in_thread(lambda: [to_thread.receive(STEP) for _ in range(n)])

    async def main() -> list[int]:
        async def send_all() -> None:
            for i in range(n):
                await to_thread.send.aio(i, STEP)

        async def receive_all() -> list[int]:
            return [await to_async.receive.aio(STEP) for _ in range(n)]

        _, got = await asyncio.gather(send_all(), receive_all())
        return got

    assert _run(main()) == list(range(n))
    assert thread_receiver.result(STEP) == list(range(n))
    thread_sender.result(STEP)


def test_async_waiters_from_two_loops_and_a_thread(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()

    def loop_receiver() -> Any:
        return _run(ch.receive.aio(STEP))

    receivers = [in_thread(loop_receiver) for _ in range(2)] + [in_thread(ch.receive, STEP)]
    wait_until(lambda: ch.balance == -3, what="three parked receivers")
    for v in ("a", "b", "c"):
        ch.send(v, STEP)
    assert sorted(r.result(STEP) for r in receivers) == ["a", "b", "c"]


def test_cancelled_async_receive_does_not_swallow_a_value(
        make_channel: Callable[..., Any]) -> None:
    ch = make_channel()

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ch.receive.aio(), SHORT)

    for i in range(5):
        _run(give_up())
        # Whatever the cancelled receive left behind, a value is delivered exactly
        # when its send succeeded.
        sent = outcome(lambda v=i: ch.send(v, SHORT))
        if sent is None:
            assert ch.receive(0) == i
        else:
            assert sent is ChannelTimeout
        assert outcome(lambda: ch.receive(0)) is ChannelTimeout
    assert ch.balance == 0


def test_channel_repr_names_it(make_channel: Callable[..., Any]) -> None:
    ch = make_channel()
    assert ch.name in repr(ch)


def test_local_channel_rejects_a_bad_buffer() -> None:
    for bad in (-1, 1.5, "2"):
        with pytest.raises(netlet.ConfigError):
            netlet.channel(bad)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_an_infinite_timeout_waits_and_a_nan_one_is_refused_parking_nothing() -> None:
    # As for calls (README): inf means no timeout (a thread's lock refused it with
    # OverflowError), NaN or a non-number is refused before anything waits.
    ch = netlet.channel()
    got = in_thread(ch.receive, timeout=float("inf"))
    wait_until(lambda: ch.balance == -1, what="the receiver to wait")
    ch.send("v")
    assert got.result(STEP) == "v"
    for bad in (float("nan"), "1"):
        with pytest.raises((ValueError, TypeError)):
            ch.receive(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)):
            ch.send("x", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)):
            asyncio.run(ch.receive.aio(timeout=bad))  # type: ignore[arg-type]
    assert ch.balance == 0  # nobody was left parked
    with pytest.raises(WouldBlock):
        ch.send.nowait("nobody takes it")
