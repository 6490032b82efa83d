"""make_join and send_join (v1 and v2) through the real HTTP stack, as the
resident server, with a fake remote joining a room of this server."""

from __future__ import annotations

import pytest

from tests.api.conftest import MakeClient
from tests.api.federation_api_support import (
    REMOTE,
    US,
    Client,
    hs_of,
    make_join,
    q,
    send_join,
    signed_join,
    signed_request,
    trust,
)
from tests.api.rooms_support import ROOMS_CONFIG, User, create_room, make_user, put_state
from tests.federation_support import FakeServer

BOB = "@bob:remote.test"
EVIL = FakeServer("evil.test")


@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, User, str]:
    client = await make_client({**ROOMS_CONFIG, "server_name": US})
    await trust(client, REMOTE, EVIL)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, preset="public_chat", room_version="10")
    return client, alice, room_id


async def test_a_remote_user_joins_with_make_join_and_send_join_v2(
    setup: tuple[Client, User, str],
) -> None:
    client, alice, room_id = setup
    status, template = await make_join(client, room_id, BOB)
    assert status == 200
    assert template["room_version"] == "10"
    event = template["event"]
    assert (event["type"], event["sender"], event["state_key"], event["room_id"]) == (
        "m.room.member",
        BOB,
        BOB,
        room_id,
    )
    assert event["content"] == {"membership": "join"}
    join = signed_join(template)
    status, answer = await send_join(client, room_id, join)
    assert status == 200
    assert answer["origin"] == US
    assert answer["event"]["type"] == "m.room.member"
    state_types = {(e["type"], e.get("state_key")) for e in answer["state"]}
    assert ("m.room.create", "") in state_types
    assert ("m.room.member", alice.user_id) in state_types
    assert ("m.room.member", BOB) not in state_types  # the state *before* the join
    chain_ids = {e["type"] for e in answer["auth_chain"]}
    assert "m.room.create" in chain_ids
    assert await hs_of(client).rooms.get_membership(room_id, BOB) == "join"


async def test_send_join_v1_answers_status_and_state(setup: tuple[Client, User, str]) -> None:
    client, _, room_id = setup
    _, template = await make_join(client, room_id, BOB)
    status, answer = await send_join(client, room_id, signed_join(template), version="v1")
    assert status == 200
    assert answer[0] == 200
    assert set(answer[1]) == {"origin", "auth_chain", "state"}
    assert await hs_of(client).rooms.get_membership(room_id, BOB) == "join"


async def test_make_join_for_an_unsupported_room_version(setup: tuple[Client, User, str]) -> None:
    client, _, room_id = setup
    status, answer = await make_join(client, room_id, BOB, versions=("1", "2"))
    assert status == 400
    assert answer["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION"
    assert answer["room_version"] == "10"
    # No ver at all means [1] (the spec's default).
    status, answer = await make_join(client, room_id, BOB, versions=())
    assert (status, answer["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION")


async def test_make_join_for_a_user_of_another_server_is_403(
    setup: tuple[Client, User, str],
) -> None:
    client, _, room_id = setup
    uri = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q('@eve:other.test')}?ver=10"
    status, answer = await signed_request(client, "GET", uri)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


async def test_make_join_for_an_unknown_room_is_404(setup: tuple[Client, User, str]) -> None:
    client, _, _ = setup
    status, answer = await make_join(client, "!nowhere:localhost", BOB)
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


@pytest.mark.parametrize(
    ("room_id", "user_id"), [("not-a-room", BOB), ("!r:localhost", "not-a-user")]
)
async def test_make_join_validates_its_path(
    setup: tuple[Client, User, str], room_id: str, user_id: str
) -> None:
    client, _, _ = setup
    uri = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(user_id)}?ver=10"
    status, answer = await signed_request(client, "GET", uri)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


async def test_send_join_with_another_rooms_id_in_the_path_is_refused(
    setup: tuple[Client, User, str],
) -> None:
    """CVE-2020-26257: the room in the path must be the event's room."""
    client, alice, room_id = setup
    other_room = await create_room(client, alice, preset="public_chat", room_version="10")
    _, template = await make_join(client, room_id, BOB)
    status, answer = await send_join(client, other_room, signed_join(template))
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    rooms = hs_of(client).rooms
    assert await rooms.get_membership(room_id, BOB) is None
    assert await rooms.get_membership(other_room, BOB) is None


async def test_send_join_of_a_user_of_another_server_is_refused(
    setup: tuple[Client, User, str],
) -> None:
    client, _, room_id = setup
    _, template = await make_join(client, room_id, BOB)
    # evil.test sends remote.test's user's join, signed by remote.test.
    status, answer = await send_join(client, room_id, signed_join(template), server=EVIL)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert await hs_of(client).rooms.get_membership(room_id, BOB) is None


async def test_send_join_that_is_not_json_object_is_400(setup: tuple[Client, User, str]) -> None:
    client, _, room_id = setup
    uri = f"/_matrix/federation/v2/send_join/{q(room_id)}/{q('$x')}"
    status, answer = await signed_request(client, "PUT", uri, ["not", "an", "object"])
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


async def test_a_server_denied_by_the_acl_may_not_join(setup: tuple[Client, User, str]) -> None:
    client, alice, room_id = setup
    status, _ = await put_state(
        client, alice, room_id, "m.room.server_acl", "", {"allow": ["*"], "deny": ["remote.test"]}
    )
    assert status == 200
    status, answer = await make_join(client, room_id, BOB)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


async def test_a_private_room_refuses_make_join(setup: tuple[Client, User, str]) -> None:
    client, alice, _ = setup
    private = await create_room(client, alice, preset="private_chat", room_version="10")
    status, answer = await make_join(client, private, BOB)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
