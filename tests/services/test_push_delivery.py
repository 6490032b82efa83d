"""HTTP push delivery (Push Gateway API, POST /_matrix/push/v1/notify) against a
small push gateway started here on loopback that records what it receives.

The homeserver is the real app (both engines); notifications are handed to
``hs.pushers.on_notification`` as push rule evaluation will hand them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from tests.api.conftest import NOW_MS
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    send,
)
from tests.push_gateway_support import (  # noqa: F401  (fixture)
    FAST_PUSH,
    NOTIFY,
    Gateway,
    gateway_fixture,
)

APP_ID = "org.example.app"


@dataclass
class Setup:
    client: Client
    hs: Homeserver
    alice: User
    bob: User
    room_id: str


MakeSetup = Callable[..., Awaitable[Setup]]


@pytest.fixture
def make_setup(migrated_dsn: str, aiohttp_client: Any, tmp_path: Path) -> MakeSetup:
    """Alice and Bob in a named room with an alias; ``push`` config overrides."""

    async def make(**push: Any) -> Setup:
        raw = {**ROOMS_CONFIG, "database": migrated_dsn, "push": {**FAST_PUSH, **push}}
        config = parse_config({"server_name": "localhost", **raw}, tmp_path, env={})
        app = build_app(config, signing_key=SigningKey.generate("t"), clock_ms=lambda: NOW_MS)
        client: Client = await aiohttp_client(app)
        # Delivery alone: these tests hand notifications to the pushers
        # themselves, so push rule evaluation (services/push.py, which hands
        # them over for real messages: tests/api/test_push_gateway_flow.py)
        # stays out of the way.
        hs_of(client).push.on_event = lambda *args: False  # type: ignore[method-assign]
        alice = await make_user(client, "alice")
        bob = await make_user(client, "bob")
        room_id = await create_room(
            client, alice, preset="public_chat", name="Mission Control", room_alias_name="mc"
        )
        assert (await join(client, bob, room_id))[0] == 200
        return Setup(client, hs_of(client), alice, bob, room_id)

    return make


@pytest.fixture
async def setup(make_setup: MakeSetup) -> Setup:
    return await make_setup()


async def add_pusher(
    s: Setup, user: User, url: str, pushkey: str, *, event_id_only: bool = False, **data: Any
) -> None:
    pusher_data: dict[str, Any] = {"url": url, **data}
    if event_id_only:
        pusher_data["format"] = "event_id_only"
    body = {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": "App",
        "device_display_name": "Phone",
        "lang": "en",
        "data": pusher_data,
        "append": True,
    }
    assert await call(s.client, "POST", "/pushers/set", user, body) == (200, {})


async def message(s: Setup, text: str, sender: User | None = None) -> Any:
    """Send a message into the room; the StoredEvent push evaluation would pass."""
    status, body = await send(
        s.client, sender or s.alice, s.room_id, {"msgtype": "m.text", "body": text}, text
    )
    assert status == 200, body
    stored = await s.hs.rooms.events.get_event(body["event_id"])
    assert stored is not None
    return stored


def notify(
    s: Setup,
    event: Any,
    *,
    user: User | None = None,
    actions: list[Any] | None = None,
    counts: dict[str, Any] | None = None,
) -> None:
    s.hs.pushers.on_notification(
        user_id=(user or s.bob).user_id,
        room_id=s.room_id,
        event=event,
        actions=["notify"] if actions is None else actions,
        counts={"unread": 1} if counts is None else counts,
    )


def device(pushkey: str, *, tweaks: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    return {
        "app_id": APP_ID,
        "pushkey": pushkey,
        "pushkey_ts": NOW_MS // 1000,
        "data": data,
        "tweaks": tweaks or {},
    }


# --- payloads ---------------------------------------------------------------------------


async def test_full_format_payload(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "full-key", custom={"a": 1})
    event = await message(s, "I'm floating")
    notify(s, event, counts={"unread": 2, "missed_calls": 1})
    [body] = await gateway.wait_for(1)
    assert body == {
        "notification": {
            "event_id": event.event_id,
            "room_id": s.room_id,
            "type": "m.room.message",
            "sender": s.alice.user_id,
            "sender_display_name": "alice",
            "room_name": "Mission Control",
            "room_alias": f"#mc:{s.hs.server_name}",
            "prio": "low",
            "content": {"msgtype": "m.text", "body": "I'm floating"},
            "counts": {"unread": 2, "missed_calls": 1},
            # data minus url: custom keys are forwarded.
            "devices": [device("full-key", custom={"a": 1})],
        }
    }


async def test_event_id_only_payload(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "short-key", event_id_only=True)
    event = await message(s, "secret")
    notify(s, event, counts={"unread": 3})
    [body] = await gateway.wait_for(1)
    assert body == {
        "notification": {
            "event_id": event.event_id,
            "room_id": s.room_id,
            "prio": "low",
            "counts": {"unread": 3},
            "devices": [device("short-key", format="event_id_only")],
        }
    }


async def test_zero_counts_are_omitted(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key", event_id_only=True)
    notify(s, await message(s, "one"), counts={"unread": 0, "missed_calls": 2})
    notify(s, await message(s, "two"), counts={"unread": 0, "missed_calls": 0})
    first, second = await gateway.wait_for(2)
    assert first["notification"]["counts"] == {"missed_calls": 2}
    assert second["notification"]["counts"] == {}


async def test_tweaks_and_priority_come_from_the_actions(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key", event_id_only=True)
    actions = ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    notify(s, await message(s, "bob!"), actions=actions)
    [body] = await gateway.wait_for(1)
    assert body["notification"]["prio"] == "high"
    assert body["notification"]["devices"] == [
        device("key", tweaks={"sound": "default", "highlight": True}, format="event_id_only")
    ]


async def test_a_client_format_event_dict_is_accepted(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    event = await message(s, "as a dict")
    client_event = {
        "event_id": event.event_id,
        "room_id": s.room_id,
        "type": "m.room.message",
        "sender": s.alice.user_id,
        "content": {"msgtype": "m.text", "body": "as a dict"},
        "origin_server_ts": 1,
    }
    notify(s, client_event)
    [body] = await gateway.wait_for(1)
    assert body["notification"]["event_id"] == event.event_id
    assert body["notification"]["content"] == {"msgtype": "m.text", "body": "as a dict"}
    assert body["notification"]["sender_display_name"] == "alice"


async def test_user_is_target_for_a_member_event_about_the_user(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    carol = await make_user(s.client, "carol")
    await add_pusher(s, carol, gateway.url, "carol-key")
    status, _ = await call(
        s.client, "POST", f"/rooms/{s.room_id}/invite", s.alice, {"user_id": carol.user_id}
    )
    assert status == 200
    member_ids = await s.hs.rooms.events.current_state_ids(
        s.room_id, [("m.room.member", carol.user_id)]
    )
    invite = await s.hs.rooms.events.get_event(member_ids[("m.room.member", carol.user_id)])
    notify(s, invite, user=carol)
    [body] = await gateway.wait_for(1)
    assert body["notification"]["type"] == "m.room.member"
    assert body["notification"]["user_is_target"] is True


# --- exactly one POST per notification per pusher ---------------------------------------


async def test_one_post_per_notification_per_pusher_in_order(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "phone")
    await add_pusher(s, s.bob, gateway.url, "tablet", event_id_only=True)
    events = [await message(s, f"m{i}") for i in range(3)]
    for event in events:
        notify(s, event)
    await gateway.wait_for(6)
    await asyncio.sleep(0.2)  # nothing more arrives
    assert len(gateway.received) == 6
    expected = [e.event_id for e in events]
    assert [n["event_id"] for n in gateway.notifications("phone")] == expected
    assert [n["event_id"] for n in gateway.notifications("tablet")] == expected


async def test_no_push_for_ones_own_events_or_without_notify(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    own = await message(s, "mine", sender=s.bob)
    notify(s, own)  # bob's own event
    notify(s, await message(s, "quiet"), actions=["dont_notify"])
    notify(s, await message(s, "bad"), actions=[])
    last = await message(s, "loud")
    notify(s, last)
    await gateway.wait_for(1)
    await asyncio.sleep(0.2)
    # One dispatcher handles notifications in order: had the first three been
    # pushed, they would have arrived before the last.
    assert [b["notification"]["event_id"] for b in gateway.received] == [last.event_id]


async def test_users_without_pushers_cost_nothing_and_get_nothing(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    carol = await make_user(s.client, "carol")
    event = await message(s, "hello")
    notify(s, event, user=carol)
    notify(s, event)
    [body] = await gateway.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(gateway.received) == 1
    assert body["notification"]["devices"][0]["pushkey"] == "key"


# --- failures ---------------------------------------------------------------------------


async def test_a_rejected_pushkey_removes_its_pusher(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "dead-key")
    gateway.script.append("reject")
    notify(s, await message(s, "one"))
    await gateway.wait_for(1)
    for _ in range(100):
        status, body = await call(s.client, "GET", "/pushers", s.bob)
        if body["pushers"] == []:
            break
        await asyncio.sleep(0.05)
    assert (status, body) == (200, {"pushers": []})
    await add_pusher(s, s.bob, gateway.url, "live-key")
    notify(s, await message(s, "two"))
    await gateway.wait_for(2)
    await asyncio.sleep(0.2)
    assert len(gateway.notifications("dead-key")) == 1
    assert len(gateway.notifications("live-key")) == 1


@pytest.mark.parametrize("failure", ["500", "garbage", "hang"])
async def test_a_failed_push_is_retried_with_the_same_payload(
    setup: Setup, gateway: Gateway, failure: str
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.append(failure)
    event = await message(s, "retry me")
    notify(s, event, counts={"unread": 7})
    first, second = await gateway.wait_for(2)
    assert second == first
    assert first["notification"]["event_id"] == event.event_id
    assert first["notification"]["counts"] == {"unread": 7}
    await asyncio.sleep(0.2)
    assert len(gateway.received) == 2  # delivered once it worked, no more
    assert s.hs.pushers.delivery.pending((s.bob.user_id, APP_ID, "key")) == 0


async def test_a_failing_notification_holds_back_the_later_ones(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.extend(["500", "500"])
    first, second = await message(s, "first"), await message(s, "second")
    notify(s, first)
    notify(s, second)
    received = await gateway.wait_for(4)
    assert [b["notification"]["event_id"] for b in received] == [
        first.event_id,
        first.event_id,
        first.event_id,
        second.event_id,
    ]


async def test_a_notification_is_dropped_after_give_up_after(
    make_setup: MakeSetup, gateway: Gateway
) -> None:
    s = await make_setup(give_up_after=150)
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.extend(["500"] * 1000)
    doomed = await message(s, "doomed")
    notify(s, doomed)
    await gateway.wait_for(2)
    await asyncio.sleep(0.4)  # past give_up_after: the pusher moved on
    gateway.script.clear()
    later = await message(s, "later")
    notify(s, later)
    for _ in range(100):
        if gateway.received[-1]["notification"]["event_id"] == later.event_id:
            break
        await asyncio.sleep(0.05)
    ids = [b["notification"]["event_id"] for b in gateway.received]
    assert ids[-1] == later.event_id
    assert set(ids) == {doomed.event_id, later.event_id}
    assert s.hs.pushers.delivery.pending((s.bob.user_id, APP_ID, "key")) == 0


async def test_a_hanging_gateway_never_blocks_the_caller_a_send_or_a_sync(
    make_setup: MakeSetup, gateway: Gateway
) -> None:
    s = await make_setup(request_timeout=60_000)
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.extend(["hang"] * 10)
    notify(s, await message(s, "one"))
    await gateway.wait_for(1)  # the gateway holds this request open
    started = time.monotonic()
    for i in range(20):
        notify(s, await message(s, f"more {i}"))
    status, _ = await call(s.client, "GET", "/sync", s.bob)
    elapsed = time.monotonic() - started
    assert status == 200
    # Loose bound: 20 sends and a sync take well under the 60 s the gateway hangs.
    assert elapsed < 10
    assert s.hs.pushers.delivery.pending((s.bob.user_id, APP_ID, "key")) == 21
    assert len(gateway.received) == 1


async def test_on_notification_returns_at_once(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.extend(["hang"] * 10)
    event = await message(s, "x")
    started = time.monotonic()
    for _ in range(50):
        notify(s, event)
    assert time.monotonic() - started < 1  # loose: it only queues


async def test_deleting_a_pusher_stops_its_retries(setup: Setup, gateway: Gateway) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.extend(["500"] * 1000)
    notify(s, await message(s, "x"))
    await gateway.wait_for(2)
    delete = {"kind": None, "app_id": APP_ID, "pushkey": "key"}
    assert await call(s.client, "POST", "/pushers/set", s.bob, delete) == (200, {})
    assert s.hs.pushers.delivery.pending((s.bob.user_id, APP_ID, "key")) == 0
    count = len(gateway.received)
    await asyncio.sleep(0.3)
    assert len(gateway.received) == count


async def test_closing_the_server_with_a_hanging_gateway_is_prompt(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    gateway.script.append("hang")
    notify(s, await message(s, "x"))
    await gateway.wait_for(1)
    started = time.monotonic()
    await s.hs.pushers.close()
    assert time.monotonic() - started < 5


# --- the SSRF guard -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_gateways_are_refused_unless_allowed(
    make_setup: MakeSetup, gateway: Gateway, host: str
) -> None:
    s = await make_setup(allow_private_addresses=False)
    port = gateway.url.split(":")[2].split("/")[0]
    await add_pusher(s, s.bob, f"http://{host}:{port}{NOTIFY}", "key")
    notify(s, await message(s, "x"))
    key = (s.bob.user_id, APP_ID, "key")
    for _ in range(50):
        if s.hs.pushers.delivery.pending(key) == 1:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # several refused attempts (retry delay 20-100 ms)
    assert gateway.received == []
    assert s.hs.pushers.delivery.pending(key) == 1  # kept, retried later


async def test_one_event_for_several_users_reaches_each_with_the_room_fields(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    carol = await make_user(s.client, "carol")
    assert (await join(s.client, carol, s.room_id))[0] == 200
    await add_pusher(s, s.bob, gateway.url, "bob-key")
    await add_pusher(s, carol, gateway.url, "carol-key")
    event = await message(s, "to all")
    notify(s, event)
    notify(s, event, user=carol)
    await gateway.wait_for(2)
    for pushkey in ("bob-key", "carol-key"):
        [notification] = gateway.notifications(pushkey)
        assert notification["event_id"] == event.event_id
        assert notification["room_name"] == "Mission Control"
        assert notification["sender_display_name"] == "alice"


async def test_a_redacted_event_is_pushed_without_its_content(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    event = await message(s, "oops, a secret")
    status, _ = await call(
        s.client, "PUT", f"/rooms/{s.room_id}/redact/{event.event_id}/r1", s.alice, {}
    )
    assert status == 200
    redacted = await s.hs.rooms.events.get_event(event.event_id)
    assert redacted is not None and redacted.redacted_by is not None
    notify(s, redacted)
    [body] = await gateway.wait_for(1)
    assert body["notification"]["event_id"] == event.event_id
    assert "content" not in body["notification"]


async def test_malformed_notifications_are_ignored_without_raising(
    setup: Setup, gateway: Gateway
) -> None:
    s = setup
    await add_pusher(s, s.bob, gateway.url, "key")
    notify(s, {"type": "m.room.message"})  # no event_id, no sender
    notify(s, object())
    s.hs.pushers.on_notification(
        user_id=s.bob.user_id,
        room_id=s.room_id,
        event=await message(s, "odd counts"),
        actions=["notify"],
        counts=None,  # type: ignore[arg-type]
    )
    [body] = await gateway.wait_for(1)
    assert body["notification"]["counts"] == {}
