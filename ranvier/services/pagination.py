"""Room history: ``/messages``, ``/context`` and ``timestamp_to_event``.

Client-Server API, "Pagination", "Room history visibility", "Lazy-loading
room members"; message_pagination.yaml, event_context.yaml and
``GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`` (MSC3030).

Tokens are the ``t<position>`` pagination tokens of ranvier/services/sync.py
(``prev_batch`` of /sync continues here; a sync ``next_batch`` is accepted
too). Every event served passes the history-visibility filter.

Who may read: a joined user; anyone in a ``world_readable`` room; a user who
left or was banned, up to the moment they left (as Synapse's
``check_user_in_room_or_world_readable(allow_departed_users=True)``). Anyone
else gets 403 ``M_FORBIDDEN``; an unknown room is 404 ``M_NOT_FOUND``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ranvier.core.filters import Filter, RoomEventFilter
from ranvier.errors import MatrixError
from ranvier.services.sync import format_events, pagination_token, parse_pagination_token
from ranvier.services.visibility import filter_events_for_member, filter_events_for_user
from ranvier.storage.events import StoredEvent
from ranvier.storage.state import StateKey

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

Direction = Literal["f", "b"]
MEMBER = "m.room.member"
#: Raw events read per query while paginating; at most this many queries per request.
_BATCH = 100
_MAX_BATCHES = 20
#: Below every stream ordering: backfilled history has negative ones (see
#: persist_federated_events), so the start of a room is not position 0.
HISTORY_START = -(2**53)
#: Backfill attempts (each at most a few /backfill requests) per /messages call.
MAX_BACKFILL_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class _Access:
    #: The last events position the user may read (None: no limit).
    cap: int | None
    #: The position of the user's current join (events after it are visible).
    joined_from: int | None


#: Public name of what a reader may see (ranvier/services/relations.py).
Access = _Access


@dataclass(slots=True)
class _Page:
    events: list[StoredEvent]
    #: Where the next page starts (a position in the events stream).
    next_position: int
    #: Nothing further in this direction (within the range).
    exhausted: bool


class PaginationService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    # --- access --------------------------------------------------------------------------

    async def _access(self, user_id: str, room_id: str) -> _Access:
        # An unknown room is 404 M_NOT_FOUND, as for /state, /members and /send
        # (the "unknown room/event → 404"); hiding it here would hide nothing.
        await self.hs.rooms.require_room(room_id)
        membership = await self.hs.rooms.store.get_membership(room_id, user_id)
        kind = None if membership is None else membership.membership
        if membership is not None and kind == "join":
            return _Access(None, membership.stream_ordering)
        if await self.hs.rooms.history_visibility(room_id) == "world_readable":
            return _Access(None, None)
        if membership is not None and kind in ("leave", "ban"):
            return _Access(membership.stream_ordering, None)
        raise MatrixError(403, "M_FORBIDDEN", f"User {user_id} is not in room {room_id}")

    async def access(self, user_id: str, room_id: str) -> _Access:
        """Who may read the room and up to where (also for /relations and /threads)."""
        return await self._access(user_id, room_id)

    async def format_client_events(
        self, user_id: str, device_id: str | None, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        """ClientEvents with their bundled aggregations, as /messages serves them."""
        return await self._format(user_id, device_id, events)

    # --- paging --------------------------------------------------------------------------

    async def _paginate(
        self,
        user_id: str,
        room_id: str,
        from_pos: int,
        stop_pos: int,
        direction: Direction,
        limit: int,
        event_filter: RoomEventFilter,
        access: _Access,
    ) -> _Page:
        """Up to ``limit`` visible, matching events from ``from_pos`` towards
        ``stop_pos``: backwards ``stop_pos < position <= from_pos`` newest first,
        forwards ``from_pos < position <= stop_pos`` oldest first."""
        store = self.hs.rooms.events
        kept: list[StoredEvent] = []
        cursor = from_pos
        if (
            limit <= 0
            or (direction == "b" and from_pos <= stop_pos)
            or (direction == "f" and from_pos >= stop_pos)
        ):
            return _Page([], cursor, limit > 0)
        for _ in range(_MAX_BATCHES):
            raw = await store.room_events_in_stream_range(
                room_id, cursor, stop_pos, _BATCH, direction
            )
            exhausted = len(raw) < _BATCH
            matching = [e for e in raw if event_filter.matches(e.event, room_id=room_id)]
            allowed = {
                e.event_id
                for e in await filter_events_for_member(
                    self.hs, user_id, matching, access.joined_from
                )
            }
            for event in raw:
                cursor = event.stream_ordering - 1 if direction == "b" else event.stream_ordering
                if event.event_id in allowed:
                    kept.append(event)
                    if len(kept) >= limit:
                        last_raw = raw[-1].event_id == event.event_id
                        return _Page(kept, cursor, exhausted and last_raw)
            if exhausted:
                return _Page(kept, cursor, True)
        return _Page(kept, cursor, False)

    async def _with_backfill(
        self,
        user_id: str,
        room_id: str,
        page: _Page,
        limit: int,
        event_filter: RoomEventFilter,
        access: _Access,
    ) -> _Page:
        """A backwards page that ran out of held history before ``limit``: pull
        older events from other servers (Server-Server API, "Backfilling and
        retrieving missing events"; Synapse's maybe_backfill) and go on into
        them. Bounded rounds; a failed backfill leaves the page as it was."""
        backfill = self.hs.federation_backfill
        for _ in range(MAX_BACKFILL_ROUNDS):
            if not page.exhausted or len(page.events) >= limit:
                return page
            if not await backfill.backfill(room_id):
                return page
            more = await self._paginate(
                user_id,
                room_id,
                page.next_position,
                HISTORY_START,
                "b",
                limit - len(page.events),
                event_filter,
                access,
            )
            page = _Page([*page.events, *more.events], more.next_position, more.exhausted)
        return page

    async def _lazy_members(
        self, events: Sequence[StoredEvent], event_filter: RoomEventFilter
    ) -> list[StoredEvent]:
        """The member events of the senders of ``events`` (Lazy-loading room
        members): from the state before the first event, else after the last."""
        if not event_filter.lazy_load_members or not events:
            return []
        state_store = self.hs.rooms.state_store
        keys: list[StateKey] = sorted({(MEMBER, e.event.sender) for e in events})
        found: dict[StateKey, str] = {}
        for group in (events[0].state_group_before, events[-1].state_group):
            missing = [key for key in keys if key not in found]
            if group is None or not missing:
                continue
            found.update(await state_store.get_state_ids_for_keys(group, missing))
        return await self.hs.rooms.events.get_events_ordered(list(found.values()))

    # --- /messages -----------------------------------------------------------------------

    async def messages(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        direction: Direction,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        """GET /rooms/{roomId}/messages. Without ``from``, backwards starts at the
        end of the room and forwards at its start (MSC3567)."""
        from_pos = None if from_token is None else parse_pagination_token(from_token)
        to_pos = None if to_token is None else parse_pagination_token(to_token)
        access = await self._access(user_id, room_id)
        top = await self.hs.rooms.events.current_position()
        if access.cap is not None:
            top = min(top, access.cap)
        if direction == "b":
            start = top if from_pos is None else min(from_pos, top)
            stop = HISTORY_START if to_pos is None else to_pos
        else:
            start = HISTORY_START if from_pos is None else from_pos
            stop = top if to_pos is None else min(to_pos, top)
        page = await self._paginate(
            user_id, room_id, start, stop, direction, limit, event_filter, access
        )
        if direction == "b" and to_pos is None:
            page = await self._with_backfill(
                user_id, room_id, page, limit, event_filter, access
            )
        response: dict[str, Any] = {
            "chunk": await self._format(user_id, device_id, page.events),
            "start": from_token if from_token is not None else pagination_token(start),
        }
        if not page.exhausted:
            response["end"] = pagination_token(page.next_position)
        members = await self._lazy_members(page.events, event_filter)
        if members:
            response["state"] = await self._format(user_id, device_id, members)
        return response

    # --- /context ------------------------------------------------------------------------

    async def context(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        event_id: str,
        *,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        """GET /rooms/{roomId}/context/{eventId}: ``limit // 2`` events before,
        the rest after (as Synapse), the state at the last event returned."""
        access = await self._access(user_id, room_id)
        store = self.hs.rooms.events
        not_found = MatrixError(
            404, "M_NOT_FOUND", "Event not found or you do not have permission to read it"
        )
        stored = await store.get_event(event_id)
        if (
            stored is None
            or stored.room_id != room_id
            or stored.rejected
            or stored.outlier
            or stored.soft_failed
            or (access.cap is not None and stored.stream_ordering > access.cap)
        ):
            raise not_found
        if not await filter_events_for_user(self.hs, user_id, [stored]):
            raise not_found
        top = await store.current_position()
        if access.cap is not None:
            top = min(top, access.cap)
        before_limit = limit // 2
        before = await self._paginate(
            user_id,
            room_id,
            stored.stream_ordering - 1,
            HISTORY_START,
            "b",
            before_limit,
            event_filter,
            access,
        )
        after = await self._paginate(
            user_id,
            room_id,
            stored.stream_ordering,
            top,
            "f",
            limit - before_limit,
            event_filter,
            access,
        )
        last = after.events[-1] if after.events else stored
        state_ids = await store.state_after_event(last.event_id) or {}
        returned = [*reversed(before.events), stored, *after.events]
        if event_filter.lazy_load_members:
            senders = {e.event.sender for e in returned}
            state_ids = {
                key: value
                for key, value in state_ids.items()
                if key[0] != MEMBER or key[1] in senders
            }
        state = [
            e
            for e in await store.get_events_ordered(list(state_ids.values()))
            if event_filter.matches(e.event, room_id=room_id)
        ]
        formatted = await self._format(
            user_id, device_id, [stored, *before.events, *after.events, *state]
        )
        count_before = len(before.events)
        count_after = len(after.events)
        return {
            "event": formatted[0],
            "events_before": formatted[1 : 1 + count_before],
            "events_after": formatted[1 + count_before : 1 + count_before + count_after],
            "state": formatted[1 + count_before + count_after :],
            "start": pagination_token(before.next_position),
            "end": pagination_token(after.next_position),
        }

    async def around_event(
        self,
        user_id: str,
        stored: StoredEvent,
        before_limit: int,
        after_limit: int,
        *,
        cap: int | None,
        joined_from: int | None,
    ) -> tuple[list[StoredEvent], list[StoredEvent], str, str]:
        """``(events before (newest first), events after, start, end)`` around an
        event the user may see, visible ones only: the ``context`` of a
        ``/search`` result (Client-Server API, "Server Side Search"). ``cap``:
        the last position the user may read (when they left the room)."""
        access = _Access(cap, joined_from)
        top = await self.hs.rooms.events.current_position()
        if cap is not None:
            top = min(top, cap)
        room_id = stored.room_id
        before = await self._paginate(
            user_id, room_id, stored.stream_ordering - 1, HISTORY_START, "b",
            before_limit, RoomEventFilter(), access,
        )
        after = await self._paginate(
            user_id, room_id, stored.stream_ordering, top, "f",
            after_limit, RoomEventFilter(), access,
        )
        return (
            before.events,
            after.events,
            pagination_token(before.next_position),
            pagination_token(after.next_position),
        )

    # --- timestamp_to_event --------------------------------------------------------------

    async def timestamp_to_event(
        self, user_id: str, room_id: str, timestamp: int, direction: Direction
    ) -> dict[str, Any]:
        """The closest event at or after (``f``) / at or before (``b``) ``timestamp``
        (MSC3030); 404 ``M_NOT_FOUND`` when there is none the user may see."""
        access = await self._access(user_id, room_id)
        stored = await self.hs.rooms.events.event_at_timestamp(room_id, timestamp, direction)
        if (
            stored is None
            or (access.cap is not None and stored.stream_ordering > access.cap)
            or not await filter_events_for_member(
                self.hs, user_id, [stored], access.joined_from, include_ignored=True
            )
        ):
            raise MatrixError(
                404,
                "M_NOT_FOUND",
                f"Unable to find event from {timestamp} in direction {direction}",
            )
        return {"event_id": stored.event_id, "origin_server_ts": stored.event.origin_server_ts}

    async def _format(
        self, user_id: str, device_id: str | None, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        return await format_events(
            self.hs,
            _CLIENT_FORMAT,
            events,
            user_id=user_id,
            device_id=device_id,
            include_room_id=True,
        )


_CLIENT_FORMAT = Filter()
