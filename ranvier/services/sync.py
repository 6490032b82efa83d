"""``GET /sync`` (Client-Server API, "Syncing"; sync.yaml).

DESIGN.md, "Streams": every kind of change a client syncs has a monotonic
position, and a sync token is the tuple of them. One provider per stream
answers "what changed for this user between positions A and B":

=================  ==========================================================
events             rooms/events/state (``hs.rooms.events``): timelines, state
account_data       ``hs.account_data.changes_for_user``
receipts           ``hs.receipts.changes_for_user``
presence           ``hs.presence.changes_for_user``
typing             ``hs.typing.changes_for_user`` (in memory, see below)
to_device          filled by a registered :data:`SyncExtension` (E2EE)
device_lists       filled by a registered :data:`SyncExtension` (E2EE)
=================  ==========================================================

**Token format** (opaque to clients): ``s<events>_<account_data>_<receipts>_
<presence>_<typing>_<to_device>_<device_lists>``, each a decimal position.
Every position but ``typing`` comes from the database (``stream_positions``),
so tokens stay valid across restarts and across processes sharing a
PostgreSQL database. Typing is in memory and restarts at 0 with the process:
the typing slot holds ``epoch + position`` where ``epoch`` is the wall clock
(ms) when this process started, so a slot from an earlier process (below the
epoch) or one this process never issued (above its position) is read as 0,
"send the current typing lists", and never breaks the sync.

**Pagination tokens** (``prev_batch``, ``/messages`` ``start``/``end``,
``/context``): ``t<position>``, a point in the ``events`` stream *after* the
event at that position: paginating backwards from ``t<N>`` returns events at
or before N, forwards returns events after N. ``/messages`` also accepts a
sync token (its ``events`` slot), as clients pass ``next_batch`` there.

A long-poll (``timeout``) reads the notifier's per-user version *before*
looking for changes and, finding none, waits on it (``hs.notifier.wait``), so
a change that commits in between is never missed and nothing polls.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ranvier.core.filters import DEFAULT_FILTER, Filter, filter_events, project_event_fields
from ranvier.core.redaction import redact
from ranvier.core.stripped_state import sanitize_stripped_state
from ranvier.errors import MatrixError
from ranvier.services.client_events import serialize_events
from ranvier.services.push import rooms_with_own_receipts
from ranvier.services.visibility import filter_events_for_member, filter_events_for_user
from ranvier.storage.events import MembershipChange, StoredEvent
from ranvier.storage.rooms import Membership
from ranvier.storage.state import StateKey, StateMap
from ranvier.storage.streams import current_stream_positions

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: The slots of a sync token, in order.
STREAMS = ("events", "account_data", "receipts", "presence", "typing", "to_device", "device_lists")
_DB_STREAMS = tuple(name for name in STREAMS if name != "typing")
#: Synapse's default timeline limit when the filter sets none.
DEFAULT_TIMELINE_LIMIT = 10
#: Cap on a filter's timeline ``limit``: any larger one reads as this (a filter may
#: say 2**70; the query needs a 64-bit LIMIT and the response a bounded size).
#: As the /messages limit cap (ranvier/api/client/room_history.py).
MAX_TIMELINE_LIMIT = 1000
#: Longest accepted long-poll (Synapse does not cap; this bounds held requests).
MAX_TIMEOUT_MS = 10 * 60 * 1000
MEMBER = "m.room.member"
ALL_MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")
#: Room summary: "the first 5 members of the room" (sync.yaml, m.heroes).
HERO_COUNT = 5
#: Stripped state for invites and knocks (Client-Server API, "Stripped state":
#: the events a server should include), plus the user's own member event.
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)
_NAME_KEYS: list[StateKey] = [("m.room.name", ""), ("m.room.canonical_alias", "")]
#: Bound on extra timeline fetches when filtering/visibility drop events.
_MAX_TIMELINE_REFILLS = 8
# An incremental /sync first lists the rooms with events since the token (one
# range scan) and looks only at those, when fewer than this many events happened.
_ACTIVE_ROOMS_SCAN_CAP = 2000
# ... if the user is in more rooms than this (else asking for them is one query anyway).
_ACTIVE_ROOMS_MIN_ROOMS = 20


def timeline_limit(sync_filter: Filter) -> int:
    """The number of timeline events per room: the filter's, capped, or the default."""
    return min(sync_filter.room.timeline.limit or DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)


class InvalidToken(ValueError):
    pass


def _invalid_token(text: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"Invalid token {text!r}")


def _position(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidToken(text)
    return int(text)


@dataclass(frozen=True, slots=True)
class SyncToken:
    events: int = 0
    account_data: int = 0
    receipts: int = 0
    presence: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in STREAMS)

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        """Raises :class:`InvalidToken`."""
        if not text.startswith("s"):
            raise InvalidToken(text)
        parts = text[1:].split("_")
        if len(parts) != len(STREAMS):
            raise InvalidToken(text)
        return cls(*(_position(part) for part in parts))


def pagination_token(position: int) -> str:
    # Negative: within backfilled history (ranvier/storage/events.py).
    return f"t{position}"


def parse_pagination_token(text: str) -> int:
    """The ``events`` position of a pagination token (``t<N>``) or sync token;
    400 ``M_INVALID_PARAM`` otherwise."""
    try:
        if text.startswith("t-"):
            return -_position(text[2:])
        if text.startswith("t"):
            return _position(text[1:])
        return SyncToken.parse(text).events
    except InvalidToken:
        raise _invalid_token(text) from None


# --------------------------------------------------------------------------- extensions


@dataclass(frozen=True, slots=True)
class SyncContext:
    """What a :data:`SyncExtension` is told about the sync being built."""

    user_id: str
    device_id: str | None
    #: None for an initial sync.
    since: SyncToken | None
    #: The token this response ends at (``next_batch``); an extension reports
    #: changes in (since.<slot>, now.<slot>].
    now: SyncToken
    full_state: bool
    joined_room_ids: tuple[str, ...]


@dataclass(slots=True)
class ExtensionResult:
    #: Top-level response keys (e.g. ``to_device``, ``device_lists``,
    #: ``device_one_time_keys_count``); they replace the empty defaults.
    fields: dict[str, Any] = field(default_factory=dict)
    #: Whether there is something new: a long-poll returns at once.
    has_updates: bool = False


#: E2EE (and other) additions to /sync: ``hs.sync.register_extension(fn)``.
SyncExtension = Callable[[SyncContext], Awaitable[ExtensionResult]]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class SyncParams:
    user_id: str
    device_id: str | None
    filter: Filter = DEFAULT_FILTER
    since: SyncToken | None = None
    full_state: bool = False
    timeout_ms: int = 0
    #: None: the parameter was absent (the client is marked online).
    set_presence: str | None = None
    use_state_after: bool = False


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


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class _Timeline:
    events: list[StoredEvent]  # oldest first
    limited: bool
    prev_batch: str
    #: The newest event of the room at or before the range's end (any kind).
    last: StoredEvent | None


@dataclass(slots=True)
class _JoinedRoom:
    room_id: str
    full_state: bool
    joined_from: int | None
    #: The timeline is the room's latest events whatever the token: an initial
    #: sync, or a room newly joined since it (not ``full_state=true`` alone,
    #: whose timeline stays incremental: sync.yaml).
    from_start: bool = False
    timeline: _Timeline | None = None
    state_ids: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None


class _Serializer:
    """Collects every event a response shows, serializes them in one call."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    def add(self, events: Sequence[StoredEvent]) -> tuple[int, int]:
        start = len(self.events)
        self.events.extend(events)
        return (start, len(self.events))


class SyncService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.lazy_members = LazyMemberCache()
        self._extensions: list[SyncExtension] = []
        # See the module docstring: typing positions of this process.
        self._typing_epoch = hs.clock_ms()

    def register_extension(self, extension: SyncExtension) -> None:
        """Add a provider of top-level sync fields (to_device, device_lists...)."""
        self._extensions.append(extension)

    # --- tokens ------------------------------------------------------------------------

    async def current_token(self) -> SyncToken:
        positions = await current_stream_positions(self.hs.database, _DB_STREAMS)
        typing = self._typing_epoch + self.hs.typing.current_position()
        return SyncToken(typing=typing, **positions)

    def _typing_position(self, slot: int) -> int:
        position = slot - self._typing_epoch
        if position < 0 or position > self.hs.typing.current_position():
            return 0
        return position

    @staticmethod
    def _clamp(since: SyncToken, now: SyncToken) -> SyncToken:
        """A token from the future (another database?) is read as "now"."""
        return SyncToken(
            *(
                min(getattr(since, name), getattr(now, name)) if name != "typing" else since.typing
                for name in STREAMS
            )
        )

    # --- entry point -------------------------------------------------------------------

    async def sync(self, params: SyncParams) -> dict[str, Any]:
        await self.hs.presence.set_presence_from_sync(params.user_id, params.set_presence)
        timeout_ms = min(max(params.timeout_ms, 0), MAX_TIMEOUT_MS)
        if params.since is None or params.full_state or timeout_ms == 0:
            response, _ = await self._sync_once(params)
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            version = self.hs.notifier.version(params.user_id)
            # Every stream still at the token's position: nothing can have
            # changed for anyone, so wait before computing an answer that would
            # be empty (as Synapse does). A client long-polls again right after
            # each answer; this spares that whole computation, one query instead.
            idle = params.since == await self.current_token()
            if not idle:
                response, has_updates = await self._sync_once(params)
                if has_updates:
                    return response
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.hs.notifier.wait(
                params.user_id, version, remaining
            ):
                return (await self._sync_once(params))[0] if idle else response

    async def _sync_once(self, params: SyncParams) -> tuple[dict[str, Any], bool]:
        hs = self.hs
        user_id = params.user_id
        now = await self.current_token()
        since = None if params.since is None else self._clamp(params.since, now)
        full = since is None or params.full_state
        if since is None:
            self.lazy_members.clear(user_id, params.device_id)
        room_filter = params.filter.room

        current = await hs.rooms.store.rooms_for_user(user_id, ALL_MEMBERSHIPS)
        newest_membership = max((m.stream_ordering for m in current), default=0)
        if newest_membership > now.events:
            # Committed after we read the positions; every position below it is
            # committed too, so the events slot can move up to it.
            now = replace(now, events=newest_membership)
        changes: dict[str, list[MembershipChange]] = {}
        if since is not None:
            for change in await hs.rooms.events.membership_changes_for_user(
                user_id, since.events, now.events
            ):
                changes.setdefault(change.room_id, []).append(change)
        at_since = await self._memberships_at_since(changes)

        joined: list[Membership] = []
        invited: list[Membership] = []
        knocked: list[Membership] = []
        left: list[Membership] = []
        for membership in current:
            if not room_filter.allows_room(membership.room_id):
                continue
            kind = membership.membership
            changed = membership.room_id in changes
            if kind == "join":
                joined.append(membership)
            elif kind == "invite" and (full or changed):
                invited.append(membership)
            elif kind == "knock" and (full or changed):
                knocked.append(membership)
            elif (
                kind in ("leave", "ban")
                and not membership.forgotten
                and (changed or (full and room_filter.include_leave))
            ):
                left.append(membership)

        serializer = _Serializer()
        joined_rooms = await self._joined_rooms(params, since, now, joined, changes, at_since)
        left_rooms = await self._left_rooms(params, since, left, changes, at_since)

        # Ephemeral and account data.
        joined_ids = [room.room_id for room in joined]
        typing_from = 0 if since is None else self._typing_position(since.typing)
        typing = await hs.typing.changes_for_user(
            user_id, typing_from, now.typing - self._typing_epoch, joined_ids
        )
        receipts = await hs.receipts.changes_for_user(
            user_id, 0 if since is None else since.receipts, now.receipts, joined_ids
        )
        account_data = await hs.account_data.changes_for_user(
            user_id,
            0 if full or since is None else since.account_data,
            now.account_data,
            initial=full,
        )
        presence = await hs.presence.changes_for_user(
            user_id, 0 if since is None else since.presence, now.presence
        )
        newly_joined = [
            r.room_id for r in joined_rooms.values() if r.full_state and since is not None
        ]
        if newly_joined and since is not None:
            presence = await self._add_presence_of_new_members(presence, newly_joined)

        # Notification counts (services/push.py); rooms where the user's own
        # receipt moved have new counts even with nothing else new.
        counts_changed = rooms_with_own_receipts(user_id, receipts)
        unread = await hs.push.sync_counts(
            user_id, joined_ids, by_thread=room_filter.timeline.unread_thread_notifications
        )

        # Joined rooms an incremental sync leaves out: nothing in the range
        # (no events, no ephemeral, no room account data). Skipped up front, so
        # the per-room work below scales with the active rooms, not all of them.
        quiet = {
            room.room_id
            for room in joined_rooms.values()
            if since is not None
            and not room.full_state
            and room.timeline is None
            and not room.state_ids
            and room.room_id not in typing
            and room.room_id not in receipts
            and room.room_id not in account_data.room_events
            and room.room_id not in counts_changed
        }

        # Serialize every room event in one batch.
        slots: dict[tuple[str, str, str], tuple[int, int]] = {}
        state_events = await hs.rooms.events.get_events(
            [
                eid
                for room in [*joined_rooms.values(), *left_rooms.values()]
                for eid in room.state_ids
            ]
        )
        for section, rooms in (("join", joined_rooms), ("leave", left_rooms)):
            for room in rooms.values():
                if section == "join" and room.room_id in quiet:
                    continue
                room_state = sorted(
                    (state_events[eid] for eid in room.state_ids if eid in state_events),
                    key=lambda e: e.stream_ordering,
                )
                room_state = [
                    e
                    for e in room_state
                    if room_filter.state.matches(e.event, room_id=room.room_id)
                ]
                slots[(section, room.room_id, "state")] = serializer.add(room_state)
                room_timeline = room.timeline.events if room.timeline is not None else []
                slots[(section, room.room_id, "timeline")] = serializer.add(room_timeline)
        formatted = await self._format(params, serializer.events)

        def events_of(section: str, room_id: str, part: str) -> list[dict[str, Any]]:
            start, end = slots[(section, room_id, part)]
            return formatted[start:end]

        ephemeral_filter = room_filter.ephemeral
        room_ad_filter = room_filter.account_data
        response_join: dict[str, Any] = {}
        for room in joined_rooms.values():
            room_id = room.room_id
            if room_id in quiet:
                continue
            ephemeral = [
                event for event in (typing.get(room_id), receipts.get(room_id)) if event is not None
            ]
            ephemeral = filter_events(ephemeral_filter, ephemeral, room_id=room_id)  # type: ignore[assignment]
            room_account_data = filter_events(
                room_ad_filter, account_data.room_events.get(room_id, []), room_id=room_id
            )
            timeline_events = events_of("join", room_id, "timeline")
            state = events_of("join", room_id, "state")
            timeline = room.timeline
            if not (
                since is None
                or room.full_state
                or timeline_events
                or state
                or ephemeral
                or room_account_data
                or room_id in counts_changed
                or (timeline is not None and timeline.limited)
            ):
                continue
            response_join[room_id] = {
                "summary": room.summary or {},
                "state": {"events": state},
                "timeline": {
                    "events": timeline_events,
                    "limited": timeline.limited if timeline is not None else False,
                    "prev_batch": timeline.prev_batch
                    if timeline is not None
                    else pagination_token(now.events),
                },
                "ephemeral": {"events": ephemeral},
                "account_data": {"events": room_account_data},
                **unread[room_id],
            }
        response_leave: dict[str, Any] = {}
        for room in left_rooms.values():
            timeline = room.timeline
            assert timeline is not None
            response_leave[room.room_id] = {
                "state": {"events": events_of("leave", room.room_id, "state")},
                "timeline": {
                    "events": events_of("leave", room.room_id, "timeline"),
                    "limited": timeline.limited,
                    "prev_batch": timeline.prev_batch,
                },
                "account_data": {
                    "events": filter_events(
                        room_ad_filter,
                        account_data.room_events.get(room.room_id, []),
                        room_id=room.room_id,
                    )
                },
            }
        response_invite = {
            m.room_id: {"invite_state": {"events": await self._stripped_state(m)}} for m in invited
        }
        response_knock = {
            m.room_id: {"knock_state": {"events": await self._stripped_state(m)}} for m in knocked
        }
        global_account_data = filter_events(params.filter.account_data, account_data.global_events)
        presence_events = filter_events(params.filter.presence, presence)

        response: dict[str, Any] = {
            "next_batch": now.encode(),
            "account_data": {"events": global_account_data},
            "presence": {"events": presence_events},
            "rooms": {
                "join": response_join,
                "invite": response_invite,
                "leave": response_leave,
                "knock": response_knock,
            },
            # Filled by the E2EE extension when registered.
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
        }
        has_updates = bool(
            response_join
            or response_invite
            or response_leave
            or response_knock
            or global_account_data
            or presence_events
        )
        if self._extensions:
            context = SyncContext(
                user_id, params.device_id, since, now, params.full_state, tuple(joined_ids)
            )
            for extension in self._extensions:
                result = await extension(context)
                response.update(result.fields)
                has_updates = has_updates or result.has_updates
        return response, has_updates

    # --- memberships -------------------------------------------------------------------

    async def _memberships_at_since(
        self, changes: dict[str, list[MembershipChange]]
    ) -> dict[str, str | None]:
        """For each room with membership changes in the range, the user's
        membership before the first of them (from the state it replaced)."""
        store = self.hs.rooms.events
        firsts = await store.get_events(
            [room_changes[0].event_id for room_changes in changes.values()]
        )
        previous_ids = {
            room_id: firsts[c[0].event_id].replaces_state
            for room_id, c in changes.items()
            if c[0].event_id in firsts
        }
        previous = await store.get_events([eid for eid in previous_ids.values() if eid is not None])
        result: dict[str, str | None] = {}
        for room_id in changes:
            event_id = previous_ids.get(room_id)
            stored = previous.get(event_id) if event_id is not None else None
            result[room_id] = None if stored is None else stored.event.membership
        return result

    # --- joined rooms ------------------------------------------------------------------

    async def _joined_rooms(
        self,
        params: SyncParams,
        since: SyncToken | None,
        now: SyncToken,
        joined: list[Membership],
        changes: dict[str, list[MembershipChange]],
        at_since: dict[str, str | None],
    ) -> dict[str, _JoinedRoom]:
        store = self.hs.rooms.events
        limit = timeline_limit(params.filter)
        rooms: dict[str, _JoinedRoom] = {}
        for membership in joined:
            room_changes = changes.get(membership.room_id, [])
            newly = bool(room_changes) and (
                at_since.get(membership.room_id) != "join"
                or any(c.membership != "join" for c in room_changes)
            )
            rooms[membership.room_id] = _JoinedRoom(
                membership.room_id,
                full_state=since is None or params.full_state or newly,
                joined_from=membership.stream_ordering,
                from_start=since is None or newly,
            )
        if not rooms:
            return rooms
        from_pos = 0 if since is None else since.events
        wanted = list(rooms)
        if since is not None and len(rooms) > _ACTIVE_ROOMS_MIN_ROOMS:
            # Only rooms with events in the range can have a timeline (rooms
            # needing full state are looked at anyway).
            active = await store.rooms_with_events_between(
                from_pos, now.events, _ACTIVE_ROOMS_SCAN_CAP
            )
            if active is not None:
                wanted = [r.room_id for r in rooms.values() if r.full_state or r.room_id in active]
        # A room newly joined since the token is synced as in an initial sync:
        # its latest events whatever the token, ``limited`` when there are more,
        # and a ``prev_batch`` for /messages (sync.yaml, ``rooms.join``; Synapse
        # does the same). The other rooms read the range since the token.
        starting = [room_id for room_id in wanted if rooms[room_id].from_start]
        ranged = [room_id for room_id in wanted if not rooms[room_id].from_start]
        raw: dict[str, list[StoredEvent]] = {}
        if ranged:
            raw = await store.recent_events_for_rooms(ranged, from_pos, now.events, limit + 1)
        if starting:
            raw.update(await store.recent_events_for_rooms(starting, 0, now.events, limit + 1))
        # Rooms needing state but without events in the range: their latest event.
        missing = [r.room_id for r in rooms.values() if r.full_state and r.room_id not in raw]
        latest = await store.recent_events_for_rooms(missing, 0, now.events, 1) if missing else {}
        for room in rooms.values():
            events = raw.get(room.room_id)
            if events is None:
                if room.full_state:
                    last = latest.get(room.room_id, [None])[0]
                    room.timeline = _Timeline([], False, pagination_token(now.events), last)
                continue
            room.timeline = await self._timeline(
                params,
                room.room_id,
                events,
                0 if room.from_start else from_pos,
                limit,
                room.joined_from,
            )
        # The state at the previous sync, for incremental rooms with new events.
        previous: dict[str, list[StoredEvent]] = {}
        incremental = [
            r.room_id for r in rooms.values() if not r.full_state and r.timeline is not None
        ]
        if incremental and since is not None:
            previous = await store.recent_events_for_rooms(incremental, 0, since.events, 1)
        await self._room_states(
            params,
            [r for r in rooms.values() if r.timeline is not None],
            {room_id: events[0].state_group for room_id, events in previous.items()},
        )
        return rooms

    async def _timeline(
        self,
        params: SyncParams,
        room_id: str,
        newest_first: list[StoredEvent],
        from_pos: int,
        limit: int,
        joined_from: int | None,
    ) -> _Timeline:
        """The room's timeline from ``newest_first`` (the latest ``limit + 1`` events
        of the range): matching the timeline filter and visible to the user,
        fetching further back when some are dropped."""
        timeline_filter = params.filter.room.timeline
        store = self.hs.rooms.events
        kept: list[StoredEvent] = []
        candidates = newest_first
        exhausted = len(candidates) < limit + 1
        refills = 0
        gave_up = False
        oldest = candidates[-1] if candidates else None
        while True:
            if candidates:
                oldest = candidates[-1]
            matching = [e for e in candidates if timeline_filter.matches(e.event, room_id=room_id)]
            kept.extend(
                await filter_events_for_member(self.hs, params.user_id, matching, joined_from)
            )
            if len(kept) > limit or exhausted or not candidates:
                break
            if refills >= _MAX_TIMELINE_REFILLS:
                gave_up = True  # more may be older: say limited, the client paginates
                break
            refills += 1
            batch = max(2 * (limit + 1), 50)
            candidates = await store.room_events_in_stream_range(
                room_id, candidates[-1].stream_ordering - 1, from_pos, batch, "b"
            )
            exhausted = len(candidates) < batch
        limited = len(kept) > limit or gave_up
        if from_pos == 0 and exhausted and oldest is not None and oldest.event.prev_event_ids:
            # Read from the start, but the oldest event held here is not the
            # room's first: a room joined over federation, whose earlier history
            # is on other servers. Limited, so that the client paginates (backfill).
            limited = True
        events = list(reversed(kept[:limit]))
        last = newest_first[0] if newest_first else None
        prev_batch = (
            pagination_token(events[0].stream_ordering - 1)
            if events
            else pagination_token(last.stream_ordering if last is not None else 0)
        )
        return _Timeline(events, limited, prev_batch, last)

    async def _room_states(
        self,
        params: SyncParams,
        rooms: Sequence[_JoinedRoom],
        previous_groups: dict[str, int | None],
    ) -> None:
        """Fill ``state_ids`` and ``summary`` of each room: Synapse's rule, state =
        (state at timeline start ∪ state at its end) − state at the previous sync
        − events in the timeline; lazy-loaded members as the spec's "Lazy-loading
        room members" and sync.yaml describe."""
        state_store = self.hs.rooms.state_store
        lazy = params.filter.room.state.lazy_load_members
        user_id = params.user_id
        candidates: dict[str, dict[str, StateKey]] = {}
        starts: dict[str, StateMap] = {}
        start_groups: dict[str, int | None] = {}
        summary_rooms: list[str] = []
        # (start, end, previous) state groups per room; every group needed is
        # read in one batch (an initial sync needs one or two per room).
        groups: dict[str, tuple[int | None, int | None, int | None]] = {}
        for room in rooms:
            timeline = room.timeline
            assert timeline is not None
            end_group = timeline.last.state_group if timeline.last is not None else None
            start_group = timeline.events[0].state_group_before if timeline.events else end_group
            previous_group = None if room.full_state else previous_groups.get(room.room_id)
            start_groups[room.room_id] = start_group
            groups[room.room_id] = (start_group, end_group, previous_group)
        states = await state_store.get_state_ids_many(
            group
            for room in rooms
            if room.full_state or len(set(groups[room.room_id])) > 1
            for group in groups[room.room_id]
            if group is not None
        )
        for room in rooms:
            timeline = room.timeline
            assert timeline is not None
            start_group, end_group, previous_group = groups[room.room_id]
            if not room.full_state and previous_group == start_group == end_group:
                candidates[room.room_id] = {}
            else:
                start = states[start_group] if start_group else {}
                end = start if end_group == start_group else (states[end_group] if end_group else {})
                prev: StateMap = {} if previous_group is None else states[previous_group]
                in_timeline = {e.event_id for e in timeline.events}
                found: dict[str, StateKey] = {}
                for state in (start, end) if end is not start else (start,):
                    for key, event_id in state.items():
                        if event_id not in in_timeline and prev.get(key) != event_id:
                            found[event_id] = key
                candidates[room.room_id] = found
                starts[room.room_id] = start
            has_members = any(e.event.type == MEMBER for e in timeline.events) or any(
                key[0] == MEMBER for key in candidates[room.room_id].values()
            )
            if room.full_state or has_members:
                summary_rooms.append(room.room_id)
        named = await self._named_rooms(summary_rooms, starts)
        summaries = await self._summaries(user_id, summary_rooms, named)
        for room in rooms:
            room.summary = summaries.get(room.room_id)
            found = candidates[room.room_id]
            if lazy:
                found = await self._lazy_members(
                    params, room, found, starts.get(room.room_id), start_groups[room.room_id]
                )
            room.state_ids = list(found)

    async def _lazy_members(
        self,
        params: SyncParams,
        room: _JoinedRoom,
        found: dict[str, StateKey],
        start: StateMap | None,
        start_group: int | None,
    ) -> dict[str, StateKey]:
        timeline = room.timeline
        assert timeline is not None
        user_id, device_id = params.user_id, params.device_id
        redundant_ok = params.filter.room.state.include_redundant_members
        required = {e.event.sender for e in timeline.events}
        if room.summary is not None:
            required.update(room.summary.get("m.heroes", []))
        if room.full_state:
            required.add(user_id)
            # Full state: only the members needed, whatever changed.
            kept = {
                eid: key for eid, key in found.items() if key[0] != MEMBER or key[1] in required
            }
        else:
            # Incremental: every membership change in the gap (sync.yaml: "MUST
            # return membership events for events in the gap ... regardless as
            # to whether or not they are redundant"), plus the senders' members.
            kept = dict(found)
        in_timeline = {e.event_id for e in timeline.events}
        if start is None:
            keys = [(MEMBER, member) for member in sorted(required)]
            start = (
                await self.hs.rooms.state_store.get_state_ids_for_keys(start_group, keys)
                if start_group is not None
                else {}
            )
        for member in required:
            key = (MEMBER, member)
            event_id = start.get(key)
            if event_id is None or event_id in kept or event_id in in_timeline:
                continue
            if (
                not room.full_state
                and not redundant_ok
                and self.lazy_members.was_sent(user_id, device_id, room.room_id, member, event_id)
            ):
                continue
            kept[event_id] = key
        if not redundant_ok:
            for event_id, key in kept.items():
                if key[0] == MEMBER:
                    self.lazy_members.record(user_id, device_id, room.room_id, key[1], event_id)
            for event in timeline.events:
                if event.event.type == MEMBER and event.event.state_key is not None:
                    self.lazy_members.record(
                        user_id, device_id, room.room_id, event.event.state_key, event.event_id
                    )
        return kept

    async def _named_rooms(self, room_ids: list[str], starts: dict[str, StateMap]) -> set[str]:
        """The rooms with a non-empty ``m.room.name`` or ``m.room.canonical_alias``
        (they need no heroes), from the state already loaded where there is one."""
        events = self.hs.rooms.events
        ids: dict[str, list[str]] = {}
        for room_id in room_ids:
            state = starts.get(room_id) or await events.current_state_ids(room_id, _NAME_KEYS)
            ids[room_id] = [state[key] for key in _NAME_KEYS if key in state]
        loaded = await events.get_events([eid for eids in ids.values() for eid in eids])
        named: set[str] = set()
        for room_id, event_ids in ids.items():
            for event_id in event_ids:
                stored = loaded.get(event_id)
                content = stored.event.content if stored is not None else {}
                if content.get("name") or content.get("alias"):
                    named.add(room_id)
        return named

    async def _summaries(
        self, user_id: str, room_ids: list[str], named: set[str]
    ) -> dict[str, dict[str, Any]]:
        """``m.joined_member_count``, ``m.invited_member_count`` and, for rooms
        without a name or canonical alias, ``m.heroes`` (as Synapse)."""
        if not room_ids:
            return {}
        store = self.hs.rooms.store
        counts = await store.membership_counts(room_ids)
        unnamed = [room_id for room_id in room_ids if room_id not in named]
        heroes: dict[str, list[str]] = {}
        if unnamed:
            heroes = await store.first_members(unnamed, ("join", "invite"), user_id, HERO_COUNT)
            lonely = [room_id for room_id in unnamed if not heroes.get(room_id)]
            if lonely:
                heroes.update(
                    await store.first_members(lonely, ("leave", "ban"), user_id, HERO_COUNT)
                )
        summaries: dict[str, dict[str, Any]] = {}
        for room_id in room_ids:
            summary: dict[str, Any] = {
                "m.joined_member_count": counts.get(room_id, {}).get("join", 0),
                "m.invited_member_count": counts.get(room_id, {}).get("invite", 0),
            }
            if room_id not in named:
                summary["m.heroes"] = heroes.get(room_id, [])
            summaries[room_id] = summary
        return summaries

    # --- left rooms --------------------------------------------------------------------

    async def _left_rooms(
        self,
        params: SyncParams,
        since: SyncToken | None,
        left: list[Membership],
        changes: dict[str, list[MembershipChange]],
        at_since: dict[str, str | None],
    ) -> dict[str, _JoinedRoom]:
        """``rooms.leave``: the timeline up to the leave, and the state delta."""
        store = self.hs.rooms.events
        limit = timeline_limit(params.filter)
        rooms: dict[str, _JoinedRoom] = {}
        previous_groups: dict[str, int | None] = {}
        for membership in left:
            room_id = membership.room_id
            was_joined = (
                since is not None
                and membership.room_id in changes
                and at_since.get(room_id) == "join"
            )
            full_room = since is None or params.full_state or not was_joined
            room = _JoinedRoom(room_id, full_state=full_room, joined_from=None)
            from_pos = 0 if since is None else since.events
            raw = (
                await store.recent_events_for_rooms(
                    [room_id], from_pos, membership.stream_ordering, limit + 1
                )
            ).get(room_id, [])
            if raw:
                room.timeline = await self._timeline(params, room_id, raw, from_pos, limit, None)
            else:
                last = await store.get_event(membership.event_id)
                room.timeline = _Timeline(
                    [], False, pagination_token(membership.stream_ordering), last
                )
            if not full_room and since is not None:
                before = await store.recent_events_for_rooms([room_id], 0, since.events, 1)
                previous_groups[room_id] = (
                    before[room_id][0].state_group if room_id in before else None
                )
            rooms[room_id] = room
        if rooms:
            await self._room_states(params, list(rooms.values()), previous_groups)
        # A user who never joined sees only the state their visibility allows.
        for room in rooms.values():
            history = await store.membership_history_in_room(room.room_id, params.user_id)
            if not any(change.membership == "join" for change in history):
                events = await store.get_events_ordered(room.state_ids)
                visible = await filter_events_for_user(self.hs, params.user_id, events)
                room.state_ids = [e.event_id for e in visible]
        return rooms

    # --- invites and knocks ------------------------------------------------------------

    async def _stripped_state(self, membership: Membership) -> list[dict[str, Any]]:
        """Stripped state (Client-Server API, "Stripped state") after the user's
        invite or knock, the member event itself included (with its ID and
        timestamp, as Synapse serves it)."""
        store = self.hs.rooms.events
        own = await store.get_event(membership.event_id)
        state = await store.state_after_event(membership.event_id)
        if state is None and own is not None:
            # An invite or knock of a room this server is not in: the stripped
            # state the other server sent (services/federation/invites.py).
            return self._remote_stripped_state(own)
        state = state or {}
        keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES]
        if own is not None:
            keys.append((MEMBER, own.event.sender))
        wanted = [state[key] for key in keys if key in state and state[key] != membership.event_id]
        events = await store.get_events_ordered(wanted)
        stripped: list[dict[str, Any]] = [
            {
                "type": e.event.type,
                "state_key": e.event.state_key,
                "sender": e.event.sender,
                "content": dict(e.event.content) if e.redacted_by is None else {},
            }
            for e in events
        ]
        if own is not None:
            stripped.append(_own_member_event(own))
        return stripped

    @staticmethod
    def _remote_stripped_state(own: StoredEvent) -> list[dict[str, Any]]:
        unsigned = own.event.pdu.get("unsigned")
        unsigned = unsigned if isinstance(unsigned, dict) else {}
        raw = unsigned.get("invite_room_state", unsigned.get("knock_room_state"))
        # Checked when received; checked again so that nothing stored can break a sync.
        stripped = [
            entry
            for entry in sanitize_stripped_state(raw)
            if (entry["type"], entry["state_key"]) != own.event.state_tuple
        ]
        stripped.append(_own_member_event(own))
        return stripped

    # --- presence ----------------------------------------------------------------------

    async def _add_presence_of_new_members(
        self, presence: list[dict[str, Any]], room_ids: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Members of newly joined rooms: their current presence (as Synapse)."""
        members: set[str] = set()
        for room_id in room_ids:
            members |= await self.hs.rooms.joined_user_ids(room_id)
        known = {event["sender"] for event in presence}
        extra = await self.hs.presence.presence_events_for_users(members - known)
        return presence + extra

    # --- formatting --------------------------------------------------------------------

    async def _format(
        self, params: SyncParams, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        return await format_events(
            self.hs, params.filter, events, user_id=params.user_id, device_id=params.device_id
        )


def _own_member_event(own: StoredEvent) -> dict[str, Any]:
    """The user's own invite or knock in its stripped state, with its ID and
    timestamp (as Synapse serves it)."""
    return {
        "type": own.event.type,
        "state_key": own.event.state_key,
        "sender": own.event.sender,
        "content": dict(own.event.content),
        "event_id": own.event_id,
        "origin_server_ts": own.event.origin_server_ts,
    }


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
