"""The media store's files (services/media/files.py): uploads hand their pages to
the disk as they are written, derived files (thumbnails) do not; a refused or
broken stream leaves no file; the change mark that tells servers another
process changed media rows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
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
def write_backs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, count: int, flags: int) -> int:
        calls.append((offset, count, flags))
        return 0

    monkeypatch.setattr(files, "_sync_file_range", record)
    return calls


async def test_an_upload_starts_its_write_back_over_every_byte(
    tmp_path: Path, write_backs: list[tuple[int, int, int]]
) -> None:
    store = MediaFiles(tmp_path)
    data = os.urandom(2_500_000)
    stored = await store.write_stream(_chunks(data, 100_000), 10**7)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.path(stored.sha256).read_bytes() == data
    covered = 0
    for offset, count, flags in sorted(write_backs):
        assert (offset, flags) == (covered, 2)  # SYNC_FILE_RANGE_WRITE, contiguous
        covered += count
    assert covered == len(data) and len(write_backs) > 1


async def test_batches_are_large_for_a_lone_upload_and_small_for_many(
    tmp_path: Path, write_backs: list[tuple[int, int, int]]
) -> None:
    """Few streams at once: 1 MiB batches (fewer thread hand-offs); more: 128 KiB
    (bounded memory across concurrent uploads). A batch closes with the chunk
    that reaches the limit: the chunks here are 100,000 bytes."""
    store = MediaFiles(tmp_path)
    await store.write_stream(_chunks(os.urandom(3_000_000), 100_000), 10**7)
    assert [count for _, count, _ in write_backs] == [1_100_000, 1_100_000, 800_000]
    write_backs.clear()
    payloads = [os.urandom(600_000) for _ in range(files._FEW_STREAMS + 1)]
    stored = await asyncio.gather(
        *(store.write_stream(_chunks(data, 100_000), 10**7) for data in payloads)
    )
    assert [s.sha256 for s in stored] == [hashlib.sha256(d).hexdigest() for d in payloads]
    assert write_backs and max(count for _, count, _ in write_backs) == 200_000
    assert store._streams == 0


async def test_thumbnails_are_not_written_back_early(
    tmp_path: Path, write_backs: list[tuple[int, int, int]]
) -> None:
    store = MediaFiles(tmp_path)
    stored = await store.write_bytes(b"thumbnail bytes" * 1000)
    assert store.path(stored.sha256).stat().st_size == 15_000
    assert write_backs == []


def _leftovers(store: MediaFiles) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


async def test_over_the_limit_mid_stream_leaves_no_file(
    tmp_path: Path, write_backs: list[tuple[int, int, int]]
) -> None:
    """413 after batches were already written: those writes end, the temporary
    file goes, and nothing is stored."""
    store = MediaFiles(tmp_path)
    with pytest.raises(MatrixError) as refused:
        await store.write_stream(_chunks(os.urandom(3_000_000), 100_000), 2_500_000)
    assert (refused.value.status, refused.value.errcode) == (413, "M_TOO_LARGE")
    assert write_backs  # some batches were written before the refusal
    assert _leftovers(store) == [] and store._streams == 0


async def test_a_broken_stream_leaves_no_file(
    tmp_path: Path, write_backs: list[tuple[int, int, int]]
) -> None:
    """The body ends early (a client gone, a body shorter than its length): the
    error reaches the caller and what was written so far is removed."""
    store = MediaFiles(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in _chunks(os.urandom(2_500_000), 100_000):
            yield chunk
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        await store.write_stream(broken(), 10**7)
    assert write_backs and _leftovers(store) == []


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_sync_file_range_is_found_and_works(tmp_path: Path) -> None:
    sync_file_range = files._load_sync_file_range()
    assert sync_file_range is not None
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    fd = os.open(path, os.O_RDWR)
    try:
        assert sync_file_range(fd, 0, 8192, 2) == 0
    finally:
        os.close(fd)


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
