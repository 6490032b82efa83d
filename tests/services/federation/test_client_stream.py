"""FederationClient.stream and get_url (used for federation media): the body
handed over unread, typed errors for non-2xx answers, the SSRF guard before
any connection, no redirects followed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from ranvier.config import FederationConfig
from ranvier.services.federation.client import (
    FederationAddressDenied,
    FederationBadResponse,
    FederationClient,
    FederationResponseError,
)
from tests.services.federation.support import (
    FakeDns,
    connection_recorder,
    https_server,
    server_context,
    write_ca,
)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    return write_ca(ca, tmp_path)


def _client(ca_file: Path, *, allow_private: bool = True) -> FederationClient:
    return FederationClient(
        FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=allow_private),
        authorization=lambda method, destination, path, content: f"X-Matrix sig-of {path}",
    )


async def _big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"z" * 65536)
    return response


async def test_stream_hands_over_the_body_unread_and_signs(ca: trustme.CA, ca_file: Path) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.raw_path} {request.headers.get('Authorization')}")
        return await _big(request)

    app = web.Application()
    app.router.add_get("/media/{id}", handler)
    client = _client(ca_file)
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            stream = client.stream(
                "GET", f"127.0.0.1:{port}", "/media/a%2Fb", query={"timeout_ms": "5"}
            )
            received = 0
            async with stream as response:
                async for chunk in response.content.iter_any():
                    received += len(chunk)
    finally:
        await client.close()
    assert received == 64 * 65536  # beyond max_response_size: the caller caps, not the client
    assert seen == ["/media/a%2Fb?timeout_ms=5 X-Matrix sig-of /media/a%2Fb?timeout_ms=5"]


async def test_stream_raises_the_remote_error(ca: trustme.CA, ca_file: Path) -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)

    app = web.Application()
    app.router.add_get("/media/x", not_found)
    client = _client(ca_file)
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            with pytest.raises(FederationResponseError) as raised:
                async with client.stream("GET", f"127.0.0.1:{port}", "/media/x"):
                    pass
    finally:
        await client.close()
    assert (raised.value.status, raised.value.errcode) == (404, "M_NOT_FOUND")


async def test_stream_and_get_url_never_connect_to_private_addresses(ca_file: Path) -> None:
    client = FederationClient(
        FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=False),
        dns=FakeDns(hosts={"inside.test": ["10.0.0.7", "127.0.0.1"]}),
    )
    try:
        async with connection_recorder() as (port, connections):
            with pytest.raises(FederationAddressDenied):
                async with client.stream("GET", f"127.0.0.1:{port}", "/media/x"):
                    pass
            for url in (f"http://127.0.0.1:{port}/x", f"https://inside.test:{port}/x"):
                with pytest.raises(FederationAddressDenied):
                    async with client.get_url(url):
                        pass
            await asyncio.sleep(0.05)
            assert connections == []
    finally:
        await client.close()


async def test_get_url_does_not_follow_redirects(ca: trustme.CA, ca_file: Path) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere.test/")

    app = web.Application()
    app.router.add_get("/r", redirect)
    client = _client(ca_file)
    try:
        async with (
            https_server(app, server_context(ca, "127.0.0.1")) as port,
            client.get_url(f"https://127.0.0.1:{port}/r") as response,
        ):
            assert response.status == 302
            assert response.headers["Location"] == "https://elsewhere.test/"
        with pytest.raises(FederationBadResponse):
            async with client.get_url("file:///etc/passwd"):
                pass
    finally:
        await client.close()
