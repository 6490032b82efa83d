"""One storage interface, two engines: SQLite (embedded default) and PostgreSQL.

Stores are written once against :class:`Database` / :class:`Transaction`:

* SQL uses ``?`` placeholders (SQLite's native style). ``?NNN`` (1-based) may be
  used instead when an argument is repeated; one statement uses one style. For
  PostgreSQL the text is rewritten to ``$1, $2, ...`` by a small cached shim
  that skips string literals, quoted identifiers and comments. Consequence: the
  PostgreSQL JSONB operators ``?``, ``?|`` and ``?&`` cannot be written; use
  ``jsonb_exists()`` / ``jsonb_exists_any()`` / ``jsonb_exists_all()``.
* Rows are returned as-is from the driver: ``sqlite3.Row`` or
  ``asyncpg.Record``. Both support ``row[0]``, ``row["column"]``, ``len()``,
  iteration over values, ``keys()``, ``tuple(row)`` and ``dict(row)``; they do
  not compare equal to tuples, so convert before comparing. No per-row
  conversion is done, which keeps reads cheap.
* Portable SQL that works on both (SQLite >= 3.35, PostgreSQL >= 12):
  ``INSERT ... ON CONFLICT (cols) DO UPDATE SET c = excluded.c`` / ``DO NOTHING``
  (see :func:`upsert_sql`), ``RETURNING``, ``IN (?, ?, ...)`` (see
  :func:`placeholders`), ``COALESCE``, window functions, CTEs. Not portable:
  ``INSERT OR IGNORE``/``REPLACE`` (SQLite), ``ILIKE``/``GREATEST`` (PostgreSQL;
  SQLite spells it ``MAX(a, b)``), ``= ANY(?)`` with an array (PostgreSQL).
* Types: bind ``int``, ``str``, ``bytes``, ``bool``, ``None``. PostgreSQL is
  strict (an ``int`` for a TEXT column is an error; SQLite would store it), so
  the PostgreSQL test run is what catches type mistakes. A ``BOOLEAN`` column
  reads back as ``bool`` from PostgreSQL and ``0``/``1`` from SQLite. Where
  PostgreSQL cannot infer a parameter's type (``SELECT ?``), add a ``CAST``.
* Column types that differ (integer identity key, blob) are written as macros in
  migrations, see :data:`MIGRATION_MACROS`.
* NUL: PostgreSQL text cannot hold U+0000 (SQLite can). A ``str`` argument
  containing it raises :class:`~ranvier.core.input_limits.TextWithNulError`
  on both engines, before the statement runs, so both answer alike. JSON
  stored as text is unaffected: its encoder escapes NUL as ``\\u0000``.

Concurrency. SQLite has exactly one writer connection. Every write and every
transaction runs on it, in one dedicated thread, serialized by an
``asyncio.Lock``: writers queue in the event loop instead of meeting
``database is locked``, and the loop never blocks on disk. Reads outside a
transaction use a small pool of read-only connections in their own threads;
WAL lets them proceed while a write is in progress, seeing the last committed
state. ``sqlite:///:memory:`` has a single connection, so reads take the write
lock too. PostgreSQL uses an asyncpg pool; a transaction holds one connection.

Inside ``async with db.transaction() as txn`` use ``txn``, never ``db``, for
writes: the transaction is not reentrant, and on SQLite ``db`` would wait for
the very lock the transaction holds. That misuse raises
:class:`TransactionMisuseError` instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ranvier.core.input_limits import NUL, TextWithNulError
from ranvier.storage.group_commit import GroupCommit

if TYPE_CHECKING:
    # asyncpg is imported where a PostgreSQL database is opened: a server on
    # SQLite never loads it (3.4 MiB of RSS and ~20 ms of startup).
    import asyncpg

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_MACROS",
    "Database",
    "DatabaseTooNewError",
    "Engine",
    "IntegrityError",
    "Migration",
    "MigrationError",
    "PoolUsage",
    "PostgresDatabase",
    "Queryable",
    "Row",
    "SqliteDatabase",
    "Transaction",
    "TransactionMisuseError",
    "current_schema_version",
    "current_stream_position",
    "expand_macros",
    "load_migrations",
    "next_stream_position",
    "next_stream_positions",
    "open_database",
    "placeholders",
    "to_postgres_placeholders",
    "upsert_sql",
]

Engine = Literal["sqlite", "postgresql"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class Row(Protocol):
    """A result row: ``sqlite3.Row`` or ``asyncpg.Record``, indexable by position or name."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...

    def keys(self) -> Any: ...


class DatabaseTooNewError(RuntimeError):
    """The database schema is newer than this version of Ranvier knows; refuse to start."""


class MigrationError(RuntimeError):
    """The migration files or the recorded schema history are inconsistent."""


class IntegrityError(Exception):
    """A constraint (unique, foreign key, not null, check) rejected a write, on either engine.

    The driver's exception is the ``__cause__``. Inside a transaction, let it
    propagate: PostgreSQL aborts the whole transaction on any error, SQLite
    only the statement, so carrying on would behave differently per engine.
    For an expected conflict write ``ON CONFLICT ... DO NOTHING`` instead.
    """


class TransactionMisuseError(RuntimeError):
    """The database object was used for a write inside the caller's own transaction."""


# --------------------------------------------------------------------------- dialect shim

_PG_TOKEN = re.compile(
    r"""
      '(?:[^']|'')*'           # string literal ('' escapes a quote)
    | "(?:[^"]|"")*"           # quoted identifier
    | --[^\n]*                 # line comment
    | /\*.*?\*/                # block comment
    | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$   # dollar-quoted string
    | \?(?P<num>\d+)?          # placeholder
    """,
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=4096)
def to_postgres_placeholders(sql: str) -> str:
    """Rewrite ``?`` / ``?NNN`` placeholders to PostgreSQL's ``$N``. Cached per SQL text."""
    counter = 0
    styles: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        nonlocal counter
        token = match.group(0)
        if not token.startswith("?"):
            return token
        number = match.group("num")
        if number is None:
            styles.add("?")
            counter += 1
            return f"${counter}"
        styles.add("?NNN")
        return f"${int(number)}"

    translated = _PG_TOKEN.sub(replace, sql)
    if len(styles) > 1:
        raise ValueError(f"mixing ? and ?NNN placeholders in one statement: {sql!r}")
    return translated


_WRITE_WORD = re.compile(
    r"\b(INSERT|UPDATE|DELETE|REPLACE|RETURNING|CREATE|DROP|ALTER|PRAGMA|VACUUM|ATTACH)\b",
    re.IGNORECASE,
)
_READ_START = re.compile(r"\s*(SELECT|WITH|VALUES)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _is_read_only(sql: str) -> bool:
    """Whether SQLite can run ``sql`` on a read-only connection.

    Errs on the side of "no": a false negative merely sends a read to the writer.
    """
    return _READ_START.match(sql) is not None and _WRITE_WORD.search(sql) is None


#: Prepared statements kept per SQLite connection (Python's ``cached_statements``,
#: whose own default this is). Each costs SQLite memory: 15-30 KiB for a plain
#: query, 115 KiB for an IN list of 500, 250 KiB for a UNION of 100 per-room
#: scans. Bench scenario 14 (docs/performance.md, "Memory at the end of the
#: traffic"): at 512, with one text per list length, the five connections held
#: ~53 MiB of statements; lists are now padded to a few lengths (:func:`padded`).
#: 64 saved another ~15 MiB of RSS but its misses seemed to slow /sync under
#: load (4 runs against 3).
STATEMENT_CACHE_SIZE = 128

_T = TypeVar("_T")


def padded(values: Sequence[_T], limit: int, filler: _T | None = None) -> list[_T]:
    """``values`` lengthened to the next power of two (or ``limit``, at most), by
    repeating the last value (harmless in an ``IN (...)`` list) or with ``filler``.

    A statement whose text depends on a list's length (``IN (?, ?, ...)``, a
    UNION per item) is prepared and cached once per length: padding keeps that
    to a handful of texts per query instead of one per length, each large.
    """
    if not values:
        raise ValueError("nothing to pad")
    size = 1
    while size < len(values):
        size *= 2
    size = max(len(values), min(size, limit))
    pad = values[-1] if filler is None else filler
    return [*values, *([pad] * (size - len(values)))]


@functools.lru_cache(maxsize=256)
def placeholders(count: int) -> str:
    """``"?, ?, ?"`` for ``IN (...)`` lists; portable to both engines."""
    if count < 1:
        raise ValueError("an IN list needs at least one value")
    return ", ".join("?" * count)


@functools.lru_cache(maxsize=512)
def upsert_sql(
    table: str,
    conflict_columns: tuple[str, ...],
    columns: tuple[str, ...],
    update_columns: tuple[str, ...] | None = None,
) -> str:
    """``INSERT ... ON CONFLICT (...) DO UPDATE`` that runs on both engines.

    ``columns`` are bound in order with ``?``. ``update_columns`` defaults to
    every column outside the conflict target; when empty, the statement is
    ``DO NOTHING``.
    """
    if update_columns is None:
        update_columns = tuple(c for c in columns if c not in conflict_columns)
    insert = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders(len(columns))}) "
        f"ON CONFLICT ({', '.join(conflict_columns)}) "
    )
    if not update_columns:
        return insert + "DO NOTHING"
    return insert + "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update_columns)


# Column types that differ between the engines, usable as {{NAME}} in migration files.
MIGRATION_MACROS: dict[Engine, dict[str, str]] = {
    "sqlite": {
        # AUTOINCREMENT: ids are never reused after the highest row is deleted,
        # so caches keyed by id cannot go stale that way.
        "ID_PK": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BLOB": "BLOB",
        # After a table's closing parenthesis: the primary key is the table's
        # storage (no rowid b-tree beside it); for narrow tables read by key.
        "WITHOUT_ROWID": "WITHOUT ROWID",
    },
    "postgresql": {
        "ID_PK": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "BLOB": "BYTEA",
        "WITHOUT_ROWID": "",
    },
}
_MACRO = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def expand_macros(sql: str, engine: Engine) -> str:
    """Replace ``{{ID_PK}}`` / ``{{BLOB}}`` with the engine's column type."""
    macros = MIGRATION_MACROS[engine]

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in macros:
            raise MigrationError(f"unknown migration macro {{{{{name}}}}}")
        return macros[name]

    return _MACRO.sub(replace, sql)


def _rowcount_from_status(status: str) -> int:
    """asyncpg's command tag ("INSERT 0 3", "UPDATE 2") to a row count."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


def _refuse_nul(args: Sequence[Any]) -> None:
    """Raise TextWithNulError if a ``str`` argument (or an element of a list or
    tuple argument, a PostgreSQL array) contains NUL; see the module docstring."""
    for arg in args:
        if isinstance(arg, str):
            if NUL in arg:
                raise TextWithNulError("text must not contain NUL (U+0000)")
        elif isinstance(arg, list | tuple):
            _refuse_nul(arg)


def _refuse_nul_rows(rows: Sequence[Sequence[Any]]) -> None:
    for row in rows:
        _refuse_nul(row)


# --------------------------------------------------------------------------- interface


class Queryable(ABC):
    """What both :class:`Database` and :class:`Transaction` offer."""

    engine: Engine

    @abstractmethod
    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        """The first row, or None."""

    @abstractmethod
    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        """All rows."""

    @abstractmethod
    async def fetch_val(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None when there is no row."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it inserted/updated/deleted (0 otherwise)."""

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement per parameter row, atomically."""


class Transaction(Queryable):
    """A transaction in progress; valid only inside its ``async with`` block."""

    _database: Database

    async def execute_each(self, statements: Sequence[str]) -> None:
        """Run statements without arguments one after another (a migration's
        script). SQLite runs them all in one hand-off to its writer thread."""
        for statement in statements:
            await self.execute(statement)
    #: Stream positions allocated in this transaction: ``stream -> (first, last)``.
    _allocated: dict[str, tuple[int, int]]
    _after_commit: list[Callable[[], None]]

    def call_after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (never if it
        rolls back): synchronously on the event loop, in the order added, before
        this transaction's stream positions become the database's current ones
        (:meth:`Database.stream_positions`) and before the ``async with`` block
        exits. In-memory caches are invalidated this way, so that a reader who
        sees the new positions also sees the caches without the old data."""
        self._after_commit.append(callback)


@dataclass(frozen=True)
class PoolUsage:
    """How busy a database's connections are, for the operator's /metrics.

    PostgreSQL: the asyncpg pool's connections in use, open and allowed.
    SQLite: the single writer connection (in use while a write or transaction
    holds it), and the writes queued behind it with their total wait, the
    figure that tells whether the one writer is the bottleneck.
    """

    in_use: int
    size: int
    max_size: int
    #: SQLite only (None on PostgreSQL): writers waiting for the writer now, and
    #: the seconds all writers have waited for it since start.
    writers_waiting: int | None = None
    writer_wait_seconds: float | None = None


class _CountingLock(asyncio.Lock):
    """An asyncio.Lock that counts who waits for it and for how long.

    Uncontended acquisitions take the plain path (no clock read), so the
    count costs nothing unless writers actually queue.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.wait_seconds = 0.0

    async def acquire(self) -> Literal[True]:
        if not self.locked():
            return await super().acquire()
        self.waiting += 1
        started = time.perf_counter()
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1
            self.wait_seconds += time.perf_counter() - started


class Database(Queryable):
    """A connection (pool) to one database; see the module docstring for semantics.

    **Stream positions in memory.** Ranvier runs as one process, the only
    writer of its database, so the committed position of every stream (what a
    /sync token is built from) is known here without a query: read once when
    the database is opened, then advanced as transactions that allocated
    positions commit. A position advances only when every position below it
    is committed *and* its transaction's :meth:`Transaction.call_after_commit`
    callbacks have run (PostgreSQL may finish two commits' continuations out
    of order). A gap below a committed range that no open transaction of this
    process explains was filled by another process (``ranvier user create``
    on a running server's database, say): allocation holds the stream's row
    lock until commit, so that writer has committed, and the position moves
    on. A commit whose outcome is unknown (the connection failed during
    COMMIT) makes the positions unknown: they are read again from the database,
    and the ``on_positions_reset`` callbacks (caches) run. Several processes
    sharing one PostgreSQL database would need these (and the caches) refreshed
    by LISTEN/NOTIFY (DESIGN.md, "Concurrency and scale"); not yet.
    """

    dsn: str
    _positions: dict[str, int]
    #: Committed ranges waiting for a lower position: ``stream -> {first: last}``.
    _pending_positions: dict[str, dict[int, int]]
    _positions_known: bool
    _reset_callbacks: list[Callable[[], None]]
    #: First positions allocated by transactions still open in this process:
    #: ``stream -> {id(transaction): first}``.
    _in_flight: dict[str, dict[int, int]]

    def _init_positions(self) -> None:
        self._positions = {}
        self._pending_positions = {}
        self._positions_known = False
        self._reset_callbacks = []
        self._in_flight = {}

    @abstractmethod
    def transaction(self, *, durable: bool = True) -> AbstractAsyncContextManager[Transaction]:
        """``async with db.transaction() as txn``: commit on success, rollback on exception.

        ``durable=False``: the block may end once the commit is visible to
        readers, before it is durable (SQLite: without waiting for the group
        commit's fsync; its after-commit callbacks still run once it is
        durable, in commit order). Only for writes that are made again after a
        crash (push actions: evaluation resumes from a position recorded with
        them). PostgreSQL waits either way (the commit's round trip is its cost).
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    @abstractmethod
    def pool_usage(self) -> PoolUsage:
        """Connections in use now (cheap: no query; read at each /metrics scrape)."""

    async def stream_positions(self, stream_names: Sequence[str]) -> dict[str, int]:
        """``stream_name -> highest committed position`` (0 for a stream never
        written); every position up to it is committed too. From memory (see
        the class docstring), reading the database only when unknown."""
        if not self._positions_known:
            await self.load_stream_positions()
        positions = self._positions
        return {name: positions.get(name, 0) for name in stream_names}

    async def load_stream_positions(self) -> None:
        """Read every stream's committed position from the database."""
        self._positions_known = False
        self._positions = {}  # commits while reading (see _committed)
        rows = await self.fetch_all("SELECT stream_name, position FROM stream_positions")
        for row in rows:
            self._positions[row[0]] = max(self._positions.get(row[0], 0), int(row[1]))
        self._pending_positions = {}
        self._positions_known = True

    def known_stream_position(self, stream_name: str) -> int | None:
        """The committed position of ``stream_name`` if known without a query."""
        return self._positions.get(stream_name, 0) if self._positions_known else None

    def on_positions_reset(self, callback: Callable[[], None]) -> None:
        """``callback()`` when the positions become unknown (see the class
        docstring): an in-memory cache of what was committed must forget it."""
        self._reset_callbacks.append(callback)

    def _allocating(self, txn: Transaction, stream: str, first: int) -> None:
        """``txn`` allocated its first position of ``stream`` (still open)."""
        self._in_flight.setdefault(stream, {})[id(txn)] = first

    def _ended(self, txn: Transaction) -> None:
        for stream in txn._allocated:
            flights = self._in_flight.get(stream)
            if flights is not None:
                flights.pop(id(txn), None)

    def _committed(self, txn: Transaction) -> None:
        """After ``txn`` committed: its callbacks, then its positions."""
        for callback in txn._after_commit:
            try:
                callback()
            except Exception:  # the data is committed: report, go on
                logger.exception("after-commit callback failed")
        self._ended(txn)
        if not self._positions_known:
            # Being read from the database: that read may predate this commit.
            for stream, (_, last) in txn._allocated.items():
                self._positions[stream] = max(self._positions.get(stream, 0), last)
            return
        for stream, (first, last) in txn._allocated.items():
            self._pending_positions.setdefault(stream, {})[first] = last
            self._advance(stream)

    def _rolled_back(self, txn: Transaction) -> None:
        self._ended(txn)
        if self._positions_known:
            for stream in txn._allocated:
                self._advance(stream)

    def _advance(self, stream: str) -> None:
        """Move ``stream``'s position over the committed ranges that nothing
        of this process still committing lies below."""
        pending = self._pending_positions.get(stream)
        if not pending:
            return
        current = self._positions.get(stream, 0)
        flights = self._in_flight.get(stream)
        lowest_open = min(flights.values()) if flights else None
        for first in sorted(pending):
            if first > current + 1 and lowest_open is not None and lowest_open < first:
                break  # a lower position's commit is still finishing here
            current = max(current, pending.pop(first))
        self._positions[stream] = current

    def _commit_outcome_unknown(self, txn: Transaction) -> None:
        self._ended(txn)
        if not txn._allocated and not txn._after_commit:
            return
        self._positions_known = False
        self._positions = {}
        self._pending_positions = {}
        for callback in self._reset_callbacks:
            try:
                callback()
            except Exception:
                logger.exception("positions-reset callback failed")

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _closed_error() -> RuntimeError:
    return RuntimeError("transaction used outside its `async with` block")


# --------------------------------------------------------------------------- SQLite


def _w_execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> int:
    cursor = conn.execute(sql, args)
    count = cursor.rowcount
    cursor.close()
    return max(count, 0)


def _w_fetch_one(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Row | None:
    cursor = conn.execute(sql, args)
    row: Row | None = cursor.fetchone()
    cursor.close()
    return row


def _w_fetch_all(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    rows: list[Row] = conn.execute(sql, args).fetchall()
    return rows


def _w_fetch_val(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Any:
    cursor = conn.execute(sql, args)
    row = cursor.fetchone()
    cursor.close()
    return None if row is None else row[0]


def _w_execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(sql, rows).close()


#: Statements of a write transaction that may run on the event loop's thread,
#: with the writer's connection, once they cost little (the same rule as reads:
#: :class:`ReadCosts`). Only one task holds a transaction and its statements
#: run one after another, so the connection is never used by two threads at
#: once. BEGIN IMMEDIATE (which may wait for another process's lock) and COMMIT
#: (which may checkpoint the WAL) stay in the writer thread: a transaction of 13
#: statements (a join) makes 2 thread hand-offs instead of 13.
_INLINE_WRITES = frozenset({_w_execute, _w_fetch_one, _w_fetch_all, _w_fetch_val, _w_execute_many})


def _w_rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _w_atomic(
    conn: sqlite3.Connection, fn: Any, sql: str, args: Any
) -> Any:  # one statement (or batch) in its own transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, sql, args)
        conn.execute("COMMIT")
    except BaseException:
        _w_rollback_quietly(conn)
        raise
    return result


def _w_begin_then(conn: sqlite3.Connection, fn: Any, sql: str, args: Any) -> Any:
    # BEGIN rides along with the transaction's first statement: one thread hop.
    # IMMEDIATE takes the write lock now, so another *process* on the same file
    # makes us wait (busy_timeout) at BEGIN rather than fail mid-transaction.
    conn.execute("BEGIN IMMEDIATE")
    return fn(conn, sql, args)


def _w_commit(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        _w_rollback_quietly(conn)
        raise


def default_readers() -> int:
    """SQLite reader threads by default: one per core, 2 to 4. Reads that cost
    little run on the event loop's own thread; the readers exist so that long
    ones (search, initial syncs of many rooms) run beside it, and more threads
    than cores cannot run more of them at once. Each reader is a connection
    with its own page cache and prepared statements (~10 MiB under load, bench
    scenario 14): on a 2-core server 2 readers instead of 4 hold ~20 MiB less."""
    return max(2, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class _SqliteOptions:
    path: str  # a filesystem path or ":memory:"
    readers: int = field(default_factory=default_readers)
    #: FULL (the default): a commit is acknowledged once fsynced (group commit,
    #: ranvier/storage/group_commit.py). NORMAL: once written to the WAL, before
    #: the fsync: faster, but the last commits may be lost on a power loss.
    synchronous: Literal["NORMAL", "FULL"] = "FULL"
    busy_timeout_ms: int = 5000

    @property
    def memory(self) -> bool:
        return self.path == ":memory:"


def _sqlite_connect(options: _SqliteOptions, *, read_only: bool) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module never opens transactions on its
    # own; we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = sqlite3.connect(
        options.path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=STATEMENT_CACHE_SIZE,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout_ms)}")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
        return conn
    if not options.memory:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise RuntimeError(f"SQLite refused WAL mode (got {mode!r}) for {options.path}")
    # Durability ("nothing acknowledged is lost", DESIGN.md principle 5).
    # https://www.sqlite.org/pragma.html#pragma_synchronous and
    # https://www.sqlite.org/wal.html: in WAL mode a commit appends the
    # transaction's frames, including the commit frame, to the -wal file with
    # write() before COMMIT returns. Once written, the data is in the operating
    # system's page cache, which outlives the process: after `kill -9` (or any
    # crash of Ranvier itself) the next open replays the WAL and the
    # transaction is there. What survives a *power loss or OS crash* is what
    # was fsynced: SQLite's synchronous=FULL would fsync inside every COMMIT,
    # on the single writer. We run SQLite with NORMAL (no fsync at COMMIT; it
    # still syncs around checkpoints) and, unless the DSN says
    # ?synchronous=normal, acknowledge a commit only after our own fsync of the
    # WAL, shared by every commit made before it started (group commit:
    # ranvier/storage/group_commit.py).
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Truncate the WAL back to 64 MiB after checkpoints instead of letting it
    # keep its high-water size forever.
    conn.execute("PRAGMA journal_size_limit = 67108864")
    return conn


class _SqliteTransaction(Transaction):
    engine: Engine = "sqlite"

    __slots__ = ("_after_commit", "_allocated", "_begun", "_closed", "_conn", "_database")
    _database: SqliteDatabase

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        self._conn = database._writer_conn
        self._begun = False
        self._closed = False
        self._allocated = {}
        self._after_commit = []

    async def _run(self, fn: Any, sql: str, args: Any) -> Any:
        if self._closed:
            raise _closed_error()
        if fn is _w_execute_many:
            _refuse_nul_rows(args)
        else:
            _refuse_nul(args)
        database = self._database
        if self._begun:
            if fn not in _INLINE_WRITES:  # a migration's script
                return await database._in_writer(fn, self._conn, sql, args)
            units = len(args) if fn is _w_execute_many else 1
            if database._write_costs.inline(sql, units):
                return database._w_inline(fn, self._conn, sql, args, units)
            return await database._in_writer(database._w_timed, fn, self._conn, sql, args, units)
        # Mark begun before dispatch: if the statement fails after BEGIN ran,
        # the exit path must still roll back.
        self._begun = True
        return await database._in_writer(_w_begin_then, self._conn, fn, sql, args)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        result: Row | None = await self._run(_w_fetch_one, sql, args)
        return result

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        result: list[Row] = await self._run(_w_fetch_all, sql, args)
        return result

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        return await self._run(_w_fetch_val, sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        result: int = await self._run(_w_execute, sql, args)
        return result

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._run(_w_execute_many, sql, _as_sequence(rows))

    async def execute_each(self, statements: Sequence[str]) -> None:
        # One hop instead of one per statement: a fresh database's migrations
        # are ~200 statements (measured: ~85 ms of a first start went to them).
        await self._run(_w_execute_each, "", tuple(statements))


def _w_execute_each(conn: sqlite3.Connection, _sql: str, statements: Sequence[str]) -> int:
    for statement in statements:
        conn.execute(statement).close()
    return 0


def _retrieve(future: asyncio.Future[None]) -> None:
    """A durability nobody waits for: its failure is logged by the group
    commit (and fails the later commits), not left unretrieved here."""
    if not future.cancelled():
        future.exception()


def _as_sequence(rows: Iterable[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    # Materialise generators on the loop thread: they may touch loop state.
    return rows if isinstance(rows, list | tuple) else list(rows)


#: A read statement runs on the event loop's own thread (its own connection),
#: with no hand-off to a reader thread, once its recent runs took less CPU
#: than this. SQLite answers an indexed lookup from its page cache in tens of
#: microseconds; handing it to a reader thread costs more than that, and under
#: load far more: every row stepped releases and takes back the GIL, which a
#: busy event loop holds for up to the switch interval (docs/performance.md,
#: "The convoy, found and fixed"). Longer reads stay in the reader threads, where
#: SQLite works while the loop serves others.
INLINE_READ_MAX_S = 0.0005
#: Runs (in a reader thread) before a statement may run inline.
INLINE_AFTER_RUNS = 3
#: Statements whose costs are kept (forgotten all at once beyond it).
READ_COSTS_MAX = 4096


class ReadCosts:
    """Recent CPU time of each read statement, by its text: which are cheap
    enough to run on the event loop's thread. Updated from every thread; a
    lost update under a race only shifts an average a little."""

    __slots__ = ("_costs",)

    def __init__(self) -> None:
        #: SQL text -> [runs, moving average of seconds]
        self._costs: dict[str, list[float]] = {}

    def inline(self, sql: str, units: int = 1) -> bool:
        """``units``: rows of an ``executemany`` (its cost is kept per row)."""
        cost = self._costs.get(sql)
        return (
            cost is not None
            and cost[0] >= INLINE_AFTER_RUNS
            and cost[1] * units < INLINE_READ_MAX_S
        )

    def record(self, sql: str, seconds: float, units: int = 1) -> None:
        seconds /= max(units, 1)
        cost = self._costs.get(sql)
        if cost is None:
            if len(self._costs) >= READ_COSTS_MAX:
                self._costs.clear()
            self._costs[sql] = [1, seconds]
        else:
            cost[0] += 1
            cost[1] += (seconds - cost[1]) * 0.2


class SqliteDatabase(Database):
    """SQLite in WAL mode: one writer thread + connection, a pool of reader
    threads, and cheap reads on the event loop's thread (:class:`ReadCosts`)."""

    engine: Engine = "sqlite"

    def __init__(self, dsn: str, options: _SqliteOptions) -> None:
        self.dsn = dsn
        self._options = options
        self._write_lock = _CountingLock()
        self._write_owner: asyncio.Task[Any] | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ranvier-sqlite-writer")
        self._writer_conn: sqlite3.Connection = None  # type: ignore[assignment]  # set in _open
        self._readers: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._read_costs = ReadCosts()
        self._write_costs = ReadCosts()
        self._closed = False
        #: Durability of commits (file databases with synchronous FULL only).
        self._group_commit: GroupCommit | None = None
        if not options.memory and options.synchronous == "FULL":
            self._group_commit = GroupCommit(
                Path(options.path + "-wal"),
                on_durable=self._durable,
                on_failed=self._not_durable,
            )
        self._init_positions()

    def _durable(self, txn: _SqliteTransaction | None) -> None:
        if txn is not None:
            self._committed(txn)

    def _not_durable(self, txn: _SqliteTransaction | None) -> None:
        if txn is not None:
            self._commit_outcome_unknown(txn)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._writer_conn = await loop.run_in_executor(
                self._writer, functools.partial(_sqlite_connect, self._options, read_only=False)
            )
        except BaseException:
            self._writer.shutdown(wait=False)
            raise
        if not self._options.memory:
            self._readers = ThreadPoolExecutor(
                self._options.readers, thread_name_prefix="ranvier-sqlite-reader"
            )

    # -- thread plumbing

    async def _in_writer(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    def _w_timed(self, fn: Any, conn: sqlite3.Connection, sql: str, args: Any, units: int) -> Any:
        """A statement of a transaction (writer thread or inline), its CPU cost kept."""
        began = time.thread_time()
        try:
            return fn(conn, sql, args)
        finally:
            self._write_costs.record(sql, time.thread_time() - began, units)

    def _w_inline(self, fn: Any, conn: sqlite3.Connection, sql: str, args: Any, units: int) -> Any:
        """A cheap statement of a transaction, on the event loop's thread (see
        ``_INLINE_WRITES``); its cost kept, so one that grows goes back."""
        try:
            return self._w_timed(fn, conn, sql, args, units)
        except sqlite3.IntegrityError as exc:  # as _in_writer maps it
            raise IntegrityError(str(exc)) from exc

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _sqlite_connect(self._options, read_only=True)
            self._reader_local.conn = conn
            with self._reader_conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _r_call(self, fn: Any, sql: str, args: Any) -> Any:
        # CPU time, not wall time: waits for the GIL or the disk are not the
        # statement's cost (a statement slow from I/O shows it inline, where
        # its wall time does not count either: the page cache holds a server's
        # hot pages).
        began = time.thread_time()
        try:
            return fn(self._reader_conn(), sql, args)
        finally:
            self._read_costs.record(sql, time.thread_time() - began)

    def _check_not_in_own_transaction(self) -> None:
        if self._write_owner is not None and self._write_owner is asyncio.current_task():
            raise TransactionMisuseError(
                "this task already holds a transaction on this database; "
                "use the transaction object (txn.execute...), not the database"
            )

    async def _write(self, fn: Any, sql: str, args: Any, *, atomic: bool = False) -> Any:
        if self._closed:
            raise RuntimeError("database is closed")
        if fn is _w_execute_many:
            _refuse_nul_rows(args)
        else:
            _refuse_nul(args)
        self._check_not_in_own_transaction()
        durable: asyncio.Future[None] | None = None
        async with self._write_lock:
            if atomic:
                result = await self._in_writer(_w_atomic, self._writer_conn, fn, sql, args)
            else:
                result = await self._in_writer(fn, self._writer_conn, sql, args)
            if self._group_commit is not None and not _is_read_only(sql):
                durable = self._group_commit.committed(None)
        if durable is not None:
            # Outside the write lock: the next writer goes on meanwhile.
            await asyncio.shield(durable)
        return result

    async def _read(self, fn: Any, sql: str, args: Any) -> Any:
        if self._readers is None or not _is_read_only(sql):
            return await self._write(fn, sql, args)
        if self._closed:
            raise RuntimeError("database is closed")
        _refuse_nul(args)
        if self._read_costs.inline(sql):
            return self._r_call(fn, sql, args)
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, self._r_call, fn, sql, args
        )

    # -- Queryable

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        result: Row | None = await self._read(_w_fetch_one, sql, args)
        return result

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        result: list[Row] = await self._read(_w_fetch_all, sql, args)
        return result

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        return await self._read(_w_fetch_val, sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        # A single statement in autocommit mode is its own transaction.
        result: int = await self._write(_w_execute, sql, args)
        return result

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._write(_w_execute_many, sql, _as_sequence(rows), atomic=True)

    @asynccontextmanager
    async def _transaction(self, wait_durable: bool = True) -> AsyncIterator[Transaction]:
        if self._closed:
            raise RuntimeError("database is closed")
        self._check_not_in_own_transaction()
        durable: asyncio.Future[None] | None = None
        async with self._write_lock:
            self._write_owner = asyncio.current_task()
            txn = _SqliteTransaction(self)
            try:
                yield txn
            except BaseException:
                txn._closed = True
                self._rolled_back(txn)
                if txn._begun:
                    # Even if this await is cancelled, the rollback is queued on
                    # the single writer thread ahead of any later BEGIN.
                    await self._in_writer(_w_rollback_quietly, self._writer_conn)
                raise
            else:
                txn._closed = True
                if txn._begun:
                    try:
                        await self._in_writer(_w_commit, self._writer_conn)
                    except BaseException:
                        # SQLite rolls back a failed COMMIT, but a cancelled
                        # await may hide a commit that happened.
                        self._commit_outcome_unknown(txn)
                        raise
                    if self._group_commit is not None:
                        # Its callbacks and positions once durable, in commit order.
                        durable = self._group_commit.committed(txn)
                if durable is None:
                    # Under the write lock: commits and their callbacks are in order.
                    self._committed(txn)
            finally:
                txn._closed = True
                self._write_owner = None
        if durable is not None:
            if not wait_durable:
                durable.add_done_callback(_retrieve)
                return
            # Outside the write lock, so that the next writer commits while this
            # one's fsync runs; shielded: a cancelled caller does not stop it.
            await asyncio.shield(durable)

    def transaction(self, *, durable: bool = True) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction(durable)

    def pool_usage(self) -> PoolUsage:
        lock = self._write_lock
        return PoolUsage(
            in_use=int(lock.locked()),
            size=1,
            max_size=1,
            writers_waiting=lock.waiting,
            writer_wait_seconds=lock.wait_seconds,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wait for the writer to finish what it is doing (including a queued commit).
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            if self._group_commit is not None:
                await self._group_commit.close()  # the last commits' fsync
            if self._readers is not None:
                await loop.run_in_executor(
                    None, functools.partial(self._readers.shutdown, wait=True)
                )
            with self._reader_conns_lock:
                for conn in self._reader_conns:
                    conn.close()
                self._reader_conns.clear()
            if self._writer_conn is not None:
                await self._in_writer(self._writer_conn.close)
            await loop.run_in_executor(None, functools.partial(self._writer.shutdown, wait=True))


def _parse_sqlite_dsn(dsn: str, parsed: urllib.parse.SplitResult) -> _SqliteOptions:
    if parsed.netloc:
        raise ValueError(
            f"bad SQLite DSN {dsn!r}: use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    # "sqlite:///x.db" -> path "/x.db" -> relative "x.db"; "sqlite:////abs" -> "/abs".
    path = urllib.parse.unquote(parsed.path[1:]) if parsed.path.startswith("/") else ""
    if not path:
        raise ValueError(f"bad SQLite DSN {dsn!r}: no database path")
    if path != ":memory:":
        parent = Path(path).parent
        if not parent.is_dir():
            raise ValueError(f"bad SQLite DSN {dsn!r}: directory {str(parent)!r} does not exist")
    params = _query_params(dsn, parsed.query)
    kwargs: dict[str, Any] = {"path": path}
    if "readers" in params:
        kwargs["readers"] = _positive_int(dsn, "readers", params.pop("readers"))
    if "busy_timeout_ms" in params:
        kwargs["busy_timeout_ms"] = _positive_int(
            dsn, "busy_timeout_ms", params.pop("busy_timeout_ms")
        )
    if "synchronous" in params:
        value = params.pop("synchronous").upper()
        if value not in ("NORMAL", "FULL"):
            raise ValueError(f"bad SQLite DSN {dsn!r}: synchronous must be 'normal' or 'full'")
        kwargs["synchronous"] = value
    if params:
        raise ValueError(f"bad SQLite DSN {dsn!r}: unknown option(s) {sorted(params)}")
    return _SqliteOptions(**kwargs)


def _query_params(dsn: str, query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"bad database DSN {_redact(dsn)!r}: malformed query string") from None
    return dict(pairs)


def _positive_int(dsn: str, name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"bad database DSN {_redact(dsn)!r}: {name} must be a positive integer")
    return int(value)


def _redact(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


# --------------------------------------------------------------------------- PostgreSQL


@asynccontextmanager
async def _pg_errors() -> AsyncIterator[None]:
    import asyncpg  # loaded already (the pool exists); see the note at the top

    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(str(exc)) from exc


class _PostgresQueries(Queryable):
    """The five methods over ``self._target``: an asyncpg Pool or Connection
    (both have fetchrow/fetch/fetchval/execute/executemany)."""

    engine: Engine = "postgresql"
    _target: Any

    def _check(self) -> None:
        """Hook: refuse use in the wrong state."""

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        self._check()
        _refuse_nul(args)
        async with _pg_errors():
            row: Row | None = await self._target.fetchrow(to_postgres_placeholders(sql), *args)
        return row

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        self._check()
        _refuse_nul(args)
        async with _pg_errors():
            rows: list[Row] = await self._target.fetch(to_postgres_placeholders(sql), *args)
        return rows

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        self._check()
        _refuse_nul(args)
        async with _pg_errors():
            return await self._target.fetchval(to_postgres_placeholders(sql), *args)

    async def execute(self, sql: str, *args: Any) -> int:
        self._check_write()
        _refuse_nul(args)
        async with _pg_errors():
            status: str = await self._target.execute(to_postgres_placeholders(sql), *args)
        return _rowcount_from_status(status)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._check_write()
        rows = _as_sequence(rows)
        _refuse_nul_rows(rows)
        # asyncpg's executemany is atomic (it runs in an implicit transaction).
        async with _pg_errors():
            await self._target.executemany(to_postgres_placeholders(sql), rows)

    def _check_write(self) -> None:
        self._check()


class _PostgresTransaction(_PostgresQueries, Transaction):
    def __init__(self, conn: asyncpg.Connection, database: PostgresDatabase) -> None:
        self._target = conn
        self._database = database
        self._closed = False
        self._allocated = {}
        self._after_commit = []

    def _check(self) -> None:
        if self._closed:
            raise _closed_error()


class PostgresDatabase(_PostgresQueries, Database):
    """PostgreSQL through an asyncpg pool (prepared statements cached per connection)."""

    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.dsn = dsn
        self._target = pool
        self._pool = pool
        self._txn_tasks: set[asyncio.Task[Any]] = set()
        self._init_positions()

    def _check_write(self) -> None:
        task = asyncio.current_task()
        if task is not None and task in self._txn_tasks:
            raise TransactionMisuseError(
                "this task already holds a transaction on this database; "
                "use the transaction object (txn.execute...), not the database"
            )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        self._check_write()
        task = asyncio.current_task()
        async with self._pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            txn = _PostgresTransaction(conn, self)
            if task is not None:
                self._txn_tasks.add(task)
            try:
                try:
                    yield txn
                except BaseException:
                    self._rolled_back(txn)
                    if not conn.is_closed():
                        await transaction.rollback()
                    raise
                try:
                    await transaction.commit()
                except BaseException:
                    self._commit_outcome_unknown(txn)
                    raise
                # Before the connection goes back to the pool (its reset is a
                # round trip): the callbacks run as soon as the commit is known.
                self._committed(txn)
            finally:
                txn._closed = True
                if task is not None:
                    self._txn_tasks.discard(task)

    def transaction(self, *, durable: bool = True) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction()

    def pool_usage(self) -> PoolUsage:
        size = self._pool.get_size()
        return PoolUsage(
            in_use=size - self._pool.get_idle_size(),
            size=size,
            max_size=self._pool.get_max_size(),
        )

    async def close(self) -> None:
        await self._pool.close()


def _parse_postgres_dsn(dsn: str, parsed: urllib.parse.SplitResult) -> tuple[str, int, int]:
    """The DSN for asyncpg (our options removed) and the pool's min/max size."""
    params = _query_params(dsn, parsed.query)
    min_size = _positive_int(dsn, "min_size", params.pop("min_size")) if "min_size" in params else 2
    max_size = (
        _positive_int(dsn, "max_size", params.pop("max_size")) if "max_size" in params else 10
    )
    # Any other query parameter is asyncpg's: libpq options (sslmode, ...) or
    # server settings (search_path, ...).
    query = urllib.parse.urlencode(params)
    return urllib.parse.urlunsplit(parsed._replace(query=query)), min_size, max_size


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")
_ENGINE_SUFFIX: dict[Engine, str] = {"sqlite": "sqlite", "postgresql": "postgres"}


def load_migrations(engine: Engine, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations for ``engine`` in order: ``NNNN_name.sql``, or its
    ``NNNN_name.sqlite.sql`` / ``NNNN_name.postgres.sql`` variant when present.
    Versions must run 1, 2, 3... without gaps or duplicates."""
    chosen: dict[int, tuple[str, Path, bool]] = {}  # version -> (name, path, is_variant)
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(
                f"migration file name not NNNN_name[.sqlite|.postgres].sql: {path}"
            )
        version, name, variant = int(match.group(1)), match.group(2), match.group(3)
        if variant is not None and variant != _ENGINE_SUFFIX[engine]:
            continue
        previous = chosen.get(version)
        if previous is not None:
            if previous[0] != name:
                raise MigrationError(
                    f"two migrations numbered {version:04d}: {previous[1]}, {path}"
                )
            if previous[2] == (variant is not None):
                raise MigrationError(f"duplicate migration {path}")
            if previous[2]:  # keep the engine-specific variant
                continue
        chosen[version] = (name, path, variant is not None)
    versions = sorted(chosen)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return [Migration(v, chosen[v][0], chosen[v][1]) for v in versions]


def _split_sqlite_script(script: str) -> list[str]:
    """Statements of a script, keeping trigger bodies (``BEGIN ... END;``) whole."""
    statements: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if _strip_sql_comments(buffer).strip(" \t\r\n;"):
                statements.append(buffer)
            buffer = ""
    if _strip_sql_comments(buffer).strip(" \t\r\n;"):
        raise MigrationError(f"incomplete statement at end of migration: {buffer.strip()[:200]!r}")
    return statements


def _strip_sql_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.DOTALL)


async def current_schema_version(db: Queryable) -> int:
    """The highest applied migration, 0 for an empty database."""
    if db.engine == "sqlite":
        exists = await db.fetch_val(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        )
    else:
        exists = await db.fetch_val("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await db.fetch_val("SELECT MAX(version) FROM schema_version")
    return int(version or 0)


async def _keep_session(connection: Any) -> None:
    """What the pool runs on a connection handed back, after asyncpg has rolled
    back a transaction left open: nothing more. asyncpg's default sends
    ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` and
    waits for the answer before the caller's query returns: a second round
    trip for every statement outside a transaction. Ranvier leaves nothing
    behind on a session for that to undo: no SET, no LISTEN, no cursor or
    advisory lock outside a transaction (the migrations' lock is
    ``pg_advisory_xact_lock``, released at commit). Tested in
    tests/storage/test_engine.py."""


# Arbitrary constant: the advisory lock serialising migrations across processes.
_MIGRATION_LOCK_KEY = 0x52414E56  # "RANV"


async def _migrate(db: Database, migrations: list[Migration]) -> None:
    latest = len(migrations)
    version = await current_schema_version(db)
    if version > latest:
        raise DatabaseTooNewError(
            f"the database schema is at version {version} but this Ranvier knows only up "
            f"to {latest}; it was used by a newer Ranvier. Upgrade Ranvier or restore a backup."
        )
    await _check_history(db, migrations, version)
    for migration in migrations[version:]:
        async with db.transaction() as txn:
            if db.engine == "postgresql":
                await txn.execute("SELECT pg_advisory_xact_lock(?)", _MIGRATION_LOCK_KEY)
            # Re-read under the lock: another process may have migrated meanwhile.
            # (On SQLite the BEGIN IMMEDIATE of this transaction is the lock.)
            now = await current_schema_version(txn)
            if now > latest:
                raise DatabaseTooNewError(f"the database schema moved to version {now} meanwhile")
            if now >= migration.version:
                continue
            script = expand_macros(migration.path.read_text(encoding="utf-8"), db.engine)
            if db.engine == "sqlite":
                await txn.execute_each(_split_sqlite_script(script))
            else:
                await txn.execute(script)  # no arguments: simple protocol, many statements
            await txn.execute(
                "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
                migration.version,
                migration.name,
                int(time.time() * 1000),
            )


async def _check_history(db: Database, migrations: list[Migration], version: int) -> None:
    if version == 0:
        return
    rows = await db.fetch_all("SELECT version, name FROM schema_version ORDER BY version")
    for row in rows:
        known = migrations[row[0] - 1]
        if known.name != row[1]:
            raise MigrationError(
                f"schema_version records migration {row[0]:04d} as {row[1]!r} but this code "
                f"has {known.name!r}: the database was built from a different migration history"
            )


# --------------------------------------------------------------------------- stream positions

_NEXT_POSITIONS_SQL = (
    "INSERT INTO stream_positions (stream_name, position) VALUES (?, ?) "
    "ON CONFLICT (stream_name) DO UPDATE "
    "SET position = stream_positions.position + excluded.position "
    "RETURNING position"
)


async def next_stream_positions(txn: Transaction, stream_name: str, count: int) -> range:
    """Allocate ``count`` consecutive positions of ``stream_name`` inside ``txn``.

    Positions are allocated by the writing transaction itself, so a rolled
    back transaction gives its positions back and there are never gaps.

    SQLite: there is one writer, so allocation order is commit order.

    PostgreSQL: commit order is *not* allocation order in general (with a plain
    sequence, position 8 can commit before 7, and a reader who saw 8 would skip
    7 forever). Here the upsert takes the stream's row lock and holds it until
    commit: a concurrent transaction on the same stream waits at this
    statement, then re-reads the committed value. Positions therefore become
    visible strictly in order. The price is that writers of one stream are
    serialised from this call to their commit, so allocate as late as possible
    in the transaction; and when a transaction needs several streams, allocate
    them in a fixed (alphabetical) order, or PostgreSQL may report a deadlock.
    Many writers per stream at scale would call for per-writer sequences with
    "persisted up to" tracking (Synapse's MultiWriterIdGenerator); not yet.
    """
    if not isinstance(txn, Transaction):
        raise TypeError("stream positions must be allocated inside the writing transaction")
    if count < 1:
        raise ValueError("count must be at least 1")
    last = int(await txn.fetch_val(_NEXT_POSITIONS_SQL, stream_name, count))
    first = last - count + 1
    earlier = txn._allocated.get(stream_name)
    if earlier is None:
        txn._database._allocating(txn, stream_name, first)
    txn._allocated[stream_name] = (earlier[0] if earlier is not None else first, last)
    return range(first, last + 1)


async def next_stream_position(txn: Transaction, stream_name: str) -> int:
    """Allocate the next position of ``stream_name`` (1, 2, 3...) inside ``txn``."""
    return (await next_stream_positions(txn, stream_name, 1))[0]


async def current_stream_position(db: Queryable, stream_name: str) -> int:
    """The highest committed position of ``stream_name`` (0 when none);
    every position up to it is committed too (see :func:`next_stream_positions`).
    From memory for a :class:`Database` (see its docstring); inside a
    transaction, read from the database."""
    if isinstance(db, Database):
        return (await db.stream_positions((stream_name,)))[stream_name]
    value = await db.fetch_val(
        "SELECT position FROM stream_positions WHERE stream_name = ?", stream_name
    )
    return int(value or 0)


# --------------------------------------------------------------------------- opening


async def open_database(
    dsn: str,
    *,
    migrate: bool = True,
    migrations_dir: Path | None = None,
) -> Database:
    """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
    ``sqlite:///:memory:`` or ``postgresql://user@host:port/db`` and bring the
    schema up to date.

    Options in the query string: SQLite ``readers`` (read threads, default one
    per core, 2 to 4),
    ``synchronous`` (``full`` default: a commit returns once fsynced, by group
    commit; or ``normal``: once written, faster but not safe against a power
    loss), ``busy_timeout_ms``
    (default 5000); PostgreSQL ``min_size`` / ``max_size`` (pool, default 2 /
    10), any other parameter is passed to asyncpg (``sslmode``,
    ``search_path``...).

    Raises ValueError for a malformed DSN, :class:`DatabaseTooNewError` when
    the schema is newer than this code, :class:`MigrationError` when the
    migration history does not match.
    """
    if not isinstance(dsn, str) or "://" not in dsn:
        raise ValueError(
            f"bad database DSN {_redact(str(dsn))!r}: expected sqlite:///path.db, "
            "sqlite:///:memory: or postgresql://user@host/dbname"
        )
    parsed = urllib.parse.urlsplit(dsn)
    scheme = parsed.scheme.lower()
    database: Database
    if scheme == "sqlite":
        sqlite_db = SqliteDatabase(dsn, _parse_sqlite_dsn(dsn, parsed))
        await sqlite_db._open()
        database = sqlite_db
    elif scheme in ("postgresql", "postgres"):
        if not parsed.path.strip("/"):
            raise ValueError(f"bad PostgreSQL DSN {_redact(dsn)!r}: no database name")
        asyncpg_dsn, min_size, max_size = _parse_postgres_dsn(dsn, parsed)
        if min_size > max_size:
            raise ValueError(f"bad PostgreSQL DSN {_redact(dsn)!r}: min_size > max_size")
        import asyncpg  # only for PostgreSQL; see the note at the top

        pool = await asyncpg.create_pool(
            asyncpg_dsn, min_size=min_size, max_size=max_size, reset=_keep_session
        )
        database = PostgresDatabase(dsn, pool)
    else:
        raise ValueError(
            f"unsupported database DSN scheme {parsed.scheme!r} in {_redact(dsn)!r}: "
            "expected sqlite:// or postgresql://"
        )
    try:
        if migrate:
            await _migrate(
                database, load_migrations(database.engine, migrations_dir or MIGRATIONS_DIR)
            )
            await database.load_stream_positions()
    except BaseException:
        await database.close()
        raise
    return database
