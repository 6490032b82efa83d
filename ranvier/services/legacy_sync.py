"""The deprecated but still specified sync front ends (Client-Server API v1.19,
old_sync.yaml, peeking_events.yaml, room_initial_sync.yaml):

* ``GET /events``: the long-poll event stream (``from``/``timeout``; with
  ``room_id``, one room, which a non-member may "peek" into when it is
  ``world_readable``: "Room Previews");
* ``GET /events/{eventId}``: one event, with the visibility of
  ``GET /rooms/{roomId}/event/{eventId}``;
* ``GET /initialSync`` and ``GET /rooms/{roomId}/initialSync``: a snapshot of
  the user's rooms (or one room): membership, the latest messages, state,
  directory visibility, account data and presence.

Thin layers over the services /sync and /messages use, nothing of their own in
storage: tokens are /sync tokens (ranvier/services/sync.py), so ``end`` of
``/initialSync`` continues in ``/events`` and both interchange with /sync's
``next_batch``; ``messages.start``/``messages.end`` are tokens for ``/messages``
(ranvier/services/pagination.py builds that chunk).

What ``/events`` returns: room events only, as old_sync.yaml types its
``chunk`` (ClientEvent, which needs an ``event_id``): those visible to the user
in their joined rooms, and their own membership changes (and what they could
see before) in rooms they left or were invited to since ``from``. Synapse also
mixes presence, typing, receipts and account data into the chunk; those are
not ClientEvents, so here they stay with /sync (and /initialSync for presence
and account data): ``end`` advances only the token's ``events`` slot and keeps
the others of ``from``, so a client moving on to /sync with it misses nothing.
A peek (``room_id`` of a room the user is not in) returns only that room's
events whose state had ``world_readable`` history ("Room Previews", Server
behaviour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ranvier.core.filters import RoomEventFilter
from ranvier.errors import MatrixError
from ranvier.services.client_events import serialize_events
from ranvier.services.pagination import HISTORY_START
from ranvier.services.sync import MAX_TIMEOUT_MS
from ranvier.services.sync_providers.memberships import ALL_MEMBERSHIPS
from ranvier.services.sync_tokens import InvalidToken, SyncToken, pagination_token
from ranvier.services.visibility import filter_events_for_member, filter_events_for_user
from ranvier.storage.events import StoredEvent
from ranvier.storage.rooms import Membership

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: Synapse's long-poll when ``timeout`` is absent (the spec gives no default).
DEFAULT_EVENTS_TIMEOUT_MS = 30_000
#: Room events per ``/events`` answer; ``end`` continues after the last one.
MAX_EVENTS_CHUNK = 100
#: Messages per room when ``limit`` is absent (as /messages: message_pagination.yaml).
DEFAULT_INITIAL_SYNC_LIMIT = 10
#: An event scan over more than this falls back to asking each candidate room.
_ACTIVE_ROOMS_SCAN_CAP = 2000
#: The memberships /initialSync lists (old_sync.yaml, ``membership`` enum).
_LISTED = ("join", "invite")
_ARCHIVED = ("leave", "ban")


def parse_stream_token(text: str) -> SyncToken:
    """A ``from`` token of /events (from /events, /initialSync or /sync);
    400 ``M_INVALID_PARAM`` otherwise (old_sync.yaml: "Bad pagination from")."""
    try:
        return SyncToken.parse(text)
    except InvalidToken:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid from token {text!r}") from None


@dataclass(frozen=True, slots=True)
class _Scope:
    """The rooms one /events call looks at."""

    #: None: every room of the user; else that one room.
    room_id: str | None
    #: A non-member reading a world_readable room (Room Previews).
    peeking: bool

    def wake_key(self, user_id: str) -> str:
        """What the long-poll waits on in the notifier (a peeker is no member,
        so only the room's own wake-ups reach it)."""
        return self.room_id if self.peeking and self.room_id is not None else user_id


@dataclass(frozen=True, slots=True)
class _RoomRange:
    room_id: str
    #: Events up to this position (the user's leave, or the token's end).
    upper: int
    #: The position of the user's current join (None: not joined).
    joined_from: int | None


class LegacySyncService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    # --- GET /events ---------------------------------------------------------------------

    async def events(
        self,
        user_id: str,
        device_id: str | None,
        *,
        from_token: str | None,
        timeout_ms: int,
        room_id: str | None,
        is_guest: bool = False,
    ) -> dict[str, Any]:
        """The events after ``from_token`` (default: now, so only new ones), waiting
        up to ``timeout_ms`` for some; ``{"chunk", "start", "end"}``."""
        since = None if from_token is None else parse_stream_token(from_token)
        if is_guest and room_id is None:
            # Guest Access: guests may use /events only as used for room previews.
            raise MatrixError(400, "M_MISSING_PARAM", "Guest users must specify room_id")
        scope = await self._scope(user_id, room_id)
        if not scope.peeking and not is_guest:
            # As /sync: a client polling the stream is online (Synapse: affect_presence).
            await self.hs.presence.set_presence_from_sync(user_id, None)
        if since is None:
            since = await self.hs.sync.current_token()
        start = from_token if from_token is not None else since.encode()
        key = scope.wake_key(user_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while True:
            version = self.hs.notifier.version(key)
            chunk, end = await self._events_once(user_id, device_id, since, scope)
            remaining = deadline - loop.time()
            if chunk or remaining <= 0:
                return {"chunk": chunk, "start": start, "end": end.encode()}
            # Nothing for the user in (since, end]: later polls start at end.
            since = end
            await self.hs.notifier.wait(key, version, remaining)

    async def _scope(self, user_id: str, room_id: str | None) -> _Scope:
        if room_id is None:
            return _Scope(None, peeking=False)
        membership = await self.hs.rooms.store.get_membership(room_id, user_id)
        if membership is not None and membership.membership == "join":
            return _Scope(room_id, peeking=False)
        if (
            await self.hs.rooms.room_exists(room_id)
            and await self.hs.rooms.history_visibility(room_id) == "world_readable"
        ):
            return _Scope(room_id, peeking=True)
        # Room Previews: only world_readable rooms may be read without joining.
        raise MatrixError(
            403, "M_FORBIDDEN", f"User {user_id} is not in room {room_id} and may not peek"
        )

    async def _events_once(
        self, user_id: str, device_id: str | None, since: SyncToken, scope: _Scope
    ) -> tuple[list[dict[str, Any]], SyncToken]:
        now_pos = await self.hs.rooms.events.current_position()
        # A position from the future (another database?) reads as now, as in /sync.
        since_pos = min(since.events, now_pos)
        if since_pos == now_pos:
            return [], replace(since, events=now_pos)  # no new event: spare the queries
        if scope.peeking:
            assert scope.room_id is not None
            ranges = [_RoomRange(scope.room_id, now_pos, None)]
            own: set[str] = set()
        else:
            ranges, own = await self._room_ranges(user_id, since_pos, now_pos, scope.room_id)
        room_events, events_end = await self._room_events(user_id, since_pos, now_pos, ranges, own)
        chunk = await serialize_events(
            self.hs, room_events, user_id=user_id, device_id=device_id, include_room_id=True
        )
        # Only the events slot moves: the other streams are /sync's (module docstring).
        end = replace(since, events=events_end)
        return chunk, end

    async def _room_ranges(
        self, user_id: str, since_pos: int, now_pos: int, only: str | None
    ) -> tuple[list[_RoomRange], set[str]]:
        """The rooms to read: the joined ones, and those whose membership changed
        since the token (up to the change: a leave, an invite). Also the IDs of
        the user's own membership events in the range, shown whatever the
        history visibility (they tell the user their membership changed)."""
        store = self.hs.rooms
        current = {m.room_id: m for m in await store.store.rooms_for_user(user_id, ALL_MEMBERSHIPS)}
        changes = await store.events.membership_changes_for_user(user_id, since_pos, now_pos)
        own = {change.event_id for change in changes}
        wanted = {m.room_id for m in current.values() if m.membership == "join"}
        wanted |= {change.room_id for change in changes}
        if only is not None:
            wanted &= {only}
        ranges = []
        for room_id in sorted(wanted):
            membership = current.get(room_id)
            ranges.append(_range_of(room_id, membership, now_pos))
        return ranges, own

    async def _room_events(
        self,
        user_id: str,
        since_pos: int,
        now_pos: int,
        ranges: Sequence[_RoomRange],
        own: set[str],
    ) -> tuple[list[StoredEvent], int]:
        """Visible room events in (since_pos, now_pos], oldest first, at most
        :data:`MAX_EVENTS_CHUNK`, and the events position the answer covers
        (``now_pos`` unless there were more)."""
        store = self.hs.rooms.events
        covered = now_pos
        if not any(r.upper > since_pos for r in ranges):
            return [], covered
        active = await store.rooms_with_events_between(since_pos, now_pos, _ACTIVE_ROOMS_SCAN_CAP)
        found: dict[str, list[StoredEvent]] = {}
        for room in ranges:
            if room.upper <= since_pos or (active is not None and room.room_id not in active):
                continue
            events = await store.room_events_in_stream_range(
                room.room_id, since_pos, room.upper, MAX_EVENTS_CHUNK, "f"
            )
            if len(events) >= MAX_EVENTS_CHUNK:
                # More in this room: the answer stops at its last one read.
                covered = min(covered, events[-1].stream_ordering)
            found[room.room_id] = events
        merged = sorted(
            (e for events in found.values() for e in events if e.stream_ordering <= covered),
            key=lambda e: e.stream_ordering,
        )
        if len(merged) > MAX_EVENTS_CHUNK:
            merged = merged[:MAX_EVENTS_CHUNK]
            covered = merged[-1].stream_ordering
        visible = await self._visible(user_id, merged, ranges, own)
        return visible, covered

    async def _visible(
        self,
        user_id: str,
        events: list[StoredEvent],
        ranges: Sequence[_RoomRange],
        own: set[str],
    ) -> list[StoredEvent]:
        joined_from = {r.room_id: r.joined_from for r in ranges}
        kept: set[str] = {e.event_id for e in events if e.event_id in own}
        by_room: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_room.setdefault(event.room_id, []).append(event)
        for room_id, room_events in by_room.items():
            allowed = await filter_events_for_member(
                self.hs, user_id, room_events, joined_from.get(room_id)
            )
            kept.update(e.event_id for e in allowed)
        return [e for e in events if e.event_id in kept]

    # --- GET /events/{eventId} -----------------------------------------------------------

    async def get_event(self, user_id: str, device_id: str | None, event_id: str) -> dict[str, Any]:
        """The event if the user may see it (as GET /rooms/{roomId}/event/{eventId}),
        else 404 ``M_NOT_FOUND`` (old_sync.yaml)."""
        stored = await self.hs.rooms.events.get_event(event_id)
        visible = [] if stored is None else await filter_events_for_user(self.hs, user_id, [stored])
        if not visible:
            raise MatrixError(
                404, "M_NOT_FOUND", "Event not found or you do not have permission to read it"
            )
        [event] = await serialize_events(
            self.hs, visible, user_id=user_id, device_id=device_id, include_room_id=True
        )
        return event

    # --- GET /initialSync ----------------------------------------------------------------

    async def initial_sync(
        self, user_id: str, device_id: str | None, *, limit: int, archived: bool
    ) -> dict[str, Any]:
        """Every room the user is in or invited to (``archived``: also those they
        left or were banned from), the global account data, the presence of
        the users they share a room with, and ``end`` for /events."""
        now = await self.hs.sync.current_token()
        kinds = _LISTED + _ARCHIVED if archived else _LISTED
        memberships = [
            m for m in await self.hs.rooms.store.rooms_for_user(user_id, kinds) if not m.forgotten
        ]
        # The account data and presence of an initial /sync (the same providers).
        request = self.hs.sync.snapshot_request(user_id, device_id, now)
        account_data = await self.hs.sync.account_data.changes(request)
        rooms = []
        for membership in memberships:
            room = await self._room_entry(user_id, device_id, membership, limit, now)
            room_account_data = account_data.room_account_data.get(membership.room_id)
            if room_account_data is not None and "messages" in room:
                room["account_data"] = room_account_data
            rooms.append(room)
        presence = await self.hs.sync.presence.changes(request)
        return {
            "end": now.encode(),
            "rooms": rooms,
            "presence": [
                _legacy_presence(event) for event in presence.fields["presence"]["events"]
            ],
            "account_data": account_data.fields["account_data"]["events"],
        }

    async def _room_entry(
        self,
        user_id: str,
        device_id: str | None,
        membership: Membership,
        limit: int,
        now: SyncToken,
    ) -> dict[str, Any]:
        room_id = membership.room_id
        record = await self.hs.rooms.store.get_room(room_id)
        entry: dict[str, Any] = {
            "room_id": room_id,
            "membership": membership.membership,
            "visibility": "public" if record is not None and record.is_public else "private",
        }
        if membership.membership == "invite":
            invite = await self.hs.rooms.events.get_event(membership.event_id)
            if invite is not None:
                [entry["invite"]] = await serialize_events(
                    self.hs, [invite], user_id=user_id, device_id=device_id
                )
            return entry
        if record is None:
            # A room of another server this one never held (a rejected remote
            # invite): there is no history or state to show.
            return entry
        entry["messages"] = await self._messages(user_id, device_id, room_id, limit, now)
        entry["state"] = await self._state(user_id, device_id, room_id)
        entry["account_data"] = []
        return entry

    async def _messages(
        self, user_id: str, device_id: str | None, room_id: str, limit: int, now: SyncToken
    ) -> dict[str, Any]:
        """The latest ``limit`` messages the user may see, oldest first (as a
        ``/messages`` page backwards from now, up to their leave if they left):
        ``start`` goes on backwards in /messages (absent at the start of the
        room), ``end`` is the stream token now (for /messages and /events)."""
        page = await self.hs.pagination.messages(
            user_id,
            device_id,
            room_id,
            from_token=now.encode(),
            # A bound (the start of history) so that no backfill over federation
            # runs per room, as /sync does none.
            to_token=pagination_token(HISTORY_START),
            direction="b",
            limit=limit,
            event_filter=RoomEventFilter(),
        )
        messages: dict[str, Any] = {"chunk": list(reversed(page["chunk"])), "end": now.encode()}
        if "end" in page:
            messages["start"] = page["end"]
        return messages

    async def _state(self, user_id: str, device_id: str | None, room_id: str) -> list[Any]:
        """The current state (joined, world_readable) or the state at the leave
        (as GET /rooms/{roomId}/state)."""
        rooms = self.hs.rooms
        group = await rooms.visible_state_group(user_id, room_id)
        state = await rooms.state_store.get_state_ids(group)
        events = await rooms.events.get_events_ordered(list(state.values()))
        if await self._never_joined_outsider(user_id, room_id):
            # As /sync's rooms.leave: one who never joined (a rejected invite)
            # sees only the state their history visibility lets them see.
            events = await filter_events_for_user(self.hs, user_id, events)
        return await serialize_events(
            self.hs, events, user_id=user_id, device_id=device_id, include_room_id=True
        )

    async def _never_joined_outsider(self, user_id: str, room_id: str) -> bool:
        """Whether the user left or was banned without ever joining, from a room
        that is not world_readable."""
        rooms = self.hs.rooms
        membership = await rooms.store.get_membership(room_id, user_id)
        if membership is None or membership.membership not in _ARCHIVED:
            return False
        if await rooms.history_visibility(room_id) == "world_readable":
            return False
        history = await rooms.events.membership_history_in_room(room_id, user_id)
        return not any(change.membership == "join" for change in history)

    # --- GET /rooms/{roomId}/initialSync -------------------------------------------------

    async def room_initial_sync(
        self, user_id: str, device_id: str | None, room_id: str, *, limit: int
    ) -> dict[str, Any]:
        """One room's snapshot (room_initial_sync.yaml): to a member, one who left
        (up to the leave), or anyone when the room is world_readable (Room
        Previews: ``membership`` is then absent unless they have one). Else 403
        ``M_FORBIDDEN``, unknown rooms included (the spec's only error here)."""
        forbidden = MatrixError(
            403, "M_FORBIDDEN", f"User {user_id} is not in room {room_id} and may not peek"
        )
        record = await self.hs.rooms.store.get_room(room_id)
        if record is None:
            raise forbidden
        membership = await self.hs.rooms.store.get_membership(room_id, user_id)
        kind = None if membership is None else membership.membership
        world_readable = await self.hs.rooms.history_visibility(room_id) == "world_readable"
        if kind not in ("join", "leave", "ban") and not world_readable:
            raise forbidden
        now = await self.hs.sync.current_token()
        body: dict[str, Any] = {
            "room_id": room_id,
            "messages": await self._messages(user_id, device_id, room_id, limit, now),
            "state": await self._state(user_id, device_id, room_id),
            "visibility": "public" if record.is_public else "private",
        }
        if kind is not None:
            body["membership"] = kind
        account_data = await self.hs.account_data.changes_for_user(
            user_id, 0, now.account_data, [room_id], initial=False
        )
        body["account_data"] = account_data.room_events.get(room_id, [])
        if kind == "join" or world_readable:
            # As Synapse: the presence of the room's members (not for a departed user).
            members = await self.hs.rooms.joined_user_ids(room_id)
            presence = await self.hs.presence.presence_events_for_users(members)
            body["presence"] = [_legacy_presence(event) for event in presence]
        return body


def _range_of(room_id: str, membership: Membership | None, now_pos: int) -> _RoomRange:
    if membership is not None and membership.membership == "join":
        return _RoomRange(room_id, now_pos, membership.stream_ordering)
    # Left, banned, invited, knocking since the token: events up to that change.
    upper = now_pos if membership is None else min(now_pos, membership.stream_ordering)
    return _RoomRange(room_id, upper, None)


def _legacy_presence(event: dict[str, Any]) -> dict[str, Any]:
    """An ``m.presence`` event with ``content.user_id`` too, as clients of the
    old API read it (Synapse serves both it and ``sender``)."""
    return {**event, "content": {**event["content"], "user_id": event["sender"]}}
