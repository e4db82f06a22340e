"""Bytes a node holds on behalf of its peers: counted per connection and in total.

Every byte a peer can make us hold is charged to its connection's ``Account``
(frame buffers as they fill, calls it made until they reply, replies it has not
read yet) and through it to the node's ``Budget``. The owner of a connection
checks ``over()`` at message boundaries and stops reading while it is true;
``when_under`` tells it when to read again.

Replies wait in ``queued`` (bytes the kernel has not taken yet; over TLS, only
those still on their way to the loop), which reading less would not shrink:
only the peer can, by reading. So the owner of a link stops *running* the
peer's new calls while ``queued`` passes the connection's limit
(``backlogged``), and ``when_drained`` tells it when to run them again; a reply
that would take what waits for the peer past twice the limit is not queued at
all (the peer is dropped). A reply is charged from the moment it is sent: what
calls already running can still make is bounded by the threads making it (one
per serial object, ``max_threads`` for the pool), not by this budget.

A large frame is admitted before its body is read: ``admit`` sets its announced
size aside, and a frame that does not fit in what is left waits, its
connection unread, until memory comes back (first come, first served; a frame
alone in an empty budget always fits). Frames already admitted never wait, so
they cannot block each other, and the total stays within ``total`` bytes plus
the ring buffers. The memory itself still follows the bytes that arrived:
``GrowingBuffer`` reserves only address space, and fills pages as data comes.

Large buffers of frames already delivered may be kept for the next frames
(``BufferCache``, see ``_pool``): what it keeps counts in the total too
(``cached``), and is dropped before any frame would have to wait for it.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Any

from netlet.transport._pool import BufferCache

__all__ = ["Account", "Budget", "GrowingBuffer"]

_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels fault pages one by one
_FIRST = 1 << 20
"""A large frame's first step: pre-faulted; later steps double as bytes arrive."""

Callback = Callable[[], None]


class Budget:
    """The node's total: ``total`` bytes across all its connections.

    It owns the lock that guards its counts and its accounts' (an account's
    methods come here), and the callbacks waiting for memory to come back.
    """

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.used = 0
        """Bytes charged (held now)."""
        self.set_aside = 0
        """Bytes admitted large frames announced but have not brought yet."""
        self._lock = threading.Lock()
        self._under: dict[Account, Callback] = {}  # accounts waiting for ``under_low_water``
        self._drained: dict[Account, Callback] = {}  # accounts waiting for their queue to drain
        self._admissions: list[tuple[int, Callback]] = []
        self.cache = BufferCache(total // 2)
        """Large receive buffers kept for reuse (counted: ``cache.size``)."""
        self._dropped: list[Any] = []

    @property
    def cached(self) -> int:
        return self.cache.size

    def take(self, kind: type, n: int, account: Account) -> Any:
        """A kept buffer for ``n`` bytes (see ``BufferCache.take``), charged to
        ``account``; or None. Needs no admission: the memory is counted already."""
        with self._lock:
            obj = self.cache.take(kind, n)
            if obj is not None:
                size = len(obj)
                account.used += size
                self.used += size
        return obj

    def keep(self, obj: Any, size: int, account: Account) -> None:
        """The frame ``obj`` (``size`` bytes charged to ``account``) was received into
        was delivered: keep it for reuse instead of giving it back."""
        with self._lock:
            size = min(size, account.used - account.queued)
            account.used -= size
            self.used -= size
            dropped = self.cache.put(obj, size)
            ready = self._ready() if self._under or self._admissions else []
        del obj, dropped  # unmapped here, outside the lock
        _run(ready)

    def drop_cache(self) -> None:
        """Forget every kept buffer (the node is closing)."""
        with self._lock:
            dropped = self.cache.shrink(0)
            ready = self._ready()
        del dropped
        _run(ready)

    def account(self) -> Account:
        return Account(self)

    def over(self) -> bool:
        return self.used > self.total

    def admit(self, n: int, when_admitted: Callback | None = None) -> bool:
        """Set ``n`` bytes aside for a large frame: True if done now. Otherwise
        ``when_admitted`` (if given) runs, from any thread, once they are set aside."""
        with self._lock:
            fits = not self._admissions and self._fits(n)
            if fits:
                self.set_aside += n
            elif when_admitted is not None:
                self._admissions.append((n, when_admitted))
            dropped, self._dropped = self._dropped, []
        del dropped  # buffers the cache gave up for this frame: unmapped outside the lock
        return fits

    def cancel(self, when_admitted: Callback) -> bool:
        """Stop waiting for an admission; True if it was still waiting (nothing set aside)."""
        with self._lock:
            for i, (_, cb) in enumerate(self._admissions):
                if cb == when_admitted:  # a bound method is a new object each time
                    del self._admissions[i]
                    ready = self._ready()
                    break
            else:
                return False
        _run(ready)
        return True

    def withdraw(self, n: int) -> None:
        """``n`` bytes set aside are no longer needed (they arrived and were charged,
        or the frame was dropped)."""
        if n:
            with self._lock:
                self.set_aside -= n
                ready = self._ready()
            _run(ready)

    def _fits(self, n: int) -> bool:
        """Lock held: ``n`` more bytes fit, once kept buffers made room if they must."""
        held = self.used + self.set_aside
        if self.cache.size and held + self.cache.size + n > self.total:
            self._dropped.extend(self.cache.shrink(max(0, self.total - held - n)))
        return held == 0 or held + self.cache.size + n <= self.total

    # -- an account's counts (``Account`` calls these) ------------------------------

    def charge(self, acct: Account, n: int) -> None:
        """``acct`` holds ``n`` more bytes."""
        with self._lock:
            acct.used += n
            self.used += n
            dropped = self._room_for_used() if self.cache.size else None
        del dropped

    def release(self, acct: Account, n: int) -> None:
        """``acct`` gave ``n`` bytes back (never more than it holds unqueued)."""
        with self._lock:
            n = min(n, acct.used - acct.queued)
            acct.used -= n
            self.used -= n
            ready = self._ready() if self._under or self._admissions else []
        _run(ready)

    def queue(self, acct: Account, n: int) -> None:
        """``n`` bytes wait to be sent to ``acct``'s peer."""
        with self._lock:
            acct.used += n
            acct.queued += n
            self.used += n
            dropped = self._room_for_used() if self.cache.size else None
        del dropped

    def unqueue(self, acct: Account, n: int) -> None:
        """``n`` bytes queued for ``acct``'s peer were sent (or dropped)."""
        with self._lock:
            n = min(n, acct.queued)
            acct.used -= n
            acct.queued -= n
            self.used -= n
            ready = self._ready() if self._under or self._admissions else []
            if self._drained and acct.queued <= acct.limit // 2:
                cb = self._drained.pop(acct, None)
                if cb is not None:
                    ready.append(cb)
        _run(ready)

    def when_drained(self, acct: Account, callback: Callback) -> None:
        """Call ``callback`` once ``acct``'s queue is back under half its limit."""
        with self._lock:
            now = acct.queued <= acct.limit // 2
            if now:
                self._drained.pop(acct, None)
            else:
                self._drained[acct] = callback
        if now:
            callback()

    def when_under(self, acct: Account, callback: Callback) -> None:
        """Call ``callback`` once ``acct.under_low_water()``; at once if it already is."""
        with self._lock:
            now = acct.under_low_water()
            if not now:
                self._under[acct] = callback
        if now:
            callback()

    def close_account(self, acct: Account) -> None:
        """Give back all ``acct`` holds and forget its callbacks."""
        with self._lock:
            self.used -= acct.used
            acct.used = acct.queued = 0
            self._under.pop(acct, None)
            self._drained.pop(acct, None)
            ready = self._ready()
        _run(ready)

    def _room_for_used(self) -> list[Any]:
        """Lock held: drop kept buffers that no longer fit beside what is held."""
        return self.cache.shrink(max(0, self.total - self.used - self.set_aside))

    def _ready(self) -> list[Callback]:
        """Lock held: callbacks of waiters that may go on now (removed from the lists)."""
        ready: list[Callback] = []
        while self._admissions and self._fits(self._admissions[0][0]):
            n, cb = self._admissions.pop(0)
            self.set_aside += n
            ready.append(cb)
        if self._under and self.used <= self.total * 3 // 4:
            for acct, cb in list(self._under.items()):
                if acct.used - acct.queued <= acct.limit // 2:
                    del self._under[acct]
                    ready.append(cb)
        return ready


def _run(callbacks: list[Callback]) -> None:
    for cb in callbacks:
        cb()


class Account:
    """One connection's share of a ``Budget``; safe to charge from any thread.

    Its counts change under the budget's lock, so the methods that change them
    are the budget's (these forward there).
    """

    __slots__ = ("budget", "limit", "queued", "used")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.limit = budget.per_connection
        self.used = 0
        self.queued = 0
        """Part of ``used`` that waits to be sent: it counts in the node's total, not
        against the connection's own limit (stopping reading does not drain it, and two
        nodes that each waited for the other to read would wait for ever)."""

    def charge(self, n: int) -> None:
        self.budget.charge(self, n)

    def release(self, n: int) -> None:
        self.budget.release(self, n)

    def queue(self, n: int) -> None:
        """``n`` bytes wait to be sent."""
        self.budget.queue(self, n)

    def unqueue(self, n: int) -> None:
        """``n`` bytes were sent (or dropped)."""
        self.budget.unqueue(self, n)

    def backlogged(self) -> bool:
        """More waits to be sent to the peer than the connection's limit: run none
        of its new calls until it reads (``when_drained``)."""
        return self.queued > self.limit

    def when_drained(self, callback: Callback) -> None:
        """Call ``callback`` (from whichever thread sends) once what waits to be sent
        is back under half the connection's limit; at once if it already is."""
        self.budget.when_drained(self, callback)

    def over(self) -> bool:
        """This connection, or the node as a whole, holds more than it may."""
        return self.used - self.queued > self.limit or self.budget.used > self.budget.total

    def under_low_water(self) -> bool:
        """Back under half the connection's limit and 3/4 of the total: read again."""
        return (self.used - self.queued <= self.limit // 2
                and self.budget.used <= self.budget.total * 3 // 4)

    def when_under(self, callback: Callback) -> None:
        """Call ``callback`` (from whichever thread gives memory back) once
        ``under_low_water``; at once if it already is."""
        self.budget.when_under(self, callback)

    def close(self) -> None:
        """Give everything back (the connection is gone) and forget any waiter."""
        self.budget.close_account(self)


def _populate(m: mmap.mmap, start: int, length: int) -> None:
    if length > 0:
        try:
            m.madvise(_MADV_POPULATE_WRITE, start, length)
        except (OSError, ValueError):
            pass  # an older kernel: pages are faulted in as the socket fills them


class GrowingBuffer:
    """Room for one large frame that costs memory only as its bytes arrive.

    The whole announced size is reserved as address space (an anonymous map
    nobody has touched costs no memory); ``window`` pre-faults the next stretch
    (doubling: 1, 1, 2, 4 ... MiB) only once the bytes before it have come, and
    charges it to the account, taking it from what ``Budget.admit`` set aside.

    With an account, ``take`` first looks for a map the budget kept from an
    earlier frame (already charged in full, no admission), and ``give_back``
    offers a whole frame's map to be kept.
    """

    __slots__ = ("account", "aside", "map", "ready", "size")

    def __init__(self, size: int, account: Account | None = None, aside: int = 0,
                 reuse: mmap.mmap | None = None) -> None:
        self.size = size
        self.account = account
        self.aside = aside
        if reuse is not None:
            self.map = reuse
            self.ready = len(reuse)  # charged in full by Budget.take
        else:
            self.map = mmap.mmap(-1, size)
            self.ready = 0

    @classmethod
    def take(cls, size: int, account: Account) -> GrowingBuffer | None:
        """A buffer on a kept map nothing uses any more, or None."""
        m = account.budget.take(mmap.mmap, size, account)
        return None if m is None else cls(size, account, 0, m)

    def window(self, pos: int) -> memoryview:
        """Where the bytes from ``pos`` go (at least one byte unless full)."""
        if pos >= self.ready and self.ready < self.size:
            step = min(self.size - self.ready, max(_FIRST, self.ready))
            _populate(self.map, self.ready, step)
            acct = self.account
            if acct is not None:
                acct.charge(step)
                if self.aside:
                    taken = min(step, self.aside)
                    self.aside -= taken
                    acct.budget.withdraw(taken)
            self.ready += step
        return memoryview(self.map)[pos : min(self.ready, self.size)]

    def give_back(self, keep: bool = False) -> None:
        """Stop charging the account for this buffer (delivered or dropped); with
        ``keep`` (the frame is whole), the budget may keep the map for reuse."""
        acct = self.account
        if acct is not None:
            self.account = None
            aside, self.aside = self.aside, 0
            acct.budget.withdraw(aside)
            if keep and self.ready >= self.size:
                acct.budget.keep(self.map, self.ready, acct)
            else:
                acct.release(self.ready)
