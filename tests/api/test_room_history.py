"""/messages, /context and timestamp_to_event (message_pagination.yaml,
event_context.yaml, MSC3030)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Clock
from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    join,
    local_id,
    make_user,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    bodies,
    get,
    make_sync_client_fixture,
    messages,
)

pytestmark = pytest.mark.port_server_name

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


async def text(client: Client, user: User, room_id: str, body: str) -> str:
    status, payload = await send(client, user, room_id, {"msgtype": "m.text", "body": body}, body)
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def room_with_messages(client: Client, count: int) -> tuple[User, User, str, list[str]]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    ids = [await text(client, alice if i % 2 else bob, room_id, f"m{i}") for i in range(count)]
    return alice, bob, room_id, ids


async def test_messages_backwards_and_forwards(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, _, room_id, _ = await room_with_messages(client, 6)
    status, page = await messages(client, alice, room_id, dir="b", limit=3)
    assert status == 200
    assert bodies(page["chunk"]) == ["m5", "m4", "m3"]
    assert all(e["room_id"] == room_id for e in page["chunk"])
    status, older = await messages(
        client, alice, room_id, dir="b", limit=3, **{"from": page["end"]}
    )
    assert bodies(older["chunk"]) == ["m2", "m1", "m0"]
    # Forwards from older's end token returns what came after, in order.
    status, newer = await messages(
        client, alice, room_id, dir="f", limit=100, **{"from": older["end"]}
    )
    assert bodies(newer["chunk"]) == [f"m{i}" for i in range(6)]
    assert "end" not in newer
    # No `from` going forwards: the start of the room (MSC3567).
    status, first = await messages(client, alice, room_id, dir="f", limit=1)
    assert first["chunk"][0]["type"] == "m.room.create"
    # The whole room backwards ends without an `end` token.
    status, everything = await messages(client, alice, room_id, dir="b", limit=1000)
    assert everything["chunk"][-1]["type"] == "m.room.create"
    assert "end" not in everything


async def test_messages_to_token_bounds_the_range(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, _, room_id, _ = await room_with_messages(client, 6)
    _, page = await messages(client, alice, room_id, dir="b", limit=2)  # m5, m4
    _, lower = await messages(
        client, alice, room_id, dir="b", limit=2, **{"from": page["end"]}
    )  # m3, m2
    status, bounded = await messages(
        client, alice, room_id, dir="b", limit=10, **{"from": page["end"], "to": lower["end"]}
    )
    assert status == 200
    assert bodies(bounded["chunk"]) == ["m3", "m2"]
    status, forward = await messages(
        client, alice, room_id, dir="f", limit=10, **{"from": lower["end"], "to": page["end"]}
    )
    assert bodies(forward["chunk"]) == ["m2", "m3"]


async def test_messages_filter_and_lazy_members(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id, _ = await room_with_messages(client, 4)
    status, page = await messages(
        client,
        alice,
        room_id,
        dir="b",
        limit=3,
        filter={"types": ["m.room.message"], "senders": [bob.user_id], "lazy_load_members": True},
    )
    assert status == 200
    assert bodies(page["chunk"]) == ["m2", "m0"]
    assert [(e["type"], e["state_key"]) for e in page["state"]] == [("m.room.member", bob.user_id)]
    status, plain = await messages(client, alice, room_id, dir="b", limit=2)
    assert "state" not in plain


async def test_messages_errors(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, _, room_id, _ = await room_with_messages(client, 1)
    carol = await make_user(client, "carol")
    for params, expected in (
        ({"dir": "x"}, (400, "M_INVALID_PARAM")),
        ({"dir": "b", "from": "garbage"}, (400, "M_INVALID_PARAM")),
        ({"dir": "b", "limit": "many"}, (400, "M_INVALID_PARAM")),
        ({"dir": "b", "limit": "-1"}, (400, "M_INVALID_PARAM")),
        ({"dir": "b", "filter": "{oops"}, (400, "M_NOT_JSON")),
        ({"dir": "b", "filter": '{"types": "m.room.message"}'}, (400, "M_BAD_JSON")),
    ):
        status, error = await messages(client, alice, room_id, **params)
        assert (status, error["errcode"]) == expected, params
    status, error = await messages(client, carol, room_id, dir="b")
    assert (status, error["errcode"]) == (403, "M_FORBIDDEN")
    status, error = await messages(client, alice, local_id(client, "!unknown"), dir="b")
    assert (status, error["errcode"]) == (404, "M_NOT_FOUND")
    status, error = await messages(client, alice, "not-a-room", dir="b")
    assert (status, error["errcode"]) == (400, "M_INVALID_PARAM")


async def test_messages_after_leaving_stop_at_the_leave(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id, _ = await room_with_messages(client, 2)
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    await text(client, alice, room_id, "after bob left")
    status, page = await messages(client, bob, room_id, dir="b", limit=3)
    assert status == 200
    assert page["chunk"][0]["content"]["membership"] == "leave"
    assert bodies(page["chunk"]) == ["m1", "m0"]


async def test_context(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id, ids = await room_with_messages(client, 7)
    status, body = await get(client, f"{V3}/rooms/{q(room_id)}/context/{q(ids[3])}", alice, limit=4)
    assert status == 200, body
    assert body["event"]["event_id"] == ids[3]
    assert bodies(body["events_before"]) == ["m2", "m1"]
    assert bodies(body["events_after"]) == ["m4", "m5"]
    state = {(e["type"], e["state_key"]) for e in body["state"]}
    assert {("m.room.create", ""), ("m.room.member", bob.user_id)} <= state
    # start/end continue the pagination on either side.
    _, before = await messages(client, alice, room_id, dir="b", limit=1, **{"from": body["start"]})
    assert bodies(before["chunk"]) == ["m0"]
    _, after = await messages(client, alice, room_id, dir="f", limit=5, **{"from": body["end"]})
    assert bodies(after["chunk"]) == ["m6"]

    lazy: dict[str, Any] = {"lazy_load_members": True}
    status, body = await get(
        client, f"{V3}/rooms/{q(room_id)}/context/{q(ids[3])}", alice, limit=0, filter=lazy
    )
    assert body["events_before"] == [] and body["events_after"] == []
    members = {e["state_key"] for e in body["state"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id}  # ids[3] is from alice (odd index)

    status, error = await get(client, f"{V3}/rooms/{q(room_id)}/context/{q('$' + 'A' * 43)}", alice)
    assert (status, error["errcode"]) == (404, "M_NOT_FOUND")
    status, error = await get(
        client, f"{V3}/rooms/{q(room_id)}/context/{q(ids[0])}", alice, limit="x"
    )
    assert (status, error["errcode"]) == (400, "M_INVALID_PARAM")


async def test_context_respects_history_visibility(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    await call(
        client,
        "PUT",
        f"/rooms/{q(room_id)}/state/m.room.history_visibility/",
        alice,
        {"history_visibility": "joined"},
    )
    secret = await text(client, alice, room_id, "secret")
    assert (await join(client, bob, room_id))[0] == 200
    status, error = await get(client, f"{V3}/rooms/{q(room_id)}/context/{q(secret)}", bob)
    assert (status, error["errcode"]) == (404, "M_NOT_FOUND")


async def test_timestamp_to_event(make_sync_client: MakeSyncClient, clock: Clock) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice)
    clock.advance(10_000)
    t1 = clock.now_ms
    first = await text(client, alice, room_id, "first")
    clock.advance(10_000)
    second = await text(client, alice, room_id, "second")
    path = f"{V1}/rooms/{q(room_id)}/timestamp_to_event"

    status, body = await get(client, path, alice, ts=t1 + 1, dir="f")
    assert (status, body) == (200, {"event_id": second, "origin_server_ts": t1 + 10_000})
    status, body = await get(client, path, alice, ts=t1 + 1, dir="b")
    assert (status, body) == (200, {"event_id": first, "origin_server_ts": t1})
    status, body = await get(client, path, alice, ts=t1 + 60_000, dir="f")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for params in ({"dir": "f"}, {"ts": "x", "dir": "f"}, {"ts": t1}, {"ts": t1, "dir": "up"}):
        status, body = await get(client, path, alice, **params)
        assert status == 400, params
        assert body["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")
    status, body = await get(client, path, carol, ts=t1, dir="f")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
