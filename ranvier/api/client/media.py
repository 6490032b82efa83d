"""The content repository (Client-Server API, "Content repository";
data/api/client-server/authed-content-repo.yaml and content-repo.yaml).

Authenticated media lives under ``/_matrix/client/v1/media`` (v1.11); the
deprecated ``/_matrix/media/v3`` download, thumbnail, config and preview
endpoints stay served without a token, as the spec's migration allows (the
"freeze" is ``media.freeze_unauthenticated_after``). Upload and create remain
under ``/_matrix/media`` in v1.19.

Request bodies of uploads are streamed to disk in chunks, never read whole:
aiohttp's ``client_max_size`` (see app.py) only limits ``request.read()``, which
these handlers never call; the media service applies ``media.max_upload_size``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.sync import query_int
from ranvier.api.file_serving import send_media
from ranvier.api.http import HOMESERVER, json_response, to_response
from ranvier.errors import MatrixError
from ranvier.services.media.timeouts import DEFAULT_WAIT_MS

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaFile

routes = web.RouteTableDef()

CLIENT_V1 = "/_matrix/client/v1/media"
LEGACY_V3 = "/_matrix/media/v3"

#: "The recommended policy" (Content repository).
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';"
)
#: Content repository, "Serving inline content": the only types served inline.
INLINE_TYPES = frozenset(
    {
        "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
        "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
        "video/mp4", "video/webm", "video/ogg", "video/quicktime",
        "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
        "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
    }
)  # fmt: skip


# --- helpers -------------------------------------------------------------------------


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body's pieces as the HTTP parser made them, one at a time.

    Not ``iter_any()``: that joins every piece buffered at the moment into one
    new bytes object, a copy that lives beside the pieces (measured: ~0.6 MiB
    per upload in flight, most of the peak RSS of 20 concurrent uploads).
    ``readchunk()`` hands over the buffered pieces themselves.
    """
    while True:
        chunk, end_of_http_chunk = await request.content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:  # (b"", True) only marks a chunk boundary
            return


def _upload_name(request: web.Request) -> str | None:
    name = request.query.get("filename")
    if name is None or name == "":
        return None
    if len(name) > 255 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise MatrixError(400, "M_INVALID_PARAM", "filename is too long or has control characters")
    return name


def _content_type(request: web.Request) -> str | None:
    value = request.headers.get("Content-Type")
    if value is None or not value.strip():
        return None
    if len(value) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", "Content-Type is too long")
    return value.strip()


def _declared_length(request: web.Request) -> int | None:
    header = request.headers.get("Content-Length")
    if header is None:
        return None
    if not header.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "Bad Content-Length")
    return int(header)


def _closing(error: MatrixError) -> web.Response:
    """An error answered while the body may be partly unread: the connection
    closes after it (its remaining bytes are not a next request)."""
    response = to_response(error)
    response.force_close()
    return response


def content_disposition(content_type: str, name: str | None) -> str:
    """``inline`` only for the spec's safe types, ``attachment`` otherwise; the
    file name percent-encoded (RFC 6266 ``filename*``), so nothing in it can
    break the header."""
    base = content_type.split(";")[0].strip().lower()
    kind = "inline" if base in INLINE_TYPES else "attachment"
    if not name:
        return kind
    return f"{kind}; filename*=utf-8''{urllib.parse.quote(name, safe='')}"


def media_headers(media: MediaFile, name: str | None, *, authenticated: bool) -> dict[str, str]:
    return {
        "Content-Type": media.content_type,
        "Content-Disposition": content_disposition(media.content_type, name),
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        # Authenticated media must not sit in shared caches.
        "Cache-Control": "private, max-age=86400" if authenticated else "public, max-age=86400",
    }


async def file_response(
    request: web.Request, media: MediaFile, name: str | None, *, authenticated: bool
) -> web.StreamResponse:
    """The file, with Range support (206/416) and its entity tag (file_serving.py)."""
    return await send_media(request, media, media_headers(media, name, authenticated=authenticated))


def _bool_param(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")
    return value == "true"


# --- upload --------------------------------------------------------------------------


# Guest access ("Guest Access" module) lists media download and thumbnail, not
# upload: guests read media, they do not add any (as Synapse).


@routes.post("/_matrix/media/v3/upload")
async def upload(request: web.Request) -> web.Response:
    requester = await require_user(request)
    media = request.app[HOMESERVER].media
    try:
        upload_name = _upload_name(request)
        media.check_declared_size(_declared_length(request))
        uri = await media.upload(
            requester, _body_chunks(request), _content_type(request), upload_name
        )
    except MatrixError as error:
        return _closing(error)
    return json_response({"content_uri": uri})


@routes.post("/_matrix/media/v1/create")
async def create(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return json_response(await request.app[HOMESERVER].media.create(requester))


@routes.put("/_matrix/media/v3/upload/{serverName}/{mediaId}")
async def upload_to(request: web.Request) -> web.Response:
    requester = await require_user(request)
    media = request.app[HOMESERVER].media
    try:
        upload_name = _upload_name(request)
        media.check_declared_size(_declared_length(request))
        await media.upload_to(
            requester,
            request.match_info["serverName"],
            request.match_info["mediaId"],
            _body_chunks(request),
            _content_type(request),
            upload_name,
        )
    except MatrixError as error:
        return _closing(error)
    return json_response({})


# --- config --------------------------------------------------------------------------


@routes.get(CLIENT_V1 + "/config")
async def config(request: web.Request) -> web.Response:
    await require_user(request, allow_guest=True)
    return json_response(request.app[HOMESERVER].media.upload_config())


@routes.get(LEGACY_V3 + "/config")
async def legacy_config(request: web.Request) -> web.Response:
    # Deprecated; it required an access token before v1.11 too.
    await require_user(request, allow_guest=True)
    return json_response(request.app[HOMESERVER].media.upload_config())


# --- download ------------------------------------------------------------------------


async def _download(request: web.Request, *, authenticated: bool) -> web.StreamResponse:
    if authenticated:
        await require_user(request, allow_guest=True)
    timeout_ms = query_int(request, "timeout_ms", DEFAULT_WAIT_MS)
    # allow_remote exists on the deprecated endpoints only (authenticated: always).
    allow_remote = authenticated or _bool_param(request, "allow_remote", True)
    media = await request.app[HOMESERVER].media.download(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        timeout_ms=timeout_ms,
        allow_remote=allow_remote,
        legacy=not authenticated,
    )
    name = request.match_info.get("fileName") or media.upload_name
    return await file_response(request, media, name, authenticated=authenticated)


@routes.get(CLIENT_V1 + "/download/{serverName}/{mediaId}")
@routes.get(CLIENT_V1 + "/download/{serverName}/{mediaId}/{fileName}")
async def download(request: web.Request) -> web.StreamResponse:
    return await _download(request, authenticated=True)


@routes.get(LEGACY_V3 + "/download/{serverName}/{mediaId}")
@routes.get(LEGACY_V3 + "/download/{serverName}/{mediaId}/{fileName}")
async def legacy_download(request: web.Request) -> web.StreamResponse:
    return await _download(request, authenticated=False)


# --- thumbnails ----------------------------------------------------------------------


def _required_int(request: web.Request, name: str) -> int:
    if name not in request.query:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing query parameter {name!r}")
    return query_int(request, name, 0, minimum=1, maximum=100_000)


async def _thumbnail(request: web.Request, *, authenticated: bool) -> web.StreamResponse:
    if authenticated:
        await require_user(request, allow_guest=True)
    width = _required_int(request, "width")
    height = _required_int(request, "height")
    media = await request.app[HOMESERVER].media.thumbnail(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        width,
        height,
        request.query.get("method", "scale"),
        animated=_bool_param(request, "animated", False),
        timeout_ms=query_int(request, "timeout_ms", DEFAULT_WAIT_MS),
        allow_remote=authenticated or _bool_param(request, "allow_remote", True),
        legacy=not authenticated,
    )
    return await file_response(request, media, None, authenticated=authenticated)


@routes.get(CLIENT_V1 + "/thumbnail/{serverName}/{mediaId}")
async def thumbnail(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, authenticated=True)


@routes.get(LEGACY_V3 + "/thumbnail/{serverName}/{mediaId}")
async def legacy_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, authenticated=False)


# --- URL previews --------------------------------------------------------------------


async def _preview(request: web.Request) -> web.Response:
    await require_user(request, allow_guest=True)
    url = request.query.get("url")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter 'url'")
    ts = query_int(request, "ts", -1)
    preview = await request.app[HOMESERVER].media.preview_url(url, None if ts < 0 else ts)
    return json_response(preview)


@routes.get(CLIENT_V1 + "/preview_url")
async def preview_url(request: web.Request) -> web.Response:
    return await _preview(request)


@routes.get(LEGACY_V3 + "/preview_url")
async def legacy_preview_url(request: web.Request) -> web.Response:
    return await _preview(request)
