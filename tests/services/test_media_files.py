"""The media store's files (services/media/files.py): uploads are flushed to the
disk as they are written, derived files (thumbnails) are not; a refused or
broken stream leaves no file; the change mark that tells servers another
process changed media rows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ranvier.errors import MatrixError
from ranvier.services.media import files
from ranvier.services.media.files import CHANGES_FILE, MediaFiles


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)  # as a socket would: other uploads go on meanwhile
        yield data[start : start + size]


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file's size at each flush asked for on the way (the final fsync is
    not one of them)."""
    sizes: list[int] = []

    def record(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        os.fdatasync(fd)

    monkeypatch.setattr(files, "_flush", record)
    return sizes


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch handed to a writer thread."""
    sizes: list[int] = []
    write_at = files._write_at

    def record(fd: int, batch: list[bytes], offset: int, flush: bool) -> None:
        sizes.append(sum(len(chunk) for chunk in batch))
        write_at(fd, batch, offset, flush)

    monkeypatch.setattr(files, "_write_at", record)
    return sizes


async def test_an_upload_is_flushed_every_mebibyte_on_the_way(
    tmp_path: Path, flushes: list[int]
) -> None:
    """1 MiB batches of 100,000-byte chunks are 1,100,000 bytes: each is followed
    by a flush except the last (the final fsync has it)."""
    store = MediaFiles(tmp_path)
    data = os.urandom(5_000_000)
    stored = await store.write_stream(_chunks(data, 100_000), 10**7)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.path(stored.sha256).read_bytes() == data
    # Writes are not ordered among themselves: a flush sees at least its own batch.
    assert len(flushes) == 4
    assert all(size >= 1_100_000 for size in flushes)
    assert max(flushes) >= 4_400_000


async def test_many_uploads_at_once_flush_every_mebibyte_of_small_batches(
    tmp_path: Path, flushes: list[int], batches: list[int]
) -> None:
    """Past _FEW_STREAMS streams, batches are 128 KiB (here 200,000 bytes: two
    chunks) and a stream is flushed once a mebibyte was written since its last."""
    store = await _started_store(tmp_path)
    payloads = [os.urandom(2_500_000) for _ in range(files._FEW_STREAMS + 1)]
    stored = await asyncio.gather(
        *(store.write_stream(_chunks(data, 100_000), 10**7) for data in payloads)
    )
    assert [s.sha256 for s in stored] == [hashlib.sha256(d).hexdigest() for d in payloads]
    assert max(batches) == 200_000
    # Each stream: flushes after 1,000,000 + 200,000 and after 2,400,000 bytes.
    assert len(flushes) == 2 * len(payloads)
    assert store._streams == 0


async def test_batches_are_large_for_a_lone_upload_and_small_for_many(
    tmp_path: Path, batches: list[int]
) -> None:
    """Few streams at once: 1 MiB batches (fewer thread hand-offs); more: 128 KiB
    (bounded memory across concurrent uploads). A batch closes with the chunk
    that reaches the limit: the chunks here are 100,000 bytes."""
    store = MediaFiles(tmp_path)
    await store.write_stream(_chunks(os.urandom(3_000_000), 100_000), 10**7)
    assert batches == [1_100_000, 1_100_000, 800_000]
    batches.clear()  # (the first upload made tmp/: the next ones start together)
    payloads = [os.urandom(600_000) for _ in range(files._FEW_STREAMS + 1)]
    await asyncio.gather(*(store.write_stream(_chunks(data, 100_000), 10**7) for data in payloads))
    assert batches and max(batches) == 200_000
    assert store._streams == 0


async def _writes_before_waiting(store: MediaFiles, streams: int) -> list[int]:
    """Start ``streams`` uploads of 12 MB whose writes never end; the bytes each
    has handed to writers once every one of them waits for its oldest write."""
    gate = threading.Event()
    handed: dict[int, int] = {}
    lock = threading.Lock()

    def stuck(fd: int, batch: list[bytes], offset: int, flush: bool) -> None:
        with lock:
            handed[fd] = handed.get(fd, 0) + sum(len(chunk) for chunk in batch)
        gate.wait(10)

    original = files._write_at
    files._write_at = stuck
    try:
        tasks = [
            asyncio.ensure_future(
                store.write_stream(_chunks(os.urandom(12_000_000), 100_000), 10**8)
            )
            for _ in range(streams)
        ]
        previous: dict[int, int] = {}
        while True:  # until nothing more is handed over
            await asyncio.sleep(0.2)
            with lock:
                now = dict(handed)
            if now == previous and len(now) == streams:
                break
            previous = now
        gate.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        files._write_at = original
        gate.set()
    return sorted(previous.values())


async def test_the_bytes_on_their_way_to_disk_are_bounded(tmp_path: Path) -> None:
    """A stream hands batches to writes not yet done until they hold more than
    its bound, then waits: a lone upload, _FEW_STREAMS_IN_FLIGHT (4 MiB: 4
    batches of 1,100,000 bytes); many at once, one batch of 200,000 bytes each."""
    store = MediaFiles(tmp_path / "one")
    assert await _writes_before_waiting(store, 1) == [4_400_000]
    store = await _started_store(tmp_path / "many")
    held = await _writes_before_waiting(store, files._FEW_STREAMS + 2)
    assert held == [200_000] * (files._FEW_STREAMS + 2)
    assert list(store.tmp.iterdir()) == [] and store._streams == 0


async def test_thumbnails_are_not_flushed(tmp_path: Path, flushes: list[int]) -> None:
    store = MediaFiles(tmp_path)
    stored = await store.write_bytes(b"thumbnail bytes" * 100_000)
    assert store.path(stored.sha256).stat().st_size == 1_500_000
    assert flushes == []


async def _started_store(root: Path) -> MediaFiles:
    """A store whose first upload already ran (its ``tmp/`` is made): uploads
    started together then all count as in progress before any reads a chunk,
    so each one's batch size does not depend on which started first."""
    store = MediaFiles(root)
    await store.write_stream(_chunks(b"", 1), 0)
    return store


def _leftovers(store: MediaFiles) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


async def test_over_the_limit_mid_stream_leaves_no_file(tmp_path: Path, batches: list[int]) -> None:
    """413 after batches were already written: those writes end, the temporary
    file goes, and nothing is stored."""
    store = MediaFiles(tmp_path)
    with pytest.raises(MatrixError) as refused:
        await store.write_stream(_chunks(os.urandom(3_000_000), 100_000), 2_500_000)
    assert (refused.value.status, refused.value.errcode) == (413, "M_TOO_LARGE")
    assert batches  # some batches were written before the refusal
    assert _leftovers(store) == [] and store._streams == 0


async def test_a_broken_stream_leaves_no_file(tmp_path: Path, batches: list[int]) -> None:
    """The body ends early (a client gone, a body shorter than its length): the
    error reaches the caller and what was written so far is removed."""
    store = MediaFiles(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in _chunks(os.urandom(2_500_000), 100_000):
            yield chunk
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        await store.write_stream(broken(), 10**7)
    assert batches and _leftovers(store) == []


async def test_a_failed_write_fails_the_upload_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MediaFiles(tmp_path)

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "_write_at", full_disk)
    with pytest.raises(OSError, match="No space"):
        await store.write_stream(_chunks(os.urandom(3_000_000), 100_000), 10**7)
    assert _leftovers(store) == [] and store._streams == 0


@pytest.mark.parametrize("size", [0, 1, 4096, 1_048_576])
async def test_edge_sizes_are_stored_exactly(tmp_path: Path, size: int) -> None:
    store = MediaFiles(tmp_path)
    data = os.urandom(size)
    stored = await store.write_stream(_chunks(data, 65_536), 10**7)
    assert store.path(stored.sha256).read_bytes() == data
    assert stored == files.StoredFile(hashlib.sha256(data).hexdigest(), size)


def test_each_announced_change_changes_the_mark(tmp_path: Path) -> None:
    store = MediaFiles(tmp_path / "store")  # not there yet: no mark, and no error
    assert store.change_mark() is None
    seen = {store.change_mark()}
    for _ in range(3):  # however close in time
        store.announce_change()
        mark = store.change_mark()
        assert mark not in seen
        seen.add(mark)
    assert (tmp_path / "store" / CHANGES_FILE).read_bytes() == b"..."
