"""Messages are never lost or repeated between incremental /syncs while other
requests write at the same time (both engines).

Sync tokens come from stream positions kept in memory, and "which rooms had
events since the token" from an in-memory log (ranvier/storage/engine.py,
ranvier/storage/recent.py): a position becomes visible only once every lower
one has committed and the writers' after-commit callbacks have run. This
drives that with real concurrency: several senders in several rooms while a
client syncs in a loop, half of its requests long-polls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.conftest import Clock
from tests.api.rooms_support import call, create_room, join, make_user, q, send
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
    sync,
)

SENDERS = 4
ROOMS = 24  # more than sync._ACTIVE_ROOMS_MIN_ROOMS: the recent-rooms log is used
MESSAGES_PER_SENDER = 15
#: No timeline is ever limited: every event of the range is in the response.
NO_LIMIT = {"room": {"timeline": {"limit": 1000}}}


async def test_concurrent_sends_reach_a_syncing_client_exactly_once(
    make_sync_client: MakeSyncClient, migrated_dsn: str, clock: Clock
) -> None:
    client = await make_sync_client(migrated_dsn)
    reader = await make_user(client, "reader")
    senders = [await make_user(client, f"sender{i}") for i in range(SENDERS)]
    mover = await make_user(client, "mover")
    rooms = []
    for _ in range(ROOMS):
        clock.now_ms += 1  # room version 12: the ID is the create event's hash
        rooms.append(await create_room(client, reader, preset="public_chat"))
    for room_id in rooms:
        for sender in senders:
            assert (await join(client, sender, room_id))[0] == 200
    since = (await sync(client, reader, filter=NO_LIMIT))["next_batch"]

    sent: set[str] = set()
    membership_events = 0

    async def send_messages(index: int) -> None:
        for n in range(MESSAGES_PER_SENDER):
            room_id = rooms[(index + n) % ROOMS]
            body = {"msgtype": "m.text", "body": f"{index}-{n}"}
            status, payload = await send(client, senders[index], room_id, body, f"t{n}")
            assert status == 200, payload
            sent.add(payload["event_id"])

    async def move_around() -> None:
        # Membership changes at the same time (the per-user membership cache
        # and the membership log are written too).
        nonlocal membership_events
        for room_id in rooms:
            assert (await join(client, mover, room_id))[0] == 200
            status, _ = await call(client, "POST", f"/rooms/{q(room_id)}/leave", mover, {})
            assert status == 200
            membership_events += 2

    seen: list[str] = []
    members_seen = 0
    senders_done = False

    async def sync_loop() -> None:
        nonlocal since, members_seen
        rounds = 0
        while True:
            last_round = senders_done  # one more sync after every send answered
            params: dict[str, Any] = {"since": since, "filter": NO_LIMIT}
            if rounds % 2:
                params["timeout"] = 50
            body = await sync(client, reader, **params)
            for room in body["rooms"]["join"].values():
                assert room["timeline"]["limited"] is False
                for event in room["timeline"]["events"]:
                    if event["type"] == "m.room.message":
                        seen.append(event["event_id"])
                    elif event.get("state_key") == mover.user_id:
                        members_seen += 1
            since = body["next_batch"]
            rounds += 1
            if last_round:
                return

    reader_task = asyncio.create_task(sync_loop())
    await asyncio.gather(*(send_messages(i) for i in range(SENDERS)), move_around())
    senders_done = True
    await reader_task

    assert len(sent) == SENDERS * MESSAGES_PER_SENDER
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(seen) == sent, "an event was never delivered"
    assert members_seen == membership_events == 2 * ROOMS
    # Nothing more is pending.
    body = await sync(client, reader, since=since, filter=NO_LIMIT)
    assert body["rooms"]["join"] == {}


async def test_an_incremental_sync_of_many_rooms_shows_exactly_the_rooms_with_news(
    make_sync_client: MakeSyncClient, migrated_dsn: str, clock: Clock
) -> None:
    """With more rooms than the active-rooms shortcut's minimum, an incremental
    /sync looks only at rooms with events in the range, plus the rooms with
    ephemeral news (typing, a receipt) or room account data (a tag) and the
    rooms joined since: each of those shown, the quiet rooms not."""
    client = await make_sync_client(migrated_dsn)
    reader = await make_user(client, "reader")
    other = await make_user(client, "other")
    rooms = []
    for _ in range(ROOMS):
        clock.now_ms += 1
        room_id = await create_room(client, other, preset="public_chat")
        assert (await join(client, reader, room_id))[0] == 200
        rooms.append(room_id)
    clock.now_ms += 1
    late_room = await create_room(client, other, preset="public_chat")
    first = await sync(client, reader)
    assert set(first["rooms"]["join"]) == set(rooms)
    since = first["next_batch"]

    messaged, tagged, typed, receipted = rooms[3], rooms[7], rooms[11], rooms[15]
    status, body = await send(client, other, messaged, {"msgtype": "m.text", "body": "hi"}, "m")
    assert status == 200, body
    tag_path = f"/user/{q(reader.user_id)}/rooms/{q(tagged)}/tags/u.work"
    assert (await call(client, "PUT", tag_path, reader, {"order": 0.5}))[0] == 200
    typing_path = f"/rooms/{q(typed)}/typing/{q(other.user_id)}"
    typing = {"typing": True, "timeout": 30_000}
    assert (await call(client, "PUT", typing_path, other, typing))[0] == 200
    last = (await sync(client, reader))["rooms"]["join"][receipted]["timeline"]["events"][-1]
    receipt_path = f"/rooms/{q(receipted)}/receipt/m.read/{q(last['event_id'])}"
    assert (await call(client, "POST", receipt_path, reader, {}))[0] == 200
    assert (await join(client, reader, late_room))[0] == 200

    answer = await sync(client, reader, since=since)
    joined = answer["rooms"]["join"]
    assert set(joined) == {messaged, tagged, typed, receipted, late_room}
    assert [e["content"].get("body") for e in joined[messaged]["timeline"]["events"]] == ["hi"]
    assert joined[tagged]["account_data"]["events"][0]["type"] == "m.tag"
    assert joined[tagged]["timeline"]["events"] == []
    assert joined[typed]["ephemeral"]["events"][0]["content"]["user_ids"] == [other.user_id]
    receipts = [e for e in joined[receipted]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert last["event_id"] in receipts[0]["content"]
    # Newly joined: synced as in an initial sync, its state included.
    assert any(e["type"] == "m.room.create" for e in joined[late_room]["state"]["events"]) or any(
        e["type"] == "m.room.create" for e in joined[late_room]["timeline"]["events"]
    )
