"""Media files on disk, content-addressed by SHA-256.

A file is written under ``tmp/`` while its bytes stream in, hashed on the way,
fsynced, then renamed to ``ab/cd/<sha256>``: a rename is atomic, so a file under
its hash is always complete, and two uploads of the same bytes end as one file
(the second rename replaces identical bytes). A failed or refused upload leaves
nothing behind: its temporary file is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ranvier.errors import MatrixError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
#: Bytes gathered before one write to disk (in a worker thread).
_WRITE_BATCH = 128 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int


def too_large(max_size: int) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", f"Media is larger than the limit of {max_size} bytes")


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def path(self, sha256: str) -> Path:
        """The file of a hash; only ever built from a hash we computed (never a
        client's text), and checked anyway so no path can leave the store."""
        if not _SHA256_HEX.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    async def write_stream(self, chunks: AsyncIterator[bytes], max_size: int) -> StoredFile:
        """Store a stream; 413 M_TOO_LARGE as soon as it passes ``max_size``.

        Hashing and writing happen in a worker thread, one batch at a time,
        while the event loop receives the next batch (hashlib and file writes
        release the GIL): at most two batches of an upload are in memory.
        """
        await asyncio.to_thread(self.tmp.mkdir, parents=True, exist_ok=True)
        tmp_path = self.tmp / f"{secrets.token_hex(16)}.part"
        handle: BinaryIO = await asyncio.to_thread(open, tmp_path, "wb")
        digest = hashlib.sha256()
        writing: asyncio.Future[None] | None = None
        try:
            size = 0
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise too_large(max_size)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _WRITE_BATCH:
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(
                        asyncio.to_thread(_write_batch, handle, digest, batch)
                    )
                    batch, batched = [], 0
            if writing is not None:
                await writing
            await asyncio.to_thread(_write_batch, handle, digest, batch)
            sha256 = digest.hexdigest()
            await asyncio.to_thread(_finish, handle, tmp_path, self.path(sha256))
            return StoredFile(sha256, size)
        except BaseException:
            if writing is not None:  # the thread may still use the file: let it end
                await asyncio.wait([writing])
            await asyncio.to_thread(_discard, handle, tmp_path)
            raise

    async def write_bytes(self, data: bytes) -> StoredFile:
        """Store bytes already in memory (thumbnails)."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(one(), len(data))

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path(sha256).unlink, missing_ok=True)


def _write_batch(handle: BinaryIO, digest: Any, batch: list[bytes]) -> None:
    """Hash and write chunks (worker thread; both release the GIL)."""
    for chunk in batch:
        digest.update(chunk)
        handle.write(chunk)


def _finish(handle: BinaryIO, tmp_path: Path, final: Path) -> None:
    """fsync, then the atomic rename into place (worker thread)."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_path, final)
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(handle: BinaryIO, tmp_path: Path) -> None:
    try:
        handle.close()
    finally:
        tmp_path.unlink(missing_ok=True)
