"""Media through a real `ranvier serve`, on SQLite and PostgreSQL, as clients use it.

matrix-nio: Alice uploads an avatar and an image (and the image's thumbnail),
sets the avatar and sends an ``m.image`` with ``info.thumbnail_url``; Bob, in
the room, receives it through /sync, downloads all three and asks the server
for thumbnails, checked with Pillow (size and method). matrix-js-sdk: upload,
then download and thumbnail through authenticated media (/_matrix/client/v1).
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import (
    AsyncClient,
    DownloadResponse,
    JoinResponse,
    ProfileGetAvatarResponse,
    ResizingMethod,
    RoomCreateResponse,
    RoomMessageImage,
    RoomSendResponse,
    ThumbnailResponse,
    UploadResponse,
)
from PIL import Image

from tests.e2e.harness import Server, free_port, init_config
from tests.e2e.test_js_sdk import JS_DIR, NODE
from tests.e2e.test_nio_chat import _database, _registered

pytestmark = pytest.mark.e2e

SYNC_DEADLINE_S = 15


def png(size: tuple[int, int], color: str) -> bytes:
    out = io.BytesIO()
    # A gradient, so crop and scale give different pictures.
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste(Image.new("RGB", (size[0] // 4, size[1]), color), (0, 0))
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(params=["sqlite", "postgresql"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    config = init_config(tmp_path)
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    async with _database(request.param) as dsn:
        if dsn is not None:
            env["RANVIER_DATABASE"] = dsn
        running = Server(config, free_port(), **env)
        try:
            async with aiohttp.ClientSession() as session:
                await running.wait_ready(session)
            yield running
        finally:
            running.kill()
        assert "Traceback" not in running.log(), running.log()


async def _upload(client: AsyncClient, data: bytes, content_type: str, name: str) -> str:
    response, _ = await client.upload(
        io.BytesIO(data), content_type=content_type, filename=name, filesize=len(data)
    )
    assert isinstance(response, UploadResponse), response
    uri: str = response.content_uri
    assert uri.startswith("mxc://localhost/")
    return uri


async def _image_event(bob: AsyncClient, room_id: str) -> RoomMessageImage:
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while time.monotonic() < deadline:
        await bob.sync(timeout=2000)
        room = bob.rooms.get(room_id)
        if room is None:
            continue
        response = await bob.room_messages(room_id, start=bob.next_batch or "", limit=20)
        for event in getattr(response, "chunk", []):
            if isinstance(event, RoomMessageImage):
                return event
    raise AssertionError("the m.image never reached Bob")


async def _download(client: AsyncClient, uri: str) -> DownloadResponse:
    response = await client.download(uri)
    assert isinstance(response, DownloadResponse), response
    return response


async def _thumbnail(
    client: AsyncClient, uri: str, size: tuple[int, int], method: ResizingMethod
) -> Image.Image:
    server_name, media_id = uri[len("mxc://") :].split("/")
    response = await client.thumbnail(server_name, media_id, *size, method)
    assert isinstance(response, ThumbnailResponse), response
    return Image.open(io.BytesIO(response.body))


async def test_nio_avatar_image_and_thumbnails(server: Server) -> None:
    alice = await _registered(server.base_url, "alice")
    bob = await _registered(server.base_url, "bob")
    try:
        avatar, photo = png((256, 256), "red"), png((1200, 600), "blue")
        thumbnail = png((320, 160), "blue")
        avatar_uri = await _upload(alice, avatar, "image/png", "me.png")
        photo_uri = await _upload(alice, photo, "image/png", "holiday.png")
        thumb_uri = await _upload(alice, thumbnail, "image/png", "thumbnail.png")
        assert (await alice.set_avatar(avatar_uri)).__class__.__name__ == "ProfileSetAvatarResponse"

        created = await alice.room_create(invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        assert isinstance(await bob.join(created.room_id), JoinResponse)
        content = {
            "msgtype": "m.image",
            "body": "holiday.png",
            "url": photo_uri,
            "info": {
                "mimetype": "image/png",
                "w": 1200,
                "h": 600,
                "size": len(photo),
                "thumbnail_url": thumb_uri,
                "thumbnail_info": {"mimetype": "image/png", "w": 320, "h": 160},
            },
        }
        sent = await alice.room_send(created.room_id, "m.room.message", content)
        assert isinstance(sent, RoomSendResponse), sent

        event = await _image_event(bob, created.room_id)
        assert event.url == photo_uri
        assert event.source["content"]["info"]["thumbnail_url"] == thumb_uri
        downloaded = await _download(bob, event.url)
        assert downloaded.body == photo and downloaded.content_type == "image/png"
        assert downloaded.filename == "holiday.png"
        assert (await _download(bob, thumb_uri)).body == thumbnail
        profile = await bob.get_avatar(alice.user_id)
        assert isinstance(profile, ProfileGetAvatarResponse) and profile.avatar_url == avatar_uri
        assert (await _download(bob, avatar_uri)).body == avatar

        # Server thumbnails: crop gives the box exactly, scale keeps the 2:1 aspect.
        cropped = await _thumbnail(bob, photo_uri, (96, 96), ResizingMethod.crop)
        assert cropped.size == (96, 96)
        scaled = await _thumbnail(bob, photo_uri, (320, 240), ResizingMethod.scale)
        assert scaled.size == (320, 160)
        avatar_thumb = await _thumbnail(bob, avatar_uri, (32, 32), ResizingMethod.crop)
        assert avatar_thumb.size == (32, 32)
        # The crop is the middle of the picture; the scaled one shows all of it.
        assert cropped.getpixel((0, 48))[2] < 200  # not the blue strip on the left
        assert scaled.getpixel((2, 80))[2] > 200  # the blue strip is in the scaled view
    finally:
        await alice.close()
        await bob.close()


async def _register(base_url: str, username: str, password: str) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}}
        async with session.post(f"{base_url}/_matrix/client/v3/register", json=body) as response:
            assert response.status == 200, await response.text()


async def test_js_sdk_uploads_and_downloads_through_authenticated_media(
    server: Server, tmp_path: Path
) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    await _register(server.base_url, "jsuser", "js-password-1")
    image_path, thumb_path = tmp_path / "js.png", tmp_path / "thumb.out"
    image_path.write_bytes(png((500, 300), "green"))
    args = [str(NODE), "media.mjs", server.base_url, "jsuser", "js-password-1"]
    result = await asyncio.to_thread(
        subprocess.run,
        [*args, str(image_path), str(thumb_path)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()[-3000:]}"
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    outcome: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    assert outcome["upload_size"] == 50 * 1024 * 1024
    assert outcome["download_url"].startswith(
        f"{server.base_url}/_matrix/client/v1/media/download/localhost/"
    )
    assert outcome["download_status"] == 200 and outcome["download_same"] is True
    assert outcome["download_type"] == "image/png"
    assert outcome["download_disposition"] == "inline; filename*=utf-8''js%20image.png"
    assert outcome["unauthenticated_status"] == 401
    assert "/_matrix/client/v1/media/thumbnail/localhost/" in outcome["thumbnail_url"]
    assert outcome["thumbnail_status"] == 200
    assert Image.open(thumb_path).size == (96, 96)
