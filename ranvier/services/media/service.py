"""The content repository (Client-Server API, "Content repository", v1.11+
authenticated media; Server-Server API, "Content Repository").

Uploads are streamed into content-addressed files (``files.py``) and recorded
in the media table (``storage/media.py``); downloads and thumbnails resolve an
``mxc://`` URI to a file the API layer serves. Media of other servers is
fetched over federation and cached (``remote.py``). Services return data: the
API turns a :class:`MediaFile` into an HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ranvier.core.ids import InvalidIdentifier, parse_server_name
from ranvier.errors import MatrixError
from ranvier.services.media.files import ChangeMark, MediaFiles, StoredFile
from ranvier.services.media.kinds import THUMBNAILABLE_TYPES, NotThumbnailable, cannot_thumbnail
from ranvier.services.media.preview import UrlPreviewer
from ranvier.services.media.remote import RemoteMedia
from ranvier.services.media.timeouts import DEFAULT_WAIT_MS, MAX_WAIT_MS
from ranvier.services.requester import Requester
from ranvier.storage.media import MediaRecord, MediaStore, ThumbnailRecord

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: "The media-id segment MUST consist of only alphanumeric (A-Za-z0-9), _ and -
#: characters" (Content repository, "Matrix Content (mxc://) URIs"): the
#: whitelist that keeps any path out of the store, whatever the encoding tricks.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: How often a wait for an asynchronous upload re-reads the database (another
#: process may have received the upload).
_POLL_SECONDS = 0.5
#: Thumbnail sizes the spec says servers SHOULD produce ("Thumbnails"); requests
#: are served from the smallest standard size that is at least as large.
STANDARD_THUMBNAILS: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"),
    (96, 96, "crop"),
    (320, 240, "scale"),
    (640, 480, "scale"),
    (800, 600, "scale"),
)
#: Largest thumbnail box anyone may ask for (a bigger box is clamped).
MAX_THUMBNAIL_SIDE = 2000
#: The standard sizes made right after an image upload (media.thumbnails_on_upload),
#: the ones clients ask for first (timeline previews, then avatars) leading.
EAGER_THUMBNAILS: tuple[tuple[int, int, str], ...] = (
    (320, 240, "scale"),
    (800, 600, "scale"),
    (96, 96, "crop"),
    (32, 32, "crop"),
    (640, 480, "scale"),
)
#: Uploads whose standard thumbnails may be waiting to be made at once; the
#: images of a burst beyond this are thumbnailed on request instead (bounded
#: CPU and memory whatever the upload rate).
MAX_EAGER_UPLOADS = 4
#: How long an image upload's answer waits for its first standard thumbnail
#: (seconds); past it, the answer goes and the thumbnail follows.
FIRST_THUMBNAIL_WAIT_S = 2.0
#: The CPU priority (nice value, higher is lower) of the thread that makes the
#: standard sizes after the first: that work is speculative, and must not slow
#: the requests served meanwhile (on a busy machine it waits its turn).
BACKGROUND_NICE = 10
#: How long after an image upload's answer the other standard sizes start
#: (seconds): the requests that follow an upload (the event that references it,
#: the first thumbnail asked for) are served first, not while the image is
#: decoded beside them. Even at a low CPU priority that decode holds the
#: interpreter's lock at times, and a request waits for it at each system call:
#: measured, a thumbnail asked for right after the upload of a 2000×1500 JPEG
#: took 1.72-1.91 ms at once and 1.26-1.34 ms with this delay (p50 of 40).
BACKGROUND_DELAY_S = 0.05


def _lower_thread_priority() -> None:
    """Run the calling thread at BACKGROUND_NICE (Linux: a thread's own nice
    value; elsewhere, where that would renice the whole process, nothing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A file to serve: its path in the store and how to describe it. Its
    bytes never change (the file is named by their SHA-256)."""

    path: Path
    content_type: str
    upload_name: str | None
    size: int
    sha256: str


def not_found(what: str = "Media not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", what)


def check_media_id(media_id: str) -> None:
    if not _MEDIA_ID.match(media_id):
        raise not_found("Not a valid media ID")


def check_server_name(server_name: str) -> None:
    try:
        parse_server_name(server_name)
    except InvalidIdentifier:
        raise MatrixError(400, "M_INVALID_PARAM", "Not a valid server name") from None


def _thumbnailable(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in THUMBNAILABLE_TYPES


def thumbnail_box(width: int, height: int, method: str) -> tuple[int, int]:
    """The box actually generated for a request: a standard size when one covers
    the request (crop: only with the same aspect ratio, which crop keeps)."""
    for std_w, std_h, std_method in STANDARD_THUMBNAILS:
        if std_method != method or std_w < width or std_h < height:
            continue
        if method == "scale" or std_w * height == std_h * width:
            return std_w, std_h
    return min(width, MAX_THUMBNAIL_SIDE), min(height, MAX_THUMBNAIL_SIDE)


# Fetches another server's media into the cache (remote.py); None if it has none.
RemoteFetcher = Callable[[str, str, int], Awaitable[MediaRecord]]


class MediaService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.config = hs.config.media
        self.store = MediaStore(hs.database)
        self.files = MediaFiles(hs.config.media_store_path)
        # The store's change mark when its cache of media rows was last emptied
        # (the cache starts empty: the mark at startup).
        self._changes_seen: ChangeMark = self.files.change_mark()
        self._thumbnail_slots = asyncio.Semaphore(self.config.thumbnail_concurrency)
        self._uploaded: dict[tuple[str, str], asyncio.Event] = {}
        self._thumbnails_in_flight: dict[tuple[object, ...], asyncio.Future[MediaFile]] = {}
        self._eager_tasks: set[asyncio.Task[None]] = set()
        # One low-priority thread for the standard sizes made after an upload's
        # first (at most one such decode in memory at a time).
        self._background = ThreadPoolExecutor(
            1, "ranvier-thumbnails", initializer=_lower_thread_priority
        )
        # Other servers' media over federation (tests swap the transport).
        self.remote = RemoteMedia(self, hs.federation_client.stream, hs.federation_client.get_url)
        self.remote_fetcher: RemoteFetcher | None = self.remote.fetch
        self.previewer = UrlPreviewer(self)

    async def close(self) -> None:
        for task in self._eager_tasks:
            task.cancel()
        if self._eager_tasks:
            await asyncio.wait(self._eager_tasks)
        self._background.shutdown(wait=False, cancel_futures=True)
        await self.previewer.close()

    @property
    def server_name(self) -> str:
        return self.hs.server_name

    def upload_config(self) -> dict[str, int]:
        """GET /media/config."""
        return {"m.upload.size": self.config.max_upload_size}

    def _mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    # --- uploads ---------------------------------------------------------------------

    def check_declared_size(self, content_length: int | None) -> None:
        """413 before reading a byte when the declared size is already too big."""
        if content_length is not None and content_length > self.config.max_upload_size:
            raise MatrixError(
                413,
                "M_TOO_LARGE",
                f"Media is larger than the limit of {self.config.max_upload_size} bytes",
            )

    async def _store_stream(self, chunks: AsyncIterator[bytes]) -> StoredFile:
        return await self.files.write_stream(chunks, self.config.max_upload_size)

    async def upload(
        self,
        requester: Requester,
        chunks: AsyncIterator[bytes],
        content_type: str | None,
        upload_name: str | None,
    ) -> str:
        """POST /_matrix/media/v3/upload: the new ``mxc://`` URI."""
        stored = await self._store_stream(chunks)
        media_id = secrets.token_urlsafe(18)  # 144 random bits: unguessable
        now = self.hs.clock_ms()
        record = MediaRecord(
            self.server_name,
            media_id,
            requester.user_id,
            content_type or DEFAULT_CONTENT_TYPE,
            upload_name,
            stored.size,
            stored.sha256,
            now,
            now,
            None,
            False,
        )
        await self.store.insert(record)
        await self._thumbnail_soon(record)
        return self._mxc(media_id)

    async def store_server_media(self, chunks: AsyncIterator[bytes], content_type: str) -> str:
        """Media the server itself stores (URL preview images): no uploader."""
        stored = await self._store_stream(chunks)
        media_id = secrets.token_urlsafe(18)
        now = self.hs.clock_ms()
        await self.store.insert(
            MediaRecord(
                self.server_name,
                media_id,
                None,
                content_type,
                None,
                stored.size,
                stored.sha256,
                now,
                now,
                None,
                False,
            )
        )
        return self._mxc(media_id)

    async def preview_url(self, url: str, ts: int | None) -> dict[str, object]:
        """GET /media/preview_url."""
        return await self.previewer.preview(url, ts)

    async def create(self, requester: Requester) -> dict[str, object]:
        """POST /_matrix/media/v1/create: an ID to upload to later (v1.7)."""
        now = self.hs.clock_ms()
        await self.store.delete_expired_pending(requester.user_id, now)
        if (
            await self.store.count_pending(requester.user_id, now)
            >= self.config.max_pending_uploads
        ):
            # "the user has too many pending media uploads": 429 M_LIMIT_EXCEEDED.
            raise MatrixError(
                429,
                "M_LIMIT_EXCEEDED",
                "Too many media IDs waiting for their upload",
                retry_after_ms=self.config.unused_expiration,
            )
        media_id = secrets.token_urlsafe(18)
        expires = now + self.config.unused_expiration
        await self.store.insert(
            MediaRecord(
                self.server_name,
                media_id,
                requester.user_id,
                None,
                None,
                None,
                None,
                now,
                None,
                expires,
                False,
            )
        )
        return {"content_uri": self._mxc(media_id), "unused_expires_at": expires}

    async def check_upload_target(
        self, requester: Requester, server_name: str, media_id: str
    ) -> None:
        """PUT /upload/{serverName}/{mediaId} before its body is read."""
        check_server_name(server_name)
        check_media_id(media_id)
        if server_name != self.server_name:
            raise not_found("Media of other servers cannot be uploaded here")
        record = await self.store.get(server_name, media_id)
        if record is None:
            raise not_found()
        if record.user_id != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "This media ID was created by another user")
        if not record.pending:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        if record.expires_ts is not None and record.expires_ts <= self.hs.clock_ms():
            raise not_found("This media ID has expired")

    async def upload_to(
        self,
        requester: Requester,
        server_name: str,
        media_id: str,
        chunks: AsyncIterator[bytes],
        content_type: str | None,
        upload_name: str | None,
    ) -> None:
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId} (v1.7)."""
        await self.check_upload_target(requester, server_name, media_id)
        stored = await self._store_stream(chunks)
        completed = await self.store.complete_pending(
            server_name,
            media_id,
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            upload_name=upload_name,
            size=stored.size,
            sha256=stored.sha256,
            uploaded_ts=self.hs.clock_ms(),
        )
        if not completed:  # a concurrent PUT won; our file is kept only if shared
            if not await self.store.sha256_in_use(stored.sha256):
                await self.files.delete(stored.sha256)
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        event = self._uploaded.pop((server_name, media_id), None)
        if event is not None:
            event.set()
        record = await self.store.get(server_name, media_id)
        if record is not None:
            await self._thumbnail_soon(record)

    # --- downloads -------------------------------------------------------------------

    async def _wait_for_upload(
        self, server_name: str, media_id: str, timeout_ms: int
    ) -> MediaRecord:
        """The record once uploaded; 504 M_NOT_YET_UPLOADED after ``timeout_ms``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_WAIT_MS) / 1000
        while True:
            record = await self.store.get(server_name, media_id)
            if record is None or record.quarantined:
                raise not_found()
            if not record.pending:
                return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
            key = (server_name, media_id)
            event = self._uploaded.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), min(remaining, _POLL_SECONDS))
            except TimeoutError:
                # Forget the event, so IDs never uploaded do not pile up here; a
                # waiter still on it sees the upload at its next poll.
                self._uploaded.pop(key, None)

    def _forget_rows_changed_elsewhere(self) -> None:
        """Media rows are cached (storage/media.py); a quarantine or deletion by
        the ``ranvier media`` command, another process, is announced by the
        store's change mark: then the whole cache goes, so that the change
        holds from the next request on."""
        mark = self.files.change_mark()
        if mark != self._changes_seen:
            self.store.forget_all()
            self._changes_seen = mark

    async def _record(
        self, server_name: str, media_id: str, *, timeout_ms: int, allow_remote: bool
    ) -> MediaRecord:
        check_server_name(server_name)
        check_media_id(media_id)
        self._forget_rows_changed_elsewhere()
        if server_name == self.server_name:
            return await self._wait_for_upload(server_name, media_id, timeout_ms)
        record = await self.store.get(server_name, media_id)
        if record is None or record.pending:
            if not allow_remote:
                raise not_found("Remote media not cached here and allow_remote is false")
            if self.remote_fetcher is None:
                raise not_found("Remote media is not available: federation is not set up")
            record = await self.remote_fetcher(server_name, media_id, timeout_ms)
        if record.quarantined:
            raise not_found()
        return record

    def _frozen(self, record: MediaRecord) -> bool:
        """v1.11's freeze: media stored at or after the moment are authenticated-only
        (for remote media, "newly-uploaded" is when the cache was filled)."""
        freeze = self.config.freeze_unauthenticated_after
        stored = record.uploaded_ts if record.uploaded_ts is not None else record.created_ts
        return freeze is not None and stored >= freeze

    def _file(self, record: MediaRecord) -> MediaFile:
        assert record.sha256 is not None and record.size is not None
        return MediaFile(
            self.files.path(record.sha256),
            record.content_type or DEFAULT_CONTENT_TYPE,
            record.upload_name,
            record.size,
            record.sha256,
        )

    async def download(
        self,
        server_name: str,
        media_id: str,
        *,
        timeout_ms: int = DEFAULT_WAIT_MS,
        allow_remote: bool = True,
        legacy: bool = False,
    ) -> MediaFile:
        """The file of ``mxc://server_name/media_id``; 404 if unknown or quarantined."""
        record = await self._record(
            server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote
        )
        if legacy and self._frozen(record):
            raise not_found("This media is only served by the authenticated media endpoints")
        return self._file(record)

    # --- thumbnails ------------------------------------------------------------------

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        *,
        animated: bool = False,
        timeout_ms: int = DEFAULT_WAIT_MS,
        allow_remote: bool = True,
        legacy: bool = False,
    ) -> MediaFile:
        """A thumbnail at least ``width``×``height`` (or the original when it is
        smaller than that), generated once and cached."""
        if width <= 0 or height <= 0:
            raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive")
        if method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
        record = await self._record(
            server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote
        )
        if legacy and self._frozen(record):
            raise not_found("This media is only served by the authenticated media endpoints")
        return await self.thumbnail_of(record, width, height, method, animated)

    async def _thumbnail_soon(self, record: MediaRecord) -> None:
        """Make an uploaded image's standard thumbnails (media.thumbnails_on_upload):
        the Content repository's "Thumbnails" section lets servers pre-compute
        the standard sizes, and Synapse makes them all before answering the
        upload. Here the answer waits for the first size only (the one clients
        ask for first: timeline previews), at most FIRST_THUMBNAIL_WAIT_S; the
        others are made after it, in the background, from one decode."""
        if (
            not self.config.thumbnails_on_upload
            or not _thumbnailable(record.content_type)
            or len(self._eager_tasks) >= MAX_EAGER_UPLOADS
        ):
            return
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._make_standard_thumbnails(record, first))
        self._eager_tasks.add(task)
        task.add_done_callback(self._eager_tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(first), FIRST_THUMBNAIL_WAIT_S)

    async def _make_standard_thumbnails(
        self, record: MediaRecord, first: asyncio.Future[None]
    ) -> None:
        """The first size as a request would make it (a request arriving meanwhile
        joins it), then the others from one decode of the image."""
        width, height, method = EAGER_THUMBNAILS[0]
        try:
            try:
                await self.thumbnail_of(record, width, height, method, False)
            finally:
                if not first.done():
                    first.set_result(None)
            await asyncio.sleep(BACKGROUND_DELAY_S)
            await self._make_thumbnails_together(record, list(EAGER_THUMBNAILS[1:]))
        except MatrixError:
            return  # not an image we can thumbnail (corrupt, too many pixels): no size will do
        except Exception:
            logger.exception("Thumbnails of %s could not be made", self._mxc(record.media_id))

    async def _make_thumbnails_together(
        self, record: MediaRecord, boxes: list[tuple[int, int, str]]
    ) -> None:
        cached = {
            (t.width, t.height, t.method)
            for t in await self.store.thumbnails(record.server_name, record.media_id)
            if not t.animated
        }
        missing = [box for box in boxes if box not in cached]
        if not missing:
            return
        from ranvier.services.media.thumbnailer import make_static_thumbnails  # Pillow

        source = self._file(record)
        # Not in _thumbnail_slots: requests would wait behind this low-priority work.
        made = await asyncio.get_running_loop().run_in_executor(
            self._background,
            make_static_thumbnails,
            source.path,
            missing,
            self.config.max_thumbnail_pixels,
        )
        for (width, height, method), thumb in zip(missing, made, strict=True):
            if thumb is None:
                continue
            stored = await self.files.write_bytes(thumb.data)
            await self.store.add_thumbnail(
                record.server_name,
                record.media_id,
                ThumbnailRecord(
                    width, height, method, False, thumb.content_type, stored.size, stored.sha256
                ),
            )

    async def thumbnail_of(
        self, record: MediaRecord, width: int, height: int, method: str, animated: bool
    ) -> MediaFile:
        if not _thumbnailable(record.content_type):
            raise cannot_thumbnail(f"{record.content_type} is not an image type we thumbnail")
        box = thumbnail_box(width, height, method)
        key = (record.server_name, record.media_id, box, method, animated, width, height)
        in_flight = self._thumbnails_in_flight.get(key)
        if in_flight is not None:
            return await asyncio.shield(in_flight)
        future: asyncio.Future[MediaFile] = asyncio.get_running_loop().create_future()
        self._thumbnails_in_flight[key] = future
        try:
            result = await self._cached_or_new_thumbnail(
                record, box, method, animated, (width, height)
            )
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            del self._thumbnails_in_flight[key]

    async def _cached_or_new_thumbnail(
        self,
        record: MediaRecord,
        box: tuple[int, int],
        method: str,
        animated: bool,
        requested: tuple[int, int],
    ) -> MediaFile:
        for cached in await self.store.thumbnails(record.server_name, record.media_id):
            if (cached.width, cached.height, cached.method, cached.animated) == (
                *box,
                method,
                animated,
            ) and self.files.complete(cached.sha256, cached.size):
                return MediaFile(
                    self.files.path(cached.sha256),
                    cached.content_type,
                    None,
                    cached.size,
                    cached.sha256,
                )
        source = self._file(record)
        from ranvier.services.media.thumbnailer import make_thumbnail  # Pillow, on first use

        try:
            async with self._thumbnail_slots:
                thumb = await asyncio.to_thread(
                    make_thumbnail,
                    source.path,
                    box,
                    method,
                    animated,
                    self.config.max_thumbnail_pixels,
                    requested,
                )
        except NotThumbnailable:
            # "When the content is smaller than the requested dimensions, servers
            # should return the original content rather than thumbnail it."
            return MediaFile(source.path, source.content_type, None, source.size, source.sha256)
        stored = await self.files.write_bytes(thumb.data)
        await self.store.add_thumbnail(
            record.server_name,
            record.media_id,
            ThumbnailRecord(*box, method, animated, thumb.content_type, stored.size, stored.sha256),
        )
        return MediaFile(
            self.files.path(stored.sha256), thumb.content_type, None, stored.size, stored.sha256
        )
