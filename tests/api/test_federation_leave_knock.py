"""Leaving (rejecting invites) and knocking over federation, both sides,
through the real HTTP stack on both engines (Server-Server API, "Leaving Rooms
(Rejecting Invites)", "Knocking on rooms")."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
from tests.api.federation_members_support import (  # noqa: F401  (fixtures)
    BOB,
    REMOTE,
    US,
    RemoteRoom,
    ScriptedRemote,
    fed_client_fixture,
    federation_request,
    refusal,
    remote_fixture,
)
from tests.api.rooms_support import Client, User, call, create_room, hs_of, make_user, q
from tests.api.sync_support import sync
from tests.federation_dag import REMOTE_KEY
from tests.federation_support import FakeServer

DAN = f"@dan:{REMOTE}"
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


@pytest.fixture
def scripted(fed_client: Client) -> ScriptedRemote:
    fake = ScriptedRemote()
    hs = hs_of(fed_client)
    hs.federation_invites.remote = fake
    hs.federation_memberships.remote = fake
    return fake


def remote_signed(template: dict[str, Any], room_version: str, **changes: Any) -> Event:
    """What the remote server makes of a template: its event, signed."""
    version = get_room_version(room_version)
    pdu = {**template, "origin_server_ts": 1_700_000_000_123, **changes}
    return Event.from_pdu(version, hash_and_sign_event(version, pdu, REMOTE, REMOTE_KEY))


async def get_template(
    client: Client, remote: FakeServer, kind: str, room_id: str, user_id: str, query: str = ""
) -> tuple[int, Any]:
    path = f"{V1}/make_{kind}/{q(room_id)}/{q(user_id)}{query}"
    return await federation_request(client, remote, "GET", path)


# --- resident side ------------------------------------------------------------------------


async def test_a_remote_invitee_rejects_through_make_and_send_leave(
    fed_client: Client, remote: FakeServer, scripted: ScriptedRemote
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice)
    status, _ = await call(
        fed_client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": DAN}
    )
    assert status == 200

    status, answer = await get_template(fed_client, remote, "leave", room_id, DAN)
    assert status == 200, answer
    assert answer["room_version"] == "12"
    template = answer["event"]
    assert (template["type"], template["sender"], template["state_key"]) == (
        "m.room.member",
        DAN,
        DAN,
    )
    assert template["content"] == {"membership": "leave"}
    leave = remote_signed(template, "12")
    path = f"{V2}/send_leave/{q(room_id)}/{q(leave.event_id)}"
    status, answer = await federation_request(fed_client, remote, "PUT", path, dict(leave.pdu))
    assert (status, answer) == (200, {})
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room_id, DAN) == "leave"
    state = await hs.rooms.events.current_state_ids(room_id, [("m.room.member", DAN)])
    assert state[("m.room.member", DAN)] == leave.event_id


async def test_send_leave_v1_answers_a_pair(
    fed_client: Client, remote: FakeServer, scripted: ScriptedRemote
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice)
    await call(fed_client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": DAN})
    template = (await get_template(fed_client, remote, "leave", room_id, DAN))[1]["event"]
    leave = remote_signed(template, "12")
    path = f"{V1}/send_leave/{q(room_id)}/{q(leave.event_id)}"
    assert await federation_request(fed_client, remote, "PUT", path, dict(leave.pdu)) == (
        200,
        [200, {}],
    )


async def test_bad_leaves_are_refused(
    fed_client: Client, remote: FakeServer, scripted: ScriptedRemote
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(fed_client, alice)
    await call(fed_client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": DAN})
    # make_leave for a user of another server, or a room we do not know.
    status, answer = await get_template(fed_client, remote, "leave", room_id, alice.user_id)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await get_template(fed_client, remote, "leave", "!nope:remote.test", DAN)
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    template = (await get_template(fed_client, remote, "leave", room_id, DAN))[1]["event"]
    other_room = await create_room(fed_client, alice)
    cases: list[tuple[str, Event, str]] = [
        ("room in the path is not the event's", remote_signed(template, "12"), other_room),
        ("not a leave", remote_signed(template, "12", content={"membership": "join"}), room_id),
        (
            "state_key not the sender",
            remote_signed(template, "12", state_key=f"@erin:{REMOTE}"),
            room_id,
        ),
        (
            "sender of another server",
            remote_signed(template, "12", sender=BOB, state_key=BOB),
            room_id,
        ),
    ]
    for label, event, path_room in cases:
        path = f"{V2}/send_leave/{q(path_room)}/{q(event.event_id)}"
        status, answer = await federation_request(fed_client, remote, "PUT", path, dict(event.pdu))
        assert status == 400, (label, answer)
        assert answer["errcode"] == "M_BAD_JSON", label
    # The event ID in the path is not the event's.
    leave = remote_signed(template, "12")
    path = f"{V2}/send_leave/{q(room_id)}/{q('$other')}"
    status, answer = await federation_request(fed_client, remote, "PUT", path, dict(leave.pdu))
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    # Not an object.
    path = f"{V2}/send_leave/{q(room_id)}/{q(leave.event_id)}"
    status, answer = await federation_request(fed_client, remote, "PUT", path, ["x"])
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert await hs_of(fed_client).rooms.get_membership(room_id, DAN) == "invite"


async def test_a_remote_user_knocks_and_gets_the_stripped_state(
    fed_client: Client, remote: FakeServer
) -> None:
    alice = await make_user(fed_client, "alice")
    room_id = await create_room(
        fed_client,
        alice,
        name="Knock here",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    status, answer = await get_template(fed_client, remote, "knock", room_id, DAN, "?ver=11&ver=12")
    assert status == 200, answer
    assert answer["event"]["content"] == {"membership": "knock"}
    knock = remote_signed(answer["event"], "12")
    path = f"{V1}/send_knock/{q(room_id)}/{q(knock.event_id)}"
    status, answer = await federation_request(fed_client, remote, "PUT", path, dict(knock.pdu))
    assert status == 200, answer
    stripped = {(e["type"], e["state_key"]): e for e in answer["knock_room_state"]}
    assert stripped[("m.room.name", "")]["content"] == {"name": "Knock here"}
    assert stripped[("m.room.join_rules", "")]["content"] == {"join_rule": "knock"}
    assert ("m.room.create", "") in stripped
    assert ("m.room.power_levels", "") not in stripped
    assert await hs_of(fed_client).rooms.get_membership(room_id, DAN) == "knock"


async def test_knocks_refused_by_room_version(fed_client: Client, remote: FakeServer) -> None:
    alice = await make_user(fed_client, "alice")
    old_room = await create_room(fed_client, alice, room_version="6")
    status, answer = await get_template(fed_client, remote, "knock", old_room, DAN, "?ver=6")
    assert (status, answer["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    room_id = await create_room(
        fed_client,
        alice,
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    status, answer = await get_template(fed_client, remote, "knock", room_id, DAN, "?ver=10")
    assert (status, answer["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    assert answer["room_version"] == "12"
    # A room whose join rule is not knock: the auth rules refuse the template.
    public = await create_room(fed_client, alice, preset="public_chat")
    status, answer = await get_template(fed_client, remote, "knock", public, DAN, "?ver=12")
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


# --- leaving side ---------------------------------------------------------------------------


async def invited_bob(client: Client, remote: FakeServer) -> tuple[User, RemoteRoom, Event]:
    bob = await make_user(client, "bob")
    room = RemoteRoom()
    invite = room.invite(BOB)
    body = {
        "room_version": "10",
        "event": dict(invite.pdu),
        "invite_room_state": room.stripped_state(),
    }
    path = f"{V2}/invite/{q(room.room_id)}/{q(invite.event_id)}"
    status, answer = await federation_request(client, remote, "PUT", path, body)
    assert status == 200, answer
    return bob, room, invite


def leave_template(room: RemoteRoom, invite: Event) -> dict[str, Any]:
    return {
        "room_version": "10",
        "event": {
            "type": "m.room.member",
            "room_id": room.room_id,
            "sender": BOB,
            "state_key": BOB,
            "content": {"membership": "leave"},
            "origin_server_ts": 1,
            "depth": invite.depth + 1,
            "prev_events": [invite.event_id],
            "auth_events": [room.create.event_id, room.power.event_id, invite.event_id],
        },
    }


async def test_rejecting_a_remote_invite_goes_through_the_inviting_server(
    fed_client: Client, remote: FakeServer, scripted: ScriptedRemote
) -> None:
    bob, room, invite = await invited_bob(fed_client, remote)
    since = (await sync(fed_client, bob))["next_batch"]
    scripted.make_answers["leave"] = leave_template(room, invite)
    scripted.send_answers["leave"] = lambda pdu: {}

    status, body = await call(fed_client, "POST", f"/rooms/{q(room.room_id)}/leave", bob, {})

    assert (status, body) == (200, {})
    assert [c[0] for c in scripted.calls] == ["make_leave", "send_leave"]
    assert scripted.calls[0][1:] == (REMOTE, room.room_id, BOB)
    sent = scripted.calls[1][4]
    assert sent["content"] == {"membership": "leave"} and US in sent["signatures"]
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room.room_id, BOB) == "leave"
    synced = await sync(fed_client, bob, since=since)
    assert synced["rooms"]["invite"] == {}
    assert room.room_id in synced["rooms"]["leave"]
    # A second leave has nothing to do.
    status, _ = await call(fed_client, "POST", f"/rooms/{q(room.room_id)}/leave", bob, {})
    assert status == 200
    assert len(scripted.calls) == 2


@pytest.mark.parametrize(
    "failure", [None, refusal(403, "M_FORBIDDEN"), "bad template"], ids=["down", "403", "bad"]
)
async def test_an_unreachable_inviter_still_lets_the_invite_be_rejected(
    fed_client: Client, remote: FakeServer, scripted: ScriptedRemote, failure: Any
) -> None:
    bob, room, invite = await invited_bob(fed_client, remote)
    if failure == "bad template":
        template = leave_template(room, invite)
        template["event"]["sender"] = f"@other:{US}"
        scripted.make_answers["leave"] = template
    elif failure is not None:
        scripted.make_answers["leave"] = failure

    status, _ = await call(fed_client, "POST", f"/rooms/{q(room.room_id)}/leave", bob, {})

    assert status == 200
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room.room_id, BOB) == "leave"
    membership = await hs.rooms.store.get_membership(room.room_id, BOB)
    assert membership is not None
    stored = await hs.rooms.events.get_event(membership.event_id)
    assert stored is not None and stored.outlier
    assert list(stored.event.prev_event_ids) == [invite.event_id]
    assert stored.event.sender == BOB and stored.event.membership == "leave"
    assert (await sync(fed_client, bob))["rooms"]["invite"] == {}


def knock_template(room: RemoteRoom) -> dict[str, Any]:
    return {
        "room_version": "10",
        "event": {
            "type": "m.room.member",
            "room_id": room.room_id,
            "sender": BOB,
            "state_key": BOB,
            "content": {"membership": "knock"},
            "origin_server_ts": 1,
            "depth": room.join_rules.depth + 1,
            "prev_events": [room.name.event_id],
            "auth_events": [room.create.event_id, room.power.event_id, room.join_rules.event_id],
        },
    }


async def test_knocking_on_a_remote_room(fed_client: Client, scripted: ScriptedRemote) -> None:
    bob = await make_user(fed_client, "bob")
    room = RemoteRoom(join_rule="knock")
    since = (await sync(fed_client, bob))["next_batch"]
    scripted.make_answers["knock"] = knock_template(room)
    junk = [{"type": "m.room.power_levels", "state_key": "", "sender": "x", "content": {}}, 7]
    scripted.send_answers["knock"] = lambda pdu: {"knock_room_state": room.stripped_state() + junk}

    response = await fed_client.post(
        f"/_matrix/client/v3/knock/{q(room.room_id)}?via={REMOTE}",
        json={"reason": "let me in"},
        headers=bob.headers,
    )

    assert response.status == 200, await response.text()
    assert await response.json() == {"room_id": room.room_id}
    assert [c[0] for c in scripted.calls] == ["make_knock", "send_knock"]
    sent = scripted.calls[1][4]
    assert sent["content"] == {"membership": "knock", "reason": "let me in"}
    hs = hs_of(fed_client)
    assert await hs.rooms.get_membership(room.room_id, BOB) == "knock"
    synced = await sync(fed_client, bob, since=since)
    events = synced["rooms"]["knock"][room.room_id]["knock_state"]["events"]
    assert events[:-1] == room.stripped_state()
    assert events[-1]["content"] == {"membership": "knock", "reason": "let me in"}
    # Rescinding the knock goes through the room's server too.
    scripted.make_answers["leave"] = leave_template(
        room,
        Event.from_pdu(
            get_room_version("10"),
            hash_and_sign_event(
                get_room_version("10"), {**knock_template(room)["event"]}, REMOTE, REMOTE_KEY
            ),
        ),
    )
    scripted.send_answers["leave"] = lambda pdu: {}
    status, _ = await call(fed_client, "POST", f"/rooms/{q(room.room_id)}/leave", bob, {})
    assert status == 200
    assert scripted.calls[-1][0] == "send_leave"
    assert await hs.rooms.get_membership(room.room_id, BOB) == "leave"


async def test_a_refused_knock_stores_nothing(fed_client: Client, scripted: ScriptedRemote) -> None:
    bob = await make_user(fed_client, "bob")
    room = RemoteRoom(join_rule="knock")
    scripted.make_answers["knock"] = refusal(403, "M_FORBIDDEN")
    response = await fed_client.post(
        f"/_matrix/client/v3/knock/{q(room.room_id)}", json={}, headers=bob.headers
    )
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert await hs_of(fed_client).rooms.store.get_room(room.room_id) is None
    # Unreachable everywhere: 502, nothing stored.
    scripted.make_answers.clear()
    response = await fed_client.post(
        f"/_matrix/client/v3/knock/{q(room.room_id)}?via=other.test", json={}, headers=bob.headers
    )
    assert response.status == 502
    assert [c[1] for c in scripted.calls[-2:]] == ["other.test", REMOTE]
    assert await hs_of(fed_client).rooms.store.get_room(room.room_id) is None
