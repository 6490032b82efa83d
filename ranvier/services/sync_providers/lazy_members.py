"""Member events already sent to each device, for lazy-loading members
(Client-Server API, "Lazy-loading room members"; ``include_redundant_members``)."""

from __future__ import annotations

from collections import OrderedDict


class LazyMemberCache:
    """Member events already sent to each device (``include_redundant_members``
    false): ``(user, device) -> (room, member) -> event_id``, bounded LRU at both
    levels (as Synapse's per-device cache), in memory: after a restart members
    are merely sent again, which the spec allows."""

    def __init__(self, max_devices: int = 1024, max_entries: int = 10_000) -> None:
        self._devices: OrderedDict[tuple[str, str | None], OrderedDict[tuple[str, str], str]] = (
            OrderedDict()
        )
        self._max_devices = max_devices
        self._max_entries = max_entries

    def _entries(self, user_id: str, device_id: str | None) -> OrderedDict[tuple[str, str], str]:
        key = (user_id, device_id)
        entries = self._devices.get(key)
        if entries is None:
            entries = OrderedDict()
            self._devices[key] = entries
            while len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(key)
        return entries

    def clear(self, user_id: str, device_id: str | None) -> None:
        self._devices.pop((user_id, device_id), None)

    def was_sent(
        self, user_id: str, device_id: str | None, room_id: str, member: str, event_id: str
    ) -> bool:
        entries = self._devices.get((user_id, device_id))
        return entries is not None and entries.get((room_id, member)) == event_id

    def record(
        self, user_id: str, device_id: str | None, room_id: str, member: str, event_id: str
    ) -> None:
        entries = self._entries(user_id, device_id)
        entries[(room_id, member)] = event_id
        entries.move_to_end((room_id, member))
        while len(entries) > self._max_entries:
            entries.popitem(last=False)
