"""Group commit: SQLite commits made durable by one shared fsync of the WAL.

DESIGN.md principle 5, "nothing acknowledged is lost": a write is acknowledged
(its transaction block ends, its after-commit callbacks publish its stream
positions and wake /sync) only once it would survive a power loss.

SQLite can do that by itself (``PRAGMA synchronous = FULL``: an fsync of the
WAL inside every COMMIT), but then every writer pays a whole fsync while
holding the single writer, and writers queue behind each other's fsyncs. Here
the connection runs with ``synchronous = NORMAL``: a COMMIT appends the
transaction's frames, commit frame included, to the ``-wal`` file with
``write()`` and returns (https://www.sqlite.org/wal.html); the writer moves on
to the next transaction at once. This module then makes the WAL durable with
``fsync()`` on its own descriptor of that file, off the event loop: each commit
gets a sequence number, and one fsync makes durable every commit that had
returned before the fsync started. Commits that return while an fsync runs
wait for the next one, which covers them all: under load, one fsync serves
many writers.

Why this is as durable as ``synchronous = FULL``:

- fsync applies to the file (the inode), whichever descriptor asks; the WAL
  is appended to and never replaced while the writer connection is open (a
  checkpoint resets it to be written again from the start, in place, and
  ``journal_size_limit`` truncates it in place).
- WAL frames are only ever appended after earlier ones, so a durable commit
  implies every earlier commit is durable too: commits complete in order.
- In NORMAL mode SQLite itself syncs the WAL before each checkpoint and the
  database file after it (https://www.sqlite.org/pragma.html#pragma_synchronous),
  so what a checkpoint moved into the database file stays durable.
- The directory is fsynced once the WAL file exists, so its directory entry
  (and the database file's) survives a power loss too.

One difference remains, and is accepted: between a COMMIT and its fsync, other
readers of this process may already see the data (SQLite's WAL makes it
visible at COMMIT), though no stream position announces it yet.

An fsync that fails is fatal for durability (after a failed fsync, Linux may
drop the dirty pages and report success later: PostgreSQL's "fsyncgate"): the
commits waiting for it, and every later one, fail with the error, and the
server must be restarted to write again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DurabilityError", "GroupCommit"]


class DurabilityError(OSError):
    """The WAL could not be made durable: committed data may be lost on power loss."""


class GroupCommit:
    """Durability of the commits of one SQLite writer connection (see the module docstring).

    Call :meth:`committed` on the event loop right after each COMMIT returned;
    await what it returns. ``on_durable(token)`` runs, in commit order, once
    that commit is durable; ``on_failed(token)`` if it cannot be made so.
    """

    def __init__(
        self,
        wal_path: Path,
        on_durable: Callable[[Any], None],
        on_failed: Callable[[Any], None],
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self._wal_path = wal_path
        self._on_durable = on_durable
        self._on_failed = on_failed
        self._fsync = fsync
        self._fd: int | None = None
        #: Commits made so far; each commit's sequence number is the count after it.
        self._commits = 0
        #: Commits waiting for an fsync: (sequence number, token, future), in order.
        self._waiting: deque[tuple[int, Any, asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._failure: DurabilityError | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ranvier-sqlite-fsync")
        #: fsync calls made (tests and the benchmark read it).
        self.fsyncs = 0

    def committed(self, token: Any) -> asyncio.Future[None]:
        """A COMMIT just returned: the future resolves once it is durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failure is not None:
            self._fail(token, future, self._failure)
            return future
        self._commits += 1
        self._waiting.append((self._commits, token, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            covered = self._commits  # every commit that has returned so far
            try:
                await loop.run_in_executor(self._executor, self._sync)
            except OSError as exc:
                logger.critical(
                    "fsync of %s failed (%r): writes are refused until Ranvier is restarted",
                    self._wal_path,
                    exc,
                )
                self._failure = DurabilityError(f"fsync of the SQLite WAL failed: {exc!r}")
                while self._waiting:
                    _, token, future = self._waiting.popleft()
                    self._fail(token, future, self._failure)
                return
            while self._waiting and self._waiting[0][0] <= covered:
                _, token, future = self._waiting.popleft()
                try:
                    self._on_durable(token)
                finally:
                    if not future.done():
                        future.set_result(None)

    def _fail(self, token: Any, future: asyncio.Future[None], error: DurabilityError) -> None:
        try:
            self._on_failed(token)
        finally:
            if not future.done():
                future.set_exception(error)
                # Retrieved by whoever awaits it; a cancelled waiter must not
                # make asyncio log "exception was never retrieved".
                future.exception()

    def _sync(self) -> None:
        """In the fsync thread: the WAL (opened on first use), then, once, its directory."""
        if self._fd is None:
            fd = os.open(self._wal_path, os.O_RDONLY)
            directory = os.open(self._wal_path.parent, os.O_RDONLY)
            try:
                self._fsync(directory)
            finally:
                os.close(directory)
            self._fd = fd
        self._fsync(self._fd)
        self.fsyncs += 1

    async def close(self) -> None:
        """Wait for the commits still waiting (call once no more commits come)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._executor.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
