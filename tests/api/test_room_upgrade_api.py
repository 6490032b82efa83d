"""POST /rooms/{roomId}/upgrade (Client-Server API, "Room Upgrades"; room_upgrades.yaml),
through the real HTTP stack, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.rooms_support import (
    ROOMS_CONFIG,
    V3,
    Client,
    User,
    call,
    create_room,
    join,
    local_id,
    make_user,
    put_state,
    q,
    send,
)
from tests.api.sync_support import sync

TRANSFERRED = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)


@pytest.fixture
async def setup(migrated_dsn: str, make_client: Any) -> tuple[Client, User, User, User]:
    client = await make_client({**ROOMS_CONFIG, "database": migrated_dsn})
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    return client, alice, bob, carol


async def state_map(client: Client, user: User, room_id: str) -> dict[tuple[str, str], Any]:
    status, events = await call(client, "GET", f"/rooms/{q(room_id)}/state", user)
    assert status == 200, events
    return {(e["type"], e["state_key"]): e for e in events}


async def upgrade(client: Client, user: User, room_id: str, body: Any) -> tuple[int, Any]:
    return await call(client, "POST", f"/rooms/{q(room_id)}/upgrade", user, body)


async def upgraded(client: Client, user: User, room_id: str, **body: Any) -> str:
    status, payload = await upgrade(client, user, room_id, body)
    assert status == 200, payload
    assert set(payload) == {"replacement_room"}
    replacement: str = payload["replacement_room"]
    return replacement


async def joined_rooms(client: Client, user: User) -> set[str]:
    status, payload = await call(client, "GET", "/joined_rooms", user)
    assert status == 200, payload
    return set(payload["joined_rooms"])


async def send_text(client: Client, user: User, room_id: str, text: str) -> tuple[int, Any]:
    return await send(client, user, room_id, {"msgtype": "m.text", "body": text}, text)


async def ban(client: Client, user: User, room_id: str, target: User, reason: str) -> None:
    status, payload = await call(
        client,
        "POST",
        f"/rooms/{q(room_id)}/ban",
        user,
        {"user_id": target.user_id, "reason": reason},
    )
    assert status == 200, payload


def _public_v10_room_body(server_name: str, alice: User, bob: User) -> dict[str, Any]:
    return {
        "room_version": "10",
        "preset": "public_chat",
        "name": "Lobby",
        "topic": "Everything",
        "power_level_content_override": {
            "users": {alice.user_id: 100, bob.user_id: 50},
            "events": {"m.room.tombstone": 100, "m.room.power_levels": 100, "org.example.x": 20},
        },
        "initial_state": [
            {"type": "m.room.avatar", "content": {"url": "mxc://example.org/avatar"}},
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {
                "type": "m.room.server_acl",
                "content": {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": False},
            },
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "org.example.custom", "content": {"stays": "behind"}},
        ],
    }


# --- state carried over ---------------------------------------------------------------------


async def test_upgrade_v10_to_v12_carries_state_and_restricts_old_room(setup: Any) -> None:
    client, alice, bob, carol = setup
    old = await create_room(client, alice, **_public_v10_room_body("", alice, bob))
    assert (await join(client, bob, old))[0] == 200
    dave = await make_user(client, "dave")
    for user in (carol, dave):
        assert (await join(client, user, old))[0] == 200
    await ban(client, alice, old, carol, "spam")
    status, sent = await send_text(client, alice, old, "last words")
    assert status == 200
    before = await state_map(client, alice, old)

    new = await upgraded(client, alice, old, new_version="12")

    after_new = await state_map(client, alice, new)
    create = after_new[("m.room.create", "")]
    assert create["sender"] == alice.user_id
    assert create["content"] == {
        "room_version": "12",
        "predecessor": {"room_id": old, "event_id": sent["event_id"]},
    }
    assert new == "!" + create["event_id"][1:]  # v12: the room ID is the create event's
    for event_type in TRANSFERRED:
        assert after_new[(event_type, "")]["content"] == before[(event_type, "")]["content"]
        assert after_new[(event_type, "")]["sender"] == alice.user_id
    # v12 (MSC4289): the upgrader is the creator, so not listed in users.
    expected_pl = dict(before[("m.room.power_levels", "")]["content"])
    expected_pl["users"] = {bob.user_id: 50}
    assert after_new[("m.room.power_levels", "")]["content"] == expected_pl
    assert ("org.example.custom", "") not in after_new
    assert after_new[("m.room.member", carol.user_id)]["content"] == {
        "membership": "ban",
        "reason": "spam",
    }
    members = {
        k[1]: e["content"]["membership"] for k, e in after_new.items() if k[0] == "m.room.member"
    }
    assert members == {alice.user_id: "join", carol.user_id: "ban"}

    after_old = await state_map(client, alice, old)
    tombstone = after_old[("m.room.tombstone", "")]
    assert tombstone["sender"] == alice.user_id
    assert tombstone["content"] == {"body": "This room has been replaced", "replacement_room": new}
    old_pl = dict(before[("m.room.power_levels", "")]["content"])
    old_pl.update(events_default=50, invite=50)
    assert after_old[("m.room.power_levels", "")]["content"] == old_pl

    # Only moderators (Bob, 50) may still speak in the old room; members follow the tombstone.
    status, payload = await send_text(client, dave, old, "still here?")
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert (await send_text(client, bob, old, "moderator here"))[0] == 200
    assert (await join(client, carol, new))[0] == 403
    for user in (bob, dave):
        assert (await join(client, user, new))[0] == 200
        assert (await send_text(client, user, new, f"moved {user.user_id}"))[0] == 200


async def test_upgrade_v12_to_v12_sets_exactly_the_requested_creators(setup: Any) -> None:
    client, alice, bob, carol = setup
    old = await create_room(
        client,
        alice,
        room_version="12",
        preset="public_chat",
        creation_content={"additional_creators": [bob.user_id]},
        power_level_content_override={"users": {carol.user_id: 100}},
    )
    for user in (bob, carol):
        assert (await join(client, user, old))[0] == 200
    # Carol is an admin but not a creator: v12's tombstone level (150) is above her.
    status, payload = await upgrade(client, carol, old, {"new_version": "12"})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")

    new = await upgraded(
        client, alice, old, new_version="12", additional_creators=[carol.user_id, alice.user_id]
    )
    state = await state_map(client, alice, new)
    create = state[("m.room.create", "")]
    assert create["sender"] == alice.user_id
    # Bob, an additional creator of the old room, is not carried over; Carol is
    # a creator now, so she leaves the users map.
    assert create["content"]["additional_creators"] == [carol.user_id]
    assert set(create["content"]) == {"room_version", "predecessor", "additional_creators"}
    pl = state[("m.room.power_levels", "")]["content"]
    assert pl["users"] == {}
    assert pl["events"]["m.room.tombstone"] == 150
    # Carol, a creator of the new room, may upgrade it in turn.
    assert (await join(client, carol, new))[0] == 200
    newer = await upgraded(client, carol, new, new_version="12")
    assert (await state_map(client, carol, newer))[("m.room.create", "")]["sender"] == carol.user_id


async def test_upgrade_to_v11_keeps_power_levels_and_lifts_the_upgrader_only_meanwhile(
    setup: Any,
) -> None:
    client, alice, bob, _ = setup
    # Bob may tombstone (50) but not set power levels or history visibility (100).
    old = await create_room(
        client,
        alice,
        room_version="9",
        preset="public_chat",
        power_level_content_override={
            "users": {alice.user_id: 100, bob.user_id: "50"},
            "events": {
                "m.room.tombstone": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
            },
        },
    )
    assert (await join(client, bob, old))[0] == 200
    before = await state_map(client, bob, old)

    new = await upgraded(client, bob, old, new_version="11")
    state = await state_map(client, bob, new)
    assert state[("m.room.create", "")]["content"] == {
        "room_version": "11",
        "predecessor": {
            "room_id": old,
            "event_id": before[("m.room.member", bob.user_id)]["event_id"],
        },
    }
    expected = dict(before[("m.room.power_levels", "")]["content"])
    expected["users"] = {alice.user_id: 100, bob.user_id: 50}  # v10+: integers only
    assert state[("m.room.power_levels", "")]["content"] == expected
    assert state[("m.room.history_visibility", "")]["sender"] == bob.user_id
    # Bob was lifted to 100 to send that, then set back: two power levels events.
    status, page = await call(client, "GET", f"/rooms/{q(new)}/messages?dir=f&limit=50", bob)
    assert status == 200, page
    levels = [e["content"]["users"] for e in page["chunk"] if e["type"] == "m.room.power_levels"]
    assert levels == [
        {alice.user_id: 100, bob.user_id: 100},
        {alice.user_id: 100, bob.user_id: 50},
    ]
    # Bob may not change power levels in the old room: it stays as it was (spec: "if possible").
    assert (await state_map(client, bob, old))[("m.room.power_levels", "")] == before[
        ("m.room.power_levels", "")
    ]


async def test_upgrade_to_v10_names_the_creator(setup: Any) -> None:
    client, alice, _, _ = setup
    old = await create_room(client, alice, room_version="11")
    new = await upgraded(client, alice, old, new_version="10", additional_creators=["ignored"])
    create = (await state_map(client, alice, new))[("m.room.create", "")]
    assert create["content"]["creator"] == alice.user_id
    assert create["content"]["room_version"] == "10"
    assert "additional_creators" not in create["content"]
    assert new.endswith(":" + create["room_id"].split(":", 1)[1])


async def test_upgrade_of_a_space_keeps_its_type_and_children(setup: Any) -> None:
    client, alice, _, _ = setup
    old = await create_room(client, alice, creation_content={"type": "m.space"})
    child = await create_room(client, alice)
    server = child.split(":", 1)[1] if ":" in child else "localhost"
    assert (await put_state(client, alice, old, "m.space.child", child, {"via": [server]}))[
        0
    ] == 200
    gone = "!gone:example.org"
    assert (await put_state(client, alice, old, "m.space.child", gone, {"via": ["x"]}))[0] == 200
    assert (await put_state(client, alice, old, "m.space.child", gone, {}))[0] == 200
    new = await upgraded(client, alice, old, new_version="12")
    state = await state_map(client, alice, new)
    assert state[("m.room.create", "")]["content"]["type"] == "m.space"
    assert state[("m.space.child", child)]["content"] == {"via": [server]}
    assert ("m.space.child", gone) not in state


# --- aliases --------------------------------------------------------------------------------


async def test_aliases_canonical_alias_and_directory_listing_move(setup: Any) -> None:
    client, alice, _, _ = setup
    lobby, other = local_id(client, "#lobby"), local_id(client, "#other")
    old = await create_room(client, alice, room_alias_name="lobby", visibility="public")
    status, _ = await call(client, "PUT", f"/directory/room/{q(other)}", alice, {"room_id": old})
    assert status == 200
    canonical = {"alias": lobby, "alt_aliases": [other]}
    assert (await put_state(client, alice, old, "m.room.canonical_alias", "", canonical))[0] == 200

    new = await upgraded(client, alice, old, new_version="12")

    for alias in (lobby, other):
        status, payload = await call(client, "GET", f"/directory/room/{q(alias)}")
        assert (status, payload["room_id"]) == (200, new)
    status, payload = await call(client, "GET", f"/rooms/{q(new)}/aliases", alice)
    assert (status, payload) == (200, {"aliases": sorted([lobby, other])})
    status, payload = await call(client, "GET", f"/rooms/{q(old)}/aliases", alice)
    assert (status, payload) == (200, {"aliases": []})
    assert (await state_map(client, alice, new))[("m.room.canonical_alias", "")][
        "content"
    ] == canonical
    assert (await state_map(client, alice, old))[("m.room.canonical_alias", "")]["content"] == {}
    for room_id, visibility in ((new, "public"), (old, "private")):
        status, payload = await call(client, "GET", f"/directory/list/room/{q(room_id)}")
        assert (status, payload) == (200, {"visibility": visibility})


# --- sync, idempotence ------------------------------------------------------------------------


async def test_members_see_the_tombstone_in_sync(setup: Any) -> None:
    client, alice, bob, _ = setup
    old = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, old))[0] == 200
    since = (await sync(client, bob))["next_batch"]
    new = await upgraded(client, alice, old, new_version="12")
    body = await sync(client, bob, since=since)
    timeline = body["rooms"]["join"][old]["timeline"]["events"]
    tombstones = [e for e in timeline if e["type"] == "m.room.tombstone"]
    assert [e["content"]["replacement_room"] for e in tombstones] == [new]
    assert new not in body["rooms"].get("join", {})


async def test_repeated_and_concurrent_upgrades_make_one_room(setup: Any) -> None:
    client, alice, _, _ = setup
    old = await create_room(client, alice, preset="public_chat")
    results = await asyncio.gather(
        *(upgrade(client, alice, old, {"new_version": "12"}) for _ in range(3))
    )
    assert [status for status, _ in results] == [200, 200, 200]
    replacements = {payload["replacement_room"] for _, payload in results}
    assert len(replacements) == 1
    assert await upgraded(client, alice, old, new_version="12") in replacements
    assert await joined_rooms(client, alice) == {old, *replacements}
    tombstones = await call(client, "GET", f"/rooms/{q(old)}/messages?dir=b&limit=50", alice)
    kinds = [e["type"] for e in tombstones[1]["chunk"]]
    assert kinds.count("m.room.tombstone") == 1


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"new_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"new_version": ""}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({}, 400, "M_BAD_JSON"),
        ({"new_version": 12}, 400, "M_BAD_JSON"),
        ({"new_version": None}, 400, "M_BAD_JSON"),
        ({"new_version": "12", "additional_creators": "@bob:x"}, 400, "M_BAD_JSON"),
        ({"new_version": "12", "additional_creators": [1]}, 400, "M_BAD_JSON"),
        ({"new_version": "12", "additional_creators": ["bob"]}, 400, "M_INVALID_PARAM"),
        ([], 400, "M_BAD_JSON"),
    ],
)
async def test_bad_bodies_change_nothing(setup: Any, body: Any, status: int, errcode: str) -> None:
    client, alice, _, _ = setup
    old = await create_room(client, alice)
    got_status, payload = await upgrade(client, alice, old, body)
    assert (got_status, payload["errcode"]) == (status, errcode)
    assert isinstance(payload["error"], str)
    assert await joined_rooms(client, alice) == {old}
    assert ("m.room.tombstone", "") not in await state_map(client, alice, old)


async def test_not_json(setup: Any) -> None:
    client, alice, _, _ = setup
    old = await create_room(client, alice)
    response = await client.post(
        f"{V3}/rooms/{q(old)}/upgrade", data=b"{not json", headers=alice.headers
    )
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_NOT_JSON"
    assert await joined_rooms(client, alice) == {old}


async def test_who_may_upgrade(setup: Any) -> None:
    client, alice, bob, carol = setup
    old = await create_room(client, alice, room_version="10", preset="public_chat")
    assert (await join(client, bob, old))[0] == 200
    # Bob is a member without power; Carol is not in the room.
    for user in (bob, carol):
        status, payload = await upgrade(client, user, old, {"new_version": "12"})
        assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await upgrade(client, alice, "!unknown:localhost", {"new_version": "12"})
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")
    status, payload = await upgrade(client, alice, "not-a-room", {"new_version": "12"})
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    status, payload = await call(
        client, "POST", f"/rooms/{q(old)}/upgrade", None, {"new_version": "12"}
    )
    assert (status, payload["errcode"]) == (401, "M_MISSING_TOKEN")
    # Nothing happened: no tombstone, no new room.
    assert ("m.room.tombstone", "") not in await state_map(client, alice, old)
    for user in (alice, bob, carol):
        assert await joined_rooms(client, user) == ({old} if user is not carol else set())


async def test_restricted_join_rule_and_its_allow_list_carry_over(setup: Any) -> None:
    client, alice, bob, _ = setup
    space = await create_room(
        client, alice, preset="public_chat", creation_content={"type": "m.space"}
    )
    join_rule = {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}],
    }
    old = await create_room(
        client,
        alice,
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "content": join_rule}],
    )
    new = await upgraded(client, alice, old, new_version="12")
    state = await state_map(client, alice, new)
    assert state[("m.room.join_rules", "")]["content"] == join_rule
    assert "type" not in state[("m.room.create", "")]["content"]
    # Members of the space may join the new room by the copied rule; others may not.
    status, payload = await join(client, bob, new)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert (await join(client, bob, space))[0] == 200
    assert (await join(client, bob, new))[0] == 200
    member = (await state_map(client, bob, new))[("m.room.member", bob.user_id)]
    assert member["content"]["join_authorised_via_users_server"] == alice.user_id


# --- personal settings follow the user ------------------------------------------------------


LOUD = ["notify", {"set_tweak": "sound", "value": "default"}]


async def test_joining_the_new_room_carries_tags_direct_and_push_rules_over(setup: Any) -> None:
    client, alice, bob, carol = setup
    old = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, old))[0] == 200
    user = q(bob.user_id)
    tags = {"tags": {"u.work": {"order": 0.5}}}
    direct = {alice.user_id: [old], carol.user_id: ["!elsewhere:example.org"]}
    mute = [{"kind": "event_match", "key": "room_id", "pattern": old}]
    for path, body in (
        (f"/user/{user}/rooms/{q(old)}/account_data/m.tag", tags),
        (f"/user/{user}/account_data/m.direct", direct),
        (f"/pushrules/global/room/{q(old)}", {"actions": LOUD}),
        (f"/pushrules/global/override/{q('mute ' + old)}", {"actions": [], "conditions": mute}),
    ):
        status, payload = await call(client, "PUT", path, bob, body)
        assert status == 200, (path, payload)
    status, _ = await call(
        client, "PUT", f"/pushrules/global/room/{q(old)}/enabled", bob, {"enabled": False}
    )
    assert status == 200

    new = await upgraded(client, alice, old, new_version="12")
    # Nothing moves before Bob joins the new room.
    status, _ = await call(client, "GET", f"/user/{user}/rooms/{q(new)}/account_data/m.tag", bob)
    assert status == 404
    assert (await join(client, bob, new))[0] == 200

    status, payload = await call(
        client, "GET", f"/user/{user}/rooms/{q(new)}/account_data/m.tag", bob
    )
    assert (status, payload) == (200, tags)
    status, payload = await call(client, "GET", f"/user/{user}/account_data/m.direct", bob)
    assert (status, payload) == (200, {**direct, alice.user_id: [old, new]})
    status, payload = await call(client, "GET", f"/pushrules/global/room/{q(new)}", bob)
    assert status == 200, payload
    assert (payload["actions"], payload["enabled"]) == (LOUD, False)
    status, payload = await call(
        client, "GET", f"/pushrules/global/override/{q('mute ' + new)}", bob
    )
    assert status == 200, payload
    assert payload["conditions"] == [{"kind": "event_match", "key": "room_id", "pattern": new}]
    # The old room's rules stay as they were.
    status, payload = await call(
        client, "GET", f"/pushrules/global/override/{q('mute ' + old)}", bob
    )
    assert (status, payload["conditions"]) == (200, mute)


@pytest.mark.parametrize("old_version", ["1", "5"])
async def test_upgrade_from_old_versions_makes_levels_integers(
    setup: Any, old_version: str
) -> None:
    client, alice, bob, _ = setup
    old = await create_room(
        client,
        alice,
        room_version=old_version,
        preset="public_chat",
        name="Ancient",
        power_level_content_override={
            "users": {alice.user_id: "100", bob.user_id: " +40 "},
            "events_default": "0",
            "events": {"m.room.name": "40"},
        },
    )
    assert (await join(client, bob, old))[0] == 200
    new = await upgraded(client, alice, old, new_version="12")
    state = await state_map(client, alice, new)
    pl = state[("m.room.power_levels", "")]["content"]
    assert pl["users"] == {bob.user_id: 40}
    assert (pl["events_default"], pl["events"]["m.room.name"]) == (0, 40)
    assert state[("m.room.name", "")]["content"] == {"name": "Ancient"}
    # Bob's power carried over: he may rename the new room.
    assert (await join(client, bob, new))[0] == 200
    assert (await put_state(client, bob, new, "m.room.name", "", {"name": "Renamed"}))[0] == 200
