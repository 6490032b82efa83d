"""Server discovery (Server-Server API, "Resolving server names"), step by step.

DNS is a fake; .well-known is served over real TLS on loopback with a test CA,
fetched through the federation client's own session (SSRF guard and all).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from ranvier.config import FederationConfig
from ranvier.services.federation.client import build_session
from ranvier.services.federation.discovery import (
    DiscoveryError,
    ResolvedServer,
    ServerResolver,
    cache_seconds_from_headers,
)
from ranvier.services.federation.dns import SrvRecord
from tests.services.federation.support import (
    FakeClock,
    FakeDns,
    MidpointRandom,
    https_server,
    server_context,
    write_ca,
)

HOUR = 3600.0
Responder = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]


def delegate(target: str, **headers: str) -> Responder:
    return lambda _request: web.json_response({"m.server": target}, headers=headers)


def not_found(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)


@dataclass
class WellKnownSite:
    """example.test's web server: answers /.well-known/matrix/server with ``respond``."""

    respond: Responder = not_found
    requests: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        response = self.respond(request)
        return await response if inspect.isawaitable(response) else response


@dataclass
class Env:
    resolver: ServerResolver
    dns: FakeDns
    site: WellKnownSite
    clock: FakeClock
    port: int


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def env(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Env]:
    site = WellKnownSite()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", site.handle)
    dns = FakeDns(hosts={"example.test": ["127.0.0.1"]})
    config = FederationConfig(trusted_ca_file=write_ca(ca, tmp_path), allow_private_addresses=True)
    clock = FakeClock()
    async with (
        https_server(app, server_context(ca, "example.test")) as port,
        build_session(config, dns) as session,
    ):
        resolver = ServerResolver(
            dns, session, allow_private_addresses=True, clock=clock,
            rng=MidpointRandom(), https_port=port,
        )  # fmt: skip
        yield Env(resolver, dns, site, clock, port)


# --- steps 1 and 2: no lookups at all --------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", (("1.2.3.4", 8448),), "1.2.3.4", "1.2.3.4")),
        (
            "1.2.3.4:8000",
            ResolvedServer("1.2.3.4:8000", (("1.2.3.4", 8000),), "1.2.3.4:8000", "1.2.3.4"),
        ),
        ("[2001:db8::1]", ResolvedServer("[2001:db8::1]", (("2001:db8::1", 8448),), "[2001:db8::1]", "2001:db8::1")),
        (
            "[2001:db8::1]:443",
            ResolvedServer("[2001:db8::1]:443", (("2001:db8::1", 443),), "[2001:db8::1]:443", "2001:db8::1"),
        ),
        (
            "example.test:1234",
            ResolvedServer("example.test:1234", (("example.test", 1234),), "example.test:1234", "example.test"),
        ),
    ],
)  # fmt: skip
async def test_ip_literals_and_explicit_ports_need_no_lookup(
    env: Env, server_name: str, expected: ResolvedServer
) -> None:
    assert await env.resolver.resolve(server_name) == expected
    assert env.dns.queries == []
    assert env.site.requests == []


@pytest.mark.parametrize("server_name", ["", "exa mple.test", "example.test:0", "[::1", "a:b:c"])
async def test_an_invalid_server_name_is_a_discovery_error(env: Env, server_name: str) -> None:
    with pytest.raises(DiscoveryError):
        await env.resolver.resolve(server_name)


# --- step 3: .well-known delegation ---------------------------------------------------


@pytest.mark.parametrize(
    ("delegated", "srv", "expected_targets", "host_header", "tls_name"),
    [
        # 3.1: IP literal, with or without port; Host is the IP (with port if given).
        ("10.9.8.7", {}, (("10.9.8.7", 8448),), "10.9.8.7", "10.9.8.7"),
        ("10.9.8.7:9000", {}, (("10.9.8.7", 9000),), "10.9.8.7:9000", "10.9.8.7"),
        ("[2001:db8::7]:9000", {}, (("2001:db8::7", 9000),), "[2001:db8::7]:9000", "2001:db8::7"),
        # 3.2: host name with port: no SRV.
        ("matrix.example.test:8443", {"_matrix-fed._tcp.matrix.example.test": [SrvRecord(0, 0, 1, "x.test")]},
         (("matrix.example.test", 8443),), "matrix.example.test:8443", "matrix.example.test"),
        # 3.3: SRV _matrix-fed; Host and certificate stay the delegated name.
        ("matrix.example.test", {"_matrix-fed._tcp.matrix.example.test": [SrvRecord(10, 0, 8555, "fed.example.test")]},
         (("fed.example.test", 8555),), "matrix.example.test", "matrix.example.test"),
        # 3.4: deprecated SRV _matrix when there is no _matrix-fed.
        ("matrix.example.test", {"_matrix._tcp.matrix.example.test": [SrvRecord(10, 0, 8666, "old.example.test")]},
         (("old.example.test", 8666),), "matrix.example.test", "matrix.example.test"),
        # 3.5: no SRV: port 8448.
        ("matrix.example.test", {}, (("matrix.example.test", 8448),), "matrix.example.test", "matrix.example.test"),
    ],
)  # fmt: skip
async def test_well_known_delegation(
    env: Env,
    delegated: str,
    srv: dict[str, list[SrvRecord]],
    expected_targets: tuple[tuple[str, int], ...],
    host_header: str,
    tls_name: str,
) -> None:
    env.site.respond = delegate(delegated)
    env.dns.srv_records = srv
    resolved = await env.resolver.resolve("example.test")
    assert resolved == ResolvedServer("example.test", expected_targets, host_header, tls_name)
    assert env.site.requests == ["/.well-known/matrix/server"]


async def test_srv_fed_is_preferred_and_the_deprecated_one_not_asked(env: Env) -> None:
    env.dns.srv_records = {
        "_matrix-fed._tcp.example.test": [SrvRecord(0, 0, 1111, "new.test")],
        "_matrix._tcp.example.test": [SrvRecord(0, 0, 2222, "old.test")],
    }
    resolved = await env.resolver.resolve("example.test")
    assert resolved.targets == (("new.test", 1111),)
    assert "SRV _matrix._tcp.example.test" not in env.dns.queries


# --- steps 4-6: no delegation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("srv", "expected_targets"),
    [
        ({"_matrix-fed._tcp.example.test": [SrvRecord(0, 5, 8500, "fed.example.test")]}, (("fed.example.test", 8500),)),
        ({"_matrix._tcp.example.test": [SrvRecord(0, 5, 8600, "old.example.test")]}, (("old.example.test", 8600),)),
        ({}, (("example.test", 8448),)),
    ],
)  # fmt: skip
async def test_without_delegation_srv_then_deprecated_srv_then_8448(
    env: Env, srv: dict[str, list[SrvRecord]], expected_targets: tuple[tuple[str, int], ...]
) -> None:
    env.dns.srv_records = srv
    resolved = await env.resolver.resolve("example.test")
    # Host header and certificate name are the server name's host, whatever SRV says.
    assert resolved == ResolvedServer("example.test", expected_targets, "example.test", "example.test")
    assert env.dns.queries[:2] == ["A example.test", "SRV _matrix-fed._tcp.example.test"]


async def test_srv_records_are_tried_by_priority(env: Env) -> None:
    env.dns.srv_records = {
        "_matrix-fed._tcp.example.test": [
            SrvRecord(20, 0, 3, "third.test"),
            SrvRecord(10, 100, 1, "first.test"),
            SrvRecord(10, 0, 2, "second.test"),  # weight 0: after its weighty peer, almost always
            SrvRecord(20, 0, 3, "."),  # "no service" records are left out
        ]
    }
    resolved = await env.resolver.resolve("example.test")
    assert [host for host, _ in resolved.targets][2:] == ["third.test"]
    assert {host for host, _ in resolved.targets[:2]} == {"first.test", "second.test"}


async def test_an_srv_record_saying_no_service_is_a_discovery_error(env: Env) -> None:
    env.dns.srv_records = {"_matrix-fed._tcp.example.test": [SrvRecord(0, 0, 0, ".")]}
    with pytest.raises(DiscoveryError, match="no federation"):
        await env.resolver.resolve("example.test")


# --- .well-known answers that do not delegate -----------------------------------------


def _redirect(location: str) -> web.StreamResponse:
    raise web.HTTPFound(location)


def _redirect_chain(length: int, final: Responder) -> Responder:
    def respond(request: web.Request) -> web.StreamResponse | Awaitable[web.StreamResponse]:
        step = int(request.query.get("step", "0"))
        if step < length:
            raise web.HTTPFound(f"/.well-known/matrix/server?step={step + 1}")
        return final(request)

    return respond


@pytest.mark.parametrize(
    "respond",
    [
        lambda _r: web.Response(text="not json"),
        lambda _r: web.json_response(["m.server", "x.test"]),
        lambda _r: web.json_response({}),
        lambda _r: web.json_response({"m.server": 8448}),
        lambda _r: web.json_response({"m.server": "bad name!"}),
        lambda _r: web.json_response({"m.server": "x.test"}, status=404),
        lambda _r: web.json_response({"m.server": "x.test"}, status=403),
        # Larger than 50 KiB, even though valid JSON.
        lambda _r: web.json_response({"m.server": "x.test", "pad": "x" * 60_000}),
        # Redirected off HTTPS, in a loop, or more than 5 times.
        lambda _r: _redirect("http://example.test/.well-known/matrix/server"),
        lambda _r: _redirect("/.well-known/matrix/server"),
        lambda _r: web.Response(status=302, headers={"Location": "https://[not-an-address/"}),
        _redirect_chain(6, delegate("x.test")),
    ],
    ids=["not-json", "array", "no-m.server", "m.server-not-string", "bad-server-name",
         "404", "403", "too-large", "redirect-to-http", "redirect-loop", "redirect-malformed",
         "six-redirects"],
)  # fmt: skip
async def test_invalid_well_known_answers_fall_through_to_srv_and_are_cached_an_hour(
    env: Env, respond: Responder
) -> None:
    env.site.respond = respond
    resolved = await env.resolver.resolve("example.test")
    assert resolved.targets == (("example.test", 8448),)
    fetches = len(env.site.requests)
    env.clock.now += HOUR - 1
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) == fetches
    env.clock.now += 2
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) > fetches


async def test_json_without_json_content_type_and_up_to_five_redirects_are_followed(
    env: Env,
) -> None:
    env.site.respond = _redirect_chain(
        5, lambda _r: web.Response(text='{"m.server": "x.test:1"}', content_type="text/plain")
    )
    resolved = await env.resolver.resolve("example.test")
    assert resolved.targets == (("x.test", 1),)
    assert len(env.site.requests) == 6


# --- caching ----------------------------------------------------------------------------


async def test_a_delegation_is_cached_24_hours_by_default(env: Env) -> None:
    env.site.respond = delegate("x.test:1")
    await env.resolver.resolve("example.test")
    env.clock.now += 24 * HOUR - 1
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) == 1
    env.site.respond = delegate("y.test:2")
    env.clock.now += 2
    assert (await env.resolver.resolve("example.test")).targets == (("y.test", 2),)
    assert len(env.site.requests) == 2


@pytest.mark.parametrize(
    ("headers", "cached_for"),
    [
        ({"Cache-Control": "public, max-age=600"}, 600.0),
        ({"Cache-Control": "max-age=10"}, 300.0),  # at least 5 minutes
        ({"Cache-Control": "max-age=999999999"}, 48 * HOUR),  # at most 48 hours
        ({"Cache-Control": "no-store"}, 300.0),
        ({"Expires": "Sun, 06 Dec 2026 13:00:00 GMT", "Date": "Sun, 06 Dec 2026 12:00:00 GMT"}, HOUR),
    ],
)  # fmt: skip
async def test_cache_headers_set_the_period_within_limits(
    env: Env, headers: dict[str, str], cached_for: float
) -> None:
    env.site.respond = delegate("x.test:1", **headers)
    await env.resolver.resolve("example.test")
    env.clock.now += cached_for - 1
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) == 1
    env.clock.now += 2
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) == 2


def test_cache_header_parsing() -> None:
    assert cache_seconds_from_headers({}) is None
    assert cache_seconds_from_headers({"Cache-Control": "public"}) is None
    assert cache_seconds_from_headers({"Cache-Control": 'max-age="120"'}) == 120.0
    assert cache_seconds_from_headers({"Cache-Control": "no-cache, max-age=99"}) == 0.0
    assert cache_seconds_from_headers({"Expires": "0", "Date": "x"}) == 0.0
    # max-age wins over Expires (RFC 9111 §5.3).
    assert (
        cache_seconds_from_headers(
            {
                "Cache-Control": "max-age=60",
                "Expires": "Sun, 06 Dec 2026 13:00:00 GMT",
                "Date": "Sun, 06 Dec 2026 12:00:00 GMT",
            }
        )
        == 60.0
    )


async def test_default_period_has_ten_percent_jitter(env: Env) -> None:
    env.site.respond = delegate("x.test:1")

    class HighRandom(MidpointRandom):
        def uniform(self, a: float, b: float) -> float:
            return b

    env.resolver._rng = HighRandom()  # the +10 % end
    await env.resolver.resolve("example.test")
    env.clock.now += 24 * HOUR * 1.1 - 1
    await env.resolver.resolve("example.test")
    assert len(env.site.requests) == 1


async def test_a_failing_host_is_retried_after_2_minutes_then_backs_off(env: Env) -> None:
    env.site.respond = delegate("x.test:1", **{"Cache-Control": "max-age=300"})
    assert (await env.resolver.resolve("example.test")).targets == (("x.test", 1),)
    # example.test's web server breaks down: 5xx counts as "down", like no answer.
    env.site.respond = lambda _r: web.Response(status=503)
    env.clock.now += 301
    # The last known delegation is kept while the host is down.
    assert (await env.resolver.resolve("example.test")).targets == (("x.test", 1),)
    assert len(env.site.requests) == 2
    for wait, fetches in ((119, 2), (2, 3), (239, 3), (2, 4), (479, 4), (2, 5)):
        env.clock.now += wait  # retried after 2 minutes, then 4, then 8
        assert (await env.resolver.resolve("example.test")).targets == (("x.test", 1),)
        assert len(env.site.requests) == fetches, wait


async def test_a_host_down_from_the_start_gets_no_delegation(
    env: Env, unused_tcp_port: int
) -> None:
    env.resolver._https_port = unused_tcp_port  # nothing listens there
    resolved = await env.resolver.resolve("example.test")
    assert resolved.targets == (("example.test", 8448),)


async def test_a_host_without_address_is_down_and_skipped_to_srv(env: Env) -> None:
    env.dns.srv_records = {"_matrix-fed._tcp.nowhere.test": [SrvRecord(0, 0, 8500, "fed.test")]}
    resolved = await env.resolver.resolve("nowhere.test")
    assert resolved.targets == (("fed.test", 8500),)


async def test_concurrent_lookups_share_one_fetch(env: Env) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"m.server": "x.test:1"})

    env.site.respond = slow
    lookups = [asyncio.create_task(env.resolver.resolve("example.test")) for _ in range(5)]
    await asyncio.sleep(0.2)
    release.set()
    results = await asyncio.gather(*lookups)
    assert {result.targets for result in results} == {(("x.test", 1),)}
    assert len(env.site.requests) == 1


# --- the SSRF guard applies to .well-known too ------------------------------------------


async def test_well_known_is_not_fetched_from_a_private_address_unless_allowed(
    env: Env, ca: trustme.CA, tmp_path: Path
) -> None:
    env.site.respond = delegate("x.test:1")
    config = FederationConfig(trusted_ca_file=write_ca(ca, tmp_path), allow_private_addresses=False)
    async with build_session(config, env.dns) as session:
        guarded = ServerResolver(
            env.dns, session, allow_private_addresses=False, clock=env.clock,
            rng=MidpointRandom(), https_port=env.port,
        )  # fmt: skip
        resolved = await guarded.resolve("example.test")
    assert resolved.targets == (("example.test", 8448),)
    assert env.site.requests == []


async def test_well_known_needs_a_valid_certificate_for_the_host(
    env: Env, ca: trustme.CA, tmp_path: Path
) -> None:
    env.site.respond = delegate("x.test:1")
    env.dns.hosts["other.test"] = ["127.0.0.1"]  # the same server, whose cert is for example.test
    resolved = await env.resolver.resolve("other.test")
    assert resolved.targets == (("other.test", 8448),)
    assert env.site.requests == []
