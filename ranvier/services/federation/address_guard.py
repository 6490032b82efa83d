"""The SSRF guard of outbound federation: no connection to private addresses.

A remote server name, its ``.well-known`` delegation and its SRV records are
all chosen by whoever runs that server, so they can point at our own network
(127.0.0.1, 10.0.0.0/8, the cloud metadata address 169.254.169.254...). Every
address is checked when it is about to be connected to, after DNS, so a name
that resolves to a private address is refused too (Synapse's IP range
blocklist, FEDERATION-MODELS.md §3.12). IPv6 forms that embed an IPv4 address
(IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo) are checked by that IPv4
address: CVE-2021-21392 bypassed Synapse's blocklist with ``::ffff:127.0.0.1``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult

from ranvier.services.federation.dns import Dns

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not reachable on the public internet, or not meant to be connected to.
# ``is_global`` covers most of these; the list keeps the guard independent of
# how a Python version classifies each range.
DENIED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918 private
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata services live here)
        "172.16.0.0/12",  # RFC 1918 private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918 private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressDenied(OSError):
    """Every address of a host is private: outbound federation would be an SSRF."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the transition forms."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address, de-obfuscated
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_denied(address: IPAddress) -> bool:
    """Whether outbound federation must not connect to ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None and is_denied(embedded):
            return True
    if any(address in network for network in DENIED_NETWORKS):
        return True
    return not address.is_global


def check_ip_literal(host: str, *, allow_private: bool) -> None:
    """Refuse a URL host that is an IP literal aiohttp would connect to without resolving."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a host name: GuardedResolver checks what it resolves to
    if not allow_private and is_denied(address):
        raise AddressDenied(f"{host} is a private address; outbound federation refused")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops denied addresses, so no connection to them is
    opened: private ones (:func:`is_denied`) unless ``allow_private``, or what
    ``deny`` says (URL previews' own list). No address left raises ``refused(host)``."""

    def __init__(
        self,
        dns: Dns,
        *,
        allow_private: bool = False,
        deny: Callable[[IPAddress], bool] | None = None,
        refused: Callable[[str], Exception] | None = None,
    ) -> None:
        self._dns = dns
        self._deny = deny if deny is not None else (_allow_all if allow_private else is_denied)
        self._refused = refused or _no_public_address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for text in await self._dns.addresses(host):
            address = ipaddress.ip_address(text)
            if self._deny(address):
                continue
            results.append(_resolve_result(host, text, address, port))
        if not results:
            raise self._refused(host)
        return results

    async def close(self) -> None:
        pass


def _allow_all(address: IPAddress) -> bool:
    return False


def _no_public_address(host: str) -> Exception:
    return AddressDenied(f"{host} has no public address; outbound federation refused")


def _resolve_result(hostname: str, text: str, address: IPAddress, port: int) -> ResolveResult:
    return ResolveResult(
        hostname=hostname,
        host=text,
        port=port,
        family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )
