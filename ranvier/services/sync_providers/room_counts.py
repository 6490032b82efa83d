"""A joined room's notification counts (sync.yaml ``unread_notifications``,
``unread_thread_notifications``; Client-Server API, "Receiving notifications").

The place for the per-room counts of the push rules engine: the rooms provider
asks here once per response for the rooms it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.services.sync_providers.base import SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


async def room_counts(
    hs: Homeserver, request: SyncRequest, room_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """room ID → the count fields of its ``rooms.join`` entry."""
    return {
        room_id: {"unread_notifications": {"notification_count": 0, "highlight_count": 0}}
        for room_id in room_ids
    }
