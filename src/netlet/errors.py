"""The whole netlet exception tree, branched by what the caller can do about it.

::

    NetletError
    ├── ConfigError(ValueError)             bad settings or arguments given locally
    │   └── InsecureListenError             listening beyond loopback with no key
    ├── ProtocolError(ValueError)           the peer sent something we refuse
    │   ├── FrameTooLarge                   a frame over the size limit
    │   ├── DecodeError                     bytes that are not a valid netlet value
    │   └── HandshakeError                  the opening exchange failed
    │       ├── VersionMismatch             peers speak different protocol versions
    │       └── AuthenticationError         a peer could not prove it holds the key
    ├── EncodeError(TypeError)              a value netlet cannot send
    ├── NetletConnectionError(ConnectionError)
    │   ├── PeerUnreachable                 could not connect, or no handshake came back
    │   ├── ConnectionLost                  the connection dropped with calls pending
    │   └── WorkerLost                      a task's worker died more often than it may retry
    ├── CallTimeout(TimeoutError)           no answer within the call's timeout
    ├── CallCancelled                       another party ended the call while it waited
    ├── NotExposed(AttributeError)          the name is not exposed for remote calls
    ├── BadArguments(TypeError)             the call's arguments do not fit the method
    ├── NoSuchObject(LookupError)           nothing is served under that name
    ├── RemoteError                         the remote code raised something we
    │                                       cannot rebuild safely; carries its text
    ├── NodeClosed                          the local node is shut down
    ├── ChannelClosed                       the channel was closed (see netlet.channel)
    ├── ChannelTimeout(TimeoutError)        a channel operation's timeout passed
    ├── WouldBlock                          a *_nowait operation could not finish at once
    └── TaskletExit                         raised inside a tasklet that was cancelled

Every exception that crosses the wire keeps its remote traceback as text in
``remote_traceback`` (and as a PEP 678 note), so the caller sees where it
happened without netlet ever unpickling anything from the peer.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadArguments",
    "CallCancelled",
    "CallTimeout",
    "ChannelClosed",
    "ChannelTimeout",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "FrameTooLarge",
    "HandshakeError",
    "InsecureListenError",
    "NetletConnectionError",
    "NetletError",
    "NoSuchObject",
    "NodeClosed",
    "NotExposed",
    "PeerUnreachable",
    "ProtocolError",
    "RemoteError",
    "TaskletExit",
    "VersionMismatch",
    "WorkerLost",
    "WouldBlock",
]


class NetletError(Exception):
    """Root of every error netlet raises on purpose."""


class ConfigError(NetletError, ValueError):
    """A setting or argument given to netlet locally is invalid."""


class InsecureListenError(ConfigError):
    """Refusing to listen beyond loopback without a cluster key (or ``insecure=True``)."""


class ProtocolError(NetletError, ValueError):
    """The peer sent bytes or a message that breaks the protocol; the connection is closed."""


class FrameTooLarge(ProtocolError):
    """A frame announced a size above the configured limit."""


class DecodeError(ProtocolError):
    """Bytes that do not decode to an allowed netlet value (garbage, unknown type, limit)."""


class HandshakeError(ProtocolError):
    """The opening exchange (version, codec, authentication) failed."""


class VersionMismatch(HandshakeError):
    """The two ends speak incompatible protocol versions."""


class AuthenticationError(HandshakeError, PermissionError):
    """A peer failed to prove it holds the cluster key (or did not answer in time)."""


class EncodeError(NetletError, TypeError):
    """A value has a type netlet cannot put on the wire (or exceeds a limit)."""


class NetletConnectionError(NetletError, ConnectionError):
    """The link to a peer failed; the call may or may not have run remotely."""


class PeerUnreachable(NetletConnectionError):
    """No connection could be made to the address, or the peer took it and never
    completed the handshake (frozen, overloaded, or not a netlet node)."""


class ConnectionLost(NetletConnectionError):
    """The connection dropped while the call was pending."""


class WorkerLost(NetletConnectionError):
    """The worker running a task died, and the task used up its retries."""


class CallTimeout(NetletError, TimeoutError):
    """No reply came within the call's timeout; the remote side was asked to cancel."""


class CallCancelled(NetletError):
    """Someone other than the caller ended the call while it waited.

    A channel ``receive`` ended by ``cancel_receive``, or a cluster task an
    operator cancelled from the head before it started (the client's future then
    ends cancelled). Cancelling your own call is Python's own ``CancelledError``
    (``concurrent.futures`` or ``asyncio``), as for any future: the peer is told
    to stop, and no ``CallCancelled`` is raised.
    """


class NotExposed(NetletError, AttributeError):
    """The method is private, a dunder, or not marked with ``@expose``."""


class BadArguments(NetletError, TypeError):
    """The arguments do not match the remote method's signature."""


class NoSuchObject(NetletError, LookupError):
    """No object is served under that name on the node."""


class NodeClosed(NetletError, RuntimeError):
    """The local node was closed; no more calls can be made through it."""


class ChannelClosed(NetletError):
    """The channel is closed: no more values will come through it."""


class ChannelTimeout(NetletError, TimeoutError):
    """A channel send or receive did not complete within its timeout; nothing moved."""


class WouldBlock(NetletError):
    """A non-blocking channel operation could not complete at once; nothing moved."""


class TaskletExit(NetletError):
    """Raised inside a cancelled tasklet where it blocks on a channel."""


class RemoteError(NetletError):
    """The remote code raised an exception that cannot be rebuilt here safely.

    ``remote_type`` is its qualified type name and ``remote_traceback`` the text
    of the traceback where it was raised.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.remote_type, self.message, self.remote_traceback))
