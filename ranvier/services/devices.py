"""Device management (Client-Server API, "Device Management";
modules/device_management.md, OpenAPI device_management.yaml).

Devices themselves (and their tokens) belong to the accounts service; this
service lists, renames and deletes them, removes a deleted device's
end-to-end keys and inbox, records where and when a device was last seen,
and reports every change on the "device_lists" stream.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ranvier.errors import MatrixError
from ranvier.storage.accounts import DeviceRow

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.storage import Transaction

#: last_seen_ts/last_seen_ip are written at most this often per device, so
#: the hot path of authenticated requests does not write each time (Synapse
#: batches its client_ips writes in the same spirit).
LAST_SEEN_INTERVAL_MS = 60_000
_LAST_SEEN_CACHE_SIZE = 100_000
MAX_DEVICE_DISPLAY_NAME_LENGTH = 100
MAX_DEVICES_PER_DELETE = 1000


def device_body(device: DeviceRow) -> dict[str, Any]:
    """The Device object of device_management.yaml."""
    body: dict[str, Any] = {"device_id": device.device_id}
    if device.display_name is not None:
        body["display_name"] = device.display_name
    if device.last_seen_ip is not None:
        body["last_seen_ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        body["last_seen_ts"] = int(device.last_seen_ts)
    return body


class DevicesService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = hs.e2e_keys.store  # one store: it holds caches
        # (user_id, device_id) → (when last written, ip written).
        self._last_seen: OrderedDict[tuple[str, str], tuple[int, str | None]] = OrderedDict()

    def written_at_login(self, user_id: str, device_id: str, ts: int, ip: str | None) -> None:
        """Registration or login just wrote ``ts`` and ``ip`` into the device's
        row (after commit): the client's next requests need not write them again
        within the interval (a new user's first request is often a join)."""
        key = (user_id, device_id)
        self._last_seen[key] = (ts, ip)
        self._last_seen.move_to_end(key)
        if len(self._last_seen) > _LAST_SEEN_CACHE_SIZE:
            self._last_seen.popitem(last=False)

    async def note_seen(self, user_id: str, device_id: str, ip: str | None) -> None:
        """Record an authenticated request of the device (throttled per device)."""
        now = self.hs.clock_ms()
        key = (user_id, device_id)
        previous = self._last_seen.get(key)
        if previous is not None and now - previous[0] < LAST_SEEN_INTERVAL_MS and previous[1] == ip:
            return
        self._last_seen[key] = (now, ip)
        self._last_seen.move_to_end(key)
        if len(self._last_seen) > _LAST_SEEN_CACHE_SIZE:
            self._last_seen.popitem(last=False)
        await self.store.set_device_last_seen(user_id, device_id, now, ip)

    async def record_device_list_change(self, txn: Transaction, user_id: str) -> None:
        """For the accounts service, in the transaction that created a device."""
        await self.store.add_device_list_change(txn, user_id)

    async def announce_device_list_change(self, user_id: str) -> None:
        """For the accounts service, once that transaction has committed."""
        await self.hs.e2e_keys.notify_device_change(user_id)

    async def list_devices(self, user_id: str) -> list[dict[str, Any]]:
        return [device_body(d) for d in await self.hs.accounts.get_devices(user_id)]

    async def get_device(self, user_id: str, device_id: str) -> dict[str, Any]:
        device = await self.hs.accounts.get_device(user_id, device_id)
        if device is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown device.")
        return device_body(device)

    async def set_display_name(self, user_id: str, device_id: str, display_name: object) -> None:
        """PUT /devices/{deviceId}; unknown device → 404 (as Synapse)."""
        if display_name is not None and not isinstance(display_name, str):
            raise MatrixError(400, "M_BAD_JSON", "'display_name' must be a string.")
        if isinstance(display_name, str) and len(display_name) > MAX_DEVICE_DISPLAY_NAME_LENGTH:
            raise MatrixError(
                400,
                "M_TOO_LARGE",
                f"Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME_LENGTH}).",
            )
        device = await self.hs.accounts.get_device(user_id, device_id)
        if device is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown device.")
        if display_name is None or display_name == device.display_name:
            return  # "If this is not given, the display name is unchanged."
        async with self.hs.database.transaction() as txn:
            if not await self.store.set_device_display_name(txn, user_id, device_id, display_name):
                raise MatrixError(404, "M_NOT_FOUND", "Unknown device.")
            # The display name is part of /keys/query answers.
            await self.store.add_device_list_change(txn, user_id)
        await self.hs.e2e_keys.notify_device_change(user_id)

    async def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Delete devices: their tokens (they are logged out), their keys, their
        inbox. Unknown device IDs are ignored ("deleting a non-existent device
        is not an error")."""
        device_ids = list(dict.fromkeys(device_ids))
        if not device_ids:
            return
        await self.hs.accounts.delete_devices(user_id, device_ids)
        await self.forget_devices(user_id, device_ids)

    async def forget_devices(self, user_id: str, device_ids: Sequence[str] | None) -> None:
        """End-to-end cleanup after devices were deleted (None: all of the user's);
        the accounts service calls it after logout, logout/all, a password change
        that logs out other devices, and deactivation."""
        if device_ids is not None and not device_ids:
            return
        async with self.hs.database.transaction() as txn:
            await self.store.delete_device_data(txn, user_id, device_ids)
            await self.store.add_device_list_change(txn, user_id)
        await self.hs.pushers.on_devices_deleted(user_id, device_ids)
        for key in [k for k in self._last_seen if k[0] == user_id] if device_ids is None else []:
            self._last_seen.pop(key, None)
        for device_id in device_ids or ():
            self._last_seen.pop((user_id, device_id), None)
        await self.hs.e2e_keys.notify_device_change(user_id)
