"""The opening exchange: protocol version, node ids, HMAC authentication, codec choice.

Frames before the end of the handshake are small (``Limits.handshake_max``),
carry no out-of-band buffers and are decoded as plain msgpack maps with no
extension types: nothing a peer sends is interpreted until it has proven it
holds the key (when one is set). Both proofs cover the exact bytes of both
hellos (the transcript), so a man in the middle cannot change a field (the
pickle flag, a node id, the role) without the handshake failing. See
docs/PROTOCOL.md section 4 for the byte layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import Any

import msgpack

from netlet.codec import Buffer
from netlet.errors import (
    AuthenticationError,
    ConnectionLost,
    HandshakeError,
    ProtocolError,
    VersionMismatch,
)
from netlet.transport._base import Connection, PeerInfo
from netlet.transport._config import TransportConfig
from netlet.transport._shm import agree, local_identity

__all__ = ["PROTOCOL_VERSION", "client_handshake", "server_handshake"]

PROTOCOL_VERSION = 1
_AUTH = "hmac-sha256"
_MAX_AHEAD = 4
"""Frames read ahead of the handshake's progress; more wait in the socket (TCP slows
the peer), so a peer cannot make us copy and hold frames before it authenticated."""


def _is_version(value: Any) -> bool:
    return type(value) is int and value == PROTOCOL_VERSION


def transcript_token(client_hello: bytes, server_hello: bytes) -> bytes:
    """What both ends of one connection, and nobody off its path, know: binds ids to it."""
    return hashlib.sha256(hashlib.sha256(client_hello).digest()
                          + hashlib.sha256(server_hello).digest()).digest()


def proof(key: bytes, label: bytes, client_hello: bytes, server_hello: bytes) -> bytes:
    """HMAC-SHA256 over ``label``, 0x00 and the SHA-256 of each hello body as it travelled."""
    msg = b"".join((label, b"\0", hashlib.sha256(client_hello).digest(),
                    hashlib.sha256(server_hello).digest()))
    return hmac.new(key, msg, hashlib.sha256).digest()


def key_id(key: bytes) -> bytes:
    """8 bytes naming a key in the hello, so a server in a key rotation knows which of its
    keys to prove (SHA-256 of a label and the key: says nothing usable about the key)."""
    return hashlib.sha256(b"netlet key id\0" + key).digest()[:8]


def _keys(config: TransportConfig) -> tuple[bytes, ...]:
    return (config.key, *config.old_keys) if config.key is not None else ()


def _server_key(config: TransportConfig, named: Any) -> bytes:
    """The key a client's hello names (``key_id``), if we hold it; else our own."""
    assert config.key is not None
    for key in _keys(config):
        if named == key_id(key):
            return key
    return config.key


class _Inbox:
    """Collects handshake frames from a connection until the handshake ends.

    Frames that arrive after the last handshake frame belong to the protocol
    proper: ``release`` hands them back to the connection undecoded.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # A list and one future, not an asyncio.Queue: a queue costs four deques (4 KiB),
        # and thousands of connections may sit in the handshake at once.
        self.items: list[dict[str, Any] | BaseException] = []
        self._ready: asyncio.Future[None] | None = None
        self.raw: list[tuple[bytes, list[Buffer]]] = []
        self.taken = 0
        self._paused = False
        conn.set_handlers(self._on_message, self._on_close)

    def release(self) -> None:
        """Stop listening; later frames (and any already received) wait for the next owner."""
        self.conn.hold(self.raw[self.taken:])
        if self._paused:
            self.conn.resume_reading()

    def _put(self, item: dict[str, Any] | BaseException) -> None:
        self.items.append(item)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _on_message(self, body: memoryview, buffers: list[Buffer]) -> None:
        self.raw.append((bytes(body), [bytes(b) for b in buffers]))
        if len(self.raw) - self.taken >= _MAX_AHEAD and not self._paused:
            self._paused = True  # read no further ahead until the handshake ends
            self.conn.pause_reading()
        if buffers:
            self._put(ProtocolError("buffers are not allowed in the handshake"))
            return
        try:
            msg = msgpack.unpackb(body, raw=False, max_str_len=4096, max_bin_len=4096,
                                  max_array_len=64, max_map_len=64, max_ext_len=0)
        except Exception as e:
            self._put(HandshakeError(f"malformed handshake frame: {type(e).__name__}"))
            return
        if not isinstance(msg, dict):
            self._put(HandshakeError("handshake frame is not a map"))
            return
        self._put(msg)

    def _on_close(self, reason: BaseException | None) -> None:
        self._put(ConnectionLost(f"closed during handshake: {reason}"))

    async def get(self) -> dict[str, Any]:
        return (await self.get_raw())[0]

    async def get_raw(self) -> tuple[dict[str, Any], bytes]:
        """The next handshake map and the exact body bytes it was decoded from."""
        while not self.items:
            self._ready = self.conn.loop.create_future()
            await self._ready
        self._ready = None
        item = self.items.pop(0)
        self.taken += 1
        if isinstance(item, BaseException):
            try:
                raise item
            finally:  # the traceback keeps this frame: no cycle error -> frame -> error
                del item
        if "error" in item:
            kind, text = item.get("error"), str(item.get("message", ""))
            if kind == "version":
                raise VersionMismatch(text)
            if kind == "auth":
                raise AuthenticationError(text)
            raise HandshakeError(text)
        return item, self.raw[self.taken - 1][0]


def _offer(conn: Connection, config: TransportConfig) -> list[Any] | None:
    """This process's identity for shared memory, if it may be used on ``conn`` at all."""
    if config.shared_memory <= 0 or conn.raw_socket() is None:
        return None
    return local_identity()


def _send(conn: Connection, msg: dict[str, Any]) -> bytes:
    """Send one handshake map; returns the body bytes sent (they enter the transcript)."""
    body: bytes = msgpack.packb(msg)
    conn.send(body)
    return body


def _bytes(msg: dict[str, Any], field: str, size: int) -> bytes:
    value = msg.get(field)
    if not isinstance(value, bytes) or len(value) != size:
        raise HandshakeError(f"handshake field {field!r} is missing or malformed")
    return value


async def client_handshake(
    conn: Connection, config: TransportConfig, node: str, listen_address: str,
    role: str = "link", link_token: bytes = b"",
) -> PeerInfo:
    """Run the client side; returns who the server is or raises ``HandshakeError``.

    A direct connection passes its main link's ``token`` as ``link_token``.
    """
    async with config.clock.timeout(config.handshake_timeout):
        inbox = _Inbox(conn)
        cn = secrets.token_bytes(32)
        asked = config.allow_pickle and config.key is not None
        fields: dict[str, Any] = {"netlet": PROTOCOL_VERSION, "node": node,
                                  "address": listen_address, "nonce": cn,
                                  "auth": _AUTH if config.key else None, "role": role,
                                  "pickle": asked}
        if link_token:
            fields["link"] = link_token
        if config.key is not None:
            fields["key_id"] = key_id(config.key)
        ours = _offer(conn, config)
        if ours is not None:
            fields["shm"] = ours
        hello = _send(conn, fields)
        reply, reply_raw = await inbox.get_raw()
        if not _is_version(reply.get("netlet")):
            raise VersionMismatch(f"server speaks protocol {reply.get('netlet')!r}, "
                                  f"we speak {PROTOCOL_VERSION}")
        server_node = str(reply.get("node", ""))
        authenticated = False
        if config.key is not None:
            if reply.get("auth") != _AUTH:
                raise AuthenticationError("the server did not authenticate; refusing to talk to it")
            if "proof" in reply:
                raise AuthenticationError(
                    "the server runs an older netlet whose handshake proof does not cover "
                    "the hellos; upgrade it")
            _bytes(reply, "nonce", 32)
            theirs = _bytes(await inbox.get(), "proof", 32)
            # In a key rotation the server may prove an old key we still accept: we then
            # prove the same one. Every key is compared, in constant time each.
            matched = [key for key in _keys(config)
                       if hmac.compare_digest(proof(key, b"server", hello, reply_raw), theirs)]
            if not matched:
                raise AuthenticationError(
                    "the server does not hold our cluster key, or the handshake was altered "
                    "on the way")
            _send(conn, {"proof": proof(matched[0], b"client", hello, reply_raw)})
            if (await inbox.get()).get("ok") is not True:
                raise AuthenticationError("the server refused our proof")
            authenticated = True
        inbox.release()
        agreed = asked and authenticated and reply.get("pickle") is True
        token = transcript_token(hello, reply_raw)
        shm = agree(ours, reply.get("shm"), config.shared_memory, token, True, authenticated,
                    conn.raw_socket())
        return PeerInfo(server_node, str(reply.get("address", "")), authenticated, agreed, role,
                        token, link_token, shm)


async def server_handshake(
    conn: Connection, config: TransportConfig, node: str, listen_address: str
) -> PeerInfo:
    """Run the server side; on failure tells the client why (when it can) and raises."""
    try:
        async with config.clock.timeout(config.handshake_timeout):
            inbox = _Inbox(conn)
            hello, hello_raw = await inbox.get_raw()
            version = hello.get("netlet")
            if not _is_version(version):
                _send(conn, {"error": "version",
                             "message": f"server speaks netlet protocol {PROTOCOL_VERSION}"})
                raise VersionMismatch(f"client speaks protocol {version!r}")
            client_node = str(hello.get("node", ""))
            role = "direct" if hello.get("role") == "direct" else "link"
            _bytes(hello, "nonce", 32)
            claimed = hello.get("link")
            link_token = claimed if role == "direct" and isinstance(claimed, bytes) else b""
            reply: dict[str, Any] = {"netlet": PROTOCOL_VERSION, "node": node,
                                     "address": listen_address}
            ours = _offer(conn, config)
            if ours is not None and "shm" in hello:
                reply["shm"] = ours
            if config.key is None:
                reply_raw = _send(conn, {**reply, "auth": None, "pickle": False})
                inbox.release()
                token = transcript_token(hello_raw, reply_raw)
                shm = agree(ours, hello.get("shm"), config.shared_memory, token, False, False,
                            conn.raw_socket())
                return PeerInfo(client_node, str(hello.get("address", "")), False, False, role,
                                token, link_token, shm)
            if hello.get("auth") != _AUTH:
                _send(conn, {"error": "auth", "message": "this node requires the cluster key"})
                raise AuthenticationError("client offered no authentication")
            agreed = hello.get("pickle") is True and config.allow_pickle
            reply_raw = _send(conn, {**reply, "auth": _AUTH, "nonce": secrets.token_bytes(32),
                                     "pickle": agreed})
            key = _server_key(config, hello.get("key_id"))
            _send(conn, {"proof": proof(key, b"server", hello_raw, reply_raw)})
            answer = await inbox.get()
            expected = proof(key, b"client", hello_raw, reply_raw)
            if not hmac.compare_digest(expected, _bytes(answer, "proof", 32)):
                _send(conn, {"error": "auth", "message": "wrong cluster key"})
                raise AuthenticationError(
                    "client does not hold the cluster key, or the handshake was altered "
                    "on the way")
            _send(conn, {"ok": True})
            inbox.release()
            token = transcript_token(hello_raw, reply_raw)
            shm = agree(ours, hello.get("shm"), config.shared_memory, token, False, True,
                        conn.raw_socket())
            return PeerInfo(client_node, str(hello.get("address", "")), True, agreed, role,
                            token, link_token, shm)
    except TimeoutError:
        raise AuthenticationError("handshake timed out") from None
    except asyncio.CancelledError:  # the node is closing: do not leave the socket open
        conn.close()
        raise
