"""The end-to-end encryption part of ``GET /sync``, registered as a sync
extension (``hs.sync.register_extension``; see ranvier/services/sync.py).

sync.yaml: ``to_device.events`` (the device's inbox), ``device_lists``
(``changed``/``left``, incremental syncs only), ``device_one_time_keys_count``
and ``device_unused_fallback_key_types``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ranvier.services.sync import ExtensionResult, SyncContext

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


def register_e2e_sync_extension(hs: Homeserver) -> None:
    async def extension(context: SyncContext) -> ExtensionResult:
        fields: dict[str, Any] = {}
        has_updates = False
        since, now = context.since, context.now
        if context.device_id is not None:
            events, next_pos = await hs.to_device.to_device_for_device(
                context.user_id,
                context.device_id,
                since.to_device if since is not None else 0,
                now.to_device,
            )
            fields["to_device"] = {"events": events}
            has_updates = bool(events)
            if next_pos != now.to_device:
                # More messages wait than one response carries: the token
                # stops after the last one delivered, so the rest come next time
                # (and nothing undelivered is acknowledged).
                fields["next_batch"] = replace(now, to_device=next_pos).encode()
            fields["device_one_time_keys_count"] = await hs.e2e_keys.one_time_key_counts(
                context.user_id, context.device_id
            )
            fields["device_unused_fallback_key_types"] = (
                await hs.e2e_keys.unused_fallback_key_types(context.user_id, context.device_id)
            )
        if since is not None:
            changed, left = await hs.e2e_keys.device_list_changes(
                context.user_id,
                since.device_lists,
                now.device_lists,
                events_from=since.events,
                events_to=now.events,
            )
            fields["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
            has_updates = has_updates or bool(changed or left)
        return ExtensionResult(fields, has_updates)

    hs.sync.register_extension(extension)
