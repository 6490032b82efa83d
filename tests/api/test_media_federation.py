"""Media between servers (Server-Server API, "Content Repository"), with two
in-process Ranvier apps: ``remote.test`` serves its media on the federation
endpoints (X-Matrix checked, multipart/mixed), and ``localhost`` fetches and
caches them for its clients. The federation transport of ``localhost`` is
swapped for requests signed with its key and sent to the other app's HTTP
stack; everything else is the real code. ``localhost`` runs on each engine."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.core.signing import SigningKey
from ranvier.services.federation.client import (
    FederationResponseError,
    FederationUnreachable,
    encode_query,
)
from tests.api.accounts_support import AccountsClient, Client
from tests.api.conftest import NOW_MS
from tests.api.media_support import DOWNLOAD, THUMBNAIL, image_bytes, split_mxc, upload, user_token
from tests.federation_support import FakeServer

REMOTE = "remote.test"
HOUR = 3_600_000


class Servers:
    def __init__(self, local: Client, remote: Client, alice: dict[str, str], bob: dict[str, str]):
        self.local, self.remote, self.alice, self.bob = local, remote, alice, bob
        self.calls: list[str] = []


def _signed_stream(servers: Servers) -> Any:
    hs = servers.local.app[HOMESERVER]

    @contextlib.asynccontextmanager
    async def open_stream(
        method: str, destination: str, path: str, *, query: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        assert destination == REMOTE
        query_string = encode_query(query)
        target = f"{path}?{query_string}" if query_string else path
        servers.calls.append(target)
        header = hs.sign_request(method, destination, target, None)
        response = await servers.remote.request(
            method, URL(target, encoded=True), headers={"Authorization": header}
        )
        try:
            if response.status != 200:
                raise FederationResponseError(destination, response.status, await response.json())
            yield response
        finally:
            response.release()

    return open_stream


@pytest.fixture
async def servers(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path, signing_key: SigningKey
) -> Servers:
    remote = await accounts_client(
        {
            "server_name": REMOTE,
            "database": f"sqlite:///{tmp_path / 'remote.db'}",
            "media": {"store_path": str(tmp_path / "remote-media")},
        }
    )
    local = await accounts_client(
        {
            "database": migrated_dsn,
            "media": {"store_path": str(tmp_path / "local-media"), "max_upload_size": 200_000},
        }
    )
    # remote.test knows localhost's key (both apps use the test's signing key).
    rows = FakeServer("localhost", signing_key).key_rows(NOW_MS - HOUR, NOW_MS + HOUR)
    await remote.app[HOMESERVER].keyring.store_keys(rows)
    result = Servers(
        local, remote, await user_token(local, "alice"), await user_token(remote, "bob")
    )
    local.app[HOMESERVER].media.remote.open_stream = _signed_stream(result)
    return result


async def test_remote_media_is_fetched_once_and_cached(servers: Servers) -> None:
    data = image_bytes((400, 300), "JPEG")
    uri = await upload(servers.remote, servers.bob, data, "image/jpeg", "photo.jpg")
    server, media_id = split_mxc(uri)
    assert server == REMOTE
    for _ in range(2):
        response = await servers.local.get(f"{DOWNLOAD}/{server}/{media_id}", headers=servers.alice)
        assert response.status == 200
        assert await response.read() == data
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''photo.jpg"
    assert servers.calls == [f"/_matrix/federation/v1/media/download/{media_id}?timeout_ms=20000"]
    thumb = await servers.local.get(
        f"{THUMBNAIL}/{server}/{media_id}?width=96&height=96&method=crop", headers=servers.alice
    )
    assert thumb.status == 200
    assert Image.open(io.BytesIO(await thumb.read())).size == (96, 96)
    assert len(servers.calls) == 1  # made from the cached original


async def test_unknown_remote_media_is_404(servers: Servers) -> None:
    response = await servers.local.get(f"{DOWNLOAD}/{REMOTE}/nosuchmedia", headers=servers.alice)
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_remote_media_over_the_limit_is_502_too_large(servers: Servers) -> None:
    uri = await upload(servers.remote, servers.bob, b"x" * 300_000)
    server, media_id = split_mxc(uri)
    response = await servers.local.get(f"{DOWNLOAD}/{server}/{media_id}", headers=servers.alice)
    assert response.status == 502
    assert (await response.json())["errcode"] == "M_TOO_LARGE"
    store = Path(servers.local.app[HOMESERVER].config.media_store_path)
    assert [p for p in store.rglob("*") if p.is_file()] == []


async def test_unreachable_remote_is_404(servers: Servers) -> None:
    @contextlib.asynccontextmanager
    async def unreachable(*args: Any, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        raise FederationUnreachable(REMOTE, "connection refused")
        yield  # pragma: no cover

    servers.local.app[HOMESERVER].media.remote.open_stream = unreachable
    response = await servers.local.get(f"{DOWNLOAD}/{REMOTE}/someid", headers=servers.alice)
    assert response.status == 404
    body = await response.json()
    assert body["errcode"] == "M_NOT_FOUND"
    assert body["error"] == f"Could not fetch the media from {REMOTE}: {REMOTE}: connection refused"


def parse_multipart(content_type: str, body: bytes) -> list[Any]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return list(message.iter_parts())


async def test_serving_download_and_thumbnail_as_multipart(servers: Servers) -> None:
    data = image_bytes((640, 480))
    _, media_id = split_mxc(await upload(servers.remote, servers.bob, data, "image/png", "p.png"))
    hs = servers.local.app[HOMESERVER]
    for path, check in (
        (f"/_matrix/federation/v1/media/download/{media_id}", "download"),
        (
            f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=crop",
            "thumb",
        ),
    ):
        header = hs.sign_request("GET", REMOTE, path, None)
        response = await servers.remote.get(
            URL(path, encoded=True), headers={"Authorization": header}
        )
        assert response.status == 200
        assert response.content_type == "multipart/mixed"
        body = await response.read()
        assert len(body) == int(response.headers["Content-Length"])
        metadata, media = parse_multipart(response.headers["Content-Type"], body)
        assert metadata.get_content_type() == "application/json"
        assert metadata.get_payload(decode=True) == b"{}"
        payload = media.get_payload(decode=True)
        if check == "download":
            assert payload == data
            assert media.get_content_disposition() == "inline"
            assert media.get_filename() == "p.png"
            assert media.get_content_type() == "image/png"
        else:  # an opaque image's thumbnail is a JPEG
            assert Image.open(io.BytesIO(payload)).size == (32, 32)
            assert media.get_content_type() == "image/jpeg"


async def test_federation_media_needs_a_signature(servers: Servers) -> None:
    _, media_id = split_mxc(await upload(servers.remote, servers.bob, b"secret"))
    response = await servers.remote.get(f"/_matrix/federation/v1/media/download/{media_id}")
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_UNAUTHORIZED"
    hs = servers.local.app[HOMESERVER]
    path = "/_matrix/federation/v1/media/download/unknownid"
    header = hs.sign_request("GET", REMOTE, path, None)
    missing = await servers.remote.get(path, headers={"Authorization": header})
    assert missing.status == 404


async def test_location_variant_is_followed(servers: Servers, aiohttp_client: Any) -> None:
    """The second part may be a Location to fetch the bytes from, through the
    guarded client, following its redirects."""

    async def multipart(request: web.Request) -> web.Response:
        body = (
            b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n"
            b"--b\r\nLocation: "
            + str(request.url.with_path("/hop")).encode()
            + b"\r\n\r\n\r\n--b--\r\n"
        )
        return web.Response(body=body, headers={"Content-Type": "multipart/mixed; boundary=b"})

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/bytes")

    async def raw_bytes(request: web.Request) -> web.Response:
        return web.Response(
            body=b"from the cdn",
            headers={
                "Content-Type": "text/plain",
                "Content-Disposition": 'attachment; filename="c.txt"',
            },
        )

    cdn_app = web.Application()
    cdn_app.router.add_get("/_matrix/federation/v1/media/download/viacdn", multipart)
    cdn_app.router.add_get("/hop", hop)
    cdn_app.router.add_get("/bytes", raw_bytes)
    cdn = await aiohttp_client(cdn_app)

    @contextlib.asynccontextmanager
    async def open_stream(method: str, destination: str, path: str, **_: Any) -> Any:
        response = await cdn.get(path)
        try:
            yield response
        finally:
            response.release()

    @contextlib.asynccontextmanager
    async def open_url(url: str) -> Any:
        response = await cdn.session.get(url, allow_redirects=False)
        try:
            yield response
        finally:
            response.release()

    remote = servers.local.app[HOMESERVER].media.remote
    remote.open_stream, remote.open_url = open_stream, open_url
    response = await servers.local.get(f"{DOWNLOAD}/{REMOTE}/viacdn", headers=servers.alice)
    assert response.status == 200
    assert await response.read() == b"from the cdn"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''c.txt"


async def test_servers_without_federation_media_get_the_legacy_download(
    servers: Servers,
) -> None:
    """A server from before v1.11 answers M_UNRECOGNIZED on the federation media
    endpoint; its deprecated download endpoint is asked instead, with
    allow_remote=false."""
    data = image_bytes((64, 64))
    server, media_id = split_mxc(
        await upload(servers.remote, servers.bob, data, "image/png", "o.png")
    )
    asked: list[str] = []

    @contextlib.asynccontextmanager
    async def old_server(
        method: str, destination: str, path: str, *, query: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        target = f"{path}?{encode_query(query)}"
        asked.append(target)
        if path.startswith("/_matrix/federation/v1/media/"):
            raise FederationResponseError(destination, 404, {"errcode": "M_UNRECOGNIZED"})
        response = await servers.remote.get(URL(target, encoded=True))
        try:
            yield response
        finally:
            response.release()

    servers.local.app[HOMESERVER].media.remote.open_stream = old_server
    response = await servers.local.get(f"{DOWNLOAD}/{server}/{media_id}", headers=servers.alice)
    assert response.status == 200 and await response.read() == data
    assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''o.png"
    assert asked == [
        f"/_matrix/federation/v1/media/download/{media_id}?timeout_ms=20000",
        f"/_matrix/media/v3/download/{REMOTE}/{media_id}?allow_remote=false&timeout_ms=20000",
    ]
