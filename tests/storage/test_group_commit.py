"""Group commit on SQLite (ranvier/storage/group_commit.py): nothing is
acknowledged before an fsync of the WAL that started after its COMMIT, and one
fsync serves every commit made while the previous one ran.

Fault injection: the database's fsync is replaced by one that records which
commits had returned when it started, and that can be held (a slow disk) or
made to fail (EIO). SQLite only: this is SQLite's writer; PostgreSQL makes
its commits durable itself (synchronous_commit, on by default).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ranvier.storage import Database, open_database
from ranvier.storage.engine import SqliteDatabase
from ranvier.storage.group_commit import DurabilityError, GroupCommit

SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"


class FakeDisk:
    """Stands in for os.fsync: counts calls, can be held and can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.error: OSError | None = None
        #: Rows in ``notes`` when each fsync of the WAL started (read with a fresh connection).
        self.rows_at_start: list[int] = []

    def fsync(self, fd: int) -> None:
        self.calls += 1
        self.started.set()
        self.release.wait(timeout=30)
        if self.error is not None:
            raise self.error
        os.fsync(fd)


def _group_commit(db: Database) -> GroupCommit:
    assert isinstance(db, SqliteDatabase)
    group_commit = db._group_commit
    assert group_commit is not None
    return group_commit


@pytest.fixture
async def durable_db(tmp_path: Path) -> AsyncIterator[tuple[Database, FakeDisk]]:
    db = await open_database(f"sqlite:///{tmp_path / 'ranvier.db'}")
    await db.execute(SCHEMA)
    disk = FakeDisk()
    _group_commit(db)._fsync = disk.fsync
    try:
        yield db, disk
    finally:
        disk.release.set()
        await db.close()


async def _insert(db: Database, body: str, done: list[str] | None = None) -> None:
    async with db.transaction() as txn:
        await txn.execute("INSERT INTO notes (body) VALUES (?)", body)
        txn.call_after_commit(lambda: done.append(body) if done is not None else None)


async def test_the_default_is_durable_and_normal_is_not(tmp_path: Path) -> None:
    durable = await open_database(f"sqlite:///{tmp_path / 'a.db'}")
    fast = await open_database(f"sqlite:///{tmp_path / 'b.db'}?synchronous=normal")
    memory = await open_database("sqlite:///:memory:")
    try:
        assert isinstance(durable, SqliteDatabase) and durable._group_commit is not None
        assert isinstance(fast, SqliteDatabase) and fast._group_commit is None
        assert isinstance(memory, SqliteDatabase) and memory._group_commit is None
        before = _group_commit(durable).fsyncs
        await durable.execute(SCHEMA)
        await _insert(durable, "one")
        assert _group_commit(durable).fsyncs == before + 2
    finally:
        for db in (durable, fast, memory):
            await db.close()


async def test_a_transaction_is_not_acknowledged_before_its_fsync(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    db, disk = durable_db
    disk.release.clear()
    done: list[str] = []
    writer = asyncio.create_task(_insert(db, "held", done))
    await asyncio.to_thread(disk.started.wait, 10)
    await asyncio.sleep(0.05)
    # Committed (another connection sees the row) but not yet fsynced: the
    # transaction block has not ended and its callbacks have not run.
    assert await db.fetch_val("SELECT COUNT(*) FROM notes WHERE body = 'held'") == 1
    assert not writer.done() and done == []
    disk.release.set()
    await asyncio.wait_for(writer, 10)
    assert done == ["held"]


async def test_a_transaction_not_asking_for_durability_ends_at_its_commit(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    """``durable=False`` (push actions, made again after a crash): the block
    ends once the commit is visible; its callbacks still wait for the fsync,
    in commit order after the durable transaction before it."""
    db, disk = durable_db
    disk.release.clear()
    done: list[str] = []
    durable = asyncio.create_task(_insert(db, "durable", done))
    await asyncio.to_thread(disk.started.wait, 10)
    async with db.transaction(durable=False) as txn:
        await txn.execute("INSERT INTO notes (body) VALUES (?)", "quick")
        txn.call_after_commit(lambda: done.append("quick"))
    # Ended while the fsync is still held; the row is visible to readers.
    assert await db.fetch_val("SELECT COUNT(*) FROM notes WHERE body = 'quick'") == 1
    assert not durable.done() and done == []
    disk.release.set()
    await asyncio.wait_for(durable, 10)
    while len(done) < 2:
        await asyncio.sleep(0.01)
    assert done == ["durable", "quick"]


async def test_a_failed_fsync_nobody_waits_for_still_fails_the_next_commits(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    db, disk = durable_db
    disk.error = OSError(5, "I/O error")
    async with db.transaction(durable=False) as txn:
        await txn.execute("INSERT INTO notes (body) VALUES (?)", "lost")
    with pytest.raises(DurabilityError):
        await _insert(db, "after")


async def test_commits_during_an_fsync_share_the_next_one(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    db, disk = durable_db
    disk.release.clear()
    done: list[str] = []
    first = asyncio.create_task(_insert(db, "first", done))
    await asyncio.to_thread(disk.started.wait, 10)
    calls_before = disk.calls
    # Twenty writers commit while the first fsync is held: none is acknowledged.
    others = [asyncio.create_task(_insert(db, f"w{n}", done)) for n in range(20)]
    while await db.fetch_val("SELECT COUNT(*) FROM notes") < 21:
        await asyncio.sleep(0.01)
    assert done == [] and not any(task.done() for task in [first, *others])
    disk.release.set()
    await asyncio.wait_for(asyncio.gather(first, *others), 10)
    # One more fsync covered all twenty (and callbacks ran in commit order).
    assert disk.calls == calls_before + 1
    assert done == ["first", *(f"w{n}" for n in range(20))]


async def test_stream_positions_advance_only_when_durable(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    from ranvier.storage.engine import next_stream_positions

    db, disk = durable_db
    before = (await db.stream_positions(["events"]))["events"]

    async def allocate() -> None:
        async with db.transaction() as txn:
            await next_stream_positions(txn, "events", 1)

    disk.release.clear()
    writer = asyncio.create_task(allocate())
    await asyncio.to_thread(disk.started.wait, 10)
    await asyncio.sleep(0.05)
    assert (await db.stream_positions(["events"]))["events"] == before
    disk.release.set()
    await asyncio.wait_for(writer, 10)
    assert (await db.stream_positions(["events"]))["events"] == before + 1


async def test_a_failed_fsync_is_never_acknowledged(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    db, disk = durable_db
    disk.error = OSError(5, "Input/output error")
    done: list[str] = []
    with pytest.raises(DurabilityError):
        await _insert(db, "lost?", done)
    assert done == []
    # Every later write fails too (after a failed fsync, a later one proving
    # nothing: the server must be restarted), single statements included.
    disk.error = None
    with pytest.raises(DurabilityError):
        await _insert(db, "after", done)
    with pytest.raises(DurabilityError):
        await db.execute("INSERT INTO notes (body) VALUES ('single')")
    assert done == []


async def test_a_cancelled_writer_still_publishes_its_commit(
    durable_db: tuple[Database, FakeDisk],
) -> None:
    """The commit happened: its callbacks run once durable even if the waiting
    request was cancelled (a client that went away)."""
    db, disk = durable_db
    disk.release.clear()
    done: list[str] = []
    writer = asyncio.create_task(_insert(db, "orphan", done))
    await asyncio.to_thread(disk.started.wait, 10)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    disk.release.set()
    for _ in range(200):
        if done:
            break
        await asyncio.sleep(0.01)
    assert done == ["orphan"]


async def test_close_waits_for_the_last_fsync(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'ranvier.db'}")
    await db.execute(SCHEMA)
    disk = FakeDisk()
    group_commit = _group_commit(db)
    group_commit._fsync = disk.fsync
    disk.release.clear()
    writer = asyncio.create_task(_insert(db, "last"))
    await asyncio.to_thread(disk.started.wait, 10)
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    disk.release.set()
    await asyncio.wait_for(asyncio.gather(writer, closing), 10)
    reopened = await open_database(f"sqlite:///{tmp_path / 'ranvier.db'}")
    try:
        assert await reopened.fetch_val("SELECT body FROM notes") == "last"
    finally:
        await reopened.close()
