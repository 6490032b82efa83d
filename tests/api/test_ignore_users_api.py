"""Ignoring users (Client-Server API, "Ignoring Users"; ``m.ignored_user_list``):
an ignored user's non-state events are left out of /sync, /messages, /context
and /event, their invites out of /sync, their state events still come; the
next /sync after a change follows it; the list is validated. Both engines."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.services.ignored_users import drop_ignored_senders
from tests.api.rooms_support import (
    V3,
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    put_state,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    bodies,
    get,
    make_sync_client_fixture,
    messages,
    sync,
)


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


def ignore_path(user: User) -> str:
    return f"/user/{q(user.user_id)}/account_data/m.ignored_user_list"


async def set_ignored(client: Client, user: User, *others: User) -> None:
    body = {"ignored_users": {other.user_id: {} for other in others}}
    assert await call(client, "PUT", ignore_path(user), user, body) == (200, {})


async def say(client: Client, user: User, room_id: str, text: str) -> str:
    status, body = await send(client, user, room_id, {"msgtype": "m.text", "body": text}, text)
    assert status == 200, body
    event_id: str = body["event_id"]
    return event_id


def timeline(body: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = body["rooms"]["join"].get(room_id)
    return [] if room is None else room["timeline"]["events"]


async def shared_room(client: Client) -> tuple[User, User, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        power_level_content_override={"events": {"m.room.topic": 0}},
    )
    assert (await join(client, bob, room_id))[0] == 200
    return alice, bob, room_id


async def test_ignored_messages_are_left_out_state_stays(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    await say(client, bob, room_id, "before")
    await set_ignored(client, alice, bob)
    since = (await sync(client, alice))["next_batch"]
    await say(client, bob, room_id, "ignored 1")
    status, _ = await put_state(client, bob, room_id, "m.room.topic", "", {"topic": "by bob"})
    assert status == 200
    await say(client, alice, room_id, "alice speaks")
    await say(client, bob, room_id, "ignored 2")

    incremental = await sync(client, alice, since=since)
    events = timeline(incremental, room_id)
    assert bodies(events) == ["alice speaks"]
    # "Servers must still send state events sent by ignored users to clients."
    assert [(e["type"], e["sender"]) for e in events if e["type"] == "m.room.topic"] == [
        ("m.room.topic", bob.user_id)
    ]
    initial = await sync(client, alice)
    assert "ignored 1" not in bodies(timeline(initial, room_id))
    assert "before" not in bodies(timeline(initial, room_id))
    # Bob still sees everything: ignoring is Alice's view only.
    assert bodies(timeline(await sync(client, bob), room_id))[-3:] == [
        "ignored 1",
        "alice speaks",
        "ignored 2",
    ]


async def test_messages_context_and_event_leave_them_out(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    first = await say(client, alice, room_id, "a1")
    hidden = await say(client, bob, room_id, "b1")
    await say(client, alice, room_id, "a2")
    await set_ignored(client, alice, bob)

    status, page = await messages(client, alice, room_id, dir="b", limit=10)
    assert status == 200
    assert bodies(page["chunk"]) == ["a2", "a1"]
    status, context = await get(client, f"{V3}/rooms/{q(room_id)}/context/{q(first)}", alice)
    assert status == 200
    assert bodies(context["events_after"]) == ["a2"]
    for path in (
        f"/rooms/{q(room_id)}/context/{q(hidden)}",
        f"/rooms/{q(room_id)}/event/{q(hidden)}",
    ):
        status, error = await call(client, "GET", path, alice)
        assert (status, error["errcode"]) == (404, "M_NOT_FOUND"), path
    # Not ignoring: Bob's message is back in /messages (nothing was deleted).
    await set_ignored(client, alice)
    status, page = await messages(client, alice, room_id, dir="b", limit=10)
    assert bodies(page["chunk"]) == ["a2", "b1", "a1"]
    assert (await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(hidden)}", alice))[0] == 200


async def test_timeline_refills_past_ignored_events(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    await say(client, alice, room_id, "a1")
    await say(client, alice, room_id, "a2")
    for n in range(6):
        await say(client, bob, room_id, f"b{n}")
    await set_ignored(client, alice, bob)
    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 2}}})
    room = body["rooms"]["join"][room_id]["timeline"]
    assert bodies(room["events"]) == ["a1", "a2"]
    assert room["limited"] is True


async def test_unignoring_resumes_without_resending_what_was_missed(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    await set_ignored(client, alice, bob)
    since = (await sync(client, alice))["next_batch"]
    await say(client, bob, room_id, "missed")
    ignoring = await sync(client, alice, since=since)
    assert bodies(timeline(ignoring, room_id)) == []
    # The change comes in the next /sync's account data, and applies at once.
    await set_ignored(client, alice)
    after_change = await sync(client, alice, since=ignoring["next_batch"])
    assert {"type": "m.ignored_user_list", "content": {"ignored_users": {}}} in after_change[
        "account_data"
    ]["events"]
    assert (
        bodies(timeline(after_change, room_id)) == []
    )  # "should not send events that were missed"
    await say(client, bob, room_id, "seen again")
    resumed = await sync(client, alice, since=after_change["next_batch"])
    assert bodies(timeline(resumed, room_id)) == ["seen again"]
    # A fresh sync has the missed one too.
    assert bodies(timeline(await sync(client, alice), room_id))[-2:] == ["missed", "seen again"]


async def test_ignoring_takes_effect_at_the_next_sync(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    since = (await sync(client, alice))["next_batch"]
    await set_ignored(client, alice, bob)
    await say(client, bob, room_id, "hidden at once")
    body = await sync(client, alice, since=since)
    assert bodies(timeline(body, room_id)) == []
    assert await hs_of(client).account_data.ignored_users(alice.user_id) == {bob.user_id}
    ignored = hs_of(client).account_data.ignored
    assert await ignored.ignorers_of(bob.user_id) == {alice.user_id}
    assert await ignored.ignorers_of(alice.user_id) == frozenset()


async def test_an_ignored_senders_events_never_notify(client: Client) -> None:
    """Push rules skip an ignored sender ("Ignoring Users"): Alice's unread
    count leaves Bob's messages out while she ignores him, and counts them
    again once she stops (the index of who ignores whom follows the change)."""
    alice, bob, room_id = await shared_room(client)
    carol = await make_user(client, "carol")
    assert (await join(client, carol, room_id))[0] == 200

    async def notifications() -> int:
        room = (await sync(client, alice))["rooms"]["join"][room_id]
        count: int = room["unread_notifications"]["notification_count"]
        return count

    await say(client, bob, room_id, "before")
    assert await notifications() == 1
    await set_ignored(client, alice, bob)
    await say(client, bob, room_id, "ignored")
    await say(client, carol, room_id, "from carol")
    assert await notifications() == 2  # "before" and Carol's
    await set_ignored(client, alice)
    await say(client, bob, room_id, "heard again")
    assert await notifications() == 3
    # Bob is counted for Carol throughout.
    room = (await sync(client, carol))["rooms"]["join"][room_id]
    assert room["unread_notifications"]["notification_count"] == 3


async def test_invites_from_ignored_users_are_not_sent(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    await set_ignored(client, alice, bob)
    since = (await sync(client, alice))["next_batch"]
    from_bob = await create_room(client, bob)
    from_carol = await create_room(client, carol)
    for inviter, room_id in ((bob, from_bob), (carol, from_carol)):
        status, _ = await call(
            client, "POST", f"/rooms/{q(room_id)}/invite", inviter, {"user_id": alice.user_id}
        )
        assert status == 200
    incremental = await sync(client, alice, since=since)
    assert set(incremental["rooms"]["invite"]) == {from_carol}
    assert set((await sync(client, alice))["rooms"]["invite"]) == {from_carol}
    # Alice may still join the room Bob invited her to (not rejected for her).
    assert (await join(client, alice, from_bob))[0] == 200


async def test_helper_for_other_endpoints(client: Client) -> None:
    alice, bob, room_id = await shared_room(client)
    msg = await say(client, bob, room_id, "m")
    status, topic = await put_state(client, bob, room_id, "m.room.topic", "", {"topic": "t"})
    assert status == 200
    message, state = await hs_of(client).rooms.events.get_events_ordered([msg, topic["event_id"]])
    await set_ignored(client, alice, bob)
    assert await drop_ignored_senders(hs_of(client), alice.user_id, [message, state]) == [state]
    assert await drop_ignored_senders(hs_of(client), bob.user_id, [message, state]) == [
        message,
        state,
    ]


BAD_LISTS: list[tuple[Any, str]] = [
    ({}, "M_BAD_JSON"),  # ignored_users is required
    ({"ignored_users": []}, "M_BAD_JSON"),
    ({"ignored_users": "@bob:localhost"}, "M_BAD_JSON"),
    ({"ignored_users": {"bob": {}}}, "M_BAD_JSON"),  # not a user ID
    ({"ignored_users": {"@bob:localhost": True}}, "M_BAD_JSON"),
]


@pytest.mark.parametrize(("body", "errcode"), BAD_LISTS)
async def test_malformed_lists_are_400_and_keep_the_old_one(
    client: Client, body: Any, errcode: str
) -> None:
    alice, bob, _ = await shared_room(client)
    await set_ignored(client, alice, bob)
    status, answer = await call(client, "PUT", ignore_path(alice), alice, body)
    assert (status, answer["errcode"]) == (400, errcode)
    assert await call(client, "GET", ignore_path(alice), alice) == (
        200,
        {"ignored_users": {bob.user_id: {}}},
    )
    assert await hs_of(client).account_data.ignored_users(alice.user_id) == {bob.user_id}


async def test_ignoring_yourself_is_400(client: Client) -> None:
    alice = await make_user(client, "alice")
    body = {"ignored_users": {alice.user_id: {}}}
    status, answer = await call(client, "PUT", ignore_path(alice), alice, body)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = await call(client, "GET", ignore_path(alice), alice)
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
