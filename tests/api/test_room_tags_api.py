"""Room tags (tags.yaml; Client-Server API, "Room Tagging"): GET, PUT and
DELETE one tag, stored as the room's ``m.tag`` account data and synced in
``rooms.join.<room>.account_data``. Both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.rooms_support import Client, User, call, create_room, make_user, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
    sync,
)


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


def tags_path(user: User, room_id: str, tag: str | None = None) -> str:
    path = f"/user/{q(user.user_id)}/rooms/{q(room_id)}/tags"
    return path if tag is None else f"{path}/{q(tag)}"


def room_account_data(body: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = body["rooms"]["join"].get(room_id, {})
    events: list[dict[str, Any]] = room.get("account_data", {}).get("events", [])
    return events


async def test_put_get_delete_and_sync(client: Client) -> None:
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    assert await call(client, "GET", tags_path(alice, room_id), alice) == (200, {"tags": {}})
    first = await sync(client, alice)
    assert await call(
        client, "PUT", tags_path(alice, room_id, "m.favourite"), alice, {"order": 0.25}
    ) == (200, {})
    assert await call(client, "PUT", tags_path(alice, room_id, "u.work"), alice, {}) == (200, {})
    assert await call(client, "GET", tags_path(alice, room_id), alice) == (
        200,
        {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}},
    )
    # The next /sync carries the room's m.tag account data, once, latest content.
    second = await sync(client, alice, since=first["next_batch"])
    assert room_account_data(second, room_id) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}}
    ]
    # Readable as plain room account data too.
    status, content = await call(
        client, "GET", f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/m.tag", alice
    )
    assert (status, content) == (200, {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}})
    # Replacing a tag replaces its object.
    await call(client, "PUT", tags_path(alice, room_id, "m.favourite"), alice, {"order": 1})
    assert await call(client, "DELETE", tags_path(alice, room_id, "u.work"), alice) == (200, {})
    third = await sync(client, alice, since=second["next_batch"])
    assert room_account_data(third, room_id) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 1}}}}
    ]
    # Deleting a tag the room does not have: 200, nothing written.
    assert await call(client, "DELETE", tags_path(alice, room_id, "u.none"), alice) == (200, {})
    fourth = await sync(client, alice, since=third["next_batch"], timeout=0)
    assert room_account_data(fourth, room_id) == []
    # An initial sync has it.
    assert room_account_data(await sync(client, alice), room_id) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 1}}}}
    ]


async def test_concurrent_tag_writes_keep_every_tag(client: Client) -> None:
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    names = [f"u.tag{n}" for n in range(8)]
    results = await asyncio.gather(
        *(call(client, "PUT", tags_path(alice, room_id, name), alice, {}) for name in names)
    )
    assert all(status == 200 for status, _ in results)
    _, body = await call(client, "GET", tags_path(alice, room_id), alice)
    assert sorted(body["tags"]) == names


async def test_other_users_tags_are_forbidden(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice)
    await call(client, "PUT", tags_path(alice, room_id, "u.mine"), alice, {})
    for method, path, body in (
        ("GET", tags_path(alice, room_id), None),
        ("PUT", tags_path(alice, room_id, "u.bob"), {}),
        ("DELETE", tags_path(alice, room_id, "u.mine"), None),
    ):
        status, answer = await call(client, method, path, bob, body)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), method
    assert await call(client, "GET", tags_path(alice, room_id), alice) == (
        200,
        {"tags": {"u.mine": {}}},
    )
    status, answer = await call(client, "GET", tags_path(alice, room_id), None)
    assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN")


@pytest.mark.parametrize(
    ("tag", "body", "errcode"),
    [
        ("u.x", {"order": "0.5"}, "M_BAD_JSON"),
        ("u.x", {"order": True}, "M_BAD_JSON"),
        ("u.x", {"order": 1.5}, "M_BAD_JSON"),
        ("u.x", {"order": -0.1}, "M_BAD_JSON"),
        ("u.x", {"order": None}, "M_BAD_JSON"),
        ("u." + "x" * 254, {}, "M_INVALID_PARAM"),  # 256 bytes
        ("u." + "é" * 127, {}, "M_INVALID_PARAM"),  # 256 bytes, 129 characters
        ("u.x", [0.5], "M_BAD_JSON"),
    ],
)
async def test_bad_tags_are_400_and_write_nothing(
    client: Client, tag: str, body: Any, errcode: str
) -> None:
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    status, answer = await call(client, "PUT", tags_path(alice, room_id, tag), alice, body)
    assert (status, answer["errcode"]) == (400, errcode)
    assert await call(client, "GET", tags_path(alice, room_id), alice) == (200, {"tags": {}})


async def test_longest_tag_and_bad_room_id(client: Client) -> None:
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    longest = "u." + "x" * 253  # 255 bytes
    assert await call(client, "PUT", tags_path(alice, room_id, longest), alice, {"order": 0}) == (
        200,
        {},
    )
    status, answer = await call(client, "GET", tags_path(alice, "not-a-room"), alice)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    response = await client.put(
        "/_matrix/client/v3" + tags_path(alice, room_id, "u.y"), data=b"{", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
