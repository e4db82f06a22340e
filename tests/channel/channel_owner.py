"""A process that owns channels, for the channel tests: ``python channel_owner.py [options]``.

Options: ``--max-inflight N`` and ``--keepalive S`` set the node's config.

Prints the node's address as its first stdout line, then serves until killed:

``control``
    Makes and serves channels by name, runs operations on them inside this
    process (the owner's local side of a remote channel), uses channel handles
    it is given, and reports the in-flight incoming calls of each link (the
    probe for backpressure tests).
``worker``
    Runs sender and receiver threads on a channel, either one of this process's
    own channels or another process's (the same script started twice gives the
    third process of the exactly-once test).
"""

from __future__ import annotations

import argparse
import itertools
import threading
from typing import Any

import netlet
from netlet.errors import ChannelClosed


@netlet.expose(concurrent=True)
class Control:
    def __init__(self, node: netlet.Node) -> None:
        self._node = node
        self._channels: dict[str, netlet.Channel] = {}
        self._ids = itertools.count(1)

    def channel(self, name: str) -> netlet.Channel:
        return self._channels[name]

    def new_channel(self, buffer: int = 0) -> str:
        """A fresh channel served under a new name (returned)."""
        name = f"ch{next(self._ids)}"
        ch = netlet.channel(buffer, name=name)
        self._channels[name] = ch
        self._node.serve(ch, name)
        return name

    def make_channel(self, buffer: int = 0) -> netlet.Channel:
        """A fresh channel handed out inside a reply (it travels as a handle)."""
        ch = netlet.channel(buffer)
        self._channels[ch.name] = ch
        return ch

    def is_local(self, obj: Any) -> bool:
        return type(obj) is netlet.Channel

    async def local_send(self, name: str, value: Any, timeout: float | None) -> None:
        await self._channels[name].send.aio(value, timeout)

    async def local_receive(self, name: str, timeout: float | None) -> Any:
        return await self._channels[name].receive.aio(timeout)

    async def local_drain(self, name: str, n: int, timeout: float | None) -> list[Any]:
        """Receive ``n`` values here, in the owner."""
        ch = self._channels[name]
        return [await ch.receive.aio(timeout) for _ in range(n)]

    def local_close(self, name: str) -> None:
        self._channels[name].close()

    def send_to(self, ch: Any, value: Any, timeout: float | None) -> None:
        """Send into a channel handle we were given (the caller's own channel)."""
        ch.send(value, timeout)

    def receive_from(self, ch: Any, timeout: float | None) -> Any:
        return ch.receive(timeout)

    def inflight(self) -> dict[str, list[Any]]:
        """Per peer node id: [incoming calls in flight, reading paused] on its main link."""
        return {link.peer.node: [len(link._incoming), link._paused]
                for link in self._node.links.all()}


class _Job:
    def __init__(self, ch: Any, senders: list[list[Any]], receivers: int,
                 timeout: float) -> None:
        self.ch = ch
        self.timeout = timeout
        self.errors: list[str] = []
        self.received: list[list[Any]] = [[] for _ in range(receivers)]
        self.senders = [threading.Thread(target=self._send, args=(values,), daemon=True)
                        for values in senders]
        self.receivers = [threading.Thread(target=self._receive, args=(got,), daemon=True)
                          for got in self.received]
        for t in self.receivers + self.senders:
            t.start()

    def _send(self, values: list[Any]) -> None:
        try:
            for v in values:
                self.ch.send(v, self.timeout)
        except BaseException as e:
            self.errors.append(f"send: {e!r}")

    def _receive(self, got: list[Any]) -> None:
        try:
            while True:
                got.append(self.ch.receive(self.timeout))
        except ChannelClosed:
            return
        except BaseException as e:
            self.errors.append(f"receive: {e!r}")


@netlet.expose(concurrent=True)
class Worker:
    def __init__(self, node: netlet.Node, control: Control) -> None:
        self._node = node
        self._control = control
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)

    def start(self, address: str, name: str, senders: list[list[Any]], receivers: int,
              timeout: float) -> int:
        """Start threads sending ``senders[i]`` and ``receivers`` threads receiving until closed.

        ``address`` "" means this process's own channel ``name``.
        """
        if address:
            ch: Any = netlet.connect_channel(address, name, node=self._node)
        else:
            ch = self._control.channel(name)
        job = next(self._ids)
        self._jobs[job] = _Job(ch, senders, receivers, timeout)
        return job

    def senders_done(self, job: int, timeout: float) -> list[str]:
        """Wait for the job's senders; returns the errors so far."""
        for t in self._jobs[job].senders:
            t.join(timeout)
        return list(self._jobs[job].errors)

    def results(self, job: int, timeout: float) -> list[Any]:
        """Wait for the job's receivers (they stop when the channel closes)."""
        j = self._jobs.pop(job)
        for t in j.receivers + j.senders:
            t.join(timeout)
        alive = sum(t.is_alive() for t in j.receivers + j.senders)
        errors = j.errors + ([f"{alive} thread(s) still running"] if alive else [])
        return [j.received, errors]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-inflight", type=int, default=1024)
    parser.add_argument("--keepalive", type=float, default=2.0)
    args = parser.parse_args()
    node = netlet.Node("tcp://127.0.0.1:0", max_inflight=args.max_inflight,
                       keepalive=args.keepalive)
    control = Control(node)
    node.serve(control, "control")
    node.serve(Worker(node, control), "worker")
    print(node.address, flush=True)
    node.wait()


if __name__ == "__main__":
    main()
