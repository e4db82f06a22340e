"""How a served object runs its calls: one at a time in order, or concurrently.

A plain (non-async) method never runs on the event loop: a serial actor has a
thread of its own, a concurrent one borrows the node's pool. ``async def``
methods run on the loop. Replies are sent by whoever ran the call, straight to
the connection, so a reply costs no extra hop back through the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from netlet.errors import BadArguments
from netlet.node._expose import MethodInfo, exposed_methods, is_concurrent

__all__ = ["Actor", "Reply", "run_method"]

log = logging.getLogger("netlet.node")

Reply = Callable[[bool, Any], None]
"""Send the outcome of one call: (True, value) or (False, exception)."""

_IDLE_EXIT = 30.0


def _bad_arguments(e: TypeError, method: str) -> BaseException:
    # A TypeError raised by the call itself (no deeper frame) is a signature mismatch.
    tb = e.__traceback__
    if tb is not None and tb.tb_next is None:
        return BadArguments(f"{method}(): {e}")
    return e


def run_method(func: Callable[..., Any], name: str, args: list[Any],
               kwargs: dict[str, Any] | None, reply: Reply) -> None:
    try:
        result = func(*args, **kwargs) if kwargs else func(*args)
    except TypeError as e:
        reply(False, _bad_arguments(e, name))
    except BaseException as e:  # the caller gets every failure; nothing is lost
        reply(False, e)
    else:
        reply(True, result)


def _canceller(job: asyncio.Task[None] | Future[None]) -> Callable[[], None]:
    def cancel() -> None:
        job.cancel()
    return cancel


class _Call:
    __slots__ = ("args", "cancelled", "info", "kwargs", "reply")

    def __init__(self, info: MethodInfo, args: list[Any], kwargs: dict[str, Any] | None,
                 reply: Reply) -> None:
        self.info, self.args, self.kwargs, self.reply = info, args, kwargs, reply
        self.cancelled = False


class Actor:
    """A served object and the machinery that runs calls on it."""

    def __init__(self, obj: object, name: str, loop: Callable[[], asyncio.AbstractEventLoop],
                 pool: Callable[[], ThreadPoolExecutor]) -> None:
        self.obj = obj
        self.name = name
        self.methods = exposed_methods(type(obj))
        self.concurrent = is_concurrent(type(obj))
        self._loop = loop
        self._pool = pool
        self._mailbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self._all_async = bool(self.methods) and all(m.is_async for m in self.methods.values())
        self._closed = False
        self.lock = threading.Lock()
        """Held while a plain method of a serial actor runs, whichever thread runs it."""

    def run_inline(self, info: MethodInfo, args: list[Any],
                   kwargs: dict[str, Any] | None, reply: Reply) -> None:
        """Run one call on the calling thread (a direct-connection thread), same rules."""
        if info.is_async:
            if self.concurrent or self._all_async:
                fut = asyncio.run_coroutine_threadsafe(
                    self._run_async(info, args, kwargs, reply), self._loop())
                fut.result()
                return
            with self.lock:
                self._run_async_from_thread(info, args, kwargs, reply)
            return
        func = getattr(self.obj, info.name)
        if self.concurrent:
            run_method(func, info.name, args, kwargs, reply)
            return
        with self.lock:
            run_method(func, info.name, args, kwargs, reply)

    def _run_async_from_thread(self, info: MethodInfo, args: list[Any],
                               kwargs: dict[str, Any] | None, reply: Reply) -> None:
        func = getattr(self.obj, info.name)
        try:
            coro = func(*args, **kwargs or {})
            result = asyncio.run_coroutine_threadsafe(coro, self._loop()).result()
        except TypeError as e:
            reply(False, _bad_arguments(e, info.name))
        except BaseException as e:
            reply(False, e)
        else:
            reply(True, result)

    def submit(self, info: MethodInfo, args: list[Any], kwargs: dict[str, Any] | None,
               reply: Reply) -> Callable[[], None]:
        """Start or queue one call (loop thread); returns a function that cancels it."""
        if info.is_async and (self.concurrent or self._all_async):
            task = self._loop().create_task(self._run_async(info, args, kwargs, reply))
            return _canceller(task)
        if self.concurrent:
            func = getattr(self.obj, info.name)
            fut = self._pool().submit(run_method, func, info.name, args, kwargs, reply)
            return _canceller(fut)
        call = _Call(info, args, kwargs, reply)
        self._mailbox.put(call)
        self._ensure_thread()
        return lambda: setattr(call, "cancelled", True)

    async def _run_async(self, info: MethodInfo, args: list[Any],
                         kwargs: dict[str, Any] | None, reply: Reply) -> None:
        func = getattr(self.obj, info.name)
        try:
            if self.concurrent:
                result = await (func(*args, **kwargs or {}))
            else:
                if self._async_lock is None:
                    self._async_lock = asyncio.Lock()
                async with self._async_lock:
                    result = await (func(*args, **kwargs or {}))
        except asyncio.CancelledError:
            return  # cancelled on the caller's request: it is no longer listening
        except TypeError as e:
            reply(False, _bad_arguments(e, info.name))
        except BaseException as e:
            reply(False, e)
        else:
            reply(True, result)

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
            with self.lock:
                if call.info.is_async:  # an async method on a mixed actor: still one at a time
                    self._run_async_from_thread(call.info, call.args, call.kwargs, call.reply)
                else:
                    run_method(getattr(self.obj, call.info.name), call.info.name,
                               call.args, call.kwargs, call.reply)

    def close(self) -> None:
        with self._thread_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._mailbox.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
