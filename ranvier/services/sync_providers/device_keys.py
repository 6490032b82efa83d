"""The device's own key counts (sync.yaml ``device_one_time_keys_count``,
``device_unused_fallback_key_types``; Client-Server API, "End-to-End
Encryption"). Not a stream: the current counts, in every response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class DeviceKeysProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        if request.device_id is None:
            return Section()
        keys = self.hs.e2e_keys
        user_id, device_id = request.user_id, request.device_id
        return Section(
            fields={
                "device_one_time_keys_count": await keys.one_time_key_counts(user_id, device_id),
                "device_unused_fallback_key_types": await keys.unused_fallback_key_types(
                    user_id, device_id
                ),
            }
        )
