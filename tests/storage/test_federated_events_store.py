"""Events received over federation (EventStore.persist_federated_events), both engines.

The events are real signed PDUs of a room on another server (``remote.test``),
built with the core; what the receiver decides (state before each event,
outlier, rejected, soft-failed, the new current state) is given, and the
store must record exactly that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ranvier.storage import Database
from ranvier.storage.events import EventStore, FederatedEvent
from ranvier.storage.rooms import RoomStore
from ranvier.storage.state import StateStore
from tests.federation_dag import CREATOR, LOCAL, ROOM, Room, join_room, state_of


@pytest.fixture
async def store(database: Database) -> AsyncIterator[EventStore]:
    rooms = RoomStore(database)
    yield EventStore(database, StateStore(database), rooms)


async def timeline(store: EventStore) -> list[str]:
    events = await store.room_events_in_stream_range(ROOM, 0, await store.current_position(), 100)
    return [e.event_id for e in events]


async def test_a_remote_join_stores_outliers_then_the_join_with_its_state(
    store: EventStore,
) -> None:
    room = Room()
    await join_room(store, room)

    assert await timeline(store) == [room.alice_join.event_id]
    create = await store.get_event(room.create.event_id)
    assert create is not None and create.outlier and create.state_group is None
    assert await store.state_at_event(room.alice_join.event_id) == room.state
    assert await store.state_after_event(room.alice_join.event_id) == room.state_after_join
    assert await store.current_state_ids(ROOM) == room.state_after_join
    assert await store.forward_extremities(ROOM) == [(room.alice_join.event_id, 5)]
    membership = await store.rooms.get_membership(ROOM, LOCAL)
    assert membership is not None and membership.membership == "join"
    join = await store.get_event(room.alice_join.event_id)
    assert join is not None
    changes = await store.membership_changes_for_user(LOCAL, 0, await store.current_position())
    assert [(c.room_id, c.membership, c.stream_ordering) for c in changes] == [
        (ROOM, "join", join.stream_ordering)
    ]
    # The creator's join came through the state: a membership, not a change of alice's.
    creator = await store.rooms.get_membership(ROOM, CREATOR)
    assert creator is not None and creator.membership == "join"


async def test_persisting_again_writes_nothing(store: EventStore, database: Database) -> None:
    room = Room()
    await join_room(store, room)
    rows = int(await database.fetch_val("SELECT COUNT(*) FROM events"))
    again = await store.persist_federated_events(
        ROOM, [FederatedEvent(room.alice_join, room.state)]
    )
    assert again == []
    assert int(await database.fetch_val("SELECT COUNT(*) FROM events")) == rows


async def test_forks_become_extremities_until_an_event_cites_both(store: EventStore) -> None:
    room = Room()
    await join_room(store, room)
    dag = room.dag
    auth = [room.create, room.power, room.alice_join]
    message = dag.event("m.room.message", LOCAL, {"body": "a"}, [room.alice_join], auth)
    topic = dag.event(
        "m.room.topic", CREATOR, {"topic": "t"}, [room.alice_join], [room.create, room.power], ""
    )
    state = room.state_after_join
    with_topic = {**state, **state_of(topic)}
    await store.persist_federated_events(
        ROOM,
        [FederatedEvent(message, state), FederatedEvent(topic, state)],
        current_state=with_topic,
    )
    assert {e for e, _ in await store.forward_extremities(ROOM)} == {
        message.event_id,
        topic.event_id,
    }
    stored_message = await store.get_event(message.event_id)
    assert stored_message is not None
    # A message reuses the group of the state before it; the topic adds a delta.
    assert stored_message.state_group == stored_message.state_group_before
    assert await store.state_after_event(topic.event_id) == with_topic

    merge = dag.event("m.room.message", LOCAL, {"body": "b"}, [message, topic], auth)
    await store.persist_federated_events(
        ROOM, [FederatedEvent(merge, with_topic)], current_state=with_topic
    )
    assert await store.forward_extremities(ROOM) == [(merge.event_id, merge.depth)]
    assert await store.state_at_event(merge.event_id) == with_topic
    assert await store.current_state_ids(ROOM) == with_topic
    assert await timeline(store) == [
        room.alice_join.event_id,
        message.event_id,
        topic.event_id,
        merge.event_id,
    ]


async def test_soft_failed_and_rejected_events_are_kept_but_never_shown(
    store: EventStore,
) -> None:
    room = Room()
    await join_room(store, room)
    dag = room.dag
    state = room.state_after_join
    soft = dag.event(
        "m.room.topic", LOCAL, {"topic": "soft"}, [room.alice_join], [room.create], ""
    )
    bad = dag.event("m.room.name", LOCAL, {"name": "bad"}, [room.alice_join], [room.create], "")
    await store.persist_federated_events(
        ROOM,
        [FederatedEvent(soft, state, soft_failed=True), FederatedEvent(bad, state, rejected=True)],
    )
    assert await timeline(store) == [room.alice_join.event_id]
    assert await store.forward_extremities(ROOM) == [(room.alice_join.event_id, 5)]
    assert await store.current_state_ids(ROOM) == state
    stored_soft = await store.get_event(soft.event_id)
    stored_bad = await store.get_event(bad.event_id)
    assert stored_soft is not None and stored_soft.soft_failed and not stored_soft.rejected
    assert stored_bad is not None and stored_bad.rejected
    # A soft-failed state event is still in the state after it (later events
    # may cite it); a rejected one changes nothing.
    assert await store.state_after_event(soft.event_id) == {**state, **state_of(soft)}
    assert await store.state_after_event(bad.event_id) == state
    store._cache.clear()
    reloaded = await store.get_event(soft.event_id)
    assert reloaded is not None and reloaded.soft_failed


async def test_state_resolution_reverting_a_membership_is_a_membership_change(
    store: EventStore,
) -> None:
    room = Room()
    await join_room(store, room)
    dag = room.dag
    leave = dag.event(
        "m.room.member",
        LOCAL,
        {"membership": "leave"},
        [room.alice_join],
        [room.create, room.power, room.alice_join],
        LOCAL,
    )
    state = room.state_after_join
    await store.persist_federated_events(
        ROOM, [FederatedEvent(leave, state)], current_state={**state, **state_of(leave)}
    )
    left = await store.rooms.get_membership(ROOM, LOCAL)
    assert left is not None and left.membership == "leave"
    before = await store.current_position()
    # Resolution over a fork picks the older join again: no new event, yet
    # alice is joined again and /sync must see that as a change.
    fork = dag.event("m.room.message", CREATOR, {"body": "x"}, [room.alice_join], [room.create])
    await store.persist_federated_events(ROOM, [FederatedEvent(fork, state)], current_state=state)
    again = await store.rooms.get_membership(ROOM, LOCAL)
    assert again is not None and again.membership == "join"
    changes = await store.membership_changes_for_user(LOCAL, before, await store.current_position())
    assert [(c.membership, c.event_id) for c in changes] == [("join", room.alice_join.event_id)]
    assert changes[0].stream_ordering > before
    assert await store.current_state_ids(ROOM) == state


async def test_state_naming_an_unknown_event_writes_nothing(
    store: EventStore, database: Database
) -> None:
    room = Room()
    await join_room(store, room)
    rows = int(await database.fetch_val("SELECT COUNT(*) FROM events"))
    message = room.dag.event("m.room.message", LOCAL, {"body": "a"}, [room.alice_join], [])
    bogus = {**room.state_after_join, ("m.room.topic", ""): "$unknown"}
    with pytest.raises(ValueError, match="not stored"):
        await store.persist_federated_events(ROOM, [FederatedEvent(message, bogus)])
    assert int(await database.fetch_val("SELECT COUNT(*) FROM events")) == rows
    assert await store.get_event(message.event_id) is None
