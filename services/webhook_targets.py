"""Where a webhook may be POSTed: an http(s) URL whose host is a public address (a guard against SSRF).

One parser (httpx's, the one the delivery itself uses, so the check and the request never read a URL
differently) and one address rule, for the API that stores a URL and the worker that delivers to it. The
worker resolves the host again before every attempt, since a DNS answer can change after the URL was stored.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from services.errors import ConfigError

SCHEMES = ("http", "https")
EXAMPLE = "https://hooks.example.com/advaudit"
ALLOW_PRIVATE_SETTING = "ADVAUDIT_WEBHOOK_ALLOW_PRIVATE=true"
LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
MAX_HOST_CHARS = 253
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv6 addresses that stand for an embedded IPv4 address

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed webhook URL: `host` is ASCII (an IP literal or an IDNA-encoded name)."""

    url: httpx.URL
    host: str
    port: int
    address: IPAddress | None  # set when the host is an IP literal


def _refuse(url: str, why: str) -> ConfigError:
    return ConfigError(f"webhook_url {url!r} {why}")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_name(url: str, host: str) -> None:
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > MAX_HOST_CHARS or not all(LABEL.match(label) for label in labels):
        raise _refuse(
            url,
            f"has an invalid host name {host!r}: labels of letters, digits and hyphens, "
            "separated by single dots",
        )
    try:  # getaddrinfo reads 2130706433, 127.1 or 0x7f000001 as IPv4 addresses: no such disguises
        int(labels[-1], 0)
    except ValueError:
        return
    raise _refuse(url, f"has a host {host!r} that is neither a dotted IPv4 address nor a host name")


def parse_target(url: str) -> WebhookTarget:
    """The URL's parts, checked: http(s), a valid host name or IP address, a port in 1–65535 (ConfigError)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:
        raise _refuse(url, f"is not a valid URL ({error}); e.g. {EXAMPLE}") from None
    if parsed.scheme not in SCHEMES or not host:
        raise _refuse(url, f"must be an http:// or https:// URL with a host, e.g. {EXAMPLE}")
    if port is not None and not 1 <= port <= 65535:
        raise _refuse(url, f"has port {port}, outside 1–65535")
    address = _literal(host)
    if address is None:
        _check_name(url, host)
    return WebhookTarget(
        url=parsed, host=host, port=port or (443 if parsed.scheme == "https" else 80), address=address
    )


def address_problem(address: IPAddress) -> str | None:
    """Why a webhook may not go to `address` (loopback, private, …), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for kind, matches in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
    ):
        if matches:
            return kind
    return None if address.is_global else "non-public"


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (OSError when it does not)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An AF_INET/AF_INET6 sockaddr starts with the address as a string (typeshed allows any socket's int).
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found))


def public_addresses(
    target: WebhookTarget, *, must_resolve: bool, resolver: Resolver | None = None
) -> list[IPAddress]:
    """The addresses a POST to `target` may connect to; ConfigError if any of them is not public.

    A name that does not resolve gives [] when `must_resolve` is False (the API stores it; the delivery checks
    it again), else a ConfigError.
    """
    if target.address is not None:
        addresses = [target.address]
    elif target.host.rstrip(".") == "localhost" or target.host.rstrip(".").endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1")]  # RFC 6761: always loopback, whatever DNS says
    else:
        try:
            addresses = (resolver or resolve)(target.host, target.port)
        except (OSError, UnicodeError) as error:
            if not must_resolve:
                return []
            raise ConfigError(f"cannot resolve the webhook host {target.host}: {error}") from None
        if not addresses and must_resolve:
            raise ConfigError(f"the webhook host {target.host} resolves to no address")
    for address in addresses:
        kind = address_problem(address)
        if kind is not None:
            shown = (
                target.host if target.address is not None else f"{target.host} resolves to {address}, which"
            )
            article = "an" if kind[0] in "aeiou" else "a"
            raise ConfigError(
                f"webhook host {shown} is {article} {kind} address: webhooks go to public addresses only "
                f"(set {ALLOW_PRIVATE_SETTING} to allow private ones)"
            )
    return addresses


def check_webhook_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> WebhookTarget:
    """Validate a webhook URL before it is stored (ConfigError → 422): its form, and its host unless allowed."""
    target = parse_target(url)
    if not allow_private:
        public_addresses(target, must_resolve=False, resolver=resolver)
    return target
