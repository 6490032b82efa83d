"""Helpers for the content repository tests: an app on each engine with a user,
and images made with Pillow."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.api.accounts_support import Client, auth_header, register

UPLOAD = "/_matrix/media/v3/upload"
CREATE = "/_matrix/media/v1/create"
DOWNLOAD = "/_matrix/client/v1/media/download"
THUMBNAIL = "/_matrix/client/v1/media/thumbnail"
LEGACY_DOWNLOAD = "/_matrix/media/v3/download"
LEGACY_THUMBNAIL = "/_matrix/media/v3/thumbnail"


def image_bytes(size: tuple[int, int], fmt: str = "PNG", color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def animated_gif(size: tuple[int, int], frames: int = 3) -> bytes:
    images = [Image.new("RGB", size, c) for c in ("red", "green", "blue")[:frames]]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=50, loop=0)
    return out.getvalue()


async def user_token(client: Client, name: str = "alice") -> dict[str, str]:
    body: dict[str, Any] = await register(client, name)
    return auth_header(body["access_token"])


def split_mxc(uri: str) -> tuple[str, str]:
    assert uri.startswith("mxc://"), uri
    server, _, media_id = uri[len("mxc://") :].partition("/")
    return server, media_id


async def upload(
    client: Client,
    headers: dict[str, str],
    data: bytes,
    content_type: str = "application/octet-stream",
    filename: str | None = None,
) -> str:
    params = {"filename": filename} if filename else {}
    response = await client.post(
        UPLOAD, data=data, headers={**headers, "Content-Type": content_type}, params=params
    )
    body = await response.json()
    assert response.status == 200, body
    uri: str = body["content_uri"]
    return uri
