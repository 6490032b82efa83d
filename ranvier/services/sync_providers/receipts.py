"""The ``receipts`` stream: ``m.receipt`` of the joined rooms with new receipts
(``rooms.join.<room>.ephemeral``; Client-Server API, "Receipts")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class ReceiptsProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        since = request.since
        receipts = await self.hs.receipts.changes_for_user(
            request.user_id,
            0 if since is None else since.receipts,
            request.now.receipts,
            request.memberships.joined_room_ids,
        )
        return Section(ephemeral={room_id: [event] for room_id, event in receipts.items()})
