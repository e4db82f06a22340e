"""``select``: wait on several channel operations at once and take exactly one.

All the channels involved are locked together (in a fixed order, so two
selects cannot deadlock); if no case is ready, one waiter is parked on every
channel, and whichever channel claims it first is the case taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from netlet.channel._channel import Case, Channel
from netlet.channel._core import ChannelCore, current_waiter_hook, unwrap
from netlet.clock import Waiter
from netlet.errors import ChannelTimeout, ConfigError, WouldBlock

__all__ = ["Case", "receiving", "select", "select_aio", "sending"]


def sending(ch: Any, value: Any) -> Case:
    return Case(ch, True, value)


def receiving(ch: Any) -> Case:
    return Case(ch, False)


def _cores(cases: Sequence[Case]) -> list[ChannelCore]:
    """The cases' channels' cores, each once, in the one order every select locks them."""
    return sorted({id(c.channel): c.channel.core for c in cases}.values(), key=id)


def _start(cases: Sequence[Case], waiter: Waiter) -> bool:
    """Take a ready case now (True), or park ``waiter`` on every channel (False)."""
    cores = _cores(cases)
    for core in cores:
        core.lock.acquire()
    try:
        for i, case in enumerate(cases):
            if case.send:
                if case.channel.core.try_send(waiter, i, case.value):
                    return True
            elif case.channel.core.try_receive(waiter, i)[0]:
                return True
        for i, case in enumerate(cases):
            if case.send:
                case.channel.core.park_sender(waiter, i, case.value)
            else:
                case.channel.core.park_receiver(waiter, i)
        return False
    finally:
        for core in reversed(cores):
            core.lock.release()


def _check(cases: Sequence[Case]) -> None:
    if not cases:
        raise ConfigError("select needs at least one case")
    for c in cases:
        if not isinstance(c, Case):
            raise ConfigError("select takes cases made by ch.sending(v) / ch.receiving()")
        if not isinstance(c.channel, Channel):
            raise ConfigError(
                f"select works on channels owned by this process, and {c.channel!r} is "
                "another node's: to select on that node's channels, serve a method there "
                "that selects (its channels are local there)")


def _result(cases: Sequence[Case], waiter: Waiter, done: bool,
            timeout: float | None) -> tuple[int, Any]:
    """After the wait (blocking or async): withdrawn on timeout, or the case taken."""
    if not done:
        if timeout == 0:
            raise WouldBlock("no case of the select is ready")
        raise ChannelTimeout(f"select timed out after {timeout} s")
    if waiter.error is not None:
        raise waiter.error
    i = waiter.index
    return i, None if cases[i].send else unwrap(waiter.value)


def select(*cases: Case, timeout: float | None = None) -> tuple[int, Any]:
    """Block until one case happens; returns (its index, the value received or None).

    ``timeout=0`` takes a ready case or raises ``WouldBlock``; a timeout that
    passes raises ``ChannelTimeout`` and no case happens.
    """
    _check(cases)
    waiter = Waiter()
    if _start(cases, waiter):
        return _result(cases, waiter, True, timeout)
    hook = current_waiter_hook.on_block if timeout != 0 else None
    if hook is not None:
        hook(waiter)
    try:
        done = waiter.wait_or_withdraw(timeout)
    finally:
        if hook is not None:
            hook(None)
    return _result(cases, waiter, done, timeout)


async def select_aio(*cases: Case, timeout: float | None = None) -> tuple[int, Any]:
    """``select`` for async code."""
    _check(cases)
    waiter = Waiter(asyncio.get_running_loop())
    if _start(cases, waiter):
        return _result(cases, waiter, True, timeout)
    try:
        done = await waiter.wait_or_withdraw_aio(timeout)
    except asyncio.CancelledError:
        cores = _cores(cases)
        for core in cores:
            core.lock.acquire()
        try:
            withdrawn = waiter.claim()
        finally:
            for core in reversed(cores):
                core.lock.release()
        if not withdrawn and waiter.error is None and not cases[waiter.index].send:
            cases[waiter.index].channel.core.requeue_front(waiter.value)
        raise
    return _result(cases, waiter, done, timeout)
