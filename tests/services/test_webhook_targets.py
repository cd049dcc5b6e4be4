"""Webhook targets: well-formed http(s) URLs to public addresses only (one rule for the API and the worker)."""

from __future__ import annotations

import ipaddress

import pytest

from services.errors import ConfigError
from services.webhook_targets import address_problem, check_webhook_url, parse_target, public_addresses


def resolver(*addresses: str):
    def resolve(host: str, port: int):
        return [ipaddress.ip_address(address) for address in addresses]

    return resolve


def unresolvable(host: str, port: int):
    raise OSError(f"Name or service not known: {host}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "must be an http:// or https:// URL"),
        ("http:///path", "must be an http:// or https:// URL with a host"),
        ("http://a..b/", "invalid host name 'a..b'"),
        ("http://-x.example.com/", "invalid host name"),
        ("http://exa mple.com/", "invalid host name"),
        ("http://[::1/x", "is not a valid URL"),
        ("http://xn--/", "invalid host name"),
        ("http://é..com/", "is not a valid URL (Invalid IDNA hostname"),
        ("http://example.com:99999/", "outside 1–65535"),
        ("http://example.com:0/", "outside 1–65535"),
        ("http://2130706433/", "neither a dotted IPv4 address nor a host name"),
        ("http://0x7f000001/", "neither a dotted IPv4 address nor a host name"),
        ("http://127.1/", "neither a dotted IPv4 address nor a host name"),
    ],
)
def test_malformed_urls_are_refused_with_a_clear_message(url, message):
    with pytest.raises(ConfigError, match="webhook_url") as caught:
        check_webhook_url(url, allow_private=True)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("https://192.168.0.7/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),  # a cloud metadata service
        ("http://[fe80::1]/hook", "link-local"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4-mapped
        ("http://100.64.0.1/hook", "non-public"),  # carrier-grade NAT
        ("http://localhost:9000/hook", "loopback"),
        ("http://api.localhost/hook", "loopback"),
    ],
)
def test_private_targets_are_refused_unless_allowed(url, kind):
    with pytest.raises(ConfigError, match=f"{kind} address") as caught:
        check_webhook_url(url, allow_private=False, resolver=unresolvable)
    assert "ADVAUDIT_WEBHOOK_ALLOW_PRIVATE=true" in str(caught.value)
    assert check_webhook_url(url, allow_private=True).url.scheme in ("http", "https")


def test_a_name_is_judged_by_every_address_it_resolves_to():
    target = parse_target("https://Hooks.Example.com/advaudit")
    assert (target.host, target.port, target.address) == ("hooks.example.com", 443, None)
    assert parse_target("http://éé.com/x").host == "xn--9caa.com"  # the name as it is resolved
    assert public_addresses(target, must_resolve=True, resolver=resolver("93.184.215.14")) == [
        ipaddress.ip_address("93.184.215.14")
    ]
    with pytest.raises(ConfigError, match="resolves to 10.0.0.5, which is a private address"):
        public_addresses(target, must_resolve=True, resolver=resolver("93.184.215.14", "10.0.0.5"))
    # stored while DNS cannot answer; the delivery resolves it again and refuses what it cannot resolve
    assert public_addresses(target, must_resolve=False, resolver=unresolvable) == []
    with pytest.raises(ConfigError, match="cannot resolve the webhook host hooks.example.com"):
        public_addresses(target, must_resolve=True, resolver=unresolvable)


def test_public_addresses_pass():
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"):
        assert address_problem(ipaddress.ip_address(address)) is None
    assert address_problem(ipaddress.ip_address("64:ff9b::a00:1")) == "private"  # NAT64 of 10.0.0.1
    target = check_webhook_url("http://93.184.215.14:8443/x", allow_private=False)
    assert (target.port, str(target.address)) == (8443, "93.184.215.14")
