"""The ``presence`` stream (Client-Server API, "Presence"): changes of the
users who share a room with the user, and the current presence of the members
of rooms joined since the token (as Synapse)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ranvier.core.filters import filter_events
from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class PresenceProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        since = request.since
        presence = await self.hs.presence.changes_for_user(
            request.user_id, 0 if since is None else since.presence, request.now.presence
        )
        if since is not None:
            # full_state=true: every joined room is sent as newly joined.
            memberships = request.memberships
            newly_joined = (
                memberships.joined_room_ids
                if request.full_state
                else memberships.rooms_joined_since()
            )
            if newly_joined:
                presence = await self._add_members_of(presence, newly_joined)
        events = filter_events(request.filter.presence, presence)
        return Section(fields={"presence": {"events": events}}, has_updates=bool(events))

    async def _add_members_of(
        self, presence: list[dict[str, Any]], room_ids: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Members of newly joined rooms: their current presence (as Synapse)."""
        members: set[str] = set()
        for room_id in room_ids:
            members |= await self.hs.rooms.joined_user_ids(room_id)
        known = {event["sender"] for event in presence}
        extra = await self.hs.presence.presence_events_for_users(members - known)
        return presence + extra
