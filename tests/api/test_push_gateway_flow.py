"""End to end through the real HTTP stack: real messages, push rule evaluation,
and a push gateway on loopback (issue 11: "A test push gateway receives exactly
one notification per notifying event per pusher, with the right counts, and none
for the sender's own events; a highlight for a mention").
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import MakeClient
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    Client,
    User,
    call,
    create_room,
    join,
    make_user,
    q,
    send,
)
from tests.push_gateway_support import (  # noqa: F401  (fixture)
    FAST_PUSH,
    Gateway,
    gateway_fixture,
)

APP_ID = "org.example.app"


@pytest.fixture
async def app(migrated_dsn: str, make_client: MakeClient) -> Client:
    return await make_client({**ROOMS_CONFIG, "database": migrated_dsn, "push": FAST_PUSH})


async def set_pusher(client: Client, user: User, url: str) -> None:
    body = {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": f"key-of-{user.user_id}",
        "app_display_name": "App",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url},
    }
    assert await call(client, "POST", "/pushers/set", user, body) == (200, {})


async def say(
    client: Client, user: User, room_id: str, text: str, mentions: list[str] | None = None
) -> str:
    content: dict[str, Any] = {"msgtype": "m.text", "body": text}
    if mentions is not None:
        content["m.mentions"] = {"user_ids": mentions}
    status, body = await send(client, user, room_id, content, f"txn-{text}")
    assert status == 200, body
    event_id: str = body["event_id"]
    return event_id


async def settle(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    """Exactly ``count`` notifications: wait for them, then make sure no more come."""
    await gateway.wait_for(count, timeout=5)
    await asyncio.sleep(0.3)
    assert len(gateway.received) == count, gateway.received
    return [body["notification"] for body in gateway.received]


async def test_one_notification_per_message_highlight_for_a_mention(
    app: Client, gateway: Gateway
) -> None:
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    carol = await make_user(app, "carol")
    room_id = await create_room(app, alice, preset="public_chat", name="Lobby")
    for user in (bob, carol):
        assert (await join(app, user, room_id))[0] == 200
    await set_pusher(app, bob, gateway.url)

    hello = await say(app, alice, room_id, "hello all")
    await say(app, bob, room_id, "bob's own message")  # never pushed to bob
    mention = await say(app, alice, room_id, "bob, look", mentions=[bob.user_id])
    later = await say(app, carol, room_id, "me too")

    notifications = await settle(gateway, 3)
    assert [n["event_id"] for n in notifications] == [hello, mention, later]
    highlights = [n["devices"][0]["tweaks"].get("highlight", False) for n in notifications]
    assert highlights == [False, True, False]
    assert notifications[1]["prio"] == "high"
    for notification in notifications:
        assert notification["room_id"] == room_id
        assert notification["room_name"] == "Lobby"
        assert notification["devices"][0]["pushkey"] == f"key-of-{bob.user_id}"
        unread = notification["counts"].get("unread")
        assert isinstance(unread, int) and unread >= 1


async def test_nothing_is_pushed_for_a_muted_room(app: Client, gateway: Gateway) -> None:
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    muted = await create_room(app, alice, preset="public_chat")
    loud = await create_room(app, alice, preset="public_chat")
    for room_id in (muted, loud):
        assert (await join(app, bob, room_id))[0] == 200
    # A room rule with no actions mutes the room (Client-Server API, "Push Rules").
    status, _ = await call(app, "PUT", f"/pushrules/global/room/{q(muted)}", bob, {"actions": []})
    assert status == 200
    await set_pusher(app, bob, gateway.url)

    await say(app, alice, muted, "shh")
    heard = await say(app, alice, loud, "hey")

    [notification] = await settle(gateway, 1)
    assert notification["event_id"] == heard
