"""Stores for filters, account data, receipts and presence, on both engines."""

from __future__ import annotations

import pytest

from ranvier.storage import Database, current_stream_position
from ranvier.storage.account_data import AccountDataRow, AccountDataStore
from ranvier.storage.filters import FilterStore
from ranvier.storage.presence import PresenceRow, PresenceStore
from ranvier.storage.receipts import ReceiptRow, ReceiptStore


async def test_filters(database: Database) -> None:
    store = FilterStore(database)
    assert await store.add_filter("@a:x", '{"x": 1}') == 0
    assert await store.add_filter("@a:x", "{}") == 1
    assert await store.add_filter("@b:x", '{"b": 1}') == 0
    assert await store.get_filter("@a:x", 0) == '{"x": 1}'
    assert await store.get_filter("@a:x", 1) == "{}"
    assert await store.get_filter("@b:x", 0) == '{"b": 1}'
    assert await store.get_filter("@b:x", 1) is None
    assert await store.get_filter("@c:x", 0) is None


async def test_account_data(database: Database) -> None:
    store = AccountDataStore(database)
    assert await store.put("@a:x", None, "m.direct", '{"d": 1}') == 1
    assert await store.put("@a:x", "!r:x", "m.tag", '{"tags": {}}') == 2
    assert await store.put("@b:x", None, "m.direct", "{}") == 3
    assert await store.put("@a:x", None, "m.direct", '{"d": 2}') == 4
    assert await current_stream_position(database, "account_data") == 4
    assert await store.get("@a:x", None, "m.direct") == '{"d": 2}'
    assert await store.get("@a:x", "!r:x", "m.tag") == '{"tags": {}}'
    assert await store.get("@a:x", "!r:x", "m.direct") is None
    assert await store.get("@a:x", None, "m.tag") is None
    assert await store.changed_between("@a:x", 0, 4) == [
        AccountDataRow("!r:x", "m.tag", '{"tags": {}}', 2),
        AccountDataRow(None, "m.direct", '{"d": 2}', 4),
    ]
    assert await store.changed_between("@a:x", 2, 3) == []
    assert await store.changed_between("@a:x", 0, 3) == [
        AccountDataRow("!r:x", "m.tag", '{"tags": {}}', 2)
    ]
    assert [row.stream_id for row in await store.changed_between("@b:x", 0, 4)] == [3]


async def test_account_data_rolls_back_with_its_transaction(database: Database) -> None:
    store = AccountDataStore(database)
    with pytest.raises(RuntimeError):
        async with database.transaction() as txn:
            await store.put_in_transaction(txn, "@a:x", None, "m.direct", "{}")
            raise RuntimeError("boom")
    assert await store.get("@a:x", None, "m.direct") is None
    assert await current_stream_position(database, "account_data") == 0
    assert await store.put("@a:x", None, "m.direct", "{}") == 1


async def test_receipts(database: Database) -> None:
    store = ReceiptStore(database)
    assert await store.put("!r:x", "m.read", "@a:x", None, "$1", '{"ts": 1}') == 1
    assert await store.put("!r:x", "m.read", "@a:x", "main", "$2", '{"ts": 2}') == 2
    assert await store.put("!s:x", "m.read.private", "@a:x", None, "$3", '{"ts": 3}') == 3
    # A new receipt replaces the old one for the same (room, type, user, thread).
    assert await store.put("!r:x", "m.read", "@a:x", None, "$4", '{"ts": 4}') == 4
    assert await current_stream_position(database, "receipts") == 4
    assert await store.get("!r:x", "m.read", "@a:x", None) == ReceiptRow(
        "!r:x", "m.read", "@a:x", None, "$4", '{"ts": 4}', 4
    )
    assert (await store.get("!r:x", "m.read", "@a:x", "main")) == ReceiptRow(
        "!r:x", "m.read", "@a:x", "main", "$2", '{"ts": 2}', 2
    )
    assert await store.get("!r:x", "m.read.private", "@a:x", None) is None
    assert [row.event_id for row in await store.changed_between(["!r:x"], 0, 4)] == ["$2", "$4"]
    assert [row.event_id for row in await store.changed_between(["!r:x", "!s:x"], 0, 4)] == [
        "$2",
        "$3",
        "$4",
    ]
    assert [row.event_id for row in await store.changed_between(["!r:x", "!s:x"], 2, 3)] == ["$3"]
    assert await store.changed_between([], 0, 4) == []
    assert await store.changed_between(["!none:x"], 0, 4) == []


async def test_presence(database: Database) -> None:
    store = PresenceStore(database)
    assert await store.get("@a:x") is None
    assert await store.put("@a:x", "online", "hi", 100) == 1
    assert await store.put("@b:x", "unavailable", None, 50) == 2
    assert await store.put("@a:x", "offline", None, 100) == 3
    assert await store.get("@a:x") == PresenceRow("@a:x", "offline", None, 100, 3)
    assert await store.get_many(["@a:x", "@b:x", "@c:x"]) == [
        PresenceRow("@b:x", "unavailable", None, 50, 2),
        PresenceRow("@a:x", "offline", None, 100, 3),
    ]
    assert await store.get_many([]) == []
    assert [row.user_id for row in await store.changed_between(["@a:x", "@b:x"], 0, 2)] == ["@b:x"]
    assert [row.user_id for row in await store.changed_between(["@a:x"], 0, 3)] == ["@a:x"]
    assert await store.changed_between(["@b:x"], 2, 3) == []
    assert await store.changed_between([], 0, 3) == []
    assert await current_stream_position(database, "presence") == 3
