"""The ``events`` stream: ``rooms.join``, ``rooms.leave``, ``rooms.invite`` and
``rooms.knock`` (sync.yaml). Runs after the other providers, whose per-room
additions (ephemeral events, room account data) it places in the rooms and by
which it decides which quiet joined rooms an incremental sync shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.core.filters import filter_events
from ranvier.services.sync_providers.base import Section, SyncRequest
from ranvier.services.sync_providers.formatting import Serializer
from ranvier.services.sync_providers.joined_rooms import joined_rooms
from ranvier.services.sync_providers.lazy_members import LazyMemberCache
from ranvier.services.sync_providers.left_rooms import left_rooms
from ranvier.services.sync_providers.room_counts import room_counts, rooms_with_new_counts
from ranvier.services.sync_providers.room_state import RoomStateBuilder, RoomSync
from ranvier.services.sync_providers.stripped_state import stripped_state
from ranvier.services.sync_tokens import pagination_token

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class RoomsProvider:
    def __init__(self, hs: Homeserver, lazy_members: LazyMemberCache) -> None:
        self.hs = hs
        self.lazy_members = lazy_members
        self._states = RoomStateBuilder(hs, lazy_members)

    async def changes(self, request: SyncRequest) -> Section:
        if request.since is None:
            self.lazy_members.clear(request.user_id, request.device_id)
        joined = await joined_rooms(self.hs, self._states, request)
        left = await left_rooms(self.hs, self._states, request)
        shown = [room for room in joined.values() if not _quiet(request, room)]
        serializer = await self._serialize(request, shown, list(left.values()))
        rooms = {
            "join": await self._joined_entries(request, shown, serializer),
            "invite": {
                m.room_id: {"invite_state": {"events": await stripped_state(self.hs, m)}}
                for m in request.memberships.invited
            },
            "leave": {
                room.room_id: _left_entry(request, room, serializer) for room in left.values()
            },
            "knock": {
                m.room_id: {"knock_state": {"events": await stripped_state(self.hs, m)}}
                for m in request.memberships.knocked
            },
        }
        return Section(fields={"rooms": rooms}, has_updates=any(rooms.values()))

    async def _serialize(
        self, request: SyncRequest, joined: list[RoomSync], left: list[RoomSync]
    ) -> Serializer:
        """Every room event of the response, serialized in one batch."""
        state_events = await self.hs.rooms.events.get_events(
            [eid for room in [*joined, *left] for eid in room.state_ids]
        )
        state_filter = request.filter.room.state
        serializer = Serializer()
        for section, rooms in (("join", joined), ("leave", left)):
            for room in rooms:
                room_state = sorted(
                    (state_events[eid] for eid in room.state_ids if eid in state_events),
                    key=lambda e: e.stream_ordering,
                )
                room_state = [
                    e for e in room_state if state_filter.matches(e.event, room_id=room.room_id)
                ]
                serializer.add((section, room.room_id, "state"), room_state)
                timeline = room.timeline.events if room.timeline is not None else []
                serializer.add((section, room.room_id, "timeline"), timeline)
        await serializer.run(self.hs, request.filter, request.user_id, request.device_id)
        return serializer

    async def _joined_entries(
        self, request: SyncRequest, rooms: list[RoomSync], serializer: Serializer
    ) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        new_counts = rooms_with_new_counts(request)
        for room in rooms:
            entry = _joined_entry(request, room, serializer, room.room_id in new_counts)
            if entry is not None:
                entries[room.room_id] = entry
        # Room summary/counts: the per-room counts of the rooms shown.
        counts = await room_counts(self.hs, request, list(entries))
        for room_id, entry in entries.items():
            entry.update(counts.get(room_id, {}))
        return entries


def _quiet(request: SyncRequest, room: RoomSync) -> bool:
    """A joined room an incremental sync leaves out: nothing in the range (no
    events, no ephemeral, no room account data). Skipped up front, so the
    per-room work scales with the active rooms, not all of them."""
    extras = request.room_extras
    return (
        request.since is not None
        and not room.full_state
        and room.timeline is None
        and not room.state_ids
        and room.room_id not in extras.ephemeral
        and room.room_id not in extras.account_data
    )


def _joined_entry(
    request: SyncRequest, room: RoomSync, serializer: Serializer, new_counts: bool
) -> dict[str, Any] | None:
    room_id = room.room_id
    room_filter = request.filter.room
    ephemeral = filter_events(
        room_filter.ephemeral, request.room_extras.ephemeral.get(room_id, []), room_id=room_id
    )
    account_data = filter_events(
        room_filter.account_data, request.room_extras.account_data.get(room_id, []), room_id=room_id
    )
    timeline_events = serializer.get(("join", room_id, "timeline"))
    state = serializer.get(("join", room_id, "state"))
    timeline = room.timeline
    if not (
        request.since is None
        or room.full_state
        or timeline_events
        or state
        or ephemeral
        or account_data
        or new_counts
        or (timeline is not None and timeline.limited)
    ):
        return None
    return {
        "summary": room.summary or {},
        "state": {"events": state},
        "timeline": {
            "events": timeline_events,
            "limited": timeline.limited if timeline is not None else False,
            "prev_batch": timeline.prev_batch
            if timeline is not None
            else pagination_token(request.now.events),
        },
        "ephemeral": {"events": ephemeral},
        "account_data": {"events": account_data},
    }


def _left_entry(request: SyncRequest, room: RoomSync, serializer: Serializer) -> dict[str, Any]:
    timeline = room.timeline
    assert timeline is not None
    return {
        "state": {"events": serializer.get(("leave", room.room_id, "state"))},
        "timeline": {
            "events": serializer.get(("leave", room.room_id, "timeline")),
            "limited": timeline.limited,
            "prev_batch": timeline.prev_batch,
        },
        "account_data": {
            "events": filter_events(
                request.filter.room.account_data,
                request.room_extras.account_data.get(room.room_id, []),
                room_id=room.room_id,
            )
        },
    }
