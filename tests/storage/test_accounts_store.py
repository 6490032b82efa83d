"""The accounts store on both engines: users, devices, tokens, registration
tokens and UIA sessions."""

from __future__ import annotations

from ranvier.storage import Database
from ranvier.storage.accounts import AccountsStore, RegistrationTokenRow, UserRow


async def _user(store: AccountsStore, user_id: str = "@alice:hs", **flags: bool) -> None:
    async with store.db.transaction() as txn:
        assert await store.create_user(txn, user_id, "hash", 1000, **flags)


async def _tokens(
    store: AccountsStore, user_id: str, device_id: str, token: str, *, refresh: str | None = None
) -> tuple[int, int | None]:
    async with store.db.transaction() as txn:
        await store.upsert_device(txn, user_id, device_id, None, 1, None)
        refresh_id = (
            await store.add_refresh_token(txn, user_id, device_id, refresh) if refresh else None
        )
        access_id = await store.add_access_token(txn, user_id, device_id, token, None, refresh_id)
    return access_id, refresh_id


async def test_users_are_created_once_and_read_back(database: Database) -> None:
    store = AccountsStore(database)
    async with database.transaction() as txn:
        assert await store.create_user(txn, "@alice:hs", "h1", 1000, is_admin=True)
        assert not await store.create_user(txn, "@alice:hs", "h2", 2000)
        assert await store.create_user(txn, "@Bob:hs", None, 3000, is_guest=True)
    assert await store.get_user("@alice:hs") == UserRow("@alice:hs", "h1", 1000, True, False, False)
    assert await store.get_user("@bob:hs") is None
    assert [u.user_id for u in await store.find_users_case_insensitive("@bob:hs")] == ["@Bob:hs"]
    bob = await store.get_user("@Bob:hs")
    assert bob is not None and bob.is_guest and bob.password_hash is None


async def test_password_admin_and_deactivation_flags(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    async with database.transaction() as txn:
        await store.set_password_hash(txn, "@alice:hs", "new")
        await store.set_deactivated(txn, "@alice:hs")
    assert await store.set_admin("@alice:hs", True)
    assert not await store.set_admin("@nobody:hs", True)
    assert await store.get_user("@alice:hs") == UserRow("@alice:hs", "new", 1000, True, False, True)


async def test_devices_keep_their_display_name_and_record_last_seen(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    async with database.transaction() as txn:
        assert await store.upsert_device(txn, "@alice:hs", "DEV", "Phone", 10, "1.2.3.4")
        assert not await store.upsert_device(txn, "@alice:hs", "DEV", "Other", 20, "5.6.7.8")
        assert await store.upsert_device(txn, "@alice:hs", "AAA", None, 30, None)
    device = await store.get_device("@alice:hs", "DEV")
    assert device is not None
    assert (device.display_name, device.last_seen_ts, device.last_seen_ip) == ("Phone", 20, "5.6.7.8")
    assert [d.device_id for d in await store.get_devices("@alice:hs")] == ["AAA", "DEV"]


async def test_access_tokens_join_the_user_flags(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store, is_guest=True)
    access_id, _ = await _tokens(store, "@alice:hs", "DEV", "tok")
    row = await store.get_access_token("tok")
    assert row is not None
    assert (row.id, row.user_id, row.device_id, row.valid_until_ms, row.used) == (
        access_id,
        "@alice:hs",
        "DEV",
        None,
        False,
    )
    assert row.is_guest and not row.deactivated
    assert await store.get_access_token("other") is None


async def test_deleting_devices_deletes_their_tokens(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    await _tokens(store, "@alice:hs", "A", "tok-a", refresh="ref-a")
    await _tokens(store, "@alice:hs", "B", "tok-b")
    async with database.transaction() as txn:
        assert await store.delete_devices(txn, "@alice:hs", ["A"]) == ["tok-a"]
    assert await store.get_access_token("tok-a") is None
    assert await store.get_refresh_token("ref-a") is None
    assert await store.get_device("@alice:hs", "A") is None
    assert await store.get_access_token("tok-b") is not None
    async with database.transaction() as txn:
        assert await store.delete_devices(txn, "@alice:hs") == ["tok-b"]
        assert await store.delete_devices(txn, "@alice:hs", []) == []
    assert await store.get_devices("@alice:hs") == []


async def test_delete_tokens_can_keep_the_current_one(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    keep_id, _ = await _tokens(store, "@alice:hs", "A", "keep", refresh="keep-r")
    await _tokens(store, "@alice:hs", "A", "drop", refresh="drop-r")
    async with database.transaction() as txn:
        revoked = await store.delete_tokens(
            txn, "@alice:hs", ["A"], except_access_token_id=keep_id
        )
    assert revoked == ["drop"]
    assert await store.get_access_token("keep") is not None
    assert await store.get_refresh_token("keep-r") is not None
    assert await store.get_refresh_token("drop-r") is None


async def test_refresh_rotation_revokes_the_replaced_token_on_first_use(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    _, old_refresh = await _tokens(store, "@alice:hs", "A", "tok-1", refresh="ref-1")
    assert old_refresh is not None
    new_access, new_refresh = await _tokens(store, "@alice:hs", "A", "tok-2", refresh="ref-2")
    assert new_refresh is not None
    async with database.transaction() as txn:
        assert await store.replace_refresh_token(txn, old_refresh, new_refresh) == []
    old = await store.get_refresh_token("ref-1")
    assert old is not None and old.next_token_id == new_refresh
    # The new access token's first use revokes ref-1 and its access token.
    assert await store.mark_access_token_used(new_access, new_refresh) == ["tok-1"]
    assert await store.get_refresh_token("ref-1") is None
    assert await store.get_access_token("tok-1") is None
    row = await store.get_access_token("tok-2")
    assert row is not None and row.used


async def test_replacing_again_drops_the_unused_replacement(database: Database) -> None:
    store = AccountsStore(database)
    await _user(store)
    _, first = await _tokens(store, "@alice:hs", "A", "tok-1", refresh="ref-1")
    _, second = await _tokens(store, "@alice:hs", "A", "tok-2", refresh="ref-2")
    _, third = await _tokens(store, "@alice:hs", "A", "tok-3", refresh="ref-3")
    assert first and second and third
    async with database.transaction() as txn:
        await store.replace_refresh_token(txn, first, second)
        assert await store.replace_refresh_token(txn, first, third) == ["tok-2"]
    assert await store.get_refresh_token("ref-2") is None
    async with database.transaction() as txn:
        assert await store.revoke_replaced_refresh_tokens(txn, third) == ["tok-1"]
    assert await store.get_refresh_token("ref-1") is None


async def test_registration_tokens_count_pending_and_completed_uses(database: Database) -> None:
    store = AccountsStore(database)
    assert await store.create_registration_token("tok", 2, 5000)
    assert not await store.create_registration_token("tok", None, None)
    async with database.transaction() as txn:
        assert await store.reserve_registration_token(txn, "tok", 1000)
        assert await store.reserve_registration_token(txn, "tok", 1000)
        assert not await store.reserve_registration_token(txn, "tok", 1000)  # used up
        await store.complete_registration_token(txn, "tok")
        await store.release_registration_token(txn, "tok")
    assert await store.get_registration_token("tok") == RegistrationTokenRow("tok", 2, 0, 1, 5000)
    async with database.transaction() as txn:
        assert not await store.reserve_registration_token(txn, "tok", 5000)  # expired
        assert await store.reserve_registration_token(txn, "tok", 4999)
        assert not await store.reserve_registration_token(txn, "unknown", 0)
    assert await store.create_registration_token("free", None, None)
    async with database.transaction() as txn:
        for _ in range(3):
            assert await store.reserve_registration_token(txn, "free", 10**15)


async def test_ui_auth_sessions_keep_clientdict_and_stages(database: Database) -> None:
    store = AccountsStore(database)
    await store.create_ui_auth_session("s1", 100, "/register", "POST", '{"a":1}', None)
    await store.create_ui_auth_session("s2", 900, "/pw", "POST", "{}", "@alice:hs")
    session = await store.get_ui_auth_session("s1")
    assert session is not None
    assert (session.uri, session.method, session.clientdict, session.user_id) == (
        "/register",
        "POST",
        '{"a":1}',
        None,
    )
    await store.set_ui_auth_clientdict("s1", '{"b":2}')
    async with database.transaction() as txn:
        await store.add_ui_auth_stage(txn, "s1", "m.login.dummy", "true")
        await store.add_ui_auth_stage(txn, "s1", "m.login.dummy", "true")
    assert await store.get_ui_auth_stages("s1") == {"m.login.dummy": "true"}
    assert await store.expired_ui_auth_sessions(500) == ["s1"]
    async with database.transaction() as txn:
        await store.delete_ui_auth_session(txn, "s1")
    assert await store.get_ui_auth_session("s1") is None
    assert await store.get_ui_auth_stages("s1") == {}
    assert await store.get_ui_auth_session("s2") is not None
