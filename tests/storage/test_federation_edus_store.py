"""The store behind federation EDUs (remote device lists, what we announced,
inbound to-device IDs), on both engines."""

from __future__ import annotations

from ranvier.storage import Database
from ranvier.storage.e2e import DeviceKeysRow
from ranvier.storage.federation_edus import (
    CROSS_SIGNING,
    DEVICE,
    Announced,
    FederationEduStore,
    RemoteDeviceList,
)

BOB = "@bob:remote.example"


async def test_a_remote_device_list_is_replaced_then_updated(database: Database) -> None:
    store = FederationEduStore(database)
    assert await store.get_device_list(BOB) is None
    async with database.transaction() as txn:
        await store.replace_device_list(
            txn, BOB, 7, [("A", "Phone", '{"k": 1}'), ("B", None, None)], {"master": '{"m": 1}'}
        )
    assert await store.get_device_list(BOB) == RemoteDeviceList(BOB, 7, False)
    assert await store.devices(BOB) == [
        DeviceKeysRow(BOB, "A", '{"k": 1}', "Phone"),
        DeviceKeysRow(BOB, "B", None, None),
    ]
    assert await store.devices(BOB, ["B", "C"]) == [DeviceKeysRow(BOB, "B", None, None)]
    assert await store.devices(BOB, []) == []
    async with database.transaction() as txn:
        await store.apply_device_update(
            txn, BOB, 8, "A", deleted=True, display_name=None, key_json=None
        )
        await store.apply_device_update(
            txn, BOB, 9, "C", deleted=False, display_name="New", key_json='{"k": 3}'
        )
    assert [row.device_id for row in await store.devices(BOB)] == ["B", "C"]
    assert await store.get_device_list(BOB) == RemoteDeviceList(BOB, 9, False)
    # A resync replaces everything, cross-signing keys included.
    async with database.transaction() as txn:
        await store.replace_device_list(txn, BOB, 10, [("D", None, None)], {})
    assert [row.device_id for row in await store.devices(BOB)] == ["D"]
    assert await store.cross_signing_keys(BOB) == {}


async def test_stale_marks_are_durable_and_keep_the_stream_id(database: Database) -> None:
    store = FederationEduStore(database)
    await store.mark_stale("@new:remote.example")
    async with database.transaction() as txn:
        await store.replace_device_list(txn, BOB, 5, [], {})
    await store.mark_stale(BOB)
    assert await store.get_device_list(BOB) == RemoteDeviceList(BOB, 5, True)
    assert await store.stale_user_ids() == [BOB, "@new:remote.example"]
    async with database.transaction() as txn:
        await store.set_cross_signing_key(txn, BOB, "master", '{"m": 2}')
    assert await store.cross_signing_keys(BOB) == {"master": '{"m": 2}'}


async def test_announcements_and_the_latest_stream_id(database: Database) -> None:
    store = FederationEduStore(database)
    alice = "@alice:us.example"
    assert await store.latest_announced(alice) == 0
    async with database.transaction() as txn:
        await store.set_announced(txn, alice, DEVICE, "A", 3, "h1")
        await store.set_announced(txn, alice, DEVICE, "B", 4, None)  # deleted
        await store.set_announced(txn, alice, CROSS_SIGNING, "", 0, "x")
    assert await store.announced(alice) == {
        (DEVICE, "A"): Announced(3, "h1"),
        (DEVICE, "B"): Announced(4, ""),
        (CROSS_SIGNING, ""): Announced(0, "x"),
    }
    assert await store.latest_announced(alice) == 4


async def test_inbound_to_device_ids_are_claimed_once_per_origin(database: Database) -> None:
    store = FederationEduStore(database)
    async with database.transaction() as txn:
        assert await store.claim_inbound_to_device(txn, "a.example", "m1", 1_000)
        assert not await store.claim_inbound_to_device(txn, "a.example", "m1", 1_001)
        assert await store.claim_inbound_to_device(txn, "b.example", "m1", 1_002)
    # Forgotten after keep_ms: the same ID is new again.
    async with database.transaction() as txn:
        assert await store.claim_inbound_to_device(txn, "a.example", "m1", 5_000, keep_ms=1_000)
