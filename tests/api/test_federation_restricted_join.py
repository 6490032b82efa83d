"""A remote user joins a restricted room of this server (room versions 8+):
this server authorises the join through one of its users and counter-signs it
before checking it, as Synapse expects of the resident server (a Synapse
joining a Ranvier restricted room sends the join signed by itself only).

Client-Server API, "Restricted rooms"; Server-Server API, PUT /send_join:
"the resident server ... must sign the event" when it carries
``join_authorised_via_users_server``; the signature checks then require the
authorising server's signature (Server-Server API, "Validating hashes and
signatures on received events").
"""

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
    remote_user_joins,
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
async def restricted(make_client: MakeClient) -> tuple[Client, User, str]:
    """A restricted room of Alice's that lets in members of a public room Bob joined."""
    client = await make_client({**ROOMS_CONFIG, "server_name": US})
    await trust(client, REMOTE, EVIL)
    alice = await make_user(client, "alice")
    allowed = await create_room(client, alice, preset="public_chat", room_version="10")
    await remote_user_joins(client, allowed, BOB)
    room_id = await create_room(client, alice, preset="public_chat", room_version="10")
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]}
    status, _ = await put_state(client, alice, room_id, "m.room.join_rules", "", rules)
    assert status == 200
    return client, alice, room_id


async def test_a_restricted_join_signed_by_the_joining_server_only_is_countersigned(
    restricted: tuple[Client, User, str],
) -> None:
    client, alice, room_id = restricted
    status, template = await make_join(client, room_id, BOB)
    assert status == 200, template
    assert template["event"]["content"]["join_authorised_via_users_server"] == alice.user_id
    join = signed_join(template)
    assert set(join.pdu["signatures"]) == {"remote.test"}

    status, answer = await send_join(client, room_id, join)
    assert status == 200, answer
    # The answer's event is the same event (same ID) with our signature added.
    assert set(answer["event"]["signatures"]) == {"remote.test", US}
    assert answer["event"]["signatures"]["remote.test"] == join.pdu["signatures"]["remote.test"]
    stored = await hs_of(client).rooms.events.get_event(join.event_id)
    assert stored is not None
    assert set(stored.event.pdu["signatures"]) == {"remote.test", US}
    assert await hs_of(client).rooms.get_membership(room_id, BOB) == "join"


async def test_a_restricted_join_with_a_bad_signature_is_not_countersigned(
    restricted: tuple[Client, User, str],
) -> None:
    client, _, room_id = restricted
    _, template = await make_join(client, room_id, BOB)
    # Signed by evil.test's key under remote.test's name: not remote.test's signature.
    forged = signed_join(template, FakeServer("remote.test", EVIL.key))
    status, answer = await send_join(client, room_id, forged)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert await hs_of(client).rooms.get_membership(room_id, BOB) is None
    assert await hs_of(client).rooms.events.get_event(forged.event_id) is None


async def test_a_malformed_join_naming_our_user_as_authoriser_is_400(
    restricted: tuple[Client, User, str],
) -> None:
    client, alice, room_id = restricted
    pdu = {"content": {"membership": "join", "join_authorised_via_users_server": alice.user_id}}
    uri = f"/_matrix/federation/v2/send_join/{q(room_id)}/{q('$x')}"
    status, answer = await signed_request(client, "PUT", uri, pdu)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert await hs_of(client).rooms.get_membership(room_id, BOB) is None
