"""POST /user_directory/search (Client-Server API, "User directory"; users.yaml),
through the real HTTP stack on both engines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    put_state,
    q,
)
from tests.api.search_support import MakeDbClient, make_db_client_fixture  # noqa: F401


async def find(
    client: Client, user: User, term: Any, limit: Any = None, *, status: int = 200
) -> Any:
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    got, payload = await call(client, "POST", "/user_directory/search", user, body)
    assert got == status, payload
    return payload


def user_ids(payload: dict[str, Any]) -> list[str]:
    return [result["user_id"] for result in payload["results"]]


async def set_name(client: Client, user: User, name: str) -> None:
    status, _ = await call(
        client, "PUT", f"/profile/{q(user.user_id)}/displayname", user, {"displayname": name}
    )
    assert status == 200


async def test_finds_room_mates_by_display_name_and_user_id(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob.builder")
    room_id = await create_room(client, alice, preset="private_chat")
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": bob.user_id}
    )
    assert status == 200
    # Invited only: no room shared yet.
    assert user_ids(await find(client, alice, "bob")) == []
    assert (await join(client, bob, room_id))[0] == 200
    await set_name(client, bob, "Robert Smith")
    found = await find(client, alice, "rob")
    assert found == {
        "limited": False,
        "results": [{"user_id": bob.user_id, "display_name": "Robert Smith"}],
    }
    # Word prefixes of the display name and of the user ID, any case.
    assert user_ids(await find(client, alice, "SMI")) == [bob.user_id]
    assert user_ids(await find(client, alice, "builder")) == [bob.user_id]
    assert user_ids(await find(client, alice, "robert smith")) == [bob.user_id]
    assert user_ids(await find(client, alice, "obert")) == []
    assert user_ids(await find(client, alice, "robert jones")) == []
    # The avatar follows the profile.
    status, _ = await call(
        client, "PUT", f"/profile/{q(bob.user_id)}/avatar_url", bob, {"avatar_url": "mxc://x/y"}
    )
    assert status == 200
    assert (await find(client, alice, "robert"))["results"] == [
        {"user_id": bob.user_id, "display_name": "Robert Smith", "avatar_url": "mxc://x/y"}
    ]


async def test_leaving_the_shared_room_hides_the_user(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="private_chat", invite=[bob.user_id])
    assert (await join(client, bob, room_id))[0] == 200
    assert user_ids(await find(client, alice, "bob")) == [bob.user_id]
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    assert user_ids(await find(client, alice, "bob")) == []


async def test_members_of_public_rooms_are_found_by_anyone(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="private_chat")
    # Carol shares nothing with alice: not found while the room is private.
    assert user_ids(await find(client, carol, "alice")) == []
    status, _ = await put_state(
        client, alice, room_id, "m.room.join_rules", "", {"join_rule": "public"}
    )
    assert status == 200
    assert user_ids(await find(client, carol, "alice")) == [alice.user_id]
    status, _ = await put_state(
        client, alice, room_id, "m.room.join_rules", "", {"join_rule": "invite"}
    )
    assert status == 200
    assert user_ids(await find(client, carol, "alice")) == []
    status, _ = await put_state(
        client,
        alice,
        room_id,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    assert status == 200
    assert user_ids(await find(client, carol, "alice")) == [alice.user_id]
    # Bob is in no room: nobody finds him (search_all_users is off).
    assert user_ids(await find(client, alice, "bob")) == []


async def test_search_all_users_finds_every_local_user(make_db_client: MakeDbClient) -> None:
    client = await make_db_client(user_directory={"search_all_users": True})
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    await set_name(client, bob, "Bob Ross")
    assert (await find(client, alice, "ross"))["results"] == [
        {"user_id": bob.user_id, "display_name": "Bob Ross"}
    ]
    # Registered, never changed the profile: found by the default name (the localpart).
    await make_user(client, "zed")
    assert (await find(client, alice, "zed"))["results"][0]["display_name"] == "zed"
    # Deactivated users are never found.
    await hs_of(client).accounts.deactivate(bob.user_id)
    assert user_ids(await find(client, alice, "ross")) == []


async def test_limit_and_limited_and_order(make_db_client: MakeDbClient) -> None:
    client = await make_db_client(user_directory={"search_all_users": True})
    alice = await make_user(client, "alice")
    users = [await make_user(client, f"sam{i}") for i in range(4)]
    await set_name(client, users[3], "Samantha")
    await set_name(client, users[2], "Zoe Sample")
    found = await find(client, alice, "sam", 3)
    assert found["limited"] is True
    # First word starting with the term first, then by user ID.
    assert user_ids(found) == [users[0].user_id, users[1].user_id, users[3].user_id]
    everything = await find(client, alice, "sam", 10)
    assert everything["limited"] is False
    assert user_ids(everything) == [u.user_id for u in (users[0], users[1], users[3], users[2])]
    assert await find(client, alice, "sam", 0) == {"limited": False, "results": []}
    huge = await find(client, alice, "sam", 2**62)
    assert len(huge["results"]) == 4


@pytest.mark.parametrize("term", ["", "   ", '"', "%", "_", "*", "-", ":", "@", "NEAR("])
async def test_terms_without_words_find_nobody(make_db_client: MakeDbClient, term: str) -> None:
    client = await make_db_client(user_directory={"search_all_users": True})
    alice = await make_user(client, "alice")
    await make_user(client, "a_b")
    assert await find(client, alice, term) == {"limited": False, "results": []}


async def test_like_wildcards_are_plain(make_db_client: MakeDbClient) -> None:
    client = await make_db_client(user_directory={"search_all_users": True})
    alice = await make_user(client, "alice")
    target = await make_user(client, "percy")
    await set_name(client, target, "100% Percy")
    assert user_ids(await find(client, alice, "100%")) == [target.user_id]
    assert user_ids(await find(client, alice, "1%0")) == []
    assert user_ids(await find(client, alice, "p_rcy")) == []


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"search_term": 3}, "M_BAD_JSON"),
        ({"search_term": None}, "M_MISSING_PARAM"),
        ({"search_term": "a", "limit": "5"}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": True}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": -1}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_bodies_are_400(
    make_db_client: MakeDbClient, body: dict[str, Any], errcode: str
) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    status, payload = await call(client, "POST", "/user_directory/search", alice, body)
    assert (status, payload["errcode"]) == (400, errcode)
    status, payload = await call(client, "POST", "/user_directory/search", None, body)
    assert (status, payload["errcode"]) == (401, "M_MISSING_TOKEN")
