"""A joined room's notification counts (sync.yaml ``unread_notifications``,
``unread_thread_notifications``; Client-Server API, "Receiving notifications").

The place for the per-room counts of the push rules engine: the rooms provider
asks here once per response for the rooms it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.services.push import rooms_with_own_receipts
from ranvier.services.sync_providers.base import SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


async def room_counts(
    hs: Homeserver, request: SyncRequest, room_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """room ID → the count fields of its ``rooms.join`` entry (services/push.py:
    one query for all the rooms, after their pending evaluations)."""
    by_thread = request.filter.room.timeline.unread_thread_notifications
    return await hs.push.sync_counts(
        request.user_id, room_ids, request.now.events, by_thread=by_thread
    )


def rooms_with_new_counts(request: SyncRequest) -> set[str]:
    """Rooms where the user's own receipt moved in the range: their counts
    changed, so an incremental sync shows them even when its filter leaves the
    receipts out."""
    receipts = {
        room_id: event
        for room_id, events in request.room_extras.ephemeral.items()
        for event in events
        if event.get("type") == "m.receipt"
    }
    return rooms_with_own_receipts(request.user_id, receipts)
