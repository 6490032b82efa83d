"""A room of another server (``remote.test``) as signed events, for federation tests.

``Dag`` builds real PDUs with the core (hashed and signed with the remote's
key); ``Room`` is a small public room that ``@alice:localhost`` joins;
``join_room`` stores it the way a send_join does (state as outliers, then the
join with its state).
"""

from __future__ import annotations

from typing import Any

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
from ranvier.core.signing import SigningKey
from ranvier.storage.events import EventStore, FederatedEvent, NewRoom
from ranvier.storage.state import StateMap

VERSION = get_room_version("10")
ROOM = "!room:remote.test"
REMOTE_KEY = SigningKey.generate("r1")
CREATOR = "@creator:remote.test"
LOCAL = "@alice:localhost"


class Dag:
    """Builds signed events of one room; ``ts`` keeps event IDs distinct."""

    def __init__(self, room_id: str = ROOM, server_name: str = "remote.test") -> None:
        self.ts = 1_700_000_000_000
        self.by_id: dict[str, Event] = {}
        self.room_id = room_id
        self.server_name = server_name

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        prev: list[Event],
        auth: list[Event],
        state_key: str | None = None,
    ) -> Event:
        self.ts += 1
        pdu: dict[str, Any] = {
            "type": event_type,
            "room_id": self.room_id,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.ts,
            "depth": max((p.depth for p in prev), default=0) + 1,
            "prev_events": [p.event_id for p in prev],
            "auth_events": [a.event_id for a in auth],
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        event = Event.from_pdu(
            VERSION, hash_and_sign_event(VERSION, pdu, self.server_name, REMOTE_KEY)
        )
        self.by_id[event.event_id] = event
        return event


def state_of(*events: Event) -> StateMap:
    return {e.state_tuple: e.event_id for e in events}


class Room:
    """create → creator join → power levels → join rules (public), then alice joins."""

    def __init__(self) -> None:
        dag = self.dag = Dag()
        self.create = dag.event("m.room.create", CREATOR, {"room_version": "10"}, [], [], "")
        self.creator_join = dag.event(
            "m.room.member", CREATOR, {"membership": "join"}, [self.create], [self.create], CREATOR
        )
        auth = [self.create, self.creator_join]
        self.power = dag.event(
            "m.room.power_levels", CREATOR, {"users": {CREATOR: 100}}, [self.creator_join], auth, ""
        )
        auth = [self.create, self.creator_join, self.power]
        self.join_rules = dag.event(
            "m.room.join_rules", CREATOR, {"join_rule": "public"}, [self.power], auth, ""
        )
        self.state = state_of(self.create, self.creator_join, self.power, self.join_rules)
        self.alice_join = dag.event(
            "m.room.member",
            LOCAL,
            {"membership": "join"},
            [self.join_rules],
            [self.create, self.power, self.join_rules],
            LOCAL,
        )
        self.state_after_join = {**self.state, **state_of(self.alice_join)}


async def join_room(store: EventStore, room: Room) -> None:
    """What a send_join gives: the state and auth chain as outliers, then the join."""
    outliers = [
        FederatedEvent(e, None)
        for e in (room.create, room.creator_join, room.power, room.join_rules)
    ]
    new_room = NewRoom(ROOM, "10", CREATOR, False, room.dag.ts)
    await store.persist_federated_events(ROOM, outliers, new_room=new_room)
    await store.persist_federated_events(
        ROOM, [FederatedEvent(room.alice_join, room.state)], current_state=room.state_after_join
    )
