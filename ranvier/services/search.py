"""Server-side search: ``POST /search`` (Client-Server API, "Server Side Search";
data/api/client-server/search.yaml).

The ``room_events`` category over the index of ranvier/storage/search.py
(its docstring says how words match, the same on both engines). Searched:
the rooms the user is joined to or has left (or was banned from) — "all rooms
that the user has been in, including those that they have left" — and only
the events they may see: history visibility at each event
(ranvier/services/visibility.py), and nothing after they left a room.

Pagination (``next_batch``): an opaque token holding the order and a cursor
(an offset into the ranking for ``rank``, the last stream position read for
``recent``), and for a group's token the group (``room_id`` or ``sender``) it
continues, as the spec's "Pagination" describes. A token that does not parse,
or was made for another order, is 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.filters import Filter, FilterError, RoomEventFilter, parse_room_event_filter
from ranvier.errors import MatrixError
from ranvier.services.sync import format_events
from ranvier.services.visibility import filter_events_for_member, filter_events_for_user
from ranvier.storage.events import StoredEvent
from ranvier.storage.search import KEY_TYPES, Order, SearchHit, SearchQuery, search_terms, words_of

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: search.yaml: filter ``limit``; Synapse's default is 10. Capped: a page is
#: loaded, checked and formatted in one request.
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
#: event_context: "By default, this is 5"; capped like /context.
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 50
#: Hits read per query while filling a page; at most this many queries.
_MIN_BATCH = 20
_MAX_BATCHES = 10
_GROUP_KEYS = ("room_id", "sender")
_CLIENT_FORMAT = Filter()


def _bad(message: str, errcode: str = "M_INVALID_PARAM") -> MatrixError:
    return MatrixError(400, errcode, message)


@dataclass(frozen=True, slots=True)
class Criteria:
    """The ``room_events`` criteria, validated."""

    search_term: str
    keys: tuple[str, ...]
    order: Order
    event_filter: RoomEventFilter
    limit: int
    context: tuple[int, int, bool] | None
    group_by: tuple[str, ...]
    include_state: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: see the module docstring."""

    order: Order
    position: int | None = None
    #: ``(group key, value)`` for a group's ``next_batch``.
    group: tuple[str, str] | None = None

    def encode(self) -> str:
        data = {"o": self.order, "p": self.position, "g": list(self.group) if self.group else None}
        return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str, order: Order) -> Cursor:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise _bad("Invalid next_batch token") from None
        if not isinstance(data, dict) or data.get("o") != order:
            raise _bad("Invalid next_batch token (not from this search's order_by)")
        position, group = data.get("p"), data.get("g")
        if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
            raise _bad("Invalid next_batch token")
        if abs(position or 0) > 2**62 or (order == "rank" and (position or 0) < 0):
            raise _bad("Invalid next_batch token")
        if group is not None and not (
            isinstance(group, list)
            and len(group) == 2
            and group[0] in _GROUP_KEYS
            and isinstance(group[1], str)
        ):
            raise _bad("Invalid next_batch token")
        return cls(order, position, None if group is None else (group[0], group[1]))


def _int(obj: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{key} must be an integer", "M_BAD_JSON")
    if value < 0:
        raise _bad(f"{key} must not be negative")
    return min(value, maximum)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object", "M_BAD_JSON")
    return value


def parse_criteria(body: Mapping[str, Any]) -> Criteria | None:
    """The ``room_events`` criteria of a request body; None when the body has
    no ``room_events`` category (nothing to search). 400 for malformed input."""
    if "search_categories" not in body:
        raise _bad("Missing search_categories", "M_MISSING_PARAM")
    categories = _object(body["search_categories"], "search_categories")
    if categories.get("room_events") is None:
        return None
    room_events = _object(categories["room_events"], "room_events")
    term = room_events.get("search_term")
    if term is None:
        raise _bad("Missing search_term", "M_MISSING_PARAM")
    if not isinstance(term, str):
        raise _bad("search_term must be a string", "M_BAD_JSON")
    keys = room_events.get("keys", list(KEY_TYPES))
    if not isinstance(keys, list) or not all(key in KEY_TYPES for key in keys):
        raise _bad(f"keys must be a list of {', '.join(KEY_TYPES)}")
    order = room_events.get("order_by", "rank")
    if order not in ("rank", "recent"):
        raise _bad("order_by must be rank or recent")
    try:
        event_filter = parse_room_event_filter(room_events.get("filter"), "filter")
    except FilterError as exc:
        raise MatrixError(400, exc.errcode, exc.message) from None
    limit = DEFAULT_LIMIT if event_filter.limit is None else min(event_filter.limit, MAX_LIMIT)
    context = None
    if room_events.get("event_context") is not None:
        obj = _object(room_events["event_context"], "event_context")
        include_profile = obj.get("include_profile", False)
        if not isinstance(include_profile, bool):
            raise _bad("include_profile must be a boolean", "M_BAD_JSON")
        context = (
            _int(obj, "before_limit", DEFAULT_CONTEXT, MAX_CONTEXT),
            _int(obj, "after_limit", DEFAULT_CONTEXT, MAX_CONTEXT),
            include_profile,
        )
    include_state = room_events.get("include_state", False)
    if not isinstance(include_state, bool):
        raise _bad("include_state must be a boolean", "M_BAD_JSON")
    return Criteria(
        term,
        tuple(dict.fromkeys(keys)),
        order,
        event_filter,
        max(limit, 1),
        context,
        _group_by(room_events.get("groupings")),
        include_state,
    )


def _group_by(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    groups = _object(value, "groupings").get("group_by", [])
    if not isinstance(groups, list):
        raise _bad("group_by must be a list", "M_BAD_JSON")
    keys: list[str] = []
    for group in groups:
        key = _object(group, "group_by item").get("key")
        if key not in _GROUP_KEYS:
            raise _bad("group_by key must be room_id or sender")
        keys.append(key)
    return tuple(dict.fromkeys(keys))


@dataclass(slots=True)
class _Rooms:
    """The rooms a user may search and where each one's readable history ends."""

    room_ids: list[str]
    #: room -> the last position readable (left rooms); absent: no limit.
    caps: dict[str, int] = field(default_factory=dict)
    #: room -> the position of the user's current join.
    joined_from: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Page:
    hits: list[tuple[SearchHit, StoredEvent]]
    next_cursor: Cursor | None


class SearchService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def search(
        self, user_id: str, device_id: str | None, body: Mapping[str, Any], next_batch: str | None
    ) -> dict[str, Any]:
        criteria = parse_criteria(body)
        if criteria is None:
            return {"search_categories": {}}
        cursor = (
            Cursor(criteria.order)
            if next_batch is None
            else Cursor.decode(next_batch, criteria.order)
        )
        terms = search_terms(criteria.search_term)
        rooms = await self._rooms(user_id, criteria.event_filter)
        query = self._query(terms, rooms, criteria, cursor)
        if query is None:
            return {"search_categories": {"room_events": _empty(terms)}}
        # The count reads every match (the page only its own): on another
        # connection, while the page is read, checked and formatted.
        count = asyncio.ensure_future(self.hs.search_store.count(query))
        try:
            page = await self._page(user_id, query, rooms, criteria, cursor)
            result = await self._format(user_id, device_id, criteria, page, rooms, terms)
        except BaseException:
            count.cancel()
            raise
        result["count"] = await count
        return {"search_categories": {"room_events": result}}

    async def _rooms(self, user_id: str, event_filter: RoomEventFilter) -> _Rooms:
        memberships = await self.hs.rooms.store.rooms_for_user(user_id, ("join", "leave", "ban"))
        rooms = _Rooms([])
        for membership in memberships:
            if not event_filter.allows_room(membership.room_id):
                continue
            rooms.room_ids.append(membership.room_id)
            if membership.membership == "join":
                rooms.joined_from[membership.room_id] = membership.stream_ordering
            else:
                rooms.caps[membership.room_id] = membership.stream_ordering
        rooms.room_ids.sort()
        return rooms

    def _query(
        self, terms: Sequence[str], rooms: _Rooms, criteria: Criteria, cursor: Cursor
    ) -> SearchQuery | None:
        """The index query, or None when nothing can match."""
        event_filter = criteria.event_filter
        keys = [k for k in criteria.keys if event_filter.allows_type(KEY_TYPES[k])]
        room_ids = rooms.room_ids
        senders = None if event_filter.senders is None else list(event_filter.senders)
        # A group's page (recent order): only the group's hits, so a query
        # scoped to it. For rank order the cursor is an offset into the whole
        # ranking, so the query stays whole and _visible keeps the group's hits.
        group = cursor.group if criteria.order == "recent" else None
        if group is not None and group[0] == "room_id":
            room_ids = [room for room in room_ids if room == group[1]]
        if group is not None and group[0] == "sender":
            senders = [s for s in (senders or [group[1]]) if s == group[1]]
        if not terms or not room_ids or not keys or senders == []:
            return None
        return SearchQuery(terms, room_ids, keys, senders)

    async def _page(
        self,
        user_id: str,
        query: SearchQuery,
        rooms: _Rooms,
        criteria: Criteria,
        cursor: Cursor,
    ) -> _Page:
        """Up to ``limit`` visible hits from ``cursor``, and where the next page starts."""
        store = self.hs.search_store
        batch = max(criteria.limit * 2, _MIN_BATCH)
        position = cursor.position
        kept: list[tuple[SearchHit, StoredEvent]] = []
        for _ in range(_MAX_BATCHES):
            hits = await store.search(query, criteria.order, position, batch)
            visible = await self._visible(user_id, hits, rooms, criteria.event_filter, cursor.group)
            for index, hit in enumerate(hits):
                position = (position or 0) + 1 if criteria.order == "rank" else hit.stream_ordering
                if hit.event_id in visible:
                    kept.append((hit, visible[hit.event_id]))
                    if len(kept) >= criteria.limit:
                        more = index < len(hits) - 1 or len(hits) == batch
                        next_cursor = replace(cursor, position=position) if more else None
                        return _Page(kept, next_cursor)
            if len(hits) < batch:
                return _Page(kept, None)
        return _Page(kept, replace(cursor, position=position))

    async def _visible(
        self,
        user_id: str,
        hits: Sequence[SearchHit],
        rooms: _Rooms,
        event_filter: RoomEventFilter,
        group: tuple[str, str] | None,
    ) -> dict[str, StoredEvent]:
        """The hits' events the user may see and the filter (and the group of
        a group's page) lets through."""
        loaded = await self.hs.rooms.events.get_events_ordered([hit.event_id for hit in hits])
        candidates = [
            stored
            for stored in loaded
            if stored.redacted_by is None
            and (group is None or _group_value(stored, group[0]) == group[1])
            and stored.stream_ordering <= rooms.caps.get(stored.room_id, stored.stream_ordering)
            and event_filter.matches(stored.event, room_id=stored.room_id)
        ]
        by_room: dict[str, list[StoredEvent]] = {}
        for stored in candidates:
            by_room.setdefault(stored.room_id, []).append(stored)
        allowed: dict[str, StoredEvent] = {}
        for room_id, events in by_room.items():
            # In a room the user is joined to, what came after the join is
            # visible without reading the state at each event.
            joined_from = rooms.joined_from.get(room_id)
            if joined_from is not None:
                kept = await filter_events_for_member(self.hs, user_id, events, joined_from)
            else:
                kept = await filter_events_for_user(self.hs, user_id, events)
            allowed.update((stored.event_id, stored) for stored in kept)
        return allowed

    # --- the response ------------------------------------------------------------------------

    async def _format(
        self,
        user_id: str,
        device_id: str | None,
        criteria: Criteria,
        page: _Page,
        rooms: _Rooms,
        terms: Sequence[str],
    ) -> dict[str, Any]:
        events = [stored for _, stored in page.hits]
        formatted = await format_events(
            self.hs,
            _CLIENT_FORMAT,
            events,
            user_id=user_id,
            device_id=device_id,
            include_room_id=True,
        )
        results: list[dict[str, Any]] = []
        for (hit, stored), event_json in zip(page.hits, formatted, strict=True):
            entry: dict[str, Any] = {"rank": hit.rank, "result": event_json}
            if criteria.context is not None:
                entry["context"] = await self._context(
                    user_id, device_id, stored, criteria.context, rooms
                )
            results.append(entry)
        response: dict[str, Any] = {
            "results": results,
            "highlights": _highlights(terms, events),
        }
        if page.next_cursor is not None:
            response["next_batch"] = page.next_cursor.encode()
        if criteria.group_by:
            response["groups"] = _groups(criteria.group_by, events, page.next_cursor)
        if criteria.include_state:
            response["state"] = await self._state(user_id, device_id, events, rooms)
        return response

    async def _context(
        self,
        user_id: str,
        device_id: str | None,
        stored: StoredEvent,
        limits: tuple[int, int, bool],
        rooms: _Rooms,
    ) -> dict[str, Any]:
        before_limit, after_limit, include_profile = limits
        before, after, start, end = await self.hs.pagination.around_event(
            user_id,
            stored,
            before_limit,
            after_limit,
            cap=rooms.caps.get(stored.room_id),
            joined_from=rooms.joined_from.get(stored.room_id),
        )
        formatted = await format_events(
            self.hs,
            _CLIENT_FORMAT,
            [*before, *after],
            user_id=user_id,
            device_id=device_id,
            include_room_id=True,
        )
        context: dict[str, Any] = {
            "events_before": formatted[: len(before)],
            "events_after": formatted[len(before) :],
            "start": start,
            "end": end,
        }
        if include_profile:
            last = after[-1] if after else stored
            senders = {e.event.sender for e in (stored, *before, *after)}
            context["profile_info"] = await self._profiles(last, senders)
        return context

    async def _profiles(self, last: StoredEvent, senders: set[str]) -> dict[str, Any]:
        """``profile_info``: each sender's display name and avatar from their
        member event in the room state after ``last`` ("historic profile")."""
        keys = sorted(("m.room.member", sender) for sender in senders)
        state = await self.hs.rooms.events.state_after_event(last.event_id) or {}
        ids = {key[1]: state[key] for key in keys if key in state}
        members = await self.hs.rooms.events.get_events(ids.values())
        profiles: dict[str, Any] = {}
        for sender, event_id in ids.items():
            member = members.get(event_id)
            if member is None or member.redacted_by is not None:
                continue
            content = member.event.content
            profiles[sender] = {
                key: content[key]
                for key in ("displayname", "avatar_url")
                if isinstance(content.get(key), str)
            }
        return profiles

    async def _state(
        self,
        user_id: str,
        device_id: str | None,
        events: Sequence[StoredEvent],
        rooms: _Rooms,
    ) -> dict[str, list[dict[str, Any]]]:
        """``include_state``: each result room's current state; for a room the
        user left, the state when they left (nothing after is theirs to see)."""
        store = self.hs.rooms.events
        state: dict[str, list[dict[str, Any]]] = {}
        for room_id in dict.fromkeys(e.room_id for e in events):
            if room_id in rooms.caps:
                membership = await self.hs.rooms.store.get_membership(room_id, user_id)
                ids = (
                    {} if membership is None else await store.state_after_event(membership.event_id)
                )
            else:
                ids = await store.current_state_ids(room_id)
            loaded = await store.get_events_ordered(sorted((ids or {}).values()))
            state[room_id] = await format_events(
                self.hs,
                _CLIENT_FORMAT,
                loaded,
                user_id=user_id,
                device_id=device_id,
                include_room_id=True,
            )
        return state


def _empty(terms: Sequence[str]) -> dict[str, Any]:
    return {"results": [], "count": 0, "highlights": list(terms)}


def _highlights(terms: Sequence[str], events: Sequence[StoredEvent]) -> list[str]:
    """The search's words and the words of the results they matched (a term
    matches words it is a prefix of), sorted."""
    found = set(terms)
    for stored in events:
        content = stored.event.content
        texts = [content.get(k) for k in ("body", "name", "topic")]
        for text in texts:
            if isinstance(text, str):
                found.update(
                    word for word in words_of(text) if any(word.startswith(t) for t in terms)
                )
    return sorted(found)


def _groups(
    group_by: Sequence[str], events: Sequence[StoredEvent], next_cursor: Cursor | None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``groups``: per key, per value, the page's results in order, the group's
    order (first appearance) and, when there may be more, a ``next_batch``
    that continues within the group."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for key in group_by:
        by_value: dict[str, dict[str, Any]] = {}
        for stored in events:
            value = _group_value(stored, key)
            group = by_value.setdefault(value, {"order": len(by_value), "results": []})
            group["results"].append(stored.event_id)
        if next_cursor is not None:
            for value, group in by_value.items():
                group["next_batch"] = replace(next_cursor, group=(key, value)).encode()
        groups[key] = by_value
    return groups


def _group_value(stored: StoredEvent, key: str) -> str:
    return stored.room_id if key == "room_id" else stored.event.sender
