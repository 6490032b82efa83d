"""GET /sync (Client-Server API, "Syncing"; sync.yaml)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from tests.api.conftest import Clock
from tests.api.rooms_support import (
    V3,
    Client,
    User,
    call,
    create_room,
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
    state_keys,
    sync,
)

pytestmark = pytest.mark.port_server_name

TOKEN = re.compile(r"^s\d+(_\d+){6}$")


async def text(client: Client, user: User, room_id: str, body: str) -> str:
    status, payload = await send(client, user, room_id, {"msgtype": "m.text", "body": body}, body)
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def two_users_in_room(client: Client, **room: Any) -> tuple[User, User, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat", **room)
    status, payload = await join(client, bob, room_id)
    assert status == 200, payload
    return alice, bob, room_id


# --- initial sync ---------------------------------------------------------------------


async def test_initial_sync_shape(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, name="Lounge", topic="Chat")
    for i in range(3):
        await text(client, alice, room_id, f"m{i}")

    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 2}}})

    assert TOKEN.match(body["next_batch"])
    assert [e["type"] for e in body["account_data"]["events"]] == ["m.push_rules"]
    assert body["rooms"]["invite"] == {} and body["rooms"]["leave"] == {}
    room = body["rooms"]["join"][room_id]
    assert set(room) == {
        "summary",
        "state",
        "timeline",
        "ephemeral",
        "account_data",
        "unread_notifications",
    }
    timeline = room["timeline"]
    assert bodies(timeline["events"]) == ["m1", "m2"]
    assert timeline["limited"] is True
    assert re.match(r"^t\d+$", timeline["prev_batch"])
    # Events of /sync carry no room_id (ClientEventWithoutRoomID).
    assert all("room_id" not in e for e in timeline["events"])
    keys = state_keys(room["state"]["events"])
    assert {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
    } <= keys
    timeline_ids = {e["event_id"] for e in timeline["events"]}
    assert not timeline_ids & {e["event_id"] for e in room["state"]["events"]}
    assert room["summary"] == {"m.joined_member_count": 1, "m.invited_member_count": 0}
    assert room["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # The sender's own device sees its transaction IDs.
    assert timeline["events"][-1]["unsigned"]["transaction_id"] == "m2"


async def test_unnamed_room_summary_has_heroes(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    body = await sync(client, alice)
    summary = body["rooms"]["join"][room_id]["summary"]
    assert summary == {
        "m.heroes": [bob.user_id],
        "m.joined_member_count": 2,
        "m.invited_member_count": 0,
    }


async def test_transaction_id_only_for_the_sending_device(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    status, login = await call(
        client,
        "POST",
        "/login",
        None,
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}},
    )
    room_id = await create_room(client, alice)
    await text(client, alice, room_id, "hello")
    from tests.api.rooms_support import login_again

    other_device = await login_again(client, alice, "OTHER")
    mine = await sync(client, alice)
    theirs = await sync(client, other_device)
    assert (
        mine["rooms"]["join"][room_id]["timeline"]["events"][-1]["unsigned"]["transaction_id"]
        == "hello"
    )
    assert (
        "transaction_id"
        not in (theirs["rooms"]["join"][room_id]["timeline"]["events"][-1]["unsigned"])
    )
    del status, login


# --- incremental sync -----------------------------------------------------------------


async def test_incremental_after_message_and_state(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    since = (await sync(client, alice))["next_batch"]

    await text(client, bob, room_id, "hi alice")
    status, _ = await put_state(client, alice, room_id, "m.room.topic", "", {"topic": "new"})
    assert status == 200
    body = await sync(client, alice, since=since)

    room = body["rooms"]["join"][room_id]
    events = room["timeline"]["events"]
    assert [e["type"] for e in events] == ["m.room.message", "m.room.topic"]
    assert events[0]["sender"] == bob.user_id
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []
    assert body["next_batch"] != since
    # Nothing new: the room is absent.
    again = await sync(client, alice, since=body["next_batch"])
    assert again["rooms"]["join"] == {}


async def test_limited_incremental_state_gap(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    since = (await sync(client, alice))["next_batch"]
    await put_state(client, alice, room_id, "m.room.topic", "", {"topic": "in the gap"})
    for i in range(4):
        await text(client, bob, room_id, f"m{i}")
    body = await sync(client, alice, since=since, filter={"room": {"timeline": {"limit": 2}}})
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert bodies(room["timeline"]["events"]) == ["m2", "m3"]
    # The topic changed between `since` and the timeline's start: it is in state.
    assert [(e["type"], e["content"]) for e in room["state"]["events"]] == [
        ("m.room.topic", {"topic": "in the gap"})
    ]


async def test_incremental_typing_receipts_account_data_presence(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    event_id = await text(client, bob, room_id, "read me")
    await sync(client, bob)  # bob online
    since = (await sync(client, alice))["next_batch"]

    status, _ = await call(
        client,
        "PUT",
        f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}",
        bob,
        {"typing": True, "timeout": 10000},
    )
    assert status == 200
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", bob, {}
    )
    assert status == 200
    status, _ = await call(
        client, "PUT", f"/user/{q(alice.user_id)}/account_data/org.example.global", alice, {"a": 1}
    )
    assert status == 200
    status, _ = await call(
        client,
        "PUT",
        f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/org.example.room",
        alice,
        {"b": 2},
    )
    assert status == 200
    status, _ = await call(
        client,
        "PUT",
        f"/presence/{q(bob.user_id)}/status",
        bob,
        {"presence": "unavailable", "status_msg": "away"},
    )
    assert status == 200

    body = await sync(client, alice, since=since)

    room = body["rooms"]["join"][room_id]
    ephemeral = {e["type"]: e["content"] for e in room["ephemeral"]["events"]}
    assert ephemeral["m.typing"] == {"user_ids": [bob.user_id]}
    assert list(ephemeral["m.receipt"][event_id]["m.read"]) == [bob.user_id]
    assert room["account_data"]["events"] == [{"type": "org.example.room", "content": {"b": 2}}]
    assert body["account_data"]["events"] == [{"type": "org.example.global", "content": {"a": 1}}]
    presence = {e["sender"]: e["content"] for e in body["presence"]["events"]}
    assert presence[bob.user_id]["presence"] == "unavailable"
    assert presence[bob.user_id]["status_msg"] == "away"
    assert room["timeline"]["events"] == []


async def test_set_presence_parameter(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    await sync(client, alice, set_presence="offline")
    status, body = await call(client, "GET", f"/presence/{q(alice.user_id)}/status", alice)
    assert (status, body["presence"]) == (200, "offline")
    await sync(client, alice, set_presence="unavailable")
    status, body = await call(client, "GET", f"/presence/{q(alice.user_id)}/status", alice)
    assert body["presence"] == "unavailable"
    await sync(client, alice)
    status, body = await call(client, "GET", f"/presence/{q(alice.user_id)}/status", alice)
    assert body["presence"] == "online"


# --- long-polling ---------------------------------------------------------------------


async def test_long_poll_returns_promptly_on_a_message(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    await sync(client, bob)
    since = (await sync(client, alice))["next_batch"]
    started = time.monotonic()
    poll = asyncio.create_task(sync(client, alice, since=since, timeout=10_000))
    await asyncio.sleep(0.1)
    assert not poll.done()
    await text(client, bob, room_id, "wake up")
    body = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 3
    assert bodies(body["rooms"]["join"][room_id]["timeline"]["events"]) == ["wake up"]


async def test_long_poll_times_out_empty(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    await create_room(client, alice)
    since = (await sync(client, alice))["next_batch"]
    started = time.monotonic()
    body = await sync(client, alice, since=since, timeout=300)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3
    assert body["rooms"]["join"] == {}
    assert body["account_data"]["events"] == [] and body["presence"]["events"] == []


async def test_long_poll_wakes_on_typing(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    await sync(client, bob)
    since = (await sync(client, alice))["next_batch"]
    poll = asyncio.create_task(sync(client, alice, since=since, timeout=10_000))
    await asyncio.sleep(0.05)
    await call(
        client,
        "PUT",
        f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}",
        bob,
        {"typing": True, "timeout": 5000},
    )
    body = await asyncio.wait_for(poll, 5)
    ephemeral = body["rooms"]["join"][room_id]["ephemeral"]["events"]
    assert ephemeral == [{"type": "m.typing", "content": {"user_ids": [bob.user_id]}}]


# --- limited timelines continue in /messages --------------------------------------------


async def test_prev_batch_continues_in_messages_without_gaps(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    sent = [f"m{i}" for i in range(23)]
    for body_text in sent:
        await text(client, alice, room_id, body_text)
    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 5}}})
    timeline = body["rooms"]["join"][room_id]["timeline"]
    seen = [e["event_id"] for e in timeline["events"]]
    collected = bodies(timeline["events"])
    token = timeline["prev_batch"]
    while True:
        status, page = await messages(client, alice, room_id, dir="b", limit=4, **{"from": token})
        assert status == 200, page
        seen = [e["event_id"] for e in reversed(page["chunk"])] + seen
        collected = bodies(list(reversed(page["chunk"]))) + collected
        if "end" not in page:
            break
        token = page["end"]
    assert collected == sent
    assert len(seen) == len(set(seen))
    assert (
        seen[0]
        == (await messages(client, alice, room_id, dir="f", limit=1))[1]["chunk"][0]["event_id"]
    )


# --- invites, leaves, knocks ------------------------------------------------------------


async def test_invite_then_join_then_leave(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, name="Secret")
    await text(client, alice, room_id, "before invite")
    since = (await sync(client, bob))["next_batch"]
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": bob.user_id}
    )
    assert status == 200

    body = await sync(client, bob, since=since)
    invite_state = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in invite_state}
    assert by_type[("m.room.name", "")]["content"] == {"name": "Secret"}
    assert ("m.room.create", "") in by_type and ("m.room.join_rules", "") in by_type
    invite = by_type[("m.room.member", bob.user_id)]
    assert invite["content"]["membership"] == "invite" and invite["sender"] == alice.user_id
    assert set(invite_state[0]) == {"type", "state_key", "sender", "content"}
    since = body["next_batch"]

    assert (await join(client, bob, room_id))[0] == 200
    body = await sync(client, bob, since=since)
    assert body["rooms"]["invite"] == {}
    room = body["rooms"]["join"][room_id]
    # Newly joined: the full state (in "state" or, as the room is short, in
    # the timeline, which then starts at its creation), not a delta.
    shown = room["state"]["events"] + room["timeline"]["events"]
    assert {("m.room.create", ""), ("m.room.name", "")} <= state_keys(
        [e for e in shown if "state_key" in e]
    )
    assert room["timeline"]["events"][-1]["content"]["membership"] == "join"
    since = body["next_batch"]

    await text(client, alice, room_id, "before leave")
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    await text(client, alice, room_id, "after leave")
    body = await sync(client, bob, since=since)
    assert body["rooms"]["join"] == {}
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert bodies(events) == ["before leave"]
    assert events[-1]["type"] == "m.room.member" and events[-1]["content"]["membership"] == "leave"
    # Later syncs: the room is gone; an initial sync shows it only with include_leave.
    assert (await sync(client, bob, since=body["next_batch"]))["rooms"]["leave"] == {}
    assert (await sync(client, bob))["rooms"]["leave"] == {}
    initial = await sync(client, bob, filter={"room": {"include_leave": True}})
    assert bodies(initial["rooms"]["leave"][room_id]["timeline"]["events"]) == [
        "before invite",
        "before leave",
    ]


async def test_knock_section(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    carol = await make_user(client, "carol")
    room_id = await create_room(
        client,
        alice,
        name="Knockable",
        initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
        ],
    )
    since = (await sync(client, carol))["next_batch"]
    status, payload = await call(client, "POST", f"/knock/{q(room_id)}", carol, {})
    assert status == 200, payload
    body = await sync(client, carol, since=since)
    knock_state = body["rooms"]["knock"][room_id]["knock_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in knock_state}
    assert by_type[("m.room.member", carol.user_id)]["content"]["membership"] == "knock"
    assert by_type[("m.room.join_rules", "")]["content"] == {"join_rule": "knock"}
    # Alice sees the knock in her timeline.
    room = (await sync(client, alice))["rooms"]["join"][room_id]
    assert room["timeline"]["events"][-1]["content"]["membership"] == "knock"


# --- full_state ---------------------------------------------------------------------------


async def test_full_state(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    since = (await sync(client, alice))["next_batch"]
    await text(client, bob, room_id, "x")
    body = await sync(client, alice, since=since, full_state=True)
    room = body["rooms"]["join"][room_id]
    assert bodies(room["timeline"]["events"]) == ["x"]
    keys = state_keys(room["state"]["events"])
    assert {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.member", bob.user_id),
    } <= keys
    # Even with nothing new, full_state lists every joined room.
    body = await sync(client, alice, since=body["next_batch"], full_state=True)
    assert ("m.room.create", "") in state_keys(body["rooms"]["join"][room_id]["state"]["events"])


# --- filters --------------------------------------------------------------------------------


async def test_timeline_filters(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client)
    await text(client, alice, room_id, "from alice")
    await text(client, bob, room_id, "from bob")
    await send(client, bob, room_id, {"k": 1}, "custom", "org.example.custom")

    def timeline(body: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = body["rooms"]["join"][room_id]["timeline"]["events"]
        return events

    only_messages = await sync(
        client, alice, filter={"room": {"timeline": {"types": ["m.room.message"]}}}
    )
    assert bodies(timeline(only_messages)) == ["from alice", "from bob"]
    assert {e["type"] for e in timeline(only_messages)} == {"m.room.message"}
    no_messages = await sync(
        client, alice, filter={"room": {"timeline": {"not_types": ["m.room.*"]}}}
    )
    assert [e["type"] for e in timeline(no_messages)] == ["org.example.custom"]
    from_bob = await sync(
        client, alice, filter={"room": {"timeline": {"senders": [bob.user_id], "limit": 2}}}
    )
    assert [e["type"] for e in timeline(from_bob)] == ["m.room.message", "org.example.custom"]
    assert timeline(from_bob)[0]["content"]["body"] == "from bob"
    skipped_room = await sync(client, alice, filter={"room": {"not_rooms": [room_id]}})
    assert skipped_room["rooms"]["join"] == {}
    fields = await sync(client, alice, filter={"event_fields": ["type", "content.body"]})
    assert timeline(fields)[-1] == {"type": "org.example.custom"}
    assert timeline(fields)[-2] == {"type": "m.room.message", "content": {"body": "from bob"}}


async def test_stored_filter_and_bad_filters(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    await text(client, alice, room_id, "one")
    await text(client, alice, room_id, "two")
    status, created = await call(
        client,
        "POST",
        f"/user/{q(alice.user_id)}/filter",
        alice,
        {"room": {"timeline": {"limit": 1}}},
    )
    assert status == 200
    body = await sync(client, alice, filter=created["filter_id"])
    assert bodies(body["rooms"]["join"][room_id]["timeline"]["events"]) == ["two"]

    for value, errcode in (
        ("{not json", "M_NOT_JSON"),
        ('{"room": {"timeline": {"limit": "x"}}}', "M_BAD_JSON"),
        ("12345", "M_INVALID_PARAM"),
    ):
        status, error = await get(client, V3 + "/sync", alice, filter=value)
        assert (status, error["errcode"]) == (400, errcode), value


async def test_bad_parameters(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    for params, errcode in (
        ({"since": "nonsense"}, "M_INVALID_PARAM"),
        ({"since": "s1_2_3"}, "M_INVALID_PARAM"),
        ({"since": "s1_2_3_4_5_6_x"}, "M_INVALID_PARAM"),
        ({"timeout": "soon"}, "M_INVALID_PARAM"),
        ({"full_state": "yes"}, "M_INVALID_PARAM"),
        ({"set_presence": "busy"}, "M_INVALID_PARAM"),
    ):
        status, error = await get(client, V3 + "/sync", alice, **params)
        assert (status, error["errcode"]) == (400, errcode), params
    response = await client.get(V3 + "/sync")
    assert (response.status, (await response.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    response = await client.get(V3 + "/sync", headers={"Authorization": "Bearer nope"})
    assert (response.status, (await response.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_token_from_the_future_is_harmless(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    body = await sync(client, alice, since="s999999_999999_999999_999999_999999_0_0")
    assert body["rooms"]["join"] == {}
    assert TOKEN.match(body["next_batch"])
    await text(client, alice, room_id, "later")
    assert (await sync(client, alice, since=body["next_batch"]))["rooms"]["join"][room_id]


# --- lazy-loading members -------------------------------------------------------------------


async def test_lazy_loading_members(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(client, name="Named")
    carol = await make_user(client, "carol")
    assert (await join(client, carol, room_id))[0] == 200
    await text(client, bob, room_id, "bob speaks")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}

    full = await sync(client, alice, filter={"room": {"timeline": {"limit": 1}}})
    full_members = {
        e["state_key"]
        for e in full["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert full_members == {alice.user_id, bob.user_id, carol.user_id}

    body = await sync(client, alice, filter=lazy)
    room = body["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    # The sender and the user themselves; not carol.
    assert members == {alice.user_id, bob.user_id}
    assert ("m.room.create", "") in state_keys(room["state"]["events"])

    # Incremental: bob's member event was sent to this device already: redundant.
    since = body["next_batch"]
    await text(client, bob, room_id, "again")
    body = await sync(client, alice, since=since, filter=lazy)
    room = body["rooms"]["join"][room_id]
    assert bodies(room["timeline"]["events"]) == ["again"]
    assert room["state"]["events"] == []
    # With include_redundant_members it is sent again.
    redundant = {
        "room": {
            "state": {"lazy_load_members": True, "include_redundant_members": True},
            "timeline": {"limit": 1},
        }
    }
    body = await sync(client, alice, since=since, filter=redundant)
    members = {
        e["state_key"]
        for e in body["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert members == {bob.user_id}
    # carol speaks: her member event comes now.
    since = body["next_batch"]
    await text(client, carol, room_id, "carol speaks")
    body = await sync(client, alice, since=since, filter=lazy)
    members = {
        e["state_key"]
        for e in body["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert members == {carol.user_id}


# --- history visibility ---------------------------------------------------------------------


async def test_history_visibility_in_sync(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    joined_only = await create_room(client, alice, preset="public_chat")
    await put_state(
        client,
        alice,
        joined_only,
        "m.room.history_visibility",
        "",
        {"history_visibility": "joined"},
    )
    shared = await create_room(client, alice, preset="public_chat")
    await put_state(
        client, alice, shared, "m.room.history_visibility", "", {"history_visibility": "shared"}
    )
    for room_id in (joined_only, shared):
        await text(client, alice, room_id, "secret" if room_id == joined_only else "open")
        assert (await join(client, bob, room_id))[0] == 200
        await text(client, alice, room_id, "after join")

    body = await sync(client, bob)
    assert bodies(body["rooms"]["join"][joined_only]["timeline"]["events"]) == ["after join"]
    assert bodies(body["rooms"]["join"][shared]["timeline"]["events"]) == ["open", "after join"]
    # /messages agrees.
    status, page = await messages(client, bob, joined_only, dir="b", limit=50)
    assert status == 200 and bodies(page["chunk"]) == ["after join"]
    # Carol, not in the rooms, may not read them.
    status, error = await messages(client, carol, shared, dir="b")
    assert (status, error["errcode"]) == (403, "M_FORBIDDEN")


async def test_world_readable_room_readable_without_joining(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="public_chat")
    await put_state(
        client,
        alice,
        room_id,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    await text(client, alice, room_id, "for everyone")
    status, page = await messages(client, carol, room_id, dir="b", limit=5)
    assert status == 200
    assert bodies(page["chunk"]) == ["for everyone"]


# --- tokens survive a restart; PostgreSQL -------------------------------------------------


async def test_since_token_valid_across_restart(make_sync_client: MakeSyncClient) -> None:
    first = await make_sync_client()
    alice, bob, room_id = await two_users_in_room(first)
    await call(first, "PUT", f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}", bob, {"typing": True})
    since = (await sync(first, alice))["next_batch"]
    await first.close()

    second = await make_sync_client()
    body = await sync(second, alice, since=since)
    assert body["rooms"]["join"] == {}
    await text(second, bob, room_id, "after restart")
    body = await sync(second, alice, since=since)
    assert bodies(body["rooms"]["join"][room_id]["timeline"]["events"]) == ["after restart"]


async def test_sync_and_messages_on_both_engines(
    make_sync_client: MakeSyncClient, migrated_dsn: str, clock: Clock
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice, bob, room_id = await two_users_in_room(client)
    for i in range(6):
        await text(client, bob, room_id, f"m{i}")
    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 3}}})
    timeline = body["rooms"]["join"][room_id]["timeline"]
    assert bodies(timeline["events"]) == ["m3", "m4", "m5"] and timeline["limited"] is True
    assert body["rooms"]["join"][room_id]["summary"] == {
        "m.heroes": [bob.user_id],
        "m.joined_member_count": 2,
        "m.invited_member_count": 0,
    }
    status, found = await get(
        client,
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
        alice,
        ts=clock.now_ms,
        dir="b",
    )
    assert status == 200 and found["event_id"] == timeline["events"][-1]["event_id"]
    status, page = await messages(
        client, alice, room_id, dir="b", limit=10, **{"from": timeline["prev_batch"]}
    )
    assert status == 200 and bodies(page["chunk"]) == ["m2", "m1", "m0"]
    since = body["next_batch"]
    await text(client, bob, room_id, "m6")
    body = await sync(client, alice, since=since, timeout=1000)
    assert bodies(body["rooms"]["join"][room_id]["timeline"]["events"]) == ["m6"]
    summary = body["rooms"]["join"][room_id]["summary"]
    assert summary == {}
