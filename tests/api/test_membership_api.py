"""Membership flows, aliases, directory visibility, profiles and history visibility."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import MakeClient
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    Client,
    User,
    call,
    create_room,
    get_state,
    hs_of,
    join,
    local_id,
    make_user,
    put_state,
    q,
    send,
)

pytestmark = pytest.mark.port_server_name


@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, User, User, User]:
    client = await make_client(ROOMS_CONFIG)
    return (
        client,
        await make_user(client, "alice"),
        await make_user(client, "bob"),
        await make_user(client, "carol"),
    )


async def _post(client: Client, user: User | None, path: str, body: Any = None) -> tuple[int, Any]:
    return await call(client, "POST", path, user, {} if body is None else body)


async def _membership(client: Client, room_id: str, user: User) -> str | None:
    return await hs_of(client).rooms.get_membership(room_id, user.user_id)


async def test_invite_join_leave_forget(setup: Any) -> None:
    client, alice, bob, carol = setup
    room_id = await create_room(client, alice)
    status, payload = await join(client, bob, room_id)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert await _post(client, alice, f"/rooms/{q(room_id)}/invite", {"user_id": bob.user_id}) == (
        200,
        {},
    )
    assert await _membership(client, room_id, bob) == "invite"
    # Only joined users may invite.
    status, payload = await _post(
        client, carol, f"/rooms/{q(room_id)}/invite", {"user_id": carol.user_id}
    )
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert await join(client, bob, room_id) == (200, {"room_id": room_id})
    assert await join(client, bob, room_id) == (200, {"room_id": room_id})  # no-op
    assert await call(client, "GET", "/joined_rooms", bob) == (200, {"joined_rooms": [room_id]})
    status, payload = await _post(client, bob, f"/rooms/{q(room_id)}/forget")
    assert (status, payload["errcode"]) == (400, "M_UNKNOWN")
    assert await _post(client, bob, f"/rooms/{q(room_id)}/leave", {"reason": "bye"}) == (200, {})
    assert await _membership(client, room_id, bob) == "leave"
    assert await call(client, "GET", "/joined_rooms", bob) == (200, {"joined_rooms": []})
    assert await _post(client, bob, f"/rooms/{q(room_id)}/forget") == (200, {})
    membership = await hs_of(client).rooms.store.get_membership(room_id, bob.user_id)
    assert membership is not None and membership.forgotten
    status, payload = await _post(client, carol, f"/rooms/{q(room_id)}/leave")
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")


async def test_invite_errors(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice)
    path = f"/rooms/{q(room_id)}/invite"
    for body, status, errcode in (
        ({}, 400, "M_MISSING_PARAM"),
        ({"user_id": 5}, 400, "M_BAD_JSON"),
        ({"user_id": "nope"}, 400, "M_INVALID_PARAM"),
        ({"user_id": local_id(client, "@ghost")}, 404, "M_NOT_FOUND"),
        # Users of other servers: tests/api/test_federation_invites.py.
        (
            {"medium": "email", "address": "a@b.c", "id_server": "x", "id_access_token": "t"},
            403,
            "M_FORBIDDEN",
        ),
    ):
        got, payload = await _post(client, alice, path, body)
        assert (got, payload["errcode"]) == (status, errcode), body
    response = await client.post(f"/_matrix/client/v3{path}", data=b"{", headers=alice.headers)
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
    got, payload = await _post(client, None, path, {"user_id": bob.user_id})
    assert (got, payload["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_join_by_alias_and_unknown_rooms(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat", room_alias_name="lobby")
    status, body = await _post(client, bob, "/join/" + q(local_id(client, "#lobby")))
    assert (status, body) == (200, {"room_id": room_id})
    # An empty body is accepted too.
    response = await client.post(f"/_matrix/client/v3/join/{q(room_id)}", headers=bob.headers)
    assert response.status == 200
    for target, status, errcode in (
        (local_id(client, "#missing"), 404, "M_NOT_FOUND"),
        ("#far:remote.example", 404, "M_NOT_FOUND"),
        ("!unknown:remote.example", 404, "M_NOT_FOUND"),
        ("not-a-room", 400, "M_INVALID_PARAM"),
    ):
        got, payload = await _post(client, bob, "/join/" + q(target))
        assert (got, payload["errcode"]) == (status, errcode), target
    # Rooms and aliases of other servers are joined over federation: here the
    # server cannot be reached, which the error says.
    assert (
        "remote.example"
        in (await _post(client, bob, "/join/" + q("!x:remote.example")))[1]["error"]
    )
    _, payload = await _post(client, bob, "/join/" + q("#far:remote.example"))
    assert "could not be resolved" in payload["error"]


async def test_kick_ban_unban_power_boundaries(setup: Any) -> None:
    client, alice, bob, carol = setup
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await join(client, carol, room_id)
    base = f"/rooms/{q(room_id)}"
    # Bob (power 0) can neither kick nor ban.
    for action in ("kick", "ban"):
        status, payload = await _post(client, bob, f"{base}/{action}", {"user_id": carol.user_id})
        assert (status, payload["errcode"]) == (403, "M_FORBIDDEN"), action
    # Make bob a moderator (50): he may kick carol (0) but not alice (creator).
    _, power = await get_state(client, alice, room_id, "m.room.power_levels")
    power["users"] = {bob.user_id: 50}
    assert (await put_state(client, alice, room_id, "m.room.power_levels", "", power))[0] == 200
    assert await _post(client, bob, f"{base}/kick", {"user_id": carol.user_id, "reason": "r"}) == (
        200,
        {},
    )
    assert await _membership(client, room_id, carol) == "leave"
    status, payload = await _post(client, bob, f"{base}/kick", {"user_id": alice.user_id})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert await _post(client, bob, f"{base}/ban", {"user_id": carol.user_id}) == (200, {})
    status, payload = await join(client, carol, room_id)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    # A moderator cannot give himself more power than he has.
    power["users"] = {bob.user_id: 100}
    status, payload = await put_state(client, bob, room_id, "m.room.power_levels", "", power)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await _post(client, bob, f"{base}/unban", {"user_id": alice.user_id})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert await _post(client, alice, f"{base}/unban", {"user_id": carol.user_id}) == (200, {})
    assert await _membership(client, room_id, carol) == "leave"
    assert (await join(client, carol, room_id))[0] == 200
    status, payload = await _post(client, alice, f"{base}/ban", {})
    assert (status, payload["errcode"]) == (400, "M_MISSING_PARAM")


async def test_knock_flow(setup: Any) -> None:
    client, alice, bob, carol = setup
    room_id = await create_room(client, alice, room_alias_name="knocky")
    status, payload = await _post(client, bob, "/knock/" + q(room_id), {"reason": "let me in"})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")  # join rule is invite
    await put_state(client, alice, room_id, "m.room.join_rules", "", {"join_rule": "knock"})
    assert await _post(
        client, bob, "/knock/" + q(local_id(client, "#knocky")), {"reason": "let me in"}
    ) == (
        200,
        {"room_id": room_id},
    )
    assert await _membership(client, room_id, bob) == "knock"
    assert await _post(client, alice, f"/rooms/{q(room_id)}/invite", {"user_id": bob.user_id}) == (
        200,
        {},
    )
    assert (await join(client, bob, room_id))[0] == 200
    status, payload = await _post(client, carol, "/knock/" + q(local_id(client, "#nope")))
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")


async def test_aliases_directory(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat")
    alias_path = "/directory/room/" + q(local_id(client, "#hello"))
    assert await call(client, "PUT", alias_path, bob, {"room_id": room_id}) == (200, {})
    status, payload = await call(client, "PUT", alias_path, alice, {"room_id": room_id})
    assert (status, payload["errcode"]) == (409, "M_UNKNOWN")
    assert await call(client, "GET", alias_path) == (
        200,
        {"room_id": room_id, "servers": [hs_of(client).server_name]},
    )
    assert await call(client, "GET", f"/rooms/{q(room_id)}/aliases", alice) == (
        200,
        {"aliases": [local_id(client, "#hello")]},
    )
    status, payload = await call(client, "GET", f"/rooms/{q(room_id)}/aliases", bob)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")  # bob is not in the room
    for path, body, status, errcode in (
        (
            "/directory/room/" + q(local_id(client, "#x")),
            {"room_id": local_id(client, "!missing")},
            404,
            "M_NOT_FOUND",
        ),
        ("/directory/room/" + q("#x:other.org"), {"room_id": room_id}, 400, "M_INVALID_PARAM"),
        ("/directory/room/" + q("nope"), {"room_id": room_id}, 400, "M_INVALID_PARAM"),
        ("/directory/room/" + q(local_id(client, "#x")), {"room_id": 1}, 400, "M_BAD_JSON"),
    ):
        got, payload = await call(client, "PUT", path, alice, body)
        assert (got, payload["errcode"]) == (status, errcode), path
    # Delete: not bob's room to administer, but bob created the alias.
    second_path = "/directory/room/" + q(local_id(client, "#second"))
    await call(client, "PUT", second_path, alice, {"room_id": room_id})
    status, payload = await call(client, "DELETE", second_path, bob)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert await call(client, "DELETE", alias_path, bob) == (200, {})
    assert await call(client, "DELETE", second_path, alice) == (200, {})
    status, payload = await call(client, "GET", alias_path)
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")
    status, payload = await call(client, "DELETE", alias_path, alice)
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")


async def test_directory_visibility(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice)
    path = f"/directory/list/room/{q(room_id)}"
    assert await call(client, "PUT", path, alice, {"visibility": "public"}) == (200, {})
    assert await call(client, "GET", path) == (200, {"visibility": "public"})
    status, payload = await call(client, "PUT", path, bob, {"visibility": "private"})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await call(client, "PUT", path, alice, {"visibility": "secret"})
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    status, payload = await call(
        client, "GET", "/directory/list/room/" + q(local_id(client, "!no"))
    )
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")


async def test_profiles_and_propagation(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat")
    other_room = await create_room(client, alice)
    assert await call(client, "GET", f"/profile/{q(alice.user_id)}") == (
        200,
        {"displayname": "alice"},
    )
    assert await call(
        client,
        "PUT",
        f"/profile/{q(alice.user_id)}/displayname",
        alice,
        {"displayname": "Alice A."},
    ) == (200, {})
    assert await call(
        client, "PUT", f"/profile/{q(alice.user_id)}/avatar_url", alice, {"avatar_url": "mxc://x/y"}
    ) == (200, {})
    assert await call(client, "GET", f"/profile/{q(alice.user_id)}/displayname") == (
        200,
        {"displayname": "Alice A."},
    )
    for room in (room_id, other_room):
        status, content = await get_state(client, alice, room, "m.room.member", alice.user_id)
        assert (status, content) == (
            200,
            {"membership": "join", "displayname": "Alice A.", "avatar_url": "mxc://x/y"},
        )
    # Custom fields, deletion, errors.
    assert await call(
        client, "PUT", f"/profile/{q(alice.user_id)}/m.tz", alice, {"m.tz": "UTC"}
    ) == (200, {})
    assert await call(client, "DELETE", f"/profile/{q(alice.user_id)}/displayname", alice) == (
        200,
        {},
    )
    assert await call(client, "GET", f"/profile/{q(alice.user_id)}") == (
        200,
        {"avatar_url": "mxc://x/y", "m.tz": "UTC"},
    )
    _, content = await get_state(client, alice, room_id, "m.room.member", alice.user_id)
    assert content == {"membership": "join", "avatar_url": "mxc://x/y"}
    for method, path, user, body, status, errcode in (
        (
            "PUT",
            f"/profile/{q(bob.user_id)}/displayname",
            alice,
            {"displayname": "x"},
            403,
            "M_FORBIDDEN",
        ),
        (
            "PUT",
            f"/profile/{q(alice.user_id)}/displayname",
            alice,
            {"other": "x"},
            400,
            "M_MISSING_PARAM",
        ),
        (
            "PUT",
            f"/profile/{q(alice.user_id)}/displayname",
            alice,
            {"displayname": 3},
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            f"/profile/{q(alice.user_id)}/" + "k" * 300,
            alice,
            {"k" * 300: 1},
            400,
            "M_KEY_TOO_LARGE",
        ),
        (
            "PUT",
            f"/profile/{q(alice.user_id)}/com.example.big",
            alice,
            {"com.example.big": "x" * 70000},
            400,
            "M_PROFILE_TOO_LARGE",
        ),
        ("GET", "/profile/" + q(local_id(client, "@ghost")), None, None, 404, "M_NOT_FOUND"),
        ("GET", f"/profile/{q(alice.user_id)}/displayname", None, None, 404, "M_NOT_FOUND"),
        ("DELETE", f"/profile/{q(alice.user_id)}/m.tz", bob, None, 403, "M_FORBIDDEN"),
    ):
        got, payload = await call(client, method, path, user, body)
        assert (got, payload["errcode"]) == (status, errcode), path


async def test_history_visibility(setup: Any) -> None:
    client, alice, bob, carol = setup
    room_id = await create_room(client, alice, preset="public_chat")
    _, shared_msg = await send(client, alice, room_id, {"body": "shared"}, "1")
    await put_state(
        client, alice, room_id, "m.room.history_visibility", "", {"history_visibility": "joined"}
    )
    _, joined_msg = await send(client, alice, room_id, {"body": "joined only"}, "2")
    await put_state(
        client, alice, room_id, "m.room.history_visibility", "", {"history_visibility": "invited"}
    )
    await call(client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": bob.user_id})
    _, invited_msg = await send(client, alice, room_id, {"body": "after invite"}, "3")
    await join(client, bob, room_id)

    async def visible(user: User, event_id: str) -> bool:
        status, _ = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(event_id)}", user)
        return status == 200

    assert await visible(bob, shared_msg["event_id"])  # shared, and bob joined later
    assert not await visible(bob, joined_msg["event_id"])
    assert await visible(bob, invited_msg["event_id"])  # invited, and bob was invited
    assert not await visible(carol, shared_msg["event_id"])  # carol never joined
    # After leaving: nothing sent later.
    await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {})
    _, after_leave = await send(client, alice, room_id, {"body": "later"}, "4")
    assert not await visible(bob, after_leave["event_id"])
    assert await visible(bob, invited_msg["event_id"])
    # world_readable: anyone may read events sent while it holds, and the state.
    await put_state(
        client,
        alice,
        room_id,
        "m.room.history_visibility",
        "",
        {"history_visibility": "world_readable"},
    )
    _, public_msg = await send(client, alice, room_id, {"body": "public"}, "5")
    assert await visible(carol, public_msg["event_id"])
    assert not await visible(carol, joined_msg["event_id"])
    assert (await call(client, "GET", f"/rooms/{q(room_id)}/state", carol))[0] == 200


async def test_room_flow_on_both_engines(migrated_dsn: str, make_client: MakeClient) -> None:
    """The API over SQLite and PostgreSQL: create, join, send, redact, read."""
    client = await make_client({**ROOMS_CONFIG, "database": migrated_dsn})
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(
        client, alice, preset="public_chat", room_alias_name="both", name="N"
    )
    assert (await call(client, "POST", "/join/" + q(local_id(client, "#both")), bob, {}))[0] == 200
    _, sent = await send(client, bob, room_id, {"body": "hi"}, "t1")
    assert await send(client, bob, room_id, {"body": "hi"}, "t1") == (200, sent)
    redact_path = f"/rooms/{q(room_id)}/redact/{q(sent['event_id'])}/r1"
    assert (await call(client, "PUT", redact_path, alice, {}))[0] == 200
    _, event = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(sent['event_id'])}", bob)
    assert event["content"] == {} and "redacted_because" in event["unsigned"]
    _, members = await call(client, "GET", f"/rooms/{q(room_id)}/joined_members", bob)
    assert set(members["joined"]) == {alice.user_id, bob.user_id}
    assert await get_state(client, bob, room_id, "m.room.name") == (200, {"name": "N"})


async def test_deactivated_user_leaves_joined_and_invited_rooms(setup: Any) -> None:
    client, alice, bob, _carol = setup
    joined = await create_room(client, alice, preset="public_chat")
    invited = await create_room(client, alice, preset="private_chat")
    status, _ = await call(client, "POST", f"/rooms/{q(joined)}/join", bob, {})
    assert status == 200
    status, _ = await call(
        client, "POST", f"/rooms/{q(invited)}/invite", alice, {"user_id": bob.user_id}
    )
    assert status == 200
    hs = hs_of(client)
    await hs.accounts.deactivate(bob.user_id)
    assert await hs.rooms.get_membership(joined, bob.user_id) == "leave"
    assert await hs.rooms.get_membership(invited, bob.user_id) == "leave"
    assert await hs.rooms.joined_room_ids(bob.user_id) == []
