"""Events: stored once (the PDU as canonical JSON plus indexed columns).

An event's short ID is its ``stream_ordering``, its position in the
``events`` stream. Everything one event changes — its row, its state group,
the room's current state, forward extremities, memberships, redactions, the
sender's transaction ID and the stream position — is written in one
transaction by :meth:`EventStore.persist_local_events`.

Read API (for the room, sync and messages services):

* :meth:`EventStore.get_event` / :meth:`EventStore.get_events` — by ID,
  as :class:`StoredEvent` (the PDU as stored; redact it when ``redacted_by``).
* :meth:`EventStore.room_events_in_stream_range` — a room's timeline between
  two stream positions, either direction (``from`` exclusive, ``to`` inclusive).
* :meth:`EventStore.membership_changes_for_user` — every membership change
  of a user between two positions (joins, invites, leaves... in any room).
* :meth:`EventStore.rooms_with_events_in_range` — which of some rooms had
  events between two positions.
* :meth:`EventStore.state_at_event` / :meth:`EventStore.state_after_event` —
  the room state (``(type, state_key) -> event_id``) before / after an event.
* :meth:`EventStore.current_state_ids` / :meth:`EventStore.current_state` —
  a room's current state.
* :meth:`EventStore.current_position` — the highest committed position of
  the ``events`` stream.
* :meth:`EventStore.get_transaction_ids` — ``unsigned.transaction_id`` data.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from typing import Any, Literal, TypeVar

import orjson

from ranvier.core.canonical_json import encode_canonical_json
from ranvier.core.events import Event
from ranvier.core.room_versions import get_room_version
from ranvier.storage.current_state_cache import CurrentStateCache
from ranvier.storage.engine import (
    Database,
    Row,
    Transaction,
    current_stream_position,
    next_stream_positions,
    padded,
    placeholders,
)
from ranvier.storage.recent import RecentLog, RoomTails
from ranvier.storage.redactions import apply_pending_redactions, mark_redacted, redaction_applies
from ranvier.storage.relations import ChildlessEvents, write_relations
from ranvier.storage.rooms import RoomStore
from ranvier.storage.search import index_new_events
from ranvier.storage.state import StateKey, StateMap, StateStore

EVENTS_STREAM = "events"
#: Backfilled events are keyed by the negation of this stream's positions
#: (see persist_federated_events): older history, lower (negative) orderings.
BACKFILL_STREAM = "events_backfill"
#: (user_id, device_id, scope, txn_id): the key of an idempotent send.
TxnKey = tuple[str, str, str, str]

_CHUNK = 500
#: Events kept parsed in memory. A cached message costs ~2.8 KiB (its PDU as
#: dicts plus its columns; measured with tracemalloc over 2,000 messages), so
#: 10,000 (Synapse's default ``event_cache_size`` too) is ~27 MiB when full.
EVENT_CACHE_SIZE = 10_000
#: Current-state keys held in memory (a few auth-event keys per active room,
#: plus the member keys of recent senders).
CURRENT_STATE_CACHE_SIZE = 10_000
_T = TypeVar("_T")
#: Newest events (their rooms) and membership changes kept in memory for
#: incremental /syncs (:class:`ranvier.storage.recent.RecentLog`).
_RECENT_EVENTS = 10_000
#: Events whose ``unsigned.transaction_id`` is remembered (a sender's /sync
#: shows their own recent events: the sender's next /sync reads none).
TXN_ID_CACHE_SIZE = 2_000
_RECENT_MEMBERSHIPS = 5_000
#: recent_events_for_rooms answers from the log for at most this many rooms,
#: looking at most this far back (an incremental /sync, the event before its token).
_LOG_MAX_ROOMS = 20
_LOG_SCAN = 2_000
_EVENT_COLUMNS = (
    "e.event_id, e.json, e.stream_ordering, e.state_group_before, e.state_group,"
    " e.replaces_state, e.redacted_by, e.rejected, e.outlier, r.room_version, e.soft_failed"
)
#: What clients may see of a room's events: no outliers (events held without
#: the state at them), no rejected and no soft-failed ones.
_SHOWN = "outlier = FALSE AND rejected = FALSE AND soft_failed = FALSE"
_EVENT_FROM = " FROM events e JOIN rooms r ON r.room_id = e.room_id"
_INSERT_EVENTS = (
    "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
    " origin_server_ts, depth, json, state_group_before, state_group, replaces_state,"
    " redacted_by, rejected, outlier, soft_failed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with what the server knows about it."""

    event: Event
    stream_ordering: int
    state_group_before: int | None
    state_group: int | None
    #: For a state event, the event it replaced in the room state.
    replaces_state: str | None
    #: The ``m.room.redaction`` that redacted it (serve it redacted).
    redacted_by: str | None
    rejected: bool
    outlier: bool
    #: Received over federation and soft-failed: in the DAG, hidden from clients.
    soft_failed: bool = False

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def room_id(self) -> str:
        return self.event.room_id


@dataclass(frozen=True, slots=True)
class EventToPersist:
    event: Event
    txn: TxnKey | None = None


@dataclass(frozen=True, slots=True)
class FederatedEvent:
    """An event received over federation, already checked by the receiver.

    Server-Server API, "Checks performed on receipt of a PDU": the receiver
    decides; the store records the outcome.
    """

    event: Event
    #: The room state before the event, resolved over its prev events; None
    #: for an *outlier*: an event held without the state at it (auth chains
    #: and state fetched through /send_join, /state_ids, /event_auth).
    state_before: StateMap | None
    #: Failed a check: kept (so it is not fetched again) but never room state,
    #: never shown, never an extremity.
    rejected: bool = False
    #: Failed only against the current state ("Soft failure").
    soft_failed: bool = False


@dataclass(frozen=True, slots=True)
class NewRoom:
    """A room to create in the same transaction as its first events."""

    room_id: str
    room_version: str
    creator: str
    is_public: bool
    created_ts: int
    #: A room alias to create with the room (createRoom's room_alias_name).
    alias: str | None = None


class AliasTaken(Exception):
    """The alias of a :class:`NewRoom` exists already; nothing was written."""


class RoomExists(Exception):
    """The room of a :class:`NewRoom` exists already; nothing was written."""


@dataclass(frozen=True, slots=True)
class MembershipChange:
    stream_ordering: int
    room_id: str
    user_id: str
    membership: str
    event_id: str


def _shared_strings(pdu: dict[str, Any]) -> dict[str, Any]:
    """``pdu`` with the strings that repeat from event to event interned: its
    room, sender and type, and the event IDs it names (a room's auth events are
    named by most of its events; an event's prev_events is the ID of an event
    before it). A parsed event holds its own copy of each otherwise: ~470 of
    ~3,200 bytes of a cached message (tracemalloc over 5,000 messages)."""
    for key in ("room_id", "sender", "type"):
        value = pdu.get(key)
        if type(value) is str:
            pdu[key] = sys.intern(value)
    for key in ("auth_events", "prev_events"):
        ids = pdu.get(key)
        if type(ids) is list and all(type(event_id) is str for event_id in ids):
            pdu[key] = [sys.intern(event_id) for event_id in ids]
    return pdu


def _row_to_stored(row: Row) -> StoredEvent:
    room_version = get_room_version(row[9])
    pdu = _shared_strings(orjson.loads(row[1]))
    event = Event.from_pdu(room_version, pdu, event_id=sys.intern(row[0]))
    return StoredEvent(
        event=event,
        stream_ordering=int(row[2]),
        state_group_before=row[3],
        state_group=row[4],
        replaces_state=row[5],
        redacted_by=row[6],
        rejected=bool(row[7]),
        outlier=bool(row[8]),
        soft_failed=bool(row[10]),
    )


class EventStore:
    def __init__(
        self,
        database: Database,
        state: StateStore,
        rooms: RoomStore,
        cache_size: int = EVENT_CACHE_SIZE,
    ) -> None:
        self.database = database
        self.state = state
        #: Told when memberships change (its per-user membership cache).
        self.rooms = rooms
        self._cache: OrderedDict[str, StoredEvent] = OrderedDict()
        self._cache_size = cache_size
        # Bumped by every invalidation: a read that started before one must
        # not put what it read into the cache (it may be stale).
        self._generation = 0
        floor = database.known_stream_position(EVENTS_STREAM)
        #: Each recent event's room, and its ID when clients may see it (None:
        #: an outlier, rejected or soft-failed); recent membership changes.
        self._recent_events: RecentLog[tuple[str, str | None]] = RecentLog(_RECENT_EVENTS, floor)
        self._recent_memberships: RecentLog[MembershipChange] = RecentLog(
            _RECENT_MEMBERSHIPS, floor
        )
        database.on_positions_reset(self._recent_events.reset)
        #: Each room's newest events in that log (the event before a token).
        self._room_tails = RoomTails()
        database.on_positions_reset(self._room_tails.reset)
        database.on_positions_reset(self._recent_memberships.reset)
        #: Events no relation points at (bundled aggregations skip them).
        self.childless = ChildlessEvents()
        #: Keys of rooms' current state (the auth events of every new event).
        self._current_state = CurrentStateCache(CURRENT_STATE_CACHE_SIZE)
        database.on_positions_reset(self._current_state.clear)
        #: ``event_id -> (user_id, device_id, txn_id)`` or None (sent without
        #: one) of local senders' events. Never stale: the row is written with
        #: the event and never changes.
        self._txn_ids: OrderedDict[str, tuple[str, str, str] | None] = OrderedDict()
        #: Told of every committed persist: ``(origin, events, seconds)``, origin
        #: "local" or "federated" (the operator's /metrics; None when off).
        self.on_persisted: Callable[[str, int, float], None] | None = None

    # --- cache ----------------------------------------------------------------------

    def _cache_put(self, stored: StoredEvent) -> None:
        self._cache[stored.event_id] = stored
        self._cache.move_to_end(stored.event_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _invalidate(self, event_ids: Iterable[str]) -> None:
        self._generation += 1
        for event_id in event_ids:
            self._cache.pop(event_id, None)

    # --- reads ----------------------------------------------------------------------

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """The known events among ``event_ids``, by ID (rejected ones included)."""
        found: dict[str, StoredEvent] = {}
        missing: list[str] = []
        for event_id in dict.fromkeys(event_ids):
            cached = self._cache.get(event_id)
            if cached is not None:
                found[event_id] = cached
            else:
                missing.append(event_id)
        generation = self._generation
        for start in range(0, len(missing), _CHUNK):
            chunk = padded(missing[start : start + _CHUNK], _CHUNK)
            rows = await self.database.fetch_all(
                f"SELECT {_EVENT_COLUMNS}{_EVENT_FROM}"
                f" WHERE e.event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            for row in rows:
                stored = _row_to_stored(row)
                found[stored.event_id] = stored
                if generation == self._generation:
                    self._cache_put(stored)
        return found

    async def get_events_ordered(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        """The known events among ``event_ids``, in the given order."""
        by_id = await self.get_events(event_ids)
        return [by_id[event_id] for event_id in event_ids if event_id in by_id]

    async def current_position(self) -> int:
        """The highest committed position of the ``events`` stream."""
        return await current_stream_position(self.database, EVENTS_STREAM)

    async def room_events_in_stream_range(
        self,
        room_id: str,
        from_pos: int,
        to_pos: int,
        limit: int,
        direction: Literal["f", "b"] = "f",
    ) -> list[StoredEvent]:
        """Events of a room with ``from_pos < stream_ordering <= to_pos`` (direction
        ``f``, oldest first) or ``to_pos < stream_ordering <= from_pos`` (``b``,
        newest first), at most ``limit``. Outliers and rejected events are left out."""
        if direction == "f":
            sql = (
                "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering > ?"
                f" AND stream_ordering <= ? AND {_SHOWN}"
                " ORDER BY stream_ordering ASC LIMIT ?"
            )
            rows = await self.database.fetch_all(sql, room_id, from_pos, to_pos, limit)
        else:
            sql = (
                "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering <= ?"
                f" AND stream_ordering > ? AND {_SHOWN}"
                " ORDER BY stream_ordering DESC LIMIT ?"
            )
            rows = await self.database.fetch_all(sql, room_id, from_pos, to_pos, limit)
        return await self.get_events_ordered([row[0] for row in rows])

    async def rooms_with_events_in_range(
        self, room_ids: Sequence[str], from_pos: int, to_pos: int
    ) -> set[str]:
        """Which of ``room_ids`` have events with ``from_pos < stream_ordering <= to_pos``."""
        found: set[str] = set()
        room_list = list(room_ids)
        for start in range(0, len(room_list), _CHUNK):
            chunk = padded(room_list[start : start + _CHUNK], _CHUNK)
            rows = await self.database.fetch_all(
                "SELECT DISTINCT room_id FROM events WHERE stream_ordering > ?"
                f" AND stream_ordering <= ? AND room_id IN ({placeholders(len(chunk))})",
                from_pos,
                to_pos,
                *chunk,
            )
            found.update(row[0] for row in rows)
        return found

    async def rooms_with_events_between(
        self, from_pos: int, to_pos: int, cap: int
    ) -> set[str] | None:
        """The rooms with an event at ``from_pos < stream_ordering <= to_pos``
        (outliers and rejected ones included: a superset), or None when the
        range holds more than ``cap`` events. A primary-key range scan, so an
        incremental /sync costs what happened since, not how many rooms the
        user is in (Synapse keeps a "room stream change cache" for the same)."""
        count = self._recent_events.count_between(from_pos, to_pos)
        if count is not None:
            if count > cap:
                return None
            return {room_id for room_id, _ in self._recent_events.between(from_pos, to_pos) or ()}
        rooms = await self._recent_or_scan(
            None, "events", "room_id", lambda row: str(row[0]), from_pos, to_pos, cap
        )
        return None if rooms is None else set(rooms)

    async def _recent_or_scan(
        self,
        log: RecentLog[_T] | None,
        table: str,
        columns: str,
        convert: Callable[[Row], _T],
        from_pos: int,
        to_pos: int,
        cap: int,
    ) -> list[_T] | None:
        """What ``log`` holds in the range, or a range scan of ``table`` on its
        ``stream_ordering``; None when more than ``cap``."""
        recent = log.between(from_pos, to_pos) if log is not None else None
        if recent is not None:
            return recent if len(recent) <= cap else None
        if from_pos >= to_pos:
            return []
        rows = await self.database.fetch_all(
            f"SELECT {columns} FROM {table} WHERE stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering LIMIT ?",
            from_pos,
            to_pos,
            cap + 1,
        )
        if len(rows) > cap:
            return None
        return [convert(row) for row in rows]

    async def recent_events_for_rooms(
        self, room_ids: Sequence[str], from_pos: int, to_pos: int, limit: int
    ) -> dict[str, list[StoredEvent]]:
        """For each of ``room_ids``, its latest ``limit`` events with
        ``from_pos < stream_ordering <= to_pos``, newest first (rooms without any
        are absent). One round trip per 100 rooms (a UNION ALL of per-room
        index range scans), for /sync over many rooms. Outliers and rejected
        events are left out."""
        room_list = list(dict.fromkeys(room_ids))
        ids_by_room, room_list = self._recent_from_log(room_list, from_pos, to_pos, limit)
        per_room = (
            "SELECT * FROM (SELECT room_id, event_id, stream_ordering FROM events"
            " WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            f" AND {_SHOWN} ORDER BY stream_ordering DESC LIMIT ?) AS r{{index}}"
        )
        for start in range(0, len(room_list), 100):
            # No room has the ID "": a padding subquery finds nothing.
            chunk = padded(room_list[start : start + 100], 100, "")
            sql = " UNION ALL ".join(per_room.format(index=i) for i in range(len(chunk)))
            args: list[Any] = []
            for room_id in chunk:
                args.extend((room_id, from_pos, to_pos, limit))
            rows = await self.database.fetch_all(sql, *args)
            for row in sorted(rows, key=lambda r: -int(r[2])):
                ids_by_room.setdefault(row[0], []).append(row[1])
        loaded = await self.get_events([eid for ids in ids_by_room.values() for eid in ids])
        return {
            room_id: [loaded[eid] for eid in ids if eid in loaded]
            for room_id, ids in ids_by_room.items()
        }

    def _recent_from_log(
        self, room_list: list[str], from_pos: int, to_pos: int, limit: int
    ) -> tuple[dict[str, list[str]], list[str]]:
        """What :meth:`recent_events_for_rooms` can answer from the log of
        recent events: the rooms answered (event IDs, newest first) and the
        rooms left for the database. All rooms are answered when the log
        holds the whole range (an incremental /sync's timelines); otherwise
        those with ``limit`` events in the log's part of the range (the event
        before a /sync's token)."""
        log = self._recent_events
        if len(room_list) > _LOG_MAX_ROOMS or limit < 1:
            return {}, room_list
        count = log.count_between(from_pos, to_pos)
        whole = count is not None and count <= _LOG_SCAN
        newest_first: Iterable[tuple[str, str | None]]
        if whole:
            in_range = log.between(from_pos, to_pos)
            assert in_range is not None
            newest_first = reversed(in_range)
        else:
            newest = log.newest_at_or_before(to_pos, _LOG_SCAN) if from_pos < to_pos else None
            if newest is None:
                return {}, room_list
            newest_first = newest
        found: dict[str, list[str]] = {}
        wanted = set(room_list)
        if limit == 1 and not whole:
            # Each room's last event before a token: its tail knows, mostly.
            for room_id in room_list:
                last = self._room_tails.newest_at_or_before(room_id, to_pos)
                if last is not None and last[0] > from_pos:
                    found[room_id] = [last[1]]
                    wanted.discard(room_id)
            if not wanted:
                return found, []
        complete = 0
        for room_id, event_id in newest_first:
            if event_id is None or room_id not in wanted:
                continue
            ids = found.setdefault(room_id, [])
            if len(ids) < limit:
                ids.append(event_id)
                if len(ids) == limit:
                    complete += 1
                    if complete == len(wanted):
                        break
        if whole:
            return found, []
        answered = {room_id: ids for room_id, ids in found.items() if len(ids) >= limit}
        return answered, [room_id for room_id in room_list if room_id not in answered]

    async def event_at_timestamp(
        self, room_id: str, timestamp: int, direction: Literal["f", "b"]
    ) -> StoredEvent | None:
        """The room's first event at or after ``timestamp`` (``f``) or last one at or
        before it (``b``), by ``origin_server_ts`` (MSC3030, timestamp_to_event)."""
        if direction == "f":
            condition, order = "origin_server_ts >= ?", "ASC"
        else:
            condition, order = "origin_server_ts <= ?", "DESC"
        event_id = await self.database.fetch_val(
            f"SELECT event_id FROM events WHERE room_id = ? AND {condition} AND {_SHOWN}"
            f" ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
            room_id,
            timestamp,
        )
        return None if event_id is None else await self.get_event(event_id)

    async def last_event_at_or_before(self, room_id: str, position: int) -> StoredEvent | None:
        """The room's latest event with ``stream_ordering <= position``."""
        event_id = await self.database.fetch_val(
            "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering <= ?"
            " AND outlier = FALSE ORDER BY stream_ordering DESC LIMIT 1",
            room_id,
            position,
        )
        return None if event_id is None else await self.get_event(event_id)

    async def membership_changes_for_user(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[MembershipChange]:
        """Membership changes of ``user_id`` with ``from_pos < position <= to_pos``, oldest first."""
        recent = self._recent_memberships.between(from_pos, to_pos)
        if recent is not None:
            return [change for change in recent if change.user_id == user_id]
        rows = await self.database.fetch_all(
            "SELECT stream_ordering, room_id, user_id, membership, event_id"
            " FROM membership_history WHERE user_id = ? AND stream_ordering > ?"
            " AND stream_ordering <= ? ORDER BY stream_ordering",
            user_id,
            from_pos,
            to_pos,
        )
        return [MembershipChange(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    async def membership_changes_between(
        self, from_pos: int, to_pos: int, cap: int
    ) -> list[MembershipChange] | None:
        """Every membership change with ``from_pos < position <= to_pos``, oldest
        first, or None when there are more than ``cap``: from memory for a
        recent ``from_pos``, else a primary-key range scan (cheap for the short
        range of an incremental /sync, whatever the user's room count)."""
        return await self._recent_or_scan(
            self._recent_memberships,
            "membership_history",
            "stream_ordering, room_id, user_id, membership, event_id",
            lambda r: MembershipChange(int(r[0]), r[1], r[2], r[3], r[4]),
            from_pos,
            to_pos,
            cap,
        )

    async def membership_changes_in_rooms(
        self, room_ids: Sequence[str], from_pos: int, to_pos: int
    ) -> list[MembershipChange]:
        """Membership changes in these rooms with ``from_pos < position <= to_pos``,
        oldest first."""
        if from_pos >= to_pos:
            return []
        found: list[MembershipChange] = []
        for start in range(0, len(room_ids), _CHUNK):
            chunk = padded(room_ids[start : start + _CHUNK], _CHUNK)
            rows = await self.database.fetch_all(
                "SELECT stream_ordering, room_id, user_id, membership, event_id"
                " FROM membership_history WHERE stream_ordering > ? AND stream_ordering <= ?"
                f" AND room_id IN ({placeholders(len(chunk))})",
                from_pos,
                to_pos,
                *chunk,
            )
            found += [MembershipChange(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
        found.sort(key=lambda change: change.stream_ordering)
        return found

    async def membership_history_in_room(
        self, room_id: str, user_id: str
    ) -> list[MembershipChange]:
        """Every membership change of ``user_id`` in ``room_id``, oldest first."""
        rows = await self.database.fetch_all(
            "SELECT stream_ordering, room_id, user_id, membership, event_id"
            " FROM membership_history WHERE room_id = ? AND user_id = ? ORDER BY stream_ordering",
            room_id,
            user_id,
        )
        return [MembershipChange(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    async def state_at_event(self, event_id: str) -> StateMap | None:
        """The room state before ``event_id`` (None for an unknown event)."""
        stored = await self.get_event(event_id)
        if stored is None:
            return None
        if stored.state_group_before is None:
            return {}
        return await self.state.get_state_ids(stored.state_group_before)

    async def state_after_event(self, event_id: str) -> StateMap | None:
        """The room state after ``event_id`` (None for an unknown event)."""
        stored = await self.get_event(event_id)
        if stored is None or stored.state_group is None:
            return None
        return await self.state.get_state_ids(stored.state_group)

    async def current_state_group(self, room_id: str) -> int | None:
        value = await self.database.fetch_val(
            "SELECT current_state_group FROM rooms WHERE room_id = ?", room_id
        )
        return None if value is None else int(value)

    async def current_state_ids(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> StateMap:
        """A room's current state, or only the given ``keys`` of it."""
        if keys is None:
            rows = await self.database.fetch_all(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", room_id
            )
            return {(row[0], row[1]): row[2] for row in rows}
        found, wanted = self._current_state.lookup(room_id, dict.fromkeys(keys))
        if not wanted:
            return found
        generation = self._current_state.generation
        conditions = " OR ".join("(type = ? AND state_key = ?)" for _ in wanted)
        args: list[Any] = [room_id]
        for event_type, state_key in wanted:
            args.extend((event_type, state_key))
        rows = await self.database.fetch_all(
            "SELECT type, state_key, event_id FROM current_state"
            f" WHERE room_id = ? AND ({conditions})",
            *args,
        )
        read: dict[StateKey, str] = {(row[0], row[1]): row[2] for row in rows}
        self._current_state.remember(generation, room_id, wanted, read)
        found.update(read)
        return found

    async def current_state_of_type(self, room_id: str, event_type: str) -> StateMap:
        rows = await self.database.fetch_all(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ? AND type = ?",
            room_id,
            event_type,
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def current_state(self, room_id: str) -> dict[StateKey, StoredEvent]:
        ids = await self.current_state_ids(room_id)
        events = await self.get_events(ids.values())
        return {key: events[event_id] for key, event_id in ids.items() if event_id in events}

    async def forward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """``(event_id, depth)`` of the room's forward extremities, deepest first."""
        rows = await self.database.fetch_all(
            "SELECT f.event_id, e.depth FROM room_forward_extremities f"
            " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?"
            " ORDER BY e.depth DESC, e.stream_ordering DESC",
            room_id,
        )
        return [(row[0], int(row[1])) for row in rows]

    async def get_txn_event_id(self, key: TxnKey) -> str | None:
        value = await self.database.fetch_val(
            "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ?"
            " AND scope = ? AND txn_id = ?",
            *key,
        )
        return None if value is None else str(value)

    async def get_transaction_ids(
        self, event_ids: Iterable[str]
    ) -> dict[str, tuple[str, str, str]]:
        """``event_id -> (user_id, device_id, txn_id)`` for events sent with a txn id."""
        known = self._txn_ids
        result: dict[str, tuple[str, str, str]] = {}
        missing: list[str] = []
        for event_id in dict.fromkeys(event_ids):
            if event_id in known:
                known.move_to_end(event_id)
                txn = known[event_id]
                if txn is not None:
                    result[event_id] = txn
            else:
                missing.append(event_id)
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            asked = padded(chunk, _CHUNK)
            rows = await self.database.fetch_all(
                "SELECT event_id, user_id, device_id, txn_id FROM event_txn_ids"
                f" WHERE event_id IN ({placeholders(len(asked))})",
                *asked,
            )
            found = {row[0]: (row[1], row[2], row[3]) for row in rows}
            result.update(found)
            for event_id in chunk:
                self._remember_txn_id(event_id, found.get(event_id))
        return result

    def _remember_txn_id(self, event_id: str, txn: tuple[str, str, str] | None) -> None:
        known = self._txn_ids
        known[event_id] = txn
        known.move_to_end(event_id)
        if len(known) > TXN_ID_CACHE_SIZE:
            known.popitem(last=False)

    async def count_rows(self, table: str) -> int:
        """Row count of one of this store's tables (tests and metrics)."""
        if table not in {"events", "state_groups", "state_group_entries", "state_keys"}:
            raise ValueError(table)
        return int(await self.database.fetch_val(f"SELECT COUNT(*) FROM {table}"))

    # --- writes ---------------------------------------------------------------------

    def _mark_childless_after_commit(self, txn: Transaction, stored: list[StoredEvent]) -> None:
        """Events made here have no relations pointing at them yet: no event
        can name an event ID before it exists (a random ID, or from room
        version 3 the hash of the event itself). So once they commit they are
        known childless, and the first /syncs that show a new message skip the
        bundled aggregations' two queries (every woken member's /sync showed
        it first, before this). Refused, as for a reader, when a relation was
        written since (this batch's own, or a later transaction's before this
        one's callbacks run): one of those may point at them."""
        generation = self.childless.generation
        event_ids = [item.event.event_id for item in stored]
        txn.call_after_commit(lambda: self.childless.add(event_ids, generation))

    async def persist_local_events(
        self,
        room_id: str,
        events: Sequence[EventToPersist],
        new_room: NewRoom | None = None,
    ) -> list[StoredEvent]:
        """Append events created by this server, in order, after the room's
        current state (each one's prev state is the state after the one before).

        One transaction for all of them: the room row and alias (for
        ``new_room``), each event row, its state group, current state,
        memberships, redactions, forward extremities, transaction IDs and
        stream positions. Rows are written in batches (one statement per table
        and batch, plus one per new state group). The caller holds the room's
        lock. Federation events (state from state resolution, outliers) will
        get their own entry point.

        Raises :class:`AliasTaken` (nothing written) if ``new_room.alias`` exists.
        """
        if not events:
            return []
        started = time.perf_counter()
        stored: list[StoredEvent] = []
        redacted_targets: list[str] = []
        async with self.database.transaction() as txn:
            if new_room is not None:
                await self._insert_room(txn, new_room)
            group, chain_length = await self._current_group_and_chain(txn, room_id)
            state_keys = [i.event.state_tuple for i in events if i.event.is_state()]
            current = await self._current_state_in_txn(txn, room_id, state_keys)
            key_ids = await self.state.intern_state_keys(txn, state_keys)
            positions = await next_stream_positions(txn, EVENTS_STREAM, len(events))

            pending_entries: list[tuple[int, int, int]] = []
            event_rows: list[tuple[Any, ...]] = []
            membership_rows: list[tuple[Any, ...]] = []
            txn_rows: list[tuple[Any, ...]] = []
            for item, position in zip(events, positions, strict=True):
                event = item.event
                group_before = group
                replaces_state: str | None = None
                if event.is_state():
                    key = event.state_tuple
                    replaces_state = current.get(key)
                    current[key] = event.event_id
                    group, chain_length = await self.state.add_group(
                        txn, room_id, group, chain_length, key_ids[key], position, pending_entries
                    )
                    if event.type == "m.room.member" and event.membership is not None:
                        membership_rows.append(
                            (room_id, event.state_key, event.membership, event.event_id, position)
                        )
                if item.txn is not None:
                    txn_rows.append((*item.txn, event.event_id))
                stored.append(
                    StoredEvent(
                        event, position, group_before, group, replaces_state, None, False, False
                    )
                )
                event_rows.append(_event_row(room_id, stored[-1]))
            await self.state.flush_entries(txn, pending_entries)
            await txn.execute_many(
                _INSERT_EVENTS,
                event_rows,
            )
            await write_relations(txn, stored, self.childless)
            self._mark_childless_after_commit(txn, stored)
            await index_new_events(txn, stored)  # search index, user directory
            await self._write_current_state(txn, room_id, current, state_keys)
            await self._write_memberships(txn, membership_rows)
            await self._write_extremities(txn, room_id, [item.event for item in events])
            if txn_rows:
                await txn.execute_many(
                    "INSERT INTO event_txn_ids (user_id, device_id, scope, txn_id, event_id)"
                    " VALUES (?, ?, ?, ?, ?)",
                    txn_rows,
                )
            for written in stored:
                redacts = await self._apply_redaction(txn, written)
                if redacts is not None:
                    redacted_targets.append(redacts)
            await txn.execute(
                "UPDATE rooms SET current_state_group = ? WHERE room_id = ?", group, room_id
            )
            txn.call_after_commit(lambda: self._after_persist(stored, membership_rows))
        self._invalidate(redacted_targets)
        for result in stored:
            self._cache_put(result)
        for user_id, device_id, _, txn_id, event_id in txn_rows:
            self._remember_txn_id(event_id, (user_id, device_id, txn_id))
        if self.on_persisted is not None:
            self.on_persisted("local", len(stored), time.perf_counter() - started)
        return stored

    @staticmethod
    async def _current_group_and_chain(txn: Transaction, room_id: str) -> tuple[int | None, int]:
        """The room's current state group and its chain length (-1 for none), in
        one statement: every event appended to the room needs both."""
        row = await txn.fetch_one(
            "SELECT r.current_state_group, g.chain_length FROM rooms r"
            " LEFT JOIN state_groups g ON g.id = r.current_state_group WHERE r.room_id = ?",
            room_id,
        )
        if row is None or row[0] is None:
            return None, -1
        if row[1] is None:
            raise ValueError(f"unknown state group {row[0]}")
        return int(row[0]), int(row[1])

    async def persist_federated_events(
        self,
        room_id: str,
        events: Sequence[FederatedEvent],
        *,
        current_state: StateMap | None = None,
        new_room: NewRoom | None = None,
        backfilled: bool = False,
    ) -> list[StoredEvent]:
        """Store events received over federation, in the given (topological) order.

        Unlike :meth:`persist_local_events`, the state before each event is
        given (the receiver resolved it over the event's prev events), and so
        is the room's new ``current_state`` when it changes (the resolution of
        the states after the forward extremities); None leaves it as it is.
        Events the store already holds are skipped. One transaction: event
        rows, their state groups (deltas against the state after a prev event
        where that fits), forward extremities (only accepted, non-outlier,
        non-soft-failed events become extremities), redactions, and the
        current state with the membership changes it implies.

        Membership changes get the stream position of their member event when
        it is in this batch; a change that comes from state resolution alone
        (an older member event winning again) gets a position of its own, so
        that /sync sees it.

        ``backfilled``: old history pulled through /backfill (Server-Server
        API, "Backfilling and retrieving missing events"). /messages orders a
        room's events by stream_ordering, and history must sort before
        everything already held, so (as Synapse does) backfilled events get
        *negative* orderings: the negation of positions of their own stream,
        the newest event of a batch the highest. Each batch reaches further
        back than the one before, so its orderings are lower still. They never
        change the current state or the forward extremities, and /sync (which
        reads positions above its token, all positive) never sees them. An
        event held as an outlier (the room's auth chain from the join) that
        is met again in history is "de-outliered": it takes a backfilled
        ordering (its state-group references follow) and is shown from then on.
        """
        started = time.perf_counter()
        known = await self.get_events(item.event.event_id for item in events)
        todo = [item for item in events if item.event.event_id not in known]
        rekeyed: dict[str, int] = {}
        if backfilled:
            current_state = None
            todo = [item for item in events if _backfill_wanted(item, known)]
            rekeyed = {
                item.event.event_id: known[item.event.event_id].stream_ordering
                for item in todo
                if item.event.event_id in known
            }
        if not todo and current_state is None:
            return []
        stored: list[StoredEvent] = []
        redacted_targets: list[str] = []
        async with self.database.transaction() as txn:
            if new_room is not None:
                await self._insert_room(txn, new_room)
            old_current = await self._current_state_in_txn_all(txn, room_id)
            batch_ids = {item.event.event_id for item in todo}
            changed_members = _changed_member_keys(old_current, current_state)
            extra = sum(
                1
                for key in changed_members
                if current_state is not None and current_state[key] not in batch_ids
            )
            if backfilled:
                positions = await self._backfill_positions(txn, todo, rekeyed)
            else:
                positions = list(await next_stream_positions(txn, EVENTS_STREAM, len(todo) + extra))
            nids = await self._nids_in_txn(txn, _referenced_ids(todo, current_state) - batch_ids)
            groups = _GroupPicker(self.state, txn, room_id, nids)
            event_rows: list[tuple[Any, ...]] = []
            for item, position in zip(todo, positions, strict=False):
                event = item.event
                nids[event.event_id] = position
                group_before: int | None = None
                group_after: int | None = None
                replaces_state: str | None = None
                if item.state_before is not None:
                    group_before = await groups.group_for(
                        item.state_before, await self._prev_groups(event, stored)
                    )
                    group_after = group_before
                    if event.is_state() and not item.rejected:
                        replaces_state = item.state_before.get(event.state_tuple)
                        after = {**item.state_before, event.state_tuple: event.event_id}
                        group_after = await groups.group_for(after, [group_before])
                outlier = item.state_before is None
                stored.append(
                    StoredEvent(
                        event,
                        position,
                        group_before,
                        group_after,
                        replaces_state,
                        None,
                        item.rejected,
                        outlier,
                        item.soft_failed,
                    )
                )
                event_rows.append(_event_row(room_id, stored[-1]))
            await txn.execute_many(
                _INSERT_EVENTS,
                event_rows,
            )
            await write_relations(txn, stored, self.childless)
            await index_new_events(txn, stored)  # search index, user directory
            accepted = [s.event for s in stored if not (s.rejected or s.outlier or s.soft_failed)]
            if not backfilled:
                await self._write_extremities(txn, room_id, accepted)
            await self._write_backward_extremities(
                txn, room_id, [s.event for s in stored if not s.outlier]
            )
            for written in stored:
                if not (written.rejected or written.outlier or written.soft_failed):
                    redacts = await self._apply_redaction(txn, written)
                    if redacts is not None:
                        redacted_targets.append(redacts)
            # An event whose redaction came first is stored redacted (v3+ rules).
            redacted_targets += await self._redact_late_arrivals(txn, stored, redacted_targets)
            membership_rows: list[tuple[Any, ...]] = []
            if current_state is not None:
                new_positions = {s.event_id: s.stream_ordering for s in stored}
                membership_rows = await self._membership_rows(
                    txn,
                    room_id,
                    current_state,
                    changed_members,
                    new_positions,
                    positions[len(todo) :],
                )
                await self._replace_current_state(txn, room_id, old_current, current_state)
                candidates = [s.state_group for s in stored if s.state_group is not None]
                current_group = await groups.group_for(
                    current_state, candidates or await self._current_group_list(txn, room_id)
                )
                await txn.execute(
                    "UPDATE rooms SET current_state_group = ? WHERE room_id = ?",
                    current_group,
                    room_id,
                )
                await self._write_memberships(txn, membership_rows)
            if not backfilled:
                txn.call_after_commit(lambda: self._after_persist(stored, membership_rows))
        self._invalidate([*redacted_targets, *rekeyed])
        for result in stored:
            self._cache_put(result)
        if self.on_persisted is not None and stored:
            self.on_persisted("federated", len(stored), time.perf_counter() - started)
        return stored

    async def _backfill_positions(
        self, txn: Transaction, todo: Sequence[FederatedEvent], rekeyed: Mapping[str, int]
    ) -> list[int]:
        """Negative orderings for a backfilled batch (given oldest first): the
        last (newest) event gets the highest. Outliers being de-outliered lose
        their row and old ordering here (their state-group entries follow the
        new one); the caller inserts them again."""
        allocated = await next_stream_positions(txn, BACKFILL_STREAM, len(todo))
        positions = [-allocated[len(todo) - 1 - index] for index in range(len(todo))]
        for item, position in zip(todo, positions, strict=True):
            old = rekeyed.get(item.event.event_id)
            if old is None:
                continue
            await txn.execute("DELETE FROM events WHERE stream_ordering = ?", old)
            await txn.execute(
                "UPDATE state_group_entries SET event_nid = ? WHERE event_nid = ?", position, old
            )
        return positions

    async def backward_extremities(self, room_id: str, limit: int) -> list[str]:
        """Up to ``limit`` of the room's backward extremities (the migration
        0011_backfill.sql says what they are)."""
        rows = await self.database.fetch_all(
            "SELECT event_id FROM room_backward_extremities WHERE room_id = ?"
            " ORDER BY event_id LIMIT ?",
            room_id,
            limit,
        )
        return [row[0] for row in rows]

    async def _write_backward_extremities(
        self, txn: Transaction, room_id: str, events: Sequence[Event]
    ) -> None:
        """Events now held with their state stop being backward extremities;
        their prev events not held so become ones."""
        held = [event.event_id for event in events]
        for start in range(0, len(held), _CHUNK):
            chunk = padded(held[start : start + _CHUNK], _CHUNK)
            await txn.execute(
                "DELETE FROM room_backward_extremities WHERE room_id = ?"
                f" AND event_id IN ({placeholders(len(chunk))})",
                room_id,
                *chunk,
            )
        cited = sorted({prev for event in events for prev in event.prev_event_ids} - set(held))
        missing: list[str] = []
        for start in range(0, len(cited), _CHUNK):
            chunk = cited[start : start + _CHUNK]
            rows = await txn.fetch_all(
                "SELECT event_id FROM events WHERE outlier = FALSE"
                f" AND event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            found = {row[0] for row in rows}
            missing.extend(event_id for event_id in chunk if event_id not in found)
        await txn.execute_many(
            "INSERT INTO room_backward_extremities (room_id, event_id) VALUES (?, ?)"
            " ON CONFLICT (room_id, event_id) DO NOTHING",
            [(room_id, event_id) for event_id in missing],
        )

    async def _prev_groups(self, event: Event, batch: Sequence[StoredEvent]) -> list[int]:
        """The state groups after ``event``'s prev events: candidate parents for its group."""
        in_batch = {s.event_id: s for s in batch}
        groups: list[int] = []
        missing: list[str] = []
        for prev in event.prev_event_ids:
            if prev in in_batch:
                if in_batch[prev].state_group is not None:
                    groups.append(in_batch[prev].state_group)  # type: ignore[arg-type]
            else:
                missing.append(prev)
        for prev_stored in (await self.get_events(missing)).values():
            if prev_stored.state_group is not None:
                groups.append(prev_stored.state_group)
        return groups

    async def _current_group_list(self, txn: Transaction, room_id: str) -> list[int]:
        value = await txn.fetch_val(
            "SELECT current_state_group FROM rooms WHERE room_id = ?", room_id
        )
        return [] if value is None else [int(value)]

    async def _current_state_in_txn_all(self, txn: Transaction, room_id: str) -> StateMap:
        rows = await txn.fetch_all(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", room_id
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def _nids_in_txn(self, txn: Transaction, event_ids: Iterable[str]) -> dict[str, int]:
        """Short IDs (stream orderings) of stored events; every one must be known."""
        wanted = sorted(set(event_ids))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = padded(wanted[start : start + _CHUNK], _CHUNK)
            rows = await txn.fetch_all(
                "SELECT event_id, stream_ordering FROM events"
                f" WHERE event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            found.update({row[0]: int(row[1]) for row in rows})
        unknown = set(wanted) - found.keys()
        if unknown:
            raise ValueError(f"state refers to events that are not stored: {sorted(unknown)[:5]}")
        return found

    async def _membership_rows(
        self,
        txn: Transaction,
        room_id: str,
        current_state: StateMap,
        changed_members: Sequence[StateKey],
        new_positions: Mapping[str, int],
        spare_positions: Sequence[int],
    ) -> list[tuple[Any, ...]]:
        """``(room_id, user_id, membership, event_id, position)`` for each member
        key whose current event changed: the member event's own position when
        it is new in this batch (``new_positions``), else a spare one."""
        memberships = await self._memberships_in_txn(
            txn, [current_state[key] for key in changed_members]
        )
        spare = iter(spare_positions)
        rows: list[tuple[Any, ...]] = []
        for key in changed_members:
            event_id = current_state[key]
            position = new_positions[event_id] if event_id in new_positions else next(spare)
            rows.append((room_id, key[1], memberships[event_id], event_id, position))
        rows.sort(key=lambda row: int(row[4]))
        return rows

    async def _memberships_in_txn(
        self, txn: Transaction, event_ids: Sequence[str]
    ) -> dict[str, str]:
        """``content.membership`` of stored member events (read inside ``txn``,
        so events of the batch being written are seen)."""
        found: dict[str, str] = {}
        wanted = sorted(set(event_ids))
        for start in range(0, len(wanted), _CHUNK):
            chunk = padded(wanted[start : start + _CHUNK], _CHUNK)
            rows = await txn.fetch_all(
                f"SELECT event_id, json FROM events WHERE event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            for row in rows:
                content = orjson.loads(row[1]).get("content")
                membership = content.get("membership") if isinstance(content, dict) else None
                found[row[0]] = membership if isinstance(membership, str) else "leave"
        return found

    async def _replace_current_state(
        self, txn: Transaction, room_id: str, old: StateMap, new: StateMap
    ) -> None:
        """Make the ``current_state`` rows of ``room_id`` equal ``new``, writing only the difference."""
        changed = [key for key, event_id in new.items() if old.get(key) != event_id]
        await self._write_current_state(txn, room_id, dict(new), changed)
        removed: dict[StateKey, str | None] = {key: None for key in old if key not in new}
        if removed:
            txn.call_after_commit(lambda: self._current_state.written(room_id, removed))
        for event_type, state_key in (key for key in old if key not in new):
            await txn.execute(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                room_id,
                event_type,
                state_key,
            )

    async def _insert_room(self, txn: Transaction, room: NewRoom) -> None:
        inserted = await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING",
            room.room_id,
            room.room_version,
            room.creator,
            room.is_public,
            room.created_ts,
        )
        if inserted == 0:
            raise RoomExists(room.room_id)
        if room.alias is not None:
            inserted = await txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?)"
                " ON CONFLICT (room_alias) DO NOTHING",
                room.alias,
                room.room_id,
                room.creator,
            )
            if inserted == 0:
                raise AliasTaken(room.alias)

    async def _current_state_in_txn(
        self, txn: Transaction, room_id: str, keys: Sequence[StateKey]
    ) -> dict[StateKey, str]:
        wanted = list(dict.fromkeys(keys))
        found: dict[StateKey, str] = {}
        for start in range(0, len(wanted), 200):
            chunk = padded(wanted[start : start + 200], 200)
            conditions = " OR ".join("(type = ? AND state_key = ?)" for _ in chunk)
            args: list[Any] = [room_id]
            for event_type, state_key in chunk:
                args.extend((event_type, state_key))
            rows = await txn.fetch_all(
                "SELECT type, state_key, event_id FROM current_state"
                f" WHERE room_id = ? AND ({conditions})",
                *args,
            )
            found.update({(row[0], row[1]): row[2] for row in rows})
        return found

    async def _write_current_state(
        self, txn: Transaction, room_id: str, current: dict[StateKey, str], keys: Sequence[StateKey]
    ) -> None:
        rows = [(room_id, key[0], key[1], current[key]) for key in dict.fromkeys(keys)]
        written: dict[StateKey, str | None] = {(row[1], row[2]): row[3] for row in rows}
        if written:
            txn.call_after_commit(lambda: self._current_state.written(room_id, written))
        if rows:
            await txn.execute_many(
                "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
                rows,
            )

    def _after_persist(
        self, stored: Sequence[StoredEvent], membership_rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Once committed: the in-memory logs and the membership cache."""
        log = self._recent_events
        for item in stored:
            shown = not (item.outlier or item.rejected or item.soft_failed)
            event_id = item.event_id if shown else None
            floor = log.floor
            position = item.stream_ordering
            log.add(position, (item.event.room_id, event_id))
            if floor is not None and position > floor:  # kept by the log
                self._room_tails.add(item.event.room_id, position, event_id, floor)
        for room_id, user_id, membership, event_id, position in membership_rows:
            self._recent_memberships.add(
                position, MembershipChange(position, room_id, user_id, membership, event_id)
            )
        if membership_rows:
            self.rooms.invalidate_memberships({row[1] for row in membership_rows})

    async def _write_memberships(self, txn: Transaction, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in rows:
            latest[(row[0], row[1])] = row
        await txn.execute_many(
            "INSERT INTO room_memberships"
            " (room_id, user_id, membership, event_id, stream_ordering, forgotten)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
            " membership = excluded.membership, event_id = excluded.event_id,"
            " stream_ordering = excluded.stream_ordering, forgotten = excluded.forgotten",
            [(*row, False) for row in latest.values()],
        )
        await txn.execute_many(
            "INSERT INTO membership_history (room_id, user_id, membership, event_id,"
            " stream_ordering) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        changes = [(row[0], row[1], row[2]) for row in rows]
        txn.call_after_commit(lambda: self.rooms.apply_membership_changes(changes))

    async def _write_extremities(
        self, txn: Transaction, room_id: str, events: Sequence[Event]
    ) -> None:
        """The batch's events replace the extremities they cite; those not cited
        by a later event of the batch become extremities."""
        cited = {prev for event in events for prev in event.prev_event_ids}
        cited_list = sorted(cited)
        for start in range(0, len(cited_list), _CHUNK):
            chunk = padded(cited_list[start : start + _CHUNK], _CHUNK)
            await txn.execute(
                "DELETE FROM room_forward_extremities WHERE room_id = ?"
                f" AND event_id IN ({placeholders(len(chunk))})",
                room_id,
                *chunk,
            )
        new = [(room_id, e.event_id) for e in events if e.event_id not in cited]
        await txn.execute_many(
            "INSERT INTO room_forward_extremities (room_id, event_id) VALUES (?, ?)", new
        )

    async def _redact_late_arrivals(
        self, txn: Transaction, stored: list[StoredEvent], redacted_in_batch: list[str]
    ) -> list[str]:
        """Apply the redactions recorded before events of the batch, and mark
        the batch's redacted events (in ``stored``, which is cached) with
        their redaction."""
        skip = set(redacted_in_batch)
        applied = await apply_pending_redactions(
            txn, self.state, self._events_in_txn, [s for s in stored if s.event_id not in skip]
        )
        if skip:
            rows = await txn.fetch_all(
                "SELECT event_id, redacted_by FROM events"
                f" WHERE event_id IN ({placeholders(len(skip))})",
                *skip,
            )
            applied.update((row[0], row[1]) for row in rows if row[1] is not None)
        for index, written in enumerate(stored):
            if written.event_id in applied:
                stored[index] = dataclass_replace(written, redacted_by=applied[written.event_id])
        return [target for target in applied if target not in skip]

    async def _apply_redaction(self, txn: Transaction, stored: StoredEvent) -> str | None:
        """Record an accepted redaction; apply it now if its target is known
        and it may redact it (ranvier/storage/redactions.py), else when the
        target arrives. The target's ID when applied."""
        event = stored.event
        if event.type != "m.room.redaction" or event.redacts is None:
            return None
        await txn.execute(
            "INSERT INTO redactions (redacts, event_id) VALUES (?, ?)"
            " ON CONFLICT (redacts, event_id) DO NOTHING",
            event.redacts,
            event.event_id,
        )
        target = (await self._events_in_txn(txn, [event.redacts])).get(event.redacts)
        if target is None or not await redaction_applies(
            txn, self.state, self._events_in_txn, stored, target
        ):
            return None
        await mark_redacted(txn, target, event.event_id)
        return event.redacts

    async def _events_in_txn(
        self, txn: Transaction, event_ids: Iterable[str]
    ) -> dict[str, StoredEvent]:
        """Events by ID as ``txn`` sees them (with what it wrote)."""
        ids = list(dict.fromkeys(event_ids))
        found: dict[str, StoredEvent] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = padded(ids[start : start + _CHUNK], _CHUNK)
            rows = await txn.fetch_all(
                f"SELECT {_EVENT_COLUMNS}{_EVENT_FROM}"
                f" WHERE e.event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            found.update((row[0], _row_to_stored(row)) for row in rows)
        return found


def _backfill_wanted(item: FederatedEvent, known: Mapping[str, StoredEvent]) -> bool:
    """A backfilled event to write: new, or held only as an accepted outlier
    and now given with its state (it joins the visible history)."""
    held = known.get(item.event.event_id)
    if held is None:
        return True
    return held.outlier and not held.rejected and item.state_before is not None


def _changed_member_keys(old: StateMap, new: StateMap | None) -> list[StateKey]:
    """Member keys whose current event differs between ``old`` and ``new``."""
    if new is None:
        return []
    return [
        key
        for key, event_id in new.items()
        if key[0] == "m.room.member" and old.get(key) != event_id
    ]


def _referenced_ids(items: Sequence[FederatedEvent], current_state: StateMap | None) -> set[str]:
    """Every event ID a state map of the batch names."""
    ids: set[str] = set()
    for item in items:
        if item.state_before is not None:
            ids.update(item.state_before.values())
    if current_state is not None:
        ids.update(current_state.values())
    return ids


class _GroupPicker:
    """State groups for whole state maps, inside one transaction.

    A map equal to a candidate group's state reuses that group; otherwise the
    new group is a delta against the candidate it differs least from (a
    candidate holding a key the map lacks cannot be a parent: deltas only add
    or replace), or a snapshot when none fits.
    """

    def __init__(
        self, state: StateStore, txn: Transaction, room_id: str, nids: Mapping[str, int]
    ) -> None:
        self.state = state
        self.txn = txn
        self.room_id = room_id
        self.nids = nids
        self._known: dict[int, StateMap] = {}

    async def _state_of(self, group: int) -> StateMap:
        if group not in self._known:
            self._known[group] = await self.state.get_state_ids(group, self.txn)
        return self._known[group]

    async def group_for(self, state: StateMap, candidates: Iterable[int]) -> int:
        best: tuple[int, dict[StateKey, str]] | None = None
        for group in dict.fromkeys(candidates):
            parent_state = await self._state_of(group)
            if parent_state == state:
                return group
            if not parent_state.keys() <= state.keys():
                continue
            delta = {key: eid for key, eid in state.items() if parent_state.get(key) != eid}
            if best is None or len(delta) < len(best[1]):
                best = (group, delta)
        parent, delta = best if best is not None else (None, dict(state))
        group = await self.state.create_group(
            self.txn, self.room_id, parent, {key: self.nids[eid] for key, eid in delta.items()}
        )
        self._known[group] = dict(state)
        return group


def _event_row(room_id: str, stored: StoredEvent) -> tuple[Any, ...]:
    """The ``events`` row of ``stored``, in :data:`_INSERT_EVENTS`' column order."""
    event = stored.event
    return (
        stored.stream_ordering,
        event.event_id,
        room_id,
        event.type,
        event.state_key,
        event.sender,
        event.origin_server_ts,
        event.depth,
        _pdu_json(event),
        stored.state_group_before,
        stored.state_group,
        stored.replaces_state,
        stored.redacted_by,
        stored.rejected,
        stored.outlier,
        stored.soft_failed,
    )


def _pdu_json(event: Event) -> str:
    """The PDU as stored: canonical JSON, relaxed for room versions 1–5 whose
    events may hold floats and large integers (room version 1, "Canonical JSON")."""
    strict = event.room_version.strict_canonical_json
    return encode_canonical_json(dict(event.pdu), strict=strict).decode("utf-8")
