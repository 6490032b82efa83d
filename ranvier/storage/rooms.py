"""Rooms, memberships, room aliases and profiles.

Memberships are written by :meth:`ranvier.storage.events.EventStore.persist_local_events`
in the event's transaction; this store reads them (joined rooms, members,
users sharing rooms) and writes what is not an event: aliases, the room
directory flag, "forgotten", profile fields.

Each user's memberships (every /sync starts with them) are cached in memory,
a bounded LRU; the event store invalidates a user's entry when their
membership changes (:meth:`RoomStore.invalidate_memberships`, after commit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ranvier.core.ids import server_name_of
from ranvier.storage.cache import ReadCache
from ranvier.storage.engine import Database, IntegrityError, placeholders


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room_id: str
    room_version: str
    creator: str
    is_public: bool
    created_ts: int


@dataclass(frozen=True, slots=True)
class Membership:
    room_id: str
    user_id: str
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool


@dataclass(frozen=True, slots=True)
class UserMemberships:
    """Every membership of one user, as cached (do not change its parts).

    Built once per load, so that each /sync finds the joined rooms, the rest
    and any room's membership without a loop over all of them."""

    #: Every membership (any kind), oldest ``stream_ordering`` first.
    all: tuple[Membership, ...]
    #: Those with ``membership == "join"``, in the same order.
    joined: tuple[Membership, ...]
    #: The others (invite, knock, leave, ban), in the same order.
    others: tuple[Membership, ...]
    #: ``room_id -> membership`` (a user has one membership per room).
    by_room: dict[str, Membership]
    #: The room IDs of ``joined``, in its order.
    joined_ids: tuple[str, ...]

    @classmethod
    def of(cls, memberships: Sequence[Membership]) -> UserMemberships:
        every = tuple(memberships)
        joined = tuple(m for m in every if m.membership == "join")
        return cls(
            every,
            joined,
            tuple(m for m in every if m.membership != "join"),
            {m.room_id: m for m in every},
            tuple(m.room_id for m in joined),
        )


class AliasInUse(Exception):
    pass


class _UnknownRoom(Exception):
    """Raised by a cache load: no such room (nothing to remember)."""


# users_sharing_rooms_with loads at most this many rooms' members one by one.
_SHARING_LOADS = 32


class RoomStore:
    def __init__(
        self, database: Database, membership_cache_size: int = 10_000, room_cache_size: int = 2_000
    ) -> None:
        self.database = database
        #: ``user_id -> every membership of the user`` (all kinds), oldest first.
        self._memberships: ReadCache[str, UserMemberships] = ReadCache(membership_cache_size)
        database.on_positions_reset(self._memberships.clear)
        #: ``room_id -> its record`` (only ``is_public`` ever changes, through
        #: :meth:`set_room_is_public`); every join and send reads it.
        self._rooms: ReadCache[str, RoomRecord] = ReadCache(room_cache_size)
        database.on_positions_reset(self._rooms.clear)
        #: ``room_id -> joined user IDs``: a join, a send and its fan-out each
        #: ask, and a full room has thousands. Kept up to date by
        #: :meth:`apply_membership_changes` once a membership write commits.
        self._joined: ReadCache[str, frozenset[str]] = ReadCache(room_cache_size)
        database.on_positions_reset(self._joined.clear)
        #: ``room_id -> (its cached joined members, their servers counted)``: a
        #: room's every event asks which servers to send it to. Valid while the
        #: members object is the cached one; kept in step by the code above.
        self._servers: dict[str, tuple[frozenset[str], Counter[str]]] = {}
        self._room_cache_size = room_cache_size

    def invalidate_memberships(self, user_ids: Iterable[str]) -> None:
        """The memberships of ``user_ids`` changed (called once committed)."""
        self._memberships.invalidate(user_ids)

    def apply_membership_changes(self, changes: Iterable[tuple[str, str, str]]) -> None:
        """``(room_id, user_id, membership)`` rows just committed, in order: the
        cached joined members of those rooms follow them."""
        updated: dict[str, set[str]] = {}
        servers: dict[str, Counter[str] | None] = {}
        for room_id, user_id, membership in changes:
            members = updated.get(room_id)
            if members is None:
                cached = self._joined.peek(room_id)
                if cached is None:
                    continue
                members = updated[room_id] = set(cached)
                counted = self._servers.get(room_id)
                servers[room_id] = (
                    Counter(counted[1]) if counted is not None and counted[0] is cached else None
                )
            counts = servers[room_id]
            if membership == "join":
                if counts is not None and user_id not in members:
                    counts[server_name_of(user_id) or ""] += 1
                members.add(user_id)
            elif user_id in members:
                if counts is not None:
                    server = server_name_of(user_id) or ""
                    counts[server] -= 1
                    if counts[server] <= 0:
                        del counts[server]
                members.discard(user_id)
        # Rooms not cached are left alone, but a load under way may have read
        # the rows before this commit: invalidating bumps the generation, so
        # such a load is not remembered.
        self._joined.invalidate([])
        for room_id, members in updated.items():
            frozen = frozenset(members)
            self._joined.set(room_id, frozen)
            counts = servers[room_id]
            if counts is None:
                self._servers.pop(room_id, None)
            else:
                self._servers[room_id] = (frozen, counts)

    async def user_memberships(self, user_id: str) -> UserMemberships:
        """Every membership of the user, cached (the object itself: every
        /sync and join reads it; callers must not change it)."""

        async def load() -> UserMemberships:
            rows = await self.database.fetch_all(
                "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten"
                " FROM room_memberships WHERE user_id = ? ORDER BY stream_ordering",
                user_id,
            )
            return UserMemberships.of([_membership(row) for row in rows])

        return await self._memberships.get(user_id, load)

    # --- rooms ----------------------------------------------------------------------

    async def get_room(self, room_id: str) -> RoomRecord | None:
        async def load() -> RoomRecord:
            row = await self.database.fetch_one(
                "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms"
                " WHERE room_id = ?",
                room_id,
            )
            if row is None:
                raise _UnknownRoom  # not remembered: the room may be created or joined next
            return RoomRecord(row[0], row[1], row[2], bool(row[3]), int(row[4]))

        try:
            return await self._rooms.get(room_id, load)
        except _UnknownRoom:
            return None

    async def set_room_is_public(self, room_id: str, is_public: bool) -> None:
        try:
            await self.database.execute(
                "UPDATE rooms SET is_public = ? WHERE room_id = ?", is_public, room_id
            )
        finally:
            self._rooms.invalidate((room_id,))

    async def public_room_ids(self) -> list[str]:
        rows = await self.database.fetch_all(
            "SELECT room_id FROM rooms WHERE is_public = ? ORDER BY created_ts", True
        )
        return [row[0] for row in rows]

    # --- memberships ----------------------------------------------------------------

    async def get_membership(self, room_id: str, user_id: str) -> Membership | None:
        # All of the user's memberships, cached: a join asks twice (pending
        # remote invite? already joined?), /sync starts from the same list.
        return (await self.user_memberships(user_id)).by_room.get(room_id)

    async def rooms_for_user(
        self, user_id: str, memberships: Iterable[str] = ("join",)
    ) -> list[Membership]:
        wanted = set(memberships)
        cached = await self.user_memberships(user_id)
        if wanted == {"join"}:
            return list(cached.joined)
        return [m for m in cached.all if m.membership in wanted]

    async def joined_room_ids(self, user_id: str) -> list[str]:
        return list((await self.user_memberships(user_id)).joined_ids)

    async def members(
        self, room_id: str, memberships: Iterable[str] | None = None
    ) -> list[Membership]:
        """Current memberships in a room, optionally only some kinds."""
        sql = (
            "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten"
            " FROM room_memberships WHERE room_id = ?"
        )
        args: list[Any] = [room_id]
        if memberships is not None:
            wanted = list(memberships)
            sql += f" AND membership IN ({placeholders(len(wanted))})"
            args.extend(wanted)
        rows = await self.database.fetch_all(sql + " ORDER BY user_id", *args)
        return [_membership(row) for row in rows]

    async def joined_user_ids(self, room_id: str) -> set[str]:
        return set(await self.joined_members(room_id))  # a copy: callers add to it

    async def joined_members(self, room_id: str) -> frozenset[str]:
        """The room's joined members, shared (no copy): the cached set itself."""

        async def load() -> frozenset[str]:
            rows = await self.database.fetch_all(
                "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = ?",
                room_id,
                "join",
            )
            return frozenset(row[0] for row in rows)

        return await self._joined.get(room_id, load)

    async def joined_servers(self, room_id: str) -> Counter[str]:
        """The servers of the room's joined members, each with its number of
        members (shared: not to be changed). Kept in step with each membership
        change, not recounted per event."""
        members = await self.joined_members(room_id)
        counted = self._servers.get(room_id)
        if counted is not None and counted[0] is members:
            return counted[1]
        counts = Counter(server_name_of(user_id) or "" for user_id in members)
        if len(self._servers) >= self._room_cache_size:
            self._servers.clear()
        self._servers[room_id] = (members, counts)
        return counts

    async def users_sharing_rooms_with(self, user_id: str) -> set[str]:
        """The user and everyone joined to a room the user is joined to. From
        the caches of the user's memberships and of each room's members: a
        DISTINCT over the memberships of every room of the user cost 70 ms for
        a member of rooms of 1,000 (bench scenario 14), and presence asks for
        it on every /sync that sees a presence change."""
        room_ids = await self.joined_room_ids(user_id)
        if sum(self._joined.peek(room_id) is None for room_id in room_ids) > _SHARING_LOADS:
            # Many rooms not cached (a bot in thousands of rooms): one query,
            # not a query per room.
            rows = await self.database.fetch_all(
                "SELECT DISTINCT other.user_id FROM room_memberships mine"
                " JOIN room_memberships other ON other.room_id = mine.room_id"
                " WHERE mine.user_id = ? AND mine.membership = ? AND other.membership = ?",
                user_id,
                "join",
                "join",
            )
            return {row[0] for row in rows} | {user_id}
        sharing = {user_id}
        for room_id in room_ids:
            sharing |= await self.joined_members(room_id)
        return sharing

    async def membership_counts(self, room_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``room_id -> membership -> count`` of current memberships (room summaries)."""
        counts: dict[str, dict[str, int]] = {}
        room_list = list(dict.fromkeys(room_ids))
        for start in range(0, len(room_list), 500):
            chunk = room_list[start : start + 500]
            rows = await self.database.fetch_all(
                "SELECT room_id, membership, COUNT(*) FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(chunk))}) GROUP BY room_id, membership",
                *chunk,
            )
            for row in rows:
                counts.setdefault(row[0], {})[row[1]] = int(row[2])
        return counts

    async def first_members(
        self,
        room_ids: Sequence[str],
        memberships: Sequence[str],
        exclude_user_id: str,
        limit: int,
    ) -> dict[str, list[str]]:
        """Per room, the first ``limit`` users (by stream ordering) with one of
        ``memberships``, other than ``exclude_user_id`` (room summary heroes)."""
        result: dict[str, list[str]] = {}
        room_list = list(dict.fromkeys(room_ids))
        kinds = list(memberships)
        for start in range(0, len(room_list), 500):
            chunk = room_list[start : start + 500]
            rows = await self.database.fetch_all(
                "SELECT room_id, user_id FROM (SELECT room_id, user_id, stream_ordering,"
                " ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY stream_ordering, user_id) AS rn"
                " FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(chunk))})"
                f" AND membership IN ({placeholders(len(kinds))}) AND user_id <> ?) AS ranked"
                " WHERE rn <= ? ORDER BY room_id, rn",
                *chunk,
                *kinds,
                exclude_user_id,
                limit,
            )
            for row in rows:
                result.setdefault(row[0], []).append(row[1])
        return result

    async def forget(self, room_id: str, user_id: str) -> None:
        try:
            await self.database.execute(
                "UPDATE room_memberships SET forgotten = ? WHERE room_id = ? AND user_id = ?",
                True,
                room_id,
                user_id,
            )
        finally:  # even if cancelled: the update may have happened
            self.invalidate_memberships((user_id,))

    # --- aliases --------------------------------------------------------------------

    async def create_alias(self, alias: str, room_id: str, creator: str) -> None:
        """Raises :class:`AliasInUse` if the alias exists."""
        count = await self.database.execute(
            "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?)"
            " ON CONFLICT (room_alias) DO NOTHING",
            alias,
            room_id,
            creator,
        )
        if count == 0:
            raise AliasInUse(alias)

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        """``(room_id, creator)`` of an alias."""
        row = await self.database.fetch_one(
            "SELECT room_id, creator FROM room_aliases WHERE room_alias = ?", alias
        )
        return None if row is None else (row[0], row[1])

    async def delete_alias(self, alias: str) -> bool:
        return (
            await self.database.execute("DELETE FROM room_aliases WHERE room_alias = ?", alias) > 0
        )

    async def aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.database.fetch_all(
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", room_id
        )
        return [row[0] for row in rows]

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> None:
        """Point every alias of ``old_room_id`` at ``new_room_id`` (room upgrades)."""
        await self.database.execute(
            "UPDATE room_aliases SET room_id = ? WHERE room_id = ?", new_room_id, old_room_id
        )

    # --- profiles -------------------------------------------------------------------

    async def get_profile_fields(self, user_id: str) -> dict[str, Any]:
        """Stored fields; a removed field is present with value None."""
        rows = await self.database.fetch_all(
            "SELECT field, value FROM profiles WHERE user_id = ?", user_id
        )
        return {row[0]: orjson.loads(row[1]) for row in rows}

    async def set_profile_field(self, user_id: str, field: str, value: Any) -> None:
        await self.database.execute(
            "INSERT INTO profiles (user_id, field, value) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
            user_id,
            field,
            orjson.dumps(value).decode("utf-8"),
        )

    async def delete_profile_field(self, user_id: str, field: str) -> None:
        await self.database.execute(
            "DELETE FROM profiles WHERE user_id = ? AND field = ?", user_id, field
        )


def _membership(row: Any) -> Membership:
    return Membership(row[0], row[1], row[2], row[3], int(row[4]), bool(row[5]))


__all__ = ["AliasInUse", "IntegrityError", "Membership", "RoomRecord", "RoomStore"]
