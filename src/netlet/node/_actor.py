"""How a served object runs its calls: one at a time in order, or concurrently.

A plain (non-async) method never runs on the event loop: a serial actor has a
thread of its own, a concurrent one borrows the node's pool. ``async def``
methods run on the loop. Replies are sent by whoever ran the call, straight to
the connection, so a reply costs no extra hop back through the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from netlet.clock import Waiter
from netlet.errors import BadArguments
from netlet.node._expose import MethodInfo, exposed_methods, is_concurrent
from netlet.transport import more_follows

__all__ = ["Actor", "Held", "Reply", "current_peer", "run_method"]

log = logging.getLogger("netlet.node")

Reply = Callable[[bool, Any], None]
"""Send the outcome of one call: (True, value) or (False, exception)."""

_IDLE_EXIT = 30.0

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("netlet_caller",
                                                                    default=None)


def current_peer() -> str | None:
    """Which node made the call now running, as its connection proved it.

    None outside a call from the network. The node id when the call came over
    the connection that owns that id (or a direct connection bound to it); ""
    when it came over a connection that merely claims an id another one owns:
    such a caller may act only for itself, and has no id to act for. Set for
    every kind of exposed method (async ones, pool and actor threads alike).
    """
    return CALLER.get()


def _bad_arguments(e: TypeError, method: str) -> BaseException:
    # A TypeError raised by the call itself (no deeper frame) is a signature mismatch.
    tb = e.__traceback__
    if tb is not None and tb.tb_next is None:
        return BadArguments(f"{method}(): {e}")
    return e


class Held:
    """A call's arguments, taken by whoever runs the call, so that they die before its
    reply goes out: a large argument's receive buffer is then free for the next call's
    value (no fresh memory, no page faults), not a moment after the reply."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        self.args: list[Any] | None = args
        self.kwargs = kwargs

    def take(self) -> tuple[list[Any], dict[str, Any] | None]:
        args, kwargs = self.args, self.kwargs
        self.args = self.kwargs = None
        return args if args is not None else [], kwargs


_LOOK_GONE = 0.25
"""Seconds between looks at a direct caller's socket while its call runs on the loop."""


def run_method(func: Callable[..., Any], name: str, held: Held, reply: Reply) -> None:
    args, kwargs = held.args or [], held.kwargs  # taken: inline, as this runs per call
    held.args = held.kwargs = None
    ok = False
    try:
        value = func(*args, **kwargs) if kwargs else func(*args)
        ok = True
    except TypeError as e:
        value = _bad_arguments(e, name)
    except BaseException as e:  # the caller gets every failure; nothing is lost
        value = e
    del args, kwargs  # before the reply: see Held
    reply(ok, value)


def _canceller(job: asyncio.Task[None] | Future[None]) -> Callable[[], None]:
    def cancel() -> None:
        job.cancel()
    return cancel


class _Call(Held):
    """A queued call: its arguments (``Held``, taken by whoever runs it) and the rest."""

    __slots__ = ("cancelled", "ctx", "info", "reply")

    def __init__(self, info: MethodInfo, args: list[Any], kwargs: dict[str, Any] | None,
                 reply: Reply) -> None:
        self.args, self.kwargs = args, kwargs
        self.info, self.reply = info, reply
        self.cancelled = False
        self.ctx = contextvars.copy_context()  # who called (current_peer) travels along


class Actor:
    """A served object and the machinery that runs calls on it.

    Three ways to run, fixed by the class:

    - concurrent (``@expose(concurrent=True)``): every call at once; async ones as
      tasks, plain ones on the node's thread pool.
    - serial, plain methods only: a thread of its own drains a mailbox; direct
      connections run calls inline under ``lock``.
    - serial with ``async def`` methods: one worker task on the loop drains a
      queue, so async methods pay no thread hop; plain methods of such a class go
      to the pool and are awaited, keeping one call at a time across both kinds.
    """

    def __init__(self, obj: object, name: str, loop: Callable[[], asyncio.AbstractEventLoop],
                 pool: Callable[[], ThreadPoolExecutor]) -> None:
        self.obj = obj
        self.name = name
        self.methods = exposed_methods(type(obj))
        self.concurrent = is_concurrent(type(obj))
        self.on_loop = not self.concurrent and any(m.is_async for m in self.methods.values())
        self._loop = loop
        self._pool = pool
        self._mailbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._queue: deque[_Call] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._current: asyncio.Future[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.lock = threading.Lock()
        """Held while a plain method of a serial thread-mode actor runs, on any thread."""

    # -- entry points -----------------------------------------------------------

    def submit(self, info: MethodInfo, args: list[Any], kwargs: dict[str, Any] | None,
               reply: Reply) -> Callable[[], None]:
        """Start or queue one call (loop thread); returns a function that cancels it."""
        if self.concurrent:
            if info.is_async:
                task = self._loop().create_task(self._run_coro(info, args, kwargs, reply))
                self._tasks.add(task)  # a oneway call's task has no other owner
                task.add_done_callback(self._tasks.discard)
                return _canceller(task)
            func = info.bind(self.obj)
            fut = self._pool().submit(contextvars.copy_context().run, run_method, func,
                                      info.name, Held(args, kwargs), reply)
            return _canceller(fut)
        call = _Call(info, args, kwargs, reply)
        if self.on_loop:
            self._queue.append(call)
            if self._worker is None:
                self._worker = self._loop().create_task(self._drain())
            return lambda: self._cancel_queued(call)
        self._mailbox.put(call)
        self._ensure_thread()
        return lambda: setattr(call, "cancelled", True)

    def run_inline(self, info: MethodInfo, args: list[Any],
                   kwargs: dict[str, Any] | None, reply: Reply,
                   gone: Callable[[], bool] | None = None) -> None:
        """Run one call from a direct-connection thread, with the same rules.

        A call run on the loop is cancelled, as over a link, once ``gone()`` says
        the caller went away (asked every ``_LOOK_GONE`` s while it runs).
        """
        if self.concurrent and not info.is_async:
            run_method(info.bind(self.obj), info.name, Held(args, kwargs), reply)
            return
        if self.concurrent or self.on_loop:
            done = Waiter()
            cancel: list[Callable[[], None]] = []

            def settle(ok: bool, value: Any) -> None:
                reply(ok, value)
                done(True, None)

            def start() -> None:
                cancel.append(self.submit(info, args, kwargs, settle))

            loop = self._loop()
            loop.call_soon_threadsafe(start)
            while not done.wait(None if gone is None else _LOOK_GONE):
                if gone is not None and gone():
                    # Cancelled, it sends no reply: nobody is left to read one.
                    loop.call_soon_threadsafe(lambda: cancel and cancel[0]())
                    return
            return
        with self.lock:
            run_method(info.bind(self.obj), info.name, Held(args, kwargs), reply)

    # -- serial on the loop -----------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                call = self._queue.popleft()
                if call.cancelled:
                    continue
                if call.info.is_async:
                    self._current = loop.create_task(
                        self._run_coro(call.info, *call.take(), call.reply),
                        context=call.ctx)
                else:
                    func = call.info.bind(self.obj)
                    self._current = loop.run_in_executor(
                        self._pool(), call.ctx.run, run_method, func, call.info.name,
                        call, call.reply)
                try:
                    await self._current
                except asyncio.CancelledError:
                    if self._closed:
                        raise
                finally:
                    self._current = None
        finally:
            self._worker = None

    def _cancel_queued(self, call: _Call) -> None:
        call.cancelled = True
        current = self._current
        if current is not None and call not in self._queue:
            current.cancel()  # it is the one running

    async def _run_coro(self, info: MethodInfo, args: list[Any],
                        kwargs: dict[str, Any] | None, reply: Reply) -> None:
        func = info.bind(self.obj)
        ok = False
        try:
            value = await (func(*args, **kwargs) if kwargs else func(*args))
            ok = True
        except asyncio.CancelledError:
            return  # cancelled on the caller's request: it is no longer listening
        except TypeError as e:
            value = _bad_arguments(e, info.name)
        except BaseException as e:
            value = e
        del args, kwargs  # before the reply: see Held
        reply(ok, value)

    # -- serial on a thread -----------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._thread_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._serve, name=f"netlet-actor-{self.name}", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        """The actor's own thread: one call at a time, in arrival order."""
        mailbox = self._mailbox
        while True:
            try:
                call = mailbox.get(timeout=_IDLE_EXIT)
            except queue.Empty:
                with self._thread_lock:
                    if mailbox.empty():
                        self._thread = None
                        return
                continue
            if call is None:
                return
            if call.cancelled:
                continue
            # More calls waiting: their replies can share the loop's next write.
            more_follows(not mailbox.empty())
            with self.lock:
                call.ctx.run(run_method, call.info.bind(self.obj), call.info.name,
                             call, call.reply)
            call = None  # not kept while waiting: its arguments die with the call

    def close(self) -> None:
        with self._thread_lock:
            self._closed = True
            thread = self._thread
        if self._worker is not None:
            self._worker.get_loop().call_soon_threadsafe(self._worker.cancel)
        if thread is not None:
            self._mailbox.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
