"""PushActionStore: counts per room and thread from the read positions, on both
engines (Client-Server API, "Receiving notifications", "Threaded read receipts")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ranvier.storage import Database
from ranvier.storage.push_actions import (
    COUNT_CHUNK,
    DEFAULT_ACTIONS,
    MembersAction,
    PushActionRow,
    PushActionStore,
    ThreadCount,
)
from ranvier.storage.receipts import ReceiptStore

USER = "@u:hs"
OTHER = "@v:hs"


async def _event(db: Database, position: int, room_id: str) -> str:
    event_id = f"$e{position}"
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender,"
        " origin_server_ts, depth, json) VALUES (?, ?, ?, 'm.room.message', '@s:hs', 0, 1, '{}')",
        position,
        event_id,
        room_id,
    )
    return event_id


async def _notify(
    store: PushActionStore,
    position: int,
    room_id: str,
    *,
    user: str = USER,
    thread: str = "main",
    highlight: bool = False,
    actions: str = DEFAULT_ACTIONS,
) -> str:
    event_id = await _event(store.database, position, room_id)
    row = PushActionRow(
        user, event_id, room_id, position, thread, highlight, actions, 1000 + position
    )
    await store.add([row])
    return event_id


async def _receipt(store: PushActionStore, room_id: str, event_id: str, thread: str = "") -> None:
    """A receipt written by hand, then forgotten as ReceiptStore's listener does."""
    await store.database.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, data,"
        " stream_id) VALUES (?, 'm.read', ?, ?, ?, '{}', 1)",
        room_id,
        USER,
        thread,
        event_id,
    )
    store.forget_reads(USER)


@contextmanager
def statements_naming(database: Database, needle: str) -> Iterator[list[str]]:
    """The statements read through ``database.fetch_all`` that name
    ``needle``, while inside."""
    seen: list[str] = []
    fetch_all = database.fetch_all

    async def counting(sql: str, *args: object) -> Any:
        if needle in sql:
            seen.append(sql)
        return await fetch_all(sql, *args)

    database.fetch_all = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del database.fetch_all


def _by_room(counts: list[ThreadCount]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(c.room_id, c.thread_id): (c.notifications, c.highlights) for c in counts}


async def test_counts_only_the_asked_rooms_after_their_receipts(database: Database) -> None:
    store = PushActionStore(database)
    first = await _notify(store, 1, "!a:hs")
    await _notify(store, 2, "!a:hs", highlight=True)
    await _notify(store, 3, "!b:hs")
    await _notify(store, 4, "!c:hs")
    await _notify(store, 5, "!a:hs", user=OTHER)  # someone else's row
    await _receipt(store, "!a:hs", first)
    assert _by_room(await store.unread_counts(USER, ["!a:hs", "!b:hs"])) == {
        ("!a:hs", "main"): (1, 1),
        ("!b:hs", "main"): (1, 0),
    }
    assert await store.unread_counts(USER, []) == []


async def test_threaded_receipts_cover_only_their_thread(database: Database) -> None:
    store = PushActionStore(database)
    room = "!a:hs"
    await _notify(store, 1, room)
    root_reply = await _notify(store, 2, room, thread="$root")
    await _notify(store, 3, room, thread="$root", highlight=True)
    main_read = await _notify(store, 4, room)
    await _notify(store, 5, room, thread="$other")
    await _receipt(store, room, root_reply, thread="$root")
    assert _by_room(await store.unread_counts(USER, [room])) == {
        (room, "main"): (2, 0),
        (room, "$root"): (1, 1),
        (room, "$other"): (1, 0),
    }
    # An unthreaded receipt covers every thread up to its event; a thread's own
    # receipt further back changes nothing.
    await _receipt(store, room, main_read)
    assert _by_room(await store.unread_counts(USER, [room])) == {(room, "$other"): (1, 0)}


async def test_more_rooms_than_one_query_holds(database: Database) -> None:
    store = PushActionStore(database)
    rooms = [f"!r{index}:hs" for index in range(COUNT_CHUNK + 3)]
    for position, room in enumerate(rooms, start=1):
        await _notify(store, position, room)
    counts = await store.unread_counts(USER, rooms)
    assert sorted(c.room_id for c in counts) == sorted(rooms)
    assert {c.notifications for c in counts} == {1}


@pytest.mark.parametrize("actions", [DEFAULT_ACTIONS, '["notify",{"set_tweak":"highlight"}]'])
async def test_pages_newest_first_with_their_event_and_actions(
    database: Database, actions: str
) -> None:
    store = PushActionStore(database)
    ids = [await _notify(store, position, "!a:hs", actions=actions) for position in (1, 2, 3)]
    page = await store.page(USER, None, 2, only_highlight=False)
    assert [(row.event_id, row.actions, row.ts) for row in page] == [
        (ids[2], actions, 1003),
        (ids[1], actions, 1002),
    ]
    older = await store.page(USER, page[-1].stream_ordering, 2, only_highlight=False)
    assert [row.event_id for row in older] == [ids[0]]


async def test_a_row_written_twice_is_kept_once(database: Database) -> None:
    store = PushActionStore(database)
    event_id = await _notify(store, 1, "!a:hs")
    again = PushActionRow(USER, event_id, "!a:hs", 1, "main", True, DEFAULT_ACTIONS, 5)
    await store.add([again])
    assert _by_room(await store.unread_counts(USER, ["!a:hs"])) == {("!a:hs", "main"): (1, 0)}


async def test_read_positions_are_cached_until_a_receipt_is_committed(
    database: Database,
) -> None:
    """Every /sync's counts start from the user's read positions: read once, then
    from memory until ReceiptStore commits a receipt of that user."""
    store = PushActionStore(database)
    receipts = ReceiptStore(database)
    receipts.on_receipt.append(store.forget_reads)
    room = "!a:hs"
    first = await _notify(store, 1, room)
    second = await _notify(store, 2, room)
    await receipts.put(room, "m.read", USER, None, first, "{}")
    assert await store.read_positions(USER) == {(room, ""): 1}
    with statements_naming(database, "FROM receipts") as reads:
        for _ in range(3):
            assert _by_room(await store.unread_counts(USER, [room])) == {(room, "main"): (1, 0)}
        assert len(reads) == 0  # cached since the last receipt
        await receipts.put(room, "m.read", OTHER, None, second, "{}")  # someone else's
        assert await store.read_positions(USER, [room]) == {(room, ""): 1}
        assert len(reads) == 0  # another user's receipt leaves this user's positions cached
        await receipts.put(room, "m.read.private", USER, None, second, "{}")
        assert _by_room(await store.unread_counts(USER, [room])) == {}
        assert len(reads) == 1
        assert await store.read_positions(USER, ["!b:hs"]) == {}


async def test_counts_are_remembered_until_a_row_or_a_receipt_changes_them(
    database: Database,
) -> None:
    """Every /sync asks the counts of the rooms it shows: read once, then from
    memory until a row of that user and room (one by one or for a whole room's
    members) or a receipt of that user is committed. The answers stay those of
    a store that remembers nothing."""
    store = PushActionStore(database)
    receipts = ReceiptStore(database)
    receipts.on_receipt.append(store.forget_reads)
    rooms = ["!a:hs", "!b:hs", "!quiet:hs"]
    for user in (USER, OTHER):
        await database.execute("INSERT INTO users (user_id, created_ts) VALUES (?, 0)", user)
        await database.execute(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id,"
            " stream_ordering) VALUES ('!a:hs', ?, 'join', '$join', 0)",
            user,
        )
    first = await _notify(store, 1, "!a:hs")
    await _notify(store, 2, "!b:hs")
    with statements_naming(database, "event_push_actions") as counted:

        async def check(expected: dict[tuple[str, str], tuple[int, int]], queries: int) -> None:
            counted.clear()
            assert _by_room(await store.unread_counts(USER, rooms)) == expected
            assert len(counted) == queries
            cold = PushActionStore(database)  # remembers nothing
            assert _by_room(await cold.unread_counts(USER, rooms)) == expected

        await check({("!a:hs", "main"): (1, 0), ("!b:hs", "main"): (1, 0)}, 1)
        await check({("!a:hs", "main"): (1, 0), ("!b:hs", "main"): (1, 0)}, 0)
        await _notify(store, 3, "!b:hs", user=OTHER)  # someone else's row: nothing read
        await check({("!a:hs", "main"): (1, 0), ("!b:hs", "main"): (1, 0)}, 0)
        # A new row of theirs is counted in as committed (the /sync it wakes
        # reads nothing), in its thread.
        await _notify(store, 4, "!b:hs", highlight=True)
        await check({("!a:hs", "main"): (1, 0), ("!b:hs", "main"): (2, 1)}, 0)
        await _notify(store, 5, "!b:hs", thread="$root")
        expected = {
            ("!a:hs", "main"): (1, 0),
            ("!b:hs", "main"): (2, 1),
            ("!b:hs", "$root"): (1, 0),
        }
        await check(expected, 0)
        # A row for every member of "!a:hs" (one statement), naming them: in too.
        event_id = await _event(database, 6, "!a:hs")
        row = PushActionRow("", event_id, "!a:hs", 6, "main", False, DEFAULT_ACTIONS, 6)
        await store.add([], [MembersAction(row, ["@s:hs"], [USER, OTHER])])
        expected[("!a:hs", "main")] = (2, 0)
        await check(expected, 0)
        # Not naming them: that room is read again.
        event_id = await _event(database, 7, "!a:hs")
        row = PushActionRow("", event_id, "!a:hs", 7, "main", True, DEFAULT_ACTIONS, 7)
        await store.add([], [MembersAction(row, ["@s:hs"])])
        expected[("!a:hs", "main")] = (3, 1)
        await check(expected, 1)
        # Rows that may be there already (evaluated again after a crash) are
        # not counted twice: forgotten, read again.
        again = PushActionRow(USER, event_id, "!a:hs", 7, "main", True, DEFAULT_ACTIONS, 7)
        await store.add([again], new=False)
        await check(expected, 1)
        await receipts.put("!a:hs", "m.read", USER, None, first, "{}")
        expected[("!a:hs", "main")] = (2, 1)
        await check(expected, 1)
        # After a receipt, a new row before it is not counted in; one after it is.
        await _notify(store, 8, "!b:hs")
        expected[("!b:hs", "main")] = (3, 1)
        await check(expected, 0)
        read_to = await _event(database, 10, "!b:hs")
        await receipts.put("!b:hs", "m.read", USER, None, read_to, "{}")
        await check({key: value for key, value in expected.items() if key[0] != "!b:hs"}, 1)
        late = PushActionRow(USER, "$late", "!b:hs", 9, "main", False, DEFAULT_ACTIONS, 9)
        await store.add([late])  # evaluated after the receipt was committed
        await check({key: value for key, value in expected.items() if key[0] != "!b:hs"}, 0)
    # A small cache empties itself when full, and answers alike.
    small = PushActionStore(database, count_cache_size=2)
    by_room = {"!a:hs": {("!a:hs", "main"): (2, 1)}}
    sizes = []
    for room in [*rooms, *rooms]:
        assert _by_room(await small.unread_counts(USER, [room])) == by_room.get(room, {})
        sizes.append(small._counts_size)
    assert sizes == [1, 2, 1, 2, 1, 2]
    assert _by_room(await small.unread_counts(USER, rooms)) == by_room["!a:hs"]


async def test_counts_read_while_a_row_is_written_are_not_remembered(
    database: Database,
) -> None:
    store = PushActionStore(database)
    await _notify(store, 1, "!a:hs")
    read_counts = store._read_counts

    async def overlapping(user_id: str, rooms: list[str]) -> list[ThreadCount]:
        counts = await read_counts(user_id, rooms)  # the old rows...
        await _notify(store, 2, "!a:hs")  # ...then a new one is committed
        return counts

    store._read_counts = overlapping  # type: ignore[method-assign]
    assert _by_room(await store.unread_counts(USER, ["!a:hs"])) == {("!a:hs", "main"): (1, 0)}
    del store._read_counts
    assert _by_room(await store.unread_counts(USER, ["!a:hs"])) == {("!a:hs", "main"): (2, 0)}
