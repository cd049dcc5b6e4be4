"""Which Host names the server answers: the guard against DNS rebinding.

A web page on attacker.example can make its name resolve to 127.0.0.1 and then talk to a loopback server
as if it were its own origin: the browser sends `Host: attacker.example` and a matching `Origin`, so a
same-origin check alone passes. Refusing every Host name the operator did not expect closes that door.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


def host_name(header: str | None) -> str | None:
    """The lower-case name of a Host header (`[::1]:8000` → `::1`); None when missing or malformed."""
    if not header or any(char in header for char in "/\\@?# \t"):
        return None
    try:
        parts = urlsplit(f"//{header}")
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts.hostname or None


def is_loopback(host: str | None) -> bool:
    """True for localhost / 127.x / ::1; False for wildcard or public addresses, and when unknown (None)."""
    if host is None:
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    """The names a request's Host may carry; `allowed` None means any (auth is on and no list was set)."""

    allowed: frozenset[str] | None

    def allows(self, header: str | None) -> bool:
        if self.allowed is None:
            return True
        name = host_name(header)
        if name is None:
            return False
        if name in self.allowed or is_loopback(name):
            return True
        return any(pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.allowed)

    def describe(self) -> str:
        return ", ".join(sorted(self.allowed or ()))


def host_policy(*, auth_required: bool, allowed_hosts: Iterable[str], listen_host: str | None) -> HostPolicy:
    """Checked when auth is off or a list is set: the loopback names, the listen address and the list."""
    configured = {name.strip().lower() for name in allowed_hosts if name.strip()}
    if "*" in configured or (auth_required and not configured):
        return HostPolicy(None)
    names = set(LOOPBACK_NAMES) | configured
    listen = (listen_host or "").strip().strip("[]").lower()
    if listen not in WILDCARD_ADDRESSES:
        names.add(listen)
    return HostPolicy(frozenset(names))


class HostGuard:
    """ASGI middleware: a request whose Host the policy refuses gets a 400 problem+json and goes no further."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"host"), None)
        if self.policy.allows(header):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        detail = (
            f"this server does not answer to the host name {header!r}: it answers only "
            f"{self.policy.describe()} (add more with ADVAUDIT_ALLOWED_HOSTS); a request for another "
            "name may come from a web page whose name was made to resolve to this server (DNS rebinding)"
        )
        body = json.dumps(
            {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": detail}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
