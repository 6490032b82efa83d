"""createRoom, send, state, redact, event, members: through the real HTTP stack."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import NOW_MS, MakeClient
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    THIS_SERVER,
    Client,
    User,
    call,
    create_room,
    get_state,
    hs_of,
    join,
    local_id,
    login_again,
    make_user,
    on_this_server,
    put_state,
    q,
    send,
)

pytestmark = pytest.mark.port_server_name

@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, User, User, User]:
    client = await make_client(ROOMS_CONFIG)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    return client, alice, bob, carol


async def _state_map(client: Client, user: User, room_id: str) -> dict[tuple[str, str], Any]:
    status, events = await call(client, "GET", f"/rooms/{q(room_id)}/state", user)
    assert status == 200, events
    return {(e["type"], e["state_key"]): e for e in events}


# --- createRoom ---------------------------------------------------------------------------


async def test_create_room_private_chat_default_state(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, invite=[bob.user_id], is_direct=True)
    assert room_id.startswith("!") and ":" not in room_id  # v12: !<create event hash>
    state = await _state_map(client, alice, room_id)
    create = state[("m.room.create", "")]
    assert create["event_id"] == "$" + room_id[1:]
    assert create["content"] == {"room_version": "12"}
    assert "room_id" in create
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "shared"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    power = state[("m.room.power_levels", "")]["content"]
    assert power["users"] == {}  # v12: the creator has infinite power, unlisted (MSC4289)
    assert power["events"]["m.room.tombstone"] == 150 > power["state_default"]
    invite = state[("m.room.member", bob.user_id)]
    assert invite["content"] == {"membership": "invite", "displayname": "bob", "is_direct": True}
    assert state[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    status, body = await call(client, "GET", f"/directory/list/room/{q(room_id)}")
    assert (status, body) == (200, {"visibility": "private"})


async def test_identical_rooms_created_in_the_same_millisecond_get_distinct_ids(
    setup: Any,
) -> None:
    """A v12 room ID is the create event's hash; the test clock stands still, so
    every createRoom below happens in the same millisecond with the same body."""
    client, alice, _, _ = setup
    room_ids = [await create_room(client, alice) for _ in range(25)]
    assert len(set(room_ids)) == 25
    status, body = await call(client, "GET", "/joined_rooms", alice)
    assert status == 200 and sorted(body["joined_rooms"]) == sorted(room_ids)
    timestamps = []
    for room_id in room_ids:
        state = await _state_map(client, alice, room_id)
        timestamps.append(state[("m.room.create", "")]["origin_server_ts"])
    assert timestamps == sorted(timestamps) and timestamps[0] == NOW_MS


async def test_create_room_event_order_follows_the_spec(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        visibility="public",
        room_alias_name="order",
        name="Name",
        topic="Topic",
        invite=[bob.user_id],
        initial_state=[{"type": "m.room.avatar", "content": {"url": "mxc://x/y"}}],
    )
    rooms = hs_of(client).rooms
    end = await rooms.events.current_position()
    events = await rooms.events.room_events_in_stream_range(room_id, 0, end, 100)
    assert [(e.event.type, e.event.state_key) for e in events] == [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.avatar", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob.user_id),
    ]
    state = await _state_map(client, alice, room_id)
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": local_id(client, "#order")}
    assert state[("m.room.topic", "")]["content"]["m.topic"] == [
        {"body": "Topic", "mimetype": "text/plain"}
    ]
    assert await call(client, "GET", f"/directory/list/room/{q(room_id)}") == (
        200,
        {"visibility": "public"},
    )
    assert await call(client, "GET", "/directory/room/" + q(local_id(client, "#order"))) == (
        200,
        {"room_id": room_id, "servers": [hs_of(client).server_name]},
    )


async def test_create_room_trusted_private_chat_and_overrides(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(
        client,
        alice,
        preset="trusted_private_chat",
        invite=[bob.user_id],
        power_level_content_override={"events_default": 10},
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
        creation_content={"m.federate": False},
    )
    state = await _state_map(client, alice, room_id)
    create = state[("m.room.create", "")]["content"]
    assert create == {
        "room_version": "12",
        "m.federate": False,
        "additional_creators": [bob.user_id],
    }
    assert state[("m.room.power_levels", "")]["content"]["events_default"] == 10
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "joined"}


async def test_create_room_older_version_lists_creator_in_power_levels(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(
        client, alice, room_version="10", preset="trusted_private_chat", invite=[bob.user_id]
    )
    assert room_id.endswith(":" + hs_of(client).server_name)
    state = await _state_map(client, alice, room_id)
    assert state[("m.room.create", "")]["content"] == {
        "room_version": "10",
        "creator": alice.user_id,
    }
    assert state[("m.room.power_levels", "")]["content"]["users"] == {
        alice.user_id: 100,
        bob.user_id: 100,
    }


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"room_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": 12}, 400, "M_BAD_JSON"),
        ({"preset": "nope"}, 400, "M_INVALID_PARAM"),
        ({"visibility": "hidden"}, 400, "M_INVALID_PARAM"),
        ({"name": 5}, 400, "M_BAD_JSON"),
        ({"invite": ["not-a-user"]}, 400, "M_INVALID_PARAM"),
        ({"invite": [f"@nobody:{THIS_SERVER}"]}, 404, "M_NOT_FOUND"),
        ({"room_alias_name": "bad alias"}, 400, "M_INVALID_PARAM"),
        ({"initial_state": [{"type": "m.room.name"}]}, 400, "M_BAD_JSON"),
        ({"creation_content": {"additional_creators": ["x"]}}, 400, "M_BAD_JSON"),
        (
            {"power_level_content_override": {"users": {f"@alice:{THIS_SERVER}": 100}}},
            400,
            "M_INVALID_ROOM_STATE",
        ),
        ({"invite_3pid": [{"medium": "email"}]}, 400, "M_INVALID_PARAM"),
    ],
)
async def test_create_room_rejects_bad_requests(
    setup: Any, body: dict[str, Any], status: int, errcode: str
) -> None:
    client, alice, _, _ = setup
    body = on_this_server(client, body)
    got_status, payload = await call(client, "POST", "/createRoom", alice, body)
    assert (got_status, payload["errcode"]) == (status, errcode), payload
    assert await hs_of(client).rooms.joined_room_ids(alice.user_id) == []


async def test_create_room_alias_in_use_and_auth(setup: Any) -> None:
    client, alice, bob, _ = setup
    await create_room(client, alice, room_alias_name="taken")
    status, payload = await call(client, "POST", "/createRoom", bob, {"room_alias_name": "taken"})
    assert (status, payload["errcode"]) == (400, "M_ROOM_IN_USE")
    status, payload = await call(client, "POST", "/createRoom", None, {})
    assert (status, payload["errcode"]) == (401, "M_MISSING_TOKEN")
    response = await client.post(
        "/_matrix/client/v3/createRoom", data=b"{nope", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")


# --- send, idempotency, size ----------------------------------------------------------------


async def test_send_is_idempotent_per_device_and_txn(setup: Any, make_client: MakeClient) -> None:
    client, alice, _, _ = setup
    room_id = await create_room(client, alice)
    first = await send(client, alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
    again = await send(client, alice, room_id, {"msgtype": "m.text", "body": "other"}, "t1")
    assert first[0] == 200 and first == again
    other_device = await login_again(client, alice, "PHONE")
    third = await send(client, other_device, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
    assert third[0] == 200 and third[1]["event_id"] != first[1]["event_id"]
    # transaction_id only for the sending device
    path = f"/rooms/{q(room_id)}/event/{q(first[1]['event_id'])}"
    _, event = await call(client, "GET", path, alice)
    assert event["unsigned"]["transaction_id"] == "t1"
    assert event["content"] == {"msgtype": "m.text", "body": "hi"}
    assert event["unsigned"]["age"] == 0 and event["origin_server_ts"] == NOW_MS
    _, seen_by_phone = await call(client, "GET", path, other_device)
    assert "transaction_id" not in seen_by_phone["unsigned"]


async def test_a_retried_transaction_is_not_rate_limited(make_client: MakeClient) -> None:
    # Client-Server API, "Transaction identifiers": a retry answers the first
    # request's event ID; only a new transaction counts as a new message.
    limited = {"ratelimit": {"enabled": True, "message": {"per_second": 0.001, "burst": 2}}}
    client = await make_client({**ROOMS_CONFIG, **limited})
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    status, sent = await send(client, alice, room_id, {"body": "one"}, "t1")
    assert status == 200
    target = sent["event_id"]
    redact_path = f"/rooms/{q(room_id)}/redact/{q(target)}/r1"
    status, redaction = await call(client, "PUT", redact_path, alice, {})
    assert status == 200 and redaction["event_id"] != target
    # The burst is spent: retries still answer, new transactions are limited.
    assert await send(client, alice, room_id, {"body": "one"}, "t1") == (200, sent)
    assert await call(client, "PUT", redact_path, alice, {}) == (200, redaction)
    status, payload = await send(client, alice, room_id, {"body": "two"}, "t2")
    assert (status, payload["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    status, payload = await call(client, "PUT", redact_path[: -len("r1")] + "r2", alice, {})
    assert (status, payload["errcode"]) == (429, "M_LIMIT_EXCEEDED")


async def test_send_rejects_bad_input_and_large_events(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice)
    response = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t",
        data=b"[",
        headers=alice.headers,
    )
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
    status, payload = await call(
        client, "PUT", f"/rooms/{q(room_id)}/send/m.room.message/t2", alice, [1]
    )
    assert (status, payload["errcode"]) == (400, "M_BAD_JSON")
    status, payload = await send(client, alice, room_id, {"body": "x" * 70_000}, "big")
    assert (status, payload["errcode"]) == (413, "M_TOO_LARGE")
    status, payload = await send(client, alice, room_id, {"n": 1.5}, "float")
    assert (status, payload["errcode"]) == (400, "M_BAD_JSON")
    status, payload = await send(client, bob, room_id, {"body": "x"}, "nope")
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await send(client, alice, local_id(client, "!unknown"), {"body": "x"}, "t3")
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")
    status, payload = await send(client, alice, "not-a-room", {"body": "x"}, "t4")
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")


async def test_send_is_rate_limited(make_client: MakeClient) -> None:
    client = await make_client(
        {**ROOMS_CONFIG, "ratelimit": {"message": {"per_second": 0.001, "burst": 2}}}
    )
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    assert (await send(client, alice, room_id, {"body": "1"}, "a"))[0] == 200
    assert (await send(client, alice, room_id, {"body": "2"}, "b"))[0] == 200
    status, payload = await send(client, alice, room_id, {"body": "3"}, "c")
    assert (status, payload["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    # A retried transaction is answered from the dedup table, not rate limited.
    assert (await send(client, alice, room_id, {"body": "1"}, "a"))[0] == 200


# --- state ----------------------------------------------------------------------------------


async def test_state_put_get_and_power_levels(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    status, body = await put_state(client, alice, room_id, "m.room.name", "", {"name": "Room"})
    assert status == 200 and body["event_id"].startswith("$")
    # Setting the same content again returns the same event.
    assert await put_state(client, alice, room_id, "m.room.name", "", {"name": "Room"}) == (
        200,
        body,
    )
    assert await get_state(client, bob, room_id, "m.room.name") == (200, {"name": "Room"})
    # Without the trailing state key.
    status, event = await call(
        client, "GET", f"/rooms/{q(room_id)}/state/m.room.name?format=event", bob
    )
    assert status == 200 and event["event_id"] == body["event_id"] and event["state_key"] == ""
    status, payload = await put_state(client, bob, room_id, "m.room.name", "", {"name": "Bob's"})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    assert "power level" in payload["error"]
    status, payload = await get_state(client, bob, room_id, "m.room.nothing")
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")
    status, payload = await call(
        client, "GET", f"/rooms/{q(room_id)}/state/m.room.name?format=x", bob
    )
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    # State keys with slashes and the "state_key starts with @" rule.
    assert (await put_state(client, alice, room_id, "org.example", "a/b", {"v": 1}))[0] == 200
    assert await get_state(client, bob, room_id, "org.example", "a/b") == (200, {"v": 1})
    status, payload = await put_state(client, alice, room_id, "org.example", bob.user_id, {})
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    # prev_content / replaces_state on a replacing state event
    _, second = await put_state(client, alice, room_id, "m.room.name", "", {"name": "Second"})
    _, event = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(second['event_id'])}", bob)
    assert event["unsigned"]["replaces_state"] == body["event_id"]
    assert event["unsigned"]["prev_content"] == {"name": "Room"}


async def test_state_of_a_room_one_is_not_in_is_forbidden(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="private_chat", name="Secret")
    status, payload = await call(client, "GET", f"/rooms/{q(room_id)}/state", bob)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await get_state(client, bob, room_id, "m.room.name")
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await call(client, "GET", f"/rooms/{q(room_id)}/members", bob)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    status, payload = await call(client, "GET", "/rooms/" + q(local_id(client, "!nope")) + "/state", bob)
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")


async def test_state_after_leaving_is_the_state_at_the_leave(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat", name="Before")
    await join(client, bob, room_id)
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    await put_state(client, alice, room_id, "m.room.name", "", {"name": "After"})
    assert await get_state(client, bob, room_id, "m.room.name") == (200, {"name": "Before"})
    assert await get_state(client, alice, room_id, "m.room.name") == (200, {"name": "After"})


async def test_canonical_alias_must_point_to_the_room(setup: Any) -> None:
    client, alice, _, _ = setup
    room_id = await create_room(client, alice, room_alias_name="mine")
    other = await create_room(client, alice, room_alias_name="other")
    status, payload = await put_state(
        client, alice, room_id, "m.room.canonical_alias", "", {"alias": local_id(client, "#other")}
    )
    assert (status, payload["errcode"]) == (400, "M_BAD_ALIAS")
    status, payload = await put_state(
        client,
        alice,
        room_id,
        "m.room.canonical_alias",
        "",
        {"alt_aliases": [local_id(client, "#missing")]},
    )
    assert (status, payload["errcode"]) == (400, "M_BAD_ALIAS")
    status, payload = await put_state(
        client, alice, room_id, "m.room.canonical_alias", "", {"alias": "bad"}
    )
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    status, _ = await put_state(
        client,
        alice,
        room_id,
        "m.room.canonical_alias",
        "",
        {"alias": local_id(client, "#mine"), "alt_aliases": []},
    )
    assert status == 200
    assert other != room_id


# --- redaction and events -------------------------------------------------------------------


async def test_redaction_is_served_redacted(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    _, sent = await send(client, bob, room_id, {"msgtype": "m.text", "body": "oops"}, "m1")
    target = sent["event_id"]
    path = f"/rooms/{q(room_id)}/redact/{q(target)}/r1"
    status, redaction = await call(client, "PUT", path, bob, {"reason": "typo"})
    assert status == 200
    assert await call(client, "PUT", path, bob, {"reason": "typo"}) == (200, redaction)
    status, event = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(target)}", alice)
    assert status == 200 and event["content"] == {}
    because = event["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction["event_id"]
    assert because["content"] == {"reason": "typo", "redacts": target}
    assert because["redacts"] == target
    _, redaction_event = await call(
        client, "GET", f"/rooms/{q(room_id)}/event/{q(redaction['event_id'])}", alice
    )
    assert redaction_event["content"]["redacts"] == target


async def test_redaction_permissions_and_errors(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    _, by_alice = await send(client, alice, room_id, {"body": "a"}, "m1")
    status, payload = await call(
        client, "PUT", f"/rooms/{q(room_id)}/redact/{q(by_alice['event_id'])}/r", bob, {}
    )
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    _, by_bob = await send(client, bob, room_id, {"body": "b"}, "m2")
    status, _ = await call(
        client, "PUT", f"/rooms/{q(room_id)}/redact/{q(by_bob['event_id'])}/r", alice, {}
    )
    assert status == 200  # the creator (infinite power) may redact anyone's
    missing = "$" + "A" * 43
    status, payload = await call(
        client, "PUT", f"/rooms/{q(room_id)}/redact/{q(missing)}/r2", alice, {}
    )
    assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")
    status, payload = await call(client, "PUT", f"/rooms/{q(room_id)}/redact/nope/r3", alice, {})
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    status, payload = await call(
        client,
        "PUT",
        f"/rooms/{q(room_id)}/redact/{q(by_bob['event_id'])}/r4",
        alice,
        {"reason": 1},
    )
    assert (status, payload["errcode"]) == (400, "M_BAD_JSON")


async def test_get_event_not_found_and_other_rooms(setup: Any) -> None:
    client, alice, bob, _ = setup
    room_id = await create_room(client, alice)
    _, sent = await send(client, alice, room_id, {"body": "private"}, "m1")
    for user, path in (
        (bob, f"/rooms/{q(room_id)}/event/{q(sent['event_id'])}"),
        (alice, f"/rooms/{q(room_id)}/event/{q('$' + 'B' * 43)}"),
        (alice, f"/rooms/{q(local_id(client, '!other'))}/event/{q(sent['event_id'])}"),
    ):
        status, payload = await call(client, "GET", path, user)
        assert (status, payload["errcode"]) == (404, "M_NOT_FOUND")


# --- members ----------------------------------------------------------------------------------


async def test_members_and_joined_members(setup: Any) -> None:
    client, alice, bob, carol = setup
    room_id = await create_room(client, alice, preset="public_chat", invite=[carol.user_id])
    await join(client, bob, room_id)
    status, body = await call(client, "GET", f"/rooms/{q(room_id)}/members", bob)
    assert status == 200
    assert {e["state_key"]: e["content"]["membership"] for e in body["chunk"]} == {
        alice.user_id: "join",
        bob.user_id: "join",
        carol.user_id: "invite",
    }
    _, joined_only = await call(client, "GET", f"/rooms/{q(room_id)}/members?membership=join", bob)
    assert {e["state_key"] for e in joined_only["chunk"]} == {alice.user_id, bob.user_id}
    _, not_join = await call(client, "GET", f"/rooms/{q(room_id)}/members?not_membership=join", bob)
    assert {e["state_key"] for e in not_join["chunk"]} == {carol.user_id}
    status, payload = await call(client, "GET", f"/rooms/{q(room_id)}/members?membership=x", bob)
    assert (status, payload["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await call(client, "GET", f"/rooms/{q(room_id)}/joined_members", bob)
    assert (status, body) == (
        200,
        {
            "joined": {
                alice.user_id: {"display_name": "alice"},
                bob.user_id: {"display_name": "bob"},
            }
        },
    )
    status, payload = await call(client, "GET", f"/rooms/{q(room_id)}/joined_members", carol)
    assert (status, payload["errcode"]) == (403, "M_FORBIDDEN")
    # "at": the members at an earlier stream position.
    rooms = hs_of(client).rooms
    before_bob = (await rooms.store.get_membership(room_id, bob.user_id)).stream_ordering - 1  # type: ignore[union-attr]
    _, earlier = await call(client, "GET", f"/rooms/{q(room_id)}/members?at=t{before_bob}", alice)
    assert {e["state_key"] for e in earlier["chunk"]} == {alice.user_id, carol.user_id}
