"""The per-user data endpoints with real users (accounts service) and real rooms
(rooms service): one end-to-end check per endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import MakeClient
from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    q,
    send,
)

pytestmark = pytest.mark.port_server_name


async def _setup(make_client: MakeClient) -> tuple[Client, User, User, User, str]:
    client = await make_client({"ratelimit": {"enabled": False}})
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="public_chat")
    status, payload = await join(client, bob, room_id)
    assert status == 200, payload
    return client, alice, bob, carol, room_id


async def test_filters(make_client: MakeClient) -> None:
    client, alice, bob, _, _ = await _setup(make_client)
    definition: dict[str, Any] = {"room": {"timeline": {"limit": 5}}}
    status, body = await call(client, "POST", f"/user/{q(alice.user_id)}/filter", alice, definition)
    assert status == 200
    filter_id = body["filter_id"]
    status, body = await call(client, "GET", f"/user/{q(alice.user_id)}/filter/{filter_id}", alice)
    assert (status, body) == (200, definition)
    status, body = await call(client, "GET", f"/user/{q(alice.user_id)}/filter/{filter_id}", bob)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_account_data(make_client: MakeClient) -> None:
    client, alice, bob, _, room_id = await _setup(make_client)
    path = f"/user/{q(alice.user_id)}/account_data/org.example"
    assert await call(client, "PUT", path, alice, {"a": 1}) == (200, {})
    assert await call(client, "GET", path, alice) == (200, {"a": 1})
    status, body = await call(client, "GET", path, bob)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    room_path = f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/m.tag"
    assert await call(client, "PUT", room_path, alice, {"tags": {"u.x": {}}}) == (200, {})
    assert await call(client, "GET", room_path, alice) == (200, {"tags": {"u.x": {}}})
    hs = hs_of(client)
    changes = await hs.account_data.changes_for_user(
        alice.user_id, 0, await hs.account_data.current_position()
    )
    assert changes.room_events == {room_id: [{"type": "m.tag", "content": {"tags": {"u.x": {}}}}]}


async def test_typing(make_client: MakeClient) -> None:
    client, alice, bob, carol, room_id = await _setup(make_client)
    hs = hs_of(client)
    bob_version = hs.notifier.version(bob.user_id)
    path = f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}"
    assert await call(client, "PUT", path, alice, {"typing": True, "timeout": 10000}) == (200, {})
    assert hs.notifier.version(bob.user_id) > bob_version
    changes = await hs.typing.changes_for_user(bob.user_id, 0, hs.typing.current_position())
    assert changes == {room_id: {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}}
    status, body = await call(
        client, "PUT", f"/rooms/{q(room_id)}/typing/{q(carol.user_id)}", carol, {"typing": True}
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_receipts_and_read_markers(make_client: MakeClient) -> None:
    client, alice, bob, carol, room_id = await _setup(make_client)
    hs = hs_of(client)
    status, body = await send(client, bob, room_id, {"msgtype": "m.text", "body": "1"}, "t1")
    assert status == 200, body
    first = body["event_id"]
    status, body = await send(client, bob, room_id, {"msgtype": "m.text", "body": "2"}, "t2")
    second = body["event_id"]

    path = f"/rooms/{q(room_id)}/receipt/m.read/{q(second)}"
    assert await call(client, "POST", path, alice, {}) == (200, {})
    changes = await hs.receipts.changes_for_user(
        bob.user_id, 0, await hs.receipts.current_position()
    )
    assert list(changes[room_id]["content"]) == [second]
    assert set(changes[room_id]["content"][second]["m.read"]) == {alice.user_id}

    markers = f"/rooms/{q(room_id)}/read_markers"
    assert await call(
        client, "POST", markers, alice, {"m.fully_read": first, "m.read.private": first}
    ) == (200, {})
    fully_read = f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/m.fully_read"
    assert await call(client, "GET", fully_read, alice) == (200, {"event_id": first})
    # Carol is not in the room.
    status, body = await call(client, "POST", path, carol, {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # An event of another room is not in this one.
    other_room = await create_room(client, carol)
    status, body = await call(
        client, "POST", f"/rooms/{q(other_room)}/receipt/m.read/{q(first)}", carol, {}
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_presence(make_client: MakeClient) -> None:
    client, alice, bob, carol, _ = await _setup(make_client)
    path = f"/presence/{q(alice.user_id)}/status"
    assert await call(client, "PUT", path, alice, {"presence": "online", "status_msg": "hi"}) == (
        200,
        {},
    )
    status, body = await call(client, "GET", path, bob)
    assert status == 200
    assert body["presence"] == "online" and body["status_msg"] == "hi"
    status, body = await call(client, "GET", path, carol)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    hs = hs_of(client)
    events = await hs.presence.changes_for_user(
        bob.user_id, 0, await hs.presence.current_position()
    )
    assert [event["sender"] for event in events] == [alice.user_id]
