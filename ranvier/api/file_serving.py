"""Serving a stored media file (Client-Server API, "Content repository"): the
body of downloads and thumbnails, with byte ranges (RFC 9110 §14) and an
entity tag (the file's SHA-256: its bytes never change).

Most media are small (thumbnails are a few KiB, most uploads well under a
MiB) and were read or written recently, so their bytes sit in the kernel's
page cache. aiohttp's ``FileResponse`` would open and ``stat`` the file in a
worker thread, then, as uvloop has no ``loop.sendfile``, read it in 256 KiB
pieces, each in a worker thread again: five thread hops for 1 MiB, each
~50 µs when the machine is idle and much more when it is not. Here the
file is opened and ``fstat``-ed on the event loop (a few µs for a file
whose inode the kernel has cached; a cold one costs a metadata read, as it
does in any server that opens files on its loop), and its bytes are read
with ``preadv2(RWF_NOWAIT)``, which copies from the page cache and refuses,
rather than waits, if the disk would have to be read: only then does a
worker thread read the rest.

A file of up to :data:`SMALL_BODY` bytes is answered as one body. A larger
one is read in pieces of up to :data:`PIECE` bytes into a buffer taken from a
small pool and written with the connection's flow control: a fresh 1 MiB
buffer for each download would cost the kernel 256 page faults and as many
zeroed pages (measured: ~40% of the server's CPU time for a 1 MiB download).
A buffer goes back to the pool only once the transport has sent all of it.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

from aiohttp import web

from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaFile

#: Files up to this size are read into a buffer of their own, answered as one body.
SMALL_BODY = 64 * 1024
#: Larger files are read and written in pieces of up to this size, through
#: buffers of the pool (at most POOLED of them kept).
PIECE = 1024 * 1024
POOLED = 2
#: Pieces of federation's multipart answers (read_at, each its own buffer).
CHUNK = 256 * 1024
#: preadv2's "do not wait for the disk" flag (Linux ≥ 4.14; elsewhere 0: every
#: read goes to a worker thread).
_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
#: What preadv2 answers when the data is not in memory, or when the file
#: system does not support the flag.
_WOULD_WAIT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EOPNOTSUPP, errno.EINVAL})


def _read_cached(fd: int, view: memoryview, offset: int) -> int:
    """Bytes copied into ``view`` from the page cache without waiting for the
    disk (event loop); 0 when that would mean waiting."""
    if not _NOWAIT:
        return 0
    try:
        return os.preadv(fd, [view], offset, _NOWAIT)
    except OSError as exc:
        if exc.errno in _WOULD_WAIT:
            return 0
        raise


def _read_blocking(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` (worker thread); fewer bytes at end of file."""
    done = 0
    while done < len(view):
        count = os.preadv(fd, [view[done:]], offset + done)
        if count == 0:
            break
        done += count
    return done


async def _fill(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` with the file's bytes from ``offset``: from the page cache
    on the event loop when they are all there, else the rest in one worker
    thread."""
    done = _read_cached(fd, view, offset)
    if done < len(view):
        done += await asyncio.to_thread(_read_blocking, fd, view[done:], offset + done)
    if done < len(view):  # the file is shorter than it was a moment ago: never send a short body
        raise MatrixError(404, "M_NOT_FOUND", "Media not found")


async def read_at(fd: int, offset: int, count: int) -> bytearray:
    """``count`` bytes of the file from ``offset``, in a new buffer."""
    buffer = bytearray(count)
    await _fill(fd, memoryview(buffer), offset)
    return buffer


_pool: list[bytearray] = []


def _take_buffer() -> bytearray:
    return _pool.pop() if _pool else bytearray(PIECE)


def _give_back(buffer: bytearray, request: web.Request) -> None:
    """Pool ``buffer`` if nothing refers to it any more: the transport keeps
    (a view of) what it could not send yet."""
    transport = request.transport
    if len(_pool) < POOLED and transport is not None and transport.get_write_buffer_size() == 0:
        _pool.append(buffer)


def open_media(media: MediaFile) -> tuple[int, int]:
    """(descriptor, size) of a stored file; 404 if it is gone (deleted by
    ``ranvier media delete-old`` while the request was on its way)."""
    try:
        fd = os.open(media.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MatrixError(404, "M_NOT_FOUND", "Media not found") from None
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match (RFC 9110 §13.1.2): a list of tags compared weakly, or ``*``."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _wanted_range(request: web.Request, etag: str, size: int) -> tuple[int, int] | None:
    """(offset, count) the Range header asks for, or None for the whole file.
    Raises ValueError when the range cannot be satisfied (416)."""
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        # RFC 9110 §13.1.5: a validator that does not match strongly (or a date:
        # no Last-Modified is sent) means the whole representation.
        return None
    wanted = request.http_range  # ValueError for what is not "bytes=a-b", "a-" or "-n"
    start: int = wanted.start
    end: int | None = wanted.stop
    if start < 0:  # the last -start bytes
        start = max(size + start, 0)
        count = size - start
    else:
        count = min(end if end is not None else size, size) - start
    if start >= size:
        raise ValueError("range starts beyond the end")
    return start, count


async def send_media(
    request: web.Request, media: MediaFile, headers: dict[str, str]
) -> web.StreamResponse:
    """The file ``media`` with ``headers``: 200, 206 for a satisfiable Range,
    416 for another, 304 when If-None-Match holds its entity tag."""
    etag = f'"{media.sha256}"'
    headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    fd, size = open_media(media)
    try:
        try:
            wanted = _wanted_range(request, etag, size)
        except ValueError:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        status, offset, count = 200, 0, size
        if wanted is not None:
            status, (offset, count) = 206, wanted
            headers["Content-Range"] = f"bytes {offset}-{offset + count - 1}/{size}"
        if request.method == "HEAD" or count == 0:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = count
            await response.prepare(request)
            await response.write_eof()
            return response
        if count <= SMALL_BODY:
            body = await read_at(fd, offset, count)
            return web.Response(status=status, body=body, headers=headers)
        return await _send_pieces(request, fd, offset, count, status, headers)
    finally:
        os.close(fd)


async def _send_pieces(
    request: web.Request,
    fd: int,
    offset: int,
    count: int,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = count
    await response.prepare(request)
    end = offset + count
    while offset < end:
        size = min(PIECE, end - offset)
        buffer = _take_buffer()
        piece = memoryview(buffer)[:size]
        await _fill(fd, piece, offset)
        await response.write(piece)  # waits while the client's buffer is full
        del piece
        _give_back(buffer, request)
        offset += size
    await response.write_eof()
    return response
