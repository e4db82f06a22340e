"""Tasklets: functions running concurrently, with handles to join, cancel and inspect.

A coroutine function becomes an asyncio task on the running loop (or the
default node's loop); a plain function gets a thread. Cancelling wakes a
tasklet blocked on a channel with ``TaskletExit``; an async tasklet is
cancelled the asyncio way. An exception nobody collected is logged when the
handle is dropped, never silently lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from netlet.channel._channel import current_waiter_hook
from netlet.clock import Waiter
from netlet.errors import ConfigError, TaskletExit
from netlet.node import default_node

__all__ = ["Tasklet", "spawn", "tasklet"]

log = logging.getLogger("netlet.channel")
_ids = itertools.count(1)


class Tasklet:
    """A handle on one concurrently running function."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self._observed = True  # until set up, there is nothing to report from __del__
        if not callable(fn):
            raise ConfigError("a tasklet runs a callable")
        self.fn = fn
        self.name = name or f"tasklet-{next(_ids)}-{getattr(fn, '__name__', 'fn')}"
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._task: asyncio.Task[Any] | None = None
        self._thread: threading.Thread | None = None
        self._blocked_on: Waiter | None = None
        self._cancel_requested = False
        self._observed = False
        self._started = False

    def __call__(self, *args: Any, **kwargs: Any) -> Tasklet:
        """Start the tasklet with these arguments (Stackless: ``tasklet(fn)(*args)``)."""
        if self._started:
            raise ConfigError(f"{self.name} was already started")
        self._started = True
        if inspect.iscoroutinefunction(self.fn):
            self._start_task(args, kwargs)
        else:
            self._thread = threading.Thread(target=self._run_thread, args=(args, kwargs),
                                            name=self.name, daemon=True)
            self._thread.start()
        return self

    def _start_task(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            node = default_node()
            assert node.loop is not None
            fut = asyncio.run_coroutine_threadsafe(self._run_task(args, kwargs), node.loop)
            fut.add_done_callback(self._copy_outcome)
            return
        self._task = loop.create_task(self._run_task(args, kwargs))
        self._task.add_done_callback(self._copy_outcome)

    async def _run_task(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._task = asyncio.current_task()
        if self._cancel_requested:
            raise asyncio.CancelledError
        return await self.fn(*args, **kwargs)

    def _copy_outcome(self, fut: Any) -> None:
        if self._future.done():
            return
        if fut.cancelled():
            self._future.set_exception(TaskletExit(f"{self.name} was cancelled"))
        elif fut.exception() is not None:
            self._future.set_exception(fut.exception())
        else:
            self._future.set_result(fut.result())

    def _run_thread(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        current_waiter_hook.on_block = self._on_block
        try:
            if self._cancel_requested:
                raise TaskletExit(f"{self.name} was cancelled before it started")
            result = self.fn(*args, **kwargs)
        except BaseException as e:
            self._future.set_exception(e)
        else:
            self._future.set_result(result)
        finally:
            current_waiter_hook.on_block = None

    def _on_block(self, waiter: Waiter | None) -> None:
        self._blocked_on = waiter
        if waiter is not None and self._cancel_requested and waiter.claim():
            waiter.complete(-1, error=TaskletExit(f"{self.name} was cancelled"))

    # -- the handle ------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the tasklet to stop; True if it had not finished yet."""
        if self._future.done():
            return False
        self._cancel_requested = True
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
        waiter = self._blocked_on
        if waiter is not None and waiter.claim():
            waiter.complete(-1, error=TaskletExit(f"{self.name} was cancelled"))
        return True

    def join(self, timeout: float | None = None) -> Any:
        """Wait for the result; re-raises the tasklet's exception."""
        self._observed = True
        return self._future.result(timeout)

    async def join_aio(self) -> Any:
        """``join`` from async code."""
        self._observed = True
        return await asyncio.wrap_future(self._future)

    @property
    def alive(self) -> bool:
        return self._started and not self._future.done()

    @property
    def done(self) -> bool:
        return self._future.done()

    def exception(self) -> BaseException | None:
        self._observed = True
        return self._future.exception() if self._future.done() else None

    def __repr__(self) -> str:
        state = "running" if self.alive else ("done" if self.done else "new")
        return f"<netlet.Tasklet {self.name} {state}>"

    def __del__(self) -> None:
        fut = getattr(self, "_future", None)
        if fut is None:
            return
        if fut.done() and not self._observed and not fut.cancelled():
            exc = fut.exception()
            if exc is not None and not isinstance(exc, TaskletExit):
                log.error("tasklet %s failed and nobody joined it", self.name, exc_info=exc)


def tasklet(fn: Callable[..., Any], *, name: str | None = None) -> Tasklet:
    """Stackless style: ``netlet.tasklet(fn)(*args)`` starts ``fn`` concurrently."""
    return Tasklet(fn, name)


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Tasklet:
    """Start ``fn(*args, **kwargs)`` concurrently and return its handle."""
    return Tasklet(fn)(*args, **kwargs)
