"""Other servers' media, both ways (Server-Server API, "Content Repository", v1.11).

Fetching: ``mxc://other.server/id`` is downloaded from
``GET /_matrix/federation/v1/media/download/{mediaId}`` on that server, a
``multipart/mixed`` answer of two parts: JSON metadata, then either the bytes
or a ``Location`` header to fetch them from. The bytes are streamed into the
media store (capped at ``media.max_upload_size``) and recorded as a cached
remote file; concurrent requests for the same media share one fetch. Remote
thumbnails are made locally from the cached original.

Serving: :func:`multipart_parts` gives the parts of our own answer; the API
streams them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from ranvier.errors import MatrixError
from ranvier.services.federation.client import (
    FederationError,
    FederationResponseError,
)
from ranvier.services.media.files import StoredFile
from ranvier.storage.media import MediaRecord

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaService

DOWNLOAD_PATH = "/_matrix/federation/v1/media/download/"
LEGACY_DOWNLOAD_PATH = "/_matrix/media/v3/download/"
#: The metadata part is "currently always an empty object": a small cap.
MAX_METADATA_BYTES = 64 * 1024
_CHUNK = 256 * 1024
#: Location redirects followed at most (each one through the SSRF guard).
MAX_REDIRECTS = 5

# (method, destination, path, query) -> the unread response (FederationClient.stream).
OpenStream = Callable[..., contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]]
# url -> the unread response (FederationClient.get_url).
OpenUrl = Callable[[str], contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]]


def _unavailable(server_name: str, why: str) -> MatrixError:
    """The origin could not be reached or answered nonsense: 404, as for remote
    profiles (the download endpoints list 502 only for media too large)."""
    return MatrixError(404, "M_NOT_FOUND", f"Could not fetch the media from {server_name}: {why}")


class RemoteMedia:
    def __init__(self, media: MediaService, open_stream: OpenStream, open_url: OpenUrl) -> None:
        self.media = media
        self.open_stream = open_stream
        self.open_url = open_url
        self._in_flight: dict[tuple[str, str], asyncio.Future[MediaRecord]] = {}

    async def fetch(self, server_name: str, media_id: str, timeout_ms: int) -> MediaRecord:
        """Download and cache ``mxc://server_name/media_id``; concurrent callers share it."""
        key = (server_name, media_id)
        in_flight = self._in_flight.get(key)
        if in_flight is not None:
            return await asyncio.shield(in_flight)
        future: asyncio.Future[MediaRecord] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            record = await self._fetch(server_name, media_id, timeout_ms)
            future.set_result(record)
            return record
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved, even if nobody else waits
            raise
        finally:
            del self._in_flight[key]

    async def _fetch(self, server_name: str, media_id: str, timeout_ms: int) -> MediaRecord:
        path = DOWNLOAD_PATH + quote(media_id, safe="")
        try:
            try:
                async with self.open_stream(
                    "GET", server_name, path, query={"timeout_ms": str(timeout_ms)}
                ) as response:
                    stored, content_type, name = await self._read_multipart(server_name, response)
            except FederationResponseError as error:
                if error.errcode != "M_UNRECOGNIZED":
                    raise
                # A server from before v1.11 has no federation media endpoints:
                # its deprecated download endpoint, as Synapse falls back too.
                stored, content_type, name = await self._fetch_legacy(
                    server_name, media_id, timeout_ms
                )
        except FederationResponseError as error:
            raise _remote_error(server_name, error) from None
        except FederationError as error:
            raise _unavailable(server_name, str(error)) from None
        except (aiohttp.ClientError, ValueError) as error:
            raise _unavailable(server_name, f"bad answer ({error})") from None
        now = self.media.hs.clock_ms()
        record = MediaRecord(
            server_name,
            media_id,
            None,
            content_type,
            name,
            stored.size,
            stored.sha256,
            now,
            now,
            None,
            False,
        )
        await self.media.store.upsert_remote(record)
        return record

    async def _fetch_legacy(
        self, server_name: str, media_id: str, timeout_ms: int
    ) -> tuple[StoredFile, str, str | None]:
        path = f"{LEGACY_DOWNLOAD_PATH}{quote(server_name, safe='')}/{quote(media_id, safe='')}"
        # allow_remote=false: the origin must not ask anyone else (no loops).
        query = {"allow_remote": "false", "timeout_ms": str(timeout_ms)}
        async with self.open_stream("GET", server_name, path, query=query) as response:
            stored = await self._store(server_name, response.content.iter_chunked(_CHUNK))
            name = response.content_disposition.filename if response.content_disposition else None
            return stored, response.content_type or "application/octet-stream", name

    async def _read_multipart(
        self, server_name: str, response: aiohttp.ClientResponse
    ) -> tuple[StoredFile, str, str | None]:
        if response.content_type != "multipart/mixed":
            raise _unavailable(
                server_name, f"expected multipart/mixed, got {response.content_type}"
            )
        reader = aiohttp.MultipartReader(response.headers, response.content)
        metadata = await reader.next()
        if not isinstance(metadata, aiohttp.BodyPartReader):
            raise _unavailable(server_name, "no metadata part")
        raw = await _read_capped(metadata, MAX_METADATA_BYTES)
        if not isinstance(orjson.loads(raw or b"{}"), dict):
            raise _unavailable(server_name, "the metadata part is not a JSON object")
        part = await reader.next()
        if not isinstance(part, aiohttp.BodyPartReader):
            raise _unavailable(server_name, "no media part")
        location = part.headers.get("Location")
        if location is not None:
            return await self._follow(server_name, location)
        content_type = part.headers.get("Content-Type", "application/octet-stream")
        stored = await self._store(server_name, _part_chunks(part))
        return stored, content_type, part.filename

    async def _follow(self, server_name: str, location: str) -> tuple[StoredFile, str, str | None]:
        """The media part's ``Location``: fetched (never cached as a URL, as the
        spec asks), redirects followed by hand so each hop passes the SSRF guard."""
        url = location
        for _ in range(MAX_REDIRECTS + 1):
            async with self.open_url(url) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = str(response.url.join(URL(response.headers["Location"])))
                    continue
                if response.status != 200:
                    raise _unavailable(server_name, f"the media URL answered {response.status}")
                stored = await self._store(server_name, response.content.iter_chunked(_CHUNK))
                name = (
                    response.content_disposition.filename if response.content_disposition else None
                )
                return stored, response.content_type or "application/octet-stream", name
        raise _unavailable(server_name, "too many redirects")

    async def _store(self, server_name: str, chunks: AsyncIterator[bytes]) -> StoredFile:
        try:
            return await self.media.files.write_stream(chunks, self.media.config.max_upload_size)
        except MatrixError as error:
            if error.errcode == "M_TOO_LARGE":
                # "Homeservers should not proxy or thumbnail large files or images
                # from remote homeservers, returning a HTTP 502 error with the
                # M_TOO_LARGE code."
                raise MatrixError(502, "M_TOO_LARGE", "The remote media is too large") from None
            raise


async def _part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


async def _read_capped(part: aiohttp.BodyPartReader, cap: int) -> bytes:
    data = bytearray()
    async for chunk in _part_chunks(part):
        data += chunk
        if len(data) > cap:
            raise ValueError("metadata part too large")
    return bytes(data)


def _remote_error(server_name: str, error: FederationResponseError) -> MatrixError:
    body: Any = error.body if isinstance(error.body, dict) else {}
    errcode = body.get("errcode")
    if error.status == 404:
        return MatrixError(404, "M_NOT_FOUND", f"{server_name} has no such media")
    if error.status == 504 and errcode == "M_NOT_YET_UPLOADED":
        return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
    return _unavailable(server_name, f"it answered {error.status} {errcode or ''}".strip())
