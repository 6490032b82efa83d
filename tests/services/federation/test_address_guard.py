"""The SSRF guard: which addresses outbound federation may connect to."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ranvier.services.federation.address_guard import (
    AddressDenied,
    GuardedResolver,
    check_ip_literal,
    is_denied,
)
from tests.services.federation.support import FakeDns

DENIED = [
    "127.0.0.1",
    "127.255.0.7",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "169.254.169.254",  # cloud metadata
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.10",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    # IPv4 inside IPv6 (CVE-2021-21392): mapped, 6to4, NAT64, compatible, local NAT64.
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",
    "2002:c0a8:101::1",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "::127.0.0.1",
    "64:ff9b:1::8.8.8.8",
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize("text", DENIED)
def test_private_and_special_addresses_are_denied(text: str) -> None:
    assert is_denied(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_are_allowed(text: str) -> None:
    assert not is_denied(ipaddress.ip_address(text))


def test_ip_literals_are_checked_with_or_without_brackets() -> None:
    with pytest.raises(AddressDenied):
        check_ip_literal("127.0.0.1", allow_private=False)
    with pytest.raises(AddressDenied):
        check_ip_literal("[::ffff:127.0.0.1]", allow_private=False)
    check_ip_literal("127.0.0.1", allow_private=True)
    check_ip_literal("8.8.8.8", allow_private=False)
    check_ip_literal("example.org", allow_private=False)  # names are checked after DNS


async def test_resolver_drops_denied_addresses_and_keeps_public_ones() -> None:
    dns = FakeDns(hosts={"mixed.test": ["10.0.0.1", "8.8.8.8", "::1", "2606:4700::1"]})
    results = await GuardedResolver(dns, allow_private=False).resolve("mixed.test", 8448)
    assert [(result["host"], result["port"], result["family"]) for result in results] == [
        ("8.8.8.8", 8448, socket.AF_INET),
        ("2606:4700::1", 8448, socket.AF_INET6),
    ]
    assert all(result["hostname"] == "mixed.test" for result in results)


async def test_resolver_refuses_a_host_with_only_private_addresses() -> None:
    dns = FakeDns(hosts={"inside.test": ["127.0.0.1", "::ffff:192.168.0.1"]})
    with pytest.raises(AddressDenied, match=r"inside\.test"):
        await GuardedResolver(dns, allow_private=False).resolve("inside.test", 443)


async def test_resolver_keeps_private_addresses_when_allowed() -> None:
    dns = FakeDns(hosts={"inside.test": ["127.0.0.1"]})
    results = await GuardedResolver(dns, allow_private=True).resolve("inside.test", 443)
    assert [result["host"] for result in results] == ["127.0.0.1"]
