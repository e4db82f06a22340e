"""Bytes a node holds on behalf of its peers: counted per connection and in total.

Every byte a peer can make us hold is charged to its connection's ``Account``
(frame buffers as they fill, calls it made until they reply, replies it has not
read yet) and through it to the node's ``Budget``. The owner of a connection
checks ``over()`` at message boundaries and stops reading while it is true;
``when_under`` tells it when to read again.

Frame buffers larger than a page come from ``reserve``: an anonymous map of
the announced size whose pages are filled (and so cost memory) only as bytes
arrive; ``populate`` pre-faults the next stretch in one system call.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable

__all__ = ["Account", "Budget", "GrowingBuffer"]

_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels fault pages one by one
_FIRST = 1 << 20
"""A large frame's first step: pre-faulted; later steps double as bytes arrive."""


class Budget:
    """The node's total: ``total`` bytes across all its connections."""

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: list[Account] = []

    def account(self) -> Account:
        return Account(self)

    def over(self) -> bool:
        return self.used > self.total

    def _ready(self) -> list[Callable[[], None]]:
        """Lock held: the callbacks of accounts that may read again (now removed)."""
        if not self._waiters or self.used > self.total * 3 // 4:
            return []
        ready: list[Callable[[], None]] = []
        for acct in list(self._waiters):
            cb = acct._on_under
            if cb is None or acct.used <= acct.limit // 2:
                self._waiters.remove(acct)
                acct._on_under = None
                if cb is not None:
                    ready.append(cb)
        return ready


class Account:
    """One connection's share of a ``Budget``; safe to charge from any thread."""

    __slots__ = ("_on_under", "budget", "limit", "used")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.limit = budget.per_connection
        self.used = 0
        self._on_under: Callable[[], None] | None = None

    def charge(self, n: int) -> None:
        b = self.budget
        with b._lock:
            self.used += n
            b.used += n

    def release(self, n: int) -> None:
        b = self.budget
        with b._lock:
            n = min(n, self.used)
            self.used -= n
            b.used -= n
            ready = b._ready() if b._waiters else []
        for cb in ready:
            cb()

    def over(self) -> bool:
        """This connection, or the node as a whole, holds more than it may."""
        return self.used > self.limit or self.budget.used > self.budget.total

    def when_under(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from whichever thread releases) once back under half the
        connection's limit and three quarters of the total; at once if already so."""
        b = self.budget
        with b._lock:
            if self.used <= self.limit // 2 and b.used <= b.total * 3 // 4:
                now = True
            else:
                now = False
                self._on_under = callback
                if self not in b._waiters:
                    b._waiters.append(self)
        if now:
            callback()

    def close(self) -> None:
        """Give everything back (the connection is gone) and forget any waiter."""
        b = self.budget
        with b._lock:
            b.used -= self.used
            self.used = 0
            self._on_under = None
            if self in b._waiters:
                b._waiters.remove(self)
            ready = b._ready()
        for cb in ready:
            cb()


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
    (doubling: 1, 1, 2, 4 ... MiB) only once the bytes before it have come.
    """

    __slots__ = ("account", "map", "ready", "size")

    def __init__(self, size: int, account: Account | None = None) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size)
        self.ready = 0
        self.account = account

    def window(self, pos: int) -> memoryview:
        """Where the bytes from ``pos`` go (at least one byte unless full)."""
        if pos >= self.ready and self.ready < self.size:
            step = min(self.size - self.ready, max(_FIRST, self.ready))
            _populate(self.map, self.ready, step)
            if self.account is not None:
                self.account.charge(step)
            self.ready += step
        return memoryview(self.map)[pos : self.ready]

    def give_back(self) -> None:
        """Stop charging the account for this buffer (delivered or dropped)."""
        if self.account is not None:
            self.account.release(self.ready)
            self.account = None
