"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (MSC3266, v1.15) and
GET /_matrix/client/v1/mutual_rooms through the real HTTP stack, on both
engines: what a summary holds, who may preview which room (with and without
an access token), rooms of other servers through ``via``, and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from ranvier.services import directory
from ranvier.services.spaces import REMOTE_CACHE_MS
from tests.api.conftest import Clock
from tests.api.directory_support import FED_V1, V1, Client, script
from tests.api.rooms_support import User, call, create_room, join, local_id, make_user, put_state, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
)

REMOTE = "remote.example"


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def summary(client: Client, user: User | None, room: str, query: str = "") -> tuple[int, Any]:
    headers = user.headers if user is not None else {}
    response = await client.get(f"{V1}/room_summary/{q(room)}{query}", headers=headers)
    return response.status, await response.json()


async def test_summary_of_a_public_room(client: Client) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    room = await create_room(
        client,
        alice,
        preset="public_chat",
        name="Lobby",
        topic="Welcome",
        room_alias_name="lobby",
        creation_content={"type": "m.space"},
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    version = (await client.app[HOMESERVER].rooms.require_room(room)).room_version
    expected = {
        "room_id": room,
        "name": "Lobby",
        "topic": "Welcome",
        "canonical_alias": local_id(client, "#lobby"),
        "num_joined_members": 1,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        "room_type": "m.space",
        "encryption": "m.megolm.v1.aes-sha2",
        "room_version": version,
    }
    assert await summary(client, alice, room) == (200, {**expected, "membership": "join"})
    # By alias too; a user never in the room has no membership field.
    assert await summary(client, bob, local_id(client, "#lobby")) == (200, expected)
    # Without an access token: allowed for a public room (room_summary.yaml).
    assert await summary(client, None, room) == (200, expected)
    assert (await join(client, bob, room))[0] == 200
    assert (await call(client, "POST", f"/rooms/{q(room)}/leave", bob, {}))[0] == 200
    status, body = await summary(client, bob, room)
    assert (status, body["membership"], body["num_joined_members"]) == (200, "leave", 1)


async def test_who_may_preview_which_room(client: Client) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    private = await create_room(client, alice, preset="private_chat")
    for user in (bob, None):
        status, body = await summary(client, user, private)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    invite = {"user_id": bob.user_id}
    assert (await call(client, "POST", f"/rooms/{q(private)}/invite", alice, invite))[0] == 200
    status, body = await summary(client, bob, private)
    assert (status, body["membership"], body["join_rule"]) == (200, "invite", "invite")
    knock = await create_room(client, alice, preset="private_chat")
    await put_state(client, alice, knock, "m.room.join_rules", "", {"join_rule": "knock"})
    assert (await summary(client, None, knock))[1]["join_rule"] == "knock"
    readable = await create_room(client, alice, preset="private_chat")
    await put_state(
        client,
        alice,
        readable,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    status, body = await summary(client, None, readable)
    assert (status, body["world_readable"]) == (200, True)
    space = await create_room(client, alice, preset="public_chat")
    restricted = await create_room(client, alice, preset="private_chat")
    allow = [{"type": "m.room_membership", "room_id": space}]
    await put_state(
        client,
        alice,
        restricted,
        "m.room.join_rules",
        "",
        {"join_rule": "restricted", "allow": allow},
    )
    assert (await summary(client, bob, restricted))[0] == 404
    assert (await summary(client, None, restricted))[0] == 404
    assert (await join(client, bob, space))[0] == 200
    status, body = await summary(client, bob, restricted)
    assert (status, body["allowed_room_ids"], body["join_rule"]) == (200, [space], "restricted")


async def test_bad_input(client: Client) -> None:
    alice = await make_user(client, "alice")
    name = client.app[HOMESERVER].server_name
    for room in (f"!unknown:{name}", f"#unknown:{name}"):
        status, body = await summary(client, alice, room)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), room
    for room in ("not-a-room", "#no-server", "!"):
        status, body = await summary(client, alice, room)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), room
    response = await client.get(
        f"{V1}/room_summary/{q(f'!unknown:{name}')}", headers={"Authorization": "Bearer nope"}
    )
    assert (response.status, (await response.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_rooms_of_other_servers_through_via(client: Client, clock: Clock) -> None:
    alice = await make_user(client, "alice")
    room = f"!room:{REMOTE}"
    remote_summary = {
        "room_id": room,
        "name": "Far away",
        "num_joined_members": 12,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        "room_version": "11",
        "children_state": [],
    }
    path = f"{FED_V1}/hierarchy/{q(room)}"
    answer = {"room": remote_summary, "children": [], "inaccessible_children": []}
    fake = script(client, {(REMOTE, path): answer})
    status, body = await summary(client, alice, room, "?via=unreachable.example&via=" + REMOTE)
    assert status == 200
    assert body == {k: v for k, v in remote_summary.items() if k != "children_state"}
    assert [call[:3] for call in fake.calls] == [
        ("GET", "unreachable.example", path),
        ("GET", REMOTE, path),
    ]
    # The answer is kept a while (Spaces, "Server behaviour"): no new request.
    assert (await summary(client, alice, room, f"?via={REMOTE}"))[0] == 200
    assert len(fake.calls) == 2
    clock.advance(REMOTE_CACHE_MS)
    # Without via, the server named in the room ID is asked.
    fake = script(client, {(REMOTE, path): answer})
    assert (await summary(client, alice, room))[0] == 200
    assert [call[1] for call in fake.calls] == [REMOTE]
    clock.advance(REMOTE_CACHE_MS)
    # Only servers that cannot say: 404.
    script(client, {})
    assert (await summary(client, alice, room, "?via=unreachable.example"))[0] == 404
    # Not a server name: nobody is asked but the room ID's server.
    fake = script(client, {})
    assert (await summary(client, alice, room, "?via=not%20a%20server"))[0] == 404
    assert [call[1] for call in fake.calls] == [REMOTE]
    assert (await summary(client, alice, f"!room:{REMOTE}"))[0] == 404
    # A remote room the user may not preview; one answer about another room.
    private = {**answer, "room": {**remote_summary, "join_rule": "invite"}}
    script(client, {(REMOTE, path): private})
    assert (await summary(client, alice, room, f"?via={REMOTE}"))[0] == 404
    other_room = {**answer, "room": {**remote_summary, "room_id": f"!other:{REMOTE}"}}
    script(client, {(REMOTE, path): other_room})
    assert (await summary(client, alice, room, f"?via={REMOTE}"))[0] == 404


# --- mutual rooms -----------------------------------------------------------------------------


async def mutual(client: Client, user: User, query: str) -> tuple[int, Any]:
    response = await client.get(f"{V1}/mutual_rooms{query}", headers=user.headers)
    return response.status, await response.json()


async def test_mutual_rooms(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, carol = [await make_user(client, name) for name in ("alice", "bob", "carol")]
    shared = []
    for _ in range(3):
        room = await create_room(client, alice, preset="public_chat")
        assert (await join(client, bob, room))[0] == 200
        shared.append(room)
    await create_room(client, alice, preset="public_chat")  # alice only
    left = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, left))[0] == 200
    assert (await call(client, "POST", f"/rooms/{q(left)}/leave", bob, {}))[0] == 200
    status, body = await mutual(client, alice, f"?user_id={q(bob.user_id)}")
    assert (status, body) == (200, {"joined": sorted(shared), "count": 3})
    assert await mutual(client, alice, f"?user_id={q(carol.user_id)}") == (
        200,
        {"joined": [], "count": 0},
    )
    # A user nobody knows: an empty list (mutual_rooms.yaml).
    assert await mutual(client, alice, f"?user_id={q('@nobody:elsewhere.example')}") == (
        200,
        {"joined": [], "count": 0},
    )
    monkeypatch.setattr(directory, "MUTUAL_ROOMS_PAGE", 2)
    status, first = await mutual(client, bob, f"?user_id={q(alice.user_id)}")
    assert (status, first["joined"], first["count"]) == (200, sorted(shared)[:2], 3)
    status, second = await mutual(
        client, bob, f"?user_id={q(alice.user_id)}&from={first['next_batch']}"
    )
    assert (status, second) == (200, {"joined": sorted(shared)[2:], "count": 3})


async def test_mutual_rooms_bad_input(client: Client) -> None:
    alice = await make_user(client, "alice")
    for query, errcode in (
        ("", "M_MISSING_PARAM"),
        ("?user_id=bob", "M_INVALID_PARAM"),
        (f"?user_id={q('@BOB:x')}", "M_INVALID_PARAM"),  # not compliant
        (f"?user_id={q(alice.user_id)}", "M_INVALID_PARAM"),  # oneself
        (f"?user_id={q('@bob:x')}&from=garbage!", "M_INVALID_PARAM"),
        (f"?user_id={q('@bob:x')}&from=e30", "M_INVALID_PARAM"),  # {}
    ):
        status, body = await mutual(client, alice, query)
        assert (status, body["errcode"]) == (400, errcode), query
    response = await client.get(f"{V1}/mutual_rooms?user_id=%40bob%3Ax")
    assert response.status == 401
