"""End-to-end encryption and key backup stores, on both engines."""

from __future__ import annotations

import asyncio

from ranvier.storage import Database, current_stream_position
from ranvier.storage.e2e import E2eStore, SignatureRow
from ranvier.storage.key_backup import BackupKeyRow, KeyBackupStore

ALICE = "@alice:test"


async def _add_device(database: Database, user_id: str, device_id: str) -> None:
    await database.execute(
        "INSERT INTO devices (user_id, device_id, display_name) VALUES (?, ?, ?)",
        user_id,
        device_id,
        f"{device_id} name",
    )


async def test_device_keys_and_devices_with_keys(database: Database) -> None:
    store = E2eStore(database)
    await _add_device(database, ALICE, "D1")
    await _add_device(database, ALICE, "D2")
    async with database.transaction() as txn:
        await store.set_device_keys(txn, ALICE, "D1", '{"k": 1}')
    async with database.transaction() as txn:
        await store.set_device_keys(txn, ALICE, "D1", '{"k": 2}')
    assert await store.get_device_keys(ALICE, "D1") == '{"k": 2}'
    rows = await store.devices_with_keys(ALICE)
    assert [(r.device_id, r.key_json, r.display_name) for r in rows] == [
        ("D1", '{"k": 2}', "D1 name"),
        ("D2", None, "D2 name"),
    ]
    assert [r.device_id for r in await store.devices_with_keys(ALICE, ["D2", "nope"])] == ["D2"]
    assert await store.devices_with_keys(ALICE, []) == []


async def test_one_time_keys_are_claimed_in_upload_order_once(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        await store.add_one_time_keys(
            txn, ALICE, "D1", [("signed_curve25519", "b", '"kb"'), ("signed_curve25519", "a", '"ka"')]
        )
        await store.add_one_time_keys(txn, ALICE, "D1", [("curve25519", "c", '"kc"')])
        # An existing ID is left as it is.
        await store.add_one_time_keys(txn, ALICE, "D1", [("signed_curve25519", "a", '"other"')])
    assert await store.one_time_key_counts(ALICE, "D1") == {"signed_curve25519": 2, "curve25519": 1}
    async with database.transaction() as txn:
        assert await store.get_one_time_keys(txn, ALICE, "D1", "signed_curve25519", ["a", "z"]) == {
            "a": '"ka"'
        }
        first = await store.claim_one_time_key(txn, ALICE, "D1", "signed_curve25519")
        second = await store.claim_one_time_key(txn, ALICE, "D1", "signed_curve25519")
        third = await store.claim_one_time_key(txn, ALICE, "D1", "signed_curve25519")
    assert (first, second, third) == (("b", '"kb"'), ("a", '"ka"'), None)
    assert await store.one_time_key_counts(ALICE, "D1") == {"curve25519": 1}


async def test_fallback_key_replace_and_used_flag(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        await store.set_fallback_key(txn, ALICE, "D1", "signed_curve25519", "f1", '"k1"')
    assert await store.unused_fallback_key_types(ALICE, "D1") == ["signed_curve25519"]
    async with database.transaction() as txn:
        assert await store.claim_fallback_key(txn, ALICE, "D1", "signed_curve25519") == ("f1", '"k1"')
        assert await store.claim_fallback_key(txn, ALICE, "D1", "signed_curve25519") == ("f1", '"k1"')
        assert await store.claim_fallback_key(txn, ALICE, "D1", "curve25519") is None
    assert await store.unused_fallback_key_types(ALICE, "D1") == []
    # The same key again stays used; a new key is unused.
    async with database.transaction() as txn:
        await store.set_fallback_key(txn, ALICE, "D1", "signed_curve25519", "f1", '"k1"')
    assert await store.unused_fallback_key_types(ALICE, "D1") == []
    async with database.transaction() as txn:
        await store.set_fallback_key(txn, ALICE, "D1", "signed_curve25519", "f2", '"k2"')
    assert await store.unused_fallback_key_types(ALICE, "D1") == ["signed_curve25519"]


async def test_concurrent_claims_hand_out_each_key_once(database: Database) -> None:
    """20 concurrent claims for 5 one-time keys: 5 distinct keys, the fallback for the rest."""
    store = E2eStore(database)
    async with database.transaction() as txn:
        await store.add_one_time_keys(
            txn, ALICE, "D1", [("signed_curve25519", f"k{i}", f'"v{i}"') for i in range(5)]
        )
        await store.set_fallback_key(txn, ALICE, "D1", "signed_curve25519", "fb", '"fallback"')

    async def claim() -> str:
        async with database.transaction() as txn:
            found = await store.claim_one_time_key(txn, ALICE, "D1", "signed_curve25519")
            if found is None:
                found = await store.claim_fallback_key(txn, ALICE, "D1", "signed_curve25519")
            assert found is not None
            await asyncio.sleep(0)
            return found[0]

    claimed = await asyncio.gather(*(claim() for _ in range(20)))
    one_time = [key for key in claimed if key != "fb"]
    assert sorted(one_time) == [f"k{i}" for i in range(5)]
    assert claimed.count("fb") == 15
    assert await store.one_time_key_counts(ALICE, "D1") == {}


async def test_cross_signing_keys_and_signatures(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        await store.set_cross_signing_key(txn, ALICE, "master", "M1", '{"m": 1}')
        await store.set_cross_signing_key(txn, ALICE, "master", "M2", '{"m": 2}')
        await store.set_cross_signing_key(txn, ALICE, "self_signing", "S", '{"s": 1}')
        await store.add_signatures(
            txn,
            [
                SignatureRow(ALICE, "ed25519:S", ALICE, "D1", "sig1"),
                SignatureRow("@bob:test", "ed25519:U", ALICE, "M2", "sig2"),
            ],
        )
        await store.add_signatures(txn, [SignatureRow(ALICE, "ed25519:S", ALICE, "D1", "sig3")])
    assert await store.get_cross_signing_keys(ALICE) == {
        "master": ("M2", '{"m": 2}'),
        "self_signing": ("S", '{"s": 1}'),
    }
    assert sorted((s.signer_user_id, s.target_key_id, s.signature) for s in await store.signatures_of(ALICE)) == [
        ("@alice:test", "D1", "sig3"),
        ("@bob:test", "M2", "sig2"),
    ]
    async with database.transaction() as txn:
        await store.delete_signatures_by_signer(txn, ALICE, ["ed25519:S"])
    assert [s.signature for s in await store.signatures_of(ALICE)] == ["sig2"]


async def test_device_list_stream(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        assert await store.add_device_list_change(txn, ALICE) == 1
        assert await store.add_device_list_change(txn, "@bob:test") == 2
    async with database.transaction() as txn:
        assert await store.add_device_list_change(txn, ALICE) == 3
    assert await current_stream_position(database, "device_lists") == 3
    users = [ALICE, "@bob:test", "@carol:test"]
    assert await store.users_with_device_changes(users, 0, 3) == {ALICE, "@bob:test"}
    assert await store.users_with_device_changes(users, 1, 2) == {"@bob:test"}
    assert await store.users_with_device_changes(users, 2, 3) == {ALICE}
    assert await store.users_with_device_changes(users, 3, 3) == set()
    assert await store.users_with_device_changes(["@carol:test"], 0, 3) == set()


async def test_to_device_inbox_and_txn_ids(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        assert await store.claim_to_device_txn(txn, ALICE, "D1", "t1", 1)
        last = await store.add_to_device_messages(
            txn, [(ALICE, "D2", '{"n": 1}'), (ALICE, "D2", '{"n": 2}'), (ALICE, "D3", '{"n": 3}')]
        )
    assert last == 3
    async with database.transaction() as txn:
        assert not await store.claim_to_device_txn(txn, ALICE, "D1", "t1", 2)
        assert await store.claim_to_device_txn(txn, ALICE, "D9", "t1", 2)
        assert await store.add_to_device_messages(txn, []) is None
    assert await store.to_device_messages(ALICE, "D2", 0, 3, 10) == [(1, '{"n": 1}'), (2, '{"n": 2}')]
    assert await store.to_device_messages(ALICE, "D2", 0, 3, 1) == [(1, '{"n": 1}')]
    assert await store.to_device_messages(ALICE, "D2", 1, 3, 10) == [(2, '{"n": 2}')]
    async with database.transaction() as txn:
        assert await store.delete_to_device_messages(txn, ALICE, "D2", 1) == 1
    assert await store.to_device_messages(ALICE, "D2", 0, 3, 10) == [(2, '{"n": 2}')]
    assert await current_stream_position(database, "to_device") == 3
    # Transaction IDs are forgotten after a day.
    async with database.transaction() as txn:
        assert not await store.claim_to_device_txn(txn, ALICE, "D1", "t1", 1 + 24 * 3600 * 1000)
        assert await store.claim_to_device_txn(txn, ALICE, "D1", "t1", 2 + 24 * 3600 * 1000)


async def test_delete_device_data(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        for device in ("D1", "D2"):
            await store.set_device_keys(txn, ALICE, device, "{}")
            await store.add_one_time_keys(txn, ALICE, device, [("a", "k", '"x"')])
            await store.set_fallback_key(txn, ALICE, device, "a", "f", '"y"')
            await store.add_to_device_messages(txn, [(ALICE, device, "{}")])
            await store.add_signatures(txn, [SignatureRow(ALICE, "ed25519:S", ALICE, device, "s")])
            # The device's signature of its user's master key.
            await store.add_signatures(txn, [SignatureRow(ALICE, f"ed25519:{device}", ALICE, "M", "m")])
    async with database.transaction() as txn:
        await store.delete_device_data(txn, ALICE, ["D1"])
    assert await store.get_device_keys(ALICE, "D1") is None
    assert await store.get_device_keys(ALICE, "D2") == "{}"
    assert await store.one_time_key_counts(ALICE, "D1") == {}
    assert await store.one_time_key_counts(ALICE, "D2") == {"a": 1}
    assert await store.unused_fallback_key_types(ALICE, "D1") == []
    assert await store.to_device_messages(ALICE, "D1", 0, 10, 10) == []
    assert sorted((s.signer_key_id, s.target_key_id) for s in await store.signatures_of(ALICE)) == [
        ("ed25519:D2", "M"),
        ("ed25519:S", "D2"),
    ]


def _key(session: str, index: int, forwarded: int, verified: bool) -> BackupKeyRow:
    return BackupKeyRow("!r:test", session, index, forwarded, verified, '{"c": 1}')


async def test_key_backup_versions_and_keys(database: Database) -> None:
    store = KeyBackupStore(database)
    async with database.transaction() as txn:
        assert await store.create_version(txn, ALICE, "alg", "{}") == 1
        assert await store.create_version(txn, ALICE, "alg", '{"a": 1}') == 2
        assert await store.create_version(txn, "@bob:test", "alg", "{}") == 1
    current = await store.get_version(ALICE, None)
    assert current is not None and (current.version, current.auth_data, current.etag) == (2, '{"a": 1}', 0)
    async with database.transaction() as txn:
        await store.put_key(txn, ALICE, 2, _key("s1", 5, 0, False))
        await store.put_key(txn, ALICE, 2, _key("s1", 3, 1, True))
        await store.put_key(txn, ALICE, 2, _key("s2", 0, 0, False))
        await store.bump_etag(txn, ALICE, 2)
    assert await store.count_keys(ALICE, 2) == 2
    assert await store.get_keys(ALICE, 2, "!r:test", "s1") == [_key("s1", 3, 1, True)]
    assert [k.session_id for k in await store.get_keys(ALICE, 2)] == ["s1", "s2"]
    version = await store.get_version(ALICE, 2)
    assert version is not None and version.etag == 1
    async with database.transaction() as txn:
        assert await store.delete_keys(txn, ALICE, 2, "!r:test", "s2") == 1
        assert await store.delete_version(txn, ALICE, 2)
        assert not await store.delete_version(txn, ALICE, 2)
    assert await store.count_keys(ALICE, 2) == 0
    assert await store.get_version(ALICE, 2) is None
    current = await store.get_version(ALICE, None)
    assert current is not None and current.version == 1
    async with database.transaction() as txn:
        # Deleted version numbers are not reused.
        assert await store.create_version(txn, ALICE, "alg", "{}") == 3


async def test_delete_all_device_data_of_a_user(database: Database) -> None:
    store = E2eStore(database)
    async with database.transaction() as txn:
        await store.set_cross_signing_key(txn, ALICE, "master", "M", "{}")
        for device in ("D1", "D2"):
            await store.set_device_keys(txn, ALICE, device, "{}")
            await store.add_one_time_keys(txn, ALICE, device, [("a", "k", '"x"')])
            await store.add_signatures(txn, [SignatureRow(ALICE, "ed25519:S", ALICE, device, "s")])
        await store.add_signatures(txn, [SignatureRow(ALICE, "ed25519:D1", ALICE, "M", "m")])
        # Bob's device signature of his master key; Alice's master key's signature of Bob's.
        await store.add_signatures(txn, [SignatureRow("@bob:test", "ed25519:D1", "@bob:test", "BM", "b")])
        await store.add_signatures(txn, [SignatureRow(ALICE, "ed25519:M", "@bob:test", "BM", "u")])
        await store.set_device_keys(txn, "@bob:test", "D1", "{}")
    async with database.transaction() as txn:
        await store.delete_device_data(txn, ALICE, None)
    assert await store.get_device_keys(ALICE, "D1") is None
    assert await store.get_device_keys("@bob:test", "D1") == "{}"
    assert await store.one_time_key_counts(ALICE, "D2") == {}
    # Signatures of and by Alice's devices are gone; her cross-signing key's stays.
    assert await store.signatures_of(ALICE) == []
    assert sorted((s.signer_user_id, s.signer_key_id) for s in await store.signatures_of("@bob:test")) == [
        ("@alice:test", "ed25519:M"),
        ("@bob:test", "ed25519:D1"),
    ]
