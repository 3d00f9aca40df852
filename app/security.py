"""What guards the web server (``launch.py serve``) beyond the optional login: ASGI middleware on
Gradio's FastAPI app.

- :class:`HostGuard` — DNS rebinding: a request whose ``Host`` (or ``Origin``, when sent) is not
  the bound address, a localhost name or one of ``--allowed-hosts`` gets 403, so a web page on
  another site cannot drive the API through a name that resolves to this machine.
- :class:`LoginLimiter` — after :data:`MAX_FAILURES` wrong passwords from one client within
  :data:`WINDOW_S`, ``/login`` answers 429 for :data:`LOCKOUT_S`.
- :class:`ApiInfoStripper` — Gradio embeds the API schema in every HTML page, the login page
  included; it is replaced by an empty schema (the app shows no API page).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
MAX_FAILURES = 5
WINDOW_S = 60.0
LOCKOUT_S = 60.0
LOGIN_PATHS = frozenset({"/login", "/login/"})


def allowed_host_names(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a request may use: localhost names, the bound address (for a wildcard
    bind also this machine's name), and ``extra`` (``--allowed-hosts``; ``*`` allows any)."""
    names = set(LOCAL_NAMES)
    bound = bound.strip().lower().strip("[]")
    if bound in WILDCARD_BINDS:
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    else:
        names.add(bound)
    for item in extra:
        names.update(n.strip().lower().strip("[]") for n in item.split(",") if n.strip())
    return frozenset(names)


def _host_of(value: str) -> str:
    """The host name of a ``Host`` header value (without port; IPv6 without brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether a host name is allowed (``.example.org`` entries allow subdomains)."""
    if "*" in allowed or host in allowed:
        return True
    return any(a.startswith(".") and (host.endswith(a) or host == a[1:]) for a in allowed)


async def _respond(send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class HostGuard:
    """403 for HTTP and websocket requests with a foreign ``Host`` or ``Origin``."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            origin = _header(scope, b"origin")
            bad = host is None or not host_allowed(_host_of(host), self.allowed)
            if not bad and origin and origin != "null":
                bad = not host_allowed((urlsplit(origin).hostname or "").lower(), self.allowed)
            if bad:
                logger.warning("refused a request for host %r (origin %r); see --allowed-hosts", host, origin)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await _respond(send, 403, "forbidden host or origin (see launch.py serve --allowed-hosts)")
                return
        await self.app(scope, receive, send)


class LoginLimiter:
    """Too many wrong passwords from one client: ``/login`` refuses for a while (429).

    An attempt takes a slot before it is checked: the failures in the window plus the attempts
    being checked never exceed ``max_failures``, so concurrent guesses get no more tries than
    sequential ones (a burst beyond that is answered 429 at once)."""

    def __init__(self, app: ASGIApp, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 lockout_s: float = LOCKOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.max_failures, self.window_s, self.lockout_s = app, max_failures, window_s, lockout_s
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._checking: collections.Counter[str] = collections.Counter()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def _client(self, scope: Scope) -> str:
        client = scope.get("client")
        return client[0] if client else "?"

    def _admit(self, client: str, now: float) -> float | None:
        """Take a slot for an attempt; else the seconds until one may be free."""
        with self._lock:
            until = self._locked_until.get(client, 0.0)
            if until > now:
                return until - now
            recent = self._recent(client, now)
            if len(recent) + self._checking[client] >= self.max_failures:
                return (recent[0] + self.window_s - now) if recent else 1.0
            self._checking[client] += 1
            return None

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        recent = self._failures.setdefault(client, collections.deque())
        while recent and recent[0] < now - self.window_s:
            recent.popleft()
        return recent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        client = self._client(scope)
        wait = self._admit(client, self.clock())
        if wait is not None:
            await _respond(send, 429, "too many wrong passwords; try again later",
                           [(b"retry-after", str(int(wait) + 1).encode())])
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._done(client, self.clock(), failed=not status or status[0] >= 400)

    def _done(self, client: str, now: float, *, failed: bool) -> None:
        with self._lock:
            self._checking[client] -= 1
            if not self._checking[client]:
                del self._checking[client]
            if not failed:
                return
            recent = self._recent(client, now)
            recent.append(now)
            if len(recent) >= self.max_failures:
                self._locked_until[client] = now + self.lockout_s
                recent.clear()
                logger.warning("login refused for %s for %.0f s after %d wrong passwords",
                               client, self.lockout_s, self.max_failures)


_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
_EMPTY_API_INFO = b"window.gradio_api_info = " + json.dumps(
    {"named_endpoints": {}, "unnamed_endpoints": {}}).encode() + b";</script>"


class ApiInfoStripper:
    """Pages go out without the API schema Gradio embeds in them (the login page included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if not headers.get(b"content-type", b"").startswith(b"text/html"):
                    start = None
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _API_INFO.sub(lambda _: _EMPTY_API_INFO, b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def guard_middleware(host: str, allowed_hosts: Iterable[str] = (), *, login: bool = False) -> list[Any]:
    """The ``middleware=`` list for Gradio's FastAPI app (``launch(app_kwargs=...)``)."""
    from starlette.middleware import Middleware

    allowed = allowed_host_names(host, allowed_hosts)
    stack = [Middleware(HostGuard, allowed=allowed), Middleware(ApiInfoStripper)]
    if login:
        stack.append(Middleware(LoginLimiter))
    logger.info("serving for hosts %s", ", ".join(sorted(allowed)))
    return stack
