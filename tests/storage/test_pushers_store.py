"""PushersStore on both engines."""

from __future__ import annotations

from dataclasses import replace

from ranvier.storage import Database
from ranvier.storage.pushers import Pusher, PushersStore

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def _pusher(user_id: str = ALICE, pushkey: str = "key", **fields: object) -> Pusher:
    pusher = Pusher(
        user_id=user_id,
        device_id="DEV",
        kind="http",
        app_id="org.example.app",
        pushkey=pushkey,
        pushkey_ts=1_700_000_000_123,
        app_display_name="App",
        device_display_name="Phone",
        profile_tag=None,
        lang="en",
        data={"url": "https://gw.example/_matrix/push/v1/notify", "nested": {"é": [1, None]}},
    )
    return replace(pusher, **fields)  # type: ignore[arg-type]


async def test_set_round_trips_and_updates_in_place(database: Database) -> None:
    store = PushersStore(database)
    first = _pusher(profile_tag="tag")
    assert await store.set_pusher(first, remove_others=True) == []
    assert await store.user_pushers(ALICE) == [first]
    updated = _pusher(lang="de", device_id="OTHER", profile_tag=None, data={"url": "u"})
    await store.set_pusher(updated, remove_others=True)
    assert await store.user_pushers(ALICE) == [updated]


async def test_remove_others_takes_the_pushkey_from_other_users_only(database: Database) -> None:
    store = PushersStore(database)
    await store.set_pusher(_pusher(BOB), remove_others=False)
    await store.set_pusher(_pusher(BOB, pushkey="bob-only"), remove_others=False)
    await store.set_pusher(_pusher(ALICE, pushkey="alice-other"), remove_others=False)
    assert await store.set_pusher(_pusher(ALICE), remove_others=True) == [BOB]
    assert [p.pushkey for p in await store.user_pushers(BOB)] == ["bob-only"]
    assert [p.pushkey for p in await store.user_pushers(ALICE)] == ["alice-other", "key"]


async def test_append_keeps_other_users_pushers(database: Database) -> None:
    store = PushersStore(database)
    await store.set_pusher(_pusher(BOB), remove_others=False)
    assert await store.set_pusher(_pusher(ALICE), remove_others=False) == []
    assert len(await store.user_pushers(BOB)) == 1


async def test_delete_one_and_by_device(database: Database) -> None:
    store = PushersStore(database)
    await store.set_pusher(_pusher(pushkey="a", device_id="D1"), remove_others=False)
    await store.set_pusher(_pusher(pushkey="b", device_id="D2"), remove_others=False)
    await store.set_pusher(_pusher(pushkey="c", device_id="D3"), remove_others=False)
    await store.set_pusher(_pusher(BOB, pushkey="d", device_id="D1"), remove_others=False)
    assert await store.delete_pusher(ALICE, "org.example.app", "a") is True
    assert await store.delete_pusher(ALICE, "org.example.app", "a") is False
    assert await store.delete_device_pushers(ALICE, []) == 0
    assert await store.delete_device_pushers(ALICE, ["D2", "D9"]) == 1
    assert [p.pushkey for p in await store.user_pushers(ALICE)] == ["c"]
    assert await store.delete_device_pushers(ALICE, None) == 1
    assert await store.user_pushers(ALICE) == []
    assert [p.pushkey for p in await store.user_pushers(BOB)] == ["d"]
