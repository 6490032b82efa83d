"""The remote server key store, on both engines."""

from __future__ import annotations

from dataclasses import replace

from ranvier.storage import Database
from ranvier.storage.server_keys import ServerKeyRow, ServerKeyStore

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def _key(
    key_id: str = "ed25519:a",
    *,
    server_name: str = "remote.example",
    verify_key: bytes = KEY_A,
    valid_until_ts: int = 2_000,
    expired_ts: int | None = None,
    fetched_ts: int = 1_000,
    key_json: str = '{"doc": 1}',
) -> ServerKeyRow:
    return ServerKeyRow(
        server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, key_json
    )


async def test_keys_round_trip_per_server(database: Database) -> None:
    store = ServerKeyStore(database)
    assert await store.get_keys("remote.example") == []
    current = _key("ed25519:b", verify_key=KEY_B)
    old = _key("ed25519:a", expired_ts=1_500)
    elsewhere = _key(server_name="other.example:8448", key_json='{"doc": 2}')
    await store.store_keys([current, old, elsewhere])
    assert await store.get_keys("remote.example") == [old, current]
    assert await store.get_keys("other.example:8448") == [elsewhere]
    assert await store.get_keys("unknown.example") == []
    stored = (await store.get_keys("remote.example"))[1]
    assert type(stored.verify_key) is bytes and stored.verify_key == KEY_B


async def test_nothing_to_store_is_a_no_op(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_keys([])
    assert await store.get_keys("remote.example") == []


async def test_a_fresher_document_replaces_the_row(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_keys([_key()])
    fresher = _key(valid_until_ts=9_000, fetched_ts=5_000, key_json='{"doc": 3}')
    await store.store_keys([fresher])
    assert await store.get_keys("remote.example") == [fresher]
    # Refetched with the same validity: the new fetch time is kept.
    again = replace(fresher, fetched_ts=6_000)
    await store.store_keys([again])
    assert await store.get_keys("remote.example") == [again]


async def test_a_stale_document_does_not_replace_a_fresher_one(database: Database) -> None:
    store = ServerKeyStore(database)
    fresh = _key(valid_until_ts=9_000, fetched_ts=5_000)
    await store.store_keys([fresh])
    stale = _key(valid_until_ts=3_000, fetched_ts=7_000, key_json='{"stale": 1}')
    await store.store_keys([stale, _key("ed25519:new", key_json='{"stale": 1}')])
    keys = await store.get_keys("remote.example")
    assert keys == [fresh, _key("ed25519:new", key_json='{"stale": 1}')]


async def test_a_newer_document_can_retire_a_key(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_keys([_key()])
    retired = _key(valid_until_ts=9_000, expired_ts=4_000, fetched_ts=5_000)
    await store.store_keys([retired])
    assert await store.get_keys("remote.example") == [retired]
