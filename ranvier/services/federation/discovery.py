"""Server discovery: where to connect for a server name, and which name to expect.

Server-Server API, "Resolving server names", steps 1-6: IP literals and explicit
ports are used as they are; otherwise ``/.well-known/matrix/server`` may
delegate to another name (resolved the same way, minus .well-known), else SRV
``_matrix-fed._tcp`` then the deprecated ``_matrix._tcp``, else port 8448. Each
step fixes the ``Host`` header and the name the certificate must be valid for.

The .well-known answers are cached as the spec recommends: the response's
Cache-Control/Expires, else 24 hours (with ±10 % jitter so that lookups do not
all expire together, as Synapse does), at least 5 minutes and at most 48 hours;
an invalid answer for an hour; an unreachable host for 2 minutes, doubling per
failure up to an hour ("exponentially back off for repeated failures"). The
body is capped at 50 KiB and redirects at 5, never to plain HTTP and never in a
loop (CVE-2021-21274: a .well-known redirected to a huge file).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import aiohttp
import orjson
from yarl import URL

from ranvier.core.ids import InvalidIdentifier, is_connectable_port, parse_server_name
from ranvier.services.federation.address_guard import check_ip_literal
from ranvier.services.federation.dns import Dns, SrvRecord, order_srv_records

logger = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
WELL_KNOWN_MAX_BYTES = 50 * 1024
WELL_KNOWN_MAX_REDIRECTS = 5
WELL_KNOWN_TIMEOUT_SECONDS = 10.0
WELL_KNOWN_CACHE_ENTRIES = 10_000

HOUR = 3600.0
WELL_KNOWN_DEFAULT_CACHE_SECONDS = 24 * HOUR
WELL_KNOWN_MIN_CACHE_SECONDS = 5 * 60.0
WELL_KNOWN_MAX_CACHE_SECONDS = 48 * HOUR
WELL_KNOWN_INVALID_CACHE_SECONDS = HOUR
WELL_KNOWN_DOWN_CACHE_SECONDS = 2 * 60.0
CACHE_JITTER = 0.1

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 2782: the target "." means the service is decidedly not available.
_NO_SERVICE = "."


class DiscoveryError(Exception):
    """The server name cannot be resolved to anything to connect to."""


class ResponseTooLarge(Exception):
    """A response body is larger than the cap for it."""


@dataclass(frozen=True)
class ResolvedServer:
    """Where to send a request for ``server_name``, and what to present and expect."""

    server_name: str
    # (host name or IP address without brackets, port), in the order to try.
    targets: tuple[tuple[str, int], ...]
    # The Host header of every request.
    host_header: str
    # The name (or IP address) the certificate must be valid for; also the SNI,
    # which Python's ssl leaves out for IP addresses, as the spec's "TLS" asks.
    tls_name: str


class _Outcome(Enum):
    VALID = "valid"
    INVALID = "invalid"  # an answer, but not a usable one: skip to SRV
    DOWN = "down"  # no answer at all: skip to SRV, retry sooner


@dataclass(frozen=True)
class _WellKnownFetch:
    outcome: _Outcome
    delegated: str | None = None
    cache_seconds: float | None = None  # from the response's headers, if they say


@dataclass(frozen=True)
class _CachedWellKnown:
    delegated: str | None
    expires_at: float
    down_failures: int = 0


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def read_body_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The (decoded) body, or ResponseTooLarge as soon as it passes ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(f"{response.content_length} bytes is more than {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def cache_seconds_from_headers(headers: Mapping[str, str]) -> float | None:
    """How long a response may be cached by its Cache-Control or Expires (RFC 9111), if said."""
    directives: dict[str, str] = {}
    for directive in headers.get("Cache-Control", "").split(","):
        name, _, value = directive.strip().partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0.0  # raised to the minimum period: we must not refetch on every request
    if directives.get("max-age", "").isdigit():
        return float(directives["max-age"])
    if "Expires" in headers and "Date" in headers:
        try:
            expires = email.utils.parsedate_to_datetime(headers["Expires"])
            date = email.utils.parsedate_to_datetime(headers["Date"])
            return max(0.0, (expires - date).total_seconds())
        except (TypeError, ValueError):
            return 0.0  # RFC 9111 §5.3: an invalid Expires means "already expired"
    return None


def _parse_delegation(body: bytes) -> str | None:
    """The ``m.server`` of a .well-known body, if it is a valid server name."""
    try:
        document = orjson.loads(body)  # JSON whatever the Content-Type, as the spec says
    except orjson.JSONDecodeError:
        return None
    delegated = document.get("m.server") if isinstance(document, dict) else None
    if not isinstance(delegated, str):
        return None
    try:
        _, port = parse_server_name(delegated)
    except InvalidIdentifier:
        return None
    if port is not None and not is_connectable_port(port):
        return None
    return delegated


class ServerResolver:
    """Resolves server names; keeps the .well-known cache.

    ``session`` must be the federation client's (its connector refuses private
    addresses). ``https_port`` is where .well-known is fetched: 443, except in tests.
    """

    def __init__(
        self,
        dns: Dns,
        session: aiohttp.ClientSession,
        *,
        allow_private_addresses: bool,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        https_port: int = 443,
    ) -> None:
        self._dns = dns
        self._session = session
        self._allow_private = allow_private_addresses
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._https_port = https_port
        self._well_known_cache: OrderedDict[str, _CachedWellKnown] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[str | None]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        try:
            host, port = parse_server_name(server_name)
        except InvalidIdentifier as error:
            raise DiscoveryError(str(error)) from None
        if port is not None and not is_connectable_port(port):
            # The grammar allows 1–5 digits (any of which is a valid name, room
            # IDs and user IDs of it included), but nothing listens there.
            raise DiscoveryError(f"{server_name}: port {port} cannot be connected to")
        if is_ip_literal(host):  # step 1
            address = host.strip("[]")
            return ResolvedServer(
                server_name, ((address, port or DEFAULT_FEDERATION_PORT),), server_name, address
            )
        if port is not None:  # step 2
            return ResolvedServer(server_name, ((host, port),), server_name, host)
        delegated = await self.well_known(host)  # step 3
        if delegated is not None:
            return await self._resolve_delegated(server_name, delegated)
        return await self._resolve_by_srv(server_name, host)  # steps 4-6

    async def _resolve_delegated(self, server_name: str, delegated: str) -> ResolvedServer:
        host, port = parse_server_name(delegated)  # validated by _parse_delegation
        if is_ip_literal(host):  # step 3.1
            address = host.strip("[]")
            return ResolvedServer(
                server_name, ((address, port or DEFAULT_FEDERATION_PORT),), delegated, address
            )
        if port is not None:  # step 3.2
            return ResolvedServer(server_name, ((host, port),), delegated, host)
        return await self._resolve_by_srv(server_name, host)  # steps 3.3-3.5

    async def _resolve_by_srv(self, server_name: str, hostname: str) -> ResolvedServer:
        """Steps 3.3-3.5 and 4-6: SRV ``_matrix-fed``, then ``_matrix``, then port 8448.

        Whatever host the SRV record names, the Host header and the certificate
        are ``hostname``'s: DNS is not authenticated, TLS is (the spec's note).
        """
        records = await self._dns.srv(f"_matrix-fed._tcp.{hostname}")
        if not records:
            records = await self._dns.srv(f"_matrix._tcp.{hostname}")
        if not records:
            targets: tuple[tuple[str, int], ...] = ((hostname, DEFAULT_FEDERATION_PORT),)
        else:
            targets = self._srv_targets(hostname, records)
        return ResolvedServer(server_name, targets, hostname, hostname)

    def _srv_targets(self, hostname: str, records: list[SrvRecord]) -> tuple[tuple[str, int], ...]:
        usable = [record for record in records if record.target != _NO_SERVICE]
        if not usable:
            raise DiscoveryError(f"{hostname}'s SRV record says it offers no federation")
        return tuple(
            (record.target, record.port) for record in order_srv_records(usable, self._rng)
        )

    # --- .well-known ----------------------------------------------------------------

    async def well_known(self, hostname: str) -> str | None:
        """The server name ``hostname`` delegates to, or None; cached."""
        entry = self._well_known_cache.get(hostname)
        if entry is not None and entry.expires_at > self._clock():
            self._well_known_cache.move_to_end(hostname)
            return entry.delegated
        # Concurrent lookups of one host share one fetch.
        task = self._in_flight.get(hostname)
        if task is None:
            task = asyncio.ensure_future(self._refresh_well_known(hostname, entry))
            self._in_flight[hostname] = task
            task.add_done_callback(lambda _: self._in_flight.pop(hostname, None))
        return await asyncio.shield(task)

    async def _refresh_well_known(
        self, hostname: str, previous: _CachedWellKnown | None
    ) -> str | None:
        fetched = await self._fetch_well_known(hostname)
        entry = self._next_cache_entry(previous, fetched)
        self._well_known_cache[hostname] = entry
        self._well_known_cache.move_to_end(hostname)
        while len(self._well_known_cache) > WELL_KNOWN_CACHE_ENTRIES:
            self._well_known_cache.popitem(last=False)
        return entry.delegated

    def _next_cache_entry(
        self, previous: _CachedWellKnown | None, fetched: _WellKnownFetch
    ) -> _CachedWellKnown:
        now = self._clock()
        jitter = self._rng.uniform(1 - CACHE_JITTER, 1 + CACHE_JITTER)
        if fetched.outcome is _Outcome.VALID:
            if fetched.cache_seconds is None:
                seconds = WELL_KNOWN_DEFAULT_CACHE_SECONDS * jitter
            else:
                seconds = fetched.cache_seconds
            seconds = min(max(seconds, WELL_KNOWN_MIN_CACHE_SECONDS), WELL_KNOWN_MAX_CACHE_SECONDS)
            return _CachedWellKnown(fetched.delegated, now + seconds)
        if fetched.outcome is _Outcome.INVALID:
            return _CachedWellKnown(None, now + WELL_KNOWN_INVALID_CACHE_SECONDS * jitter)
        # Down: keep the last delegation we knew (its host may only be restarting),
        # and retry soon, backing off exponentially while it stays down.
        failures = (previous.down_failures if previous else 0) + 1
        seconds = min(
            WELL_KNOWN_DOWN_CACHE_SECONDS * 2 ** (failures - 1), WELL_KNOWN_INVALID_CACHE_SECONDS
        )
        delegated = previous.delegated if previous else None
        return _CachedWellKnown(delegated, now + seconds * jitter, failures)

    async def _fetch_well_known(self, hostname: str) -> _WellKnownFetch:
        url = URL.build(scheme="https", host=hostname, port=self._https_port, path=WELL_KNOWN_PATH)
        try:
            return await self._get_well_known(url)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            logger.info("Fetching %s failed: %s", url, error or type(error).__name__)
            return _WellKnownFetch(_Outcome.DOWN)
        except ValueError as error:  # e.g. a redirect to a malformed URL
            logger.info("Fetching %s failed: %s", url, error)
            return _WellKnownFetch(_Outcome.INVALID)

    async def _get_well_known(self, url: URL) -> _WellKnownFetch:
        seen = {url}
        timeout = aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT_SECONDS)
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            check_ip_literal(url.host or "", allow_private=self._allow_private)
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as response:
                location = response.headers.get("Location")
                if response.status in _REDIRECT_STATUSES and location:
                    url = url.join(URL(location))
                    if url.scheme != "https" or url in seen:
                        logger.info("%s: redirect loop or redirect off HTTPS", url)
                        return _WellKnownFetch(_Outcome.INVALID)
                    seen.add(url)
                    continue
                return await self._well_known_answer(url, response)
        logger.info("%s: more than %d redirects", url, WELL_KNOWN_MAX_REDIRECTS)
        return _WellKnownFetch(_Outcome.INVALID)

    async def _well_known_answer(
        self, url: URL, response: aiohttp.ClientResponse
    ) -> _WellKnownFetch:
        if response.status >= 500:  # the server is in trouble, as good as down
            return _WellKnownFetch(_Outcome.DOWN)
        if response.status != 200:
            return _WellKnownFetch(_Outcome.INVALID)
        try:
            body = await read_body_capped(response, WELL_KNOWN_MAX_BYTES)
        except ResponseTooLarge:
            logger.info("%s: body larger than %d bytes", url, WELL_KNOWN_MAX_BYTES)
            return _WellKnownFetch(_Outcome.INVALID)
        delegated = _parse_delegation(body)
        if delegated is None:
            return _WellKnownFetch(_Outcome.INVALID)
        return _WellKnownFetch(
            _Outcome.VALID, delegated, cache_seconds_from_headers(response.headers)
        )
