"""Receiving room events from another server (services/federation/events.py), both engines.

The local server (``localhost``) is in a room of ``remote.test``; the remote's
events are real signed PDUs (tests/federation_dag.py). ``FakeRemote`` plays
the origin for the gap-filling requests (/get_missing_events, /state_ids,
/event) from the DAG the test built, and records what was asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ranvier.config import parse_config
from ranvier.core.events import Event
from ranvier.core.room_versions import RoomVersion
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.services.federation.events import (
    FederationEventHandler,
    PduCheckFailed,
    PduOutcome,
)
from ranvier.storage import Database
from ranvier.storage.state import StateMap
from tests.federation_dag import CREATOR, ROOM, Room, join_room, state_of

BOB = "@bob:remote.test"
NOW = 1_700_000_100_000


class FakeRemote:
    """The origin server, answering from the events the test gives it."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        #: The state before an event, as the origin's /state_ids would answer it.
        self.state_before: dict[str, StateMap] = {}
        self.calls: list[tuple[str, Any]] = []
        self.missing_events_fails = False

    def add(self, event: Event, state_before: StateMap | None = None) -> Event:
        self.events[event.event_id] = event
        if state_before is not None:
            self.state_before[event.event_id] = state_before
        return event

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[Mapping[str, Any]]:
        self.calls.append(("get_missing_events", (list(earliest_events), list(latest_events))))
        if self.missing_events_fails:
            raise ConnectionError("unreachable")
        found: list[Event] = []
        seen = set(earliest_events) | set(latest_events)
        frontier = [p for eid in latest_events for p in self.events[eid].prev_event_ids]
        while frontier and len(found) < limit:
            event_id = frontier.pop(0)
            if event_id in seen or event_id not in self.events:
                continue
            seen.add(event_id)
            found.append(self.events[event_id])
            frontier.extend(self.events[event_id].prev_event_ids)
        return [dict(e.pdu) for e in found]

    async def state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        self.calls.append(("state_ids", event_id))
        state = self.state_before[event_id]
        chain: set[str] = set()
        frontier = list(state.values())
        while frontier:
            auth_id = frontier.pop()
            for parent in self.events[auth_id].auth_event_ids:
                if parent not in chain:
                    chain.add(parent)
                    frontier.append(parent)
        return list(state.values()), sorted(chain)

    async def event(self, destination: str, event_id: str) -> Mapping[str, Any] | None:
        self.calls.append(("event", event_id))
        event = self.events.get(event_id)
        return None if event is None else dict(event.pdu)


async def verify(version: RoomVersion, pdu: Mapping[str, Any]) -> Event:
    """Stands for the signature and hash checks: a PDU marked ``forged`` fails them."""
    if pdu.get("content", {}).get("forged"):
        raise PduCheckFailed("bad signature")
    return Event.from_pdu(version, pdu)


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


async def timeline(hs: Homeserver) -> list[str]:
    store = hs.rooms.events
    events = await store.room_events_in_stream_range(ROOM, 0, await store.current_position(), 100)
    return [e.event_id for e in events]


def bob_joins(room: Room) -> Event:
    return room.dag.event(
        "m.room.member",
        BOB,
        {"membership": "join"},
        [room.alice_join],
        [room.create, room.power, room.join_rules],
        BOB,
    )


async def accept(handler: FederationEventHandler, event: Event) -> None:
    outcome = await handler.on_receive_pdu("remote.test", event)
    assert outcome == PduOutcome(event.event_id), outcome


async def test_a_message_is_accepted_shown_and_becomes_the_extremity(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    message = room.dag.event(
        "m.room.message",
        CREATOR,
        {"body": "hi"},
        [room.alice_join],
        [room.create, room.power, room.creator_join],
    )
    await accept(handler, message)
    assert await timeline(hs) == [room.alice_join.event_id, message.event_id]
    assert await hs.rooms.events.forward_extremities(ROOM) == [(message.event_id, message.depth)]
    # A duplicate changes nothing and is not an error.
    assert await handler.on_receive_pdu("remote.test", message) == PduOutcome(message.event_id)
    assert await timeline(hs) == [room.alice_join.event_id, message.event_id]


async def test_an_event_its_auth_events_do_not_allow_is_rejected(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    # Bob never joined: a message citing no membership of his fails step 4.
    message = room.dag.event(
        "m.room.message", BOB, {"body": "x"}, [room.alice_join], [room.create, room.power]
    )
    outcome = await handler.on_receive_pdu("remote.test", message)
    assert outcome.error is not None and "auth events" in outcome.error
    assert await timeline(hs) == [room.alice_join.event_id]
    stored = await hs.rooms.events.get_event(message.event_id)
    assert stored is not None and stored.rejected
    assert await hs.rooms.events.forward_extremities(ROOM) == [(room.alice_join.event_id, 5)]


async def test_an_event_the_state_before_it_does_not_allow_is_rejected(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    join = bob_joins(room)
    await accept(handler, join)
    ban = room.dag.event(
        "m.room.member",
        CREATOR,
        {"membership": "ban"},
        [join],
        [room.create, room.power, room.creator_join, join],
        BOB,
    )
    await accept(handler, ban)
    # Cites the ban as its prev event, but his old join as auth event: step 4
    # passes, step 5 (the state before it: banned) fails.
    message = room.dag.event(
        "m.room.message", BOB, {"body": "x"}, [ban], [room.create, room.power, join]
    )
    outcome = await handler.on_receive_pdu("remote.test", message)
    assert outcome.error is not None and "state before" in outcome.error
    assert message.event_id not in await timeline(hs)


async def test_an_event_only_the_current_state_forbids_is_soft_failed(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    join = bob_joins(room)
    await accept(handler, join)
    ban = room.dag.event(
        "m.room.member",
        CREATOR,
        {"membership": "ban"},
        [join],
        [room.create, room.power, room.creator_join, join],
        BOB,
    )
    await accept(handler, ban)
    # A message on a fork from before the ban: allowed where it was sent,
    # forbidden by the room as it is now (Server-Server API, "Soft failure").
    message = room.dag.event(
        "m.room.message", BOB, {"body": "late"}, [join], [room.create, room.power, join]
    )
    outcome = await handler.on_receive_pdu("remote.test", message)
    assert outcome == PduOutcome(message.event_id, soft_failed=True)
    assert message.event_id not in await timeline(hs)
    assert await hs.rooms.events.forward_extremities(ROOM) == [(ban.event_id, ban.depth)]
    membership = await hs.rooms.get_membership(ROOM, BOB)
    assert membership == "ban"


async def test_missing_prev_events_come_from_get_missing_events_in_order(
    hs: Homeserver, room: Room, remote: FakeRemote, handler: FederationEventHandler
) -> None:
    auth = [room.create, room.power, room.creator_join]
    first = remote.add(
        room.dag.event("m.room.message", CREATOR, {"body": "1"}, [room.alice_join], auth)
    )
    second = remote.add(room.dag.event("m.room.message", CREATOR, {"body": "2"}, [first], auth))
    third = remote.add(room.dag.event("m.room.message", CREATOR, {"body": "3"}, [second], auth))
    await accept(handler, third)
    assert await timeline(hs) == [
        room.alice_join.event_id,
        first.event_id,
        second.event_id,
        third.event_id,
    ]
    assert remote.calls[0] == (
        "get_missing_events",
        ([room.alice_join.event_id], [third.event_id]),
    )
    assert not [call for call in remote.calls if call[0] == "state_ids"]


async def test_a_gap_get_missing_events_cannot_fill_is_filled_through_state_ids(
    hs: Homeserver, room: Room, remote: FakeRemote, handler: FederationEventHandler
) -> None:
    remote.missing_events_fails = True
    join = remote.add(bob_joins(room), state_before=room.state_after_join)
    topic = remote.add(
        room.dag.event(
            "m.room.topic",
            CREATOR,
            {"topic": "t"},
            [join],
            [room.create, room.power, room.creator_join],
            "",
        ),
        state_before={**room.state_after_join, **state_of(join)},
    )
    message = room.dag.event(
        "m.room.message", BOB, {"body": "x"}, [topic], [room.create, room.power, join]
    )
    await accept(handler, message)
    assert ("state_ids", topic.event_id) in remote.calls
    # The gap's events are outliers; the message has the state the origin gave.
    stored_topic = await hs.rooms.events.get_event(topic.event_id)
    assert stored_topic is not None and stored_topic.outlier
    expected = {**room.state_after_join, **state_of(join, topic)}
    assert await hs.rooms.events.state_at_event(message.event_id) == expected
    assert await hs.rooms.events.current_state_ids(ROOM) == expected
    assert await timeline(hs) == [room.alice_join.event_id, message.event_id]
    assert await hs.rooms.get_membership(ROOM, BOB) == "join"


async def test_concurrent_state_changes_resolve_the_same_way_whatever_the_order(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    auth = [room.create, room.power, room.creator_join]
    early = room.dag.event("m.room.topic", CREATOR, {"topic": "early"}, [room.alice_join], auth, "")
    late = room.dag.event("m.room.topic", CREATOR, {"topic": "late"}, [room.alice_join], auth, "")
    # Received newest first; state resolution v2 orders equal-power changes
    # by origin_server_ts, so the later topic wins either way.
    await accept(handler, late)
    await accept(handler, early)
    current = await hs.rooms.events.current_state_ids(ROOM)
    assert current[("m.room.topic", "")] == late.event_id
    assert {e for e, _ in await hs.rooms.events.forward_extremities(ROOM)} == {
        early.event_id,
        late.event_id,
    }
    merge = room.dag.event(
        "m.room.message",
        CREATOR,
        {"body": "m"},
        [early, late],
        [room.create, room.power, room.creator_join],
    )
    await accept(handler, merge)
    assert await hs.rooms.events.state_at_event(merge.event_id) == current
    assert await hs.rooms.events.forward_extremities(ROOM) == [(merge.event_id, merge.depth)]


async def test_a_forged_event_in_the_gap_is_dropped_and_the_pdu_is_rejected(
    hs: Homeserver, room: Room, remote: FakeRemote, handler: FederationEventHandler
) -> None:
    auth = [room.create, room.power, room.creator_join]
    forged = remote.add(
        room.dag.event(
            "m.room.message", CREATOR, {"body": "1", "forged": True}, [room.alice_join], auth
        ),
        state_before=room.state_after_join,
    )
    message = room.dag.event("m.room.message", CREATOR, {"body": "2"}, [forged], auth)
    outcome = await handler.on_receive_pdu("remote.test", message)
    assert outcome.error is not None and "gap" in outcome.error
    assert await hs.rooms.events.get_event(forged.event_id) is None
    assert await timeline(hs) == [room.alice_join.event_id]


async def test_an_event_of_an_unknown_room_is_refused(
    hs: Homeserver, room: Room, handler: FederationEventHandler
) -> None:
    elsewhere = Event.from_pdu(
        room.create.room_version, {**room.create.pdu, "room_id": "!other:remote.test"}
    )
    outcome = await handler.on_receive_pdu("remote.test", elsewhere)
    assert outcome == PduOutcome(elsewhere.event_id, "this server is not in the room")
    assert await hs.rooms.events.get_event(elsewhere.event_id) is None
