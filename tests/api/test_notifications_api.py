"""GET /_matrix/client/v3/notifications (Client-Server API, "Listing
notifications"; notifications.yaml), on both engines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.rooms_support import V3, Client, User, call, create_room, join, make_user, q, send
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    get,
    make_sync_client_fixture,
)

ENTRY_KEYS = {"actions", "event", "read", "room_id", "ts"}


async def message(client: Client, user: User, room_id: str, body: str, **content: Any) -> str:
    status, payload = await send(
        client, user, room_id, {"msgtype": "m.text", "body": body, **content}, body
    )
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def setup(client: Client) -> tuple[User, User, str, list[str]]:
    """Alice and Bob in a room of three; Bob sends m0..m4, m1 and m3 mention Alice."""
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="public_chat")
    for user in (bob, carol):
        status, _ = await join(client, user, room_id)
        assert status == 200
    sent = []
    for i in range(5):
        mentions = {"m.mentions": {"user_ids": [alice.user_id]}} if i % 2 else {}
        sent.append(await message(client, bob, room_id, f"m{i}", **mentions))
    return alice, bob, room_id, sent


async def notifications(client: Client, user: User, **params: Any) -> tuple[int, Any]:
    return await get(client, V3 + "/notifications", user, **params)


async def test_lists_notifications_newest_first(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice, bob, room_id, sent = await setup(client)
    status, body = await notifications(client, alice)
    assert status == 200
    assert "next_token" not in body  # everything fits in the default page
    entries = body["notifications"]
    assert [entry["event"]["event_id"] for entry in entries] == sent[::-1]
    for entry in entries:
        assert set(entry) == ENTRY_KEYS
        assert entry["room_id"] == room_id and entry["read"] is False
        assert isinstance(entry["ts"], int)
        event = entry["event"]
        assert event["sender"] == bob.user_id and event["type"] == "m.room.message"
        assert "room_id" not in event  # ClientEventWithoutRoomID
    highlight = ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    assert [entry["actions"] for entry in entries] == [
        ["notify"],
        highlight,
        ["notify"],
        highlight,
        ["notify"],
    ]
    # The sender's own events never notify them.
    status, own = await notifications(client, bob)
    assert status == 200 and own == {"notifications": []}


async def test_only_highlight_and_read(migrated_dsn: str, make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client(migrated_dsn)
    alice, _, room_id, sent = await setup(client)
    status, payload = await call(
        client, "POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(sent[2])}", alice, {}
    )
    assert status == 200, payload
    status, body = await notifications(client, alice, only="highlight")
    assert status == 200
    assert [(e["event"]["event_id"], e["read"]) for e in body["notifications"]] == [
        (sent[3], False),
        (sent[1], True),
    ]


async def test_pagination(migrated_dsn: str, make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client(migrated_dsn)
    alice, _, _, sent = await setup(client)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        status, body = await notifications(client, alice, **params)
        assert status == 200
        pages += 1
        seen += [entry["event"]["event_id"] for entry in body["notifications"]]
        if "next_token" not in body:
            break
        params = {"limit": 2, "from": body["next_token"]}
    assert seen == sent[::-1]
    assert pages == 3


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "ten"},
        {"limit": "0"},
        {"limit": "-3"},
        {"from": "not-a-token"},
        {"from": "-1"},
        {"from": "9" * 40},
    ],
)
async def test_bad_parameters(
    make_sync_client: MakeSyncClient, migrated_dsn: str, params: dict[str, str]
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    status, body = await notifications(client, alice, **params)
    assert status == 400
    assert body["errcode"] == "M_INVALID_PARAM"


async def test_needs_authentication(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    response = await client.get(V3 + "/notifications")
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_MISSING_TOKEN"


async def test_member_events_notify_only_whom_rules_of_their_own_or_an_invite_name(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    """With the default rules a member event notifies nobody but an invitee
    (.m.rule.member_event is dont_notify, .m.rule.invite_for_me comes before
    it), so the room's members are not walked for it; a member with a rule of
    their own that matches member events is still evaluated and notified."""
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200

    async def member_notifications(user: User) -> list[tuple[str, str]]:
        status, body = await notifications(client, user)
        assert status == 200
        return [
            (entry["event"]["content"]["membership"], entry["event"]["state_key"])
            for entry in body["notifications"]
            if entry["event"]["type"] == "m.room.member"
        ]

    carol = await make_user(client, "carol")
    assert (await join(client, carol, room_id))[0] == 200
    dave = await make_user(client, "dave")
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": dave.user_id}
    )
    assert status == 200
    assert await member_notifications(alice) == []
    assert await member_notifications(bob) == []
    assert await member_notifications(dave) == [("invite", dave.user_id)]
    # Bob asks to hear of joins: his rule comes before .m.rule.member_event.
    rule = {
        "conditions": [
            {"kind": "event_match", "key": "type", "pattern": "m.room.member"},
            {"kind": "event_match", "key": "content.membership", "pattern": "join"},
        ],
        "actions": ["notify"],
    }
    status, _ = await call(client, "PUT", "/pushrules/global/override/joins", bob, rule)
    assert status == 200
    erin = await make_user(client, "erin")
    assert (await join(client, erin, room_id))[0] == 200
    assert await member_notifications(bob) == [("join", erin.user_id)]
    assert await member_notifications(alice) == []
    # Without the rule again, the next join notifies nobody.
    status, _ = await call(client, "DELETE", "/pushrules/global/override/joins", bob)
    assert status == 200
    frank = await make_user(client, "frank")
    assert (await join(client, frank, room_id))[0] == 200
    assert await member_notifications(bob) == [("join", erin.user_id)]
