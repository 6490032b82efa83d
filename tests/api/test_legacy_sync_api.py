"""The deprecated sync front ends (Client-Server API v1.19): ``GET /events``
(old_sync.yaml; with ``room_id``, peeking_events.yaml), ``GET /events/{eventId}``,
``GET /initialSync`` and ``GET /rooms/{roomId}/initialSync`` — on both engines.

Each answer is checked against the spec's OpenAPI response schema
(``../shared/matrix-spec/openapi/client-server.json``) and for its content.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from functools import cache
from typing import Any

import jsonschema
import pytest

from ranvier.services import legacy_sync
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
from tests.vectors import vectors_dir

SPEC = vectors_dir().parent / "matrix-spec" / "openapi" / "client-server.json"
TOKEN = re.compile(r"^s\d+(_\d+){6}$")


@cache
def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))["paths"]
    return paths


def assert_matches_spec(path: str, body: Any) -> None:
    """``body`` is valid against the 200 response schema of ``GET path``."""
    operation = _paths()[path]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(schema).validate(body)


async def text(client: Client, user: User, room_id: str, body: str) -> str:
    status, payload = await send(client, user, room_id, {"msgtype": "m.text", "body": body}, body)
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def leave(client: Client, user: User, room_id: str) -> None:
    status, payload = await call(client, "POST", f"/rooms/{q(room_id)}/leave", user, {})
    assert status == 200, payload


async def invite(client: Client, user: User, room_id: str, target: User) -> None:
    body = {"user_id": target.user_id}
    status, payload = await call(client, "POST", f"/rooms/{q(room_id)}/invite", user, body)
    assert status == 200, payload


async def events(client: Client, user: User, **params: Any) -> dict[str, Any]:
    status, body = await get(client, V3 + "/events", user, **params)
    assert status == 200, body
    assert_matches_spec("/_matrix/client/v3/events", body)
    assert isinstance(body, dict)
    return body


async def initial_sync(client: Client, user: User, **params: Any) -> dict[str, Any]:
    status, body = await get(client, V3 + "/initialSync", user, **params)
    assert status == 200, body
    assert_matches_spec("/_matrix/client/v3/initialSync", body)
    assert isinstance(body, dict)
    return body


async def room_initial_sync(
    client: Client, user: User, room_id: str, **params: Any
) -> tuple[int, Any]:
    status, body = await get(client, f"{V3}/rooms/{q(room_id)}/initialSync", user, **params)
    if status == 200:
        assert_matches_spec("/_matrix/client/v3/rooms/{roomId}/initialSync", body)
    return status, body


def room_of(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    [room] = [r for r in body["rooms"] if r["room_id"] == room_id]
    assert isinstance(room, dict)
    return room


def message_bodies(chunk: list[dict[str, Any]], room_id: str | None = None) -> list[str]:
    return bodies([e for e in chunk if room_id is None or e.get("room_id") == room_id])


async def settled_token(client: Client, user: User) -> str:
    """An /events token after the user's own presence went online (a first call
    marks it, as /sync does), so that later answers hold only what follows."""
    body = await events(client, user, timeout=0)
    token: str = body["end"]
    return token


# --- GET /initialSync -----------------------------------------------------------------


async def test_initial_sync_shape_and_content(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    public_room = await create_room(client, alice, preset="public_chat", visibility="public")
    private_room = await create_room(client, bob, preset="private_chat")
    await invite(client, bob, private_room, alice)
    for body in ("one", "two", "three"):
        await text(client, alice, public_room, body)
    await call(client, "PUT", f"/user/{q(alice.user_id)}/account_data/org.ex.g", alice, {"g": 1})
    path = f"/user/{q(alice.user_id)}/rooms/{q(public_room)}/account_data/org.ex.r"
    await call(client, "PUT", path, alice, {"r": 2})
    status, _ = await join(client, bob, public_room)
    assert status == 200
    status, _ = await call(
        client, "PUT", f"/presence/{q(bob.user_id)}/status", bob, {"presence": "unavailable"}
    )
    assert status == 200

    body = await initial_sync(client, alice, limit=2)

    assert TOKEN.match(body["end"])
    assert {r["room_id"] for r in body["rooms"]} == {public_room, private_room}
    joined = room_of(body, public_room)
    assert joined["membership"] == "join"
    assert joined["visibility"] == "public"
    chunk = joined["messages"]["chunk"]
    # The latest two, oldest first: the last message and bob's join.
    assert [e["type"] for e in chunk] == ["m.room.message", "m.room.member"]
    assert chunk[0]["content"]["body"] == "three"
    assert chunk[1]["state_key"] == bob.user_id
    assert all(e["room_id"] == public_room for e in chunk)
    assert joined["messages"]["end"] == body["end"]
    state_types = {(e["type"], e["state_key"]) for e in joined["state"]}
    assert ("m.room.create", "") in state_types
    assert ("m.room.member", bob.user_id) in state_types
    assert joined["account_data"] == [{"type": "org.ex.r", "content": {"r": 2}}]

    invited = room_of(body, private_room)
    assert invited["membership"] == "invite"
    assert invited["visibility"] == "private"
    assert invited["invite"]["state_key"] == alice.user_id
    assert invited["invite"]["content"]["membership"] == "invite"
    assert "messages" not in invited and "state" not in invited

    assert {"type": "org.ex.g", "content": {"g": 1}} in body["account_data"]
    assert "m.push_rules" in {e["type"] for e in body["account_data"]}
    [bob_presence] = [e for e in body["presence"] if e["sender"] == bob.user_id]
    assert bob_presence["type"] == "m.presence"
    assert bob_presence["content"]["presence"] == "unavailable"
    assert bob_presence["content"]["user_id"] == bob.user_id


async def test_initial_sync_messages_tokens_continue_in_messages(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, preset="public_chat")
    for body in ("one", "two", "three"):
        await text(client, alice, room_id, body)

    room = room_of(await initial_sync(client, alice, limit=2), room_id)
    assert message_bodies(room["messages"]["chunk"]) == ["two", "three"]

    # start: earlier events, backwards.
    status, earlier = await messages(
        client, alice, room_id, dir="b", limit=1, **{"from": room["messages"]["start"]}
    )
    assert status == 200, earlier
    assert message_bodies(earlier["chunk"]) == ["one"]
    # end: later events, forwards (none yet, then a new one).
    status, later = await messages(
        client, alice, room_id, dir="f", **{"from": room["messages"]["end"]}
    )
    assert status == 200 and later["chunk"] == []
    await text(client, alice, room_id, "four")
    status, later = await messages(
        client, alice, room_id, dir="f", **{"from": room["messages"]["end"]}
    )
    assert status == 200
    assert message_bodies(later["chunk"]) == ["four"]


async def test_initial_sync_whole_short_room_has_no_start(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    room = room_of(await initial_sync(client, alice, limit=100), room_id)
    # Every event of the room is in the chunk: no earlier events, no start (old_sync.yaml).
    assert room["messages"]["chunk"][0]["type"] == "m.room.create"
    assert "start" not in room["messages"]


async def test_initial_sync_archived_includes_left_rooms_up_to_the_leave(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, bob, preset="public_chat")
    assert (await join(client, alice, room_id))[0] == 200
    await text(client, bob, room_id, "before")
    await leave(client, alice, room_id)
    await text(client, bob, room_id, "after")
    await put_state(client, bob, room_id, "m.room.topic", "", {"topic": "later"})

    current = await initial_sync(client, alice)
    assert room_id not in {r["room_id"] for r in current["rooms"]}

    archived = await initial_sync(client, alice, archived=True)
    room = room_of(archived, room_id)
    assert room["membership"] == "leave"
    chunk = room["messages"]["chunk"]
    assert message_bodies(chunk) == ["before"]
    assert chunk[-1]["type"] == "m.room.member" and chunk[-1]["state_key"] == alice.user_id
    assert chunk[-1]["content"]["membership"] == "leave"
    # The state when alice left: no topic set after.
    assert "m.room.topic" not in {e["type"] for e in room["state"]}


async def test_initial_sync_archived_rejected_invite_shows_nothing_hidden(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, bob, preset="private_chat", topic="secret topic")
    await text(client, bob, room_id, "secret message")
    await invite(client, bob, room_id, carol)
    await leave(client, carol, room_id)  # rejects the invite

    room = room_of(await initial_sync(client, carol, archived=True), room_id)
    assert room["membership"] == "leave"
    assert message_bodies(room["messages"]["chunk"]) == []
    # History "shared": carol never joined, so the room's state is not hers to read.
    assert "m.room.topic" not in {e["type"] for e in room["state"]}
    assert "secret" not in json.dumps(room)


# --- GET /events ----------------------------------------------------------------------


async def test_events_continue_from_initial_sync_end(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    await text(client, alice, room_id, "old")
    end = (await initial_sync(client, alice))["end"]
    message_id = await text(client, alice, room_id, "new")

    first = await events(client, alice, timeout=0, **{"from": end})
    assert first["start"] == end
    assert TOKEN.match(first["end"])
    assert [e["event_id"] for e in first["chunk"]] == [message_id]
    assert first["chunk"][0]["room_id"] == room_id
    assert first["chunk"][0]["content"]["body"] == "new"

    second = await events(client, alice, timeout=0, **{"from": first["end"]})
    assert second["chunk"] == []
    assert second["start"] == first["end"]


async def test_events_accept_sync_next_batch(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    next_batch = (await sync(client, alice))["next_batch"]
    await text(client, alice, room_id, "after sync")
    body = await events(client, alice, timeout=0, **{"from": next_batch})
    assert message_bodies(body["chunk"]) == ["after sync"]


async def test_events_without_from_start_now(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    await text(client, alice, room_id, "before the poll")
    await settled_token(client, alice)
    body = await events(client, alice, timeout=0)
    assert body["chunk"] == []
    assert body["start"] == body["end"]


async def test_events_long_poll_wakes_on_new_message(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    token = await settled_token(client, alice)

    started = time.monotonic()
    poll = asyncio.create_task(events(client, alice, timeout=20_000, **{"from": token}))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await text(client, bob, room_id, "wake up")
    body = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 10
    assert message_bodies(body["chunk"], room_id) == ["wake up"]


async def test_events_long_poll_times_out_empty(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    await create_room(client, alice)
    token = await settled_token(client, alice)
    started = time.monotonic()
    body = await events(client, alice, timeout=400, **{"from": token})
    elapsed = time.monotonic() - started
    assert body["chunk"] == []
    assert body["start"] == token
    assert TOKEN.match(body["end"])
    assert 0.35 <= elapsed < 5


async def test_events_long_poll_ignores_other_rooms(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    carol = await make_user(client, "carol")
    other_room = await create_room(client, carol, preset="public_chat")
    await create_room(client, alice)
    token = await settled_token(client, alice)
    poll = asyncio.create_task(events(client, alice, timeout=600, **{"from": token}))
    await asyncio.sleep(0.1)
    await text(client, carol, other_room, "not for alice")
    body = await asyncio.wait_for(poll, 10)
    assert body["chunk"] == []


async def test_events_show_own_leave_but_nothing_after(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, bob, preset="public_chat")
    assert (await join(client, alice, room_id))[0] == 200
    token = await settled_token(client, alice)
    await text(client, bob, room_id, "seen")
    await leave(client, alice, room_id)
    await text(client, bob, room_id, "unseen")

    body = await events(client, alice, timeout=0, **{"from": token})
    room_events = [e for e in body["chunk"] if e.get("room_id") == room_id]
    assert message_bodies(room_events) == ["seen"]
    assert room_events[-1]["type"] == "m.room.member"
    assert room_events[-1]["state_key"] == alice.user_id
    assert room_events[-1]["content"]["membership"] == "leave"


async def test_events_hide_history_before_a_joined_only_join(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, bob, preset="public_chat")
    await put_state(
        client, bob, room_id, "m.room.history_visibility", "", {"history_visibility": "joined"}
    )
    token = await settled_token(client, alice)
    secret_id = await text(client, bob, room_id, "before alice")
    assert (await join(client, alice, room_id))[0] == 200
    await text(client, bob, room_id, "after alice")

    body = await events(client, alice, timeout=0, **{"from": token})
    room_events = [e for e in body["chunk"] if e.get("room_id") == room_id]
    assert secret_id not in {e["event_id"] for e in room_events}
    assert message_bodies(room_events) == ["after alice"]
    assert room_events[0]["type"] == "m.room.member"  # her join, then the message


async def test_events_leave_other_streams_to_sync(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    """old_sync.yaml's chunk holds ClientEvents: typing, receipts, presence and
    account data are not in it, and /events' ``end`` keeps them for /sync."""
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    message_id = await text(client, alice, room_id, "read me")
    token = (await sync(client, alice))["next_batch"]

    typing = {"typing": True, "timeout": 30_000}
    path = f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}"
    assert (await call(client, "PUT", path, bob, typing))[0] == 200
    path = f"/rooms/{q(room_id)}/receipt/m.read/{q(message_id)}"
    assert (await call(client, "POST", path, bob, {}))[0] == 200
    path = f"/user/{q(alice.user_id)}/account_data/org.ex.legacy"
    assert (await call(client, "PUT", path, alice, {"v": 1}))[0] == 200
    path = f"/presence/{q(bob.user_id)}/status"
    assert (await call(client, "PUT", path, bob, {"presence": "unavailable"}))[0] == 200
    await text(client, bob, room_id, "hi")

    body = await events(client, alice, timeout=0, **{"from": token})
    assert [e["type"] for e in body["chunk"]] == ["m.room.message"]

    later = await sync(client, alice, since=body["end"])
    assert later["rooms"]["join"][room_id]["timeline"]["events"] == []
    ephemeral = {e["type"] for e in later["rooms"]["join"][room_id]["ephemeral"]["events"]}
    assert ephemeral == {"m.typing", "m.receipt"}
    assert "org.ex.legacy" in {e["type"] for e in later["account_data"]["events"]}
    assert bob.user_id in {e["sender"] for e in later["presence"]["events"]}


async def test_events_with_room_id_of_a_joined_room_return_that_room_only(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_a = await create_room(client, alice)
    room_b = await create_room(client, alice)
    token = await settled_token(client, alice)
    await text(client, alice, room_a, "in a")
    await text(client, alice, room_b, "in b")
    body = await events(client, alice, timeout=0, room_id=room_b, **{"from": token})
    assert [e["room_id"] for e in body["chunk"]] == [room_b]
    assert message_bodies(body["chunk"]) == ["in b"]


async def test_events_deliver_an_invite_but_not_the_room_behind_it(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, bob, preset="private_chat")
    token = await settled_token(client, alice)
    await text(client, bob, room_id, "before the invite")
    await invite(client, bob, room_id, alice)
    await text(client, bob, room_id, "after the invite")
    body = await events(client, alice, timeout=0, **{"from": token})
    [event] = body["chunk"]
    assert (event["type"], event["state_key"]) == ("m.room.member", alice.user_id)
    assert event["content"]["membership"] == "invite"
    assert event["room_id"] == room_id


async def make_guest(client: Client) -> User:
    user_id, session = await hs_of(client).accounts.register(None, None, is_guest=True)
    assert session is not None
    return User(user_id, session.device_id, session.access_token)


async def test_guests_may_only_peek(migrated_dsn: str, make_sync_client: MakeSyncClient) -> None:
    """Guest Access: guests may call GET /events "as used for room previews" and
    GET /rooms/{roomId}/initialSync, not /initialSync or /events/{eventId} (as Synapse)."""
    client = await make_sync_client(migrated_dsn)
    bob = await make_user(client, "bob")
    guest = await make_guest(client)
    room_id = await create_room(client, bob, preset="public_chat")
    await put_state(
        client,
        bob,
        room_id,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    await text(client, bob, room_id, "for everyone")
    status, body = await get(client, V3 + "/events", guest, timeout=0)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await get(client, V3 + "/initialSync", guest)
    assert (status, body["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    message_id = await text(client, bob, room_id, "by id")
    status, body = await get(client, f"{V3}/events/{q(message_id)}", guest)
    assert (status, body["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    status, room = await room_initial_sync(client, guest, room_id)
    assert status == 200, room
    assert message_bodies(room["messages"]["chunk"]) == ["for everyone", "by id"]
    await text(client, bob, room_id, "more")
    body = await events(
        client, guest, room_id=room_id, timeout=0, **{"from": room["messages"]["end"]}
    )
    assert message_bodies(body["chunk"]) == ["more"]


async def test_events_chunk_is_bounded_and_end_continues(
    make_sync_client: MakeSyncClient, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(legacy_sync, "MAX_EVENTS_CHUNK", 3)
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_a = await create_room(client, alice)
    room_b = await create_room(client, alice)
    token = await settled_token(client, alice)
    sent = []
    for index in range(5):
        room_id = room_a if index % 2 == 0 else room_b
        sent.append(await text(client, alice, room_id, f"m{index}"))

    first = await events(client, alice, timeout=0, **{"from": token})
    assert [e["event_id"] for e in first["chunk"]] == sent[:3]
    second = await events(client, alice, timeout=0, **{"from": first["end"]})
    assert [e["event_id"] for e in second["chunk"]] == sent[3:]
    third = await events(client, alice, timeout=0, **{"from": second["end"]})
    assert third["chunk"] == []


# --- peeking (Room Previews) -----------------------------------------------------------


async def test_peeking_world_readable_room(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, bob, preset="public_chat")
    await put_state(
        client,
        bob,
        room_id,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    await text(client, bob, room_id, "hello lurkers")
    other_room = await create_room(client, bob, preset="public_chat")

    status, room = await room_initial_sync(client, carol, room_id)
    assert status == 200, room
    assert "membership" not in room
    assert message_bodies(room["messages"]["chunk"]) == ["hello lurkers"]

    path = "/_matrix/client/v3/events "  # the peeking operation (a second GET /events)
    poll = asyncio.create_task(
        get(
            client,
            V3 + "/events",
            carol,
            room_id=room_id,
            timeout=20_000,
            **{"from": room["messages"]["end"]},
        )
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    await text(client, bob, other_room, "elsewhere")
    await text(client, bob, room_id, "live")
    status, body = await asyncio.wait_for(poll, 10)
    assert status == 200, body
    assert_matches_spec(path, body)
    assert [e["room_id"] for e in body["chunk"]] == [room_id]
    assert message_bodies(body["chunk"]) == ["live"]


async def test_peeking_is_forbidden_unless_world_readable(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, bob, preset="public_chat")  # history "shared"
    await text(client, bob, room_id, "members only")
    status, body = await get(client, V3 + "/events", carol, room_id=room_id, timeout=0)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await room_initial_sync(client, carol, room_id)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Unknown rooms answer the same (room_initial_sync.yaml: 403 only).
    unknown = "!nowhere:" + bob.user_id.split(":", 1)[1]
    status, body = await room_initial_sync(client, carol, unknown)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await get(client, V3 + "/events", carol, room_id=unknown, timeout=0)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


# --- GET /rooms/{roomId}/initialSync ---------------------------------------------------


async def test_room_initial_sync_member_and_departed(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, bob, preset="public_chat", visibility="public")
    assert (await join(client, alice, room_id))[0] == 200
    await text(client, bob, room_id, "one")
    await text(client, bob, room_id, "two")
    path = f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/org.ex.r"
    assert (await call(client, "PUT", path, alice, {"r": 1}))[0] == 200

    status, room = await room_initial_sync(client, alice, room_id, limit=1)
    assert status == 200, room
    assert room["room_id"] == room_id
    assert room["membership"] == "join"
    assert room["visibility"] == "public"
    assert message_bodies(room["messages"]["chunk"]) == ["two"]
    assert len(room["messages"]["chunk"]) == 1
    assert TOKEN.match(room["messages"]["end"])
    assert room["account_data"] == [{"type": "org.ex.r", "content": {"r": 1}}]
    assert ("m.room.join_rules", "") in {(e["type"], e["state_key"]) for e in room["state"]}

    await leave(client, alice, room_id)
    await text(client, bob, room_id, "after")
    status, room = await room_initial_sync(client, alice, room_id)
    assert status == 200, room
    assert room["membership"] == "leave"
    assert message_bodies(room["messages"]["chunk"]) == ["one", "two"]
    assert "presence" not in room


# --- GET /events/{eventId} -------------------------------------------------------------


async def test_get_event_by_id_visibility(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, bob, preset="public_chat")
    assert (await join(client, alice, room_id))[0] == 200
    before_id = await text(client, bob, room_id, "while alice is here")
    await leave(client, alice, room_id)
    after_id = await text(client, bob, room_id, "after alice left")

    status, event = await get(client, f"{V3}/events/{q(before_id)}", alice)
    assert status == 200, event
    assert_matches_spec("/_matrix/client/v3/events/{eventId}", event)
    assert event["event_id"] == before_id
    assert event["room_id"] == room_id
    assert event["content"]["body"] == "while alice is here"

    not_found = (404, "M_NOT_FOUND")
    status, body = await get(client, f"{V3}/events/{q(after_id)}", alice)
    assert (status, body["errcode"]) == not_found  # sent after she left
    status, body = await get(client, f"{V3}/events/{q(before_id)}", carol)
    assert (status, body["errcode"]) == not_found  # never in the room
    status, body = await get(client, f"{V3}/events/{q('$unknown')}", alice)
    assert (status, body["errcode"]) == not_found
    status, body = await get(client, f"{V3}/events/{q('not an event id')}", alice)
    assert (status, body["errcode"]) == not_found


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/events", {"from": "garbage"}),
        ("/events", {"from": "t5"}),  # a /messages token is no stream token
        ("/events", {"from": "s1_2_3"}),
        ("/events", {"from": "s" + "9" * 30 + "_0_0_0_0_0_0"}),
        ("/events", {"timeout": "soon"}),
        ("/events", {"timeout": "-1"}),
        ("/events", {"timeout": "1.5"}),
        ("/events", {"room_id": "not-a-room"}),
        ("/initialSync", {"limit": "ten"}),
        ("/initialSync", {"limit": "-1"}),
        ("/initialSync", {"archived": "yes"}),
        ("/rooms/{room}/initialSync", {"limit": "many"}),
        ("/rooms/{room}/initialSync", {"limit": "-5"}),
    ],
)
async def test_bad_input_is_400_invalid_param(
    make_sync_client: MakeSyncClient, migrated_dsn: str, path: str, params: dict[str, str]
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    response = await client.get(
        V3 + path.replace("{room}", q(room_id)), params=params, headers=alice.headers
    )
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"


async def test_bad_room_id_in_path_is_400(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    status, body = await room_initial_sync(client, alice, "no-sigil")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_without_access_token_is_401(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    for path in ("/events", "/initialSync", "/events/$x", "/rooms/!a:b/initialSync"):
        response = await client.get(V3 + path)
        assert response.status == 401, path
        assert (await response.json())["errcode"] == "M_MISSING_TOKEN"
