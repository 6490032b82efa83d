"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy through the real HTTP stack,
on both engines: depth-first walk, the spec's child order, what a user may
see, suggested_only, max_depth, pagination tokens bound to the query, loops,
deep trees, bad input, and children on another server fetched over federation.
Also the federation side (GET /_matrix/federation/v1/hierarchy) serving the
same rooms."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.services.spaces import REMOTE_CACHE_MS
from tests.api.conftest import NOW_MS, Clock
from tests.api.directory_support import FED_V1, V1, Client, script
from tests.api.rooms_support import User, call, create_room, join, make_user, put_state, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
)
from tests.federation_support import FakeServer

REMOTE = "remote.example"
SPACE = {"type": "m.space"}


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


def server(client: Client) -> str:
    return client.app[HOMESERVER].server_name


async def hierarchy(client: Client, user: User, room_id: str, query: str = "") -> tuple[int, Any]:
    response = await client.get(f"{V1}/rooms/{q(room_id)}/hierarchy{query}", headers=user.headers)
    return response.status, await response.json()


async def add_child(client: Client, user: User, space: str, child: str, **content: Any) -> None:
    body = {"via": [server(client)], **content}
    status, answer = await put_state(client, user, space, "m.space.child", child, body)
    assert status == 200, answer


def room_ids(page: Any) -> list[str]:
    return [room["room_id"] for room in page["rooms"]]


async def test_depth_first_in_the_specs_child_order(client: Client, clock: Clock) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(
        client, alice, preset="public_chat", name="Root", creation_content=SPACE
    )
    sub = await create_room(client, alice, preset="public_chat", name="Sub", creation_content=SPACE)
    leaf = await create_room(client, alice, preset="public_chat", name="Leaf")
    early, late, ordered_b, ordered_a = [
        await create_room(client, alice, preset="public_chat") for _ in range(4)
    ]
    # Children without `order` by their event's timestamp; with a valid `order`
    # first, lexicographically; an invalid order (not printable ASCII, too long)
    # counts as none.
    await add_child(client, alice, root, late)
    clock.advance(-10)
    await add_child(client, alice, root, early, order="\u00e9tage")
    clock.advance(20)
    await add_child(client, alice, root, sub, order="x" * 51)
    await add_child(client, alice, root, ordered_b, order="b")
    await add_child(client, alice, root, ordered_a, order="a")
    await add_child(client, alice, sub, leaf)
    status, page = await hierarchy(client, alice, root)
    assert status == 200, page
    # The sub-space is walked into before the next sibling (depth first).
    assert room_ids(page) == [root, ordered_a, ordered_b, early, late, sub, leaf]
    assert "next_batch" not in page
    top = page["rooms"][0]
    assert [c["state_key"] for c in top["children_state"]] == [
        ordered_a,
        ordered_b,
        early,
        late,
        sub,
    ]
    late_event = top["children_state"][3]
    assert late_event == {
        "type": "m.space.child",
        "state_key": late,
        "content": {"via": [server(client)]},
        "sender": alice.user_id,
        "origin_server_ts": NOW_MS,
    }
    assert top["room_type"] == "m.space" and top["name"] == "Root"
    assert top["num_joined_members"] == 1 and top["join_rule"] == "public"
    assert top["room_version"] and top["guest_can_join"] is False
    leaf_chunk = page["rooms"][-1]
    assert leaf_chunk["name"] == "Leaf" and leaf_chunk["children_state"] == []
    assert "room_type" not in leaf_chunk


async def test_max_depth_and_suggested_only(client: Client) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    sub = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    deep = await create_room(client, alice, preset="public_chat")
    plain = await create_room(client, alice, preset="public_chat")
    await add_child(client, alice, root, sub, suggested=True, order="1")
    await add_child(client, alice, root, plain, order="2")
    await add_child(client, alice, sub, deep, suggested=True)
    assert room_ids((await hierarchy(client, alice, root, "?max_depth=0"))[1]) == [root]
    assert room_ids((await hierarchy(client, alice, root, "?max_depth=1"))[1]) == [root, sub, plain]
    status, page = await hierarchy(client, alice, root, "?suggested_only=true")
    assert (status, room_ids(page)) == (200, [root, sub, deep])
    assert [c["state_key"] for c in page["rooms"][0]["children_state"]] == [sub]


async def test_rooms_the_user_may_not_see_are_left_out(client: Client) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    private = await create_room(client, alice, preset="private_chat", name="Secret")
    readable = await create_room(client, alice, preset="private_chat")
    await put_state(
        client,
        alice,
        readable,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    invited = await create_room(client, alice, preset="private_chat")
    assert (
        await call(client, "POST", f"/rooms/{q(invited)}/invite", alice, {"user_id": bob.user_id})
    )[0] == 200
    restricted = await create_room(client, alice, preset="private_chat")
    await put_state(
        client,
        alice,
        restricted,
        "m.room.join_rules",
        "",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": root}]},
    )
    hidden_space = await create_room(client, alice, preset="private_chat", creation_content=SPACE)
    behind = await create_room(client, alice, preset="public_chat")
    await add_child(client, alice, hidden_space, behind)
    children = [private, readable, invited, restricted, hidden_space]
    for n, child in enumerate(children):
        await add_child(client, alice, root, child, order=str(n))
    # Bob is not in the root yet: the restricted room is not for him.
    status, page = await hierarchy(client, bob, root)
    assert (status, room_ids(page)) == (200, [root, readable, invited])
    # Every child is still listed in the parent's children_state.
    assert [c["state_key"] for c in page["rooms"][0]["children_state"]] == children
    assert (await join(client, bob, root))[0] == 200
    status, page = await hierarchy(client, bob, root)
    assert room_ids(page) == [root, readable, invited, restricted]
    # Alice, in every room, sees them all, and what lies behind the private space.
    status, page = await hierarchy(client, alice, root)
    assert room_ids(page) == [root, *children, behind]


async def test_a_root_the_user_may_not_see(client: Client) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    private = await create_room(client, alice, preset="private_chat", creation_content=SPACE)
    for room_id in (private, f"!unknown:{server(client)}"):
        status, body = await hierarchy(client, bob, room_id)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await hierarchy(client, bob, "not-a-room")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    response = await client.get(f"{V1}/rooms/{q(private)}/hierarchy")
    assert response.status == 401


async def test_pagination_and_tokens_bound_to_the_query(client: Client) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    children = [await create_room(client, alice, preset="public_chat") for _ in range(4)]
    for n, child in enumerate(children):
        await add_child(client, alice, root, child, order=str(n))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&from={token}" if token else "")
        status, page = await hierarchy(client, alice, root, query)
        assert status == 200 and len(page["rooms"]) <= 2
        seen += room_ids(page)
        pages += 1
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == [root, *children] and pages == 3
    status, first = await hierarchy(client, alice, root, "?limit=2")
    token = first["next_batch"]
    for query in (
        f"?from={token}&max_depth=1",
        f"?from={token}&suggested_only=true",
        "?from=garbage!",
        "?from=bm90IGpzb24",
        "?from=eyJyIjoiIWE6YiIsImQiOjIwLCJzIjpmYWxzZSwibiI6LTF9",  # n: -1
    ):
        status, body = await hierarchy(client, alice, root, query)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), query
    other = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    status, body = await hierarchy(client, alice, other, f"?from={token}")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?limit=-3", "?limit=x", "?max_depth=-1", "?max_depth=1.5", "?suggested_only=yes"],
)
async def test_bad_parameters(client: Client, query: str) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    status, body = await hierarchy(client, alice, root, query)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_loops_and_deep_trees_are_bounded(client: Client) -> None:
    alice = await make_user(client, "alice")
    a = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    b = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    await add_child(client, alice, a, b)
    await add_child(client, alice, b, a)
    await add_child(client, alice, a, a)  # a space its own child
    status, page = await hierarchy(client, alice, a)
    assert (status, room_ids(page)) == (200, [a, b])
    # A chain deeper than the maximum depth (20): huge values are clamped to it.
    chain = [
        await create_room(client, alice, preset="public_chat", creation_content=SPACE)
        for _ in range(23)
    ]
    for parent, child in itertools.pairwise(chain):
        await add_child(client, alice, parent, child)
    status, page = await hierarchy(
        client, alice, chain[0], "?max_depth=99999999999999999999999&limit=100000"
    )
    assert (status, room_ids(page)) == (200, chain[:21])


async def test_children_without_via_are_not_children(client: Client) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    child = await create_room(client, alice, preset="public_chat")
    await add_child(client, alice, root, child)
    status, _ = await put_state(client, alice, root, "m.space.child", child, {})
    assert status == 200
    status, page = await hierarchy(client, alice, root)
    assert room_ids(page) == [root] and page["rooms"][0]["children_state"] == []


# --- children on another server -------------------------------------------------------------


def remote_summary(room_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "num_joined_members": 3,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        **fields,
    }


async def test_remote_children_are_asked_over_federation(client: Client, clock: Clock) -> None:
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    remote_space, remote_room = f"!space:{REMOTE}", f"!room:{REMOTE}"
    hidden, private = f"!hidden:{REMOTE}", f"!private:{REMOTE}"
    status, _ = await put_state(
        client, alice, root, "m.space.child", remote_space, {"via": [REMOTE]}
    )
    assert status == 200

    def child_event(room_id: str) -> dict[str, Any]:
        return {
            "type": "m.space.child",
            "state_key": room_id,
            "content": {"via": [REMOTE]},
            "sender": f"@x:{REMOTE}",
            "origin_server_ts": 5,
        }

    answer = {
        "room": {
            **remote_summary(remote_space, room_type="m.space", name="Remote space"),
            "children_state": [child_event(remote_room), child_event(hidden), child_event(private)],
        },
        "children": [
            remote_summary(remote_room, name="Remote room"),
            remote_summary(private, join_rule="invite"),
        ],
        "inaccessible_children": [hidden],
    }
    fake = script(client, {(REMOTE, f"{FED_V1}/hierarchy/{q(remote_space)}"): answer})
    status, page = await hierarchy(client, alice, root)
    assert status == 200, page
    # The invite-only room the remote described is not for alice either.
    assert room_ids(page) == [root, remote_space, remote_room]
    assert page["rooms"][1]["name"] == "Remote space"
    assert [c["state_key"] for c in page["rooms"][1]["children_state"]] == sorted(
        [remote_room, hidden, private]
    )
    assert page["rooms"][2]["children_state"] == []
    assert fake.calls == [
        ("GET", REMOTE, f"{FED_V1}/hierarchy/{q(remote_space)}", {"suggested_only": "false"}, None)
    ]
    # Kept a while: the same walk again asks nobody.
    assert room_ids((await hierarchy(client, alice, root))[1]) == [root, remote_space, remote_room]
    assert len(fake.calls) == 1
    clock.advance(REMOTE_CACHE_MS)
    # Unreachable: the remote space is left out, the walk goes on.
    script(client, {})
    status, page = await hierarchy(client, alice, root)
    assert (status, room_ids(page)) == (200, [root])
    # An answer about another room is not believed.
    script(
        client,
        {
            (REMOTE, f"{FED_V1}/hierarchy/{q(remote_space)}"): {
                **answer,
                "room": remote_summary(remote_room),
            }
        },
    )
    status, page = await hierarchy(client, alice, root)
    assert (status, room_ids(page)) == (200, [root])


# --- the federation side -------------------------------------------------------------------------


async def fed_hierarchy(
    client: Client, remote: FakeServer, room_id: str, query: str = ""
) -> tuple[int, Any]:
    uri = f"{FED_V1}/hierarchy/{q(room_id)}{query}"
    headers = {"Authorization": remote.authorization(server(client), "GET", uri, None)}
    response = await client.get(URL(uri, encoded=True), headers=headers)
    return response.status, await response.json()


async def test_federation_hierarchy_serves_the_same_rooms(client: Client) -> None:
    remote = FakeServer(REMOTE)
    hs = client.app[HOMESERVER]
    await hs.keyring.store_keys(remote.key_rows(NOW_MS - 3_600_000, NOW_MS + 3_600_000))
    alice = await make_user(client, "alice")
    root = await create_room(client, alice, preset="public_chat", creation_content=SPACE)
    public = await create_room(client, alice, preset="public_chat", name="Public")
    private = await create_room(client, alice, preset="private_chat")
    restricted = await create_room(client, alice, preset="private_chat")
    await put_state(
        client,
        alice,
        restricted,
        "m.room.join_rules",
        "",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": root}]},
    )
    unknown = f"!elsewhere:{REMOTE}"
    await add_child(client, alice, root, public, order="1", suggested=True)
    await add_child(client, alice, root, private, order="2")
    await add_child(client, alice, root, restricted, order="3")
    status, _ = await put_state(
        client, alice, root, "m.space.child", unknown, {"via": [REMOTE], "order": "4"}
    )
    assert status == 200
    status, body = await fed_hierarchy(client, remote, root)
    assert status == 200, body
    assert [c["state_key"] for c in body["room"]["children_state"]] == [
        public,
        private,
        restricted,
        unknown,
    ]
    # Restricted rooms go to the asking server with their allowed rooms (it checks its user).
    assert [c["room_id"] for c in body["children"]] == [public, restricted]
    assert body["children"][1]["allowed_room_ids"] == [root]
    assert all("children_state" not in c for c in body["children"])
    assert body["inaccessible_children"] == [private]
    status, body = await fed_hierarchy(client, remote, root, "?suggested_only=true")
    assert [c["state_key"] for c in body["room"]["children_state"]] == [public]
    status, body = await fed_hierarchy(client, remote, root, "?suggested_only=maybe")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    for room_id in (private, unknown):
        status, body = await fed_hierarchy(client, remote, room_id)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    unsigned = await client.get(URL(f"{FED_V1}/hierarchy/{q(root)}", encoded=True))
    assert unsigned.status == 401
    assert orjson.loads(await unsigned.read())["errcode"] == "M_UNAUTHORIZED"
