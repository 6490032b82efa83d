"""Event filters: parse, validate and apply the Client-Server API's filters.

Client-Server API, "Filtering" and the ``Filter`` / ``RoomFilter`` /
``RoomEventFilter`` / ``EventFilter`` definitions
(``data/api/client-server/definitions/{sync_filter,room_event_filter,event_filter}.yaml``).

Pure functions over plain data: :func:`parse_filter` turns the JSON a client
uploads (or passes inline to ``/sync``) into frozen records, raising
:class:`FilterError` with the errcode to answer; :meth:`EventFilter.matches`
tests one event, given either as a client-format dict or a ranvier
:class:`~ranvier.core.events.Event`; :func:`filter_events` applies matching
and ``limit``; :func:`project_event_fields` applies ``event_fields``.

Semantics (as the spec words them, and as Synapse applies them where the spec
is silent):

* a ``not_*`` list always wins over its positive list;
* an absent positive list (``types``, ``senders``, ``rooms``) allows
  everything, an *empty* one allows nothing;
* in ``types`` / ``not_types`` a ``*`` matches any sequence of characters,
  anywhere in the pattern (the spec's wording; Synapse only honours a trailing
  ``*``, which this is a superset of);
* ``contains_url`` true keeps only events whose ``content`` has a ``url`` key,
  false drops them, absent ignores it;
* room checks (``rooms`` / ``not_rooms``) apply only when the event's room is
  known (the event carries ``room_id`` or the caller passes ``room_id``), since
  the ephemeral and account-data events /sync lists under a room carry none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from ranvier.core.events import Event
from ranvier.core.property_paths import split_property_path

__all__ = [
    "EventFilter",
    "Filter",
    "FilterError",
    "RoomEventFilter",
    "RoomFilter",
    "filter_events",
    "matches_wildcard",
    "parse_event_fields",
    "parse_filter",
    "parse_filter_json",
    "project_event_fields",
]

EventFormat = Literal["client", "federation"]
EventLike = Mapping[str, Any] | Event


class FilterError(ValueError):
    """The filter is invalid; ``errcode`` is ``M_BAD_JSON`` (wrong JSON type) or
    ``M_INVALID_PARAM`` (right type, bad value)."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


@lru_cache(maxsize=1024)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches_wildcard(value: str, pattern: str) -> bool:
    """Whether ``value`` matches ``pattern``, where ``*`` is any sequence of characters."""
    if "*" not in pattern:
        return value == pattern
    return _wildcard_regex(pattern).fullmatch(value) is not None


def _event_fields(event: EventLike) -> tuple[str | None, str | None, str | None, Any]:
    """(type, sender, room_id, content) of either event representation."""
    if isinstance(event, Event):
        return event.type, event.sender, event.room_id, event.content
    event_type = event.get("type")
    sender = event.get("sender")
    room_id = event.get("room_id")
    return (
        event_type if isinstance(event_type, str) else None,
        sender if isinstance(sender, str) else None,
        room_id if isinstance(room_id, str) else None,
        event.get("content"),
    )


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``EventFilter``: used for top-level ``presence`` and ``account_data``."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    def allows_type(self, event_type: str | None) -> bool:
        if self.types is None and not self.not_types:
            return True  # asks nothing of types (most filters): no pattern to try
        if event_type is None:
            # An event without a type can match only a filter that asks nothing of types.
            return self.types is None and not self.not_types
        if any(matches_wildcard(event_type, pattern) for pattern in self.not_types):
            return False
        return self.types is None or any(
            matches_wildcard(event_type, pattern) for pattern in self.types
        )

    def allows_sender(self, sender: str | None) -> bool:
        if sender is not None and sender in self.not_senders:
            return False
        return self.senders is None or (sender is not None and sender in self.senders)

    def matches(self, event: EventLike, *, room_id: str | None = None) -> bool:
        """Whether ``event`` passes this filter (``limit`` aside)."""
        event_type, sender, _, _ = _event_fields(event)
        return self.allows_type(event_type) and self.allows_sender(sender)


@dataclass(frozen=True, slots=True)
class RoomEventFilter(EventFilter):
    """``RoomEventFilter``: ``state``, ``timeline``, ``ephemeral`` and room ``account_data``."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: EventLike, *, room_id: str | None = None) -> bool:
        event_type, sender, event_room_id, content = _event_fields(event)
        if not (self.allows_type(event_type) and self.allows_sender(sender)):
            return False
        known_room = room_id if room_id is not None else event_room_id
        if known_room is not None and not self.allows_room(known_room):
            return False
        if self.contains_url is not None:
            has_url = isinstance(content, Mapping) and "url" in content
            if has_url != self.contains_url:
                return False
        return True


@dataclass(frozen=True, slots=True)
class RoomFilter:
    """``RoomFilter``: which rooms, and the filters for each part of a room's data."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def allows_room(self, room_id: str) -> bool:
        """Room-level ``rooms`` / ``not_rooms``, applied before the sub-filters."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def filter_room_ids(self, room_ids: Iterable[str]) -> list[str]:
        return [room_id for room_id in room_ids if self.allows_room(room_id)]


@dataclass(frozen=True, slots=True)
class Filter:
    """``Filter``: the whole filter a client uploads or passes to ``/sync``."""

    event_fields: tuple[tuple[str, ...], ...] | None = None
    event_format: EventFormat = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)


#: The filter that filters nothing (what /sync uses without one).
DEFAULT_FILTER = Filter()


# --------------------------------------------------------------------------- parsing


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FilterError("M_BAD_JSON", f"{where} must be an object")
    return value


def _optional_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise FilterError("M_BAD_JSON", f"{where}.{key} must be a boolean")
    return value


def _bool(obj: Mapping[str, Any], key: str, where: str) -> bool:
    return _optional_bool(obj, key, where) or False


def _string_list(
    obj: Mapping[str, Any], key: str, where: str, sigil: str | None = None
) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FilterError("M_BAD_JSON", f"{where}.{key} must be an array of strings")
    if sigil is not None:
        for item in value:
            if not item.startswith(sigil):
                raise FilterError(
                    "M_INVALID_PARAM", f"{where}.{key}: {item!r} does not start with {sigil!r}"
                )
    return tuple(value)


def _limit(obj: Mapping[str, Any], where: str) -> int | None:
    value = obj.get("limit")
    if value is None:
        return None
    # bool is an int in Python but not a JSON integer.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError("M_BAD_JSON", f"{where}.limit must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise FilterError("M_BAD_JSON", f"{where}.limit must be an integer")
        value = int(value)
    if value < 1:
        # event_filter.yaml: "must be an integer greater than 0".
        raise FilterError("M_INVALID_PARAM", f"{where}.limit must be greater than 0")
    return value


def _event_filter_fields(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {
        "limit": _limit(obj, where),
        "types": _string_list(obj, "types", where),
        "not_types": _string_list(obj, "not_types", where) or (),
        "senders": _string_list(obj, "senders", where, "@"),
        "not_senders": _string_list(obj, "not_senders", where, "@") or (),
    }


def parse_event_filter(value: Any, where: str = "filter") -> EventFilter:
    if value is None:
        return EventFilter()
    return EventFilter(**_event_filter_fields(_object(value, where), where))


def parse_room_event_filter(value: Any, where: str = "filter") -> RoomEventFilter:
    if value is None:
        return RoomEventFilter()
    obj = _object(value, where)
    return RoomEventFilter(
        **_event_filter_fields(obj, where),
        rooms=_string_list(obj, "rooms", where, "!"),
        not_rooms=_string_list(obj, "not_rooms", where, "!") or (),
        contains_url=_optional_bool(obj, "contains_url", where),
        lazy_load_members=_bool(obj, "lazy_load_members", where),
        include_redundant_members=_bool(obj, "include_redundant_members", where),
        unread_thread_notifications=_bool(obj, "unread_thread_notifications", where),
    )


def parse_room_filter(value: Any, where: str = "room") -> RoomFilter:
    if value is None:
        return RoomFilter()
    obj = _object(value, where)
    return RoomFilter(
        rooms=_string_list(obj, "rooms", where, "!"),
        not_rooms=_string_list(obj, "not_rooms", where, "!") or (),
        include_leave=_bool(obj, "include_leave", where),
        ephemeral=parse_room_event_filter(obj.get("ephemeral"), f"{where}.ephemeral"),
        state=parse_room_event_filter(obj.get("state"), f"{where}.state"),
        timeline=parse_room_event_filter(obj.get("timeline"), f"{where}.timeline"),
        account_data=parse_room_event_filter(obj.get("account_data"), f"{where}.account_data"),
    )


def parse_event_fields(paths: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Split each dot-separated property path of ``event_fields``."""
    return tuple(split_property_path(path) for path in paths)


def parse_filter(value: Any) -> Filter:
    """A :class:`Filter` from its JSON; raises :class:`FilterError`. Unknown keys are ignored."""
    obj = _object(value, "filter")
    event_fields_list = _string_list(obj, "event_fields", "filter")
    event_format = obj.get("event_format", "client")
    if event_format is None:
        event_format = "client"
    if not isinstance(event_format, str):
        raise FilterError("M_BAD_JSON", "filter.event_format must be a string")
    if event_format not in ("client", "federation"):
        raise FilterError("M_INVALID_PARAM", "filter.event_format must be 'client' or 'federation'")
    return Filter(
        event_fields=None if event_fields_list is None else parse_event_fields(event_fields_list),
        event_format="client" if event_format == "client" else "federation",
        presence=parse_event_filter(obj.get("presence"), "filter.presence"),
        account_data=parse_event_filter(obj.get("account_data"), "filter.account_data"),
        room=parse_room_filter(obj.get("room"), "filter.room"),
    )


def parse_filter_json(text: str | bytes) -> Filter:
    """Parse JSON text (e.g. ``/sync``'s inline ``filter`` parameter)."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise FilterError("M_NOT_JSON", "filter is not valid JSON") from None
    return parse_filter(value)


# --------------------------------------------------------------------------- applying


def filter_events(
    event_filter: EventFilter,
    events: Iterable[EventLike],
    *,
    room_id: str | None = None,
    apply_limit: bool = True,
) -> list[EventLike]:
    """The events that match, in order, at most ``limit`` of them (the first ones).

    Callers that want the *latest* N (a timeline) pass events newest first, or
    filter without the limit and slice themselves.
    """
    kept: list[EventLike] = []
    limit = event_filter.limit if apply_limit else None
    for event in events:
        if limit is not None and len(kept) >= limit:
            break
        if event_filter.matches(event, room_id=room_id):
            kept.append(event)
    return kept


def project_event_fields(
    event: Mapping[str, Any], event_fields: Sequence[Sequence[str]] | None
) -> dict[str, Any]:
    """``event`` (client format) keeping only the ``event_fields`` paths.

    ``None`` keeps everything. A path that names a missing property, or goes
    through a non-object, contributes nothing.
    """
    if event_fields is None:
        return dict(event)
    result: dict[str, Any] = {}
    for path in event_fields:
        if not path:
            continue
        source: Any = event
        for key in path[:-1]:
            if not isinstance(source, Mapping) or key not in source:
                source = None
                break
            source = source[key]
        if not isinstance(source, Mapping) or path[-1] not in source:
            continue
        target = result
        for key in path[:-1]:
            nested = target.get(key)
            if not isinstance(nested, dict):
                nested = {}
                target[key] = nested
            target = nested
        target[path[-1]] = source[path[-1]]
    return result
