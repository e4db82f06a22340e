"""Message kinds inside frames after the handshake (see docs/PROTOCOL.md).

Every body is a msgpack array whose first element is the kind. These numbers
never change meaning.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BYE", "CALL", "CANCEL", "ERROR", "PING", "PONG", "REPLY", "Kind"]


class Kind(IntEnum):
    CALL = 1    # [1, call_id, target, method, args: list, kwargs: map | nil]; call_id 0 = oneway
    REPLY = 2   # [2, call_id, value]
    ERROR = 3   # [3, call_id, exception]
    CANCEL = 4  # [4, call_id]
    PING = 5    # [5, token]
    PONG = 6    # [6, token]
    BYE = 7     # [7, reason: str]


# Plain ints for the hot path: the codec packs exact ints without a detour.
CALL, REPLY, ERROR, CANCEL, PING, PONG, BYE = (int(k) for k in Kind)
