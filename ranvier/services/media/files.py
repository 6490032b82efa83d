"""Media files on disk, content-addressed by SHA-256.

A file is written under ``tmp/`` while its bytes stream in, hashed on the way,
fsynced, then renamed to ``ab/cd/<sha256>``: a rename is atomic, so a file under
its hash is always complete, and two uploads of the same bytes end as one file
(the second rename replaces identical bytes). A failed or refused upload leaves
nothing behind: its temporary file is removed.

An upload is made durable while it arrives: every ``_FLUSH_EVERY`` bytes the
writer thread follows its write with ``fdatasync``, so that the fsync at the
end has only the last pages and the metadata left. Where the disk is a virtual
one whose flush is what writes the data out (measured here: a 10 MiB file
written to the page cache, then fsynced: 15-19 ms in the fsync, even after
``sync_file_range`` had the pages written out, even after O_DIRECT writes), this
overlaps the flush with the receiving instead of adding it at the end: the final
fsync of a 10 MiB upload took 14-28 ms with ``sync_file_range(WRITE)`` (the
approach before this one) and 0.1 ms with flushes on the way
(docs/performance.md, "Media: flushing uploads on the way"). The final fsync
still decides durability.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ranvier.errors import MatrixError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
#: Bytes gathered before one write to disk (in a worker thread), and the most
#: bytes of one upload handed to writes not yet done (see write_stream): with
#: 128 KiB, 20 concurrent uploads hold ~19 MiB over idle (docs/performance.md).
_WRITE_BATCH = 128 * 1024
#: The batch while at most _FEW_STREAMS streams are being written at once: each
#: batch costs the event loop a hand-off to a worker thread, and on a busy
#: machine waking a thread often costs the loop its CPU for a while; 1 MiB
#: batches make 10 hand-offs of a 10 MiB upload instead of ~40 (measured: server
#: CPU per 10 MiB upload 28-31 ms instead of 34-39 ms, load ~7.5); the memory it
#: costs is bounded by _FEW_STREAMS_IN_FLIGHT below, only while few are in progress.
_FEW_STREAMS_BATCH = 1024 * 1024
_FEW_STREAMS = 2


#: A durable stream is flushed to the disk (``fdatasync`` in the writer thread)
#: each time this many bytes were written since its last flush: with 1 MiB
#: batches, after each (measured against every 2 MiB: 210-230 against 202-203
#: MiB/s for one 10 MiB upload at a time).
_FLUSH_EVERY = 1024 * 1024
#: The most bytes of one upload handed to writes not yet done while few streams
#: are written: a flush holds the writes behind it, and the loop goes on
#: receiving meanwhile (4 MiB: 1.1-1.3× the single-upload throughput of 2 MiB,
#: and 8 MiB no more than 4). With many streams, one batch.
_FEW_STREAMS_IN_FLIGHT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int


def too_large(max_size: int) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", f"Media is larger than the limit of {max_size} bytes")


#: A file of the store's root that grows by one byte each time another process
#: (the ``ranvier media`` command) changed media rows: see
#: :meth:`MediaFiles.announce_change`.
CHANGES_FILE = "metadata-changes"

#: What :meth:`MediaFiles.change_mark` returns: the changes file's identity and
#: size, or None while there is none.
ChangeMark = tuple[int, int, int] | None


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self._tmp_ready = False
        self._changes = root / CHANGES_FILE
        self._streams = 0  # write_stream calls in progress

    def announce_change(self) -> None:
        """Tell the servers sharing this store that media rows changed (a
        quarantine, a deletion): each server caches media rows
        (``storage/media.py``) and drops that cache when :meth:`change_mark`
        differs from the one it saw. Called after the change is committed;
        one appended byte makes the file's size grow, so that every change
        shows, however close in time (a modification time may not move)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._changes, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)

    def change_mark(self) -> ChangeMark:
        """The changes file's (device, inode, size): one ``stat`` of a file in the
        kernel's cache, a few microseconds, made on the event loop by every
        download and thumbnail request."""
        try:
            stat = os.stat(self._changes)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size)

    def path(self, sha256: str) -> Path:
        """The file of a hash; only ever built from a hash we computed (never a
        client's text), and checked anyway so no path can leave the store."""
        if not _SHA256_HEX.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def complete(self, sha256: str, size: int) -> bool:
        """The file is there with its full size (thumbnails are not fsynced: after
        a crash one may be short, and is then made again)."""
        return _has_size(self.path(sha256), size)

    async def write_stream(
        self, chunks: AsyncIterator[bytes], max_size: int, *, durable: bool = True
    ) -> StoredFile:
        """Store a stream; 413 M_TOO_LARGE as soon as it passes ``max_size``.

        Each chunk is hashed on the event loop as it arrives (SHA-256 in OpenSSL
        costs ~0.6 ms per MiB, less than the copy the HTTP parser already
        made), and written at its offset (``pwritev``, no join) by a worker
        thread without the loop waiting for that write: the loop goes on
        draining the socket, so aiohttp's receive buffer of this upload stays
        small. A durable stream's writes are followed by a flush every
        ``_FLUSH_EVERY`` bytes (see the module's text); a stream's writes are
        not ordered among themselves (each at its own offset, and the final
        fsync comes after all of them): a batch's write into the page cache
        runs while an earlier one's flush waits for the disk. At most
        ``_FEW_STREAMS_IN_FLIGHT`` bytes (while few streams are written) or one
        batch (``_WRITE_BATCH``) are on their way to disk; past that the upload
        waits for its oldest write (bounded memory, and backpressure on the
        sender when the disk is the slow part).
        ``durable`` (uploads): fsync the file and its folder before returning;
        derived files (thumbnails) skip it: a lost one is made again.
        """
        if not self._tmp_ready:
            await asyncio.to_thread(self.tmp.mkdir, parents=True, exist_ok=True)
            self._tmp_ready = True
        tmp_path = self.tmp / f"{secrets.token_hex(16)}.part"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        digest = hashlib.sha256()
        writes: deque[tuple[int, asyncio.Future[None]]] = deque()
        in_flight = 0
        flushed = 0  # bytes written before the last flush asked for
        self._streams += 1
        try:
            size = 0
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                if size + batched + len(chunk) > max_size:
                    raise too_large(max_size)
                digest.update(chunk)
                batch.append(chunk)
                batched += len(chunk)
                few = self._streams <= _FEW_STREAMS
                limit = _FEW_STREAMS_BATCH if few else _WRITE_BATCH
                if batched >= limit:
                    size += batched
                    flush = durable and size - flushed >= _FLUSH_EVERY
                    if flush:
                        flushed = size
                    writes.append((batched, self._write(fd, batch, size - batched, flush)))
                    in_flight += batched
                    batch, batched = [], 0
                    while in_flight > (_FEW_STREAMS_IN_FLIGHT if few else limit):
                        done, future = writes.popleft()
                        await future
                        in_flight -= done
            if batch:  # the last one: the fsync in _finish flushes it
                writes.append((batched, self._write(fd, batch, size, False)))
                size += batched
            while writes:
                await writes.popleft()[1]
            sha256 = digest.hexdigest()
            await asyncio.to_thread(_finish, fd, tmp_path, self.path(sha256), durable)
            return StoredFile(sha256, size)
        except BaseException:
            # A thread may still write into the file: let those end first.
            if writes:
                await asyncio.wait([future for _, future in writes])
            await asyncio.to_thread(_discard, fd, tmp_path)
            raise
        finally:
            self._streams -= 1

    @staticmethod
    def _write(fd: int, batch: list[bytes], offset: int, flush: bool) -> asyncio.Future[None]:
        return asyncio.ensure_future(asyncio.to_thread(_write_at, fd, batch, offset, flush))

    async def write_bytes(self, data: bytes) -> StoredFile:
        """Store bytes already in memory (thumbnails: derived, so not fsynced)."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(one(), len(data), durable=False)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path(sha256).unlink, missing_ok=True)


def _write_at(fd: int, batch: list[bytes], offset: int, flush: bool) -> None:
    """Write chunks at their offset (worker thread; releases the GIL), then, if
    asked, flush what the file has so far to the disk (see the module's text)."""
    written = os.pwritev(fd, batch, offset)
    total = sum(len(chunk) for chunk in batch)
    if written < total:  # a short write (rare on a regular file): the rest, plainly
        rest = b"".join(batch)[written:]
        while rest:
            count = os.pwrite(fd, rest, offset + written)
            written += count
            rest = rest[count:]
    if flush:
        _flush(fd)


#: fdatasync (fsync where there is none): a name of this module's, which the
#: tests replace to see the flushes.
_flush = getattr(os, "fdatasync", os.fsync)


def _finish(fd: int, tmp_path: Path, final: Path, durable: bool) -> None:
    """fsync (uploads), then the atomic rename into place (worker thread)."""
    try:
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not durable and _has_size(final, os.stat(tmp_path).st_size):
        # The same bytes are stored already, maybe durably (an upload that
        # happens to equal this thumbnail): never swap them for an unsynced copy.
        tmp_path.unlink()
        return
    os.replace(tmp_path, final)
    if durable:
        _fsync_dir(final.parent)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(fd: int, tmp_path: Path) -> None:
    try:
        os.close(fd)
    finally:
        tmp_path.unlink(missing_ok=True)
