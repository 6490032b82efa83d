"""The relations index for events received over federation (EventStore
persist_federated_events → ranvier/storage/relations.py), both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.storage import Database
from ranvier.storage.events import EventStore, FederatedEvent
from ranvier.storage.relations import RelationStore
from ranvier.storage.rooms import RoomStore
from ranvier.storage.state import StateStore
from tests.federation_dag import CREATOR, LOCAL, REMOTE_KEY, ROOM, VERSION, Room, join_room


@pytest.fixture
async def store(database: Database) -> AsyncIterator[EventStore]:
    yield EventStore(database, StateStore(database), RoomStore(database))


def thread_reply(root: str) -> dict[str, Any]:
    return {"body": "r", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


def redaction(room: Room, target: Event, prev: Event) -> Event:
    room.dag.ts += 1
    pdu: dict[str, Any] = {
        "type": "m.room.redaction",
        "room_id": ROOM,
        "sender": CREATOR,
        "content": {},
        "redacts": target.event_id,
        "origin_server_ts": room.dag.ts,
        "depth": prev.depth + 1,
        "prev_events": [prev.event_id],
        "auth_events": [room.create.event_id, room.power.event_id],
    }
    return Event.from_pdu(VERSION, hash_and_sign_event(VERSION, pdu, "remote.test", REMOTE_KEY))


async def test_federated_relations_indexed_only_when_shown_and_unindexed_by_redaction(
    store: EventStore, database: Database
) -> None:
    room = Room()
    await join_room(store, room)
    dag = room.dag
    auth = [room.create, room.power, room.alice_join]
    state = room.state_after_join
    root = dag.event("m.room.message", LOCAL, {"body": "root"}, [room.alice_join], auth)
    first = dag.event("m.room.message", LOCAL, thread_reply(root.event_id), [root], auth)
    second = dag.event("m.room.message", LOCAL, thread_reply(root.event_id), [first], auth)
    soft = dag.event("m.room.message", LOCAL, thread_reply(root.event_id), [second], auth)
    rejected = dag.event("m.room.message", LOCAL, thread_reply(root.event_id), [second], auth)
    await store.persist_federated_events(
        ROOM,
        [
            FederatedEvent(root, state),
            FederatedEvent(first, state),
            FederatedEvent(second, state),
            FederatedEvent(soft, state, soft_failed=True),
            FederatedEvent(rejected, state, rejected=True),
        ],
    )
    relations = RelationStore(database)
    top = await store.current_position()
    children = await relations.children(
        ROOM,
        root.event_id,
        rel_type="m.thread",
        event_type=None,
        from_pos=top,
        to_pos=0,
        direction="b",
        limit=10,
        recurse=False,
    )
    assert [event_id for event_id, _ in children] == [second.event_id, first.event_id]
    summaries = await relations.thread_summaries([root.event_id], LOCAL)
    summary = summaries[(ROOM, root.event_id)]
    assert (summary.count, summary.latest_event_id, summary.user_replied) == (
        2,
        second.event_id,
        True,
    )
    assert [t for t, _ in await relations.threads(ROOM, None, 10, None)] == [root.event_id]

    await store.persist_federated_events(
        ROOM, [FederatedEvent(redaction(room, second, second), state)]
    )
    summary = (await relations.thread_summaries([root.event_id], None))[(ROOM, root.event_id)]
    assert (summary.count, summary.latest_event_id, summary.user_replied) == (
        1,
        first.event_id,
        False,
    )
    rows = await database.fetch_all("SELECT latest_event_id FROM threads")
    assert [row[0] for row in rows] == [first.event_id]
