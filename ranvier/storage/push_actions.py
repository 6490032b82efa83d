"""Store of push actions: which local user each event notified, and how.

Client-Server API, "Push Notifications" (notification counts, GET
/notifications) and "Receipts" ("Threaded read receipts"). A row per (user,
event) whose rules said ``notify``; counts are derived from these rows and the
user's receipts at read time, so they survive a restart and need no counter
kept in step with every receipt.

``thread_id`` is the event's thread root or ``main`` ("Threading"); receipts
store ``''`` for unthreaded, ``main`` or a root for threaded ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from ranvier.storage.cache import ReadCache
from ranvier.storage.engine import Database, placeholders, upsert_sql

MAIN_THREAD = "main"
READ_TYPES = ("m.read", "m.read.private")

_COLUMNS = ("user_id", "room_id", "stream_ordering", "thread_id", "highlight", "actions", "ts")
_INSERT = upsert_sql("event_push_actions", ("user_id", "room_id", "stream_ordering"), _COLUMNS, ())

# Never moves back: batches may finish slightly out of stream order.
_SET_EVALUATED = (
    "INSERT INTO push_evaluated (id, stream_ordering, clean) VALUES (1, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET clean = excluded.clean, stream_ordering = CASE"
    " WHEN excluded.stream_ordering > push_evaluated.stream_ordering"
    " THEN excluded.stream_ordering ELSE push_evaluated.stream_ordering END"
)

# The commonest list of actions, stored as '' (a row per member of a large room).
DEFAULT_ACTIONS = '["notify"]'

# The user's read position per (room, thread) in the given rooms: the newest
# event any of their m.read / m.read.private receipts points at ('' = unthreaded).
_READS = (
    "SELECT r.room_id, r.thread_id, MAX(e.stream_ordering)"
    " FROM receipts r JOIN events e ON e.event_id = r.event_id"
    f" WHERE r.user_id = ? AND r.receipt_type IN ({placeholders(len(READ_TYPES))})"
)
# Rooms per counting query: two parameters each, well under SQLite's limit.
COUNT_CHUNK = 400


def _counts_sql(rooms: int, threads: int) -> str:
    """Unread rows per (room, thread) of ``rooms`` rooms, each read from its
    unthreaded read position on (a range of the primary key), less those at or
    before their own thread's position ("Threaded read receipts": an
    unthreaded receipt covers every thread, a threaded one only its thread)."""
    values = ", ".join(["(CAST(? AS TEXT), CAST(? AS BIGINT))"] * rooms)
    sql = (
        f"WITH lo (room_id, pos) AS (VALUES {values})"
        + (
            ", tp (room_id, thread_id, pos) AS (VALUES "
            + ", ".join(["(CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT))"] * threads)
            + ")"
            if threads
            else ""
        )
        + " SELECT a.room_id, a.thread_id, COUNT(*), SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END)"
        " FROM lo JOIN event_push_actions a"
        " ON a.user_id = ? AND a.room_id = lo.room_id AND a.stream_ordering > lo.pos"
    )
    if threads:
        sql += (
            " LEFT JOIN tp ON tp.room_id = a.room_id AND tp.thread_id = a.thread_id"
            " WHERE a.stream_ordering > COALESCE(tp.pos, 0)"
        )
    return sql + " GROUP BY a.room_id, a.thread_id"


@dataclass(frozen=True, slots=True)
class PushActionRow:
    user_id: str
    event_id: str
    room_id: str
    stream_ordering: int
    thread_id: str
    highlight: bool
    actions: str  # JSON text
    ts: int


@dataclass(frozen=True, slots=True)
class ThreadCount:
    room_id: str
    thread_id: str
    notifications: int
    highlights: int


@dataclass(frozen=True, slots=True)
class MembersAction:
    """One action row (``user_id`` unused) for every local member of the room
    who had joined before the event, except ``excluded``: one statement for a
    large room instead of a row per member through Python."""

    row: PushActionRow
    excluded: Sequence[str]
    #: Those members, as the caller counted them (their remembered counts).
    users: Collection[str] = ()


# Local members are those with an account here (users); joined before the event.
_INSERT_FOR_MEMBERS = (
    "INSERT INTO event_push_actions (user_id, room_id, stream_ordering, thread_id,"
    " highlight, actions, ts)"
    " SELECT m.user_id, CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT),"
    " CAST(? AS BOOLEAN), CAST(? AS TEXT), CAST(? AS BIGINT)"
    " FROM room_memberships m JOIN users u ON u.user_id = m.user_id"
    " WHERE m.room_id = ? AND m.membership = 'join' AND m.stream_ordering < ?"
)


def _values(row: PushActionRow) -> tuple[object, ...]:
    actions = "" if row.actions == DEFAULT_ACTIONS else row.actions
    return (
        row.user_id,
        row.room_id,
        row.stream_ordering,
        row.thread_id,
        row.highlight,
        actions,
        row.ts,
    )


class PushActionStore:
    def __init__(
        self, database: Database, read_cache_size: int = 10_000, count_cache_size: int = 20_000
    ) -> None:
        self.database = database
        #: ``user_id -> {room_id: {thread_id: position}}`` of the user's read
        #: receipts: every /sync's counts start from them, and they change only
        #: when the user sends a receipt (:meth:`forget_reads`, after commit).
        self._reads: ReadCache[str, dict[str, dict[str, int]]] = ReadCache(read_cache_size)
        database.on_positions_reset(self._reads.clear)
        #: ``user_id -> {room_id: counts}``: each room's unread counts per
        #: thread (empty: none), as :meth:`unread_counts` read them. Every
        #: /sync that shows a room asks; they change only with a row written
        #: here (counted in after the commit, or dropped: :meth:`add`) or a
        #: receipt (:meth:`forget_reads`).
        #: At most ``count_cache_size`` rooms in all (then emptied). A read
        #: that overlapped a change is not remembered (``_counts_generation``).
        self._counts: dict[str, dict[str, tuple[ThreadCount, ...]]] = {}
        self._counts_size = 0
        self._count_cache_size = count_cache_size
        self._counts_generation = 0
        #: Rooms with rows being written: counts read meanwhile are not remembered.
        self._writing: Counter[str] = Counter()
        database.on_positions_reset(self._forget_all_counts)

    def forget_reads(self, user_id: str) -> None:
        """A receipt of ``user_id`` was committed (``ReceiptStore``'s listener)."""
        self._reads.invalidate((user_id,))
        self._counts_generation += 1
        self._counts_size -= len(self._counts.pop(user_id, ()))

    def _forget_counts(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._counts_generation += 1
        counts = self._counts
        for user_id, room_id in pairs:
            rooms = counts.get(user_id)
            if rooms is not None and rooms.pop(room_id, None) is not None:
                self._counts_size -= 1

    def _forget_all_counts(self) -> None:
        self._counts_generation += 1
        self._counts.clear()
        self._counts_size = 0

    async def add(
        self,
        rows: Sequence[PushActionRow],
        for_members: Sequence[MembersAction] = (),
        evaluated: int | None = None,
        *,
        new: bool = True,
    ) -> None:
        """Record actions (one transaction); a row already there is kept. With
        ``evaluated``, also that evaluation reached that stream position.

        Returns once the rows are visible, without waiting for them to be
        durable (SQLite's fsync): a crash that loses them loses the recorded
        position with them, and the next start evaluates those events again
        (PushService.start). Woken /syncs read the counts ~0.4 ms sooner.

        ``new``: no row can be there already (not an evaluation repeated after
        a crash). The remembered counts then take the rows in (the /syncs they
        wake read nothing); otherwise those of their users and rooms are
        forgotten.
        """
        if not rows and not for_members:
            if evaluated is not None:
                await self.set_evaluated(evaluated)
            return
        rooms = {row.room_id for row in rows} | {bulk.row.room_id for bulk in for_members}
        # Counts read meanwhile are not remembered: they may or may not hold
        # these rows (see unread_counts).
        self._counts_generation += 1
        self._writing.update(rooms)
        committed = False
        try:
            await self._write(rows, for_members, evaluated)
            committed = True
        finally:
            self._writing.subtract(rooms)
            for room_id in rooms:
                if self._writing[room_id] <= 0:
                    del self._writing[room_id]
            self._counts_generation += 1
            if committed and new:
                for row in rows:
                    self._count_in(row.user_id, row)
            else:  # the outcome may be unknown, or rows were there already
                self._forget_counts((row.user_id, row.room_id) for row in rows)
            for bulk in for_members:
                room_id, members = bulk.row.room_id, frozenset(bulk.users)
                cached = [user for user, counts in self._counts.items() if room_id in counts]
                for user_id in cached:
                    if committed and new and user_id in members:
                        self._count_in(user_id, bulk.row)
                    else:  # a member the caller did not name: as the database counted
                        self._forget_counts(((user_id, room_id),))

    def _count_in(self, user_id: str, row: PushActionRow) -> None:
        """A new row of ``user_id``, committed: into their remembered counts of
        its room (if remembered), unless their receipts already cover it."""
        cached = self._counts.get(user_id)
        if cached is None or row.room_id not in cached:
            return
        reads = self._reads.peek(user_id)
        if reads is None:  # their read positions are not known here
            self._forget_counts(((user_id, row.room_id),))
            return
        room_reads = reads.get(row.room_id, {})
        position = row.stream_ordering
        # As _counts_sql: after the unthreaded receipt and the thread's own.
        if position <= room_reads.get("", 0) or position <= room_reads.get(row.thread_id, 0):
            return
        highlight = 1 if row.highlight else 0
        counts = cached[row.room_id]
        for index, count in enumerate(counts):
            if count.thread_id == row.thread_id:
                bumped = replace(
                    count,
                    notifications=count.notifications + 1,
                    highlights=count.highlights + highlight,
                )
                cached[row.room_id] = (*counts[:index], bumped, *counts[index + 1 :])
                return
        cached[row.room_id] = (*counts, ThreadCount(row.room_id, row.thread_id, 1, highlight))

    async def _write(
        self,
        rows: Sequence[PushActionRow],
        for_members: Sequence[MembersAction],
        evaluated: int | None,
    ) -> None:
        async with self.database.transaction(durable=False) as txn:
            if evaluated is not None:
                await txn.execute(_SET_EVALUATED, evaluated, False)
            if rows:
                await txn.execute_many(_INSERT, [_values(row) for row in rows])
            for bulk in for_members:
                row = bulk.row
                sql = _INSERT_FOR_MEMBERS
                if bulk.excluded:
                    sql += f" AND m.user_id NOT IN ({placeholders(len(bulk.excluded))})"
                await txn.execute(
                    sql + " ON CONFLICT (user_id, room_id, stream_ordering) DO NOTHING",
                    *_values(row)[1:],
                    row.room_id,
                    row.stream_ordering,
                    *bulk.excluded,
                )

    async def set_evaluated(self, position: int, *, clean: bool = False) -> None:
        await self.database.execute(_SET_EVALUATED, position, clean)

    async def evaluated(self) -> tuple[int, bool] | None:
        """How far push evaluation got, and whether it stopped cleanly (None:
        never recorded)."""
        row = await self.database.fetch_one(
            "SELECT stream_ordering, clean FROM push_evaluated WHERE id = 1"
        )
        return None if row is None else (int(row[0]), bool(row[1]))

    async def event_ids_after(self, position: int, limit: int) -> list[str]:
        """The IDs of the first ``limit`` events after ``position``, in stream order."""
        rows = await self.database.fetch_all(
            "SELECT event_id FROM events WHERE stream_ordering > ?"
            " ORDER BY stream_ordering LIMIT ?",
            position,
            limit,
        )
        return [row[0] for row in rows]

    async def members_before(self, room_id: str, position: int) -> list[str]:
        """The room's joined members whose join came before ``position`` (plain
        IDs: this runs for every event of a large room)."""
        rows = await self.database.fetch_all(
            "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = 'join'"
            " AND stream_ordering < ?",
            room_id,
            position,
        )
        return [row[0] for row in rows]

    async def unread_counts(self, user_id: str, room_ids: Collection[str]) -> list[ThreadCount]:
        """The user's unread notifying events per (room, thread) of ``room_ids``,
        after their receipts. Reads only the rows after each room's read
        position, so its cost is the unread rows of these rooms, not the user's
        history or their other rooms."""
        cached = self._counts.get(user_id, {})
        counts: list[ThreadCount] = []
        rooms: list[str] = []
        for room_id in room_ids:
            known = cached.get(room_id)
            if known is None:
                rooms.append(room_id)
            else:
                counts += known
        if not rooms:
            return counts
        generation = self._counts_generation
        read = await self._read_counts(user_id, rooms)
        if generation == self._counts_generation and len(rooms) <= self._count_cache_size:
            if self._counts_size + len(rooms) > self._count_cache_size:
                self._forget_all_counts()
            by_room: dict[str, list[ThreadCount]] = {room_id: [] for room_id in rooms}
            for count in read:
                by_room[count.room_id].append(count)
            mine = self._counts.setdefault(user_id, {})
            writing = self._writing
            for room_id, room_counts in by_room.items():
                if room_id in writing:  # its new rows would be counted in twice
                    continue
                if room_id not in mine:
                    self._counts_size += 1
                mine[room_id] = tuple(room_counts)
        return counts + read

    async def _read_counts(self, user_id: str, rooms: list[str]) -> list[ThreadCount]:
        counts: list[ThreadCount] = []
        for start in range(0, len(rooms), COUNT_CHUNK):
            chunk = rooms[start : start + COUNT_CHUNK]
            reads = await self.read_positions(user_id, chunk)
            args: list[object] = []
            for room_id in chunk:
                args += (room_id, reads.get((room_id, ""), 0))
            threads = [(room, thread, pos) for (room, thread), pos in reads.items() if thread]
            for room_id, thread_id, pos in threads:
                args += (room_id, thread_id, pos)
            rows = await self.database.fetch_all(
                _counts_sql(len(chunk), len(threads)), *args, user_id
            )
            counts += (
                ThreadCount(
                    room_id=row[0],
                    thread_id=row[1],
                    notifications=int(row[2]),
                    highlights=int(row[3] or 0),
                )
                for row in rows
            )
        return counts

    async def read_positions(
        self, user_id: str, room_ids: Sequence[str] | None = None
    ) -> dict[tuple[str, str], int]:
        """``{(room_id, thread_id): position}`` of the user's receipts ('' =
        unthreaded), in ``room_ids`` when given."""

        async def load() -> dict[str, dict[str, int]]:
            rows = await self.database.fetch_all(
                _READS + " GROUP BY r.room_id, r.thread_id", user_id, *READ_TYPES
            )
            by_room: dict[str, dict[str, int]] = {}
            for row in rows:
                by_room.setdefault(row[0], {})[row[1]] = int(row[2])
            return by_room

        by_room = await self._reads.get(user_id, load)
        rooms = by_room if room_ids is None else room_ids
        return {
            (room_id, thread_id): position
            for room_id in rooms
            for thread_id, position in by_room.get(room_id, {}).items()
        }

    async def page(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[PushActionRow]:
        """The user's notifications, newest first, older than ``before`` when given."""
        conditions = ["a.user_id = ?"]
        args: list[object] = [user_id]
        if before is not None:
            conditions.append("a.stream_ordering < ?")
            args.append(before)
        if only_highlight:
            conditions.append("a.highlight = TRUE")
        rows = await self.database.fetch_all(
            "SELECT a.user_id, e.event_id, a.room_id, a.stream_ordering, a.thread_id,"
            " a.highlight, a.actions, a.ts FROM event_push_actions a"
            " JOIN events e ON e.stream_ordering = a.stream_ordering WHERE "
            + " AND ".join(conditions)
            + " ORDER BY a.stream_ordering DESC LIMIT ?",
            *args,
            limit,
        )
        return [
            PushActionRow(
                user_id=row[0],
                event_id=row[1],
                room_id=row[2],
                stream_ordering=int(row[3]),
                thread_id=row[4],
                highlight=bool(row[5]),
                actions=row[6] or DEFAULT_ACTIONS,
                ts=int(row[7]),
            )
            for row in rows
        ]
