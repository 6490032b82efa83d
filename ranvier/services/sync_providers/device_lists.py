"""The ``device_lists`` stream: users whose devices changed, and users the
user no longer shares an encrypted room with (sync.yaml ``device_lists``,
incremental syncs only; Client-Server API, "Tracking the device list for a user")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class DeviceListsProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        since, now = request.since, request.now
        if since is None:
            return Section()
        changed, left = await self.hs.e2e_keys.device_list_changes(
            request.user_id,
            since.device_lists,
            now.device_lists,
            events_from=since.events,
            events_to=now.events,
        )
        return Section(
            fields={"device_lists": {"changed": sorted(changed), "left": sorted(left)}},
            has_updates=bool(changed or left),
        )
