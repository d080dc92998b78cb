"""What every request passes before any route: the Host check and the payload limit (a plain ASGI layer).

Host check (DNS rebinding): a web page on `attacker.example` whose name is made to resolve to
127.0.0.1 reaches a loopback-bound server as a same-origin request, so CORS cannot stop it;
its `Host` header still says `attacker.example`. A loopback-bound server therefore answers only
`localhost`, `127.0.0.1` and `[::1]` (any port) and the names given with `--allowed-host`;
any other Host gets 403. A request without a Host header (HTTP/1.0; browsers always send one)
passes. Payload limit: a declared `content-length` over the limit is refused at once; a body
without one (chunked) is read up to the limit, then refused or replayed to the route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codefoundry.serve.errors import ServeError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_name(host: str) -> str:
    """`Host` header → the name without its port, lower-cased; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def allowed_hosts(extra: Iterable[str]) -> frozenset[str]:
    """The loopback names plus `extra` (names, `name:port`, IPv4 or bare IPv6 addresses), normalised."""
    names = set(LOOPBACK_NAMES)
    for given in extra:
        try:
            address = ipaddress.ip_address(given.strip().strip("[]"))
        except ValueError:
            names.add(host_name(given))
        else:
            names.add(f"[{address.compressed}]" if address.version == 6 else address.compressed)
    return frozenset(names)


class RequestGuard:
    """ASGI middleware: `hosts` None = any Host (not bound to loopback)."""

    def __init__(self, app: ASGIApp, payload_limit: int, hosts: frozenset[str] | None) -> None:
        self.app, self.payload_limit, self.hosts = app, payload_limit, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = size = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"content-length":
                size = value.decode("latin-1")
        if self.hosts is not None and host is not None and host_name(host) not in self.hosts:
            shown = host if len(host) <= 100 else host[:100] + "…"
            error = ServeError("host_not_allowed", f"this server does not answer to Host {shown!r}; start it with "
                                                   f"--allowed-host NAME to accept a name beside localhost")
            await error.response()(scope, receive, send)
            return
        if size is not None:
            if size.isdigit() and int(size) > self.payload_limit:
                await self._too_large(size)(scope, receive, send)
                return
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            messages, total = [], 0
            while True:
                message = await receive()
                messages.append(message)
                total += len(message.get("body", b""))
                if total > self.payload_limit:
                    await self._too_large(f"more than {total}")(scope, receive, send)
                    return
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            receive = _replay(messages, receive)
        await self.app(scope, receive, send)

    def _too_large(self, size: str):
        return ServeError("payload_too_large", f"payload of {size} bytes exceeds the limit of "
                                               f"{self.payload_limit} bytes").response()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()
    return replayed
