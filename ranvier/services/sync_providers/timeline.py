"""A room's ``timeline`` section: its latest events in the range, filtered by
the timeline filter and history visibility, ``limited`` when there are more
(sync.yaml, ``Timeline``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ranvier.core.filters import Filter
from ranvier.services.sync_tokens import pagination_token
from ranvier.services.visibility import filter_events_for_member
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: Synapse's default timeline limit when the filter sets none.
DEFAULT_TIMELINE_LIMIT = 10
#: Cap on a filter's timeline ``limit``: any larger one reads as this (a filter may
#: say 2**70; the query needs a 64-bit LIMIT and the response a bounded size).
#: As the /messages limit cap (ranvier/api/client/room_history.py).
MAX_TIMELINE_LIMIT = 1000
#: Bound on extra timeline fetches when filtering/visibility drop events.
_MAX_TIMELINE_REFILLS = 8


def timeline_limit(sync_filter: Filter) -> int:
    """The number of timeline events per room: the filter's, capped, or the default."""
    return min(sync_filter.room.timeline.limit or DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)


@dataclass(slots=True)
class Timeline:
    events: list[StoredEvent]  # oldest first
    limited: bool
    prev_batch: str
    #: The newest event of the room at or before the range's end (any kind).
    last: StoredEvent | None


async def build_timeline(
    hs: Homeserver,
    sync_filter: Filter,
    user_id: str,
    room_id: str,
    newest_first: list[StoredEvent],
    from_pos: int,
    limit: int,
    joined_from: int | None,
) -> Timeline:
    """The room's timeline from ``newest_first`` (the latest ``limit + 1`` events
    of the range): matching the timeline filter and visible to the user,
    fetching further back when some are dropped."""
    timeline_filter = sync_filter.room.timeline
    store = hs.rooms.events
    kept: list[StoredEvent] = []
    candidates = newest_first
    exhausted = len(candidates) < limit + 1
    refills = 0
    gave_up = False
    oldest = candidates[-1] if candidates else None
    while True:
        if candidates:
            oldest = candidates[-1]
        matching = [e for e in candidates if timeline_filter.matches(e.event, room_id=room_id)]
        kept.extend(await filter_events_for_member(hs, user_id, matching, joined_from))
        if len(kept) > limit or exhausted or not candidates:
            break
        if refills >= _MAX_TIMELINE_REFILLS:
            gave_up = True  # more may be older: say limited, the client paginates
            break
        refills += 1
        batch = max(2 * (limit + 1), 50)
        candidates = await store.room_events_in_stream_range(
            room_id, candidates[-1].stream_ordering - 1, from_pos, batch, "b"
        )
        exhausted = len(candidates) < batch
    limited = len(kept) > limit or gave_up
    if from_pos == 0 and exhausted and oldest is not None and oldest.event.prev_event_ids:
        # Read from the start, but the oldest event held here is not the
        # room's first: a room joined over federation, whose earlier history
        # is on other servers. Limited, so that the client paginates (backfill).
        limited = True
    events = list(reversed(kept[:limit]))
    last = newest_first[0] if newest_first else None
    prev_batch = (
        pagination_token(events[0].stream_ordering - 1)
        if events
        else pagination_token(last.stream_ordering if last is not None else 0)
    )
    return Timeline(events, limited, prev_batch, last)
