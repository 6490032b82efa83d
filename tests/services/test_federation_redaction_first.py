"""A redaction received over federation before the event it redacts, both engines.

Room versions' "Handling redactions" (v3+): the redaction is applied once
both events are known, and only if its sender is on the target sender's
server or has the redact power level. Applied, the late event is served
redacted (/messages, /event) and is not in the relations index (/relations,
bundles); not applied, it is served whole. The remote's events are real
signed PDUs (tests/federation_dag.py) through the receiving handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.config import parse_config
from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.filters import RoomEventFilter
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.services.client_events import serialize_events
from ranvier.services.federation.events import FederationEventHandler
from ranvier.storage import Database
from tests.federation_dag import CREATOR, LOCAL, REMOTE_KEY, ROOM, VERSION, Room, join_room
from tests.services.test_federation_events import BOB, NOW, FakeRemote, accept, bob_joins, verify


@pytest.fixture
async def hs(database: Database, tmp_path: Path) -> AsyncIterator[Homeserver]:
    config = parse_config({}, tmp_path, env={})
    homeserver = Homeserver(config, database, SigningKey.generate("t"), lambda: NOW)
    await homeserver.accounts.register("alice", None, login=False)
    yield homeserver


@pytest.fixture
async def room(hs: Homeserver) -> Room:
    room = Room()
    await join_room(hs.rooms.events, room)
    return room


@pytest.fixture
def remote(room: Room) -> FakeRemote:
    fake = FakeRemote()
    for event in room.dag.by_id.values():
        fake.add(event)
    return fake


@pytest.fixture
def handler(hs: Homeserver, remote: FakeRemote) -> FederationEventHandler:
    return FederationEventHandler(hs, remote, verify)


CAROL = "@carol:other.test"


def redaction(room: Room, remote: FakeRemote, sender: str, target: str, prev: list[Event]) -> Event:
    """An ``m.room.redaction`` (top-level ``redacts``: room version 10)."""
    dag = room.dag
    dag.ts += 1
    pdu: dict[str, Any] = {
        "type": "m.room.redaction",
        "room_id": ROOM,
        "sender": sender,
        "content": {"reason": "spam"},
        "redacts": target,
        "origin_server_ts": dag.ts,
        "depth": max(p.depth for p in prev) + 1,
        "prev_events": [p.event_id for p in prev],
        "auth_events": [room.create.event_id, room.power.event_id, *sender_joins[sender]],
    }
    event = Event.from_pdu(VERSION, hash_and_sign_event(VERSION, pdu, "remote.test", REMOTE_KEY))
    dag.by_id[event.event_id] = event
    return remote.add(event)


#: Each sender's join (their auth event), set by the tests.
sender_joins: dict[str, list[str]] = {}


def message(
    room: Room, remote: FakeRemote, sender: str, join: Event, prev: list[Event], **content: Any
) -> Event:
    event = room.dag.event(
        "m.room.message",
        sender,
        {"msgtype": "m.text", **content},
        prev,
        [room.create, room.power, join],
    )
    return remote.add(event)


def in_thread(root: Event) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.thread", "event_id": root.event_id}}


async def served(hs: Homeserver, event_id: str) -> dict[str, Any]:
    """As GET /rooms/{roomId}/event/{eventId} serves it to the local user."""
    stored = await hs.rooms.events.get_event(event_id)
    assert stored is not None
    [body] = await serialize_events(hs, [stored], user_id=LOCAL, device_id=None)
    return body


async def in_messages(hs: Homeserver) -> dict[str, dict[str, Any]]:
    page = await hs.pagination.messages(
        LOCAL,
        None,
        ROOM,
        from_token=None,
        to_token=None,
        direction="b",
        limit=50,
        event_filter=RoomEventFilter(),
    )
    return {event["event_id"]: event for event in page["chunk"]}


async def related(hs: Homeserver, parent: Event) -> list[str]:
    body = await hs.relations.relations(
        LOCAL,
        None,
        ROOM,
        parent.event_id,
        rel_type=None,
        event_type=None,
        from_token=None,
        to_token=None,
        direction="b",
        limit=50,
        recurse=None,
    )
    return [event["event_id"] for event in body["chunk"]]


async def test_a_redaction_before_its_event_redacts_it_on_arrival(
    hs: Homeserver, room: Room, remote: FakeRemote, handler: FederationEventHandler
) -> None:
    join = remote.add(bob_joins(room))
    sender_joins[BOB] = [join.event_id]
    await accept(handler, join)
    root = message(room, remote, BOB, join, [join], body="root")
    await accept(handler, root)
    reply = message(room, remote, BOB, join, [root], body="secret", **in_thread(root))
    kept = message(room, remote, BOB, join, [root], body="kept", **in_thread(root))
    # The redaction cites the root, not the reply: nothing makes the receiver
    # fetch the reply first.
    redacts = redaction(room, remote, BOB, reply.event_id, [root])
    await accept(handler, redacts)
    assert await hs.rooms.events.get_event(reply.event_id) is None
    await accept(handler, reply)
    await accept(handler, kept)

    stored = await hs.rooms.events.get_event(reply.event_id)
    assert stored is not None and stored.redacted_by == redacts.event_id
    for body in ((await in_messages(hs))[reply.event_id], await served(hs, reply.event_id)):
        assert body["content"] == {}
        assert body["unsigned"]["redacted_because"]["event_id"] == redacts.event_id
    assert (await in_messages(hs))[kept.event_id]["content"]["body"] == "kept"
    assert await related(hs, root) == [kept.event_id]
    thread = (await served(hs, root.event_id))["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == kept.event_id
    # Read back from the database (not the cache) it is the same.
    hs.rooms.events._invalidate([reply.event_id])
    again = await hs.rooms.events.get_event(reply.event_id)
    assert again is not None and again.redacted_by == redacts.event_id


async def test_a_redaction_from_another_server_needs_the_power_to_redact(
    hs: Homeserver, room: Room, remote: FakeRemote, handler: FederationEventHandler
) -> None:
    bobs = remote.add(bob_joins(room))
    carols = remote.add(
        room.dag.event(
            "m.room.member",
            CAROL,
            {"membership": "join"},
            [bobs],
            [room.create, room.power, room.join_rules],
            CAROL,
        )
    )
    sender_joins[BOB] = [bobs.event_id]
    sender_joins[CAROL] = [carols.event_id]
    await accept(handler, bobs)
    await accept(handler, carols)
    known = message(room, remote, BOB, bobs, [carols], body="known")
    await accept(handler, known)

    # Without the redact power level (50 by default; Carol has 0), neither an
    # event held already nor one arriving after the redaction is redacted.
    late = message(room, remote, BOB, bobs, [known], body="late")
    redact_known = redaction(room, remote, CAROL, known.event_id, [known])
    redact_late = redaction(room, remote, CAROL, late.event_id, [known])
    for event in (redact_known, redact_late, late):
        await accept(handler, event)
    for event in (known, late):
        stored = await hs.rooms.events.get_event(event.event_id)
        assert stored is not None and stored.redacted_by is None
        assert (await served(hs, event.event_id))["content"]["body"] == event.content["body"]

    # Given the power level, her redaction that came first applies on arrival.
    power = remote.add(
        room.dag.event(
            "m.room.power_levels",
            CREATOR,
            {"users": {CREATOR: 100, CAROL: 50}},
            [redact_known, redact_late, late],
            [room.create, room.power, room.creator_join],
            "",
        )
    )
    await accept(handler, power)
    later = message(room, remote, BOB, bobs, [power], body="later")
    room_power = room.power
    room.power = power  # her redaction's auth events cite the new power levels
    redact_later = redaction(room, remote, CAROL, later.event_id, [power])
    room.power = room_power
    await accept(handler, redact_later)
    await accept(handler, later)
    stored = await hs.rooms.events.get_event(later.event_id)
    assert stored is not None and stored.redacted_by == redact_later.event_id
    assert (await in_messages(hs))[later.event_id]["content"] == {}
