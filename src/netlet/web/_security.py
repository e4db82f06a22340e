"""Who may see the dashboard and who may act on it.

* It binds loopback by default. Beyond loopback it refuses to start without a
  token (given, or derived from the cluster key), and then every request
  carries it: ``Authorization: Bearer <token>``, or the cookie set when a
  browser first opens the URL with ``?token=<token>`` (the token then leaves
  the address bar at once). The API and the event stream are checked alike.
  The cookie holds a random session of this process, not the token (a browser
  sends it to every port of the host), under a name of its own port (two
  dashboards of one host would overwrite each other's).
* On loopback the Host header must name a loopback host: a web page
  elsewhere cannot reach it by rebinding its own name to 127.0.0.1.
* It is read-only unless started with control on, which needs a token even on
  loopback. A control action is a POST carrying the token and a CSRF token
  (an HMAC of the token: the pages put it in their forms), from no other
  origin.
* Every page is served with a strict Content-Security-Policy: only the
  dashboard's own script and style run; what members report is escaped by the
  templates and could not run anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from netlet.errors import ConfigError

__all__ = ["COOKIE", "Guard", "csrf_token", "derive_token", "is_loopback", "new_token"]

COOKIE = "netlet_dashboard"
"""The cookie's name, followed by ``_<port>`` of the dashboard."""
HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def derive_token(key: bytes) -> str:
    """The dashboard token of a cluster key: whoever holds the key can compute it."""
    return hmac.new(key, b"netlet dashboard token v1", hashlib.sha256).hexdigest()[:40]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"netlet dashboard csrf v1", hashlib.sha256).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> str | None:
    if token is None:
        return None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError("a dashboard token is at least 16 printable ASCII characters "
                          "without spaces (or leave it out to derive one from the cluster key)")
    return token


class Guard:
    """ASGI middleware: the token on every request, loopback Host names, headers."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app, self.token, self.loopback = app, token, loopback
        self.csrf = csrf_token(token) if token else ""
        self.session = secrets.token_urlsafe(32)
        """What the cookie holds: worth this process's token while it runs, nothing more."""

    def allowed_host(self, host: str) -> bool:
        if not self.loopback:
            return True  # beyond loopback the token is what protects it
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def presented(self, scope: Scope) -> tuple[str | None, str]:
        """What the request carries, and where: "bearer", "query" or "cookie"."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), "bearer"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query:
            return query["token"], "query"
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:
            return None, "cookie"
        morsel = jar.get(_cookie_name(scope))
        return (morsel.value if morsel is not None else None), "cookie"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                     if k.lower() == b"host"), "")
        if not self.allowed_host(host):
            await _plain(send, 421, "this dashboard answers only to a loopback host name "
                                    "(127.0.0.1, localhost, [::1])")
            return
        if self.token is not None:
            given, source = self.presented(scope)
            expected = self.session if source == "cookie" else self.token
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                await _plain(send, 401, "this dashboard needs its token: open the URL it "
                                        "printed (with ?token=...), or send Authorization: "
                                        "Bearer <token>")
                return
            if source == "query" and scope["method"] == "GET" and not scope["path"].startswith(
                    ("/api/", "/metrics", "/stream")):
                await self._set_cookie(scope, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _set_cookie(self, scope: Scope, send: Send) -> None:
        """Take the token out of the address bar; an HttpOnly, same-site session cookie."""
        query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
                 if k != "token"]
        # Quoted: the decoded path may hold CR LF or characters beyond latin-1.
        location = quote(scope["path"]) + ("?" + urlencode(query) if query else "")
        cookie = f"{_cookie_name(scope)}={self.session}; Path=/; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode("latin-1")),
                                (b"set-cookie", cookie.encode("latin-1")), *HEADERS]})
        await send({"type": "http.response.body", "body": b""})


def _cookie_name(scope: Scope) -> str:
    server = scope.get("server")
    return f"{COOKIE}_{server[1]}" if server else COOKIE


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})
