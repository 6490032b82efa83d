"""The timelines and state of ``rooms.join`` (sync.yaml, ``JoinedRoom``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import SyncRequest
from ranvier.services.sync_providers.room_state import RoomStateBuilder, RoomSync
from ranvier.services.sync_providers.timeline import Timeline, build_timeline, timeline_limit
from ranvier.services.sync_tokens import pagination_token
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

# An incremental /sync first lists the rooms with events since the token (one
# range scan) and looks only at those, when fewer than this many events happened.
_ACTIVE_ROOMS_SCAN_CAP = 2000
# ... if the user is in more rooms than this (else asking for them is one query anyway).
_ACTIVE_ROOMS_MIN_ROOMS = 20


async def joined_rooms(
    hs: Homeserver, states: RoomStateBuilder, request: SyncRequest
) -> dict[str, RoomSync]:
    """Every joined room, with a timeline and state where the range has some;
    for an incremental sync of a user in many rooms, only the rooms it can show
    (events in the range, ephemeral or account data, a membership change: what
    ``RoomsProvider`` would otherwise leave out as quiet)."""
    since = request.since
    active = await _active_rooms(hs, request)
    extras = request.room_extras
    memberships = request.memberships
    # Quiet rooms are skipped (the cheap tests first: a user in many rooms).
    shown = active if since is not None and not request.full_state else None
    rooms: dict[str, RoomSync] = {}
    candidates = memberships.joined
    if shown is not None:
        candidates = memberships.joined_among(
            # A room with a membership change may be newly joined.
            shown.union(memberships.changes, extras.ephemeral, extras.account_data)
        )
    for membership in candidates:
        room_id = membership.room_id
        newly = memberships.newly_joined(room_id)
        full_state = since is None or request.full_state or newly
        rooms[room_id] = RoomSync(
            room_id,
            full_state=full_state,
            joined_from=membership.stream_ordering,
            from_start=since is None or newly,
        )
    if not rooms:
        return rooms
    await _fill_timelines(hs, request, rooms, active)
    store = hs.rooms.events
    # The state at the previous sync, for incremental rooms with new events.
    previous: dict[str, list[StoredEvent]] = {}
    incremental = [r.room_id for r in rooms.values() if not r.full_state and r.timeline is not None]
    if incremental and since is not None:
        previous = await store.recent_events_for_rooms(incremental, 0, since.events, 1)
    await states.fill(
        request,
        [r for r in rooms.values() if r.timeline is not None],
        {room_id: events[0].state_group for room_id, events in previous.items()},
    )
    return rooms


async def _active_rooms(hs: Homeserver, request: SyncRequest) -> set[str] | None:
    """With an incremental token and many rooms, the rooms with events in the
    range (a superset); None when every room is to be looked at."""
    since = request.since
    if since is None or len(request.memberships.joined) <= _ACTIVE_ROOMS_MIN_ROOMS:
        return None
    return await hs.rooms.events.rooms_with_events_between(
        since.events, request.now.events, _ACTIVE_ROOMS_SCAN_CAP
    )


async def _fill_timelines(
    hs: Homeserver, request: SyncRequest, rooms: dict[str, RoomSync], active: set[str] | None
) -> None:
    store = hs.rooms.events
    now = request.now
    limit = timeline_limit(request.filter)
    from_pos = 0 if request.since is None else request.since.events
    # The rooms that may have a timeline (those needing full state are looked at anyway).
    wanted = [
        room_id
        for room_id, room in rooms.items()
        if active is None or room.full_state or room_id in active
    ]
    # A room newly joined since the token is synced as in an initial sync:
    # its latest events whatever the token, ``limited`` when there are more,
    # and a ``prev_batch`` for /messages (sync.yaml, ``rooms.join``; Synapse
    # does the same). The other rooms read the range since the token.
    starting = [room_id for room_id in wanted if rooms[room_id].from_start]
    ranged = [room_id for room_id in wanted if not rooms[room_id].from_start]
    raw: dict[str, list[StoredEvent]] = {}
    if ranged:
        raw = await store.recent_events_for_rooms(ranged, from_pos, now.events, limit + 1)
    if starting:
        raw.update(await store.recent_events_for_rooms(starting, 0, now.events, limit + 1))
    # Rooms needing state but without events in the range: their latest event.
    missing = [r.room_id for r in rooms.values() if r.full_state and r.room_id not in raw]
    latest = await store.recent_events_for_rooms(missing, 0, now.events, 1) if missing else {}
    for room in rooms.values():
        events = raw.get(room.room_id)
        if events is None:
            if room.full_state:
                last = latest.get(room.room_id, [None])[0]
                room.timeline = Timeline([], False, pagination_token(now.events), last)
            continue
        room.timeline = await build_timeline(
            hs,
            request.filter,
            request.user_id,
            room.room_id,
            events,
            0 if room.from_start else from_pos,
            limit,
            room.joined_from,
        )
