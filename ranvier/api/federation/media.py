"""Our media for other servers (Server-Server API, "Content Repository", v1.11;
data/api/server-server/content_repository.yaml).

Both endpoints answer ``multipart/mixed`` with exactly two parts: the JSON
metadata (``{}``) and the bytes, with their Content-Type and
Content-Disposition. The file is streamed from the store, never read whole.
Only our own media are served (a server asks the origin, never a cache).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from ranvier.api.client.media import content_disposition
from ranvier.api.client.sync import query_int
from ranvier.api.federation.auth import authenticate_server
from ranvier.api.file_serving import CHUNK, open_media, read_at
from ranvier.api.http import HOMESERVER
from ranvier.errors import MatrixError
from ranvier.services.media.timeouts import DEFAULT_WAIT_MS

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaFile

routes = web.RouteTableDef()

V1 = "/_matrix/federation/v1/media"


async def multipart_response(
    request: web.Request, media: MediaFile, name: str | None
) -> web.StreamResponse:
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\nContent-Type: {media.content_type}\r\n"
        f"Content-Disposition: {content_disposition(media.content_type, name)}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    fd, size = open_media(media)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
        )
        response.content_length = len(head) + size + len(tail)
        await response.prepare(request)
        await response.write(head)
        offset = 0
        while offset < size:
            chunk = await read_at(fd, offset, min(CHUNK, size - offset))
            await response.write(chunk)
            offset += len(chunk)
        await response.write(tail)
        await response.write_eof()
        return response
    finally:
        os.close(fd)


def _required_int(request: web.Request, name: str) -> int:
    if name not in request.query:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing query parameter {name!r}")
    return query_int(request, name, 0, minimum=1, maximum=100_000)


@routes.get(V1 + "/download/{mediaId}")
async def download(request: web.Request) -> web.StreamResponse:
    await authenticate_server(request)
    hs = request.app[HOMESERVER]
    media = await hs.media.download(
        hs.server_name,
        request.match_info["mediaId"],
        timeout_ms=query_int(request, "timeout_ms", DEFAULT_WAIT_MS),
        allow_remote=False,
    )
    return await multipart_response(request, media, media.upload_name)


@routes.get(V1 + "/thumbnail/{mediaId}")
async def thumbnail(request: web.Request) -> web.StreamResponse:
    await authenticate_server(request)
    hs = request.app[HOMESERVER]
    animated = request.query.get("animated", "false")
    if animated not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "animated must be true or false")
    media = await hs.media.thumbnail(
        hs.server_name,
        request.match_info["mediaId"],
        _required_int(request, "width"),
        _required_int(request, "height"),
        request.query.get("method", "scale"),
        animated=animated == "true",
        timeout_ms=query_int(request, "timeout_ms", DEFAULT_WAIT_MS),
        allow_remote=False,
    )
    return await multipart_response(request, media, None)
