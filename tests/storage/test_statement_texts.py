"""Statements whose text depends on a list's length are padded to a few lengths
(``padded``), so that SQLite's per-connection statement cache, now bounded at
``STATEMENT_CACHE_SIZE``, holds few of them (bench scenario 14 held ~53 MiB of
prepared statements, one per list length). Both engines, and the SQLite
bound on its own."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from ranvier.storage import Database
from ranvier.storage.engine import (
    STATEMENT_CACHE_SIZE,
    _sqlite_connect,
    _SqliteOptions,
    padded,
)

NOW = 1_700_000_000_000
ALICE = "@alice:localhost"


def test_padded_lengthens_to_a_power_of_two_up_to_the_limit() -> None:
    assert padded(["a"], 500) == ["a"]
    assert padded(["a", "b", "c"], 500) == ["a", "b", "c", "c"]
    assert padded(list(range(5)), 500) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert len(padded(list(range(300)), 500)) == 500
    assert len(padded(list(range(300)), 256)) == 300  # never shortened
    assert padded(["r1", "r2", "r3"], 100, "") == ["r1", "r2", "r3", ""]
    lengths = {len(padded(list(range(n)), 500)) for n in range(1, 501)}
    assert lengths == {1, 2, 4, 8, 16, 32, 64, 128, 256, 500}
    with pytest.raises(ValueError):
        padded([], 10)


@pytest.fixture
async def hs(database: Database, tmp_path: Path) -> AsyncIterator[Homeserver]:
    config = parse_config({}, tmp_path, env={})
    homeserver = Homeserver(config, database, SigningKey.generate("t"), lambda: NOW)
    await homeserver.accounts.register("alice", None, login=False)
    yield homeserver


class _Texts:
    """The statement texts a database object is asked to run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, database: Database) -> None:
        self.sql: list[str] = []
        original = database.fetch_all

        async def recorded(sql: str, *args: Any) -> Any:
            self.sql.append(sql)
            return await original(sql, *args)

        monkeypatch.setattr(database, "fetch_all", recorded)


async def test_event_and_room_lists_of_any_length_use_few_texts_and_exact_answers(
    hs: Homeserver, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rooms = [await create_room(hs.rooms, Requester(ALICE, "DEV"), {}) for _ in range(5)]
    sent: dict[str, list[str]] = {room_id: [] for room_id in rooms}
    for room_id in rooms:
        for number in range(3):
            stored = await hs.rooms.send_event(
                ALICE, room_id, EventSpec("m.room.message", {"body": str(number)})
            )
            sent[room_id].append(stored.event_id)
    all_ids = [event_id for ids in sent.values() for event_id in ids]
    texts = _Texts(monkeypatch, database)
    for count in range(1, len(all_ids) + 1):
        hs.rooms.events._cache.clear()  # every ID read from the database
        found = await hs.rooms.events.get_events(all_ids[:count])
        assert sorted(found) == sorted(all_ids[:count])
    # 15 lengths, 5 texts: 1, 2, 4, 8 and 16 IDs.
    assert len({sql for sql in texts.sql if "WHERE e.event_id IN (" in sql}) == 5
    texts.sql.clear()
    for count in range(1, len(rooms) + 1):
        hs.rooms.events._recent_events.reset()  # read from the database, not the log
        latest = await hs.rooms.events.recent_events_for_rooms(rooms[:count], 0, 10**9, 2)
        assert sorted(latest) == sorted(rooms[:count])
        for room_id in rooms[:count]:
            assert [stored.event_id for stored in latest[room_id]] == sent[room_id][:0:-1]
    unions = {sql for sql in texts.sql if "UNION ALL" in sql or "LIMIT ?) AS r0" in sql}
    assert len(unions) == 4  # 1, 2, 4 and 8 rooms for 1 to 5 rooms


def _sqlite_memory_used() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    function = ctypes.CDLL(name).sqlite3_memory_used
    function.restype = ctypes.c_int64
    return function


def test_sqlite_keeps_a_bounded_number_of_prepared_statements(tmp_path: Path) -> None:
    memory_used = _sqlite_memory_used()
    if memory_used is None:
        pytest.skip("no shared libsqlite3 to ask for its memory")
    conn = _sqlite_connect(_SqliteOptions(str(tmp_path / "t.db")), read_only=False)
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")

        def distinct_statements(first: int, count: int) -> int:
            before = memory_used()
            for number in range(first, first + count):
                # One text per number; ~20 KiB of prepared statement each.
                conn.execute(
                    f"SELECT id FROM t WHERE name IN ({', '.join('?' * 100)}) AND id <> {number}",
                    ["x"] * 100,
                ).fetchall()
            return int(memory_used() - before)

        one = distinct_statements(0, 1)
        if one <= 0:
            pytest.skip("this libsqlite3 is not the one the sqlite3 module uses")
        # Four times the bound: the oldest are finalized as new ones come in.
        many = distinct_statements(1, STATEMENT_CACHE_SIZE * 4)
        # Unbounded, that would be 4 * STATEMENT_CACHE_SIZE statements' worth.
        assert many < one * STATEMENT_CACHE_SIZE * 1.25
    finally:
        conn.close()
