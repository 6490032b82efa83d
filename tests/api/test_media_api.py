"""The content repository through the real HTTP stack, on SQLite and PostgreSQL:
uploads (plain and asynchronous), downloads (authenticated and legacy, ranges,
safe headers), thumbnails, config, and the bad input the issue names."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ranvier.api import file_serving
from ranvier.api.http import HOMESERVER
from ranvier.services.media import service as media_service
from tests.api.accounts_support import AccountsClient, Client
from tests.api.conftest import NOW_MS, Clock
from tests.api.media_support import (
    CREATE,
    DOWNLOAD,
    LEGACY_DOWNLOAD,
    LEGACY_THUMBNAIL,
    THUMBNAIL,
    UPLOAD,
    animated_gif,
    image_bytes,
    split_mxc,
    upload,
    user_token,
)

MAX_UPLOAD = 256 * 1024
CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';"
)


@pytest.fixture
async def setup(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> tuple[Client, dict[str, str], Path]:
    store = tmp_path / "media-store"
    client = await accounts_client(
        {
            "database": migrated_dsn,
            # Thumbnails on request only, so the file counts below are exact
            # (test_standard_thumbnails_made_after_upload covers the default).
            "media": {
                "store_path": str(store),
                "max_upload_size": MAX_UPLOAD,
                "thumbnails_on_upload": False,
            },
        }
    )
    return client, await user_token(client), store


def stored_files(store: Path) -> list[Path]:
    """Complete files in the store (temporary files excluded)."""
    return sorted(p for p in store.rglob("*") if p.is_file() and p.parent.name != "tmp")


def temp_files(store: Path) -> list[Path]:
    return sorted((store / "tmp").glob("*")) if (store / "tmp").exists() else []


async def error(response: Any) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["errcode"]


# --- upload and download -------------------------------------------------------------


async def test_upload_then_download_with_safe_headers(setup: Any) -> None:
    client, alice, store = setup
    data = image_bytes((10, 10))
    uri = await upload(client, alice, data, "image/png", filename="cat pic.png")
    server, media_id = split_mxc(uri)
    assert server == "localhost" and len(media_id) >= 24
    response = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)
    assert response.status == 200
    assert await response.read() == data
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''cat%20pic.png"
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert [p.name for p in stored_files(store)] == [__import__("hashlib").sha256(data).hexdigest()]
    assert temp_files(store) == []


async def test_unsafe_type_is_an_attachment_and_name_override(setup: Any) -> None:
    client, alice, _ = setup
    uri = await upload(client, alice, b"<script>alert(1)</script>", "text/html", "x.html")
    server, media_id = split_mxc(uri)
    response = await client.get(f"{DOWNLOAD}/{server}/{media_id}/other%20name.txt", headers=alice)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html"
    assert (
        response.headers["Content-Disposition"] == "attachment; filename*=utf-8''other%20name.txt"
    )


async def test_same_bytes_share_one_file(setup: Any) -> None:
    client, alice, store = setup
    bob = await user_token(client, "bob")
    first = await upload(client, alice, b"same bytes")
    second = await upload(client, bob, b"same bytes")
    assert first != second
    assert len(stored_files(store)) == 1
    for uri in (first, second):
        server, media_id = split_mxc(uri)
        response = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)
        assert await response.read() == b"same bytes"


async def test_range_request(setup: Any) -> None:
    client, alice, _ = setup
    data = bytes(range(256)) * 4
    server, media_id = split_mxc(await upload(client, alice, data))
    response = await client.get(
        f"{DOWNLOAD}/{server}/{media_id}", headers={**alice, "Range": "bytes=10-19"}
    )
    assert response.status == 206
    assert await response.read() == data[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(data)}"


async def test_entity_tag_and_conditional_requests(setup: Any) -> None:
    client, alice, _ = setup
    data = b"immutable bytes"
    server, media_id = split_mxc(await upload(client, alice, data, "text/plain"))
    path = f"{DOWNLOAD}/{server}/{media_id}"
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    response = await client.get(path, headers=alice)
    assert response.status == 200 and await response.read() == data
    assert (response.headers["ETag"], response.headers["Accept-Ranges"]) == (etag, "bytes")
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get(path, headers={**alice, "If-None-Match": if_none_match})
        assert cached.status == 304 and await cached.read() == b"", if_none_match
        assert cached.headers["ETag"] == etag
        assert cached.headers["Cache-Control"] == "private, max-age=86400"
    changed = await client.get(path, headers={**alice, "If-None-Match": '"other"'})
    assert changed.status == 200 and await changed.read() == data
    head = await client.head(path, headers=alice)
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Content-Length"] == str(len(data)) and head.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("range_header", "if_range", "status", "part", "content_range"),
    [
        ("bytes=10-19", None, 206, slice(10, 20), "bytes 10-19/1000"),
        ("bytes=-5", None, 206, slice(995, 1000), "bytes 995-999/1000"),
        ("bytes=990-", None, 206, slice(990, 1000), "bytes 990-999/1000"),
        ("bytes=990-5000", None, 206, slice(990, 1000), "bytes 990-999/1000"),
        ("bytes=-5000", None, 206, slice(0, 1000), "bytes 0-999/1000"),
        ("bytes=1000-", None, 416, slice(0, 0), "bytes */1000"),
        ("bytes=5-2", None, 416, slice(0, 0), "bytes */1000"),
        ("bytes=0-1,5-6", None, 416, slice(0, 0), "bytes */1000"),
        ("lines=1-2", None, 416, slice(0, 0), "bytes */1000"),
        ("bytes=10-19", "ETAG", 206, slice(10, 20), "bytes 10-19/1000"),
        ("bytes=10-19", '"another"', 200, slice(0, 1000), None),
        ("bytes=10-19", "Sat, 01 Jan 2000 00:00:00 GMT", 200, slice(0, 1000), None),
    ],
)
async def test_byte_ranges(
    setup: Any,
    range_header: str,
    if_range: str | None,
    status: int,
    part: slice,
    content_range: str | None,
) -> None:
    """RFC 9110 §14: one range, a suffix, an open end; 416 for what cannot be
    satisfied; If-Range holding another validator means the whole file."""
    client, alice, _ = setup
    data = bytes(range(250)) * 4
    server, media_id = split_mxc(await upload(client, alice, data))
    headers = {**alice, "Range": range_header}
    if if_range is not None:
        headers["If-Range"] = if_range.replace("ETAG", f'"{hashlib.sha256(data).hexdigest()}"')
    response = await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=headers)
    assert response.status == status
    assert await response.read() == data[part]
    assert response.headers.get("Content-Range") == content_range


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1, 200_000, 250_000])
async def test_larger_files_go_out_in_pieces(
    setup: Any, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files over SMALL_BODY are written piece by piece through pooled buffers:
    smaller pieces than in production here, so that a file spans several."""
    monkeypatch.setattr(file_serving, "PIECE", 48 * 1024)
    monkeypatch.setattr(file_serving, "_pool", [])
    client, alice, _ = setup
    data = os.urandom(size)
    server, media_id = split_mxc(await upload(client, alice, data))
    path = f"{DOWNLOAD}/{server}/{media_id}"
    for _ in range(3):  # the pool's buffers are reused: each answer is still right
        response = await client.get(path, headers=alice)
        assert response.status == 200 and await response.read() == data
    ranged = await client.get(path, headers={**alice, "Range": "bytes=40000-150000"})
    assert ranged.status == 206 and await ranged.read() == data[40000:150001]
    assert len(file_serving._pool) <= file_serving.POOLED


async def test_a_file_gone_from_the_store_is_not_found(setup: Any) -> None:
    client, alice, store = setup
    data = b"soon gone"
    server, media_id = split_mxc(await upload(client, alice, data))
    path = f"{DOWNLOAD}/{server}/{media_id}"
    assert (await client.get(path, headers=alice)).status == 200  # its row is cached now
    digest = hashlib.sha256(data).hexdigest()
    (store / digest[:2] / digest[2:4] / digest).unlink()
    assert await error(await client.get(path, headers=alice)) == (404, "M_NOT_FOUND")


async def test_authenticated_download_needs_a_token(setup: Any) -> None:
    client, alice, _ = setup
    server, media_id = split_mxc(await upload(client, alice, b"x"))
    assert await error(await client.get(f"{DOWNLOAD}/{server}/{media_id}")) == (
        401,
        "M_MISSING_TOKEN",
    )
    legacy = await client.get(f"{LEGACY_DOWNLOAD}/{server}/{media_id}")
    assert legacy.status == 200 and await legacy.read() == b"x"


async def test_unknown_media_and_traversal(setup: Any) -> None:
    client, alice, store = setup
    (store.parent / "secret").write_bytes(b"secret")
    server, media_id = split_mxc(await upload(client, alice, b"public"))
    for path in (
        f"{DOWNLOAD}/localhost/unknownmediaid",
        f"{DOWNLOAD}/localhost/..%2Fsecret",
        f"{DOWNLOAD}/localhost/..%252Fsecret",
        f"{LEGACY_DOWNLOAD}/localhost/..%2F..%2Fsecret",
        f"{THUMBNAIL}/localhost/..%2Fsecret?width=32&height=32",
    ):
        response = await client.get(path, headers=alice)
        assert await error(response) == (404, "M_NOT_FOUND"), path
    # Dot segments are resolved before routing: no route matches at all.
    dots = await client.get(f"{DOWNLOAD}/localhost/%2E%2E", headers=alice)
    assert dots.status == 404 and b"secret" not in await dots.read()
    bad_server = await client.get(f"{DOWNLOAD}/bad%2Fserver/{media_id}", headers=alice)
    assert bad_server.status in (400, 404)
    # A traversal in fileName only names the download; the right bytes come back.
    response = await client.get(f"{DOWNLOAD}/{server}/{media_id}/..%2F..%2Fsecret", headers=alice)
    assert response.status == 200 and await response.read() == b"public"
    assert (
        response.headers["Content-Disposition"] == "attachment; filename*=utf-8''..%2F..%2Fsecret"
    )


async def test_config_endpoints(setup: Any) -> None:
    client, alice, _ = setup
    for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
        response = await client.get(path, headers=alice)
        assert response.status == 200
        assert await response.json() == {"m.upload.size": MAX_UPLOAD}


# --- bad uploads ---------------------------------------------------------------------


async def test_declared_size_over_limit_is_refused_before_reading(setup: Any) -> None:
    client, alice, store = setup
    response = await client.post(UPLOAD, data=b"x" * (MAX_UPLOAD + 1), headers=alice)
    assert await error(response) == (413, "M_TOO_LARGE")
    assert stored_files(store) == [] and temp_files(store) == []


async def test_streamed_body_over_limit_is_refused(setup: Any) -> None:
    client, alice, store = setup

    async def body() -> Any:
        for _ in range(MAX_UPLOAD // 4096 + 2):
            yield b"y" * 4096

    response = await client.post(UPLOAD, data=body(), headers=alice)  # chunked, no length
    assert await error(response) == (413, "M_TOO_LARGE")
    assert stored_files(store) == [] and temp_files(store) == []
    # The server is unharmed.
    assert (await upload(client, alice, b"fine")).startswith("mxc://")


async def test_bad_filename_is_refused(setup: Any) -> None:
    client, alice, store = setup
    response = await client.post(UPLOAD, data=b"x", headers=alice, params={"filename": "a\nb"})
    assert await error(response) == (400, "M_INVALID_PARAM")
    assert stored_files(store) == []


# --- asynchronous uploads ------------------------------------------------------------


async def test_async_upload_flow(setup: Any) -> None:
    client, alice, _ = setup
    bob = await user_token(client, "bob")
    created = await (await client.post(CREATE, headers=alice)).json()
    assert created["unused_expires_at"] == NOW_MS + 24 * 3600 * 1000
    server, media_id = split_mxc(created["content_uri"])
    target = f"/_matrix/media/v3/upload/{server}/{media_id}"
    waiting = await client.get(f"{DOWNLOAD}/{server}/{media_id}?timeout_ms=0", headers=alice)
    assert await error(waiting) == (504, "M_NOT_YET_UPLOADED")
    assert await error(await client.put(target, data=b"b", headers=bob)) == (403, "M_FORBIDDEN")

    # A download waiting for the upload gets it as soon as it arrives.
    pending = asyncio.ensure_future(
        client.get(f"{DOWNLOAD}/{server}/{media_id}?timeout_ms=10000", headers=alice)
    )
    await asyncio.sleep(0.05)
    response = await client.put(
        target,
        data=b"late",
        headers={**alice, "Content-Type": "text/plain"},
        params={"filename": "l.txt"},
    )
    assert response.status == 200 and await response.json() == {}
    downloaded = await pending
    assert downloaded.status == 200 and await downloaded.read() == b"late"
    assert downloaded.headers["Content-Type"] == "text/plain"
    again = await client.put(target, data=b"again", headers=alice)
    assert await error(again) == (409, "M_CANNOT_OVERWRITE_MEDIA")
    unknown = await client.put(
        f"/_matrix/media/v3/upload/{server}/nosuchid", data=b"x", headers=alice
    )
    assert await error(unknown) == (404, "M_NOT_FOUND")


async def test_pending_limit_and_expiry(setup: Any, clock: Clock) -> None:
    client, alice, _ = setup
    uris = []
    for _ in range(5):
        response = await client.post(CREATE, headers=alice)
        assert response.status == 200
        uris.append((await response.json())["content_uri"])
    refused = await client.post(CREATE, headers=alice)
    assert await error(refused) == (429, "M_LIMIT_EXCEEDED")
    clock.advance(24 * 3600 * 1000)  # the five expire
    assert (await client.post(CREATE, headers=alice)).status == 200
    server, media_id = split_mxc(uris[0])
    expired = await client.put(
        f"/_matrix/media/v3/upload/{server}/{media_id}", data=b"x", headers=alice
    )
    assert await error(expired) == (404, "M_NOT_FOUND")


# --- legacy freeze -------------------------------------------------------------------


async def test_legacy_freeze(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path, clock: Clock
) -> None:
    client = await accounts_client(
        {
            "database": migrated_dsn,
            "media": {
                "store_path": str(tmp_path / "m"),
                "freeze_unauthenticated_after": NOW_MS + 1000,
            },
        }
    )
    alice = await user_token(client)
    old = split_mxc(await upload(client, alice, image_bytes((64, 64)), "image/png"))
    clock.advance(1000)
    new = split_mxc(await upload(client, alice, image_bytes((64, 64), color="blue"), "image/png"))
    assert (await client.get(f"{LEGACY_DOWNLOAD}/{old[0]}/{old[1]}")).status == 200
    frozen = await client.get(f"{LEGACY_DOWNLOAD}/{new[0]}/{new[1]}")
    assert await error(frozen) == (404, "M_NOT_FOUND")
    frozen_thumb = await client.get(f"{LEGACY_THUMBNAIL}/{new[0]}/{new[1]}?width=32&height=32")
    assert await error(frozen_thumb) == (404, "M_NOT_FOUND")
    assert (await client.get(f"{DOWNLOAD}/{new[0]}/{new[1]}", headers=alice)).status == 200


# --- thumbnails ----------------------------------------------------------------------


async def thumbnail(client: Client, headers: dict[str, str], uri: str, query: str) -> Any:
    server, media_id = split_mxc(uri)
    return await client.get(f"{THUMBNAIL}/{server}/{media_id}?{query}", headers=headers)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("query", "expected_size"),
    [
        ("width=32&height=32&method=crop", (32, 32)),
        ("width=96&height=96&method=crop", (96, 96)),
        ("width=320&height=240&method=scale", (320, 240)),
        ("width=640&height=480&method=scale", (640, 480)),
        ("width=300&height=200", (320, 240)),  # scale by default, the covering standard size
        ("width=50&height=20&method=crop", (50, 20)),  # crop keeps the requested aspect
    ],
)
async def test_thumbnail_sizes(setup: Any, query: str, expected_size: tuple[int, int]) -> None:
    client, alice, _ = setup
    uri = await upload(client, alice, image_bytes((1000, 750), "JPEG"), "image/jpeg")
    response = await thumbnail(client, alice, uri, query)
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Security-Policy"] == CSP
    assert decoded(await response.read()).size == expected_size


async def test_thumbnail_is_cached_and_small_images_come_back_whole(setup: Any) -> None:
    client, alice, store = setup
    uri = await upload(client, alice, image_bytes((400, 300)), "image/png")
    first = await (await thumbnail(client, alice, uri, "width=96&height=96&method=crop")).read()
    files = stored_files(store)
    second = await (await thumbnail(client, alice, uri, "width=90&height=90&method=crop")).read()
    assert first == second and stored_files(store) == files and len(files) == 2
    small = image_bytes((20, 20))
    small_uri = await upload(client, alice, small, "image/png")
    response = await thumbnail(client, alice, small_uri, "width=32&height=32&method=crop")
    assert response.status == 200 and await response.read() == small


async def test_standard_thumbnails_made_after_upload(
    accounts_client: AccountsClient,
    migrated_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sizes after the first wait a moment: long enough here to see it.
    monkeypatch.setattr(media_service, "BACKGROUND_DELAY_S", 1.0)
    store = tmp_path / "media-store"
    client = await accounts_client(
        {"database": migrated_dsn, "media": {"store_path": str(store)}}  # the default: on
    )
    alice = await user_token(client)
    uri = await upload(client, alice, image_bytes((1000, 750), "JPEG"), "image/jpeg")
    media = client.app[HOMESERVER].media
    server, media_id = split_mxc(uri)
    # The upload's answer came once the first standard size was made, and the
    # others follow a moment later (without the delay, they take ~30 ms here).
    await asyncio.sleep(0.3)
    first = [(t.width, t.height, t.method) for t in await media.store.thumbnails(server, media_id)]
    assert first == [(320, 240, "scale")]
    await asyncio.wait_for(asyncio.gather(*media._eager_tasks), 60)
    made = await media.store.thumbnails(server, media_id)
    assert sorted((t.width, t.height, t.method) for t in made) == [
        (32, 32, "crop"),
        (96, 96, "crop"),
        (320, 240, "scale"),
        (640, 480, "scale"),
        (800, 600, "scale"),
    ]
    files = stored_files(store)
    assert len(files) == 6  # the upload and its five thumbnails
    response = await thumbnail(client, alice, uri, "width=320&height=240&method=scale")
    assert response.status == 200 and decoded(await response.read()).size == (320, 240)
    assert stored_files(store) == files  # served from the cache: nothing new made
    # A non-image and a corrupt image get none, and their uploads are unharmed.
    await upload(client, alice, b"not an image", "image/png")
    await upload(client, alice, b"plain", "text/plain")
    await asyncio.wait_for(asyncio.gather(*media._eager_tasks), 60)
    assert len(stored_files(store)) == 8


async def test_animated_thumbnail(setup: Any) -> None:
    client, alice, _ = setup
    uri = await upload(client, alice, animated_gif((200, 200)), "image/gif")
    animated = await thumbnail(client, alice, uri, "width=96&height=96&method=crop&animated=true")
    assert animated.status == 200 and animated.headers["Content-Type"] == "image/gif"
    image = decoded(await animated.read())
    assert image.size == (96, 96) and getattr(image, "n_frames", 1) == 3
    still = await thumbnail(client, alice, uri, "width=96&height=96&method=crop&animated=false")
    assert still.headers["Content-Type"] in ("image/png", "image/jpeg")
    assert getattr(decoded(await still.read()), "n_frames", 1) == 1


async def test_thumbnail_of_non_image_and_corrupt_image(setup: Any) -> None:
    client, alice, _ = setup
    text = await upload(client, alice, b"just text", "text/plain")
    assert await error(await thumbnail(client, alice, text, "width=32&height=32")) == (
        400,
        "M_UNKNOWN",
    )
    noise = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(noise, "PNG")
    corrupt = noise.getvalue()[:2000] + b"\x00garbage" * 20
    corrupt_uri = await upload(client, alice, corrupt, "image/png")
    assert await error(await thumbnail(client, alice, corrupt_uri, "width=32&height=32")) == (
        400,
        "M_UNKNOWN",
    )
    lying = await upload(client, alice, b"not a png at all", "image/png")
    assert await error(await thumbnail(client, alice, lying, "width=32&height=32")) == (
        400,
        "M_UNKNOWN",
    )


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header declares a huge canvas (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [6000, 60000])  # over our limit; over Pillow's own too
async def test_decompression_bomb_is_refused(setup: Any, side: int) -> None:
    client, alice, _ = setup
    bomb = png_claiming(side, side)
    assert len(bomb) < 2000
    uri = await upload(client, alice, bomb, "image/png")
    response = await thumbnail(client, alice, uri, "width=32&height=32")
    status, errcode = await error(response)
    assert (status, errcode) == (413, "M_TOO_LARGE")
    # The server is unharmed.
    ok = await upload(client, alice, image_bytes((100, 100)), "image/png")
    assert (await thumbnail(client, alice, ok, "width=32&height=32&method=crop")).status == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("height=32", (400, "M_MISSING_PARAM")),
        ("width=0&height=32", (400, "M_INVALID_PARAM")),
        ("width=-3&height=32", (400, "M_INVALID_PARAM")),
        ("width=1.5&height=32", (400, "M_INVALID_PARAM")),
        ("width=32&height=32&method=stretch", (400, "M_INVALID_PARAM")),
        ("width=32&height=32&animated=yes", (400, "M_INVALID_PARAM")),
    ],
)
async def test_bad_thumbnail_parameters(setup: Any, query: str, expected: tuple[int, str]) -> None:
    client, alice, _ = setup
    uri = await upload(client, alice, image_bytes((100, 100)), "image/png")
    assert await error(await thumbnail(client, alice, uri, query)) == expected


async def test_guests_download_but_do_not_upload(
    accounts_client: AccountsClient, migrated_dsn: str, tmp_path: Path
) -> None:
    """Guest Access lists media download and thumbnail (v1.12), not upload."""
    client = await accounts_client(
        {
            "database": migrated_dsn,
            "registration": {"guest_access": True},
            "media": {"store_path": str(tmp_path / "m")},
        }
    )
    alice = await user_token(client)
    response = await client.post("/_matrix/client/v3/register?kind=guest", json={})
    guest = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
    server, media_id = split_mxc(await upload(client, alice, image_bytes((100, 100)), "image/png"))
    assert (await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=guest)).status == 200
    thumb = await client.get(f"{THUMBNAIL}/{server}/{media_id}?width=32&height=32", headers=guest)
    assert thumb.status == 200
    refused = await client.post(UPLOAD, data=b"x", headers=guest)
    assert await error(refused) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    assert await error(await client.post(CREATE, headers=guest)) == (
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    )


async def test_concurrent_puts_to_one_id_store_one_upload(setup: Any) -> None:
    """One upload only: of two racing PUTs one wins, the other gets 409 and
    leaves no file behind."""
    client, alice, store = setup
    created = await (await client.post(CREATE, headers=alice)).json()
    server, media_id = split_mxc(created["content_uri"])
    target = f"/_matrix/media/v3/upload/{server}/{media_id}"
    first, second = await asyncio.gather(
        client.put(target, data=b"a" * 200_000, headers=alice),
        client.put(target, data=b"b" * 200_000, headers=alice),
    )
    assert sorted([first.status, second.status]) == [200, 409]
    loser = second if second.status == 409 else first
    assert (await loser.json())["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    assert len(stored_files(store)) == 1 and temp_files(store) == []
    body = await (await client.get(f"{DOWNLOAD}/{server}/{media_id}", headers=alice)).read()
    assert body in (b"a" * 200_000, b"b" * 200_000)
