"""Events as a sync response shows them: the filter's ``event_format`` and
``event_fields`` (Client-Server API, "Filtering")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ranvier.core.filters import Filter, project_event_fields
from ranvier.core.redaction import redact
from ranvier.services.client_events import serialize_events
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class Serializer:
    """Collects every event a response shows, serializes them in one call."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self._slots: dict[tuple[str, str, str], tuple[int, int]] = {}
        self._formatted: list[dict[str, Any]] = []

    def add(self, key: tuple[str, str, str], events: Sequence[StoredEvent]) -> None:
        start = len(self.events)
        self.events.extend(events)
        self._slots[key] = (start, len(self.events))

    async def run(
        self, hs: Homeserver, event_filter: Filter, user_id: str, device_id: str | None
    ) -> None:
        self._formatted = await format_events(
            hs, event_filter, self.events, user_id=user_id, device_id=device_id
        )

    def get(self, key: tuple[str, str, str]) -> list[dict[str, Any]]:
        start, end = self._slots[key]
        return self._formatted[start:end]


async def format_events(
    hs: Homeserver,
    event_filter: Filter,
    events: Sequence[StoredEvent],
    *,
    user_id: str,
    device_id: str | None,
    include_room_id: bool = False,
) -> list[dict[str, Any]]:
    """Events in the filter's ``event_format`` with its ``event_fields``."""
    if event_filter.event_format == "federation":
        formatted = [
            redact(e.event.room_version, dict(e.event.pdu)) if e.redacted_by else dict(e.event.pdu)
            for e in events
        ]
    else:
        formatted = await serialize_events(
            hs, events, user_id=user_id, device_id=device_id, include_room_id=include_room_id
        )
    if event_filter.event_fields is not None:
        formatted = [project_event_fields(e, event_filter.event_fields) for e in formatted]
    return formatted
