"""The ``to_device`` stream: the device's inbox (Client-Server API,
"Send-to-Device messaging"; sync.yaml ``to_device.events``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class ToDeviceProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        if request.device_id is None:
            return Section()
        since, now = request.since, request.now
        events, next_pos = await self.hs.to_device.to_device_for_device(
            request.user_id,
            request.device_id,
            since.to_device if since is not None else 0,
            now.to_device,
        )
        fields: dict[str, Any] = {"to_device": {"events": events}}
        if next_pos != now.to_device:
            # More messages wait than one response carries: the token stops
            # after the last one delivered, so the rest come next time (and
            # nothing undelivered is acknowledged).
            fields["next_batch"] = replace(now, to_device=next_pos).encode()
        return Section(fields=fields, has_updates=bool(events))
