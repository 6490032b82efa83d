"""DNS for federation: SRV records and host addresses, behind a small interface.

Server discovery (Server-Server API, "Resolving server names") needs two kinds of
lookup: SRV records (``_matrix-fed._tcp.<host>``) and a host's IP addresses
(CNAME, AAAA or A). ``Dns`` is that interface, so tests can answer with fixed
records instead of the network; ``SystemDns`` is the real one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.rdtypes.IN.SRV

logger = logging.getLogger(__name__)

# Bounded, TTL-respecting cache of SRV answers (dnspython's own LRU cache).
SRV_CACHE_ENTRIES = 10_000
# How long one SRV lookup may take, all retries included.
SRV_LOOKUP_SECONDS = 10.0


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    # The target host name, without the trailing dot; "." means "no service here".
    target: str


class Dns(Protocol):
    async def srv(self, name: str) -> list[SrvRecord]:
        """The SRV records of ``name``; empty when there are none."""
        ...

    async def addresses(self, host: str) -> list[str]:
        """The IP addresses of ``host`` (CNAMEs followed); raises OSError if it has none."""
        ...


class SystemDns:
    """SRV through dnspython's asyncio resolver; addresses through the system's getaddrinfo.

    getaddrinfo (rather than dnspython) for A/AAAA keeps /etc/hosts and the
    system's resolver configuration working, as for every other program.
    dnspython (3 MiB resident) is imported at the first SRV lookup, so a server
    that never federates does not carry it.
    """

    def __init__(self) -> None:
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _srv_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            import dns.asyncresolver
            import dns.resolver

            self._resolver = dns.asyncresolver.Resolver()
            self._resolver.cache = dns.resolver.LRUCache(SRV_CACHE_ENTRIES)
        return self._resolver

    async def srv(self, name: str) -> list[SrvRecord]:
        import dns.exception
        import dns.rdtypes.IN.SRV
        import dns.resolver

        try:
            resolver = self._srv_resolver()
            answer = await resolver.resolve(name, "SRV", lifetime=SRV_LOOKUP_SECONDS)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as error:
            # A failing DNS server: behave as if there were no record; the A/AAAA
            # lookup that follows fails too if DNS is really down.
            logger.warning("SRV lookup of %s failed: %s", name, error)
            return []
        return [_srv_record(rdata) for rdata in answer if isinstance(rdata, dns.rdtypes.IN.SRV.SRV)]

    async def addresses(self, host: str) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _srv_record(rdata: dns.rdtypes.IN.SRV.SRV) -> SrvRecord:
    target = rdata.target.to_text(omit_final_dot=True) or "."
    return SrvRecord(rdata.priority, rdata.weight, rdata.port, target)


def order_srv_records(records: list[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """The order in which to try ``records`` (RFC 2782, "Usage rules").

    Lowest priority first; within one priority, a weighted random order in which
    a record's chance to come next is proportional to its weight (weight-0
    records get a small chance, as the RFC's selection algorithm gives them).
    """
    ordered: list[SrvRecord] = []
    for priority in sorted({record.priority for record in records}):
        remaining = [record for record in records if record.priority == priority]
        while remaining:
            weights = [record.weight + 0.01 for record in remaining]
            chosen = rng.choices(range(len(remaining)), weights=weights)[0]
            ordered.append(remaining.pop(chosen))
    return ordered
