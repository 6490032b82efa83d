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

from collections.abc import Sequence
from dataclasses import dataclass

from ranvier.storage.engine import Database, placeholders, upsert_sql

MAIN_THREAD = "main"
READ_TYPES = ("m.read", "m.read.private")

_INSERT = upsert_sql(
    "event_push_actions",
    ("user_id", "stream_ordering"),
    (
        "user_id",
        "event_id",
        "room_id",
        "stream_ordering",
        "thread_id",
        "highlight",
        "actions",
        "ts",
    ),
    (),
)

# The user's read position per (room, thread): the newest event any of their
# m.read / m.read.private receipts points at ('' = unthreaded).
_READS_CTE = (
    "WITH reads AS ("
    " SELECT r.room_id, r.thread_id, MAX(e.stream_ordering) AS pos"
    " FROM receipts r JOIN events e ON e.event_id = r.event_id"
    f" WHERE r.user_id = ? AND r.receipt_type IN ({placeholders(len(READ_TYPES))})"
    " GROUP BY r.room_id, r.thread_id) "
)

# One query for every room of the user: rows after both the unthreaded
# receipt and the receipt of their own thread ("Threaded read receipts": an
# unthreaded receipt covers every thread, a threaded one only its thread).
_COUNTS = (
    _READS_CTE + "SELECT a.room_id, a.thread_id, COUNT(*),"
    " SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END)"
    " FROM event_push_actions a"
    " LEFT JOIN reads u ON u.room_id = a.room_id AND u.thread_id = ''"
    " LEFT JOIN reads t ON t.room_id = a.room_id AND t.thread_id = a.thread_id"
    " WHERE a.user_id = ?"
    " AND a.stream_ordering > COALESCE(u.pos, 0) AND a.stream_ordering > COALESCE(t.pos, 0)"
    " GROUP BY a.room_id, a.thread_id"
)


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


# Local members are those with an account here (users); joined before the event.
_INSERT_FOR_MEMBERS = (
    "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering, thread_id,"
    " highlight, actions, ts)"
    " SELECT m.user_id, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT),"
    " CAST(? AS BOOLEAN), CAST(? AS TEXT), CAST(? AS BIGINT)"
    " FROM room_memberships m JOIN users u ON u.user_id = m.user_id"
    " WHERE m.room_id = ? AND m.membership = 'join' AND m.stream_ordering < ?"
)


def _values(row: PushActionRow) -> tuple[object, ...]:
    return (
        row.user_id,
        row.event_id,
        row.room_id,
        row.stream_ordering,
        row.thread_id,
        row.highlight,
        row.actions,
        row.ts,
    )


class PushActionStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(
        self, rows: Sequence[PushActionRow], for_members: Sequence[MembersAction] = ()
    ) -> None:
        """Record actions (one transaction); a row already there is kept."""
        if not rows and not for_members:
            return
        async with self.database.transaction() as txn:
            if rows:
                await txn.execute_many(_INSERT, [_values(row) for row in rows])
            for bulk in for_members:
                row = bulk.row
                sql = _INSERT_FOR_MEMBERS
                if bulk.excluded:
                    sql += f" AND m.user_id NOT IN ({placeholders(len(bulk.excluded))})"
                await txn.execute(
                    sql + " ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                    *_values(row)[1:],
                    row.room_id,
                    row.stream_ordering,
                    *bulk.excluded,
                )

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

    async def unread_counts(self, user_id: str) -> list[ThreadCount]:
        """The user's unread notifying events per (room, thread), after their receipts."""
        rows = await self.database.fetch_all(_COUNTS, user_id, *READ_TYPES, user_id)
        return [
            ThreadCount(
                room_id=row[0],
                thread_id=row[1],
                notifications=int(row[2]),
                highlights=int(row[3] or 0),
            )
            for row in rows
        ]

    async def read_positions(self, user_id: str) -> dict[tuple[str, str], int]:
        """``{(room_id, thread_id): position}`` of the user's receipts ('' = unthreaded)."""
        rows = await self.database.fetch_all(
            _READS_CTE + "SELECT room_id, thread_id, pos FROM reads", user_id, *READ_TYPES
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def page(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[PushActionRow]:
        """The user's notifications, newest first, older than ``before`` when given."""
        conditions = ["user_id = ?"]
        args: list[object] = [user_id]
        if before is not None:
            conditions.append("stream_ordering < ?")
            args.append(before)
        if only_highlight:
            conditions.append("highlight = TRUE")
        rows = await self.database.fetch_all(
            "SELECT user_id, event_id, room_id, stream_ordering, thread_id, highlight,"
            " actions, ts FROM event_push_actions WHERE "
            + " AND ".join(conditions)
            + " ORDER BY stream_ordering DESC LIMIT ?",
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
                actions=row[6],
                ts=int(row[7]),
            )
            for row in rows
        ]
