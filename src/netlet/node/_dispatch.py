"""Where an incoming call goes: the one dispatcher behind links and direct connections.

A call names an object and a method; a link (on the loop) and a direct
connection (on its own thread) both ask the dispatcher for the actor and the
exposed method, and whom the call acts for, then run it their own way. So a
refusal, and an outcome that cannot travel, read the same whichever path a
call took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from netlet.codec import Buffer, Codec, short
from netlet.errors import EncodeError, NoSuchObject, NotExposed
from netlet.node._actor import Actor
from netlet.node._expose import MethodInfo
from netlet.node._identity import Identity
from netlet.node._messages import ERROR, REPLY
from netlet.node._objects import ObjectTable

__all__ = ["Dispatcher", "encode_outcome"]

log = logging.getLogger("netlet.node")


class Dispatcher:
    """Finds what an incoming call names in the object table, and whom it acts for."""

    def __init__(self, objects: ObjectTable, identity: Identity,
                 where: Callable[[], str]) -> None:
        self._get = objects.get
        self._where = where  # this node, as refusals name it
        self.caller_of = identity.caller_of
        """``caller_of(link)``: the node id a call over ``link`` acts for ("" if none)."""

    def find(self, target: str, method: str, remote: object) -> tuple[Actor, MethodInfo]:
        """The actor served as ``target`` and its exposed ``method``.

        Raises (and logs, naming ``remote``) NoSuchObject or NotExposed: the
        caller replies with the error.
        """
        actor = self._get(target)
        if actor is None:  # peer strings are cut short in logs and answers
            log.warning("refused a call from %s: no object named %s", remote, short(target))
            raise NoSuchObject(f"no object named {short(target)} on node {self._where()}")
        info = actor.methods.get(method)
        if info is None:
            name = method if len(method) <= 80 else method[:80] + "..."
            log.warning("refused a call from %s: %s.%s is not exposed", remote, target, name)
            raise NotExposed(f"{type(actor.obj).__name__}.{name} is not exposed for remote calls")
        return actor, info


def encode_outcome(codec: Codec, cid: int, ok: bool, value: Any) -> tuple[bytes, list[Buffer]]:
    """Call ``cid``'s outcome as a REPLY or ERROR frame (body, buffers).

    An outcome that cannot travel becomes an ERROR saying why, so the caller is
    told instead of left waiting.
    """
    try:
        return codec.encode([REPLY, cid, value] if ok else [ERROR, cid, value])
    except EncodeError as e:
        return codec.encode([ERROR, cid, e])
