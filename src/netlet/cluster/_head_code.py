"""The head's handlers for shipped code, task output and functions a worker cannot import.

A mixin of :class:`netlet.cluster._head.Head` (kept apart so the scheduler
stays readable): every method runs on the head's loop, like the rest of it.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from netlet.clock import Clock
from netlet.cluster._code import CodeStore
from netlet.cluster._head_checks import _as_itself, _expect
from netlet.cluster._head_tasks import Member
from netlet.cluster._member_messages import OutputLines, TaskOutput, WorkerDesc
from netlet.cluster._scheduler import ASSIGNED, RUNNING, Action, Scheduler, Task
from netlet.errors import ConfigError, ConnectionLost
from netlet.node import Node, Proxy, expose

__all__ = ["HeadCodeMixin"]

log = logging.getLogger("netlet.cluster")


@expose(concurrent=True)
class HeadCodeMixin:
    """Code packages (``code_*``), ``task_output`` and ``unrunnable``, for the head."""

    _node: Node
    _clock: Clock
    _sched: Scheduler
    _members: dict[str, Member]
    _clients: dict[str, Any]
    _code: CodeStore

    def _act(self, actions: list[Action]) -> None:
        raise NotImplementedError

    @staticmethod
    def _holds(member: Member, task: Task, lease: Any) -> bool:
        """Does ``member`` hold ``task``'s current lease?"""
        return (task.state in (ASSIGNED, RUNNING) and task.worker == member.node
                and bool(task.lease) and isinstance(lease, str)
                and secrets.compare_digest(task.lease, lease))

    async def unrunnable(self, worker: str, tid: str, lease: str, message: str) -> None:
        """The worker cannot import the function of a task it holds (``message`` says why).

        The task goes back to the front of the queue, and this worker is never
        offered that function again; once no live worker can import it, its
        tasks fail with the workers' message. So each worker fails a function
        at most once (see ``_sched_lacks``).
        """
        _as_itself(worker)
        if not (type(tid) is str and type(lease) is str and type(message) is str):
            raise ConfigError("unrunnable: task_id, lease and message are str")
        member = self._members.get(worker)
        task = self._sched.tasks.get(tid)
        if (member is not None and task is not None and self._holds(member, task, lease)
                and not self._sched.lacks(worker, task.fn)):
            log.warning("worker %s (%s) cannot import %s; other workers get it: %s",
                        member.info.name, worker[:8], task.fn[:200], message[:300])
        self._act(self._sched.unrunnable(worker, tid, lease, message, self._clock.monotonic()))

    async def task_output(self, worker: str, output: TaskOutput) -> None:
        """What tasks printed (a ``TaskOutput`` record): to their clients.

        Only the holder of a task's lease speaks for it; at most 64 entries of
        64 Ki characters per message, the rest is ignored. Anything but a
        ``TaskOutput`` is refused.
        """
        _as_itself(worker)
        _expect("task_output", "output", output, TaskOutput)
        member = self._members.get(worker)
        if member is None:
            return
        out: dict[str, tuple[list[str], list[int], list[str]]] = {}
        for tid, lease, stream, text in zip(output.tids[:64], output.leases, output.streams,
                                            output.texts, strict=False):
            if stream not in (1, 2) or len(text) > 65536:
                continue
            task = self._sched.tasks.get(tid)
            if task is not None and self._holds(member, task, lease):
                tids, streams, texts = out.setdefault(task.client, ([], [], []))
                tids.append(tid)
                streams.append(stream)
                texts.append(text)
        who = WorkerDesc(worker, member.info.name, member.info.host, member.info.pid)
        for client, (tids, streams, texts) in out.items():
            sink = self._clients.get(client)
            lines = OutputLines(who, tids, streams, texts)
            try:
                if isinstance(sink, Proxy):
                    sink.output.oneway(lines)
                elif sink is not None:  # a client on the head's own node
                    sink.print_output(lines)
            except (ConnectionLost, OSError):
                pass

    # -- code packages (working_dir=, py_modules=) --------------------------------

    def _code_caller(self, node: str, role: str) -> None:
        """Refuse code traffic unless the caller is a member over a keyed link."""
        _as_itself(node)
        why = None
        if self._node.config.transport.key is None:
            why = "this head has no cluster key (start it with --key-file)"
        elif node != self._node.id:
            peer = self._node.peer(node)
            if peer is None or not peer.authenticated:
                why = "this connection did not prove it holds the cluster key"
        member = self._members.get(node)
        if why is None and (member is None or member.role != role or not member.alive):
            why = f"join as a {role} first"
        if why is not None:
            raise ConfigError(f"shipping code runs it on every worker, so it needs a keyed "
                              f"cluster; refused: {why}")

    async def code_missing(self, client: str, digests: list[str]) -> list[str]:
        """Of these package hashes, those the head lacks (the client uploads them)."""
        self._code_caller(client, "client")
        if not isinstance(digests, list) or len(digests) > 64:
            raise ConfigError("at most 64 code packages at once")
        return self._code.missing(client, digests)

    async def code_put(self, client: str, digest: str, size: int, offset: int,
                       chunk: bytes) -> int:
        """One chunk of a package, in order; returns the bytes held (``size``: stored)."""
        self._code_caller(client, "client")
        return self._code.put(client, digest, size, offset, chunk)

    async def code_size(self, worker: str, digest: str) -> int:
        """A stored package's size in bytes, or -1 if the head does not have it."""
        self._code_caller(worker, "worker")
        return self._code.size(digest)

    async def code_get(self, worker: str, digest: str, offset: int, length: int) -> bytes:
        """Bytes of a stored package (at most 4 MiB per call)."""
        self._code_caller(worker, "worker")
        return self._code.get(digest, offset, length)
