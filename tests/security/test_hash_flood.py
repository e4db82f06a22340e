"""Hash flooding and decode-time amplification against a real node.

The attack that started this module: a CALL whose argument is a set of big
integers that all hash to 0 (``k * (2**61 - 1)``), 1.5 MB long, froze a
node's event loop for 22.7 s, and the cost grew quadratically. The same works
for map keys, frozensets, floats, tuples, Decimals, UUIDs, complex numbers and
big integers. The codec now counts the hashes of set elements and map keys
before building the container and refuses a message where more than 8 share
one (an ERROR ``DecodeError`` for the call); bodies of 64 KiB or more are
decoded off the node's loop in slices, and ``Limits.max_items`` bounds how
many values one message may hold, so a 64 MiB body of tiny values costs
seconds of one background thread, never the loop, and a few hundred MiB.
"""

from __future__ import annotations

import datetime as dt
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from netlet.codec import Codec
from tests.conftest import LOGGING_PRELUDE, RawClient, ServerProcess

P = 2**61 - 1
"""CPython hashes an int n >= 0 as n mod P: every multiple of P hashes to 0."""
MiB = 1 << 20

SERVER = LOGGING_PRELUDE + """
import netlet

@netlet.expose
class Calc:
    def add(self, a, b):
        return a + b

    def size(self, x):
        return len(x)

with netlet.Node(listen="tcp://127.0.0.1:0") as node:
    node.serve(Calc(), "calc")
    print(node.address, flush=True)
    node.wait()
"""


@pytest.fixture
def server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(SERVER)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime (clock ticks)


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def call_body(cid: int, method: str, *args: Any) -> bytes:
    """A CALL encoded by netlet's own codec (tuples, sets, ... as their extensions)."""
    return Codec().encode([1, cid, "calc", method, list(args), None])[0]


def exception_name(answer: list[Any]) -> str:
    """The type name inside an ERROR's ext 11."""
    assert answer[0] == 3, f"expected an ERROR, got {answer!r}"[:300]
    ext = answer[2]
    return str(msgpack.unpackb(ext.data, raw=False)[0])


def floats_hashing_to_1() -> list[float]:
    # hash(m * 2**e) is m * 2**(e mod 61) mod P: every 2.0**(61*j) hashes to 1.
    return [2.0 ** (61 * j) for j in range(17)] + [2.0 ** (-61 * j) for j in range(1, 17)]


# The hostile values are written as msgpack by hand: building them as Python
# sets or dicts here would cost the test the quadratic time they are meant to cost
# the server.


def ext(code: int, value: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(value))


def raw_map(keys: list[Any]) -> bytes:
    """A msgpack map with these keys (values 0), duplicates and all."""
    return b"\xdf" + struct.pack(">I", len(keys)) + b"".join(
        msgpack.packb(k) + b"\x00" for k in keys)


def raw_call(arg: bytes, cid: int = 1) -> bytes:
    """``[1, cid, "calc", "size", [arg], nil]`` around an already-encoded argument."""
    packed_id: bytes = msgpack.packb(cid)
    return b"\x96\x01" + packed_id + b"\xa4calc\xa4size\x91" + arg + b"\xc0"


N = 20_000
SET, FROZENSET, TUPLE, DECIMAL, UUID, BIGINT, COMPLEX = 2, 3, 1, 7, 8, 9, 10
MULTIPLES = [k * P for k in range(9, N)]  # beyond msgpack's ints: netlet sends them as ext 9
ZEROS = [msgpack.ExtType(BIGINT, str(z).encode()) for z in MULTIPLES]
HOSTILE: dict[str, Callable[[], bytes]] = {
    "int set": lambda: msgpack.packb(ext(SET, ZEROS)),
    "frozenset": lambda: msgpack.packb(ext(FROZENSET, ZEROS)),
    "int map keys": lambda: raw_map(ZEROS),  # msgpack decodes it with strict_map_key=False
    "float set": lambda: msgpack.packb(ext(SET, floats_hashing_to_1())),
    "float map keys": lambda: raw_map(floats_hashing_to_1()),
    "tuple set": lambda: msgpack.packb(ext(SET, [ext(TUPLE, [z]) for z in ZEROS])),
    "nested tuple map keys": lambda: raw_map([ext(TUPLE, [ext(TUPLE, [z, 0])]) for z in ZEROS]),
    "decimal set": lambda: msgpack.packb(ext(SET, [
        msgpack.ExtType(DECIMAL, str(z).encode()) for z in MULTIPLES])),
    "uuid set": lambda: msgpack.packb(ext(SET, [
        msgpack.ExtType(UUID, z.to_bytes(16, "big")) for z in MULTIPLES])),
    "complex set": lambda: msgpack.packb(ext(SET, [
        ext(COMPLEX, [float(1000003 * t), float(-t)]) for t in range(1, N)])),
    "ints in msgpack's range": lambda: msgpack.packb(ext(SET, [
        k * P for k in range(-4, 9)])),
    "set in a tuple in a map": lambda: b"\x81\xa1x" + msgpack.packb(ext(TUPLE, [ext(SET, ZEROS)])),
}


def assert_answered_quickly(client: RawClient, server: ServerProcess, body: bytes,
                            cid: int, cpu_bound: float) -> list[Any]:
    """Send ``body``; its answer must come with less than ``cpu_bound`` s of server CPU."""
    before = cpu_seconds(server.pid)
    client.send_frame(body)
    answer = client.recv_msg()
    used = cpu_seconds(server.pid) - before
    assert answer[1] == cid
    assert used < cpu_bound, f"the server spent {used:.2f} s of CPU on {len(body)} bytes"
    return list(answer)


@pytest.mark.timeout(60)
def test_colliding_hashes_are_refused_for_every_hashable_type(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        for cid, (shape, make) in enumerate(HOSTILE.items(), start=1):
            answer = assert_answered_quickly(client, server, raw_call(make(), cid), cid,
                                             cpu_bound=1.0)
            assert exception_name(answer) == "netlet.errors.DecodeError", shape
            assert b"hash" in answer[2].data, shape
        # The connection and the node are still fine.
        client.send_msg([1, 1000, "calc", "add", [2, 3], None])
        assert client.recv_msg() == [2, 1000, 5]
    server.stderr.wait_for(r"refused a call from .*share one hash value")


class Prober:
    """A second client calling ``add`` in a loop; records the slowest answer."""

    def __init__(self, address: str) -> None:
        self.client = RawClient.connect(address)
        self.client.handshake()
        self.worst = 0.0
        self.calls = 0

    def probe_until(self, done: threading.Event) -> None:
        cid = 0
        while not done.is_set():
            cid += 1
            start = time.monotonic()
            self.client.send_msg([1, cid, "calc", "add", [cid, 1], None])
            assert self.client.recv_msg() == [2, cid, cid + 1]
            self.worst = max(self.worst, time.monotonic() - start)
            self.calls += 1


def attack_while_probing(server: ServerProcess, body: bytes) -> tuple[Any, Prober, float]:
    """Send ``body`` as an attacker while another client keeps calling; wait for both."""
    prober = Prober(server.address)
    done = threading.Event()
    answers: list[Any] = []
    attacker = RawClient.connect(server.address, timeout=60)
    attacker.handshake()
    before = cpu_seconds(server.pid)

    def attack() -> None:
        try:
            attacker.send_frame(body)
            frame = attacker.recv_frame_or_eof(60)
            answers.append(None if frame is None else msgpack.unpackb(
                frame[0], raw=False, strict_map_key=False))
        finally:
            done.set()

    thread = threading.Thread(target=attack)
    thread.start()
    try:
        prober.probe_until(done)
    finally:
        done.set()
        thread.join(60)
        attacker.close()
        prober.client.close()
    return answers[0], prober, cpu_seconds(server.pid) - before


@pytest.mark.timeout(60)
def test_original_attack_no_longer_freezes_the_node(server: ServerProcess) -> None:
    """The 1.5 MB set of ints hashing to 0: refused at once, others still served."""
    body = raw_call(msgpack.packb(ext(SET, [
        msgpack.ExtType(BIGINT, str(k * P).encode()) for k in range(9, 58_000)])))
    assert len(body) > 1_500_000
    answer, prober, cpu = attack_while_probing(server, body)
    assert exception_name(answer) == "netlet.errors.DecodeError"
    assert prober.worst < 1.0, f"another client waited {prober.worst:.2f} s"
    assert cpu < 2.0, f"the attack cost the server {cpu:.2f} s of CPU"


def array_of(unit: bytes, nbytes: int, per: int = MiB) -> bytes:
    """A msgpack array of arrays holding ``unit`` repeated to about ``nbytes``."""
    n = nbytes // len(unit)
    chunks = []
    while n > 0:
        k = min(n, per)
        chunks.append(b"\xdd" + struct.pack(">I", k) + unit * k)
        n -= k
    return b"\xdd" + struct.pack(">I", len(chunks)) + b"".join(chunks)


BIG = {
    # 16 MiB of fixext tuples: a call into Python per 3 bytes (once ~8 s on the loop)
    "tuples": (b"\xd4\x01\x90", 16 * MiB),
    # 64 MiB of {0: 0}: 3 bytes each would become 5 GiB of dicts
    "small maps": (b"\x81\x00\x00", 64 * MiB - 1024),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("shape", list(BIG))
def test_big_bodies_of_tiny_values_do_not_stall_the_node(server: ServerProcess,
                                                         shape: str) -> None:
    unit, size = BIG[shape]
    body = raw_call(array_of(unit, size))
    answer, prober, cpu = attack_while_probing(server, body)
    assert exception_name(answer) == "netlet.errors.DecodeError"
    assert prober.calls > 0
    assert prober.worst < 1.0, f"another client waited {prober.worst:.2f} s"
    assert cpu < 20.0, f"decoding cost {cpu:.1f} s of CPU"
    assert peak_rss_mib(server.pid) < 1024, "decoding took more than 1 GiB"
    server.stderr.wait_for(r"refused a call from .*Limits.max_items")


@pytest.mark.timeout(60)
def test_benign_values_still_decode(server: ServerProcess) -> None:
    """Real sets and maps with non-str keys are not refused: only collisions are."""
    values: list[Any] = [
        set(range(1_000_000)),
        {i: str(i) for i in range(100_000)},
        {(i, -i) for i in range(100_000)},
        {dt.datetime(2020, 1, 1) + dt.timedelta(seconds=i) for i in range(10_000)},
        {uuid.UUID(int=i) for i in range(10_000)},
        frozenset(i / 7 for i in range(10_000)),
        {-1, -2, 0.5, 2**60},  # pairs sharing a hash: a handful is fine
    ]
    with RawClient.connect(server.address, timeout=30) as client:
        client.handshake()
        for cid, value in enumerate(values, start=1):
            client.send_frame(call_body(cid, "size", value))
            assert client.recv_msg() == [2, cid, len(value)]


@pytest.mark.timeout(60)
def test_direct_connections_refuse_colliding_hashes_too(server: ServerProcess) -> None:
    """The direct role (PROTOCOL.md §10) decodes on its own thread with the same codec."""
    body = raw_call(HOSTILE["int set"]())
    with RawClient.connect(server.address) as client:
        client.handshake(role="direct")
        before = cpu_seconds(server.pid)
        client.send_frame(body)
        assert client.closed_by_peer()  # an undecodable body closes a direct connection
        assert cpu_seconds(server.pid) - before < 1.0
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([1, 1, "calc", "add", [2, 3], None])
        assert client.recv_msg() == [2, 1, 5]
