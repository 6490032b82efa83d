"""The published room directory through the real HTTP stack, on both engines:
GET/POST /publicRooms (filters, ordering, keyset pagination, bad input,
another server's directory over federation) and publishing with
/directory/list/room (the publish rule, createRoom visibility)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.services.federation.client import FederationResponseError
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.directory_support import FED_V1, Client, engine_client, script
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    User,
    call,
    create_room,
    join,
    local_id,
    make_user,
    put_state,
    q,
)
from tests.federation_support import FakeServer

pytestmark = pytest.mark.usefixtures("migrated_dsn")


@pytest.fixture
async def client(migrated_dsn: str, make_client: MakeClient) -> Client:
    return await engine_client(make_client, migrated_dsn)


async def public_rooms(client: Client, query: str = "") -> tuple[int, Any]:
    response = await client.get("/_matrix/client/v3/publicRooms" + query)
    return response.status, await response.json()


async def search(client: Client, user: User, body: Any, query: str = "") -> tuple[int, Any]:
    return await call(client, "POST", "/publicRooms" + query, user, body)


def ids(page: Any) -> list[str]:
    return [room["room_id"] for room in page["chunk"]]


async def test_published_rooms_are_listed_with_their_details(client: Client) -> None:
    alice = await make_user(client, "alice")
    lobby = await create_room(
        client,
        alice,
        visibility="public",
        name="Lobby",
        topic="Chat here",
        room_alias_name="lobby",
    )
    await put_state(client, alice, lobby, "m.room.avatar", "", {"url": "mxc://x/avatar"})
    await put_state(
        client,
        alice,
        lobby,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    await put_state(client, alice, lobby, "m.room.guest_access", "", {"guest_access": "can_join"})
    space = await create_room(
        client, alice, visibility="public", name="Space", creation_content={"type": "m.space"}
    )
    await create_room(client, alice, name="Not published")
    status, page = await public_rooms(client)  # no access token needed
    assert status == 200
    by_id = {room["room_id"]: room for room in page["chunk"]}
    assert by_id == {
        lobby: {
            "room_id": lobby,
            "name": "Lobby",
            "topic": "Chat here",
            "canonical_alias": local_id(client, "#lobby"),
            "avatar_url": "mxc://x/avatar",
            "num_joined_members": 1,
            "world_readable": True,
            "guest_can_join": True,
            "join_rule": "public",
        },
        space: {
            "room_id": space,
            "name": "Space",
            "num_joined_members": 1,
            "world_readable": False,
            "guest_can_join": False,
            "join_rule": "public",
            "room_type": "m.space",
        },
    }
    assert page["total_room_count_estimate"] == 2
    assert "next_batch" not in page and "prev_batch" not in page


async def test_chunks_follow_state_changes_and_order_by_members(client: Client) -> None:
    alice, bob, carol = [await make_user(client, name) for name in ("alice", "bob", "carol")]
    small = await create_room(client, alice, visibility="public", name="Small")
    big = await create_room(client, alice, visibility="public", name="Big")
    for user in (bob, carol):
        assert (await join(client, user, big))[0] == 200
    await put_state(client, alice, big, "m.room.name", "", {"name": "Bigger"})
    await put_state(client, alice, big, "m.room.topic", "", {"topic": "Now with a topic"})
    status, page = await public_rooms(client)
    assert status == 200
    assert ids(page) == [big, small]
    assert page["chunk"][0]["name"] == "Bigger"
    assert page["chunk"][0]["topic"] == "Now with a topic"
    assert page["chunk"][0]["num_joined_members"] == 3
    # Equal member counts: by room ID.
    assert (await join(client, bob, small))[0] == 200
    assert (await join(client, carol, small))[0] == 200
    status, page = await public_rooms(client)
    assert ids(page) == sorted([big, small])
    # Unpublished: gone.
    status, _ = await call(
        client, "PUT", f"/directory/list/room/{q(big)}", alice, {"visibility": "private"}
    )
    assert status == 200
    assert ids((await public_rooms(client))[1]) == [small]


async def test_search_term_and_room_types(client: Client) -> None:
    alice = await make_user(client, "alice")
    chat = await create_room(client, alice, visibility="public", name="Gardening Chat")
    topic = await create_room(client, alice, visibility="public", topic="All about TOMATOES")
    alias = await create_room(client, alice, visibility="public", room_alias_name="potatoes")
    space = await create_room(
        client,
        alice,
        visibility="public",
        name="Garden space",
        creation_content={"type": "m.space"},
    )
    other = await create_room(
        client, alice, visibility="public", creation_content={"type": "org.example.custom"}
    )

    async def found(search_filter: dict[str, Any]) -> list[str]:
        status, page = await search(client, alice, {"filter": search_filter})
        assert status == 200, page
        return sorted(ids(page))

    assert await found({"generic_search_term": "garden"}) == sorted([chat, space])
    assert await found({"generic_search_term": "tomatoes"}) == [topic]
    assert await found({"generic_search_term": "#POTATOES"}) == [alias]
    assert await found({"generic_search_term": topic}) == [topic]  # the room ID
    assert await found({"generic_search_term": "nothing like this"}) == []
    assert await found({"room_types": [None]}) == sorted([chat, topic, alias])
    assert await found({"room_types": ["m.space"]}) == [space]
    assert await found({"room_types": [None, "m.space"]}) == sorted([chat, topic, alias, space])
    assert await found({"room_types": ["org.example.custom"]}) == [other]
    assert await found({"room_types": []}) == []
    assert await found({"generic_search_term": "garden", "room_types": [None]}) == [chat]


async def test_keyset_pagination_both_ways(client: Client) -> None:
    alice = await make_user(client, "alice")
    rooms = sorted([await create_room(client, alice, visibility="public") for _ in range(5)])
    status, first = await public_rooms(client, "?limit=2")
    assert status == 200
    assert ids(first) == rooms[:2] and "prev_batch" not in first
    assert first["total_room_count_estimate"] == 5
    status, second = await public_rooms(client, f"?limit=2&since={first['next_batch']}")
    assert ids(second) == rooms[2:4]
    status, third = await public_rooms(client, f"?limit=2&since={second['next_batch']}")
    assert ids(third) == rooms[4:] and "next_batch" not in third
    status, back = await public_rooms(client, f"?limit=2&since={third['prev_batch']}")
    assert ids(back) == rooms[2:4]
    status, start = await public_rooms(client, f"?limit=2&since={back['prev_batch']}")
    assert ids(start) == rooms[:2] and "prev_batch" not in start
    # POST paginates the same way.
    status, posted = await search(client, alice, {"limit": 3, "since": first["next_batch"]})
    assert (status, ids(posted)) == (200, rooms[2:5])


@pytest.mark.parametrize(
    "query",
    [
        "?since=nonsense!",
        "?since=bm90IGpzb24",  # base64 of "not json"
        "?since=WzEsMl0",  # base64 of [1,2]
        "?since=eyJkIjoieCIsIm0iOjEsInIiOiIhYTpiIn0",  # direction "x"
        "?limit=-1",
        "?limit=ten",
        "?include_all_networks=yes",
        "?include_all_networks=true&third_party_instance_id=irc",
        "?server=not%20a%20server",
    ],
)
async def test_bad_get_parameters(client: Client, query: str) -> None:
    status, body = await public_rooms(client, query)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    "body",
    [
        {"limit": "10"},
        {"limit": -5},
        {"limit": True},
        {"since": 5},
        {"since": "garbage"},
        {"filter": "chat"},
        {"filter": {"generic_search_term": 5}},
        {"filter": {"room_types": "m.space"}},
        {"filter": {"room_types": [5]}},
        {"include_all_networks": "yes"},
        {"third_party_instance_id": 5},
        {"include_all_networks": True, "third_party_instance_id": "irc"},
    ],
)
async def test_bad_post_bodies(client: Client, body: Any) -> None:
    alice = await make_user(client, "alice")
    status, answer = await search(client, alice, body)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


async def test_huge_limits_are_clamped(client: Client) -> None:
    alice = await make_user(client, "alice")
    room = await create_room(client, alice, visibility="public")
    for limit in ("1000000", "9" * 5000):
        status, page = await public_rooms(client, f"?limit={limit}")
        assert (status, ids(page)) == (200, [room])
    status, page = await search(client, alice, {"limit": 2**62})
    assert (status, ids(page)) == (200, [room])


async def test_post_needs_a_user_and_networks_are_answered(client: Client) -> None:
    response = await client.post("/_matrix/client/v3/publicRooms", json={})
    assert (response.status, (await response.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    alice = await make_user(client, "alice")
    room = await create_room(client, alice, visibility="public")
    status, page = await search(client, alice, {"include_all_networks": True})
    assert (status, ids(page)) == (200, [room])
    # No application service networks here: such a network has no rooms.
    status, page = await search(client, alice, {"third_party_instance_id": "irc"})
    assert (status, page) == (200, {"chunk": [], "total_room_count_estimate": 0})


# --- publishing ---------------------------------------------------------------------------


async def visibility(client: Client, room_id: str) -> tuple[int, Any]:
    return await call(client, "GET", f"/directory/list/room/{q(room_id)}")


async def publish(client: Client, user: User, room_id: str, value: str) -> tuple[int, Any]:
    return await call(
        client, "PUT", f"/directory/list/room/{q(room_id)}", user, {"visibility": value}
    )


async def test_room_admins_publish_by_default(client: Client) -> None:
    alice, bob, eve = [await make_user(client, name) for name in ("alice", "bob", "eve")]
    room = await create_room(client, alice, preset="public_chat")
    assert await visibility(client, room) == (200, {"visibility": "private"})
    assert (await join(client, bob, room))[0] == 200
    for user in (bob, eve):  # a member without power, and a stranger
        status, body = await publish(client, user, room, "public")
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert await visibility(client, room) == (200, {"visibility": "private"})
    assert (await publish(client, alice, room, "public"))[0] == 200
    assert await visibility(client, room) == (200, {"visibility": "public"})
    assert ids((await public_rooms(client))[1]) == [room]
    status, body = await publish(client, bob, room, "private")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # A server admin may, without being in the room.
    await client.app[HOMESERVER].accounts.set_admin(eve.user_id, True)
    assert (await publish(client, eve, room, "private"))[0] == 200
    assert await visibility(client, room) == (200, {"visibility": "private"})


async def test_publishing_bad_input(client: Client) -> None:
    alice = await make_user(client, "alice")
    room = await create_room(client, alice)
    unknown = "!unknown:" + client.app[HOMESERVER].server_name
    status, body = await publish(client, alice, unknown, "public")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await visibility(client, unknown)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await publish(client, alice, room, "everyone")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await publish(client, alice, "not-a-room", "public")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    response = await client.put(f"/_matrix/client/v3/directory/list/room/{q(room)}", json={})
    assert response.status == 401


async def test_joined_members_rule(migrated_dsn: str, make_client: MakeClient) -> None:
    client = await make_client(
        {**ROOMS_CONFIG, "database": migrated_dsn, "directory": {"publish_rule": "joined_members"}}
    )
    alice, bob, eve = [await make_user(client, name) for name in ("alice", "bob", "eve")]
    room = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room))[0] == 200
    assert (await publish(client, eve, room, "public"))[0] == 403
    assert (await publish(client, bob, room, "public"))[0] == 200
    assert ids((await public_rooms(client))[1]) == [room]
    # Taking it out stays with the room's admins.
    assert (await publish(client, bob, room, "private"))[0] == 403
    assert (await publish(client, alice, room, "private"))[0] == 200


async def test_server_admins_rule_also_guards_create_room(
    make_client: MakeClient, migrated_dsn: str
) -> None:
    client = await make_client(
        {**ROOMS_CONFIG, "database": migrated_dsn, "directory": {"publish_rule": "server_admins"}}
    )
    alice, admin = await make_user(client, "alice"), await make_user(client, "admin")
    await client.app[HOMESERVER].accounts.set_admin(admin.user_id, True)
    status, body = await call(client, "POST", "/createRoom", alice, {"visibility": "public"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, joined = await call(client, "GET", "/joined_rooms", alice)
    assert (status, joined) == (200, {"joined_rooms": []})  # nothing was created
    room = await create_room(client, alice)
    assert (await publish(client, alice, room, "public"))[0] == 403
    assert (await publish(client, admin, room, "public"))[0] == 200
    public = await create_room(client, admin, visibility="public")
    assert sorted(ids((await public_rooms(client))[1])) == sorted([room, public])


# --- another server's directory -----------------------------------------------------------

REMOTE = "remote.example"
REMOTE_PAGE = {
    "chunk": [
        {
            "room_id": "!r:remote.example",
            "num_joined_members": 7,
            "world_readable": False,
            "guest_can_join": False,
        }
    ],
    "next_batch": "remote-token",
    "total_room_count_estimate": 9,
}


async def test_another_servers_directory_over_federation(client: Client) -> None:
    alice = await make_user(client, "alice")
    fake = script(client, {(REMOTE, FED_V1 + "/publicRooms"): REMOTE_PAGE})
    response = await client.get(
        f"/_matrix/client/v3/publicRooms?server={REMOTE}&limit=5&since=abc",
        headers=alice.headers,
    )
    assert (response.status, await response.json()) == (200, REMOTE_PAGE)
    assert fake.calls == [
        (
            "GET",
            REMOTE,
            FED_V1 + "/publicRooms",
            {"include_all_networks": "false", "limit": "5", "since": "abc"},
            None,
        )
    ]
    status, page = await search(
        client,
        alice,
        {"limit": 3, "filter": {"generic_search_term": "x", "room_types": [None]}},
        f"?server={REMOTE}",
    )
    assert (status, page) == (200, REMOTE_PAGE)
    assert fake.calls[1] == (
        "POST",
        REMOTE,
        FED_V1 + "/publicRooms",
        None,
        {
            "include_all_networks": False,
            "limit": 3,
            "filter": {"generic_search_term": "x", "room_types": [None]},
        },
    )
    # Our own name is our own directory, not a federation request.
    room = await create_room(client, alice, visibility="public")
    status, page = await public_rooms(client, f"?server={client.app[HOMESERVER].server_name}")
    assert (status, ids(page), len(fake.calls)) == (200, [room], 2)


async def test_another_servers_directory_errors(client: Client) -> None:
    alice = await make_user(client, "alice")
    # Asking another server costs a federation request: not for anonymous callers.
    response = await client.get(f"/_matrix/client/v3/publicRooms?server={REMOTE}")
    assert response.status == 401
    script(client, {})  # unreachable
    response = await client.get(
        f"/_matrix/client/v3/publicRooms?server={REMOTE}", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")
    script(client, {(REMOTE, FED_V1 + "/publicRooms"): {"chunk": "not a list"}})
    response = await client.get(
        f"/_matrix/client/v3/publicRooms?server={REMOTE}", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")
    script(client, {(REMOTE, FED_V1 + "/publicRooms"): FederationResponseError(REMOTE, 500, {})})
    response = await client.get(
        f"/_matrix/client/v3/publicRooms?server={REMOTE}", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")
    refusal = FederationResponseError(REMOTE, 403, {"errcode": "M_FORBIDDEN", "error": "no"})
    script(client, {(REMOTE, FED_V1 + "/publicRooms"): refusal})
    response = await client.get(
        f"/_matrix/client/v3/publicRooms?server={REMOTE}", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (403, "M_FORBIDDEN")


# --- serving our directory to other servers -------------------------------------------------


async def test_other_servers_get_the_same_directory(client: Client) -> None:
    remote = FakeServer(REMOTE)
    hs = client.app[HOMESERVER]
    await hs.keyring.store_keys(remote.key_rows(NOW_MS - 3_600_000, NOW_MS + 3_600_000))
    alice = await make_user(client, "alice")
    plain = await create_room(client, alice, visibility="public", name="Plain")
    space = await create_room(
        client, alice, visibility="public", name="Space", creation_content={"type": "m.space"}
    )

    async def fed(method: str, uri: str, body: Any = None) -> tuple[int, Any]:
        auth = remote.authorization(hs.server_name, method, uri, body)
        data = None if body is None else orjson.dumps(body)
        response = await client.request(
            method, URL(uri, encoded=True), data=data, headers={"Authorization": auth}
        )
        return response.status, await response.json()

    status, page = await fed("GET", f"{FED_V1}/publicRooms?limit=1")
    assert (status, ids(page)) == (200, sorted([plain, space])[:1])
    status, rest = await fed(
        "GET", f"{FED_V1}/publicRooms?limit=99999999999&since={page['next_batch']}"
    )
    assert (status, ids(rest)) == (200, sorted([plain, space])[1:])
    status, page = await fed(
        "POST", f"{FED_V1}/publicRooms", {"filter": {"room_types": ["m.space"]}}
    )
    assert (status, ids(page)) == (200, [space])
    status, page = await fed("POST", f"{FED_V1}/publicRooms", {"filter": {"room_types": "m.space"}})
    assert (status, page["errcode"]) == (400, "M_INVALID_PARAM")
    status, page = await fed("GET", f"{FED_V1}/publicRooms?since=garbage!")
    assert (status, page["errcode"]) == (400, "M_INVALID_PARAM")
