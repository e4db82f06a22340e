"""What every byte-stream connection shares: a ``FrameReader`` and its admission
of large frames into the node's memory total.

A frame larger than the reader's ring asks the ``Budget`` to set its announced
size aside before its body is read. If the total has no room, the connection
stops reading (``_sync_reading``) until the budget calls back; plain TCP
(``_socket.py``) and TLS (``_tls.py``) differ only in how they stop and resume.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Callable

from netlet.errors import ProtocolError
from netlet.transport._base import Connection
from netlet.transport._budget import Account
from netlet.transport._framing import FrameReader

__all__ = ["FramedConnection"]


class FramedConnection(Connection):
    """A connection whose frames arrive as bytes through a ``FrameReader``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, remote: str, max_frame: int,
                 max_buffers: int = 0, account: Account | None = None) -> None:
        super().__init__(loop, remote, account)
        self._reader = FrameReader(self._deliver, max_frame, max_buffers, account)
        self._owner_paused = False
        self._waiting: Callable[[], None] | None = None  # a large frame awaits admission
        if account is not None:
            self._reader.admit = self._admit

    def set_max_frame(self, max_frame: int, max_buffers: int) -> None:
        self._reader.max_frame = max_frame
        self._reader.max_buffers = max_buffers
        self._reader.authenticated()

    def pause_reading(self) -> None:
        super().pause_reading()
        self._reader.paused = True  # frames already read wait too
        self._owner_paused = True
        self._sync_reading()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._owner_paused = False
        self._sync_reading()
        if not self._closed:
            try:
                self._reader.resume()
            except ProtocolError as e:
                self._protocol_error(e)

    def _wants_reading(self) -> bool:
        return not (self._owner_paused or self._waiting)

    @abstractmethod
    def _sync_reading(self) -> None:
        """Read from the peer exactly when ``_wants_reading()`` (loop thread)."""

    @abstractmethod
    def _close_now(self, reason: BaseException | None) -> None:
        """Close at once, on the loop thread."""

    def _protocol_error(self, e: ProtocolError) -> None:
        self.warn(logging.WARNING, "closing connection from %s: %s", self.remote, e)
        self._close_now(e)

    def _admit(self, n: int) -> bool:
        assert self.account is not None
        budget = self.account.budget

        def admitted() -> None:  # any thread
            try:
                self.loop.call_soon_threadsafe(self._on_admitted, n)
            except RuntimeError:  # the loop is closed
                budget.withdraw(n)

        if budget.admit(n, admitted):
            return True
        self._waiting = admitted
        self._sync_reading()
        return False

    def _on_admitted(self, n: int) -> None:
        self._waiting = None
        if self._closed:
            if self.account is not None:
                self.account.budget.withdraw(n)
            return
        self._sync_reading()
        try:
            self._reader.admitted(n)
        except ProtocolError as e:
            self._protocol_error(e)

    def _drop_buffers(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and self.account is not None:
            self.account.budget.cancel(waiting)
        self._reader.close()
