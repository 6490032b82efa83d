"""A room joined since the last /sync comes as in an initial sync (sync.yaml:
``rooms.join``; Client-Server API "Syncing"): its full state, its latest events
with ``limited`` true when there are more, and a ``prev_batch`` that /messages
continues from. Both engines."""

from __future__ import annotations

import pytest

from tests.api.federation_members_support import (  # noqa: F401  (fixtures)
    BOB,
    REMOTE,
    RemoteRoom,
    fed_client_fixture,
    federation_request,
    join_service,
    remote_fixture,
)
from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    bodies,
    make_sync_client_fixture,
    messages,
    state_keys,
    sync,
)
from tests.federation_dag import CREATOR
from tests.federation_support import FakeServer

LIMIT_3 = {"room": {"timeline": {"limit": 3}}}


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def say(client: Client, user: User, room_id: str, *texts: str) -> None:
    for text in texts:
        status, payload = await send(
            client, user, room_id, {"msgtype": "m.text", "body": text}, text
        )
        assert status == 200, payload


async def earlier_messages(client: Client, user: User, room_id: str, token: str) -> list[str]:
    """Every message body before ``token``, oldest first, through /messages."""
    collected: list[str] = []
    while True:
        status, page = await messages(client, user, room_id, dir="b", limit=2, **{"from": token})
        assert status == 200, page
        collected = bodies(list(reversed(page["chunk"]))) + collected
        if "end" not in page:
            return collected
        token = page["end"]


async def test_accepted_invite_brings_full_state_and_a_limited_timeline(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, name="Old room")
    await say(client, alice, room_id, "m0", "m1", "m2", "m3", "m4")
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": bob.user_id}
    )
    assert status == 200
    since = (await sync(client, bob, filter=LIMIT_3))["next_batch"]

    assert (await join(client, bob, room_id))[0] == 200
    body = await sync(client, bob, since=since, filter=LIMIT_3)

    room = body["rooms"]["join"][room_id]
    timeline = room["timeline"]
    assert [(e["type"], e["content"].get("membership")) for e in timeline["events"]] == [
        ("m.room.message", None),
        ("m.room.member", "invite"),
        ("m.room.member", "join"),
    ]
    assert bodies(timeline["events"]) == ["m4"]
    assert timeline["events"][-1]["state_key"] == bob.user_id
    assert timeline["limited"] is True
    assert state_keys(room["state"]["events"]) == {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.name", ""),
    }
    assert await earlier_messages(client, bob, room_id, timeline["prev_batch"]) == [
        "m0",
        "m1",
        "m2",
        "m3",
    ]
    # The next sync is incremental again.
    await say(client, alice, room_id, "m5")
    body = await sync(client, bob, since=body["next_batch"], filter=LIMIT_3)
    room = body["rooms"]["join"][room_id]
    assert bodies(room["timeline"]["events"]) == ["m5"]
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []


async def test_joined_public_room_unlimited_when_the_history_fits(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    await say(client, alice, room_id, "hello")
    since = (await sync(client, bob))["next_batch"]
    assert (await join(client, bob, room_id))[0] == 200

    body = await sync(client, bob, since=since, filter={"room": {"timeline": {"limit": 50}}})
    timeline = body["rooms"]["join"][room_id]["timeline"]
    types = [e["type"] for e in timeline["events"]]
    # Everything from the room's creation, so nothing is left to paginate.
    assert types[0] == "m.room.create"
    assert bodies(timeline["events"]) == ["hello"]
    assert timeline["events"][-1]["state_key"] == bob.user_id
    assert timeline["limited"] is False
    # State in the timeline is not repeated in "state".
    assert body["rooms"]["join"][room_id]["state"]["events"] == []
    status, page = await messages(client, bob, room_id, dir="b", **{"from": timeline["prev_batch"]})
    assert status == 200 and page["chunk"] == []


async def test_joined_room_respects_history_visibility(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    await say(client, alice, room_id, "secret before")
    since = (await sync(client, bob))["next_batch"]
    assert (await join(client, bob, room_id))[0] == 200
    await say(client, alice, room_id, "after")

    body = await sync(client, bob, since=since, filter=LIMIT_3)
    timeline = body["rooms"]["join"][room_id]["timeline"]
    assert bodies(timeline["events"]) == ["after"]
    assert "secret before" not in str(body)


# --- a room joined over federation ------------------------------------------------------


async def test_a_room_joined_over_federation_comes_with_its_state(
    fed_client: Client, remote: FakeServer
) -> None:
    hs = hs_of(fed_client)
    bob = await make_user(fed_client, "bob")
    room = RemoteRoom()
    invite = room.invite(BOB)
    path = f"/_matrix/federation/v2/invite/{q(room.room_id)}/{q(invite.event_id)}"
    body = {"room_version": "10", "event": dict(invite.pdu), "invite_room_state": []}
    assert (await federation_request(fed_client, remote, "PUT", path, body))[0] == 200
    since = (await sync(fed_client, bob))["next_batch"]

    joins = join_service(hs, room, invite)
    # Not wired on the Homeserver yet (the federation wiring sets it): an
    # accepted invite needs it.
    status, body = await join(fed_client, bob, room.room_id)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert await hs.rooms.get_membership(room.room_id, BOB) == "invite"
    hs.federation_joins = joins  # type: ignore[attr-defined]
    # Bob accepts the invite: joined through the inviting server.
    status, body = await join(fed_client, bob, room.room_id)
    assert (status, body) == (200, {"room_id": room.room_id})

    synced = await sync(fed_client, bob, since=since)
    assert synced["rooms"]["invite"] == {}
    joined = synced["rooms"]["join"][room.room_id]
    timeline = joined["timeline"]
    assert [(e["type"], e["state_key"]) for e in timeline["events"]] == [("m.room.member", BOB)]
    assert timeline["events"][0]["content"]["membership"] == "join"
    # Earlier history is on the other server: limited, with a token to paginate from.
    assert timeline["limited"] is True
    assert timeline["prev_batch"].startswith("t")
    assert state_keys(joined["state"]["events"]) == {
        ("m.room.create", ""),
        ("m.room.member", CREATOR),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        # The state at the timeline's start: the invite the join replaced.
        ("m.room.member", BOB),
    }
    status, page = await messages(
        fed_client, bob, room.room_id, dir="b", **{"from": timeline["prev_batch"]}
    )
    assert status == 200, page
