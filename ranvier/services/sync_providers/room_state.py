"""A room's ``state`` section and ``summary``: Synapse's rule, state = (state at
timeline start ∪ state at its end) − state at the previous sync − events in the
timeline; lazy-loaded members as the spec's "Lazy-loading room members" and
sync.yaml describe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ranvier.services.sync_providers.base import SyncRequest
from ranvier.services.sync_providers.lazy_members import LazyMemberCache
from ranvier.services.sync_providers.room_summary import room_summaries
from ranvier.services.sync_providers.timeline import Timeline
from ranvier.storage.state import StateKey, StateMap

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

MEMBER = "m.room.member"

#: (start, end, previous) state groups of a room.
_Groups = tuple[int | None, int | None, int | None]


@dataclass(slots=True)
class RoomSync:
    """One room of ``rooms.join`` or ``rooms.leave`` being built."""

    room_id: str
    full_state: bool
    joined_from: int | None
    #: The timeline is the room's latest events whatever the token: an initial
    #: sync, or a room newly joined since it (not ``full_state=true`` alone,
    #: whose timeline stays incremental: sync.yaml).
    from_start: bool = False
    timeline: Timeline | None = None
    state_ids: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None


class RoomStateBuilder:
    def __init__(self, hs: Homeserver, lazy_members: LazyMemberCache) -> None:
        self.hs = hs
        self.lazy_members = lazy_members

    async def fill(
        self,
        request: SyncRequest,
        rooms: Sequence[RoomSync],
        previous_groups: dict[str, int | None],
    ) -> None:
        """Fill ``state_ids`` and ``summary`` of each room (each has a timeline)."""
        groups = {room.room_id: _groups_of(room, previous_groups) for room in rooms}
        # Every group needed is read in one batch (an initial sync needs one or
        # two per room).
        states = await self.hs.rooms.state_store.get_state_ids_many(
            group
            for room in rooms
            if room.full_state or len(set(groups[room.room_id])) > 1
            for group in groups[room.room_id]
            if group is not None
        )
        candidates: dict[str, dict[str, StateKey]] = {}
        starts: dict[str, StateMap] = {}
        summary_rooms: list[str] = []
        for room in rooms:
            found, start = _state_delta(room, groups[room.room_id], states)
            candidates[room.room_id] = found
            if start is not None:
                starts[room.room_id] = start
            if room.full_state or _has_members(room, found):
                summary_rooms.append(room.room_id)
        summaries = await room_summaries(self.hs, request.user_id, summary_rooms, starts)
        lazy = request.filter.room.state.lazy_load_members
        for room in rooms:
            room.summary = summaries.get(room.room_id)
            found = candidates[room.room_id]
            if lazy:
                found = await self._lazy_members(
                    request, room, found, starts.get(room.room_id), groups[room.room_id][0]
                )
            room.state_ids = list(found)

    async def _lazy_members(
        self,
        request: SyncRequest,
        room: RoomSync,
        found: dict[str, StateKey],
        start: StateMap | None,
        start_group: int | None,
    ) -> dict[str, StateKey]:
        timeline = room.timeline
        assert timeline is not None
        user_id = request.user_id
        required = {e.event.sender for e in timeline.events}
        if room.summary is not None:
            required.update(room.summary.get("m.heroes", []))
        if room.full_state:
            required.add(user_id)
            # Full state: only the members needed, whatever changed.
            kept = {
                eid: key for eid, key in found.items() if key[0] != MEMBER or key[1] in required
            }
        else:
            # Incremental: every membership change in the gap (sync.yaml: "MUST
            # return membership events for events in the gap ... regardless as
            # to whether or not they are redundant"), plus the senders' members.
            kept = dict(found)
        if start is None:
            keys = [(MEMBER, member) for member in sorted(required)]
            start = (
                await self.hs.rooms.state_store.get_state_ids_for_keys(start_group, keys)
                if start_group is not None
                else {}
            )
        self._add_required_members(request, room, kept, required, start)
        if not request.filter.room.state.include_redundant_members:
            self._record_sent(request, room, kept)
        return kept

    def _add_required_members(
        self,
        request: SyncRequest,
        room: RoomSync,
        kept: dict[str, StateKey],
        required: set[str],
        start: StateMap,
    ) -> None:
        assert room.timeline is not None
        redundant_ok = request.filter.room.state.include_redundant_members
        in_timeline = {e.event_id for e in room.timeline.events}
        for member in required:
            key = (MEMBER, member)
            event_id = start.get(key)
            if event_id is None or event_id in kept or event_id in in_timeline:
                continue
            if (
                not room.full_state
                and not redundant_ok
                and self.lazy_members.was_sent(
                    request.user_id, request.device_id, room.room_id, member, event_id
                )
            ):
                continue
            kept[event_id] = key

    def _record_sent(self, request: SyncRequest, room: RoomSync, kept: dict[str, StateKey]) -> None:
        assert room.timeline is not None
        user_id, device_id = request.user_id, request.device_id
        for event_id, key in kept.items():
            if key[0] == MEMBER:
                self.lazy_members.record(user_id, device_id, room.room_id, key[1], event_id)
        for event in room.timeline.events:
            if event.event.type == MEMBER and event.event.state_key is not None:
                self.lazy_members.record(
                    user_id, device_id, room.room_id, event.event.state_key, event.event_id
                )


def _groups_of(room: RoomSync, previous_groups: dict[str, int | None]) -> _Groups:
    """The state groups at the timeline's start and end, and at the previous sync."""
    timeline = room.timeline
    assert timeline is not None
    end_group = timeline.last.state_group if timeline.last is not None else None
    start_group = timeline.events[0].state_group_before if timeline.events else end_group
    previous_group = None if room.full_state else previous_groups.get(room.room_id)
    return (start_group, end_group, previous_group)


def _state_delta(
    room: RoomSync, groups: _Groups, states: dict[int, StateMap]
) -> tuple[dict[str, StateKey], StateMap | None]:
    """The state events to send (event ID → key), and the state at the
    timeline's start (None when nothing changed and it was not read)."""
    timeline = room.timeline
    assert timeline is not None
    start_group, end_group, previous_group = groups
    if not room.full_state and previous_group == start_group == end_group:
        return {}, None
    start = states[start_group] if start_group else {}
    end = start if end_group == start_group else (states[end_group] if end_group else {})
    prev: StateMap = {} if previous_group is None else states[previous_group]
    in_timeline = {e.event_id for e in timeline.events}
    found: dict[str, StateKey] = {}
    for state in (start, end) if end is not start else (start,):
        for key, event_id in state.items():
            if event_id not in in_timeline and prev.get(key) != event_id:
                found[event_id] = key
    return found, start


def _has_members(room: RoomSync, found: dict[str, StateKey]) -> bool:
    assert room.timeline is not None
    return any(e.event.type == MEMBER for e in room.timeline.events) or any(
        key[0] == MEMBER for key in found.values()
    )
