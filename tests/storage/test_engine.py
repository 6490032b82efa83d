"""The storage engine: every test runs on SQLite and PostgreSQL (``database`` fixture)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ranvier.storage import (
    Database,
    DatabaseTooNewError,
    IntegrityError,
    MigrationError,
    Row,
    Transaction,
    TransactionMisuseError,
    current_stream_position,
    next_stream_position,
    next_stream_positions,
    open_database,
    placeholders,
    upsert_sql,
)
from ranvier.storage.engine import (
    MIGRATIONS_DIR,
    SqliteDatabase,
    current_schema_version,
    expand_macros,
    load_migrations,
    to_postgres_placeholders,
)
from tests.conftest import acquire_migrated_postgres

ITEMS_TABLE = """
CREATE TABLE items (
    item_id {{ID_PK}},
    name TEXT NOT NULL UNIQUE,
    counter BIGINT NOT NULL DEFAULT 0,
    payload {{BLOB}}
)
"""


async def create_items(db: Database) -> None:
    await db.execute(expand_macros(ITEMS_TABLE, db.engine))


# --------------------------------------------------------------------------- basics


async def test_crud_round_trip(database: Database) -> None:
    await create_items(database)
    assert await database.execute("INSERT INTO items (name, counter) VALUES (?, ?)", "a", 1) == 1
    await database.execute("INSERT INTO items (name, counter) VALUES (?, ?)", "b", 2)

    row = await database.fetch_one("SELECT name, counter FROM items WHERE name = ?", "a")
    assert row is not None
    assert (row[0], row[1]) == ("a", 1)
    assert (row["name"], row["counter"]) == ("a", 1)
    assert tuple(row) == ("a", 1)
    assert dict(row) == {"name": "a", "counter": 1}
    assert len(row) == 2

    rows = await database.fetch_all("SELECT name, counter FROM items ORDER BY name")
    assert [tuple(r) for r in rows] == [("a", 1), ("b", 2)]

    assert await database.execute("UPDATE items SET counter = counter + 10") == 2
    assert await database.fetch_val("SELECT counter FROM items WHERE name = ?", "b") == 12
    assert await database.execute("DELETE FROM items WHERE name = ?", "a") == 1
    assert await database.fetch_one("SELECT * FROM items WHERE name = ?", "a") is None
    assert await database.fetch_val("SELECT counter FROM items WHERE name = ?", "a") is None
    assert await database.fetch_all("SELECT * FROM items WHERE name = ?", "a") == []


async def test_blob_column_round_trips_bytes(database: Database) -> None:
    await create_items(database)
    payload = bytes(range(256)) * 4
    await database.execute("INSERT INTO items (name, payload) VALUES (?, ?)", "bin", payload)
    assert await database.fetch_val("SELECT payload FROM items WHERE name = ?", "bin") == payload


async def test_identity_column_assigns_increasing_ids(database: Database) -> None:
    await create_items(database)
    await database.execute_many(
        "INSERT INTO items (name) VALUES (?)", [(f"n{i}",) for i in range(5)]
    )
    ids = [r[0] for r in await database.fetch_all("SELECT item_id FROM items ORDER BY name")]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


async def test_numbered_placeholders_reuse_an_argument(database: Database) -> None:
    await create_items(database)
    await database.execute("INSERT INTO items (name, counter) VALUES (?1, ?2)", "x", 7)
    count = await database.fetch_val(
        "SELECT COUNT(*) FROM items WHERE name = ?1 OR name = ?1 || '-suffix'", "x"
    )
    assert count == 1


async def test_in_list_placeholders(database: Database) -> None:
    await create_items(database)
    await database.execute_many(
        "INSERT INTO items (name) VALUES (?)", [(n,) for n in ("a", "b", "c", "d")]
    )
    names = ["b", "d", "zz"]
    rows = await database.fetch_all(
        f"SELECT name FROM items WHERE name IN ({placeholders(len(names))}) ORDER BY name",
        *names,
    )
    assert [r["name"] for r in rows] == ["b", "d"]


async def test_string_literals_with_question_marks_are_not_placeholders(
    database: Database,
) -> None:
    await create_items(database)
    await database.execute(
        "INSERT INTO items (name, counter) VALUES ('what?' || ?, ?) -- really?", "!", 3
    )
    assert await database.fetch_val("SELECT name FROM items WHERE counter = ?", 3) == "what?!"


async def test_upsert_inserts_then_updates(database: Database) -> None:
    await create_items(database)
    sql = upsert_sql("items", ("name",), ("name", "counter"))
    await database.execute(sql, "k", 1)
    await database.execute(sql, "k", 5)
    rows = await database.fetch_all("SELECT name, counter FROM items")
    assert [tuple(r) for r in rows] == [("k", 5)]

    do_nothing = upsert_sql("items", ("name",), ("name", "counter"), ())
    assert await database.execute(do_nothing, "k", 99) == 0
    assert await database.fetch_val("SELECT counter FROM items WHERE name = ?", "k") == 5


async def test_returning_outside_and_inside_transaction(database: Database) -> None:
    await create_items(database)
    # Outside a transaction: a write with RETURNING must go to the writer.
    first = await database.fetch_val("INSERT INTO items (name) VALUES (?) RETURNING item_id", "one")
    async with database.transaction() as txn:
        row = await txn.fetch_one(
            "INSERT INTO items (name, counter) VALUES (?, ?) RETURNING item_id, counter",
            "two",
            4,
        )
    assert row is not None
    assert row["counter"] == 4
    assert row["item_id"] > first
    updated = await database.fetch_all(
        "UPDATE items SET counter = counter + 1 RETURNING name, counter"
    )
    assert sorted(tuple(r) for r in updated) == [("one", 1), ("two", 5)]


async def test_unique_violation_raises_integrity_error(database: Database) -> None:
    await create_items(database)
    await database.execute("INSERT INTO items (name) VALUES (?)", "dup")
    with pytest.raises(IntegrityError):
        await database.execute("INSERT INTO items (name) VALUES (?)", "dup")
    with pytest.raises(IntegrityError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO items (name) VALUES (?)", "dup")
    # The database stays usable.
    await database.execute("INSERT INTO items (name) VALUES (?)", "other")
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 2


# --------------------------------------------------------------------------- transactions


async def test_transaction_commits_and_reads_its_own_writes(database: Database) -> None:
    await create_items(database)
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO items (name) VALUES (?)", "t1")
        assert await txn.fetch_val("SELECT COUNT(*) FROM items") == 1
        await txn.execute_many("INSERT INTO items (name) VALUES (?)", [("t2",), ("t3",)])
        assert len(await txn.fetch_all("SELECT * FROM items")) == 3
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 3


async def test_transaction_rolls_back_on_exception(database: Database) -> None:
    await create_items(database)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO items (name) VALUES (?)", "a")
            await txn.execute("INSERT INTO items (name) VALUES (?)", "b")
            raise Boom
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 0


async def test_failing_statement_rolls_back_earlier_writes(database: Database) -> None:
    await create_items(database)
    with pytest.raises(IntegrityError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO items (name) VALUES (?)", "a")
            await txn.execute("UPDATE items SET counter = 5")
            await txn.execute("INSERT INTO items (name) VALUES (?)", "a")
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 0


async def test_execute_many_is_atomic(database: Database) -> None:
    await create_items(database)
    with pytest.raises(IntegrityError):
        await database.execute_many("INSERT INTO items (name) VALUES (?)", [("a",), ("b",), ("a",)])
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 0
    await database.execute_many("INSERT INTO items (name) VALUES (?)", ((n,) for n in "xyz"))
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 3


async def test_cancelled_transaction_rolls_back_and_database_stays_usable(
    database: Database,
) -> None:
    await create_items(database)
    written = asyncio.Event()

    async def slow_writer() -> None:
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO items (name) VALUES (?)", "cancelled")
            written.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_writer())
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO items (name) VALUES (?)", "after")
    rows = await database.fetch_all("SELECT name FROM items")
    assert [r[0] for r in rows] == ["after"]


async def test_postgres_connections_go_back_to_the_pool_without_a_reset_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncpg's default reset sends RESET ALL & co. and waits for it on every
    release (a second round trip per statement); Ranvier's pool skips it, and a
    transaction left open on a connection is still rolled back. (PostgreSQL's
    pool: SQLite has none.)"""
    dsn, release = await acquire_migrated_postgres()
    database = await open_database(dsn)
    try:
        await _pool_without_reset(database, monkeypatch)
    finally:
        await database.close()
        release()


async def _pool_without_reset(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncpg

    resets = 0
    real_reset = asyncpg.Connection.reset

    async def counting_reset(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal resets
        resets += 1
        await real_reset(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "reset", counting_reset)
    await create_items(database)
    for n in range(5):
        await database.execute("INSERT INTO items (name) VALUES (?)", f"n{n}")
        assert await database.fetch_val("SELECT COUNT(*) FROM items") == n + 1
    assert resets == 0
    pool = database._pool  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, _context: None)  # asyncpg reports the open one
    try:
        async with pool.acquire() as connection:
            await connection.execute("BEGIN")
            await connection.execute("INSERT INTO items (name) VALUES ('left open')")
    finally:
        loop.set_exception_handler(handler)
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        assert not any(c.is_in_transaction() for c in connections)
    finally:
        for connection in connections:
            await pool.release(connection)
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 5


async def test_transaction_object_is_dead_after_its_block(database: Database) -> None:
    await create_items(database)
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO items (name) VALUES (?)", "a")
    with pytest.raises(RuntimeError, match="outside its"):
        await txn.execute("INSERT INTO items (name) VALUES (?)", "b")


async def test_writing_through_database_inside_own_transaction_is_refused(
    database: Database,
) -> None:
    await create_items(database)
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO items (name) VALUES (?)", "a")
        with pytest.raises(TransactionMisuseError):
            await database.execute("INSERT INTO items (name) VALUES (?)", "b")
        with pytest.raises(TransactionMisuseError):
            async with database.transaction():
                pass
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 1


# --------------------------------------------------------------------------- concurrency


async def test_many_concurrent_writers_never_see_lock_errors(database: Database) -> None:
    await create_items(database)

    async def writer(i: int) -> None:
        if i % 2:
            await database.execute("INSERT INTO items (name, counter) VALUES (?, ?)", f"w{i}", i)
        else:
            async with database.transaction() as txn:
                await txn.execute("INSERT INTO items (name, counter) VALUES (?, ?)", f"w{i}", i)
                await asyncio.sleep(0)  # yield mid-transaction to interleave tasks
                await txn.execute("UPDATE items SET counter = counter + 1 WHERE name = ?", f"w{i}")

    await asyncio.gather(*(writer(i) for i in range(200)))
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 200
    total = await database.fetch_val("SELECT SUM(counter) FROM items")
    assert total == sum(range(200)) + 100


async def test_reads_proceed_during_an_open_write_transaction(database: Database) -> None:
    await create_items(database)
    await database.execute("INSERT INTO items (name) VALUES (?)", "committed")
    written = asyncio.Event()
    release = asyncio.Event()

    async def long_writer() -> None:
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO items (name) VALUES (?)", "uncommitted")
            written.set()
            await release.wait()

    task = asyncio.create_task(long_writer())
    await written.wait()
    # Twenty concurrent reads complete while the write is still open, and see
    # only committed data.
    counts = await asyncio.wait_for(
        asyncio.gather(*(database.fetch_val("SELECT COUNT(*) FROM items") for _ in range(20))),
        timeout=5,
    )
    assert counts == [1] * 20
    assert not task.done()
    release.set()
    await task
    assert await database.fetch_val("SELECT COUNT(*) FROM items") == 2


async def test_long_statement_does_not_block_the_event_loop(database: Database) -> None:
    heavy = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
        "SELECT COUNT(*) FROM c"
    )
    gaps: list[float] = []
    done = False

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    assert await database.fetch_val(heavy) == 2000000
    duration = time.perf_counter() - started
    done = True
    await beat
    # The loop kept ticking throughout: no pause as long as half the statement.
    assert max(gaps) < max(duration / 2, 0.05)
    assert len(gaps) > 3


# --------------------------------------------------------------------------- stream positions


async def test_stream_positions_start_at_one_and_count_up(database: Database) -> None:
    assert await current_stream_position(database, "events") == 0
    async with database.transaction() as txn:
        assert await next_stream_position(txn, "events") == 1
        assert await next_stream_position(txn, "events") == 2
        assert await next_stream_position(txn, "typing") == 1
        assert list(await next_stream_positions(txn, "events", 3)) == [3, 4, 5]
    assert await current_stream_position(database, "events") == 5
    assert await current_stream_position(database, "typing") == 1


async def test_rolled_back_transaction_leaves_no_gap_in_positions(database: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with database.transaction() as txn:
            assert await next_stream_position(txn, "events") == 1
            _ = 1 / 0
    async with database.transaction() as txn:
        assert await next_stream_position(txn, "events") == 1


async def test_stream_positions_unique_increasing_and_visible_in_order(
    database: Database,
) -> None:
    await database.execute(
        "CREATE TABLE stream_rows (position BIGINT PRIMARY KEY, writer BIGINT NOT NULL)"
    )
    writers = 100
    finished = False
    violations: list[tuple[int, int]] = []

    async def writer(i: int) -> None:
        await asyncio.sleep(random.random() * 0.01)
        async with database.transaction() as txn:
            position = await next_stream_position(txn, "events")
            await asyncio.sleep(random.random() * 0.002)
            await txn.execute(
                "INSERT INTO stream_rows (position, writer) VALUES (?, ?)", position, i
            )

    async def reader() -> None:
        # The property /sync relies on: once position P is visible, so is
        # every position below it.
        while not finished:
            seen = await current_stream_position(database, "events")
            present = await database.fetch_val(
                "SELECT COUNT(*) FROM stream_rows WHERE position <= ?", seen
            )
            if present != seen:
                violations.append((seen, present))
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.gather(*(writer(i) for i in range(writers)))
    finished = True
    await asyncio.gather(*readers)

    rows = await database.fetch_all("SELECT position, writer FROM stream_rows ORDER BY position")
    assert [r["position"] for r in rows] == list(range(1, writers + 1))
    assert sorted(r["writer"] for r in rows) == list(range(writers))
    assert violations == []


class Finished(Transaction):
    """A transaction that allocated ``events`` positions first..last and is
    over (for the position bookkeeping only; it runs no SQL)."""

    def __init__(self, first: int, last: int) -> None:
        self._allocated = {"events": (first, last)}
        self._after_commit = []

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        raise NotImplementedError

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        raise NotImplementedError

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def execute(self, sql: str, *args: Any) -> int:
        raise NotImplementedError

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError


async def test_after_commit_callbacks_run_before_the_positions_move(database: Database) -> None:
    seen: list[tuple[str, int]] = []

    async def position() -> int:
        return (await database.stream_positions(["events"]))["events"]

    async with database.transaction() as txn:
        assert await next_stream_position(txn, "events") == 1
        # A callback sees the position of before its transaction: it runs first.
        txn.call_after_commit(
            lambda: seen.append(("first", database.known_stream_position("events") or 0))
        )
        txn.call_after_commit(
            lambda: seen.append(("second", database.known_stream_position("events") or 0))
        )
        assert seen == []
        assert await position() == 0  # not committed yet
    assert seen == [("first", 0), ("second", 0)]
    assert await position() == 1
    assert database.known_stream_position("events") == 1
    assert database.known_stream_position("never_written") == 0


async def test_after_commit_callbacks_never_run_on_rollback(database: Database) -> None:
    seen: list[str] = []
    with pytest.raises(ZeroDivisionError):
        async with database.transaction() as txn:
            await next_stream_position(txn, "events")
            txn.call_after_commit(lambda: seen.append("ran"))
            _ = 1 / 0
    assert seen == []
    assert await current_stream_position(database, "events") == 0


async def test_a_failing_after_commit_callback_does_not_undo_the_commit(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def fails() -> None:
        raise RuntimeError("boom")

    async with database.transaction() as txn:
        await next_stream_position(txn, "events")
        txn.call_after_commit(fails)
        txn.call_after_commit(lambda: seen.append("after"))
    assert seen == ["after"]
    assert await current_stream_position(database, "events") == 1
    assert "after-commit callback failed" in caplog.text


async def test_positions_move_only_when_every_lower_commit_has_finished(
    database: Database,
) -> None:
    """PostgreSQL may finish two commits' continuations out of order: a position
    is current only once every position below it is (fake transactions here)."""
    low, middle, high = Finished(1, 1), Finished(2, 2), Finished(3, 4)
    for txn in (low, middle, high):
        database._allocating(txn, "events", txn._allocated["events"][0])
    database._committed(high)  # 1-2 are still committing
    assert database.known_stream_position("events") == 0
    database._committed(middle)
    assert database.known_stream_position("events") == 0
    database._committed(low)
    assert database.known_stream_position("events") == 4
    later = Finished(5, 7)
    database._allocating(later, "events", 5)
    database._committed(later)
    assert database.known_stream_position("events") == 7


async def test_a_rolled_back_lower_allocation_no_longer_holds_positions_back(
    database: Database,
) -> None:
    abandoned, committed = Finished(1, 1), Finished(2, 2)
    database._allocating(abandoned, "events", 1)
    database._allocating(committed, "events", 2)
    database._committed(committed)
    assert database.known_stream_position("events") == 0
    database._rolled_back(abandoned)
    assert database.known_stream_position("events") == 2


async def test_positions_written_by_another_process_are_stepped_over(database_dsn: str) -> None:
    """``ranvier user create`` (say) writing to a running server's database:
    the server's next commit moves its position past the other writer's."""
    server = await open_database(database_dsn)
    other = await open_database(database_dsn)
    try:
        async with other.transaction() as txn:
            assert list(await next_stream_positions(txn, "events", 2)) == [1, 2]
        assert server.known_stream_position("events") == 0  # not told
        async with server.transaction() as txn:
            assert await next_stream_position(txn, "events") == 3
        assert server.known_stream_position("events") == 3
        assert await current_stream_position(server, "events") == 3
    finally:
        await other.close()
        await server.close()


async def test_unknown_commit_outcome_forgets_positions_and_caches(database: Database) -> None:
    resets: list[str] = []
    database.on_positions_reset(lambda: resets.append("reset"))
    async with database.transaction() as txn:
        await next_stream_positions(txn, "events", 3)
    assert database.known_stream_position("events") == 3

    database._commit_outcome_unknown(Finished(4, 4))
    assert resets == ["reset"]
    assert database.known_stream_position("events") is None
    # Read again from the database (which never saw position 4).
    assert await current_stream_position(database, "events") == 3
    assert database.known_stream_position("events") == 3


async def test_stream_positions_need_a_transaction(database: Database) -> None:
    with pytest.raises(TypeError):
        await next_stream_position(database, "events")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- migrations


async def test_migrations_are_idempotent_on_reopen(database_dsn: str) -> None:
    known = load_migrations("sqlite")
    for _ in range(3):
        db = await open_database(database_dsn)
        try:
            rows = await db.fetch_all("SELECT version, name FROM schema_version ORDER BY version")
            assert [tuple(r) for r in rows] == [(m.version, m.name) for m in known]
            assert await current_schema_version(db) == len(known)
        finally:
            await db.close()


async def test_database_newer_than_code_refuses_to_open(database: Database) -> None:
    await database.execute(
        "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
        9999,
        "from_the_future",
        0,
    )
    await database.close()
    with pytest.raises(DatabaseTooNewError, match="9999"):
        await open_database(database.dsn)


async def test_migration_history_mismatch_refuses_to_open(database: Database) -> None:
    await database.execute("UPDATE schema_version SET name = ? WHERE version = 1", "renamed")
    await database.close()
    with pytest.raises(MigrationError, match="renamed"):
        await open_database(database.dsn)


def _migrations_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir(parents=True)
    shutil.copy(MIGRATIONS_DIR / "0001_base.sql", directory)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


async def test_engine_specific_variants_and_macros_apply(database_dsn: str, tmp_path: Path) -> None:
    directory = _migrations_dir(
        tmp_path,
        {
            "0002_things.sql": """
                -- common to both engines; semicolons in comments; are fine
                CREATE TABLE things (thing_id {{ID_PK}}, data {{BLOB}}, label TEXT DEFAULT 'a;b');
                CREATE INDEX things_label ON things (label);
            """,
            "0003_audit.sqlite.sql": """
                CREATE TABLE audit (label TEXT);
                CREATE TRIGGER things_audit AFTER INSERT ON things BEGIN
                    INSERT INTO audit (label) VALUES (NEW.label);
                    INSERT INTO audit (label) VALUES ('sqlite');
                END;
            """,
            "0003_audit.postgres.sql": """
                CREATE TABLE audit (label TEXT);
                CREATE FUNCTION things_audit() RETURNS trigger AS $$
                BEGIN
                    INSERT INTO audit (label) VALUES (NEW.label);
                    INSERT INTO audit (label) VALUES ('postgres');
                    RETURN NEW;
                END;
                $$ LANGUAGE plpgsql;
                CREATE TRIGGER things_audit AFTER INSERT ON things
                    FOR EACH ROW EXECUTE FUNCTION things_audit();
            """,
        },
    )
    db = await open_database(database_dsn, migrations_dir=directory)
    try:
        assert await current_schema_version(db) == 3
        await db.execute("INSERT INTO things (data) VALUES (?)", b"\x00\xff")
        assert await db.fetch_val("SELECT data FROM things") == b"\x00\xff"
        labels = sorted(r[0] for r in await db.fetch_all("SELECT label FROM audit"))
        assert labels == sorted(["a;b", "sqlite" if db.engine == "sqlite" else "postgres"])
    finally:
        await db.close()


async def test_failed_migration_leaves_no_partial_schema(database_dsn: str, tmp_path: Path) -> None:
    directory = _migrations_dir(
        tmp_path,
        {"0002_broken.sql": "CREATE TABLE half (x TEXT);\nCREATE TABLE nonsense (;\n"},
    )
    with pytest.raises(Exception):  # noqa: B017 - the driver's syntax error, engine-specific
        await open_database(database_dsn, migrations_dir=directory)
    # Reopen with only the base migration: version 1 applied, nothing of 0002.
    only_base = _migrations_dir(tmp_path / "only-base", {})
    db = await open_database(database_dsn, migrations_dir=only_base)
    try:
        assert await current_schema_version(db) == 1
        with pytest.raises(Exception):  # noqa: B017
            await db.fetch_val("SELECT COUNT(*) FROM half")
    finally:
        await db.close()


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    directory = _migrations_dir(tmp_path, {"0003_skipped.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="gaps"):
        load_migrations("sqlite", directory)


def test_two_migrations_with_one_number_are_rejected(tmp_path: Path) -> None:
    directory = _migrations_dir(
        tmp_path, {"0002_mine.sql": "SELECT 1;", "0002_yours.sql": "SELECT 1;"}
    )
    with pytest.raises(MigrationError, match="0002"):
        load_migrations("postgresql", directory)


def test_shipped_migrations_are_complete_for_both_engines() -> None:
    for engine in ("sqlite", "postgresql"):
        migrations = load_migrations(engine)
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
        assert migrations[0].name == "base"


# --------------------------------------------------------------------------- durability


async def test_committed_writes_survive_close_and_reopen(database: Database) -> None:
    await create_items(database)
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO items (name) VALUES (?)", "durable")
        await next_stream_position(txn, "events")
    await database.close()
    reopened = await open_database(database.dsn)
    try:
        assert await reopened.fetch_val("SELECT name FROM items") == "durable"
        assert await current_stream_position(reopened, "events") == 1
    finally:
        await reopened.close()


KILL_SCRIPT = """
import asyncio, os, signal, sys
from ranvier.storage import open_database

async def main() -> None:
    db = await open_database(sys.argv[1])
    await db.execute("CREATE TABLE acknowledged (n BIGINT)")
    for n in range(50):
        async with db.transaction() as txn:
            await txn.execute("INSERT INTO acknowledged (n) VALUES (?)", n)
    print("acknowledged", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint, no atexit

asyncio.run(main())
"""


async def test_acknowledged_writes_survive_kill_9(database: Database) -> None:
    dsn = database.dsn
    await database.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILL_SCRIPT, dsn, stdout=subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == -9
    assert stdout == b"acknowledged\n"
    reopened = await open_database(dsn)
    try:
        assert await reopened.fetch_val("SELECT COUNT(*) FROM acknowledged") == 50
    finally:
        await reopened.close()


# --------------------------------------------------------------------------- opening


async def test_memory_database_works_with_transactions_and_concurrency() -> None:
    # SQLite-only by nature: one shared connection for reads and writes.
    db = await open_database("sqlite:///:memory:")
    try:
        await create_items(db)

        async def writer(i: int) -> None:
            async with db.transaction() as txn:
                await txn.execute("INSERT INTO items (name) VALUES (?)", f"m{i}")
                await next_stream_position(txn, "events")

        async def reader() -> int:
            return int(await db.fetch_val("SELECT COUNT(*) FROM items"))

        _, counts = await asyncio.gather(
            asyncio.gather(*(writer(i) for i in range(50))),
            asyncio.gather(*(reader() for _ in range(50))),
        )
        assert all(0 <= count <= 50 for count in counts)
        assert await db.fetch_val("SELECT COUNT(*) FROM items") == 50
        assert await current_stream_position(db, "events") == 50
    finally:
        await db.close()


@pytest.mark.parametrize(("cores", "readers"), [(None, 2), (1, 2), (2, 2), (3, 3), (4, 4), (64, 4)])
async def test_sqlite_readers_default_to_one_per_core_from_2_to_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int | None, readers: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    db = await open_database(f"sqlite:///{tmp_path / 'a.db'}")
    chosen = await open_database(f"sqlite:///{tmp_path / 'b.db'}?readers=7")
    try:
        assert isinstance(db, SqliteDatabase) and isinstance(chosen, SqliteDatabase)
        assert db._options.readers == readers
        assert chosen._options.readers == 7
    finally:
        await db.close()
        await chosen.close()


async def test_relative_sqlite_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = await open_database("sqlite:///data.db?readers=2&synchronous=full")
    try:
        # NORMAL in SQLite; the fsync of each commit is Ranvier's (group commit).
        assert await db.fetch_val("PRAGMA synchronous") == 1
        assert await db.fetch_val("PRAGMA journal_mode") == "wal"
        assert await db.fetch_val("PRAGMA foreign_keys") == 1
    finally:
        await db.close()
    assert (tmp_path / "data.db").exists()


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "not a dsn",
        "mysql://user@host/db",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite://relative.db",
        "sqlite:////no/such/directory/x.db",
        "sqlite:///:memory:?readers=zero",
        "sqlite:///:memory:?synchronous=off",
        "sqlite:///:memory:?colour=blue",
        "postgresql://postgres@127.0.0.1:5432",
        "postgresql://postgres@127.0.0.1:5432/test?min_size=x",
        "postgresql://postgres@127.0.0.1:5432/test?min_size=5&max_size=2",
    ],
)
async def test_bad_dsn_raises_a_clear_value_error(dsn: str) -> None:
    with pytest.raises(ValueError, match="DSN"):
        await open_database(dsn)


def test_password_is_not_echoed_in_dsn_errors() -> None:
    with pytest.raises(ValueError) as info:
        asyncio.run(open_database("postgresql://u:secret@127.0.0.1/test?min_size=0"))
    assert "secret" not in str(info.value)


def test_postgres_placeholder_translation() -> None:
    assert to_postgres_placeholders("SELECT ? , ?") == "SELECT $1 , $2"
    assert to_postgres_placeholders("SELECT ?2, ?1, ?2") == "SELECT $2, $1, $2"
    assert (
        to_postgres_placeholders("""SELECT '?''?', "a?" -- ?\n, ? /* ? */, $$?$$, $t$?$t$""")
        == """SELECT '?''?', "a?" -- ?\n, $1 /* ? */, $$?$$, $t$?$t$"""
    )
    with pytest.raises(ValueError, match="mixing"):
        to_postgres_placeholders("SELECT ?, ?1")


async def test_two_database_objects_on_one_database_both_write(database: Database) -> None:
    # Like two processes (the server and a `ranvier` admin command) sharing a
    # database: SQLite's busy_timeout makes the second writer wait, not fail.
    await create_items(database)
    other = await open_database(database.dsn)
    try:

        async def write(db: Database, prefix: str) -> None:
            for i in range(50):
                async with db.transaction() as txn:
                    await txn.execute("INSERT INTO items (name) VALUES (?)", f"{prefix}{i}")

        await asyncio.gather(write(database, "a"), write(other, "b"))
        assert await other.fetch_val("SELECT COUNT(*) FROM items") == 100
    finally:
        await other.close()


async def test_cheap_sqlite_reads_move_to_the_event_loop_thread_and_costly_ones_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read statement runs in a reader thread until its cost is known; once
    its recent runs were cheap it runs on the loop's own thread (no hand-off),
    a costly one stays in the reader threads. Same answers either way."""
    from ranvier.storage import engine

    db = await open_database(f"sqlite:///{tmp_path / 'reads.db'}")
    try:
        assert isinstance(db, engine.SqliteDatabase)
        threads: list[str] = []
        original = db._reader_conn

        def recording_conn() -> Any:
            threads.append(threading.current_thread().name)
            return original()

        monkeypatch.setattr(db, "_reader_conn", recording_conn)
        cheap = "SELECT version FROM schema_version"
        # The first runs prepare the statement (and may meet a busy machine):
        # their average can take a few more runs to fall under the line.
        answers = [await db.fetch_val(cheap) for _ in range(engine.INLINE_AFTER_RUNS + 20)]
        assert len(set(answers)) == 1
        after = engine.INLINE_AFTER_RUNS
        assert all(name.startswith("ranvier-sqlite-reader") for name in threads[:after])
        # Most later runs are inline; a run that a busy machine made costly
        # (a page fault, the collector) may send the next few back for a while.
        here = threading.current_thread().name
        assert threads[after:].count(here) > len(threads[after:]) // 2

        # Well over INLINE_READ_MAX_S of CPU per run.
        costly = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)"
            " SELECT COUNT(*) FROM n"
        )
        threads.clear()
        for _ in range(engine.INLINE_AFTER_RUNS + 2):
            assert await db.fetch_val(costly) == 300000
        assert all(name.startswith("ranvier-sqlite-reader") for name in threads)
        assert not db._read_costs.inline(costly)
    finally:
        await db.close()


def test_read_costs_follow_a_statement_that_became_costly() -> None:
    from ranvier.storage.engine import INLINE_AFTER_RUNS, INLINE_READ_MAX_S, ReadCosts

    costs = ReadCosts()
    for _ in range(INLINE_AFTER_RUNS):
        assert not costs.inline("q")
        costs.record("q", INLINE_READ_MAX_S / 10)
    assert costs.inline("q")
    for _ in range(10):  # its table grew: the moving average follows
        costs.record("q", INLINE_READ_MAX_S * 10)
    assert not costs.inline("q")


def test_costs_of_many_rows_are_kept_per_row() -> None:
    from ranvier.storage.engine import INLINE_AFTER_RUNS, INLINE_READ_MAX_S, ReadCosts

    costs = ReadCosts()
    for _ in range(INLINE_AFTER_RUNS):
        costs.record("insert", INLINE_READ_MAX_S / 10 * 5, units=5)  # a tenth of the line per row
    assert costs.inline("insert", units=1)
    assert costs.inline("insert", units=9)
    assert not costs.inline("insert", units=10)  # ten rows reach the line: the writer thread


async def test_cheap_statements_of_a_sqlite_transaction_run_on_the_loop_thread(
    tmp_path: Path,
) -> None:
    """BEGIN (with the first statement) and COMMIT stay in the writer thread;
    later statements that cost little run on the loop's thread, with the
    writer's connection (one transaction at a time uses it); costly ones stay
    in the writer thread; a constraint failure inline is the same IntegrityError
    and rolls the transaction back."""
    from ranvier.storage import engine

    db = await open_database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        assert isinstance(db, SqliteDatabase)
        await db.execute("CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)")
        db._writer_conn.create_function("thread_id", 0, threading.get_ident)
        loop_thread = threading.get_ident()
        cheap = "SELECT thread_id()"
        costly = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)"
            " SELECT thread_id() + 0 * COUNT(*) FROM n"
        )
        seen: list[tuple[int, int, int]] = []
        for run in range(engine.INLINE_AFTER_RUNS + 20):
            async with db.transaction() as txn:
                first = await txn.fetch_val(cheap)  # rides with BEGIN
                await txn.execute("INSERT INTO w (v) VALUES (?)", f"row {run}")
                seen.append((first, await txn.fetch_val(cheap), await txn.fetch_val(costly)))
        after = engine.INLINE_AFTER_RUNS
        assert all(first != loop_thread for first, _, _ in seen)
        assert all(later != loop_thread for _, later, _ in seen[:after])
        laters = [later for _, later, _ in seen[after:]]
        assert laters.count(loop_thread) > len(laters) // 2  # most (see the read test)
        assert all(slow != loop_thread for _, _, slow in seen)

        with pytest.raises(IntegrityError):
            async with db.transaction() as txn:
                await txn.fetch_val(cheap)
                await txn.execute("INSERT INTO w (v) VALUES (?)", "kept out")
                await txn.execute("INSERT INTO w (v) VALUES (?)", "row 0")  # inline, fails
        assert await db.fetch_val("SELECT COUNT(*) FROM w WHERE v = 'kept out'") == 0
        async with db.transaction() as txn:  # the writer is usable again
            await txn.execute("INSERT INTO w (v) VALUES (?)", "after")
        assert await db.fetch_val("SELECT COUNT(*) FROM w") == after + 21
    finally:
        await db.close()
