"""Invites over federation (Server-Server API, "Inviting to a room"), both
ways, through the real HTTP stack on both engines: PUT /v2/invite (and v1)
from a fake remote signing its requests, and POST /invite of a remote user
with a scripted invitee's server."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.core.events import verify_event_signature
from ranvier.core.stripped_state import MAX_STRIPPED_EVENTS
from tests.api.federation_members_support import (  # noqa: F401  (fixtures)
    BOB,
    REMOTE,
    US,
    VERSION,
    RemoteRoom,
    ScriptedRemote,
    fed_client_fixture,
    federation_request,
    join_service,
    refusal,
    remote_fixture,
)
from tests.api.rooms_support import Client, User, call, create_room, hs_of, make_user, q
from tests.api.sync_support import sync
from tests.federation_dag import CREATOR
from tests.federation_support import FakeServer


def invite_path(room_id: str, event_id: str, version: str = "v2") -> str:
    return f"/_matrix/federation/{version}/invite/{q(room_id)}/{q(event_id)}"


async def put_invite(
    client: Client, remote: FakeServer, room: RemoteRoom, invite: Any, **body: Any
) -> tuple[int, Any]:
    content = {
        "room_version": "10",
        "event": dict(invite.pdu),
        "invite_room_state": room.stripped_state(),
        **body,
    }
    return await federation_request(
        client, remote, "PUT", invite_path(room.room_id, invite.event_id), content
    )


# --- inbound ----------------------------------------------------------------------------


async def test_an_invite_of_our_user_is_signed_and_shown_in_sync(
    fed_client: Client, remote: FakeServer
) -> None:
    bob = await make_user(fed_client, "bob")
    since = (await sync(fed_client, bob))["next_batch"]
    room = RemoteRoom()
    invite = room.invite(BOB)

    status, body = await put_invite(fed_client, remote, room, invite)

    assert status == 200, body
    returned = body["event"]
    assert {k: v for k, v in returned.items() if k != "signatures"} == {
        k: v for k, v in invite.pdu.items() if k != "signatures"
    }
    assert returned["signatures"][REMOTE] == invite.pdu["signatures"][REMOTE]
    key = hs_of(fed_client).signing_key
    verify_event_signature(VERSION, returned, US, key.key_id, key.verify_key)

    synced = await sync(fed_client, bob, since=since)
    events = synced["rooms"]["invite"][room.room_id]["invite_state"]["events"]
    assert events[:-1] == room.stripped_state()
    own = events[-1]
    assert (own["type"], own["state_key"], own["sender"]) == ("m.room.member", BOB, CREATOR)
    assert own["content"] == {"membership": "invite"}
    assert own["event_id"] == invite.event_id
    assert synced["rooms"]["join"] == {}
    assert await hs_of(fed_client).rooms.get_membership(room.room_id, BOB) == "invite"


async def test_v1_invite_answers_a_pair_and_reads_unsigned_state(
    fed_client: Client, remote: FakeServer
) -> None:
    from ranvier.core.events import Event, hash_and_sign_event
    from ranvier.core.room_versions import get_room_version
    from tests.federation_dag import REMOTE_KEY

    await make_user(fed_client, "bob")
    v1 = get_room_version("1")
    room_id = "!old:remote.test"
    pdu: dict[str, Any] = {
        "event_id": "$invite1:remote.test",
        "type": "m.room.member",
        "room_id": room_id,
        "sender": CREATOR,
        "state_key": BOB,
        "content": {"membership": "invite"},
        "origin_server_ts": 1_700_000_000_000,
        "depth": 5,
        "prev_events": [["$prev:remote.test", {}]],
        "auth_events": [["$create:remote.test", {}]],
    }
    signed = hash_and_sign_event(v1, pdu, REMOTE, REMOTE_KEY)
    name = {"type": "m.room.name", "state_key": "", "sender": CREATOR, "content": {"name": "Old"}}
    status, body = await federation_request(
        fed_client,
        remote,
        "PUT",
        invite_path(room_id, pdu["event_id"], "v1"),
        {**signed, "unsigned": {"invite_room_state": [name]}},
    )
    assert status == 200, body
    assert body[0] == 200 and body[1]["event"]["event_id"] == "$invite1:remote.test"
    assert set(body[1]["event"]["signatures"]) == {REMOTE, US}
    stored = await hs_of(fed_client).rooms.events.get_event("$invite1:remote.test")
    assert stored is not None and stored.outlier
    assert Event.from_pdu(v1, dict(stored.event.pdu)).pdu["unsigned"] == {
        "invite_room_state": [name]
    }


@pytest.mark.parametrize(
    ("invite_room_state", "kept"),
    [
        ("not a list", 0),
        ([1, "x", None, {"type": "m.room.name"}], 0),
        ([{"type": "m.room.name", "state_key": "", "sender": CREATOR, "content": "str"}], 0),
        # Not a stripped-state type: left out.
        ([{"type": "m.room.power_levels", "state_key": "", "sender": CREATOR, "content": {}}], 0),
        # Over the event size limit.
        (
            [
                {
                    "type": "m.room.topic",
                    "state_key": "",
                    "sender": CREATOR,
                    "content": {"topic": "x" * 70_000},
                }
            ],
            0,
        ),
        # Too many: bounded.
        (
            [
                {"type": "m.room.member", "state_key": f"@u{i}:x", "sender": CREATOR, "content": {}}
                for i in range(200)
            ],
            MAX_STRIPPED_EVENTS,
        ),
    ],
)
async def test_malformed_invite_room_state_is_dropped_and_sync_still_works(
    fed_client: Client, remote: FakeServer, invite_room_state: Any, kept: int
) -> None:
    bob = await make_user(fed_client, "bob")
    room = RemoteRoom()
    status, body = await put_invite(
        fed_client, remote, room, room.invite(BOB), invite_room_state=invite_room_state
    )
    assert status == 200, body
    synced = await sync(fed_client, bob)
    events = synced["rooms"]["invite"][room.room_id]["invite_state"]["events"]
    assert len(events) == kept + 1
    assert events[-1]["content"] == {"membership": "invite"}
    for event in events[:-1]:
        assert set(event) == {"type", "state_key", "sender", "content"}


async def test_bad_invites_are_refused_and_nothing_is_stored(
    fed_client: Client, remote: FakeServer
) -> None:
    await make_user(fed_client, "bob")
    room = RemoteRoom()
    other_room = RemoteRoom(room_id="!other:remote.test")
    good = room.invite(BOB)
    cases: list[tuple[str, Any, dict[str, Any], int, str]] = [
        ("not our user", room.invite("@carol:elsewhere.test"), {}, 403, "M_FORBIDDEN"),
        ("unknown local user", room.invite(f"@nobody:{US}"), {}, 404, "M_NOT_FOUND"),
        ("another server's sender", room.invite(BOB, sender="@eve:evil.test"), {}, 403, ""),
        ("not an invite", room.invite(BOB, content={"membership": "join"}), {}, 400, "M_BAD_JSON"),
        ("unknown room version", good, {"room_version": "99"}, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
        ("no room version", good, {"room_version": None}, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
        ("event not an object", good, {"event": "x"}, 400, "M_BAD_JSON"),
    ]
    for label, event, body, status, errcode in cases:
        got, answer = await put_invite(fed_client, remote, room, event, **body)
        assert got == status, (label, answer)
        if errcode:
            assert answer["errcode"] == errcode, label
    # The room in the path is not the event's (CVE-2020-26257).
    got, answer = await federation_request(
        fed_client,
        remote,
        "PUT",
        invite_path(other_room.room_id, good.event_id),
        {"room_version": "10", "event": dict(good.pdu)},
    )
    assert (got, answer["errcode"]) == (400, "M_BAD_JSON")
    # The event ID in the path is not the event's.
    got, answer = await federation_request(
        fed_client,
        remote,
        "PUT",
        invite_path(room.room_id, "$other"),
        {"room_version": "10", "event": dict(good.pdu)},
    )
    assert (got, answer["errcode"]) == (400, "M_BAD_JSON")
    # A forged signature.
    forged = dict(good.pdu)
    forged["content"] = {"membership": "invite", "reason": "changed after signing"}
    forged["hashes"] = good.pdu["hashes"]
    got, answer = await federation_request(
        fed_client,
        remote,
        "PUT",
        invite_path(room.room_id, good.event_id),
        {"room_version": "10", "event": forged},
    )
    assert got in (400, 403), answer
    # Unsigned request.
    response = await fed_client.put(invite_path(room.room_id, good.event_id), json={})
    assert response.status == 401
    assert await hs_of(fed_client).rooms.store.get_room(room.room_id) is None
    assert await hs_of(fed_client).rooms.get_membership(room.room_id, BOB) is None


async def test_a_sender_of_another_server_is_refused(fed_client: Client) -> None:
    """The origin signing the request is not the invite's sender's server."""
    await make_user(fed_client, "bob")
    impostor = FakeServer("evil.test")
    from tests.api.conftest import NOW_MS

    await hs_of(fed_client).keyring.store_keys(impostor.key_rows(NOW_MS - 1000, NOW_MS + 100_000))
    room = RemoteRoom()
    status, body = await put_invite(fed_client, impostor, room, room.invite(BOB))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_an_invite_into_a_room_we_are_in_is_signed_and_left_to_arrive_by_send(
    fed_client: Client, remote: FakeServer
) -> None:
    """The inviting server sends the invite to every server in the room, ours
    included: /invite only signs it, and keeps nothing beside the room's state."""
    hs = hs_of(fed_client)
    await make_user(fed_client, "bob")
    carol = f"@carol:{US}"
    await make_user(fed_client, "carol")
    room = RemoteRoom(join_rule="public")
    await join_service(hs, room, None).join_remote_room(BOB, room.room_id, [REMOTE])
    before = await hs.rooms.events.current_state_ids(room.room_id)

    invite = room.invite(carol)
    status, body = await put_invite(fed_client, remote, room, invite)

    assert status == 200, body
    assert set(body["event"]["signatures"]) == {REMOTE, US}
    assert await hs.rooms.events.get_event(invite.event_id) is None
    assert await hs.rooms.events.current_state_ids(room.room_id) == before
    assert await hs.rooms.get_membership(room.room_id, BOB) == "join"


# --- outbound ---------------------------------------------------------------------------


@pytest.fixture
def scripted(fed_client: Client) -> ScriptedRemote:
    fake = ScriptedRemote()
    hs_of(fed_client).federation_invites.remote = fake
    return fake


async def invite_remote(client: Client, alice: User, room_id: str) -> tuple[int, Any]:
    return await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": f"@dan:{REMOTE}"}
    )


async def test_inviting_a_remote_user_sends_the_invite_and_keeps_the_countersigned_event(
    fed_client: Client, scripted: ScriptedRemote
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice, name="Ours", topic="t")

    status, body = await invite_remote(fed_client, alice, room_id)

    assert status == 200, body
    [(kind, destination, sent_room, event_id, sent)] = scripted.calls
    assert (kind, destination, sent_room) == ("invite", REMOTE, room_id)
    assert sent["room_version"] == "12"
    assert sent["event"]["state_key"] == f"@dan:{REMOTE}"
    types = {(e["type"], e["state_key"]) for e in sent["invite_room_state"]}
    assert types == {
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id),
    }
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room_id, f"@dan:{REMOTE}") == "invite"
    stored = await hs.rooms.events.get_event(event_id)
    assert stored is not None and not stored.outlier
    assert set(stored.event.pdu["signatures"]) == {US, REMOTE}


@pytest.mark.parametrize(
    ("answer", "status", "errcode"),
    [
        (refusal(403, "M_FORBIDDEN"), 403, "M_FORBIDDEN"),
        (refusal(400, "M_INCOMPATIBLE_ROOM_VERSION"), 400, "M_INCOMPATIBLE_ROOM_VERSION"),
        (refusal(500, "M_UNKNOWN"), 502, "M_UNKNOWN"),
        (ConnectionError("down"), 502, "M_UNKNOWN"),
        # An answer that is not our event, or not signed by the invitee's server.
        (lambda body: {"event": {**body["event"], "content": {"membership": "join"}}}, 502, ""),
        (lambda body: {"event": body["event"]}, 502, "M_UNKNOWN"),
        (lambda body: {}, 502, "M_UNKNOWN"),
    ],
)
async def test_a_refused_or_failed_remote_invite_persists_nothing(
    fed_client: Client, scripted: ScriptedRemote, answer: Any, status: int, errcode: str
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice)
    scripted.invite_answer = answer
    hs = hs_of(fed_client)
    before = await hs.rooms.events.current_position()

    got, body = await invite_remote(fed_client, alice, room_id)

    assert got == status, body
    if errcode:
        assert body["errcode"] == errcode
    assert await hs.rooms.get_membership(room_id, f"@dan:{REMOTE}") is None
    assert await hs.rooms.events.current_position() == before


async def test_create_room_invites_a_remote_user_through_its_server(
    fed_client: Client, scripted: ScriptedRemote
) -> None:
    """createRoom's ``invite`` list may name users of other servers: each is
    invited with PUT /invite once the room exists (their server signs it)."""
    alice = await make_user(fed_client, "alice")
    carol = await make_user(fed_client, "carol")
    dan = f"@dan:{REMOTE}"
    status, body = await call(
        fed_client,
        "POST",
        "/createRoom",
        alice,
        {"invite": [dan, carol.user_id], "is_direct": True},
    )
    assert status == 200, body
    room_id = body["room_id"]
    [(kind, destination, sent_room, event_id, sent)] = scripted.calls
    assert (kind, destination, sent_room) == ("invite", REMOTE, room_id)
    assert sent["event"]["state_key"] == dan
    assert sent["event"]["content"] == {"membership": "invite", "is_direct": True}
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room_id, dan) == "invite"
    assert await hs.rooms.get_membership(room_id, carol.user_id) == "invite"
    stored = await hs.rooms.events.get_event(event_id)
    assert stored is not None and set(stored.event.pdu["signatures"]) == {US, REMOTE}


async def test_an_invite_from_a_server_the_room_acl_denies_is_refused(
    fed_client: Client, remote: FakeServer
) -> None:
    """A room we are in whose ACL denies the inviting server: its invite (v2 and
    v1) answers 403 M_FORBIDDEN and stores nothing."""
    hs = hs_of(fed_client)
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice, room_version="10")
    acl = {"allow": ["*"], "deny": [REMOTE]}
    status, _ = await call(
        fed_client, "PUT", f"/rooms/{q(room_id)}/state/m.room.server_acl/", alice, acl
    )
    assert status == 200
    before = await hs.rooms.events.current_state_ids(room_id)
    invite = RemoteRoom().invite(BOB)
    for version in ("v2", "v1"):
        body: Any = {"room_version": "10", "event": dict(invite.pdu), "invite_room_state": []}
        if version == "v1":
            body = dict(invite.pdu)
        status, answer = await federation_request(
            fed_client, remote, "PUT", invite_path(room_id, invite.event_id, version), body
        )
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), (version, answer)
    assert await hs.rooms.events.current_state_ids(room_id) == before
    assert await hs.rooms.events.get_event(invite.event_id) is None
