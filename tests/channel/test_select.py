"""``select`` / ``select_aio``: exactly one case happens, or none (timeout, ``WouldBlock``).

Local only: select works on channels owned by this process (a select over
another node's channels is that node's job, see ``RemoteChannel.remote_select``
in ``test_remote.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlet
from netlet import ChannelClosed, ChannelTimeout, WouldBlock
from tests.channel.conftest import STEP, future_outcome, in_thread, outcome, wait_until

SHORT = 0.05

_SETTINGS = settings(max_examples=100, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(STEP):
            return await coro

    return asyncio.run(bounded())


def _contents(ch: netlet.Channel) -> list[Any]:
    """Everything a receive with timeout=0 can still take from ``ch``."""
    got = []
    while True:
        try:
            got.append(ch.receive(0))
        except (ChannelTimeout, ChannelClosed):
            return got


# -- the table, as a model: every mix of ready and not-ready cases -------------------------

channel_state = st.integers(0, 2).flatmap(lambda buffer: st.tuples(
    st.just(buffer),
    st.integers(0, buffer),
    st.sampled_from([None, "send", "receive"]),
)).filter(lambda s: (s[2] != "receive" or s[1] == 0) and (s[2] != "send" or s[1] == s[0]))
"""(buffer, values already buffered, parked peer): a receiver parks only on an empty
buffer, a sender only on a full one."""


@_SETTINGS
@given(
    states=st.lists(channel_state, min_size=1, max_size=3),
    raw_cases=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=4),
    use_async=st.booleans(),
)
def test_select_takes_exactly_one_ready_case_or_none(
        states: list[tuple[int, int, str | None]], raw_cases: list[tuple[int, bool]],
        use_async: bool) -> None:
    chans = [netlet.channel(buffer) for buffer, _, _ in states]
    buffers: list[list[Any]] = []
    peers: list[Any] = []
    for i, (ch, (_, filled, peer)) in enumerate(zip(chans, states, strict=True)):
        buffers.append([f"b{i}.{k}" for k in range(filled)])
        for v in buffers[-1]:
            ch.send.nowait(v)
        if peer == "send":
            peers.append(in_thread(ch.send, f"p{i}", STEP))
            wait_until(lambda ch=ch: ch.balance == 1)
        elif peer == "receive":
            peers.append(in_thread(ch.receive, STEP))
            wait_until(lambda ch=ch: ch.balance == -1)
        else:
            peers.append(None)
    cases = [(c % len(chans), send) for c, send in raw_cases]
    select_cases = [chans[c].sending(f"s{j}") if send else chans[c].receiving()
                    for j, (c, send) in enumerate(cases)]

    def ready(j: int) -> bool:
        c, send = cases[j]
        buffer, filled, peer = states[c]
        if send:
            return peer == "receive" or filled < buffer
        return filled > 0 or peer == "send"

    ready_cases = {j for j in range(len(cases)) if ready(j)}
    if use_async:
        result = outcome(lambda: _run(netlet.select_aio(*select_cases, timeout=0)))
    else:
        result = outcome(lambda: netlet.select(*select_cases, timeout=0))

    # The model: what each channel holds (buffer, then a parked sender's value) and
    # what each parked receiver gets.
    holds = [list(b) + ([f"p{i}"] if states[i][2] == "send" else [])
             for i, b in enumerate(buffers)]
    receiver_gets: dict[int, Any] = {}
    if not ready_cases:
        assert result is WouldBlock
    else:
        index, value = result
        assert index in ready_cases
        c, send = cases[index]
        if send:
            if states[c][2] == "receive":
                receiver_gets[c] = f"s{index}"
            else:
                holds[c].insert(len(buffers[c]), f"s{index}")
            assert value is None
        else:
            assert value == holds[c].pop(0)
    for i, ch in enumerate(chans):
        assert _contents(ch) == holds[i], f"channel {i}"
        ch.close()
    for i, peer in enumerate(peers):
        if peer is None:
            continue
        got = future_outcome(peer)
        if states[i][2] == "send":
            assert got is None  # its value was taken, by the select or by the check
        else:
            assert got == receiver_gets.get(i, ChannelClosed)


# -- racing ----------------------------------------------------------------------------------


@_SETTINGS
@given(
    buffers=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    senders=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    selectors=st.integers(1, 3),
)
def test_racing_senders_each_value_taken_by_exactly_one_select(
        buffers: list[int], senders: list[int], selectors: int) -> None:
    chans = [netlet.channel(b) for b in buffers]
    plan = [(c, f"v{c}.{k}") for c in range(len(chans)) for k in range(senders[c])]
    if not plan:
        plan = [(0, "v0.0")]
    start = threading.Barrier(len(plan) + selectors)

    def send(c: int, v: str) -> None:
        start.wait(STEP)
        chans[c].send(v, STEP)

    def select_n(n: int) -> list[Any]:
        start.wait(STEP)
        cases = [ch.receiving() for ch in chans]
        got = []
        for _ in range(n):
            index, value = netlet.select(*cases, timeout=STEP)
            assert value.startswith(f"v{index}.")  # the value came through that case
            got.append(value)
        return got

    shares = [len(plan) // selectors + (k < len(plan) % selectors) for k in range(selectors)]
    sending = [in_thread(send, c, v) for c, v in plan]
    selecting = [in_thread(select_n, n) for n in shares]
    received = [v for f in selecting for v in f.result(STEP)]
    assert all(f.result(STEP) is None for f in sending)
    assert Counter(received) == Counter(v for _, v in plan)
    assert [ch.balance for ch in chans] == [0] * len(chans)
    assert all(_contents(ch) == [] for ch in chans)


def test_racing_receivers_take_exactly_one_send_case_per_select() -> None:
    chans = [netlet.channel() for _ in range(3)]
    rounds = 60

    def receive_all(ch: netlet.Channel) -> list[Any]:
        return list(ch)

    receivers = [in_thread(receive_all, ch) for ch in chans for _ in range(2)]
    taken = []
    for r in range(rounds):
        index, value = netlet.select(*(ch.sending((r, i)) for i, ch in enumerate(chans)),
                                     timeout=STEP)
        assert value is None
        taken.append((r, index))
    for ch in chans:
        ch.close()
    received = sorted(v for f in receivers for v in f.result(STEP))
    assert received == sorted(taken)  # one value per select, through the case it reported


def test_two_selects_meet_on_exactly_one_channel() -> None:
    for _ in range(100):
        a, b = netlet.channel(), netlet.channel()
        sender = in_thread(netlet.select, a.sending("A"), b.sending("B"), timeout=STEP)
        index, value = netlet.select(a.receiving(), b.receiving(), timeout=STEP)
        assert sender.result(STEP) == (index, None)
        assert value == "AB"[index]
        assert a.balance == b.balance == 0
        assert outcome(a.receive.nowait) is WouldBlock
        assert outcome(b.receive.nowait) is WouldBlock


# -- timeouts and closed channels ------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["select", "select_aio"])
def test_select_timeout_moves_nothing(use_async: bool) -> None:
    a, b = netlet.channel(), netlet.channel()
    cases = (a.receiving(), b.sending("never"))
    began = time.monotonic()
    if use_async:
        result = outcome(lambda: _run(netlet.select_aio(*cases, timeout=SHORT)))
    else:
        result = outcome(lambda: netlet.select(*cases, timeout=SHORT))
    assert result is ChannelTimeout
    assert time.monotonic() - began >= SHORT * 0.9
    assert a.balance == b.balance == 0
    assert outcome(lambda: a.send.nowait("x")) is WouldBlock  # no receiver left behind
    assert outcome(b.receive.nowait) is WouldBlock  # no sender left behind


@pytest.mark.parametrize("use_async", [False, True], ids=["select", "select_aio"])
def test_select_timeout_zero_would_block_or_takes_a_ready_case(use_async: bool) -> None:
    a, b = netlet.channel(), netlet.channel(1)

    def sel(*cases: netlet.Case) -> Any:
        if use_async:
            return outcome(lambda: _run(netlet.select_aio(*cases, timeout=0)))
        return outcome(lambda: netlet.select(*cases, timeout=0))

    assert sel(a.receiving(), b.receiving()) is WouldBlock
    assert sel(a.sending(1)) is WouldBlock
    assert sel(a.receiving(), b.sending("room")) == (1, None)
    assert sel(a.receiving(), b.receiving()) == (1, "room")
    assert a.balance == b.balance == 0


def test_select_waits_until_a_case_happens() -> None:
    a, b = netlet.channel(), netlet.channel()
    selecting = in_thread(netlet.select, a.receiving(), b.receiving(), timeout=STEP)
    wait_until(lambda: a.balance == -1 and b.balance == -1, what="the select to park")
    b.send("late", STEP)
    assert selecting.result(STEP) == (1, "late")
    assert a.balance == 0  # its offer on the other channel was withdrawn


def test_select_on_a_closed_channel_raises_channel_closed() -> None:
    a, b = netlet.channel(), netlet.channel()
    a.close()
    with pytest.raises(ChannelClosed):
        netlet.select(a.receiving(), b.receiving(), timeout=SHORT)
    with pytest.raises(ChannelClosed):
        netlet.select(a.sending(1), timeout=SHORT)


def test_closing_a_channel_wakes_a_parked_select() -> None:
    a, b = netlet.channel(), netlet.channel()
    selecting = in_thread(netlet.select, a.receiving(), b.sending("x"), timeout=STEP)
    wait_until(lambda: a.balance == -1 and b.balance == 1, what="the select to park")
    a.close()
    assert future_outcome(selecting) is ChannelClosed
    assert b.balance == 0
    assert outcome(b.receive.nowait) is WouldBlock


def test_select_drains_a_closed_buffered_channel_first() -> None:
    a = netlet.channel(1)
    a.send.nowait("last")
    a.close()
    assert netlet.select(a.receiving(), timeout=0) == (0, "last")
    with pytest.raises(ChannelClosed):
        netlet.select(a.receiving(), timeout=0)


def test_select_raises_a_sent_exception() -> None:
    a = netlet.channel(1)
    a.send_exception(ValueError("via select"), timeout=0)
    with pytest.raises(ValueError, match="via select"):
        netlet.select(a.receiving(), timeout=0)


# -- async -----------------------------------------------------------------------------------


def test_aselect_meets_a_thread() -> None:
    a, b = netlet.channel(), netlet.channel()
    sender = in_thread(lambda: (wait_until(lambda: b.balance == -1), b.send("t", STEP)))
    assert _run(netlet.select_aio(a.receiving(), b.receiving(), timeout=STEP)) == (1, "t")
    sender.result(STEP)
    assert a.balance == 0


def test_cancelled_aselect_does_not_swallow_a_value() -> None:
    a, b = netlet.channel(), netlet.channel()

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(netlet.select_aio(a.receiving(), b.receiving()), SHORT)

    for i in range(5):
        _run(give_up())
        sent = outcome(lambda v=i: a.send(v, SHORT))
        if sent is None:  # a send that went through is received exactly once
            assert a.receive(0) == i
        else:
            assert sent is ChannelTimeout
        assert outcome(a.receive.nowait) is WouldBlock
    assert a.balance == b.balance == 0


# -- what select accepts ---------------------------------------------------------------------


def test_case_helpers_agree() -> None:
    ch = netlet.channel()
    assert netlet.sending(ch, 1) == ch.sending(1)
    assert netlet.receiving(ch) == ch.receiving()


def test_select_refuses_bad_cases(owner: Any, client: netlet.Node) -> None:
    with pytest.raises(netlet.ConfigError):
        netlet.select()
    with pytest.raises(netlet.ConfigError):
        netlet.select(netlet.channel())  # type: ignore[arg-type]
    name = owner.control(client).new_channel(0)
    remote = netlet.connect_channel(owner.address, name, node=client)
    with pytest.raises(netlet.ConfigError, match="owned by this process"):
        netlet.select(netlet.channel().receiving(), remote.receiving(), timeout=0)
