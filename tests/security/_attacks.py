"""The handshake attacks of the security suite, as functions of a target: loopback or a host away.

Each attack dials the target itself (``Dial``: plain TCP, or TLS with whatever
certificate the attacker holds) and reports what happened, ``refused`` or
``ACCEPTED``: a reply to a call, a handshake that ended in ``ok``, or a
pickle run on the target (the marker path exists) is an acceptance. The
attacker holds no key; the replay uses a recording of an honest client's
handshake, which a wiretap would have captured (here made with the key, as
``tests/transport/test_handshake.py`` does on loopback). The bad hellos are
those of ``test_promises_protocol.py``. ``run_all`` runs them all against
one target, slowloris connections sitting open throughout;
``tests/security/test_attacks.py`` runs it on loopback and
``tests/chaos/test_secure.py`` from an attacker host across a bridge.
"""

from __future__ import annotations

import os
import pickle
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from netlet.transport import TLSConfig, generate_key
from tests.conftest import RawClient, frame, hmac_proof
from tests.security.test_promises_protocol import BAD_HELLOS

__all__ = ["Dial", "Result", "dialer", "no_key", "run_all", "tls_refused"]

Dial = Callable[[], RawClient]
_PICKLE = 15  # the codec's pickle extension (netlet.codec Ext.PICKLE)
_CALL = [1, 1, "netlet.head", "status", [], None]  # a CALL, to any object: no reply is due


@dataclass(frozen=True)
class Result:
    attack: str
    accepted: bool
    detail: str

    def line(self, target: str) -> str:
        return f"{'ACCEPTED' if self.accepted else 'refused'} {target} {self.attack}: {self.detail}"


def dialer(address: str, tls: TLSConfig | None = None, timeout: float = 5.0) -> Dial:
    """Connections to ``address`` (``tcp://host:port``), TLS-wrapped with ``tls`` if given."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    target = (host.strip("[]"), int(port))
    context = tls.client_context() if tls is not None else None

    def dial() -> RawClient:
        sock = socket.create_connection(target, timeout=timeout)
        if context is not None:
            try:
                sock = context.wrap_socket(sock)
            except BaseException:
                sock.close()
                raise
        return RawClient(sock)
    return dial


class _Mark:
    """Unpickled, it makes the directory ``path``: the trace of code run by a stranger."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _closed(raw: RawClient, timeout: float) -> tuple[bool, list[Any]]:
    """Whether the peer closed within ``timeout``, and the frames it sent before."""
    frames: list[Any] = []
    raw.sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            body, _ = raw.recv_frame()
            try:
                frames.append(msgpack.unpackb(body, raw=False, strict_map_key=False))
            except ValueError:
                frames.append(body)
    except (OSError, ssl.SSLError):  # EOF, reset, a TLS alert: closed
        return True, frames
    return False, frames


def _answered(frames: list[Any]) -> bool:
    """A reply to a call (RESULT, ERROR) or a handshake's ``ok``: the target took us in."""
    return any((isinstance(f, list) and f[:1] in ([2], [3]))
               or (isinstance(f, dict) and f.get("ok") is True) for f in frames)


def _verdict(name: str, raw: RawClient, timeout: float, marker: Path | None = None) -> Result:
    closed, frames = _closed(raw, timeout)
    ran = marker is not None and marker.exists()
    said = next((f"{f['error']}: {f.get('message', '')}" for f in frames
                 if isinstance(f, dict) and "error" in f), "")
    if _answered(frames) or ran or not closed:
        why = "a pickle ran" if ran else "answered" if _answered(frames) else "left open"
        return Result(name, True, f"{why}; got {frames!r:.120}")
    return Result(name, False, f"closed{' after ' + repr(said) if said else ' without an answer'}")


def _hello(raw: RawClient, **extra: Any) -> tuple[bytes, bytes]:
    """A keyed hello; returns the server's hello body and its proof (not checkable by us)."""
    raw.hello(key=b"k" * 32, **extra)
    reply, _ = raw.recv_frame()
    proof = msgpack.unpackb(raw.recv_frame()[0], raw=False)["proof"]
    return reply, proof


def _wrong_key(dial: Dial, wait: float) -> Iterator[Result]:
    with dial() as raw:
        reply, _ = _hello(raw)
        raw.send_msg({"proof": hmac_proof(generate_key(), b"client", raw.hello_body, reply)})
        raw.send_msg(_CALL)
        yield _verdict("wrong key", raw, wait)


def no_key(dial: Dial, wait: float) -> Iterator[Result]:
    """A hello without authentication, then a call: what gets into a keyless node."""
    with dial() as raw:
        raw.hello()
        raw.send_msg(_CALL)
        yield _verdict("no key", raw, wait)


def _replay(dial: Dial, key: bytes, wait: float) -> Iterator[Result]:
    with dial() as honest:  # the recording: an honest client's hello and proof
        honest.handshake(key)
        captured = bytes(honest.sent)
    with dial() as thief:  # played back whole, then a call
        thief.send_raw(captured + frame(msgpack.packb(_CALL)))
        yield _verdict("replayed handshake", thief, wait)
    hello_len = 8 + int.from_bytes(captured[:4], "big")
    with dial() as thief:  # or answering the fresh challenge with the old proof
        thief.send_raw(captured[:hello_len])
        thief.recv_frame()
        thief.recv_frame()
        thief.send_raw(captured[hello_len:] + frame(msgpack.packb(_CALL)))
        yield _verdict("replayed proof", thief, wait)


def _reflection(dial: Dial, wait: float) -> Iterator[Result]:
    with dial() as raw:  # the server's own proof, sent back as ours
        _, proof = _hello(raw)
        raw.send_msg({"proof": proof})
        raw.send_msg(_CALL)
        yield _verdict("reflected proof", raw, wait)
    with dial() as first, dial() as second:  # one connection's proof offered on another
        _, proof = _hello(first)
        _hello(second, nonce=b"\0" * 32)
        second.send_msg({"proof": proof})
        second.send_msg(_CALL)
        yield _verdict("proof from another connection", second, wait)


def _pickles(dial: Dial, marker: Path, wait: float) -> Iterator[Result]:
    payload = msgpack.ExtType(_PICKLE, pickle.dumps(_Mark(marker)))
    with dial() as raw:  # in the hello
        raw.send_msg({"netlet": 1, "node": "n" * 32, "nonce": b"\0" * 32,
                      "auth": "hmac-sha256", "evil": payload})
        yield _verdict("pickle in the hello", raw, wait, marker)
    with dial() as raw:  # in a call where the proof belongs, asking for pickle
        _hello(raw, pickle=True)
        raw.send_msg([1, 1, "netlet.head", "status", [payload], None])
        yield _verdict("pickle in a call before the proof", raw, wait, marker)


def _early_frames(dial: Dial, wait: float) -> Iterator[Result]:
    with dial() as raw:
        raw.send_msg(_CALL)  # a call for a hello
        yield _verdict("call before the hello", raw, wait)
    with dial() as raw:
        raw.hello(key=b"k" * 32)
        raw.send_msg(_CALL)  # a call right behind the hello, where the proof belongs
        yield _verdict("call before the proof", raw, wait)


def _oversized(dial: Dial, wait: float) -> Iterator[Result]:
    headers = {
        "4 GiB frame header": struct.pack(">II", 0xFFFF_FFFF, 0),
        "17 KiB hello (over the 16 KiB handshake limit)": struct.pack(">II", 17 * 1024, 0)
        + b"\x80" * 1024,
        "65 buffers in the hello": struct.pack(">II", 1, 65) + b"\0\0\0\1" * 65 + b"\x80"
        + b"\0" * 65,
    }
    for name, data in headers.items():
        with dial() as raw:
            raw.send_raw(data)
            yield _verdict(name, raw, wait)


def _bad_hellos(dial: Dial, wait: float) -> Iterator[Result]:
    for name, hello in BAD_HELLOS.items():
        with dial() as raw:
            raw.send_msg(hello)
            yield _verdict(f"bad hello ({name})", raw, wait)


def _slowloris(dial: Dial, count: int) -> list[RawClient]:
    """``count`` connections that send half a header and then nothing."""
    made = []
    for _ in range(count):
        raw = dial()
        raw.send_raw(b"\0\0\0\x40")
        made.append(raw)
    return made


def run_all(dial: Dial, key: bytes, marker: Path, *, wait: float = 5.0,
            handshake_timeout: float = 5.0, slowloris: int = 20) -> list[Result]:
    """Every attack against one target; ``key`` only records the honest handshake to replay.

    The slowloris connections are opened first and must all be cut within the
    target's ``handshake_timeout`` (plus ``wait``) while the other attacks run;
    the last result is the control: an honest handshake with ``key`` and a call,
    which must be ``ACCEPTED``, or the attacks could not have got in either.
    """
    start = time.monotonic()
    loris = _slowloris(dial, slowloris)
    results: list[Result] = []
    for attack in (_wrong_key(dial, wait), no_key(dial, wait), _replay(dial, key, wait),
                   _reflection(dial, wait), _pickles(dial, marker, wait), _early_frames(dial, wait),
                   _oversized(dial, wait), _bad_hellos(dial, wait)):
        results.extend(attack)
    left = max(0.1, start + handshake_timeout + wait - time.monotonic())
    cut = [_closed(raw, left)[0] for raw in loris]
    last = time.monotonic() - start
    for raw in loris:
        raw.close()
    results.append(Result(f"slowloris ({slowloris} half headers)", not all(cut),
                          f"{sum(cut)} of {slowloris} cut, the last {last:.1f} s after they "
                          f"opened (handshake timeout {handshake_timeout:g} s)"))
    with dial() as honest:
        honest.handshake(key)
        honest.send_msg([1, 1, "no such object", "x", [], None])
        answer = honest.recv_msg()
    results.append(Result("control: the key and a call", answer[:2] in ([2, 1], [3, 1]),
                          f"answer {answer!r:.80}"))
    return results


def tls_refused(dial: Dial, how: str, wait: float = 5.0) -> Result:
    """A connection that should not get past TLS: a hello sent anyway must get nothing."""
    try:
        raw = dial()
    except (OSError, ssl.SSLError) as e:
        return Result(how, False, f"TLS refused: {type(e).__name__}")
    with raw:
        try:
            raw.hello(key=b"k" * 32)
        except (OSError, ssl.SSLError) as e:
            return Result(how, False, f"TLS refused: {type(e).__name__}")
        return _verdict(how, raw, wait)
