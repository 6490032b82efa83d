"""``rooms.leave`` (sync.yaml, ``LeftRoom``): the timeline up to the leave, and
the state delta."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import SyncRequest
from ranvier.services.sync_providers.room_state import RoomStateBuilder, RoomSync
from ranvier.services.sync_providers.timeline import Timeline, build_timeline, timeline_limit
from ranvier.services.sync_tokens import pagination_token
from ranvier.services.visibility import filter_events_for_user
from ranvier.storage.rooms import Membership

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


async def left_rooms(
    hs: Homeserver, states: RoomStateBuilder, request: SyncRequest
) -> dict[str, RoomSync]:
    since = request.since
    rooms: dict[str, RoomSync] = {}
    previous_groups: dict[str, int | None] = {}
    for membership in request.memberships.left:
        room = await _left_room(hs, request, membership)
        if not room.full_state and since is not None:
            before = await hs.rooms.events.recent_events_for_rooms(
                [room.room_id], 0, since.events, 1
            )
            previous_groups[room.room_id] = (
                before[room.room_id][0].state_group if room.room_id in before else None
            )
        rooms[room.room_id] = room
    if rooms:
        await states.fill(request, list(rooms.values()), previous_groups)
    for room in rooms.values():
        await _hide_state_from_outsider(hs, request.user_id, room)
    return rooms


async def _left_room(hs: Homeserver, request: SyncRequest, membership: Membership) -> RoomSync:
    store = hs.rooms.events
    since = request.since
    room_id = membership.room_id
    was_joined = since is not None and request.memberships.was_joined_at_since(room_id)
    full_room = since is None or request.full_state or not was_joined
    room = RoomSync(room_id, full_state=full_room, joined_from=None)
    from_pos = 0 if since is None else since.events
    limit = timeline_limit(request.filter)
    raw = (
        await store.recent_events_for_rooms(
            [room_id], from_pos, membership.stream_ordering, limit + 1
        )
    ).get(room_id, [])
    if raw:
        room.timeline = await build_timeline(
            hs, request.filter, request.user_id, room_id, raw, from_pos, limit, None
        )
    else:
        last = await store.get_event(membership.event_id)
        room.timeline = Timeline([], False, pagination_token(membership.stream_ordering), last)
    return room


async def _hide_state_from_outsider(hs: Homeserver, user_id: str, room: RoomSync) -> None:
    """A user who never joined sees only the state their visibility allows."""
    store = hs.rooms.events
    history = await store.membership_history_in_room(room.room_id, user_id)
    if not any(change.membership == "join" for change in history):
        events = await store.get_events_ordered(room.state_ids)
        visible = await filter_events_for_user(hs, user_id, events)
        room.state_ids = [e.event_id for e in visible]
